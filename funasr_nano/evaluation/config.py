"""Evaluation-set configurations: one YAML file per set in ``datasets_cfg/``.

A file names where the data comes from (a Hugging Face dataset id + config + split + revision, or a
local path / data files for offline mirrors), which columns hold the audio and the reference text,
how the model is prompted (language, ITN) and how the output is scored (normaliser, metric).
`load_config` finds a set by name (``librispeech-test-clean``) or by file path and checks every key,
so a typo fails with the list of allowed values instead of a KeyError deep inside a run.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

METRICS = ("wer", "cer")
STREAMING = ("auto", True, False)
EMPTY_REFERENCES = ("skip", "count")
SUBSETS = ("first", "spread")
MIRROR_ENV = "FUNASR_NANO_EVAL_MIRROR"  # a folder holding <set name>/ offline copies
CFG_DIR_ENV = "FUNASR_NANO_DATASETS_CFG"  # where the YAML files are, when not found beside the code


class DatasetConfigError(ValueError):
    """A dataset configuration file is missing, malformed or inconsistent."""


@dataclass
class DatasetConfig:
    name: str
    description: str = ""
    # --- where the data is: the hub, or a local path / data files that replace it -----------------
    hub_id: str | None = None            # e.g. "openslr/librispeech_asr"
    hub_config: str | None = None        # the dataset's config name ("clean"); None for none
    split: str = "test"
    revision: str | None = "main"        # a commit sha or branch; "main" means not pinned
    path: str | None = None              # local folder: hub snapshot, save_to_disk output, or
                                         # audio files + metadata.csv/jsonl (file_name column)
    data_files: list[str] | None = None  # local parquet/arrow/jsonl/csv files (globs allowed)
    streaming: object = "auto"           # auto: stream from the hub when a limit is given
    num_examples: int | None = None      # size of the full split, checked on full runs
    # --- columns ---------------------------------------------------------------------------------------
    audio_column: str = "audio"
    text_column: str = "text"
    id_column: str | None = None         # None: the audio file's stem, else the row index
    # --- model prompt ----------------------------------------------------------------------------------
    language: str | None = None          # "en", "zh" or a model language name; None = auto
    itn: bool = True                     # False: the prompt asks for no text normalisation
    # --- scoring ---------------------------------------------------------------------------------------
    normalizer: str = "whisper_english"
    metric: str = "wer"
    empty_references: str = "skip"       # skip: drop refs empty after normalising (as the Open ASR
                                         # Leaderboard does); count: their insertions count
    numbers: str = ""                    # how digits are handled (recorded with every result)
    notes: str = ""
    source_file: str | None = field(default=None, repr=False)

    # ------------------------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict, source_file=None) -> "DatasetConfig":
        where = f" in {source_file}" if source_file else ""
        if not isinstance(data, dict):
            raise DatasetConfigError(f"dataset config{where} must be a mapping, got {type(data).__name__}")
        allowed = {f.name for f in dataclasses.fields(cls)} - {"source_file"}
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise DatasetConfigError(f"unknown key(s) {unknown}{where}; allowed keys: {sorted(allowed)}")
        if not data.get("name"):
            raise DatasetConfigError(f"dataset config{where} has no 'name'")
        kw = dict(data)
        if isinstance(kw.get("data_files"), str):
            kw["data_files"] = [kw["data_files"]]
        cfg = cls(**kw, source_file=str(source_file) if source_file else None)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        where = f" (dataset {self.name!r}" + (f", {self.source_file})" if self.source_file else ")")

        def bad(msg):
            raise DatasetConfigError(msg + where)

        for key in ("hub_id", "hub_config", "revision", "path", "audio_column", "text_column", "id_column",
                    "language", "split"):
            v = getattr(self, key)
            if v is not None and not isinstance(v, str):
                bad(f"'{key}' must be a string, got {v!r}")
        if not (self.hub_id or self.path or self.data_files):
            bad("no data source: set 'hub_id', or 'path' / 'data_files' for a local copy")
        if self.data_files is not None and (not isinstance(self.data_files, list)
                                            or not all(isinstance(x, str) for x in self.data_files)):
            bad(f"'data_files' must be a list of paths, got {self.data_files!r}")
        if self.streaming not in STREAMING:
            bad(f"'streaming' must be one of {list(STREAMING)}, got {self.streaming!r}")
        if not isinstance(self.itn, bool):
            bad(f"'itn' must be true or false, got {self.itn!r}")
        if self.metric not in METRICS:
            bad(f"'metric' must be one of {list(METRICS)}, got {self.metric!r}")
        if self.empty_references not in EMPTY_REFERENCES:
            bad(f"'empty_references' must be one of {list(EMPTY_REFERENCES)}, got {self.empty_references!r}")
        if self.num_examples is not None and (not isinstance(self.num_examples, int) or self.num_examples < 1):
            bad(f"'num_examples' must be a positive integer, got {self.num_examples!r}")
        from .normalize import NORMALIZERS

        if self.normalizer not in NORMALIZERS:
            bad(f"'normalizer' must be one of {sorted(NORMALIZERS)}, got {self.normalizer!r}")
        from ..model.prompt import resolve_language

        try:
            resolve_language(self.language)
        except ValueError as e:
            bad(f"'language': {e}")

    # ------------------------------------------------------------------------------------------------
    @property
    def is_local(self) -> bool:
        return bool(self.path or self.data_files)

    def with_overrides(self, **kw) -> "DatasetConfig":
        """A copy with some fields replaced (None values are ignored); checked again.

        Setting ``path`` or ``data_files`` makes the copy read that local data instead of the hub.
        """
        kw = {k: v for k, v in kw.items() if v is not None}
        if isinstance(kw.get("data_files"), str):
            kw["data_files"] = [kw["data_files"]]
        if "path" in kw:
            kw.setdefault("data_files", None)
        elif "data_files" in kw:
            kw.setdefault("path", None)
        out = dataclasses.replace(self, **kw)
        out.validate()
        return out

    def describe_source(self) -> str:
        if self.path:
            return f"local path {self.path}"
        if self.data_files:
            return f"local files {self.data_files}"
        cfg = f", config {self.hub_config}" if self.hub_config else ""
        return f"hub dataset {self.hub_id}{cfg}, split {self.split}, revision {self.revision or 'main'}"

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        return d


# --------------------------------------------------------------------------------------------------------
def config_dirs() -> list[Path]:
    """Folders searched for ``<name>.yaml``, in order."""
    dirs = []
    env = os.environ.get(CFG_DIR_ENV)
    if env:
        dirs.append(Path(env).expanduser())
    dirs.append(Path(__file__).resolve().parents[2] / "datasets_cfg")  # source checkout / editable
    cwd = Path.cwd().resolve()
    for p in (cwd, *cwd.parents):
        dirs.append(p / "datasets_cfg")
    seen, out = set(), []
    for d in dirs:
        if d not in seen:
            seen.add(d)
            out.append(d)
    return out


def list_datasets() -> dict[str, Path]:
    """``{name: yaml path}`` of every set found (first folder wins)."""
    found: dict[str, Path] = {}
    for d in config_dirs():
        if d.is_dir():
            for f in sorted(d.glob("*.yaml")):
                found.setdefault(f.stem, f)
    return found


def _resolve_local(cfg: DatasetConfig, base: Path) -> None:
    """Relative `path` / `data_files` are relative to the YAML file's folder."""
    if cfg.path and not Path(cfg.path).expanduser().is_absolute():
        cfg.path = str((base / cfg.path).resolve())
    elif cfg.path:
        cfg.path = str(Path(cfg.path).expanduser())
    if cfg.data_files:
        cfg.data_files = [str(Path(x).expanduser()) if Path(x).expanduser().is_absolute()
                          else str((base / x).resolve()) for x in cfg.data_files]


