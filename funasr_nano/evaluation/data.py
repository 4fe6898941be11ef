"""Reading an evaluation set through Hugging Face ``datasets``, without torch.

The audio column is cast to ``Audio(decode=False)`` so rows carry the encoded file (``{"bytes",
"path"}``); `decode_audio` decodes it with soundfile (FLAC, WAV, OGG, MP3 via libsndfile), averages
channels and resamples to 16 kHz with soxr when the file is at another rate. ``datasets`` >= 4 would
otherwise decode through torchcodec, which needs PyTorch.

Sources, in the order they are tried:

* ``data_files`` (local parquet / arrow / jsonl / csv files, globs allowed);
* ``path``: a file (as data_files), a ``save_to_disk`` folder, a folder of audio files with a
  ``metadata.csv`` / ``metadata.jsonl`` (``file_name`` column, as ``audiofolder`` expects; read here
  without the audiofolder builder, whose encoder needs torchcodec in ``datasets`` 5), or a hub snapshot
  folder (``hf download --repo-type dataset ... --local-dir``), loaded with ``load_dataset(path, config)``;
* ``hub_id`` + ``hub_config`` + ``split`` + ``revision`` from the Hugging Face Hub, streamed or cached.
"""

from __future__ import annotations

import hashlib
import io
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .config import MIRROR_ENV, DatasetConfig

TARGET_RATE = 16000
_BUILDERS = {".parquet": "parquet", ".arrow": "arrow", ".jsonl": "json", ".json": "json", ".csv": "csv",
             ".tsv": "csv"}


class DatasetLoadError(RuntimeError):
    """The evaluation set could not be opened or read."""


@dataclass
class Example:
    index: int          # position in the (sub)set as read
    id: str
    audio: np.ndarray   # mono float32 at 16 kHz
    text: str           # the reference, raw
    source_rate: int    # the file's sample rate before resampling

    @property
    def seconds(self) -> float:
        return self.audio.shape[0] / TARGET_RATE


def _datasets():
    try:
        import datasets
    except ImportError as e:
        raise DatasetLoadError("evaluation needs the 'datasets' package: pip install 'funasr-nano-mlx[eval]' "
                               "(or pip install datasets jiwer whisper-normalizer)") from e
    return datasets


# ----------------------------------------------------------------------------------------------------------
# audio
def decode_audio(value, target_rate: int = TARGET_RATE, base_dir: str | None = None) -> tuple[np.ndarray, int]:
    """An audio cell -> (mono float32 samples at `target_rate`, original rate).

    Accepts ``{"bytes", "path"}`` (``Audio(decode=False)``), raw bytes, a file path, or an already decoded
    ``{"array", "sampling_rate"}``.
    """
    import soundfile as sf

    from ..io.audio import resample

    if isinstance(value, dict) and value.get("array") is not None:
        x = np.asarray(value["array"], dtype=np.float32)
        sr = int(value.get("sampling_rate") or target_rate)
    else:
        data, path = None, None
        if isinstance(value, dict):
            data, path = value.get("bytes"), value.get("path")
        elif isinstance(value, (bytes, bytearray, memoryview)):
            data = bytes(value)
        elif isinstance(value, (str, os.PathLike)):
            path = os.fspath(value)
        else:
            raise DatasetLoadError(f"cannot read an audio cell of type {type(value).__name__}")
        if data is None and path is not None and base_dir and not os.path.isabs(path):
            path = os.path.join(base_dir, path)
        try:
            if data is not None:
                x, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
            elif path is not None:
                if not os.path.isfile(path):
                    raise DatasetLoadError(f"audio file {path} not found (the row has no embedded bytes)")
                x, sr = sf.read(path, dtype="float32", always_2d=True)
            else:
                raise DatasetLoadError("audio cell has neither bytes nor a path")
        except DatasetLoadError:
            raise
        except Exception as e:
            raise DatasetLoadError(f"cannot decode audio {path or '<bytes>'}: {type(e).__name__}: {e}") from e
        x = x.mean(axis=1)
    if x.ndim == 2:
        x = x.mean(axis=0 if x.shape[0] < x.shape[1] else 1)
    x = np.ascontiguousarray(x, dtype=np.float32)
    return resample(x, int(sr), target_rate), int(sr)


