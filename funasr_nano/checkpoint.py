"""Reading and writing the official ``model.pt`` without torch, and a safetensors cache.

The released Fun-ASR-Nano-2512 ships one ``model.pt`` written by ``torch.save({"state_dict": ...})``:
a zip archive holding ``<name>/data.pkl`` (a protocol-2 pickle of the dict, tensors rebuilt by
``torch._utils._rebuild_tensor_v2`` from storages referenced through persistent ids) and one
record ``<name>/data/<key>`` of raw little-endian bytes per storage.

Unpickling runs code named by the file, so the reader uses a restricted unpickler: it resolves
only the handful of globals a tensor state dict needs, each to a stand-in defined here (torch is
never imported), and refuses every other global with a :class:`CheckpointError` before anything
is called. Storage bytes are read from the zip records and turned into MLX arrays (bf16 storages
become ``mx.bfloat16`` arrays, bit for bit).

``load_checkpoint_weights`` converts a ``model.pt`` once into safetensors shards in a cache
directory and loads those afterwards (``mx.load`` maps them lazily).
"""

from __future__ import annotations

import _compat_pickle
import collections
import hashlib
import io
import json
import math
import os
import pickle
import re
import shutil
import struct
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

import numpy as np

from .checkpoint_pt import EXTRA_GLOBALS, extract_state_dict

try:  # MLX is needed to produce arrays; the writer also works from numpy alone.
    import mlx.core as mx
except ImportError:  # pragma: no cover - mlx is a hard dependency of the package
    mx = None


class CheckpointError(ValueError):
    """A checkpoint file or directory is missing, malformed, unsafe or does not fit the model."""


CACHE_FORMAT_VERSION = "1"
INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"
_MAX_PICKLE_BYTES = 256 * 2 ** 20  # the real checkpoint's data.pkl is ~120 KB

# --------------------------------------------------------------------------------------------
# dtypes
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _DType:
    name: str            # canonical name ("bfloat16", "float32", ...)
    storage: str         # torch legacy storage class name
    np_dtype: Any        # numpy dtype of the raw storage elements (bf16 -> uint16 bits)
    floating: bool

    @property
    def itemsize(self) -> int:
        return np.dtype(self.np_dtype).itemsize


_DTYPE_LIST = [
    _DType("float32", "FloatStorage", np.float32, True),
    _DType("float64", "DoubleStorage", np.float64, True),
    _DType("float16", "HalfStorage", np.float16, True),
    _DType("bfloat16", "BFloat16Storage", np.uint16, True),
    _DType("int64", "LongStorage", np.int64, False),
    _DType("int32", "IntStorage", np.int32, False),
    _DType("int16", "ShortStorage", np.int16, False),
    _DType("int8", "CharStorage", np.int8, False),
    _DType("uint8", "ByteStorage", np.uint8, False),
    _DType("bool", "BoolStorage", np.bool_, False),
]
_DTYPES = {d.name: d for d in _DTYPE_LIST}
_BY_STORAGE = {d.storage: d for d in _DTYPE_LIST}
_DTYPE_ALIASES = {"bf16": "bfloat16", "fp32": "float32", "f32": "float32", "float": "float32",
                  "fp16": "float16", "f16": "float16", "half": "float16", "double": "float64",
                  "long": "int64", "int": "int32"}


def _dtype_by_name(name: str) -> _DType:
    key = _DTYPE_ALIASES.get(str(name), str(name))
    if key not in _DTYPES:
        raise ValueError(f"unsupported dtype {name!r}; choose one of {sorted(_DTYPES)}")
    return _DTYPES[key]


def _dtype_of_numpy(dt) -> _DType:
    dt = np.dtype(dt)
    if dt == np.bool_:
        return _DTYPES["bool"]
    for d in _DTYPE_LIST:
        if d.name != "bfloat16" and np.dtype(d.np_dtype) == dt:
            return d
    raise CheckpointError(f"cannot store a numpy array of dtype {dt} in a torch checkpoint")


