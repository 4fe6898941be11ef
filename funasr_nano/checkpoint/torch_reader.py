"""Reading the official ``model.pt`` without torch.

The released Fun-ASR-Nano-2512 ships one ``model.pt`` written by ``torch.save({"state_dict": ...})``:
a zip archive holding ``<name>/data.pkl`` (a protocol-2 pickle of the dict, tensors rebuilt by
``torch._utils._rebuild_tensor_v2`` from storages referenced through persistent ids) and one
record ``<name>/data/<key>`` of raw little-endian bytes per storage.

Unpickling runs code named by the file, so the reader uses a restricted unpickler: it resolves
only the handful of globals a tensor state dict needs, each to a stand-in defined here (torch is
never imported), and refuses every other global with a :class:`CheckpointError` before anything
is called. Storage bytes are read from the zip records and turned into MLX arrays (bf16 storages
become ``mx.bfloat16`` arrays, bit for bit).
"""

from __future__ import annotations

import _compat_pickle
import collections
import io
import math
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from . import CheckpointError
from .dtypes import _DTYPE_LIST, _DType, _np_to_mx
from .state_dict import EXTRA_GLOBALS, extract_state_dict

try:  # MLX is needed to produce arrays; the writer also works from numpy alone.
    import mlx.core as mx
except ImportError:  # pragma: no cover - mlx is a hard dependency of the package
    mx = None

_MAX_PICKLE_BYTES = 256 * 2 ** 20  # the real checkpoint's data.pkl is ~120 KB




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
    """(tensors, ignored entries): FunASR's unwrapping, see `funasr_nano.checkpoint.state_dict`."""
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