# ----------------------------------------------------------------------------------------------------------
# opening a set
def _builder_for(files: list[str]) -> str:
    exts = {Path(f).suffix.lower() for f in files}
    builders = {_BUILDERS.get(e) for e in exts}
    if len(builders) != 1 or None in builders:
        raise DatasetLoadError(f"data_files must all be one of {sorted(_BUILDERS)} files, got {files}")
    return builders.pop()


def _metadata_file(folder: Path, split: str) -> Path | None:
    for d in (folder, folder / split):
        for name in ("metadata.jsonl", "metadata.csv"):
            if (d / name).is_file():
                return d / name
    return None


def _load_local(cfg: DatasetConfig, streaming: bool):
    ds_lib = _datasets()
    split = cfg.split
    if cfg.data_files or (cfg.path and Path(cfg.path).is_file()):
        files = cfg.data_files or [cfg.path]
        builder = _builder_for(files)
        kw = {"delimiter": "\t"} if builder == "csv" and all(f.endswith(".tsv") for f in files) else {}
        return ds_lib.load_dataset(builder, data_files={split: files}, split=split, streaming=streaming,
                                   **kw), None
    folder = Path(cfg.path)
    if not folder.exists():
        raise DatasetLoadError(f"local dataset path {folder} does not exist")
    if (folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file():
        ds = ds_lib.load_from_disk(str(folder))
        if isinstance(ds, ds_lib.DatasetDict):
            if split not in ds:
                raise DatasetLoadError(f"{folder} holds splits {list(ds)}, not {split!r}")
            ds = ds[split]
        return (ds.to_iterable_dataset() if streaming else ds), None
    meta = _metadata_file(folder, split)
    if meta is not None:
        builder = "json" if meta.suffix == ".jsonl" else "csv"
        ds = ds_lib.load_dataset(builder, data_files={split: [str(meta)]}, split=split, streaming=streaming)
        return ds, str(meta.parent)
    return _load_one_split(ds_lib, str(folder), cfg, streaming), None


def _load_one_split(ds_lib, source: str, cfg: DatasetConfig, streaming: bool):
    """``load_dataset(source, config, split)``, but a cached (non-streamed) load reads only the split's
    own files: ``datasets`` would otherwise download and prepare every split of the config (for
    openslr/librispeech_asr 'clean' that is train.100 + train.360 + validation + test, ~30 GB, to
    evaluate 368 MB). The split's files come from the builder's resolved data_files and are loaded
    with the same packaged builder (parquet ...). When that is not possible the split is streamed
    instead of downloading the whole config."""
    kw = {"revision": cfg.revision} if source == cfg.hub_id else {}
    if streaming:
        return ds_lib.load_dataset(source, name=cfg.hub_config, split=cfg.split, streaming=True, **kw)
    files, builder = None, None
    try:
        builder = ds_lib.load_dataset_builder(source, name=cfg.hub_config, **kw)
        files = (builder.config.data_files or {}).get(cfg.split)
    except Exception:
        builder = None
    if builder is None or not files or builder.name not in ("parquet", "arrow", "json", "csv"):
        print(f"note: cannot read split {cfg.split!r} of {source} on its own; streaming it instead of "
              "downloading every split", file=sys.stderr)
        return ds_lib.load_dataset(source, name=cfg.hub_config, split=cfg.split, streaming=True, **kw)
    if len(builder.config.data_files) == 1:
        return ds_lib.load_dataset(source, name=cfg.hub_config, split=cfg.split, **kw)
    return ds_lib.load_dataset(builder.name, data_files={cfg.split: list(files)}, split=cfg.split,
                               features=builder.info.features)


def _load_hub(cfg: DatasetConfig, streaming: bool):
    ds_lib = _datasets()
    try:
        return _load_one_split(ds_lib, cfg.hub_id, cfg, streaming)
    except Exception as e:
        raise DatasetLoadError(
            f"could not load {cfg.describe_source()} ({type(e).__name__}: {e}).\n"
            f"Offline? Point the set at a local copy: --data-path DIR (a hub snapshot, a save_to_disk folder, "
            f"or audio files + metadata.csv), --data-files FILES (parquet/arrow/jsonl/csv), or put the copy "
            f"at ${MIRROR_ENV}/{cfg.name}.") from e


def resolve_streaming(cfg: DatasetConfig, limit: int | None, subset: str = "first",
                      streaming: bool | None = None) -> bool:
    """Explicit argument > config > auto (hub: stream when a limit is given; local: stream unless the
    'spread' subset needs the length)."""
    s = streaming if streaming is not None else cfg.streaming
    if s == "auto":
        s = (limit is not None) if not cfg.is_local else True
    if s and subset == "spread" and limit is not None:
        raise DatasetLoadError("subset='spread' needs the whole split's length: run with streaming off "
                               "(--no-streaming)")
    return bool(s)


def _column_names(ds) -> list[str] | None:
    names = getattr(ds, "column_names", None)
    if names is None and getattr(ds, "features", None) is not None:
        names = list(ds.features)
    return names


def open_dataset(cfg: DatasetConfig, limit: int | None = None, subset: str = "first",
                 streaming: bool | None = None):
    """Open the set -> (rows iterable, number of rows or None, info dict for the result file)."""
    ds_lib = _datasets()
    if limit is not None and limit < 1:
        raise DatasetLoadError(f"limit must be >= 1, got {limit}")
    if subset not in ("first", "spread"):
        raise DatasetLoadError(f"subset must be 'first' or 'spread', got {subset!r}")
    stream = resolve_streaming(cfg, limit, subset, streaming)
    base_dir = None
    if cfg.is_local:
        try:
            ds, base_dir = _load_local(cfg, stream)
        except DatasetLoadError:
            raise
        except Exception as e:
            raise DatasetLoadError(f"could not load {cfg.describe_source()} for dataset {cfg.name!r}: "
                                   f"{type(e).__name__}: {e}") from e
    else:
        ds = _load_hub(cfg, stream)
    names = _column_names(ds)
    if names is None and base_dir is not None:
        names = _metadata_columns(_metadata_file(Path(cfg.path), cfg.split))
    audio_key = cfg.audio_column
    if names is not None:
        if base_dir is not None and audio_key not in names and "file_name" in names:
            audio_key = "file_name"  # audio files listed by a metadata file
        _check_columns(cfg, names, audio_key)
    # No remove_columns: on a streamed set (datasets 5.2) it re-encodes rows through Audio.encode_example,
    # which needs torchcodec. Unused columns are simply not read.
    feats = getattr(ds, "features", None)
    if feats is not None and isinstance(feats.get(cfg.audio_column), ds_lib.Audio):
        ds = ds.cast_column(cfg.audio_column, ds_lib.Audio(decode=False))
    total = None
    if stream:
        if limit is not None:
            ds = ds.take(limit)
        split_info = getattr(getattr(ds, "info", None), "splits", None) or {}
        n_full = split_info[cfg.split].num_examples if cfg.split in split_info else None
        if n_full is None:  # for the progress bar only
            n_full = _local_parquet_rows(cfg) if cfg.is_local else cfg.num_examples
        total = limit if limit is not None else (n_full or None)
        if limit is not None and n_full:
            total = min(limit, n_full)
    else:
        n = len(ds)
        if limit is not None and limit < n:
            if subset == "first":
                idx = list(range(limit))
            else:
                idx = sorted(set(np.linspace(0, n - 1, limit).round().astype(int).tolist()))
            ds = ds.select(idx)
        total = len(ds)
    info = {"source": cfg.describe_source(), "streaming": stream, "limit": limit, "subset": subset,
            "base_dir": base_dir, "audio_key": audio_key}
    return ds, total, info


def _local_parquet_rows(cfg: DatasetConfig) -> int | None:
    """Row count of local parquet files from their footers (for the progress bar when streaming)."""
    import glob

    files = cfg.data_files or ([cfg.path] if cfg.path and Path(cfg.path).is_file() else [])
    paths = [p for pat in files for p in sorted(glob.glob(pat))]
    if not paths or not all(p.endswith(".parquet") for p in paths):
        return None
    try:
        import pyarrow.parquet as pq

        return sum(pq.ParquetFile(p).metadata.num_rows for p in paths)
    except Exception:
        return None


def _check_columns(cfg: DatasetConfig, names, audio_key: str) -> None:
    need = [c for c in (audio_key, cfg.text_column, cfg.id_column) if c]
    missing = [c for c in need if c not in names]
    if missing:
        raise DatasetLoadError(f"dataset {cfg.name!r} ({cfg.describe_source()}) has no column(s) {missing}; "
                               f"its columns are {list(names)}. Fix audio_column / text_column / id_column in "
                               f"{cfg.source_file or 'the config'}.")


def _metadata_columns(meta: Path | None) -> list[str] | None:
    if meta is None:
        return None
    with open(meta, encoding="utf-8") as f:
        first = f.readline()
    if meta.suffix == ".jsonl":
        import json

        return list(json.loads(first)) if first.strip() else []
    import csv

    return next(csv.reader([first]), [])


def iter_examples(cfg: DatasetConfig, rows, info: dict | None = None):
    """Rows -> `Example`s (audio decoded and resampled, text as given, an id for every row).
    `info` is `open_dataset`'s third value (where relative audio paths start, the audio column)."""
    info = info or {}
    base_dir, audio_key = info.get("base_dir"), info.get("audio_key") or cfg.audio_column
    for i, row in enumerate(rows):
        if i == 0:
            _check_columns(cfg, list(row), audio_key)
        cell = row[audio_key]
        audio, sr = decode_audio(cell, TARGET_RATE, base_dir)
        if cfg.id_column:
            uid = str(row[cfg.id_column])
        else:
            path = cell.get("path") if isinstance(cell, dict) else (cell if isinstance(cell, str) else None)
            uid = Path(path).stem if path else f"{i:06d}"
        text = row[cfg.text_column]
        yield Example(i, uid, audio, "" if text is None else str(text), sr)


# ----------------------------------------------------------------------------------------------------------
# provenance
def source_fingerprint(cfg: DatasetConfig, timeout: float = 10.0, max_hash_bytes: int = 64 << 20) -> dict:
    """What identifies the data read: the hub commit sha (best effort, needs the network), or the
    sha256 of small local files."""
    out: dict = {}
    if cfg.is_local:
        files: list[Path] = []
        if cfg.data_files:
            import glob

            for pat in cfg.data_files:
                files += [Path(p) for p in sorted(glob.glob(pat))] or [Path(pat)]
        elif cfg.path and Path(cfg.path).is_file():
            files = [Path(cfg.path)]
        files = [f for f in files if f.is_file()]
        total = sum(f.stat().st_size for f in files)
        if files and total <= max_hash_bytes:
            h = hashlib.sha256()
            for f in files:
                h.update(f.name.encode())
                h.update(f.read_bytes())
            out["local_sha256"] = h.hexdigest()
        return out
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "") or \
            os.environ.get("HF_DATASETS_OFFLINE", "0") not in ("0", ""):
        return out
    try:
        from huggingface_hub import HfApi

        out["resolved_revision"] = HfApi().dataset_info(cfg.hub_id, revision=cfg.revision, timeout=timeout).sha
    except Exception as e:  # best effort: offline, gated, or the hub changed its API
        out["resolved_revision_error"] = f"{type(e).__name__}: {str(e)[:200]}"
    return out


def dataset_available(name_or_cfg, timeout: float = 5.0) -> tuple[bool, str]:
    """Whether a set can be read now (a local copy exists, or the hub answers): for skipping the full-set
    benchmarks offline. Returns (ok, reason)."""
    from .config import load_config

    try:
        cfg = load_config(name_or_cfg)
    except Exception as e:
        return False, str(e)
    if cfg.is_local:
        if cfg.path:
            return (Path(cfg.path).exists(), f"local path {cfg.path}")
        import glob

        ok = all(glob.glob(p) for p in cfg.data_files)
        return ok, f"local files {cfg.data_files}"
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "") or \
            os.environ.get("HF_DATASETS_OFFLINE", "0") not in ("0", ""):
        return False, "HF_HUB_OFFLINE / HF_DATASETS_OFFLINE is set and no local mirror is configured"
    try:
        from huggingface_hub import HfApi

        HfApi().dataset_info(cfg.hub_id, revision=cfg.revision, timeout=timeout)
        return True, f"hub dataset {cfg.hub_id} reachable"
    except Exception as e:
        return False, f"hub dataset {cfg.hub_id} not reachable ({type(e).__name__}); set ${MIRROR_ENV}"