def _dtype_of_mx(dt) -> _DType:
    name = str(dt).rsplit(".", 1)[-1]
    if name in _DTYPES:
        return _DTYPES[name]
    raise CheckpointError(f"cannot store an MLX array of dtype {dt} in a torch checkpoint")


def _mx_dtype(d: _DType):
    return getattr(mx, "bool_" if d.name == "bool" else d.name)


def _np_to_mx(arr: np.ndarray, d: _DType):
    """Raw storage elements (numpy) -> MLX array of the logical dtype."""
    if d.name == "bfloat16":
        return mx.array(arr, dtype=mx.uint16).view(mx.bfloat16)
    return mx.array(arr, dtype=_mx_dtype(d))  # explicit: mx.array would turn float64 into float32


def float_to_bf16_bits(x: np.ndarray, chunk_elems: int = 1 << 22) -> np.ndarray:
    """float32/float16/float64 numpy -> bf16 bit patterns (uint16), round-to-nearest-even like torch.

    Works in chunks, so temporaries stay small even for the 155 M-element embedding.
    """
    x = np.asarray(x)
    out = np.empty(x.shape, dtype=np.uint16)
    src = x.reshape(-1)
    dst = out.reshape(-1)
    for i in range(0, src.size, chunk_elems):
        f = np.ascontiguousarray(src[i:i + chunk_elems], dtype=np.float32)
        u = f.view(np.uint32)
        r = u >> np.uint32(16)
        r &= np.uint32(1)
        r += np.uint32(0x7FFF)
        r += u
        r >>= np.uint32(16)
        nan = np.isnan(f)
        if nan.any():  # keep NaN a (quiet) NaN instead of letting the rounding carry into the exponent
            r[nan] = (u[nan] >> np.uint32(16)) | np.uint32(0x0040)
        dst[i:i + chunk_elems] = r
    return out


# --------------------------------------------------------------------------------------------
# restricted unpickler: stand-ins for the torch globals a state dict references
# --------------------------------------------------------------------------------------------


class _Frozen:
    """Objects the pickle must not be able to modify through BUILD."""

    __slots__ = ()

    def __setstate__(self, state):
        raise CheckpointError("the checkpoint pickle tries to set state on a tensor object")


class _StorageType(_Frozen):
    __slots__ = ("dtype",)

    def __init__(self, dtype: _DType):
        object.__setattr__(self, "dtype", dtype)

    def __repr__(self):
        return f"torch.{self.dtype.storage}"


class _Marker(_Frozen):
    """A referenced-but-never-called global such as ``torch.Tensor`` or ``torch.float32``."""

    __slots__ = ("qualname",)

    def __init__(self, qualname: str):
        object.__setattr__(self, "qualname", qualname)

    def __repr__(self):
        return self.qualname


class _StorageRef(_Frozen):
    __slots__ = ("dtype", "key", "location", "numel")

    def __init__(self, dtype: _DType, key: str, location: str, numel: int):
        for name, value in zip(self.__slots__, (dtype, key, location, numel)):
            object.__setattr__(self, name, value)


class _TensorRef(_Frozen):
    """A tensor described by the pickle; its bytes are read from the zip later."""

    __slots__ = ("storage", "offset", "shape", "stride")

    def __init__(self, storage: _StorageRef, offset: int, shape: tuple, stride: tuple):
        for name, value in zip(self.__slots__, (storage, offset, shape, stride)):
            object.__setattr__(self, name, value)

    @property
    def dtype(self) -> _DType:
        return self.storage.dtype

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.numel * self.dtype.itemsize


def _int_tuple(value, what: str) -> tuple:
    if not isinstance(value, (tuple, list)) or not all(type(v) is int for v in value):
        raise CheckpointError(f"malformed tensor record: {what} is {value!r}, expected a tuple of ints")
    return tuple(value)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
    if not isinstance(storage, _StorageRef):
        raise CheckpointError(f"malformed tensor record: storage is {type(storage).__name__}")
    if type(storage_offset) is not int or storage_offset < 0:
        raise CheckpointError(f"malformed tensor record: storage offset {storage_offset!r}")
    shape = _int_tuple(size, "size")
    strides = _int_tuple(stride, "stride")
    if len(shape) != len(strides) or any(s < 0 for s in shape) or any(s < 0 for s in strides):
        raise CheckpointError(f"malformed tensor record: size {shape} / stride {strides}")
    return _TensorRef(storage, storage_offset, shape, strides)


