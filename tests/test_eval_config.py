"""Dataset configuration files: every shipped set is valid; bad files fail with clear messages."""

from pathlib import Path

import pytest

from funasr_nano.evaluation.config import MIRROR_ENV, DatasetConfig, DatasetConfigError, list_datasets, load_config

REPO = Path(__file__).resolve().parents[1]
REQUIRED = {"smoke", "smoke-zh", "librispeech-test-clean", "librispeech-test-other", "aishell1-test"}


def test_shipped_sets_are_valid():
    known = list_datasets()
    assert REQUIRED <= set(known), sorted(known)
    for name in REQUIRED:
        cfg = load_config(name)
        assert cfg.name == name == Path(cfg.source_file).stem
        assert cfg.metric in ("wer", "cer")
        assert cfg.numbers, f"{name}: the number-handling choice must be recorded"


def test_real_sets_name_hub_source_and_schema():
    clean, other = load_config("librispeech-test-clean"), load_config("librispeech-test-other")
    for cfg, hub_cfg, n in ((clean, "clean", 2620), (other, "other", 2939)):
        assert (cfg.hub_id, cfg.hub_config, cfg.split) == ("openslr/librispeech_asr", hub_cfg, "test")
        assert (cfg.audio_column, cfg.text_column, cfg.id_column) == ("audio", "text", "id")
        assert (cfg.language, cfg.normalizer, cfg.metric, cfg.num_examples) == ("en", "whisper_english", "wer", n)
        assert cfg.revision
    ai = load_config("aishell1-test")
    assert ai.hub_id and ai.split == "test" and ai.num_examples == 7176
    assert (ai.language, ai.itn, ai.normalizer, ai.metric) == ("zh", False, "mandarin", "cer")


def test_smoke_sets_are_local_and_shipped():
    for name, text_col in (("smoke", "text"), ("smoke-zh", "transcription")):
        cfg = load_config(name)
        assert cfg.is_local and cfg.hub_id is None
        assert all(Path(f).is_file() for f in cfg.data_files)
        assert all(Path(f).resolve().is_relative_to(REPO / "datasets_cfg" / "smoke") for f in cfg.data_files)
        assert cfg.text_column == text_col


def test_load_by_path_and_dict(tmp_path):
    p = tmp_path / "mine.yaml"
    p.write_text("name: mine\ndata_files: [x.parquet]\nlanguage: en\nnormalizer: none\nmetric: wer\n")
    cfg = load_config(p)
    assert cfg.data_files == [str(tmp_path / "x.parquet")]  # relative to the YAML file
    assert load_config(cfg) is cfg
    d = load_config({"name": "d", "hub_id": "org/set", "metric": "cer", "normalizer": "mandarin"})
    assert d.describe_source().startswith("hub dataset org/set")


@pytest.mark.parametrize("text, match", [
    ("name: x\nhub_id: a/b\nmetirc: wer\n", r"unknown key\(s\) \['metirc'\]"),
    ("name: x\nhub_id: a/b\nmetric: bleu\n", "'metric' must be one of"),
    ("name: x\nhub_id: a/b\nnormalizer: fancy\n", "'normalizer' must be one of"),
    ("name: x\nmetric: wer\n", "no data source"),
    ("name: x\nhub_id: a/b\nlanguage: klingon\n", "'language'"),
    ("name: x\nhub_id: a/b\nitn: maybe\n", "'itn' must be true or false"),
    ("name: x\nhub_id: a/b\nstreaming: sometimes\n", "'streaming' must be one of"),
    ("name: x\nhub_id: a/b\nempty_references: drop\n", "'empty_references'"),
    ("hub_id: a/b\n", "has no 'name'"),
    ("- just\n- a list\n", "must be a mapping"),
    ("name: [unclosed\n", "not valid YAML"),
])
def test_bad_configs(tmp_path, text, match):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(DatasetConfigError, match=match):
        load_config(p)


def test_unknown_name_lists_known_sets():
    with pytest.raises(DatasetConfigError, match="unknown dataset 'librispeech-test-dirty'.*smoke"):
        load_config("librispeech-test-dirty")
    with pytest.raises(DatasetConfigError, match="does not exist"):
        load_config("/nonexistent/x.yaml")


def test_overrides_and_mirror(tmp_path, monkeypatch):
    cfg = load_config("librispeech-test-clean")
    local = cfg.with_overrides(path=str(tmp_path), language="auto", itn=False)
    assert local.is_local and local.path == str(tmp_path) and local.itn is False
    assert cfg.with_overrides(data_files="a.parquet").data_files == ["a.parquet"]
    assert cfg.with_overrides(revision=None).revision == cfg.revision  # None = no override
    with pytest.raises(DatasetConfigError):
        cfg.with_overrides(metric="bleu")
    # $FUNASR_NANO_EVAL_MIRROR/<name> replaces the hub source when it exists
    monkeypatch.setenv(MIRROR_ENV, str(tmp_path))
    assert not load_config("librispeech-test-clean").is_local
    (tmp_path / "librispeech-test-clean").mkdir()
    m = load_config("librispeech-test-clean")
    assert m.path == str(tmp_path / "librispeech-test-clean") and m.hub_id == "openslr/librispeech_asr"


def test_dataclass_roundtrip():
    cfg = load_config("smoke")
    d = cfg.to_dict()
    d.pop("source_file")
    assert DatasetConfig.from_dict(d).to_dict()["data_files"] == cfg.data_files
