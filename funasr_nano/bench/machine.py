"""Machine fingerprint for benchmark records: ``funasr-nano machine``.

asv keys every result by a *machine* entry of ``~/.asv-machine.json`` (copied to
``results/<machine>/machine.json`` and into every result file). asv's own ``asv machine`` only
knows the kernel (``Darwin 24.3.0`` on a Mac), the CPU string, the core count and RAM. This module
adds what decides MLX's speed and names the machine after its hardware:

========== ==========================================================================
key        value
========== ==========================================================================
machine    stable name encoding the hardware, e.g. ``apple-m2-max-38gpu-64gb-metal``,
           ``amd-epyc-2c-24gb-cpu-openblas``, ``nvidia-h100-80gb-hbm3-16c-cuda``
os         ``macOS 15.3.1`` (not the Darwin kernel), ``Debian GNU/Linux 12 (bookworm)``
arch       ``arm64`` / ``x86_64``
cpu        chip / CPU model (``Apple M2 Max``, ``AMD EPYC``)
num_cpu    logical CPU count
ram        total RAM in bytes
gpu        GPU name (Apple chip, ``NVIDIA H100 80GB HBM3``) or ``none``
gpu_cores  Apple GPU core count (``system_profiler``) where known, else ``""``
backend    MLX backend: ``metal`` / ``cuda`` / ``cpu``
blas       BLAS MLX calls on the Linux CPU backend (``openblas``, ``reference``...);
           ``accelerate`` on macOS, ``n/a`` on GPU backends
mlx        MLX version
========== ==========================================================================

Every key except ``machine`` becomes a filter and a path component of asv's published graphs,
so changing one (an MLX upgrade, an OS update) starts a new series on purpose: speed is only
comparable at equal values. The name deliberately holds hardware (plus backend and BLAS) only, so
one machine keeps one ``results/<machine>/`` folder across software updates.

Detection of the BLAS and of the backend is delegated to :mod:`funasr_nano.runtime.platform_info`.
Run the command with the same environment the benchmarks will get (``LD_PRELOAD`` in
particular): the quick runner does so by running it in a child process.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

MACHINE_KEYS = ("machine", "os", "arch", "cpu", "num_cpu", "ram", "gpu", "gpu_cores", "backend", "blas", "mlx")
ASV_MACHINE_FILE_VERSION = 1


def _run(cmd: list[str], timeout: float = 20.0) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


# ----- OS / CPU / RAM ---------------------------------------------------------------------------
def os_version() -> str:
    """Human OS version: ``macOS 15.3.1``, the Linux distribution's PRETTY_NAME, else uname."""
    system = platform.system()
    if system == "Darwin":
        ver = platform.mac_ver()[0] or _run(["sw_vers", "-productVersion"])
        return f"macOS {ver}" if ver else f"Darwin {platform.release()}"
    if system == "Linux":
        try:
            info = platform.freedesktop_os_release()
            name = info.get("PRETTY_NAME") or f"{info.get('NAME', 'Linux')} {info.get('VERSION_ID', '')}".strip()
            if name:
                return name
        except OSError:
            pass
        return f"Linux {platform.release()}"
    if system == "Windows":
        return f"Windows {platform.release()} ({platform.version()})"
    return f"{system} {platform.release()}".strip()


def _linux_cpuinfo() -> dict:
    out: dict = {}
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return out
    for line in text.splitlines():
        if ":" in line:
            k, v = line.split(":", 1)
            out.setdefault(k.strip(), v.strip())
    return out


def cpu_model() -> str:
    system = platform.system()
    if system == "Darwin":
        name = _run(["sysctl", "-n", "machdep.cpu.brand_string"])
        if name:
            return name
    elif system == "Linux":
        info = _linux_cpuinfo()
        for key in ("model name", "Model", "Hardware", "cpu model", "Processor"):
            if info.get(key):
                return info[key]
        lscpu = _run(["lscpu"])
        m = re.search(r"^Model name:\s*(.+)$", lscpu, re.M)
        if m:
            return m.group(1).strip()
    return platform.processor() or platform.machine() or "unknown"


