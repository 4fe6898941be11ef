"""A fast BLAS for MLX's Linux CPU backend: loaded at import when already built, built on first `load()`.

The Linux ``mlx[cpu]`` wheel resolves ``cblas_sgemm`` to the netlib reference BLAS next to it
(unblocked, single-threaded: ~70x slower than OpenBLAS for the encoder's GEMMs here). A library
loaded with ``RTLD_GLOBAL`` *before* ``mlx.core`` is imported wins that symbol lookup, so
`setup()` loads, in order of preference:

1. ``forward``: a 40-line C shim (``assets/blas_forward.c``, built once with the system C
   compiler into the user cache) that calls OpenBLAS from the ``scipy-openblas32`` wheel and hands
   one-row / one-column products (token-by-token decoding) to ``sgemv`` instead of ``sgemm``.
   Measured on the project's 2-core AMD EPYC box, 1x1024 @ 1024x3072 float32: MLX on reference
   BLAS 2.5 ms, on Debian's OpenBLAS 0.3.21 sgemm 1.2 ms (10 GB/s), OpenBLAS sgemv 0.39 ms
   (33 GB/s). Batched products (M > 1) use OpenBLAS's sgemm as they are.
2. ``system-openblas``: Debian/Fedora's ``libopenblas.so.0`` when installed (no compiler needed).
3. ``reference``: nothing better found; `platform_info.warn_if_reference_blas` warns later.

When it happens: ``import funasr_nano`` only loads a shim that is already built (no compiler,
nothing written: ``deferred`` until then); the first `funasr_nano.load()` builds it (about 150 ms,
once per machine, into ``<cache root>/blas/``) and loads it if ``mlx.core`` is not imported yet;
``funasr-nano blas build`` builds it explicitly (``scripts/test.sh`` does), after
which every ``import funasr_nano`` picks it up.

Nothing is done when an ``LD_PRELOAD``/``RTLD_GLOBAL`` library already provides ``cblas_sgemm``
(``preloaded``), when ``mlx.core`` was imported before ``funasr_nano`` (``too-late``: import
``funasr_nano`` first, or ``LD_PRELOAD`` the path `library_for_preload()` gives), off Linux, or
with ``FUNASR_NANO_BLAS=off`` (or the older ``FUNASR_NANO_NO_OPENBLAS=1``).
``FUNASR_NANO_BLAS=system`` skips the shim. `status()` says what happened.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

SHIM_SOURCE = Path(__file__).resolve().parents[1] / "assets" / "blas_forward.c"
SHIM_NAME = "libfunasr_nano_openblas_forward.so"  # "openblas" in the name: platform_info classifies it
SYSTEM_OPENBLAS = (
    "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib/x86_64-linux-gnu/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/libopenblas.so.0",
    "/usr/lib64/libopenblas.so.0",
    "/usr/lib64/libopenblasp.so.0",
    "/usr/lib/libopenblas.so.0",
)

_state: dict = {"mode": "not-run", "library": None, "detail": None}
_handles: list = []  # keep loaded libraries alive


def _mode_setting() -> str:
    if os.environ.get("FUNASR_NANO_NO_OPENBLAS", "") not in ("", "0"):
        return "off"
    return os.environ.get("FUNASR_NANO_BLAS", "auto").strip().lower() or "auto"


def _global_provider() -> str | None:
    from .platform_info import _global_symbol_owner

    return _global_symbol_owner("cblas_sgemm")


def _cache_dir() -> Path:
    from ..paths import cache_root

    return cache_root() / "blas"


def scipy_openblas_library() -> Path | None:
    """``libscipy_openblas.so`` of the installed ``scipy-openblas32`` wheel, or None."""
    try:
        import scipy_openblas32
    except ImportError:
        return None
    d = Path(scipy_openblas32.get_lib_dir())
    libs = sorted(d.glob("libscipy_openblas*.so*"))
    return libs[0] if libs else None


def _compiler() -> str | None:
    for c in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if c and shutil.which(c):
            return shutil.which(c)
    return None


def _shim_plan() -> tuple[Path, Path, str]:
    """(where the shim for this source, library and compiler lives, the OpenBLAS library, the
    compiler); raises RuntimeError when it cannot be built here."""
    lib = scipy_openblas_library()
    if lib is None:
        raise RuntimeError("the scipy-openblas32 package is not installed (pip install scipy-openblas32)")
    cc = _compiler()
    if cc is None:
        raise RuntimeError("no C compiler (cc/gcc/clang) found to build the BLAS shim")
    src = SHIM_SOURCE.read_bytes()
    key = hashlib.sha256(src + str(lib.resolve()).encode() + str(lib.stat().st_size).encode()
                         + cc.encode()).hexdigest()[:16]
    return _cache_dir() / key / SHIM_NAME, lib, cc


def built_shim() -> Path | None:
    """The shim's path when it is already built (nothing is compiled or written), else None."""
    try:
        out = _shim_plan()[0]
    except (RuntimeError, OSError):
        return None
    return out if out.is_file() else None