def _rebuild_tensor(storage, storage_offset, size, stride):
    return _rebuild_tensor_v2(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, *extra):
    if not isinstance(data, _TensorRef):
        raise CheckpointError("malformed parameter record: its data is not a tensor")
    return data


def _rebuild_parameter_with_state(data, requires_grad, backward_hooks, state=None):
    return _rebuild_parameter(data)


_TENSOR_TYPE = _Marker("torch.Tensor")
_PARAMETER_TYPE = _Marker("torch.nn.parameter.Parameter")
_REBUILDERS = (_rebuild_tensor_v2, _rebuild_tensor, _rebuild_parameter, _rebuild_parameter_with_state)


def _rebuild_from_type_v2(func, new_type, args, state):
    if func not in _REBUILDERS or new_type not in (_TENSOR_TYPE, _PARAMETER_TYPE):
        raise CheckpointError("malformed tensor record: unsupported tensor subclass reconstruction")
    if not isinstance(args, tuple):
        raise CheckpointError("malformed tensor record: arguments are not a tuple")
    return func(*args)


def _torch_size(values=()):
    return _int_tuple(tuple(values), "torch.Size")


_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter_with_state,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
    ("torch", "Tensor"): _TENSOR_TYPE,
    ("torch._tensor", "Tensor"): _TENSOR_TYPE,
    ("torch.nn.parameter", "Parameter"): _PARAMETER_TYPE,
    ("torch", "Size"): _torch_size,
}
for _d in _DTYPE_LIST:
    _ALLOWED_GLOBALS[("torch", _d.storage)] = _StorageType(_d)
    _ALLOWED_GLOBALS[("torch", _d.name)] = _Marker(f"torch.{_d.name}")
_ALLOWED_GLOBALS[("torch", "bool")] = _Marker("torch.bool")
_ALLOWED_GLOBALS[("torch", "half")] = _Marker("torch.half")
_ALLOWED_GLOBALS[("torch", "float")] = _Marker("torch.float")
_ALLOWED_GLOBALS[("torch", "long")] = _Marker("torch.long")
_ALLOWED_GLOBALS.update(EXTRA_GLOBALS)  # numeric numpy scalars (trainer counters), see checkpoint_pt


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, source: str):
        super().__init__(file)
        self._source = source
        self._storages: dict[str, _StorageRef] = {}

    def find_class(self, module, name):
        key = (module, name)
        if key in _ALLOWED_GLOBALS:
            return _ALLOWED_GLOBALS[key]
        shown = f"{module}.{name}"
        py3 = _compat_pickle.NAME_MAPPING.get(key) or (_compat_pickle.IMPORT_MAPPING.get(module, module), name)
        if f"{py3[0]}.{py3[1]}" != shown:  # protocol-2 pickles spell builtins as __builtin__
            shown += f"' (= '{py3[0]}.{py3[1]}')"
        else:
            shown += "'"
        raise CheckpointError(
            f"refusing to load {self._source}: its pickle references the global '{shown}, "
            "which a tensor state dict never needs (the file may be malicious or is not a plain "
            "PyTorch state dict); nothing was executed")

    def persistent_load(self, pid):
        if (not isinstance(pid, tuple) or len(pid) != 5 or pid[0] != "storage"
                or not isinstance(pid[1], _StorageType) or not isinstance(pid[2], str)
                or not isinstance(pid[3], str) or type(pid[4]) is not int or pid[4] < 0):
            raise CheckpointError(f"{self._source}: unsupported persistent id {pid!r} in the pickle")
        _, stype, key, location, numel = pid
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", key):
            raise CheckpointError(f"{self._source}: invalid storage key {key!r}")
        prev = self._storages.get(key)
        if prev is not None:
            if prev.dtype is not stype.dtype or prev.numel != numel:
                raise CheckpointError(f"{self._source}: storage {key!r} is referenced with two different types")
            return prev
        ref = _StorageRef(stype.dtype, key, location, numel)
        self._storages[key] = ref
        return ref