def num_cpu() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def ram_bytes() -> int:
    system = platform.system()
    if system == "Linux":
        try:
            for line in Path("/proc/meminfo").read_text().splitlines():
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
        except (OSError, ValueError, IndexError):
            pass
    if system == "Darwin":
        v = _run(["sysctl", "-n", "hw.memsize"])
        if v.isdigit():
            return int(v)
    try:
        import psutil

        return int(psutil.virtual_memory().total)
    except Exception:  # pragma: no cover - psutil is a dependency
        return 0


def apple_gpu() -> tuple[str, str]:
    """(GPU name, GPU core count) from ``system_profiler SPDisplaysDataType`` on macOS."""
    if platform.system() != "Darwin":
        return "", ""
    raw = _run(["system_profiler", "SPDisplaysDataType", "-json"], timeout=60)
    try:
        items = json.loads(raw).get("SPDisplaysDataType", []) if raw else []
    except ValueError:
        items = []
    for it in items:
        name = it.get("sppci_model") or it.get("_name") or ""
        cores = str(it.get("sppci_cores") or "")
        if name:
            return name, cores
    return "", ""


# ----- MLX: backend, device, BLAS -----------------------------------------------------------------
def _mlx_version() -> str:
    try:
        from importlib.metadata import version

        return version("mlx")
    except Exception:
        try:
            import mlx.core as mx

            return str(mx.__version__)
        except Exception:
            return "not installed"


def _as_dict(x) -> dict:
    if isinstance(x, dict):
        return x
    if x is None:
        return {}
    if hasattr(x, "_asdict"):
        return dict(x._asdict())
    if hasattr(x, "__dataclass_fields__"):
        from dataclasses import asdict

        return asdict(x)
    if isinstance(x, str):
        return {"name": x}
    return {"name": str(x)}


def backend_and_device() -> dict:
    """``{"backend": metal|cuda|cpu, "device_name": ..., ...}`` via ``platform_info.backend_info``."""
    try:
        from ..runtime import platform_info

        info = _as_dict(platform_info.backend_info())
    except Exception as e:  # platform_info missing or MLX not importable
        info = {"error": f"{type(e).__name__}: {e}"}
    backend = str(info.get("backend") or info.get("name") or "").lower()
    if not backend:
        try:
            import mlx.core as mx

            if mx.metal.is_available():
                backend = "metal"
            elif hasattr(mx, "cuda") and mx.cuda.is_available():
                backend = "cuda"
            else:
                backend = "cpu"
        except Exception:
            backend = "unknown"
    info["backend"] = backend
    if "device_name" not in info:
        try:
            import mlx.core as mx

            info.update({k: v for k, v in mx.device_info().items() if isinstance(v, (str, int, float))})
        except Exception:
            pass
    return info


def blas() -> dict:
    """BLAS in use by MLX (Linux CPU backend matters), via ``platform_info.blas_info``."""
    try:
        from ..runtime import platform_info

        return _as_dict(platform_info.blas_info())
    except Exception as e:
        return {"name": "unknown", "error": f"{type(e).__name__}: {e}"}


def blas_label(info: dict, backend: str) -> str:
    """Short stable BLAS label for the machine key (``openblas``, ``reference``, ``mkl``...)."""
    if platform.system() == "Darwin":
        return "accelerate"
    if backend not in ("cpu", "unknown", ""):
        return "n/a"
    for key in ("blas", "kind", "name", "library", "vendor"):
        v = info.get(key)
        if v:
            s = str(v).lower()
            if info.get("reference") is True or "reference" in s or "netlib" in s or s.startswith("libblas"):
                return "reference"
            for known in ("openblas", "mkl", "blis", "accelerate", "atlas"):
                if known in s:
                    return known
            return _slug(s)[:24] or "unknown"
    if info.get("reference") is True:
        return "reference"
    return "unknown"


