"""The `funasr-nano` command line on the TINY synthetic model: inputs, formats, batching,
long audio, streaming, profile, bad input and exit codes."""

import json
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from funasr_nano import cli
from funasr_nano.cli.transcribe import run_batch
from funasr_nano.synthetic.signals import speech_like, tone

FS = 16000
REPO = Path(__file__).resolve().parents[1]
TINY = ["--synthetic", "--synthetic-size", "tiny"]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("nano_cache")


@pytest.fixture(autouse=True)
def _env(cache_dir, monkeypatch):
    monkeypatch.setenv("FUNASR_NANO_CACHE", str(cache_dir))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("FUNASR_NANO_DEBUG", raising=False)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("clips")
    x = speech_like(3.0)
    sf.write(d / "a.wav", x, FS)
    sf.write(d / "b_stereo_44k.flac", np.stack([tone(2.0, 300.0, 0.5, sr=44100)] * 2, 1), 44100)
    sf.write(d / "c.ogg", speech_like(1.5, seed=1), FS)
    sf.write(d / "d.mp3", speech_like(2.5, seed=2), 22050)
    parts = [speech_like(5.0, seed=3), np.zeros(FS // 2, np.float32)] * 3
    sf.write(d / "long.wav", np.concatenate(parts), FS)  # 16.5 s, pauses at 5.25 and 10.75 s
    return d


def run(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in err, err
    return code, out, err


# ----- usage and exit codes -------------------------------------------------------------------


def test_help_and_usage(capsys):
    assert run(capsys, "--help")[0] == 0
    assert run(capsys, "transcribe", "--help")[0] == 0
    assert run(capsys, "profile", "--help")[0] == 0
    assert run(capsys, "--version")[0] == 0
    assert run(capsys)[0] == cli.EXIT_USAGE
    assert run(capsys, "transcribe")[0] == cli.EXIT_USAGE  # no files
    assert run(capsys, "frobnicate")[0] == cli.EXIT_USAGE
    code, _, err = run(capsys, "transcribe", "x.wav", "--max-new-tokens", "0")
    assert code == cli.EXIT_USAGE and "positive integer" in err
    code, _, err = run(capsys, "transcribe", "x.wav", "--max-segment-seconds", "45")
    assert code == cli.EXIT_USAGE and "at most 30" in err
    code, _, err = run(capsys, "transcribe", "x.wav", "--format", "docx")
    assert code == cli.EXIT_USAGE


def test_unknown_language_and_preset(capsys, clips):
    code, _, err = run(capsys, "transcribe", clips / "a.wav", *TINY, "--language", "klingon")
    assert code == cli.EXIT_USAGE and "unknown language 'klingon'" in err
    assert err.count("\n") == 1
    code, _, err = run(capsys, "transcribe", clips / "a.wav", *TINY, "--preset", "q17")
    assert code == cli.EXIT_USAGE and "q17" in err
    code, _, err = run(capsys, "profile", clips / "a.wav", *TINY, "--language", "xx")
    assert code == cli.EXIT_USAGE


def test_conflicting_options(capsys, clips):
    a, c = clips / "a.wav", clips / "c.ogg"
    assert run(capsys, "transcribe", a, *TINY, "--stream", "-f", "json")[0] == cli.EXIT_USAGE
    code, _, err = run(capsys, "transcribe", a, c, *TINY, "-f", "srt")
    assert code == cli.EXIT_USAGE and "--output-dir" in err
    assert run(capsys, "transcribe", a, "--synthetic", "--model", "x")[0] == cli.EXIT_USAGE


def test_exit_codes_in_a_subprocess(tmp_path, cache_dir):
    """The real process: one-line errors, no traceback, documented exit codes."""
    env = dict(os.environ, FUNASR_NANO_CACHE=str(cache_dir), HF_HUB_OFFLINE="1",
               PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    sf.write(tmp_path / "ok.wav", speech_like(0.5), FS)
    cases = [
        (["transcribe", str(tmp_path / "missing.wav")], 1, "missing.wav: no such file"),
        (["transcribe", str(tmp_path / "ok.wav"), "--language", "xx"], 2, "unknown language"),
        (["transcribe", str(tmp_path / "ok.wav"), "--model", str(tmp_path / "nomodel")], 3,
         "nomodel"),
    ]
    for argv, want, text in cases:
        p = subprocess.run([sys.executable, "-m", "funasr_nano", *argv], env=env, cwd=tmp_path,
                           capture_output=True, text=True, timeout=120)
        assert p.returncode == want, (argv, p.stderr)
        assert text in p.stderr and "Traceback" not in p.stderr
        assert p.stderr.strip().splitlines()[-1].startswith("funasr-nano: error:")


# ----- model errors -> exit 3 ----------------------------------------------------------------


def _copy_ckpt(src: Path, dst: Path) -> Path:
    """Copy the small files, link the weights (so the conversion cache is shared)."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("model.pt"))
    (dst / "model.pt").symlink_to(src / "model.pt")
    return dst


@pytest.mark.parametrize("damage,text", [
    ("no_dir", "not found"),
    ("no_config", "config.yaml"),
    ("no_weights", "neither model.pt"),
    ("no_llm_config", "config.json"),
    ("no_tokenizer", "tokenizer"),
    ("bad_yaml", "cannot load model"),
    ("wrong_shapes", "mis-shaped"),
    ("corrupt_weights", "model.pt"),
    ("hub_id_offline", "Hugging Face"),
])
def test_model_errors(capsys, tmp_path, tiny_ckpt, clips, damage, text):
    d = tmp_path / "ckpt"
    if damage == "no_dir":
        model = str(tmp_path / "does-not-exist")
    elif damage == "hub_id_offline":
        model = "no-such-org/no-such-model"
    else:
        model = str(_copy_ckpt(Path(tiny_ckpt), d))
        if damage == "no_config":
            (d / "config.yaml").unlink()
        elif damage == "no_weights":
            (d / "model.pt").unlink()
        elif damage == "no_llm_config":
            (d / "Qwen3-0.6B" / "config.json").unlink()
        elif damage == "no_tokenizer":
            (d / "Qwen3-0.6B" / "tokenizer.json").unlink()
        elif damage == "bad_yaml":
            (d / "config.yaml").write_text("model: [unclosed\n  - x: {\n")
        elif damage == "wrong_shapes":
            cfg = json.loads((d / "Qwen3-0.6B" / "config.json").read_text())
            cfg["intermediate_size"] = 96
            (d / "Qwen3-0.6B" / "config.json").write_text(json.dumps(cfg))
        elif damage == "corrupt_weights":
            (d / "model.pt").unlink()
            (d / "model.pt").write_bytes(b"PK\x03\x04 definitely not a checkpoint" * 10)
    code, out, err = run(capsys, "transcribe", clips / "a.wav", "--model", model)
    assert code == cli.EXIT_MODEL, err
    assert out == ""
    assert "error: cannot load model" in err and text in err, err


def test_api_model_and_option_errors(tmp_path, tiny_ckpt):
    """The Python API raises one clear exception naming the problem (the CLI maps these to 2/3)."""
    import yaml

    import funasr_nano
    from funasr_nano.checkpoint import CheckpointError
    from funasr_nano.model.config import ConfigError

    with pytest.raises(CheckpointError, match="does-not-exist"):
        funasr_nano.load(tmp_path / "does-not-exist")
    d = _copy_ckpt(Path(tiny_ckpt), tmp_path / "c")
    (d / "config.yaml").write_text("model: [unclosed\n")
    with pytest.raises((ConfigError, yaml.YAMLError), match="config.yaml"):
        funasr_nano.load(d)
    shutil.copy(Path(tiny_ckpt) / "config.yaml", d / "config.yaml")
    (d / "Qwen3-0.6B" / "tokenizer.json").unlink()
    with pytest.raises((ConfigError, FileNotFoundError), match="tokenizer.json"):
        funasr_nano.load(d)
    with pytest.raises(ValueError, match="q17"):
        funasr_nano.load(tiny_ckpt, preset="q17")
    asr = funasr_nano.load(tiny_ckpt)
    with pytest.raises(ValueError, match="unknown language 'klingon'"):
        asr.transcribe(speech_like(0.5), language="klingon")
    from funasr_nano.model.prompt import instruction
    assert "auto" not in instruction(language="auto") and instruction(language=None) == instruction(language="auto")


# ----- bad input files -> exit 1, the others still transcribed --------------------------------


def test_bad_files_in_a_batch(capsys, tmp_path, clips):
    d = tmp_path / "in"
    d.mkdir()
    shutil.copy(clips / "a.wav", d / "good1.wav")
    shutil.copy(clips / "c.ogg", d / "good2.ogg")
    (d / "empty.wav").write_bytes(b"")
    sf.write(d / "zero.wav", np.zeros(0, np.float32), FS)
    (d / "junk.mp3").write_bytes(os.urandom(2000))
    x = speech_like(0.5)
    x[10] = np.nan
    sf.write(d / "nan.wav", x, FS, subtype="FLOAT")
    (d / "notes.txt").write_text("not audio, not picked up from a folder")
    code, out, err = run(capsys, "transcribe", d, tmp_path / "missing.flac", *TINY, "-f", "json",
                         "--max-new-tokens", "3")
    assert code == cli.EXIT_FILES
    doc = json.loads(out)
    by = {Path(f["file"]).name: f for f in doc["files"]}
    assert set(by) == {"good1.wav", "good2.ogg", "empty.wav", "zero.wav", "junk.mp3", "nan.wav", "missing.flac"}
    for good in ("good1.wav", "good2.ogg"):
        assert by[good]["error"] is None and isinstance(by[good]["text"], str)
    expect = {"empty.wav": "file is empty", "zero.wav": "audio is empty", "junk.mp3": "cannot decode",
              "nan.wav": "NaN", "missing.flac": "no such file"}
    for name, what in expect.items():
        assert what in by[name]["error"] and name in by[name]["error"]
        assert sum(name in line and "error:" in line for line in err.splitlines()) == 1, err
    assert "5 of 7 inputs failed" in err


def test_all_inputs_bad_skips_the_model(capsys, tmp_path):
    (tmp_path / "e.wav").write_bytes(b"")
    code, out, err = run(capsys, "transcribe", tmp_path / "e.wav", tmp_path / "*.flac",
                         "--model", tmp_path / "no-model-here")
    assert code == cli.EXIT_FILES and out == ""
    assert "e.wav: file is empty" in err and "*.flac: no files match" in err
    assert "cannot load model" not in err


def test_valid_edge_cases(capsys, tmp_path):
    files = {
        "one_sample.wav": np.full(1, 0.2, np.float32),  # too short for any fbank frame: error
        "shorter_than_a_frame.wav": speech_like(0.022),  # 352 samples: one shrunk frame
        "silence.wav": np.zeros(FS * 2, np.float32),
        "clipped.wav": np.clip(tone(1.0, 300.0, 0.9) * 4, -1, 1).astype(np.float32),
    }
    for name, x in files.items():
        sf.write(tmp_path / name, x, FS, subtype="PCM_16")
    sf.write(tmp_path / "u8_8k.wav", speech_like(1.0, sr=8000), 8000, subtype="PCM_U8")
    sf.write(tmp_path / "s32_6ch.wav", np.stack([speech_like(1.0)] * 6, 1), FS, subtype="PCM_32")
    code, out, err = run(capsys, "transcribe", tmp_path, *TINY, "-f", "json", "--max-new-tokens", "3")
    assert code == cli.EXIT_FILES, err  # one file failed, the other five were transcribed
    doc = json.loads(out)
    errors = {Path(f["file"]).name: f["error"] for f in doc["files"]}
    assert len(errors) == 6
    assert "too short" in errors.pop("one_sample.wav") and "one_sample.wav" in err
    assert all(e is None for e in errors.values()), errors
    dur = {Path(f["file"]).name: f.get("duration") for f in doc["files"]}
    assert dur["shorter_than_a_frame.wav"] == pytest.approx(352 / FS, abs=1e-6)
    assert dur["u8_8k.wav"] == pytest.approx(1.0)


# ----- output formats ----------------------------------------------------------------------


def test_text_output_all_formats_and_synthetic_label(capsys, clips):
    files = [clips / n for n in ("a.wav", "b_stereo_44k.flac", "c.ogg", "d.mp3")]
    code, out, err = run(capsys, "transcribe", *files, *TINY, "--max-new-tokens", "4")
    assert code == 0, err
    lines = out.splitlines()
    assert [line.split("\t")[0] for line in lines] == [str(f) for f in files]  # input order
    assert "NOTE: synthetic weights" in err
    code, out, _ = run(capsys, "transcribe", files[0], *TINY, "--max-new-tokens", "4")
    assert code == 0 and "\t" not in out and out.endswith("\n") and out.count("\n") == 1


def test_json_output(capsys, clips):
    code, out, _ = run(capsys, "transcribe", clips / "b_stereo_44k.flac", *TINY, "-f", "json",
                       "--max-new-tokens", "4", "--language", "auto", "--hotwords", "foo, bar",
                       "--hotwords", "baz", "--no-itn")
    assert code == 0
    doc = json.loads(out)
    assert doc["synthetic_weights"] is True and "synthetic weights" in doc["note"]
    f = doc["files"][0]
    assert f["duration"] == pytest.approx(2.0, abs=1e-3)  # resampled from 44.1 kHz
    assert set(f["timings"]) >= {"frontend_ms", "encoder_ms", "adaptor_ms", "prefill_ms", "decode_ms"}
    assert f["segments"] == [{"start": 0.0, "end": 2.0, "text": f["text"], "stop_reason": "max_new_tokens",
                              "tokens": 4}]
    assert doc["language"] is None


def test_long_audio_srt_vtt(capsys, clips, tmp_path):
    argv = ["transcribe", clips / "long.wav", *TINY, "--max-new-tokens", "3", "--max-segment-seconds", "6"]
    code, out, _ = run(capsys, *argv, "-f", "json")
    assert code == 0
    f = json.loads(out)["files"][0]
    bounds = [(s["start"], s["end"]) for s in f["segments"]]
    assert len(bounds) == 3 and bounds[0][0] == 0.0 and bounds[-1][1] == pytest.approx(16.5)
    assert all(b - a <= 6.0 for a, b in bounds)
    assert abs(bounds[0][1] - 5.25) < 0.3 and abs(bounds[1][1] - 10.75) < 0.3  # in the pauses
    from funasr_nano.io.segment import join_texts
    assert f["text"] == join_texts(s["text"] for s in f["segments"])
    assert f["batch_sizes"] == [3, 3, 3]  # segments decoded as one batch

    # SRT/VTT cue times are the segment bounds (the tiny model's text is blank: give it words)
    from funasr_nano.io import formats
    r = formats.FileResult("long.wav", duration=16.5,
                           segments=[formats.SegmentResult(a, b, f"seg{i}") for i, (a, b) in enumerate(bounds)])
    srt = formats.to_srt(r)
    assert f"1\n00:00:00,000 --> {formats.srt_timestamp(bounds[0][1])}\nseg0\n" in srt
    code, out, _ = run(capsys, *argv, "-f", "srt")
    assert code == 0 and out.startswith("NOTE synthetic weights")
    code, out, _ = run(capsys, *argv, "-f", "vtt", "-o", tmp_path / "x.vtt")
    assert code == 0 and out == ""
    vtt = (tmp_path / "x.vtt").read_text()
    assert vtt.startswith("WEBVTT\n\nNOTE synthetic weights")


def test_output_dir(capsys, clips, tmp_path):
    out_dir = tmp_path / "subs"
    code, out, _ = run(capsys, "transcribe", clips / "a.wav", clips / "c.ogg", *TINY, "-f", "vtt",
                       "--output-dir", out_dir, "--max-new-tokens", "3")
    assert code == 0 and out == ""
    assert sorted(p.name for p in out_dir.iterdir()) == ["a.vtt", "c.vtt"]
    code, _, _ = run(capsys, "transcribe", clips / "a.wav", *TINY, "-f", "json",
                     "--output-dir", out_dir, "--max-new-tokens", "3")
    assert json.loads((out_dir / "a.json").read_text())["files"][0]["file"] == str(clips / "a.wav")


def test_globs_and_folders(capsys, clips):
    code, out, _ = run(capsys, "transcribe", str(clips / "*.wav"), *TINY, "--max-new-tokens", "2")
    assert code == 0
    assert sorted(Path(line.split("\t")[0]).name for line in out.splitlines()) == ["a.wav", "long.wav"]
    code, out, _ = run(capsys, "transcribe", clips, clips / "a.wav", *TINY, "--max-new-tokens", "2")
    assert code == 0 and len(out.splitlines()) == 5  # folder + duplicate counted once


# ----- batching, repetition guard, streaming, progress -------------------------------------


def test_batching_matches_one_by_one(capsys, clips):
    files = [clips / n for n in ("a.wav", "b_stereo_44k.flac", "c.ogg", "d.mp3")]
    argv = ["transcribe", *files, *TINY, "-f", "json", "--max-new-tokens", "6"]
    one = json.loads(run(capsys, *argv, "--batch-size", "1")[1])["files"]
    many = json.loads(run(capsys, *argv, "--batch-size", "8")[1])["files"]
    assert [f["file"] for f in one] == [str(f) for f in files]
    assert [f["text"] for f in one] == [f["text"] for f in many]
    assert all(f["batch_sizes"] == [1] for f in one)
    assert all(f["batch_sizes"] == [4] for f in many)
    budget = json.loads(run(capsys, *argv, "--batch-seconds", "5")[1])["files"]
    assert sorted(f["batch_sizes"][0] for f in budget) == [1, 1, 2, 2]  # 3 | 2.5+2 | 1.5 (padded <= 5 s)


def test_repetition_guard(capsys, clips):
    argv = ["transcribe", clips / "a.wav", *TINY, "-f", "json", "--max-new-tokens", "40"]
    code, out, err = run(capsys, *argv)
    f = json.loads(out)["files"][0]
    assert code == 0 and f["stop_reasons"] == ["repetition"] and f["repetition_stopped"] is True
    assert "repetition guard" in err
    code, out, err = run(capsys, *argv, "--no-repetition-guard")
    f = json.loads(out)["files"][0]
    assert f["stop_reasons"] == ["max_new_tokens"] and f["segments"][0]["tokens"] == 40
    assert "repetition guard" not in err


def test_stream(capsys, clips):
    base = ["transcribe", clips / "long.wav", clips / "a.wav", *TINY, "--max-new-tokens", "5",
            "--max-segment-seconds", "6"]
    code, streamed, _ = run(capsys, *base, "--stream")
    assert code == 0
    code, plain, _ = run(capsys, *base)
    assert [s.split("\t")[0] for s in streamed.splitlines()] == [str(clips / "long.wav"), str(clips / "a.wav")]
    norm = lambda t: [" ".join(line.split()) for line in t.splitlines()]  # noqa: E731
    assert norm(streamed) == norm(plain)


def test_stream_generator_prints_pieces(capsys, monkeypatch, clips):
    """--stream writes each piece as the model's generator yields it."""
    from funasr_nano.runtime.asr import FunASRNanoASR

    def fake_stream(self, audio, **kw):
        for piece in ("hel", "lo", " wor", "ld"):
            yield piece
        tr = self.transcribe(audio, **kw)
        tr.text = "hello world"
        return tr

    monkeypatch.setattr(FunASRNanoASR, "stream", fake_stream)
    code, out, _ = run(capsys, "transcribe", clips / "a.wav", *TINY, "--stream", "--max-new-tokens", "2")
    assert code == 0 and out == "hello world\n"


def test_progress_bar(capsys, clips):
    code, _, err = run(capsys, "transcribe", clips / "a.wav", clips / "c.ogg", *TINY,
                       "--max-new-tokens", "2", "--progress")
    assert code == 0 and "2/2 files" in err
    code, _, err = run(capsys, "transcribe", clips / "a.wav", clips / "c.ogg", *TINY, "--max-new-tokens", "2")
    assert "files" not in err  # not a terminal: no bar by default


def test_failing_batch_is_retried_row_by_row():
    class FakeASR:
        def transcribe_batch(self, wavs, **kw):
            raise MemoryError

        def transcribe(self, w, **kw):
            if w is None:
                raise ValueError("bad row")
            return "ok"

    out = run_batch(FakeASR(), [1, None, 2], {})
    assert out[0] == "ok" and out[2] == "ok" and isinstance(out[1], ValueError)


# ----- profile ------------------------------------------------------------------------------


def test_profile(capsys, clips):
    code, out, err = run(capsys, "profile", clips / "a.wav", *TINY, "--max-new-tokens", "8")
    assert code == 0, err
    for stage in ("load", "frontend", "encoder", "adaptor", "prefill", "decode", "peak memory", "tok/s"):
        assert stage in out
    assert "[synthetic weights]" in out
    code, out, _ = run(capsys, "profile", clips / "long.wav", *TINY, "--max-new-tokens", "4", "--json",
                       "--ignore-eos", "--max-segment-seconds", "6")
    prof = json.loads(out)
    assert prof["segments"] == 3 and prof["decode_tokens"] == 12 and prof["synthetic_weights"] is True
    assert prof["stop_reasons"] == ["max_new_tokens"] * 3
    assert prof["peak_memory_mb"]["mlx_transcribe"] > 0
    assert set(prof["stages_ms"]) >= {"load", "frontend", "encoder", "adaptor", "prefill", "decode"}
    code, out, _ = run(capsys, "profile", clips / "a.wav", *TINY, "--max-new-tokens", "2", "--json",
                       "--preset", "bf16")
    # the resolved plan: on the CPU bf16 weights compute in float32 (backend policy)
    assert code == 0 and json.loads(out)["preset"] == "bf16@fp32"
    code, _, err = run(capsys, "profile", clips / "nope.wav", *TINY)
    assert code == cli.EXIT_FILES and "nope.wav: no such file" in err


# ----- the 10-minute file, and the mounted subcommands ---------------------------------------


def test_ten_minute_file(capsys, tmp_path):
    """10 minutes: speech in the first 95 s and the last 25 s, silence between (keeps it fast)."""
    block = np.concatenate([speech_like(5.0, seed=4), np.zeros(FS // 2, np.float32)])
    x = np.zeros(FS * 600, np.float32)
    x[: FS * 95] = np.tile(block, 18)[: FS * 95]
    x[-FS * 25:] = np.tile(block, 5)[: FS * 25]
    sf.write(tmp_path / "ten.flac", x, FS)
    code, out, err = run(capsys, "transcribe", tmp_path / "ten.flac", *TINY, "--max-new-tokens", "1",
                         "-f", "json", "--batch-size", "32")
    assert code == 0, err
    f = json.loads(out)["files"][0]
    assert f["duration"] == pytest.approx(600.0)
    segs = f["segments"]
    assert 5 <= len(segs) <= 7 and f["batch_sizes"] == [len(segs)] * len(segs)
    assert segs[0]["start"] == 0.0 and segs[-1]["end"] == pytest.approx(600.0)
    assert all(s["end"] - s["start"] <= 30.0 for s in segs)
    assert all(a["end"] <= b["start"] for a, b in zip(segs[:-1], segs[1:]))
    assert not any(s["start"] >= 95.0 and s["end"] <= 575.0 for s in segs)  # silent middle skipped
    assert sum(s["end"] - s["start"] for s in segs) < 200.0


def test_mounted_subcommands(capsys, monkeypatch):
    monkeypatch.setitem(cli.MOUNTED, "bench", ("funasr_nano._no_such_module", "x"))
    code, _, err = run(capsys, "bench", "--quick")
    assert code == cli.EXIT_UNAVAILABLE and "`funasr-nano bench` is not available" in err
    seen = {}
    fake = types.ModuleType("fake_report")
    fake.main = lambda argv: seen.setdefault("argv", argv) and 0
    monkeypatch.setitem(sys.modules, "fake_report", fake)
    monkeypatch.setitem(cli.MOUNTED, "report", ("fake_report", "x"))
    assert run(capsys, "report", "a", "--b")[0] == 0 and seen["argv"] == ["a", "--b"]
    ev = types.ModuleType("fake_eval")
    ev.add_arguments = lambda p: p.add_argument("--n", type=int)
    ev.run = lambda args: 3 if args.n == 3 else 0
    monkeypatch.setitem(sys.modules, "fake_eval", ev)
    monkeypatch.setitem(cli.MOUNTED, "eval", ("fake_eval", "x"))
    assert run(capsys, "eval", "--n", "3")[0] == 3
    assert run(capsys, "eval", "--bogus")[0] == cli.EXIT_USAGE