def _extract_state_dict(obj, source: str):
    """(tensors, ignored entries): FunASR's unwrapping, see `funasr_nano.checkpoint_pt`."""
    return extract_state_dict(obj, source, lambda v: isinstance(v, _TensorRef))


# --------------------------------------------------------------------------------------------
# reader
# --------------------------------------------------------------------------------------------


class TorchCheckpoint:
    """An open ``torch.save`` zip archive whose tensors can be read one storage at a time.

    ``tensors`` maps state-dict keys to tensor descriptions (shape, dtype, nbytes) in file order;
    ``iter_arrays`` yields MLX arrays, keeping at most the storages still needed in memory.
    """

    def __init__(self, path):
        self.path = Path(path)
        src = str(self.path)
        if not self.path.is_file():
            raise CheckpointError(f"{src}: no such file")
        try:
            self._zip = zipfile.ZipFile(self.path, "r")
        except zipfile.BadZipFile as e:
            with open(self.path, "rb") as f:
                head = f.read(4)
            hint = ""
            if head[:2] == b"\x80\x02" or head[:1] == b"\x80":
                hint = " (it looks like a legacy non-zip torch file, which is not supported)"
            raise CheckpointError(
                f"{src}: not a readable PyTorch zip checkpoint ({e}); the file is truncated, corrupt "
                f"or of another format{hint}") from e
        except OSError as e:
            raise CheckpointError(f"{src}: cannot read checkpoint: {e}") from e
        try:
            self._open_pickle()
        except BaseException:
            self._zip.close()
            raise

    def _open_pickle(self):
        src = str(self.path)
        pkls = [n for n in self._zip.namelist() if n.endswith("data.pkl") and n.count("/") == 1]
        if len(pkls) != 1:
            raise CheckpointError(f"{src}: not a PyTorch checkpoint: expected one '<name>/data.pkl' record, "
                                  f"found {len(pkls)}")
        self._prefix = pkls[0][: -len("data.pkl")]
        self._big_endian = False
        if self._prefix + "byteorder" in self._zip.namelist():
            order = self._read_record(self._prefix + "byteorder").decode("ascii", "replace").strip()
            if order not in ("little", "big"):
                raise CheckpointError(f"{src}: unknown byteorder {order!r}")
            self._big_endian = order == "big"
        if self._zip.getinfo(pkls[0]).file_size > _MAX_PICKLE_BYTES:
            raise CheckpointError(f"{src}: data.pkl is implausibly large for a state dict "
                                  f"({self._zip.getinfo(pkls[0]).file_size} bytes)")
        data = self._read_record(pkls[0])
        unpickler = _RestrictedUnpickler(io.BytesIO(data), src)
        try:
            obj = unpickler.load()
        except CheckpointError:
            raise
        except RecursionError as e:
            raise CheckpointError(f"{src}: the checkpoint pickle is nested too deeply") from e
        except Exception as e:  # UnpicklingError, EOFError, TypeError from bad REDUCE args, ...
            raise CheckpointError(f"{src}: the checkpoint pickle is malformed: {type(e).__name__}: {e}") from e
        self.tensors, self.ignored = _extract_state_dict(obj, src)
        for name, t in self.tensors.items():
            self._check_bounds(name, t)

    def _check_bounds(self, name: str, t: _TensorRef):
        if t.numel == 0:
            return
        last = t.offset + sum((s - 1) * st for s, st in zip(t.shape, t.stride))
        if last >= t.storage.numel:
            raise CheckpointError(
                f"{self.path}: tensor {name!r} (shape {t.shape}, stride {t.stride}, offset {t.offset}) "
                f"reaches past the end of its storage of {t.storage.numel} elements")

    def _read_record(self, name: str) -> bytes:
        try:
            return self._zip.read(name)
        except KeyError as e:
            raise CheckpointError(f"{self.path}: record {name!r} is missing from the archive") from e
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
            raise CheckpointError(f"{self.path}: record {name!r} cannot be read ({e}); "
                                  "the file is truncated or corrupt") from e

    def close(self):
        self._zip.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def specs(self) -> dict[str, tuple[tuple, str]]:
        """key -> (shape, dtype name)."""
        return {k: (t.shape, t.dtype.name) for k, t in self.tensors.items()}

    def _load_storage(self, ref: _StorageRef) -> np.ndarray:
        name = f"{self._prefix}data/{ref.key}"
        try:
            info = self._zip.getinfo(name)
        except KeyError as e:
            raise CheckpointError(f"{self.path}: storage record {name!r} is missing from the archive "
                                  "(truncated or tampered file)") from e
        need = ref.numel * ref.dtype.itemsize
        if info.file_size != need:
            raise CheckpointError(f"{self.path}: storage record {name!r} holds {info.file_size} bytes, "
                                  f"expected {need} ({ref.numel} x {ref.dtype.name})")
        raw = self._read_record(name)
        dt = np.dtype(ref.dtype.np_dtype)
        if self._big_endian and dt.itemsize > 1:
            return np.frombuffer(raw, dtype=dt.newbyteorder(">")).astype(dt)
        return np.frombuffer(raw, dtype=dt)

    @staticmethod
    def _view(storage: np.ndarray, t: _TensorRef) -> np.ndarray:
        n = t.numel
        contiguous = []
        acc = 1
        for s in reversed(t.shape):
            contiguous.append(acc)
            acc *= s
        contiguous = tuple(reversed(contiguous))
        if n == 0:
            return np.zeros(t.shape, dtype=storage.dtype)
        if all(st == c or sz == 1 for sz, st, c in zip(t.shape, t.stride, contiguous)):
            return storage[t.offset:t.offset + n].reshape(t.shape)
        item = storage.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(
            storage[t.offset:], shape=t.shape, strides=tuple(s * item for s in t.stride), writeable=False)
        return np.ascontiguousarray(view)

    def iter_numpy(self, names: Iterable[str] | None = None) -> Iterator[tuple[str, np.ndarray, _DType]]:
        names = list(self.tensors) if names is None else list(names)
        remaining = collections.Counter(self.tensors[n].storage.key for n in names)
        cache: dict[str, np.ndarray] = {}
        for n in names:
            t = self.tensors[n]
            key = t.storage.key
            if key not in cache:
                cache[key] = self._load_storage(t.storage)
            arr = self._view(cache[key], t)
            remaining[key] -= 1
            if remaining[key] == 0:
                del cache[key]
            yield n, arr, t.dtype

    def iter_arrays(self, names: Iterable[str] | None = None) -> Iterator[tuple[str, "mx.array"]]:
        for n, arr, d in self.iter_numpy(names):
            yield n, _np_to_mx(arr, d)