# ----- fingerprint and name -------------------------------------------------------------------------
def _slug(s: str) -> str:
    s = s.lower()
    s = re.sub(r"\((r|tm|c)\)", " ", s)
    s = re.sub(r"\b(cpu|processor|core\(tm\)|with radeon graphics|\d+-core)\b", " ", s)
    s = re.sub(r"@.*$", " ", s)  # "... @ 2.40GHz"
    s = re.sub(r"[^a-z0-9]+", "-", s).strip("-")
    return re.sub(r"-{2,}", "-", s)


def _ram_gb(ram: int) -> int:
    return int(round(ram / 2 ** 30)) if ram else 0


def machine_name(fp: dict) -> str:
    """Stable name from the hardware (+ backend, + BLAS on a Linux CPU backend)."""
    ram = f"{_ram_gb(int(fp.get('ram') or 0))}gb"
    backend = fp.get("backend") or "unknown"
    cpu = _slug(str(fp.get("cpu") or "unknown")) or "unknown"
    ncpu = f"{fp.get('num_cpu')}c"
    if backend == "metal" or str(fp.get("cpu", "")).startswith("Apple"):
        gpu_cores = f"{fp['gpu_cores']}gpu-" if fp.get("gpu_cores") else ""
        parts = [cpu, f"{gpu_cores}{ram}", backend]
    elif backend == "cuda":
        gpu = _slug(str(fp.get("gpu") or "gpu"))
        parts = [gpu, ncpu, ram, "cuda"]
    else:
        parts = [cpu, ncpu, ram, backend]
        if fp.get("blas") and fp["blas"] not in ("n/a", "accelerate"):
            parts.append(fp["blas"])
    name = "-".join(p for p in parts if p)
    return re.sub(r"-{2,}", "-", name)


def fingerprint(name: str | None = None) -> dict:
    """The asv machine entry (all values are strings, as asv stores them) plus ``details``."""
    dev = backend_and_device()
    backend = dev.get("backend", "unknown")
    blas_info = blas()
    cpu = cpu_model()
    gpu, gpu_cores = apple_gpu()
    if backend == "cuda":
        gpu = str(dev.get("device_name") or gpu or "cuda")
    elif backend == "metal":
        gpu = gpu or str(dev.get("device_name") or cpu)
    arch = platform.machine()
    if arch == "aarch64" and platform.system() == "Darwin":
        arch = "arm64"
    fp = {
        "os": os_version(),
        "arch": arch,
        "cpu": cpu,
        "num_cpu": str(num_cpu()),
        "ram": str(ram_bytes()),
        "gpu": gpu or "none",
        "gpu_cores": gpu_cores,
        "backend": backend,
        "blas": blas_label(blas_info, backend),
        "mlx": _mlx_version(),
    }
    fp["machine"] = name or machine_name(fp)
    fp = {k: fp[k] for k in MACHINE_KEYS}
    details = {
        "kernel": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "device": {k: v for k, v in dev.items() if isinstance(v, (str, int, float, bool))},
        "blas": {k: v for k, v in blas_info.items() if isinstance(v, (str, int, float, bool, type(None)))},
        "ld_preload": os.environ.get("LD_PRELOAD", ""),
        "hostname": platform.node(),
        "policy": _policy(),
    }
    return {**fp, "details": details}


def _policy() -> dict:
    """The backend policy a model loaded in this process gets (FUNASR_NANO_POLICY honoured)."""
    try:
        from ..runtime.backend import resolve_policy

        p = resolve_policy()
        return {**p.to_dict(), "summary": p.summary()}
    except Exception as e:  # MLX not importable, or a bad FUNASR_NANO_POLICY
        return {"error": f"{type(e).__name__}: {e}"}


def asv_entry(fp: dict) -> dict:
    """The part of a fingerprint that goes into asv's machine file (strings only)."""
    return {k: str(fp.get(k, "")) for k in MACHINE_KEYS}


def default_machine_file() -> Path:
    return Path(os.path.expanduser("~/.asv-machine.json"))


