"""`evaluate` and the `eval` CLI end to end, on datasets built here in LibriSpeech's and AISHELL's
column schemas: with a scripted model (exact, hand-computed error counts) and with the TINY synthetic
checkpoint (real pipeline; error rates meaningless, and every output must say so)."""

import json
import subprocess
import sys
from types import SimpleNamespace

import pytest

from tests.support.optional import need

need("datasets")
need("jiwer")
need("whisper_normalizer")

from funasr_nano.evaluation import SYNTHETIC_WARNING, EvalResult, evaluate
from tests.support import eval_fixtures as fixtures
from funasr_nano.evaluation import cli as eval_cli
from funasr_nano.evaluation.config import MIRROR_ENV
from funasr_nano.evaluation.runner import _label, _model_info


def label(asr) -> str:
    """The preset part of result file names: the model's preset, else its dtype (fp32 / float32)."""
    return _label(_model_info(asr))


class ScriptedASR:
    """Answers each clip with a scripted text, keyed by the clip's length in samples."""

    synthetic = False
    preset = "scripted"
    source = "scripted"
    dtype = "float32"

    def __init__(self, by_seconds: dict, fail_seconds=()):
        self.by_len = {round(s * 16000): t for s, t in by_seconds.items()}
        self.fail = {round(s * 16000) for s in fail_seconds}
        self.calls = []

    def _one(self, audio):
        n = audio.shape[0]
        if n in self.fail:
            raise ValueError("scripted failure")
        return SimpleNamespace(text=self.by_len[n], stop_reason="eos", tokens=[0] * 3)

    def transcribe(self, audio, language=None, itn=True, max_new_tokens=512):
        self.calls.append(("one", 1, language, itn, max_new_tokens))
        return self._one(audio)

    def transcribe_batch(self, audios, language=None, itn=True, max_new_tokens=512):
        self.calls.append(("batch", len(audios), language, itn, max_new_tokens))
        return [self._one(a) for a in audios]


# LibriSpeech fixture rows: 11, 8, 12 and 10 reference words, clips of 1.0, 1.3, 1.6 and 1.2 s
LIBRI_HYPS = {
    1.0: "He hoped there would be stew for dinner, turnips and carrots.",        # 0 errors
    1.3: "Stuff it into you, his belly",                                         # 2 deletions
    1.6: "After early nightfall the yellow lamps would light up here and there.",  # 0 errors
    1.2: "Also a popular contrivance whereby love making may be suspended, too.",  # 1 insertion
}


@pytest.fixture
def libri_mirror(tmp_path, monkeypatch):
    fixtures.write_librispeech_snapshot(tmp_path / "mirror" / "librispeech-test-clean")
    monkeypatch.setenv(MIRROR_ENV, str(tmp_path / "mirror"))
    return tmp_path


def _read(res: EvalResult):
    d = json.loads(open(res.result_path, encoding="utf-8").read())
    utts = [json.loads(line) for line in open(res.utterances_path, encoding="utf-8")]
    return d, utts


# ------------------------------------------------------------------------ scripted model: exact counts
def test_librispeech_schema_hand_computed_wer(libri_mirror):
    asr = ScriptedASR(LIBRI_HYPS)
    out = libri_mirror / "out"
    res = evaluate(asr, "librispeech-test-clean", output_dir=out, progress=False, warmup=0)
    assert (res.hits, res.substitutions, res.deletions, res.insertions) == (39, 0, 2, 1)
    assert res.ref_units == 41 and res.wer == pytest.approx(3 / 41) and res.cer is None
    assert res.n_utts == res.n_scored == 4 and res.n_failed == 0 and not res.synthetic
    assert res.audio_seconds == pytest.approx(5.1, abs=1e-3) and res.rtf > 0
    assert [c[2:] for c in asr.calls] == [("英文", True, 512)] * 4  # prompt language, ITN, reference cap
    d, utts = _read(res)
    assert (out / "librispeech-test-clean__scripted.json").is_file()
    assert d["schema"] == "funasr_nano.eval/1" and "WARNING" not in d and d["synthetic"] is False
    assert d["wer"] == pytest.approx(3 / 41) and d["data"]["full_set"] is True
    assert d["normalizer"]["name"] == "whisper_english" and d["language"] == "en" and d["itn"] is True
    assert [u["id"] for u in utts] == ["1089-134686-0000", "1089-134686-0001", "1089-134686-0002",
                                       "121-121726-0000"]
    assert utts[1]["hyp"] == "Stuff it into you, his belly" and utts[1]["deletions"] == 2
    assert utts[0]["ref_norm"] == utts[0]["hyp_norm"] and utts[0]["rate"] == 0.0
    assert utts[3]["insertions"] == 1 and utts[3]["ref_units"] == 10


