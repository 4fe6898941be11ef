"""One safetensors copy per set of weights in the conversion cache.

The cache (`funasr_nano.checkpoint.cache_dir_for`) has one entry per ``model.pt`` path. Before a
``model.pt`` is converted, the entries already in the cache root whose tensor layout (names,
dtypes, shapes, recorded at their conversion) equals the new file's are compared with it tensor
by tensor (bytes; the comparison stops at the first difference, so another fine-tune of the same
model costs one tensor). When one holds exactly the same tensors (a re-save as
``{'model_state_dict': ..., 'epoch': 3}``, a ``module.`` prefix, another copy of the file), the
new entry is an ``alias.json`` naming it instead of a second copy (1.9 GB for the released model).
A first conversion costs nothing extra. The safetensors forms (Transformers -hf, mlx-audio) need
no conversion at all: they are mapped lazily at load and write nothing to the cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

ALIAS_NAME = "alias.json"
LAYOUT_KEY = "tensor_layout_sha256"


def layout_digest(ck) -> str:
    """sha256 over the sorted (key, dtype, shape) of a `TorchCheckpoint`'s tensors (no data read)."""
    rows = sorted(f"{k}\t{t.dtype.name}\t{tuple(t.shape)}" for k, t in ck.tensors.items())
    return hashlib.sha256("\n".join(rows).encode("utf-8")).hexdigest()


def same_tensors(ck, entry: Path) -> bool:
    """True when the cache entry holds exactly ``ck``'s tensors (bit for bit)."""
    import mlx.core as mx
    import numpy as np

    from . import CheckpointError
    from .cache import load_safetensors_dir

    try:
        cached = load_safetensors_dir(entry)  # lazy (mmap)
    except CheckpointError:
        return False
    if set(cached) != set(ck.tensors):
        return False
    for name, arr, d in ck.iter_numpy():
        c = cached[name]
        if tuple(c.shape) != tuple(arr.shape) or str(c.dtype).rsplit(".", 1)[-1] != d.name:
            return False
        c = np.asarray(c.view(mx.uint16) if c.dtype == mx.bfloat16 else c)
        if not np.array_equal(np.ascontiguousarray(c).view(np.uint8), np.ascontiguousarray(arr).view(np.uint8)):
            return False
    return True


def _entry_metadata(entry: Path) -> dict | None:
    from .cache import _cache_metadata

    return _cache_metadata(entry)


def candidates(root: Path, layout: str, exclude: Path) -> list[Path]:
    """Entries under ``root`` holding safetensors (not aliases) with tensors of that layout."""
    if not root.is_dir():
        return []
    out = []
    for entry in sorted(root.iterdir()):
        if entry == exclude or not entry.is_dir() or entry.name.startswith(".") or (entry / ALIAS_NAME).exists():
            continue
        meta = _entry_metadata(entry)
        if meta and meta.get(LAYOUT_KEY) == layout:
            out.append(entry)
    return out


def read_alias(entry: Path) -> dict | None:
    """The alias record of ``entry`` when its target is still the conversion it named, else None."""
    try:
        meta = json.loads((entry / ALIAS_NAME).read_text(encoding="utf-8"))
        target = entry.parent / meta["target"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    tmeta = _entry_metadata(target) if target.is_dir() and not (target / ALIAS_NAME).exists() else None
    if not tmeta or any(str(tmeta.get(k)) != str(meta.get("target_" + k))
                        for k in ("source_path", "source_size", "source_mtime_ns", LAYOUT_KEY)):
        return None
    return meta


def resolve(entry) -> Path:
    """The directory holding ``entry``'s safetensors (its alias target, or itself)."""
    entry = Path(entry)
    meta = read_alias(entry) if (entry / ALIAS_NAME).is_file() else None
    return entry.parent / meta["target"] if meta else entry


def write_alias(entry: Path, target: Path, meta: dict) -> None:
    from .cache import _replace_dir

    tmeta = _entry_metadata(target) or {}
    rec = dict(meta, target=target.name,
               **{"target_" + k: tmeta.get(k) for k in ("source_path", "source_size", "source_mtime_ns", LAYOUT_KEY)})
    tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}.tmp-", dir=entry.parent))
    try:
        (tmp / ALIAS_NAME).write_text(json.dumps(rec, indent=2) + "\n", encoding="utf-8")
        os.chmod(tmp, 0o755)
        _replace_dir(tmp, entry)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def convert_or_alias(model_pt, entry) -> str:
    """Fill the cache entry of ``model_pt``: an alias of an entry with the same tensors, else a
    conversion. Returns "alias:<target name>" or "converted"."""
    from .cache import _source_metadata, convert_to_safetensors
    from .torch_reader import TorchCheckpoint

    src, entry = Path(model_pt), Path(entry)
    entry.parent.mkdir(parents=True, exist_ok=True)
    with TorchCheckpoint(src) as ck:
        layout = layout_digest(ck)
        for cand in candidates(entry.parent, layout, exclude=entry):
            if same_tensors(ck, cand):
                meta = dict(_source_metadata(src), ignored_entries=json.dumps(ck.ignored, ensure_ascii=False))
                meta[LAYOUT_KEY] = layout
                write_alias(entry, cand, meta)
                return f"alias:{cand.name}"
    convert_to_safetensors(src, entry, extra_metadata={LAYOUT_KEY: layout})
    return "converted"