def write_machine_file(fp: dict, path=None) -> Path:
    """Add/replace the machine's entry in asv's machine file, keeping the other entries."""
    path = Path(path) if path else default_machine_file()
    data: dict = {}
    if path.is_file():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            data = {}
    entry = asv_entry(fp)
    data[entry["machine"]] = entry
    data["version"] = ASV_MACHINE_FILE_VERSION
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=4, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def describe(fp: dict) -> str:
    ram = _ram_gb(int(fp.get("ram") or 0))
    lines = [f"machine  {fp['machine']}",
             f"  cpu      {fp['cpu']} ({fp['num_cpu']} logical CPUs), {ram} GiB RAM, {fp['arch']}",
             f"  os       {fp['os']}",
             f"  gpu      {fp['gpu']}" + (f" ({fp['gpu_cores']} cores)" if fp.get("gpu_cores") else ""),
             f"  backend  {fp['backend']}   blas {fp['blas']}   mlx {fp['mlx']}"]
    pol = (fp.get("details") or {}).get("policy") or {}
    if pol:
        lines.append(f"  policy   {pol.get('summary') or pol.get('error')}")
    if fp.get("blas") == "reference":
        lib = openblas_library()
        if lib:
            lines.append(f"  WARNING: this process uses MLX's slow reference BLAS, but OpenBLAS is available ({lib}): "
                         "`import funasr_nano` before `mlx.core` loads it; `funasr-nano bench` preloads it for "
                         f"the benchmarks; for manual asv runs `export LD_PRELOAD={lib}` (or pass --preload-openblas here).")
        else:
            lines.append("  WARNING: MLX runs on the slow reference BLAS; `pip install scipy-openblas32` (and a C "
                         "compiler) or `apt-get install libopenblas0-pthread` before timing anything on this machine.")
    return "\n".join(lines)


def openblas_library() -> str | None:
    """The OpenBLAS library `funasr_nano` gives MLX on Linux (the sgemv-forwarding shim over
    scipy-openblas32, else a system libopenblas), for ``LD_PRELOAD`` in benchmark processes; None
    when there is none or off Linux."""
    if platform.system() != "Linux":
        return None
    from ..runtime import blas as blas_mod

    return blas_mod.library_for_preload()


def fingerprint_with_openblas(name: str | None = None) -> dict:
    """The fingerprint of a process started with OpenBLAS preloaded (what `funasr-nano bench` gives
    the benchmarks); the current process's when OpenBLAS is missing or already preloaded."""
    lib = openblas_library()
    if not lib or "openblas" in os.environ.get("LD_PRELOAD", ""):
        return fingerprint(name)
    env = dict(os.environ, LD_PRELOAD=(lib + " " + os.environ.get("LD_PRELOAD", "")).strip())
    cmd = [sys.executable, "-m", "funasr_nano.bench.machine", "--json", "--no-write"]
    if name:
        cmd += ["--machine", name]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="funasr-nano machine",
                                description="Describe this machine and write asv's machine file "
                                            "(~/.asv-machine.json) under a stable hardware-derived name.")
    p.add_argument("--machine", "--name", dest="name", default=None,
                   help="override the machine name (default: derived from the hardware)")
    p.add_argument("--machine-file", default=None, help="asv machine file (default ~/.asv-machine.json)")
    p.add_argument("--json", action="store_true", help="print the fingerprint as JSON")
    p.add_argument("--no-write", action="store_true", help="only print; do not touch the machine file")
    p.add_argument("--preload-openblas", action="store_true",
                   help="describe a process with OpenBLAS preloaded (Linux), as `funasr-nano bench` runs them")
    args = p.parse_args(argv)
    fp = fingerprint_with_openblas(args.name) if args.preload_openblas else fingerprint(args.name)
    if args.json:
        print(json.dumps(fp, indent=2, sort_keys=True))
    else:
        print(describe(fp))
    if not args.no_write:
        path = write_machine_file(fp, args.machine_file)
        if not args.json:
            print(f"  wrote    {path} (entry {fp['machine']!r}); use `asv run --machine {fp['machine']}`")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
