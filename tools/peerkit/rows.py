"""The rows of the side-by-side, the peers' environments, and where each peer's python comes from.

A row is one (runtime, precision) pair. A peer is one runtime with one environment: this project,
funasr and (where torchaudio imports) transformers run in the interpreter that runs the tool; the MLX
peers get their own virtualenvs under ``<cache root>/peers/<env>`` (``tools/peers.py --setup``), made
with ``--system-site-packages`` so that they reuse the installed mlx / torch / transformers and pin only
what is theirs. On a machine without network (the lent GPU) ``--site PEER=DIR`` puts a ``pip install
--target DIR`` tree of the peer's wheels in front of the tool's own interpreter instead.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

# Best preset of this project per backend, from the committed measurements: on the Linux CPU fp32
# (OpenBLAS; MLX's CPU bf16/quantized matmuls have no BLAS path: docs/measurements/cpu-2core-*),
# on CUDA bf16 (H200: 3.8 ms/token vs 6.3 for q4 with float32 compute, issue #12), on Metal bf16
# (mlx-lm practice; not measured here).
BEST_PRESET = {"cpu": "fp32", "cuda": "bf16", "metal": "bf16"}


@dataclass(frozen=True)
class PeerEnv:
    """How a peer's interpreter is obtained. ``pins`` are pip requirement specs installed into the
    venv by --setup; ``needs_venv`` tells whether the tool's own interpreter can serve (a callable
    answering the reason a venv is needed, or None)."""

    name: str
    dist: str                      # the distribution whose version the row reports
    pins: tuple = ()
    import_name: str = ""
    venv: bool = True              # False: runs in the tool's interpreter unless told otherwise
    notes: str = ""


ENVS = {
    "project": PeerEnv("project", "funasr-nano-mlx", venv=False, import_name="funasr_nano"),
    "funasr": PeerEnv("funasr", "funasr", venv=False, import_name="funasr"),
    # transformers' FunAsrNanoFeatureExtractor requires torchaudio (torchaudio.compliance.kaldi.fbank).
    # Where the tool's interpreter has none (this 2-core box: torch 2.13, and PyPI's newest torchaudio
    # is 2.11.1, built for torch 2.11) the venv adds torchaudio 2.11.1 without its compiled
    # extension: only compliance.kaldi, which is plain PyTorch code, is used. Adding it to the project
    # environment instead would switch funasr's fbank backend (kaldi-native-fbank -> torchaudio)
    # under the parity tests.
    "transformers": PeerEnv("transformers", "transformers", pins=("torchaudio==2.11.1",),
                            import_name="transformers", venv=False,
                            notes="torchaudio 2.11.1 python code only (its C++ extension is built for torch 2.11)"),
    "mlx-audio": PeerEnv("mlx-audio", "mlx-audio", pins=("mlx-audio==0.6.2",), import_name="mlx_audio"),
    "funasr-mlx": PeerEnv("funasr-mlx", "funasr-mlx", pins=("funasr-mlx==0.2.3",), import_name="funasr_mlx"),
    # gguf: the ggml project's GGUF writer library, used by our writer (forms.py crispasr-*)
    "crispasr": PeerEnv("crispasr", "crispasr", pins=("crispasr==0.8.45", "gguf==0.19.0"), import_name="crispasr"),
}


@dataclass(frozen=True)
class Row:
    id: str
    peer: str              # key of ENVS
    backend: str           # tools/peerkit/backend_<backend>.py
    precision: str
    form: str              # "official" or a tools/peerkit/forms.py form name
    bytes_per_param: float  # for the memory estimate that groups rows
    opts: tuple = ()       # (("attn", "eager"), ...)
    devices: tuple = ("cpu", "cuda")
    label: str = ""

    @property
    def title(self) -> str:
        return self.label or f"{self.peer} {self.precision}"


def all_rows(device: str, best: str | None = None) -> list[Row]:
    """Every row for a device, in run order: the reference, this project, the MLX peers (the
    issue's target is measured against them), then Transformers."""
    best = best or BEST_PRESET.get(device, "fp32")
    rows = [
        Row("funasr:fp32", "funasr", "funasr", "fp32", "official", 4.6, label="funasr fp32 (reference)"),
        Row("funasr:tf32", "funasr", "funasr", "tf32", "official", 4.3, devices=("cuda",),
            label="funasr tf32 (CUDA matmul mode)"),
        Row("funasr:bf16", "funasr", "funasr", "bf16", "official", 4.6),  # fp32 load, then a bf16 copy
    ]
    for p in ("fp32", "bf16", "q8", "q4"):
        rows.append(Row(f"project:{p}", "project", "project", p, "official",
                        {"fp32": 4.1, "bf16": 2.1, "q8": 1.3, "q4": 1.0}[p],
                        label=f"this project {p}" + (f" (best for {device})" if p == best else "")))
    if best not in ("fp32", "bf16", "q8", "q4"):
        rows.append(Row(f"project:{best}", "project", "project", best, "official", 2.5,
                        label=f"this project {best} (best for {device})"))
    rows += [
        Row("mlx-audio:bf16", "mlx-audio", "mlx_audio", "bf16", "mlx_audio-bfloat16", 2.2,
            label="mlx-audio bf16 (its default float form)"),
        Row("mlx-audio:fp32", "mlx-audio", "mlx_audio", "fp32", "mlx_audio-float32", 4.2),
        Row("mlx-audio:q8", "mlx-audio", "mlx_audio", "q8", "mlx_audio-q8", 1.4, label="mlx-audio 8-bit"),
        Row("mlx-audio:q4", "mlx-audio", "mlx_audio", "q4", "mlx_audio-q4", 1.1, label="mlx-audio 4-bit"),
        Row("funasr-mlx:fp16", "funasr-mlx", "funasr_mlx", "fp16", "funasr_mlx-fp16", 2.2),
        Row("funasr-mlx:w4a16", "funasr-mlx", "funasr_mlx", "w4a16", "funasr_mlx-w4a16", 1.1),
        Row("crispasr:f32", "crispasr", "crispasr", "f32", "crispasr-f32", 4.1, devices=("cpu",),
            label="crispasr f32 (GGUF written by our writer)"),
        Row("crispasr:f16", "crispasr", "crispasr", "f16", "crispasr-f16", 2.1, devices=("cpu",),
            label="crispasr f16 (GGUF written by our writer)"),
        Row("transformers:fp32-eager", "transformers", "transformers", "fp32", "hf", 4.2, opts=(("attn", "eager"),),
            label="transformers fp32 (eager attention)"),
        Row("transformers:fp32-sdpa", "transformers", "transformers", "fp32", "hf", 4.2, opts=(("attn", "sdpa"),),
            label="transformers fp32 (sdpa)"),
        Row("transformers:bf16-sdpa", "transformers", "transformers", "bf16", "hf", 2.2, opts=(("attn", "sdpa"),),
            label="transformers bf16 (sdpa)"),
    ]
    return rows


NOT_ON = {  # why a row does not exist on a device: it becomes a reason row there, never a silent drop
    "funasr:tf32": "tf32 is a CUDA matmul mode (torch.backends.cuda.matmul.allow_tf32)",
    "crispasr:f32": "the PyPI crispasr wheel ships only ggml's CPU backend (libggml-cpu), no CUDA",
    "crispasr:f16": "the PyPI crispasr wheel ships only ggml's CPU backend (libggml-cpu), no CUDA",
}


def rows_for(device: str, best: str | None = None) -> tuple[list[Row], list[tuple[str, str, str]]]:
    """(rows that run on `device`, [(id, title, reason)] for the ones that cannot)."""
    rows = all_rows(device, best)
    keep = [r for r in rows if device in r.devices]
    skipped = [(r.id, r.title, f"not on {device}: {NOT_ON.get(r.id, 'not available')}") for r in rows
               if device not in r.devices]
    return keep, skipped


# Rows that cannot be produced at all: (id, title, reason). Kept in every table.
UNRUNNABLE: list = []  # (id, title, reason) of rows that cannot be produced at all; listed in every table


def select_rows(rows: list[Row], selectors: list[str] | None, also_known=()) -> list[Row]:
    """`funasr`, `project:q4`, `mlx-audio:*`: by peer or by id, run in the order given; the reference
    row always stays, first."""
    if not selectors:
        return rows
    keep = []  # in the order of the selectors: the run order follows the command line
    for s in selectors:
        for r in rows:
            if (s == r.id or s == r.peer or (s.endswith(":*") and r.peer == s[:-2])) and r not in keep:
                keep.append(r)
    unknown = [s for s in selectors if s not in also_known
               and not any(s in (r.id, r.peer) or (s.endswith(":*") and r.peer == s[:-2]) for r in rows)]
    if unknown:
        raise SystemExit(f"unknown row selector(s) {unknown}; rows: {[r.id for r in rows]}")
    ref = next((r for r in rows if r.id == "funasr:fp32"), None)
    if ref is not None:
        keep = [ref] + [r for r in keep if r is not ref]
    return keep


# -------------------------------------------------------------------------------------------------
# interpreters


@dataclass
class Interp:
    python: str
    pythonpath: list = field(default_factory=list)
    how: str = ""
    missing: str | None = None   # why this peer cannot run here


def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def venv_dir(cache_root: Path, env: str) -> Path:
    return cache_root / "peers" / env


def venv_python(cache_root: Path, env: str) -> Path:
    return venv_dir(cache_root, env) / "bin" / "python"


def resolve_interp(env: PeerEnv, cache_root: Path, pythons: dict, sites: dict) -> Interp:
    if env.name in pythons:
        return Interp(pythons[env.name], how=f"--python {env.name}={pythons[env.name]}")
    if env.name in sites:
        return Interp(sys.executable, [sites[env.name]], how=f"tool interpreter + --site {sites[env.name]}")
    vp = venv_python(cache_root, env.name)
    if vp.exists():
        return Interp(str(vp), how=f"venv {venv_dir(cache_root, env.name)}")
    if not env.venv:
        if env.name == "transformers" and not _has_module("torchaudio"):
            return Interp(sys.executable, missing=(
                "transformers' FunAsrNanoFeatureExtractor needs torchaudio, which this interpreter lacks; "
                f"run `python tools/peers.py --setup` (creates {venv_dir(cache_root, env.name)})"))
        if env.import_name and not _has_module(env.import_name):
            return Interp(sys.executable, missing=f"{env.dist} is not installed in {sys.executable}")
        return Interp(sys.executable, how="tool interpreter")
    return Interp(sys.executable, missing=(f"no virtualenv {venv_dir(cache_root, env.name)}: run "
                                           f"`python tools/peers.py --setup` (pins {', '.join(env.pins)}) "
                                           f"or pass --site {env.name}=DIR / --python {env.name}=PATH"))


def setup_env(env: PeerEnv, cache_root: Path, log=print) -> str:
    """Create (or reuse) the peer's venv and install its pins. Returns a one-line status."""
    if not env.venv and env.name != "transformers":
        return f"{env.name}: runs in the tool's interpreter"
    if env.name == "transformers" and _has_module("torchaudio"):
        return "transformers: torchaudio imports here, the tool's interpreter serves"
    d = venv_dir(cache_root, env.name)
    py = venv_python(cache_root, env.name)
    if not py.exists():
        log(f"[peers] creating {d}")
        subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(d)], check=True)
    no_deps = ["--no-deps"] if env.name == "transformers" else []
    subprocess.run([str(py), "-m", "pip", "install", "-q", *no_deps, *env.pins], check=True)
    if env.name == "transformers":
        # drop torchaudio's compiled extension (built for another torch); torchaudio then imports
        # with the extension reported unavailable, and compliance.kaldi works
        import glob

        for so in glob.glob(str(d / "lib" / "python*" / "site-packages" / "torchaudio" / "lib" / "*.so")):
            os.remove(so)
    return f"{env.name}: {d} ({', '.join(env.pins)})"