def test_batches_subset_and_failures(libri_mirror):
    asr = ScriptedASR(LIBRI_HYPS, fail_seconds=[1.6])
    res = evaluate(asr, "librispeech-test-clean", limit=3, batch_size=2, progress=False, warmup=0)
    # batch [1.0, 1.3] in one call; batch [1.6] fails and is recorded
    assert [c[:2] for c in asr.calls] == [("batch", 2), ("one", 1)]
    assert res.n_utts == 3 and res.n_failed == 1
    assert res.deletions == 2 + 12  # the failed clip's 12 words are deletions
    assert any("failed to transcribe" in w for w in res.warnings)
    assert res.utterances[2]["error"].startswith("ValueError") and res.utterances[2]["hyp"] == ""
    assert res.data["full_set"] is False and res.data["limit"] == 3
    # a failing batch of several clips is retried clip by clip
    asr = ScriptedASR(LIBRI_HYPS, fail_seconds=[1.3])
    res = evaluate(asr, "librispeech-test-clean", batch_size=4, progress=False, warmup=0)
    assert [c[:2] for c in asr.calls] == [("batch", 4)] + [("one", 1)] * 4
    assert res.n_failed == 1 and res.hits == 11 + 12 + 10


def test_aishell_schema_cer_and_empty_reference(tmp_path):
    rows = fixtures.AISHELL_ROWS + [("BAC009S0764W0124", "。")]  # empty once punctuation is removed
    fixtures.write_aishell_folder(tmp_path / "ai", rows=rows, seconds=(1.0, 1.4, 1.2, 0.8), rate=8000)
    asr = ScriptedASR({1.0: "甚至出现交易几乎停滞的情况。",   # 0 errors
                       1.4: "一二线城市虽然也处在调整中，",   # 于 -> 在: 1 substitution
                       1.2: "但因为聚集了过多公共资源",       # 0 errors
                       0.8: "嗯"})                           # empty reference: left out
    res = evaluate(asr, "aishell1-test", data_path=tmp_path / "ai", output_dir=tmp_path / "out",
                   progress=False, warmup=0)
    assert res.metric == "cer" and res.wer is None
    assert (res.hits, res.substitutions, res.deletions, res.insertions) == (37, 1, 0, 0)
    assert res.cer == pytest.approx(1 / 38)  # 13 + 13 + 12 reference characters, 1 substitution
    assert res.ref_units == len("甚至出现交易几乎停滞的情况一二线城市虽然也处于调整中但因为聚集了过多公共资源")
    assert res.n_utts == 4 and res.n_scored == 3 and res.n_empty_refs == 1
    assert any("empty after normalisation" in w for w in res.warnings)
    assert [c[2:4] for c in asr.calls] == [("中文", False)] * 4  # zh prompt, ITN off
    d, utts = _read(res)
    assert utts[3]["empty_ref"] is True and utts[3]["insertions"] == 1 and utts[3]["rate"] is None
    assert utts[0]["id"] == "BAC009S0764W0121" and utts[0]["source_rate"] == 8000
    assert d["itn"] is False and "ITN off" in d["numbers"] and d["data"]["empty_references"] == "skip"


# ------------------------------------------------------------------------ the tiny synthetic model
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    import funasr_nano
    from funasr_nano.synthetic import write_synthetic_checkpoint

    root = tmp_path_factory.mktemp("tiny")
    ckpt = write_synthetic_checkpoint(root / "ckpt", preset="tiny", seed=0)
    asr = funasr_nano.load(ckpt, cache_dir=root / "cache")
    assert asr.synthetic
    return asr


def _assert_synthetic_everywhere(res: EvalResult):
    assert res.synthetic and SYNTHETIC_WARNING in res.warnings and "SYNTHETIC" in res.summary()
    d, utts = _read(res)
    assert d["WARNING"] == SYNTHETIC_WARNING and d["synthetic"] is True and d["model"]["synthetic"] is True
    assert "SYNTHETIC" in res.result_path and "SYNTHETIC" in res.utterances_path
    assert utts and all(u["synthetic"] is True for u in utts)
    return d, utts


