"""The safetensors conversion cache: a ``model.pt`` converted once into shards, loaded lazily afterwards."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import struct
import sys
import tempfile
import time
from pathlib import Path

from ..paths import cache_root
from . import INDEX_NAME, SINGLE_NAME, CheckpointError
from .torch_reader import TorchCheckpoint

try:  # MLX is needed to produce arrays; the writer also works from numpy alone.
    import mlx.core as mx
except ImportError:  # pragma: no cover - mlx is a hard dependency of the package
    mx = None

CACHE_FORMAT_VERSION = "1"




def _source_metadata(src: Path) -> dict[str, str]:
    st = src.stat()
    return {
        "format": "pt",
        "funasr_nano_cache_version": CACHE_FORMAT_VERSION,
        "source_path": str(src.resolve()),
        "source_size": str(st.st_size),
        "source_mtime_ns": str(st.st_mtime_ns),
    }


def _read_safetensors_metadata(path: Path) -> dict:
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise CheckpointError(f"{path}: not a safetensors file")
        (n,) = struct.unpack("<Q", head)
        if n > 100 * 2 ** 20:
            raise CheckpointError(f"{path}: implausible safetensors header size {n}")
        header = json.loads(f.read(n))
    return header.get("__metadata__", {}) or {}


def _cache_metadata(out_dir: Path) -> dict | None:
    """Metadata recorded by `convert_to_safetensors` in ``out_dir``; None when absent or incomplete."""
    if (out_dir / "alias.json").is_file():  # same tensors as another entry (checkpoint_cache)
        from .aliases import read_alias

        return read_alias(out_dir)
    try:
        index = out_dir / INDEX_NAME
        if index.is_file():
            with open(index, encoding="utf-8") as f:
                j = json.load(f)
            if not all((out_dir / name).is_file() for name in set(j.get("weight_map", {}).values())):
                return None
            return dict(j.get("metadata", {}))
        single = out_dir / SINGLE_NAME
        if single.is_file():
            return _read_safetensors_metadata(single)
    except (OSError, ValueError, CheckpointError):
        return None
    return None


def cache_is_fresh(out_dir, model_pt_path) -> bool:
    """True when ``out_dir`` holds a conversion of ``model_pt_path`` as it is now (size and mtime)."""
    meta = _cache_metadata(Path(out_dir))
    if meta is None:
        return False
    try:
        cur = _source_metadata(Path(model_pt_path))
    except OSError:
        return False
    return all(str(meta.get(k)) == cur[k]
               for k in ("funasr_nano_cache_version", "source_size", "source_mtime_ns"))


def _shard_plan(sizes: list[tuple[str, int]], max_shard_bytes: int) -> list[list[str]]:
    shards: list[list[str]] = [[]]
    cur = 0
    for name, nb in sizes:
        if shards[-1] and cur + nb > max_shard_bytes:
            shards.append([])
            cur = 0
        shards[-1].append(name)
        cur += nb
    return shards


def _replace_dir(tmp: Path, out_dir: Path):
    old = None
    if out_dir.exists():
        old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}-{time.monotonic_ns()}"
        os.rename(out_dir, old)
    os.rename(tmp, out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def convert_to_safetensors(model_pt_path, out_dir, max_shard_bytes: int = 2 ** 30,
                           extra_metadata: dict | None = None) -> Path:
    """Convert a ``model.pt`` into safetensors in ``out_dir`` (dtypes kept; bf16 stays bf16).

    Writes ``model.safetensors`` when everything fits in one shard, else
    ``model-0000i-of-0000N.safetensors`` plus ``model.safetensors.index.json`` (HF layout). Metadata
    records the source's size and mtime so that `cache_is_fresh` detects a stale cache. The
    directory is built under a temporary name and renamed into place; one shard is in memory at a time.
    """
    src = Path(model_pt_path)
    out_dir = Path(out_dir)
    meta = dict(_source_metadata(src), **(extra_metadata or {}))
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with TorchCheckpoint(src) as ck:
        meta["ignored_entries"] = json.dumps(ck.ignored, ensure_ascii=False)
        sizes = [(k, t.nbytes) for k, t in ck.tensors.items()]
        total = sum(nb for _, nb in sizes)
        shards = _shard_plan(sizes, max_shard_bytes)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
        try:
            n = len(shards)
            weight_map = {}
            for i, names in enumerate(shards, 1):
                fname = SINGLE_NAME if n == 1 else f"model-{i:05d}-of-{n:05d}.safetensors"
                arrays = dict(ck.iter_arrays(names))
                mx.save_safetensors(str(tmp / fname), arrays, metadata=meta)
                del arrays
                weight_map.update({k: fname for k in names})
            if n > 1:
                index = {"metadata": {"total_size": total, **meta}, "weight_map": weight_map}
                with open(tmp / INDEX_NAME, "w", encoding="utf-8") as f:
                    json.dump(index, f, indent=2)
                    f.write("\n")
            os.chmod(tmp, 0o755)  # mkdtemp makes it private; the cache holds nothing secret
            _replace_dir(tmp, out_dir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return out_dir


def load_safetensors_dir(directory) -> dict[str, "mx.array"]:
    """Load ``model.safetensors`` or the shards named by ``model.safetensors.index.json`` (lazily, via mx.load)."""
    d = Path(directory)
    index = d / INDEX_NAME
    if index.is_file():
        try:
            with open(index, encoding="utf-8") as f:
                weight_map = json.load(f)["weight_map"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise CheckpointError(f"{index}: unreadable safetensors index ({e})") from e
        files = list(dict.fromkeys(weight_map.values()))
        out: dict[str, mx.array] = {}
        for name in files:
            if not isinstance(name, str) or "/" in name or "\\" in name or name.startswith("."):
                raise CheckpointError(f"{index}: invalid shard name {name!r}")
            p = d / name
            if not p.is_file():
                raise CheckpointError(f"{index} names shard {name!r}, which is missing from {d}")
            out.update(_mx_load(p))
        missing = [k for k in weight_map if k not in out]
        if missing:
            raise CheckpointError(f"{index}: {len(missing)} tensors listed in the index are missing from "
                                  f"their shards, e.g. {missing[:5]}")
        return out
    single = d / SINGLE_NAME
    if single.is_file():
        return _mx_load(single)
    raise CheckpointError(f"{d}: no {SINGLE_NAME} or {INDEX_NAME} found")


def _mx_load(path: Path) -> dict:
    try:
        return mx.load(str(path))
    except Exception as e:
        raise CheckpointError(f"{path}: cannot load safetensors file ({e})") from e


def cache_dir_for(model_pt_path, cache_dir=None) -> Path:
    """Where the safetensors conversion of ``model_pt_path`` lives.

    ``<root>/<stem>-<hash of the absolute path>``; root is ``cache_dir``, else `funasr_nano.paths.cache_root()`. Size and mtime are checked from the cache's metadata (not put in
    the name), so a changed ``model.pt`` is re-converted in place rather than leaving a stale copy.
    """
    src = Path(model_pt_path).resolve()
    root = Path(cache_dir).expanduser() if cache_dir is not None else cache_root()
    digest = hashlib.sha256(str(src).encode("utf-8")).hexdigest()[:16]
    parent = re.sub(r"[^A-Za-z0-9_.-]+", "_", src.parent.name or "model")[:40]
    return root / f"{parent}-{digest}"


def load_checkpoint_weights(ckpt_dir, cache_dir=None) -> dict[str, "mx.array"]:
    """All tensors of a checkpoint directory as ``{key: mx.array}``.

    A directory with ``model.safetensors`` (or an index) is loaded directly. One with ``model.pt``
    is converted once into a safetensors cache (see `cache_dir_for`) that later calls reuse.
    """
    p = Path(ckpt_dir)
    if p.is_file():
        pt, p = p, p.parent
    else:
        if not p.is_dir():
            raise CheckpointError(f"checkpoint directory {p} does not exist")
        if (p / INDEX_NAME).is_file() or (p / SINGLE_NAME).is_file():
            return load_safetensors_dir(p)
        pt = p / "model.pt"
        if not pt.is_file():
            listing = sorted(x.name for x in p.iterdir())[:20]
            raise CheckpointError(f"{p} holds neither model.pt nor {SINGLE_NAME}/{INDEX_NAME} "
                                  f"(found: {listing})")
    out = cache_dir_for(pt, cache_dir)
    if not cache_is_fresh(out, pt):
        size = pt.stat().st_size
        print(f"funasr_nano: converting {pt} ({size / 1e9:.2f} GB) to safetensors in {out} "
              "(one-time) ...", end="", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        try:
            from .aliases import convert_or_alias

            how = convert_or_alias(pt, out)  # an alias when another entry holds the same tensors
        except OSError as e:
            print(" failed", file=sys.stderr, flush=True)
            raise CheckpointError(f"cannot write the safetensors cache {out}: {e}; set $FUNASR_NANO_CACHE "
                                  "or pass cache_dir to a writable directory") from e
        except BaseException:
            print(" failed", file=sys.stderr, flush=True)
            raise
        how = f" (same tensors as {how[6:]}: reused, no copy)" if how.startswith("alias:") else ""
        print(f" done in {time.perf_counter() - t0:.1f} s{how}", file=sys.stderr, flush=True)
    from .aliases import resolve

    return load_safetensors_dir(resolve(out))


