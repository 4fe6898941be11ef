"""The tensor dtypes a ``model.pt`` can hold, and their numpy / MLX counterparts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from . import CheckpointError

try:  # MLX is needed to produce arrays; the writer also works from numpy alone.
    import mlx.core as mx
except ImportError:  # pragma: no cover - mlx is a hard dependency of the package
    mx = None



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


