"""Writing the official ``model.pt`` form without torch (``torch.save`` zip layout, protocol-2 pickle).

Used to write synthetic checkpoints and the test fixtures; tensors can be produced lazily
(`LazyTensor`) so that a real-size checkpoint is written with bounded memory.
"""

from __future__ import annotations

import hashlib
import math
import os
import pickle
import struct
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np

from . import CheckpointError
from .dtypes import (
    _DType,
    _dtype_by_name,
    _dtype_of_mx,
    _dtype_of_numpy,
    _mx_dtype,
    float_to_bf16_bits,
)

try:  # MLX is needed to produce arrays; the writer also works from numpy alone.
    import mlx.core as mx
except ImportError:  # pragma: no cover - mlx is a hard dependency of the package
    mx = None



class LazyTensor:
    """A tensor produced on demand while writing (keeps memory bounded for big checkpoints).

    ``fn()`` must return a numpy or MLX array of ``shape``; ``dtype`` is the dtype it returns
    (only whether it is floating matters to the writer's casting rule).
    """

    def __init__(self, shape, fn: Callable[[], Any], dtype: str = "float32"):
        self.shape = tuple(int(s) for s in shape)
        self.fn = fn
        self.dtype = _dtype_by_name(dtype)


class _PickleBuilder:
    """Emits protocol-2 pickle opcodes by hand (no torch objects are needed)."""

    def __init__(self):
        self.out = bytearray(b"\x80\x02")
        self._memo: dict[Any, int] = {}

    def _put(self, key):
        idx = len(self._memo)
        self._memo[key] = idx
        self.out += b"q" + bytes([idx]) if idx < 256 else b"r" + struct.pack("<I", idx)

    def _get(self, key) -> bool:
        idx = self._memo.get(key)
        if idx is None:
            return False
        self.out += b"h" + bytes([idx]) if idx < 256 else b"j" + struct.pack("<I", idx)
        return True

    def global_(self, module: str, name: str):
        key = ("global", module, name)
        if not self._get(key):
            self.out += b"c" + module.encode() + b"\n" + name.encode() + b"\n"
            self._put(key)

    def str_(self, s: str, memo: bool = False):
        key = ("str", s)
        if memo and self._get(key):
            return
        b = s.encode("utf-8")
        self.out += b"X" + struct.pack("<I", len(b)) + b
        if memo:
            self._put(key)

    def int_(self, v: int):
        if 0 <= v < 256:
            self.out += b"K" + bytes([v])
        elif 0 <= v < 65536:
            self.out += b"M" + struct.pack("<H", v)
        elif -(2 ** 31) <= v < 2 ** 31:
            self.out += b"J" + struct.pack("<i", v)
        else:
            enc = pickle.encode_long(v)
            self.out += b"\x8a" + bytes([len(enc)]) + enc

    def int_tuple(self, values):
        values = tuple(values)
        if not values:
            self.out += b")"
            return
        if len(values) <= 3:
            for v in values:
                self.int_(v)
            self.out += (b"\x85", b"\x86", b"\x87")[len(values) - 1]
            return
        self.out += b"("
        for v in values:
            self.int_(v)
        self.out += b"t"

    def empty_ordered_dict(self):
        self.global_("collections", "OrderedDict")
        self.out += b")R"

    def tensor(self, storage_class: str, key: str, numel: int, shape: tuple):
        stride, acc = [], 1
        for s in reversed(shape):
            stride.append(acc)
            acc *= s
        self.global_("torch._utils", "_rebuild_tensor_v2")
        self.out += b"(("
        self.str_("storage", memo=True)
        self.global_("torch", storage_class)
        self.str_(key)
        self.str_("cpu", memo=True)
        self.int_(numel)
        self.out += b"tQ"          # TUPLE, BINPERSID
        self.int_(0)               # storage offset
        self.int_tuple(shape)
        self.int_tuple(reversed(stride))
        self.out += b"\x89"        # requires_grad=False
        self.empty_ordered_dict()  # backward hooks
        self.out += b"tR"          # TUPLE, REDUCE


@dataclass
class _Entry:
    key: str
    value: Any
    shape: tuple
    src: _DType
    out: _DType

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


def _describe(value) -> tuple[tuple, _DType]:
    if isinstance(value, LazyTensor):
        return value.shape, value.dtype
    if mx is not None and isinstance(value, mx.array):
        return tuple(value.shape), _dtype_of_mx(value.dtype)
    arr = np.asarray(value)
    return tuple(arr.shape), _dtype_of_numpy(arr.dtype)