def _apply_mirror(cfg: DatasetConfig) -> DatasetConfig:
    """With $FUNASR_NANO_EVAL_MIRROR set and ``$MIRROR/<name>`` present, read the set from there."""
    root = os.environ.get(MIRROR_ENV)
    if root and not cfg.is_local:
        cand = Path(root).expanduser() / cfg.name
        if cand.exists():
            return cfg.with_overrides(path=str(cand))
    return cfg


def load_config(name_or_path) -> DatasetConfig:
    """A `DatasetConfig` from a set name (``smoke``, ``librispeech-test-clean``), a YAML path, a dict,
    or an existing `DatasetConfig` (returned as is)."""
    if isinstance(name_or_path, DatasetConfig):
        return name_or_path
    if isinstance(name_or_path, dict):
        cfg = DatasetConfig.from_dict(name_or_path)
        _resolve_local(cfg, Path.cwd())
        return _apply_mirror(cfg)
    s = os.fspath(name_or_path)
    p = Path(s).expanduser()
    if p.suffix in (".yaml", ".yml") or p.is_file():
        if not p.is_file():
            raise DatasetConfigError(f"dataset config file {p} does not exist")
        path = p
    else:
        known = list_datasets()
        if s not in known:
            where = ", ".join(str(d) for d in config_dirs()[:3])
            raise DatasetConfigError(
                f"unknown dataset {s!r}; known sets: {sorted(known) or 'none found'} (searched {where}, ... "
                f"and ${CFG_DIR_ENV}); or pass the path of a YAML file")
        path = known[s]
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise DatasetConfigError(f"{path}: not valid YAML: {e}") from e
    cfg = DatasetConfig.from_dict(data, source_file=path)
    _resolve_local(cfg, path.parent)
    return _apply_mirror(cfg)
