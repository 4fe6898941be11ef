"""Fun-ASR-Nano-2512 in MLX: an exact port of the official FunASR model, plus the tools to
benchmark it. `load()` a checkpoint directory or repo id, then `transcribe()`."""

__version__ = "0.1.0"

# Before anything imports mlx.core: on Linux, give MLX's CPU backend OpenBLAS instead of the
# reference BLAS its wheel links (see funasr_nano/blas.py).
from . import blas as _blas

_blas.setup()


def load(path_or_repo, dtype="float32", audio_dtype="float32", cache_dir=None, preset=None, policy=None):
    """Load a checkpoint; see `funasr_nano.pipeline.load`."""
    from .pipeline import load as _load

    return _load(path_or_repo, dtype=dtype, audio_dtype=audio_dtype, cache_dir=cache_dir, preset=preset,
                 policy=policy)


__all__ = ["load", "__version__"]