def _chunks_as(value, shape: tuple, out: _DType, chunk_elems: int = 1 << 24) -> Iterator[memoryview]:
    """Yield the bytes of ``value`` converted to ``out`` in C order, a bounded chunk at a time."""
    if isinstance(value, LazyTensor):
        value = value.fn()
    if mx is not None and isinstance(value, mx.array):
        if tuple(value.shape) != shape:
            raise CheckpointError(f"array of shape {tuple(value.shape)} where {shape} was announced")
        if value.dtype != _mx_dtype(out):
            value = value.astype(_mx_dtype(out))
        if out.name == "bfloat16":
            value = value.view(mx.uint16)
        arr = np.ascontiguousarray(np.asarray(value)).reshape(-1)
        for i in range(0, arr.size, chunk_elems):
            yield memoryview(arr[i:i + chunk_elems].view(np.uint8))
        return
    arr = np.asarray(value)
    if tuple(arr.shape) != shape:
        raise CheckpointError(f"array of shape {tuple(arr.shape)} where {shape} was announced")
    flat = arr.reshape(-1)
    for i in range(0, flat.size, chunk_elems):
        part = flat[i:i + chunk_elems]
        if out.name == "bfloat16":
            part = float_to_bf16_bits(part)
        else:
            part = np.ascontiguousarray(part, dtype=out.np_dtype)
        if sys.byteorder != "little" and part.dtype.itemsize > 1:  # pragma: no cover
            part = part.byteswap()
        yield memoryview(part.view(np.uint8))


def _aligned_zipinfo(zf: zipfile.ZipFile, name: str, size: int, align: int = 64) -> zipfile.ZipInfo:
    """A STORED ZipInfo whose data starts on an ``align``-byte boundary (like torch's writer)."""
    zi = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    zi.compress_type = zipfile.ZIP_STORED
    zi.file_size = size
    zi.external_attr = 0o644 << 16
    zip64_extra = 20 if size * 1.05 > zipfile.ZIP64_LIMIT else 0
    base = zf.fp.tell() + 30 + len(name.encode("utf-8")) + 4 + zip64_extra
    pad = (-base) % align
    zi.extra = struct.pack("<HH", 0x4246, pad) + b"Z" * pad  # "FB" padding field, as torch writes
    return zi


def _write_record(zf: zipfile.ZipFile, name: str, data_or_chunks, size: int | None = None):
    if isinstance(data_or_chunks, (bytes, bytearray)):
        chunks, size = [data_or_chunks], len(data_or_chunks)
    else:
        chunks = data_or_chunks
    zi = _aligned_zipinfo(zf, name, size)
    written = 0
    with zf.open(zi, "w") as f:
        for c in chunks:
            f.write(c)
            written += c.nbytes if isinstance(c, memoryview) else len(c)
    if written != size:
        raise CheckpointError(f"record {name}: wrote {written} bytes, expected {size}")


def write_model_pt(path, state_dict: Mapping[str, Any], dtype: str | None = "bfloat16") -> Path:
    """Write ``{"state_dict": OrderedDict(...)}`` in torch's zip format, without torch.

    Values may be numpy arrays, MLX arrays or :class:`LazyTensor`. Floating tensors are stored as
    ``dtype`` (``None`` keeps each array's own dtype); integer and bool tensors keep theirs.
    Tensors are converted and written one at a time; the file appears atomically at ``path``.
    ``torch.load(path, weights_only=True)`` reads the result.
    """
    path = Path(path)
    out_dtype = None if dtype is None else _dtype_by_name(dtype)
    if out_dtype is not None and not out_dtype.floating:
        raise ValueError(f"dtype must be a floating dtype or None, got {dtype!r}")
    entries: list[_Entry] = []
    for key, value in state_dict.items():
        if not isinstance(key, str):
            raise CheckpointError(f"state dict keys must be str, got {key!r}")
        shape, src = _describe(value)
        out = out_dtype if (out_dtype is not None and src.floating) else src
        entries.append(_Entry(key, value, shape, src, out))

    pk = _PickleBuilder()
    pk.out += b"}"                      # EMPTY_DICT (top level)
    pk.str_("state_dict")
    pk.empty_ordered_dict()
    for start in range(0, len(entries), 1000):
        pk.out += b"("                  # MARK
        for i, e in enumerate(entries[start:start + 1000], start):
            pk.str_(e.key)
            pk.tensor(e.out.storage, str(i), e.numel, e.shape)
        pk.out += b"u"                  # SETITEMS
    pk.out += b"s."                     # SETITEM, STOP

    ident = hashlib.sha1()
    for e in entries:
        ident.update(f"{e.key}:{e.shape}:{e.out.name};".encode())

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}-{os.urandom(4).hex()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as raw:
            with zipfile.ZipFile(raw, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
                arch = "archive/"
                _write_record(zf, arch + "data.pkl", bytes(pk.out))
                _write_record(zf, arch + ".format_version", b"1")
                _write_record(zf, arch + ".storage_alignment", b"64")
                _write_record(zf, arch + "byteorder", b"little")
                for i, e in enumerate(entries):
                    _write_record(zf, f"{arch}data/{i}", _chunks_as(e.value, e.shape, e.out),
                                  e.numel * e.out.itemsize)
                _write_record(zf, arch + "version", b"3\n")
                _write_record(zf, arch + ".data/serialization_id", ident.hexdigest().encode())
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