def build_shim(verbose: bool = False) -> Path:
    """Compile the forwarding shim against scipy-openblas32 (once; cached by source, library and
    compiler) and return its path. Raises RuntimeError with the reason when it cannot."""
    out, lib, cc = _shim_plan()
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=out.parent)
    os.close(fd)
    cmd = [cc, "-O2", "-shared", "-fPIC", "-o", tmp, str(SHIM_SOURCE),
           f"-L{lib.parent}", f"-l:{lib.name}", f"-Wl,-rpath,{lib.parent}"]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            raise RuntimeError(f"building the BLAS shim failed ({' '.join(cmd)}): {r.stderr.strip()[-500:]}")
        os.replace(tmp, out)  # atomic: concurrent builders (asv processes) never see a partial file
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    if verbose:
        print(f"funasr-nano: built {out}", file=sys.stderr)
    return out


def _load_global(path) -> None:
    _handles.append(ctypes.CDLL(str(path), mode=os.RTLD_GLOBAL | getattr(os, "RTLD_NOW", 2)))


def library_for_preload() -> str | None:
    """The library `setup()` would load (shim, else system OpenBLAS), for ``LD_PRELOAD`` in child
    processes that may import ``mlx.core`` first (asv benchmarks); None when there is none."""
    if not sys.platform.startswith("linux") or _mode_setting() == "off":
        return None
    if _mode_setting() != "system":
        try:
            return str(build_shim())
        except (RuntimeError, OSError, subprocess.SubprocessError):
            pass
    return next((p for p in SYSTEM_OPENBLAS if os.path.exists(p)), None)


def setup(build: bool = True) -> dict:
    """Load the best available BLAS for MLX (see the module docstring); idempotent once something
    was loaded. ``build=False`` (at import) loads only an already-built shim and otherwise leaves
    the choice ``deferred`` to a later ``setup()``. Never raises: failures are recorded in
    `status()` and MLX keeps its own BLAS."""
    if _state["mode"] not in ("not-run", "deferred"):
        return status()
    mode = _mode_setting()
    if not sys.platform.startswith("linux"):
        _state.update(mode="platform", detail=f"{sys.platform}: MLX uses the platform BLAS")
        return status()
    if mode == "off":
        _state.update(mode="off", detail="disabled by FUNASR_NANO_BLAS=off / FUNASR_NANO_NO_OPENBLAS=1")
        return status()
    try:
        owner = _global_provider()
    except Exception:
        owner = None
    if owner:
        _state.update(mode="preloaded", library=owner, detail="cblas_sgemm already provided (LD_PRELOAD)")
        return status()
    if "mlx.core" in sys.modules:
        _state.update(mode="too-late", detail="mlx.core was imported before funasr_nano; "
                      "import funasr_nano first or LD_PRELOAD " + str(library_for_preload()))
        return status()
    reasons = []
    if not build:
        shim = built_shim() if mode != "system" else None
        if shim is None:
            _state.update(mode="deferred", detail="not chosen yet: the first funasr_nano.load() builds and loads "
                          "the shim (or run `funasr-nano blas build`)")
            return status()
    if mode != "system":
        try:
            shim = build_shim()
            _load_global(shim)
            _state.update(mode="forward", library=str(shim),
                          detail="OpenBLAS (scipy-openblas32), M=1/N=1 products via sgemv")
            return status()
        except (RuntimeError, OSError, subprocess.SubprocessError) as e:
            reasons.append(str(e))
    for p in SYSTEM_OPENBLAS:
        if os.path.exists(p):
            try:
                _load_global(p)
                _state.update(mode="system-openblas", library=p,
                              detail="; ".join(reasons) or "FUNASR_NANO_BLAS=system")
                return status()
            except OSError as e:
                reasons.append(f"{p}: {e}")
    _state.update(mode="reference", detail="; ".join(reasons) or "no OpenBLAS found")
    return status()


def openblas_version() -> str | None:
    lib = scipy_openblas_library()
    if lib is None:
        return None
    try:
        h = ctypes.CDLL(str(lib))
        f = h.scipy_openblas_get_config
        f.restype = ctypes.c_char_p
        parts = f().decode().split()
        return parts[1] if len(parts) > 1 else None
    except (OSError, AttributeError):
        return None


def forwarded_calls() -> int | None:
    """How many products the shim has sent to sgemv in this process (None without the shim)."""
    for h in _handles:
        f = getattr(h, "funasr_nano_blas_forwarded", None)
        if f is not None:
            f.restype = ctypes.c_longlong
            return int(f())
    return None


def status() -> dict:
    """``{"mode": forward | system-openblas | preloaded | too-late | reference | off | platform |
    deferred | not-run, "library": path or None, "detail": str}``."""
    out = dict(_state)
    if out["mode"] == "forward":  # read on request: it opens OpenBLAS a second time
        out["detail"] = f"OpenBLAS {openblas_version()} (scipy-openblas32), M=1/N=1 products via sgemv"
    return out


def main(argv=None) -> int:
    """``funasr-nano blas build``: build the shim now (prints its path); ``funasr-nano blas``: what
    `setup()` chooses in this process."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args not in ([], ["build"]):
        print("usage: funasr-nano blas [build]", file=sys.stderr)
        return 2
    if not args:
        st = setup()
        print(f"{st['mode']}: {st['library'] or '-'} ({st['detail']})")
        return 0
    if not sys.platform.startswith("linux"):
        print(f"nothing to build on {sys.platform}: MLX uses the platform BLAS")
        return 0
    try:
        print(build_shim(verbose=True))
    except (RuntimeError, OSError, subprocess.SubprocessError) as e:
        print(f"cannot build the BLAS shim: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


__all__ = ["setup", "status", "build_shim", "built_shim", "library_for_preload", "scipy_openblas_library",
           "forwarded_calls", "openblas_version"]
