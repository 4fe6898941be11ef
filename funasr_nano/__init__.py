"""Fun-ASR-Nano-2512 in MLX: an exact port of the official FunASR model, plus the tools to
benchmark it. `load()` a checkpoint directory or repo id, then `transcribe()`.

Packages: ``model`` (the network), ``runtime`` (loading and running it: the ASR object, the backend
policy, caches, decoding), ``precision``, ``checkpoint``, ``synthetic``, ``io``, ``cli``,
``evaluation``, ``bench``; ARCHITECTURE.md says what each may import.
"""

__version__ = "0.1.0"

# Before anything imports mlx.core: on Linux, give MLX's CPU backend OpenBLAS instead of the
# reference BLAS its wheel links, when the shim is already built (no compiler runs at import;
# see funasr_nano/runtime/blas.py).
from .runtime import blas as _blas

_blas.setup(build=False)


def load(path_or_repo, dtype="float32", audio_dtype="float32", cache_dir=None, preset=None, policy=None):
    """Load a checkpoint; see `funasr_nano.runtime.asr.load`."""
    _blas.setup()  # builds the BLAS shim on first use, while mlx.core is not imported yet
    from .runtime.asr import load as _load

    return _load(path_or_repo, dtype=dtype, audio_dtype=audio_dtype, cache_dir=cache_dir, preset=preset,
                 policy=policy)


__all__ = ["load", "__version__"]