def read_model_pt(path) -> dict[str, "mx.array"]:
    """Read a ``torch.save`` checkpoint into ``{key: mx.array}`` without torch, refusing unsafe pickles."""
    with TorchCheckpoint(path) as ck:
        return dict(ck.iter_arrays())


# --------------------------------------------------------------------------------------------
# writer
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# safetensors cache
# --------------------------------------------------------------------------------------------


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
        from .checkpoint_cache import read_alias

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


def default_cache_root() -> Path:
    env = os.environ.get("FUNASR_NANO_CACHE")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "funasr_nano"


def cache_dir_for(model_pt_path, cache_dir=None) -> Path:
    """Where the safetensors conversion of ``model_pt_path`` lives.

    ``<root>/<stem>-<hash of the absolute path>``; root is ``cache_dir``, else ``$FUNASR_NANO_CACHE``,
    else ``~/.cache/funasr_nano``. Size and mtime are checked from the cache's metadata (not put in
    the name), so a changed ``model.pt`` is re-converted in place rather than leaving a stale copy.
    """
    src = Path(model_pt_path).resolve()
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_root()
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
            from .checkpoint_cache import convert_or_alias

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
    from .checkpoint_cache import resolve

    return load_safetensors_dir(resolve(out))


# --------------------------------------------------------------------------------------------
# validation and resolution
# --------------------------------------------------------------------------------------------