def test_tiny_librispeech_schema_end_to_end(tiny, libri_mirror):
    out = libri_mirror / "out"
    res = evaluate(tiny, "librispeech-test-clean", output_dir=out, progress=False, max_new_tokens=6)
    d, utts = _assert_synthetic_everywhere(res)
    assert res.n_utts == 4 and res.hits + res.substitutions + res.deletions == res.ref_units == 41
    assert 0 <= res.wer and res.compute_seconds > 0 and res.rtf > 0
    assert d["max_new_tokens"] == "6" and d["data"]["source"].startswith("local path")
    assert {u["stop_reason"] for u in utts} <= {"eos", "max_new_tokens", "repetition"}
    stem = f"librispeech-test-clean__{label(tiny)}__SYNTHETIC"
    assert sorted(p.name for p in out.iterdir()) == [f"{stem}.json", f"{stem}.utterances.jsonl"]


def test_tiny_aishell_schema_batched(tiny, tmp_path):
    p = fixtures.write_aishell_parquet(tmp_path / "test.parquet", rate=22050)
    res = evaluate(tiny, "aishell1-test", data_files=[str(p)], limit=2, batch_size=2, output_dir=tmp_path,
                   progress=False, max_new_tokens=4)
    d, utts = _assert_synthetic_everywhere(res)
    assert res.metric == "cer" and res.cer is not None and res.wer is None
    assert res.n_utts == 2 and res.batch_size == 2 and res.result_path.endswith(f"aishell1-test__{label(tiny)}__n2__SYNTHETIC.json")
    assert [u["id"] for u in utts] == ["BAC009S0764W0121", "BAC009S0764W0122"]


def test_default_call_used_by_benchmarks(tiny):
    """`evaluate(asr, "smoke", limit=None)` is what the asv accuracy benchmarks call."""
    res = evaluate(tiny, "smoke", limit=None, progress=False)
    assert res.synthetic and res.n_utts == 4 and res.wer is not None and res.result_path is None
    assert res.max_new_tokens.startswith("auto")  # synthetic weights never stop: length-based cap
    assert all(u["n_tokens"] <= 24 + 12 * 4 + 12 for u in res.utterances)


# ------------------------------------------------------------------------ CLI
def test_cli_smoke_zh_synthetic(tmp_path, capsys):
    rc = eval_cli.main(["--dataset", "smoke-zh", "--synthetic", "--cache-dir", str(tmp_path / "cache"),
                        "--output-dir", str(tmp_path / "out"), "--limit", "2", "--max-new-tokens", "4",
                        "--no-progress"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "SYNTHETIC WEIGHTS" in out and "CER" in out and "smoke-zh" in out
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert len(files) == 2 and files[0].startswith("smoke-zh__") and files[0].endswith("__n2__SYNTHETIC.json")
    assert files[1] == files[0].replace(".json", ".utterances.jsonl")
    d = json.loads((tmp_path / "out" / files[0]).read_text(encoding="utf-8"))
    assert d["WARNING"] == SYNTHETIC_WARNING and d["n_utts"] == 2 and d["data"]["name"] == "smoke-zh"


def test_cli_errors_and_listing(capsys):
    assert eval_cli.main(["--dataset", "no-such-set"]) == 2
    assert "unknown dataset 'no-such-set'" in capsys.readouterr().err
    assert eval_cli.main(["--list-datasets"]) == 0
    listing = capsys.readouterr().out
    for name in ("smoke", "smoke-zh", "librispeech-test-clean", "librispeech-test-other", "aishell1-test"):
        assert name in listing


def test_cli_bad_model_exit_code(tmp_path, capsys):
    assert eval_cli.main(["--dataset", "smoke", "--model", str(tmp_path / "no-such-checkpoint")]) == 3
    assert "cannot load model" in capsys.readouterr().err


def test_mounted_as_top_level_eval_subcommand(capsys):
    from funasr_nano import cli as top

    assert top.main(["eval", "--list-datasets"]) == 0
    assert "aishell1-test" in capsys.readouterr().out


def test_cli_runs_standalone_as_module():
    r = subprocess.run([sys.executable, "-m", "funasr_nano.evaluation.cli", "--list-datasets"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "librispeech-test-clean" in r.stdout and "WER" in r.stdout
