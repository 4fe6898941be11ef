"""What MLX runs on: backend, device, version, and (Linux CPU) which BLAS does the GEMMs.

The Linux ``mlx[cpu]`` wheel bundles the netlib *reference* BLAS (``mlx_cpu.libs/libblas-*.so``):
correct but unblocked and single-threaded, several times slower than OpenBLAS for the encoder and
prefill GEMMs. ``import funasr_nano`` loads OpenBLAS for MLX before ``mlx.core`` is imported
(`funasr_nano.runtime.blas`); ``LD_PRELOAD`` of an OpenBLAS library does the same for any process.

`blas_info()` finds the library that actually provides ``cblas_sgemm`` to MLX; `backend_info()`
describes the device for machine fingerprints.
"""

from __future__ import annotations

import ctypes
import os
import platform
import re
import sys
import warnings
from pathlib import Path

OPENBLAS_FIX = ("import funasr_nano before mlx.core (it loads OpenBLAS from the scipy-openblas32 package, "
                "see funasr_nano/runtime/blas.py), or export LD_PRELOAD=<the path `python -c \"import funasr_nano.runtime.blas as b; "
                "print(b.library_for_preload())\"` prints>")
_SYMBOL = "cblas_sgemm"


class _DlInfo(ctypes.Structure):
    _fields_ = [("dli_fname", ctypes.c_char_p), ("dli_fbase", ctypes.c_void_p),
                ("dli_sname", ctypes.c_char_p), ("dli_saddr", ctypes.c_void_p)]


def classify_blas(path: str | None) -> str:
    """Name the BLAS implementation a library path belongs to."""
    if not path:
        return "unknown"
    real = os.path.realpath(path)
    name = (Path(path).name + " " + Path(real).name + " " + real).lower()
    if "openblas" in name:
        return "openblas"
    if "mkl" in name:
        return "mkl"
    if "blis" in name:
        return "blis"
    if "accelerate" in name or "veclib" in name:
        return "accelerate"
    if "atlas" in name:
        return "atlas"
    if "mlx_cpu.libs" in name or re.search(r"libblas[-.]", name) or "libcblas" in name:
        return "reference"
    return "unknown"


def _global_symbol_owner(symbol: str) -> str | None:
    """Path of the library that provides `symbol` in the process's global scope (LD_PRELOAD and
    RTLD_GLOBAL libraries: these win over MLX's own RPATH dependency), or None."""
    try:
        libc = ctypes.CDLL(None)
        dlsym, dladdr = libc.dlsym, libc.dladdr
    except (OSError, AttributeError):
        return None
    dlsym.restype, dlsym.argtypes = ctypes.c_void_p, [ctypes.c_void_p, ctypes.c_char_p]
    dladdr.restype, dladdr.argtypes = ctypes.c_int, [ctypes.c_void_p, ctypes.POINTER(_DlInfo)]
    addr = dlsym(None, symbol.encode())  # RTLD_DEFAULT
    if not addr:
        return None
    info = _DlInfo()
    if not dladdr(addr, ctypes.byref(info)) or not info.dli_fname:
        return None
    return info.dli_fname.decode(errors="replace")


def _mapped_libraries() -> list[str]:
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as f:
            paths = [line.split(None, 5)[-1].strip() for line in f if "/" in line]
    except OSError:
        return []
    return list(dict.fromkeys(p for p in paths if ".so" in p))


def blas_info() -> dict:
    """Which BLAS MLX's CPU backend calls, after importing MLX and running a small matmul.

    Returns ``{"blas": "reference" | "openblas" | "mkl" | "blis" | "accelerate" | "atlas" |
    "unknown" | "none", "path": ..., "method": ..., "ld_preload": ..., "loaded": [...]}``. On Linux
    the symbol ``cblas_sgemm`` is looked up in the global scope (where LD_PRELOAD puts OpenBLAS,
    and which takes precedence for MLX's relocations); if nothing there provides it, MLX uses the
    BLAS next to it (``mlx_cpu.libs``: the reference BLAS). macOS builds use Accelerate; a GPU
    backend does not use a CPU BLAS for its GEMMs (reported as "none" for GPU-only wheels).
    """
    import mlx.core as mx

    a = mx.ones((8, 8), dtype=mx.float32, stream=mx.cpu)
    mx.eval(mx.matmul(a, a, stream=mx.cpu))
    preload = os.environ.get("LD_PRELOAD", "")
    out = {"blas": "unknown", "path": None, "method": None, "ld_preload": preload or None, "loaded": []}
    if sys.platform == "darwin":
        out.update(blas="accelerate", method="platform")
        return out
    if not sys.platform.startswith("linux"):
        return out
    maps = _mapped_libraries()
    blas_like = [p for p in maps if re.search(r"(blas|mkl|blis|atlas)", Path(p).name, re.I)]
    out["loaded"] = blas_like
    owner = _global_symbol_owner(_SYMBOL)
    if owner:
        out.update(blas=classify_blas(owner), path=owner, method="dlsym(RTLD_DEFAULT, cblas_sgemm)")
        return out
    bundled = [p for p in blas_like if "mlx_cpu.libs" in p or "mlx" in Path(p).parent.name]
    pick = bundled or blas_like
    if pick:
        out.update(blas=classify_blas(pick[0]), path=pick[0], method="/proc/self/maps")
    else:
        out.update(blas="none", method="/proc/self/maps")
    return out


_warned = False


def warn_if_reference_blas() -> bool:
    """Warn (once per process) when MLX runs its CPU GEMMs on the reference BLAS; returns whether
    it does."""
    global _warned
    try:
        info = blas_info()
    except Exception:  # never let a diagnostic break a run
        return False
    slow = info["blas"] == "reference"
    if slow and not _warned:
        _warned = True
        warnings.warn(
            f"MLX's CPU backend is using the bundled reference BLAS ({info['path']}): GEMMs (audio encoder, "
            f"prefill) run several times slower than with an optimized BLAS. Fix: {OPENBLAS_FIX}",
            RuntimeWarning, stacklevel=2)
    return slow


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def backend_info() -> dict:
    """``{"backend": "cpu"|"metal"|"cuda", "device": ..., "mlx_version": ..., ...}`` for fingerprints."""
    import mlx.core as mx

    from .backend import device_label, detect_backend

    metal = bool(getattr(getattr(mx, "metal", None), "is_available", lambda: False)())
    cuda = bool(getattr(getattr(mx, "cuda", None), "is_available", lambda: False)())
    backend = detect_backend()
    name = None
    try:
        di = mx.device_info() if hasattr(mx, "device_info") else (
            mx.metal.device_info() if metal else {})
        name = di.get("device_name") or di.get("name")
    except Exception:
        pass
    if backend == "cpu":
        name = _cpu_name() or name  # the full model string, not only the vendor
    out = {
        "backend": backend,
        "device": device_label(),
        "device_name": name,
        "metal_available": metal,
        "cuda_available": cuda,
        "mlx_version": mx.__version__,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
    }
    if backend == "cpu" or sys.platform.startswith("linux"):
        b = blas_info()
        out["blas"], out["blas_path"] = b["blas"], b["path"]
    return out


__all__ = ["blas_info", "warn_if_reference_blas", "backend_info", "classify_blas", "OPENBLAS_FIX"]
