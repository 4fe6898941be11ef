"""Loading evaluation sets through `datasets` with Audio(decode=False) + soundfile (no torch)."""

import io

import numpy as np
import pytest

from tests.support.optional import need

need("datasets")
need("whisper_normalizer")
import soundfile as sf

from tests.support import eval_fixtures as fixtures
from funasr_nano.evaluation.config import MIRROR_ENV, load_config
from funasr_nano.evaluation.data import DatasetLoadError, dataset_available, decode_audio, iter_examples, open_dataset, resolve_streaming, source_fingerprint


@pytest.fixture(autouse=True)
def _private_hf_cache(tmp_path, monkeypatch):
    """Non-streamed loads write an Arrow cache: keep it out of ~/.cache/huggingface."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))


def _examples(cfg, **kw):
    rows, total, info = open_dataset(cfg, **kw)
    return list(iter_examples(cfg, rows, info)), total, info


def _bytes(x, rate, fmt):
    buf = io.BytesIO()
    sf.write(buf, x, rate, format=fmt, subtype="PCM_16")
    return buf.getvalue()


# ------------------------------------------------------------------------------------------- audio
def test_decode_flac_and_wav_bytes():
    x = fixtures.tone(0.5)
    for fmt in ("FLAC", "WAV"):
        y, sr = decode_audio({"bytes": _bytes(x, 16000, fmt), "path": f"a.{fmt.lower()}"})
        assert sr == 16000 and y.dtype == np.float32 and y.shape == x.shape
        assert np.max(np.abs(y - x)) < 1e-3


def test_decode_resamples_to_16k_and_downmixes(tmp_path):
    x8 = fixtures.tone(1.0, rate=8000)
    y, sr = decode_audio({"bytes": _bytes(x8, 8000, "WAV"), "path": None})
    assert sr == 8000 and abs(y.shape[0] - 16000) <= 1
    stereo = np.stack([fixtures.tone(0.5, 44100), np.zeros(22050, np.float32)], axis=1)
    p = tmp_path / "s.wav"
    sf.write(p, stereo, 44100, subtype="FLOAT")
    y, sr = decode_audio(str(p))
    assert sr == 44100 and abs(y.shape[0] - 8000) <= 1
    from funasr_nano.io.audio import resample

    np.testing.assert_allclose(y, resample(stereo.mean(axis=1).astype(np.float32), 44100, 16000), atol=1e-6)
    # relative path resolved against the metadata folder; already-decoded arrays pass through
    y, _ = decode_audio({"bytes": None, "path": "s.wav"}, base_dir=str(tmp_path))
    assert y.shape[0] > 0
    y, sr = decode_audio({"array": np.ones(800), "sampling_rate": 8000})
    assert sr == 8000 and abs(y.shape[0] - 1600) <= 1


def test_decode_errors(tmp_path):
    with pytest.raises(DatasetLoadError, match="not found"):
        decode_audio({"bytes": None, "path": str(tmp_path / "missing.flac")})
    with pytest.raises(DatasetLoadError, match="cannot decode"):
        decode_audio({"bytes": b"not audio at all", "path": "x.flac"})
    with pytest.raises(DatasetLoadError, match="neither bytes nor a path"):
        decode_audio({"bytes": None, "path": None})


# ---------------------------------------------------------------------------------- LibriSpeech schema
@pytest.fixture
def libri_mirror(tmp_path, monkeypatch):
    fixtures.write_librispeech_snapshot(tmp_path / "librispeech-test-clean")
    monkeypatch.setenv(MIRROR_ENV, str(tmp_path))
    return tmp_path


@pytest.mark.parametrize("streaming", [True, False])
def test_librispeech_schema_snapshot_via_mirror(libri_mirror, streaming):
    cfg = load_config("librispeech-test-clean")
    assert cfg.path == str(libri_mirror / "librispeech-test-clean")
    exs, total, info = _examples(cfg, streaming=streaming)
    assert len(exs) == len(fixtures.LIBRISPEECH_ROWS) and info["streaming"] is streaming
    assert total == (None if streaming else 4)  # a streamed snapshot folder does not tell its length
    # only the test split's files are read: the config's other split is not parquet at all
    assert [e.id for e in exs] == ["1089-134686-0000", "1089-134686-0001", "1089-134686-0002", "121-121726-0000"]
    assert exs[0].text == fixtures.LIBRISPEECH_ROWS[0][3]
    assert exs[1].seconds == pytest.approx(1.3, abs=1e-3) and exs[1].source_rate == 16000


def test_limit_first_and_spread(libri_mirror):
    cfg = load_config("librispeech-test-clean")
    exs, total, _ = _examples(cfg, limit=2)
    assert total == 2 and [e.id for e in exs] == ["1089-134686-0000", "1089-134686-0001"]
    exs, total, _ = _examples(cfg, limit=2, subset="spread", streaming=False)
    assert [e.id for e in exs] == ["1089-134686-0000", "121-121726-0000"]
    with pytest.raises(DatasetLoadError, match="spread"):
        open_dataset(cfg, limit=2, subset="spread", streaming=True)
    with pytest.raises(DatasetLoadError, match="limit must be"):
        open_dataset(cfg, limit=0)


def test_parquet_data_files_resampled(tmp_path):
    path = tmp_path / "ls.parquet"
    cols, feats = fixtures.librispeech_table(rate=8000)
    fixtures._write_parquet(path, cols, feats)
    cfg = load_config("librispeech-test-other").with_overrides(data_files=[str(path)])
    exs, total, _ = _examples(cfg)
    assert total == 4 and all(e.source_rate == 8000 for e in exs)
    assert exs[0].seconds == pytest.approx(1.0, abs=1e-3)
    assert "local_sha256" in source_fingerprint(cfg)


def test_missing_column_is_explained(libri_mirror):
    cfg = load_config("librispeech-test-clean").with_overrides(text_column="transcription")
    with pytest.raises(DatasetLoadError, match=r"no column\(s\) \['transcription'\].*'text'"):
        open_dataset(cfg)


# ---------------------------------------------------------------------------------- AISHELL schema
def test_aishell_folder_with_metadata(tmp_path):
    fixtures.write_aishell_folder(tmp_path / "ai")
    cfg = load_config("aishell1-test").with_overrides(path=str(tmp_path / "ai"))
    exs, total, _ = _examples(cfg)
    assert [e.id for e in exs] == [r[0] for r in fixtures.AISHELL_ROWS]  # ids from file names
    assert exs[0].text == "甚至 出现 交易 几乎 停滞 的 情况"


def test_aishell_parquet_mirror_schema(tmp_path):
    p = fixtures.write_aishell_parquet(tmp_path / "test.parquet", rate=44100)
    cfg = load_config("aishell1-test").with_overrides(data_files=[str(p)])
    exs, _, _ = _examples(cfg, limit=2)
    assert [e.id for e in exs] == ["BAC009S0764W0121", "BAC009S0764W0122"]
    assert exs[1].source_rate == 44100 and exs[1].seconds == pytest.approx(1.4, abs=1e-3)


def test_save_to_disk_folder(tmp_path):
    import datasets

    p = fixtures.write_aishell_parquet(tmp_path / "test.parquet")
    ds = datasets.load_dataset("parquet", data_files={"test": [str(p)]}, split="test",
                               cache_dir=str(tmp_path / "hf"))
    datasets.DatasetDict({"test": ds}).save_to_disk(str(tmp_path / "saved"))
    cfg = load_config("aishell1-test").with_overrides(path=str(tmp_path / "saved"))
    exs, total, _ = _examples(cfg, streaming=False)
    assert total == 3 and exs[2].id == "BAC009S0764W0123"
    with pytest.raises(DatasetLoadError, match="splits"):
        open_dataset(cfg.with_overrides(split="train"), streaming=False)


# ---------------------------------------------------------------------------------- sources
def test_shipped_smoke_sets_load():
    exs, total, info = _examples(load_config("smoke"))
    assert total == len(exs) == 4 and info["streaming"] is True
    assert exs[1].text == "SHE DIDN'T KNOW WHERE THE TWENTY FIVE BOOKS HAD GONE"
    assert all(2.0 < e.seconds < 6.0 for e in exs)
    exs, _, _ = _examples(load_config("smoke-zh"))
    assert [e.id for e in exs] == ["BAC009S9000W0001", "BAC009S9000W0002", "BAC009S9000W0003"]
    assert " " in exs[0].text  # AISHELL-style word segmentation


def test_streaming_policy():
    hub, local = load_config("librispeech-test-clean"), load_config("smoke")
    assert resolve_streaming(hub, None) is False      # full set: download once, cached
    assert resolve_streaming(hub, 10) is True         # a subset: stream, do not download all
    assert resolve_streaming(hub, 10, streaming=False) is False
    assert resolve_streaming(local, None) is True
    assert resolve_streaming(load_config("aishell1-test").with_overrides(streaming=True), None) is True


def test_hub_failure_message(monkeypatch):
    import datasets

    def boom(*a, **k):
        raise ConnectionError("no network")

    monkeypatch.setattr(datasets, "load_dataset", boom)
    monkeypatch.delenv(MIRROR_ENV, raising=False)
    with pytest.raises(DatasetLoadError, match=r"(?s)openslr/librispeech_asr.*--data-path.*FUNASR_NANO_EVAL_MIRROR"):
        open_dataset(load_config("librispeech-test-clean"), limit=2)


def test_dataset_available_local(tmp_path, monkeypatch):
    assert dataset_available("smoke")[0] is True
    assert dataset_available("nope-not-a-set")[0] is False
    fixtures.write_librispeech_snapshot(tmp_path / "librispeech-test-other")
    monkeypatch.setenv(MIRROR_ENV, str(tmp_path))
    ok, why = dataset_available("librispeech-test-other")
    assert ok and "local path" in why