def _shape_of(v) -> tuple:
    if hasattr(v, "shape"):
        return tuple(int(s) for s in v.shape)
    return tuple(int(s) for s in v)


def _name_list(title: str, items: list[str], limit: int = 20) -> str:
    shown = items[:limit]
    more = f"\n    ... and {len(items) - limit} more" if len(items) > limit else ""
    return f"  {title} ({len(items)}):\n" + "".join(f"    {s}\n" for s in shown).rstrip("\n") + more


def check_state_dict(weights: Mapping[str, Any], expected: Mapping[str, tuple],
                     optional_prefixes: Iterable[str] = ("ctc_decoder.", "ctc.")) -> None:
    """Raise one CheckpointError naming every missing, unexpected and mis-shaped key.

    ``weights`` maps keys to arrays or shapes. Keys under ``optional_prefixes`` may be present or
    absent (present ones are still shape-checked when ``expected`` lists them).
    """
    prefixes = tuple(optional_prefixes or ())
    optional = (lambda k: k.startswith(prefixes)) if prefixes else (lambda k: False)
    missing = sorted(k for k in expected if k not in weights and not optional(k))
    unexpected = sorted(k for k in weights if k not in expected and not optional(k))
    misshaped = []
    for k in sorted(k for k in expected if k in weights):
        got, want = _shape_of(weights[k]), tuple(expected[k])
        if got != want:
            misshaped.append(f"{k}: checkpoint {list(got)} vs model {list(want)}")
    if not (missing or unexpected or misshaped):
        return
    parts = [f"checkpoint does not match the model: {len(missing)} missing, {len(unexpected)} unexpected, "
             f"{len(misshaped)} mis-shaped keys"]
    if missing:
        parts.append(_name_list("missing", missing))
    if unexpected:
        parts.append(_name_list("unexpected", unexpected))
    if misshaped:
        parts.append(_name_list("mis-shaped", misshaped))
    raise CheckpointError("\n".join(parts))


_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
HUB_PATTERNS = ["model.pt", "config.yaml", "configuration.json", "Qwen3-0.6B/*",
                "*.safetensors", "*.safetensors.index.json",
                # the Transformers (-hf) and mlx-community forms (funasr_nano.checkpoint_forms)
                "config.json", "preprocessor_config.json", "generation_config.json", "tokenizer*.json",
                "vocab.json", "merges.txt"]


def resolve_checkpoint(path_or_repo_id, cache_dir=None, revision=None) -> Path:
    """A local checkpoint directory, or a Hugging Face repo id downloaded with ``snapshot_download``."""
    s = os.fspath(path_or_repo_id)
    p = Path(s).expanduser()
    if p.is_dir():
        return p
    if p.is_file():
        if p.name in ("model.pt", SINGLE_NAME, INDEX_NAME):
            return p.parent
        raise CheckpointError(f"{p} is a file; pass the checkpoint directory that holds model.pt and config.yaml")
    if not _REPO_ID.match(s) or ".." in s:
        raise CheckpointError(f"checkpoint {s!r} not found: it is not an existing local directory and "
                              "does not look like a Hugging Face repo id ('org/name')")
    try:
        from huggingface_hub import snapshot_download
    except ImportError as e:
        raise CheckpointError(f"{s!r} is not a local directory and huggingface_hub is not installed to "
                              "download it as a repo id") from e
    try:
        local = snapshot_download(repo_id=s, revision=revision, cache_dir=cache_dir,
                                  allow_patterns=HUB_PATTERNS)
    except Exception as e:
        raise CheckpointError(
            f"checkpoint {s!r}: no local directory of that name, and downloading it from the Hugging Face "
            f"Hub (repo {s}, revision {revision or 'main'}, files {HUB_PATTERNS}) failed: "
            f"{type(e).__name__}: {e}. If you are offline, download it elsewhere and pass the local "
            "directory.") from e
    local = Path(local)
    if not ((local / "model.pt").is_file() or (local / SINGLE_NAME).is_file() or (local / INDEX_NAME).is_file()):
        raise CheckpointError(f"downloaded {s!r} to {local}, but it holds no model.pt or safetensors weights")
    return local
