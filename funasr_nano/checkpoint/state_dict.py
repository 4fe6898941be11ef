"""What a ``model.pt`` may hold besides tensors, and where its state dict sits.

FunASR's own loader (``funasr/train_utils/load_pretrained_model.py``) unwraps ``state_dict``, then
``model_state_dict``, then ``model`` (each step only when the key is present), strips a
``module.`` prefix (DDP checkpoints) and copies only the keys the network has: anything else in
the file (epoch counters, optimizer state, numpy scalars written by its trainer) is ignored. This
module does the same on the records of the restricted unpickler in `funasr_nano.checkpoint`, and
returns the ignored entries so that the loader can name them.

It also provides stand-ins for the three globals that pickled numpy scalars reference
(``numpy.core.multiarray.scalar`` / ``numpy._core.multiarray.scalar``, ``numpy.dtype`` and
``_codecs.encode``), the same ones ``torch.load(weights_only=True)`` lets through with
``torch.serialization.safe_globals``. They build plain numeric numpy scalars from bytes and
nothing else: object, string and structured dtypes are refused.
"""

from __future__ import annotations

import collections
import re

import numpy as np

WRAPPERS = ("state_dict", "model_state_dict", "model")  # FunASR's unwrapping order
_DTYPE_SPEC = re.compile(r"^[<>|=]?(b1|[iu][1248]|f[248]|c(8|16))$")


def _error(msg: str):
    from . import CheckpointError  # lazy: checkpoint imports this module

    return CheckpointError(msg)


class NumpyDType:
    """``numpy.dtype(spec, align, copy)`` for a numeric spec; BUILD may set the byte order only."""

    __slots__ = ("spec", "byteorder")

    def __init__(self, spec, align=False, copy=False):
        if not isinstance(spec, str) or not _DTYPE_SPEC.match(spec):
            raise _error(f"refusing numpy dtype {spec!r} in a checkpoint pickle: only numeric scalars "
                         "(bool, int, uint, float, complex) are accepted")
        self.spec = spec
        self.byteorder = "="

    def __setstate__(self, state):
        if not isinstance(state, tuple) or len(state) not in (8, 9) or state[1] not in ("<", ">", "|", "="):
            raise _error(f"malformed numpy dtype state {state!r} in the checkpoint pickle")
        if any(v is not None for v in state[2:5]):  # subarray / names / fields: not a numeric scalar
            raise _error("refusing a structured numpy dtype in the checkpoint pickle")
        self.byteorder = state[1]

    def to_numpy(self) -> np.dtype:
        dt = np.dtype(self.spec.lstrip("<>|="))
        return dt.newbyteorder(self.byteorder) if self.byteorder in "<>" else dt


def numpy_scalar(dtype, data=None):
    if not isinstance(dtype, NumpyDType) or not isinstance(data, (bytes, bytearray)):
        raise _error("malformed numpy scalar record in the checkpoint pickle")
    dt = dtype.to_numpy()
    if len(data) != dt.itemsize:
        raise _error(f"numpy scalar of dtype {dt} holds {len(data)} bytes, expected {dt.itemsize}")
    return np.frombuffer(bytes(data), dtype=dt)[0]


def codecs_encode(obj, encoding="utf-8", errors="strict"):
    # Protocol-2 pickles spell bytes as _codecs.encode(str, 'latin1').
    if not isinstance(obj, str) or encoding not in ("latin1", "latin-1") or errors != "strict":
        raise _error("refusing _codecs.encode with arguments other than (str, 'latin1') in the checkpoint pickle")
    return obj.encode("latin1")


EXTRA_GLOBALS = {
    ("numpy.core.multiarray", "scalar"): numpy_scalar,
    ("numpy._core.multiarray", "scalar"): numpy_scalar,
    ("numpy", "dtype"): NumpyDType,
    ("_codecs", "encode"): codecs_encode,
}


def _describe(v) -> str:
    if isinstance(v, np.generic):
        return f"numpy.{v.dtype.name} {v.item()!r}"
    if isinstance(v, NumpyDType):
        return f"numpy.dtype {v.spec!r}"
    if isinstance(v, (bool, int, float)) or v is None:
        return f"{type(v).__name__} {v!r}"
    if isinstance(v, str):
        return f"str {v[:40]!r}"
    if isinstance(v, dict):
        return f"dict of {len(v)}"
    if isinstance(v, (list, tuple)):
        return f"{type(v).__name__} of {len(v)}"
    return type(v).__name__


def extract_state_dict(obj, source: str, is_tensor) -> tuple["collections.OrderedDict", list[str]]:
    """(key -> tensor record, ignored entries as 'path (what)') for an unpickled ``model.pt``."""
    ignored: list[str] = []
    if not isinstance(obj, dict):
        raise _error(f"{source}: no state dict found (expected a dict such as {{'state_dict': ...}} or a dict "
                     f"of tensors; the pickle holds {type(obj).__name__})")
    sd, path = obj, ""
    for wrapper in WRAPPERS:
        inner = sd.get(wrapper)
        if isinstance(inner, dict):
            ignored += [f"{path}{k} ({_describe(v)})" for k, v in sd.items() if k != wrapper]
            sd, path = inner, f"{path}{wrapper}."
    out = collections.OrderedDict()
    for k, v in sd.items():
        if isinstance(k, str) and is_tensor(v):
            name = k[len("module."):] if k.startswith("module.") else k
            if name in out:
                raise _error(f"{source}: the state dict holds both {name!r} and 'module.{name}'")
            out[name] = v
        else:
            ignored.append(f"{path}{k} ({_describe(v)})")
    if not out:
        keys = sorted(map(str, obj))[:10]
        raise _error(f"{source}: no state dict found (expected {{'state_dict': ...}}, {{'model_state_dict': ...}}, "
                     f"{{'model': ...}} or a dict of tensors; the pickle holds a dict with keys {keys} and no tensors "
                     f"{'under ' + path.rstrip('.') if path else 'at its top level'})")
    return out, ignored
