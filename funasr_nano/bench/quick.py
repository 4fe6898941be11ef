"""Quick benchmark suite runner and regression check: ``funasr-nano bench``.

``funasr-nano bench`` (the quick suite)
    1. checks the asv version against ``asv.conf.json`` (``asv_version``: 0.6.6);
    2. on Linux, preloads OpenBLAS for the benchmark processes when MLX would otherwise use the
       reference BLAS and OpenBLAS is installed (``--no-openblas`` to keep what is there);
    3. fingerprints the machine in a child process with that environment and writes asv's machine
       file (``funasr-nano machine``), so the results go to ``results/<hardware-name>/``;
    4. writes the synthetic real-shaped checkpoint once (unless ``$FUNASR_NANO_MODEL`` names a real
       one) and converts it to the safetensors cache, so no benchmark pays for it;
    5. runs ``asv run -E existing:<this python> --set-commit-hash HEAD`` on the quick selection of
       the grid (``QUICK``; ``--full`` runs everything), appends a run record to
       ``results/<machine>/runs.jsonl``;
    6. ``asv publish`` (HTML in ``.asv/html``) and ``funasr-nano report`` (Markdown table and
       charts in ``results/report``); prints the table and where the charts are.

``funasr-nano bench compare [--baseline REV]`` (regression check)
    Runs the regression sentinels (``SENTINELS``: asv-sampled timings of the decode loop, end to
    end, the decode step and the encoder) for the *working tree* in a scratch results directory
    (``.asv/regress``), puts the stored baseline result file of ``REV`` (default: the newest
    stored result of this machine) beside it, and runs ``asv compare baseline worktree``: asv's own
    comparison (ratio above ``--factor`` and statistically different: Mann-Whitney U on the raw
    samples, else 99 % CI overlap). Exits 1 when something got slower.

``funasr-nano bench run --commits A..B`` (history back-fill)
    The quick selection (``--full``: the grid) for each commit of a range in asv-built virtualenvs:
    ``funasr_nano.bench.history``.

Everything else runs in the current environment (``-E existing:<this interpreter>``; never an
interpreter path recorded in a stored result): the package must be installed (``pip install -e
.[bench]``; ``scripts/quick_bench.sh`` does it). asv runs through ``asv_safe`` (every finished
entry saved at once, atomically); a run measures only what its commit and environment are missing
(``--rerun``: everything), holds ``<results>/.bench.lock`` (``lock``), and stops asv cleanly on
Ctrl-C / SIGTERM / SIGHUP (exit 130).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import history
from . import machine as machine_mod
from .lock import BenchLock, Busy

ASV_VERSION = "0.6.6"

# The quick selection of the grid (benchmark, *params). Params are the grid values; the asv
# selector regex is built from their repr, as asv names parameter combinations.
QUICK = [
    ("meta.Context.track_synthetic_weights",),
    ("meta.Context.track_reference_blas",),
    # the backend policy the numbers below ran with, one entry per field
    *[("meta.Policy.track_policy", f) for f in ("dequant_min_rows", "compiled_decode_rows", "quant_compute_bits",
                                                "frontend_mlx", "step_ops_fast", "dequant_chunked",
                                                "encoder_eval_every", "bf16_audio_compute_bits",
                                                "bf16_llm_compute_bits", "fsmn_conv")],
    ("meta.Load.time_load", "fp32"),
    # end to end: presets at 5 s, plus the batch and length axes for fp32
    ("e2e.Transcribe.track_rtf", "fp32", 1, 5),
    ("e2e.Transcribe.track_rtf", "q8", 1, 5),
    ("e2e.Transcribe.track_rtf", "q4", 1, 5),
    ("e2e.Transcribe.track_rtf", "fp32", 4, 5),
    # prefill and decode rates
    ("decode.Decode.track_ms_per_token", "fp32", 1, 5),
    ("decode.Decode.track_ms_per_token", "q4", 1, 5),
    ("decode.Prefill.track_ms_per_prompt_token", "fp32", 1, 5),
    # memory
    ("memory.Memory.track_peak_bytes", "fp32", 1, 5),
    ("memory.Memory.track_peak_bytes", "q8", 1, 5),
    ("memory.Memory.track_peak_bytes", "q4", 1, 5),
    ("memory.Weights.track_weight_bytes", "fp32"),
    ("memory.Weights.track_weight_bytes", "q4"),
    # fidelity of the quantized presets (fp32 is the reference: 0 by definition)
    ("fidelity.Fidelity.track_mean_kl", "q8", 5),
    ("fidelity.Fidelity.track_mean_kl", "q4", 5),
    ("fidelity.Fidelity.track_top1_disagreement", "q4", 5),
    # a microscaling mode (benchmarks/modes.py): its size and fidelity
    ("modes.WeightsModes.track_weight_bytes", "mxfp4"),
    ("modes.FidelityModes.track_mean_kl", "mxfp4", 5),
    # per-stage breakdown
    ("stages.Frontend.time_frontend", "fp32", 1, 5),
    ("stages.Encoder.time_encoder", "fp32", 1, 5),
    ("stages.Adaptor.time_adaptor", "fp32", 1, 5),
    ("stages.Prefill.time_prefill", "fp32", 1, 5),
    ("stages.DecodeStep.time_decode_step", "fp32", 1, 5),
]
# asv-sampled timings (several samples each, so `asv compare` can test significance). They are
# part of the quick suite too, so every stored run is a baseline for `bench compare`.
SENTINELS = [
    ("decode.Decode.time_generate", "fp32", 1, 5),
    ("e2e.Transcribe.time_transcribe", "fp32", 1, 5),
]
# A package-independent MLX GEMM + GEMV workload: tells a slower machine from a slower commit.
CALIBRATION = ("meta.Calibration.time_calibration",)
QUICK += SENTINELS + [CALIBRATION]
REGRESS_EXTRA = [
    ("stages.DecodeStep.time_decode_step", "fp32", 1, 5),
    ("stages.Encoder.time_encoder", "fp32", 1, 5),
    CALIBRATION,
]


def selector(bench: str, *params) -> str:
    """asv ``-b`` regex selecting exactly one benchmark (and one parameter combination)."""
    if not params:
        return "^" + re.escape(bench) + "$"
    return "^" + re.escape(bench) + re.escape("(" + ", ".join(repr(p) for p in params) + ")") + "$"


def selectors(entries) -> list[str]:
    return [selector(*e) for e in entries]


# ----- environment -----------------------------------------------------------------------------------------
def repo_root(start=None) -> Path:
    """The directory holding asv.conf.json (searched upward from ``start`` / cwd / this package)."""
    starts = [Path(start) if start else Path.cwd(), Path(__file__).resolve().parents[2]]
    for s in starts:
        for d in [s, *s.parents]:
            if (d / "asv.conf.json").is_file() and (d / "benchmarks").is_dir():
                return d
    raise FileNotFoundError("asv.conf.json not found: run from the funasr-nano-mlx checkout")


def read_conf(root: Path) -> dict:
    text = (root / "asv.conf.json").read_text(encoding="utf-8")
    text = re.sub(r"^\s*//.*$", "", text, flags=re.M)  # JSONC: whole-line comments only
    return json.loads(text)


def asv_version() -> str | None:
    try:
        from importlib.metadata import version

        return version("asv")
    except Exception:
        return None


def check_asv(conf: dict, any_asv: bool = False) -> str:
    want = conf.get("asv_version", ASV_VERSION)
    have = asv_version()
    if have is None:
        raise RuntimeError(f"asv is not installed: pip install 'asv=={want}' (or pip install -e .[bench])")
    if have != want and not any_asv:
        raise RuntimeError(f"asv {have} is installed but the suite is written for asv {want} "
                           f"(pip install 'asv=={want}'; --any-asv to run anyway)")
    return have


def openblas_path() -> str | None:
    return machine_mod.openblas_library()


def bench_env(use_openblas: bool = True, quick: bool = True, extra: dict | None = None,
              root: Path | None = None) -> tuple[dict, str]:
    """Environment for the benchmark processes, and a note on the BLAS choice.

    With ``root``, the checkout is put first on the benchmark processes' path (asv drops
    ``PYTHONPATH`` but passes ``ASV_PYTHONPATH`` on), so the code measured is the working tree the
    results are filed under, even when the installed package is another copy."""
    env = dict(os.environ)
    note = ""
    if root is not None:
        for var in ("ASV_PYTHONPATH", "PYTHONPATH"):
            env[var] = os.pathsep.join([str(root)] + ([env[var]] if env.get(var) else []))
    if platform.system() == "Linux" and use_openblas:
        pre = env.get("LD_PRELOAD", "")
        if "openblas" in pre:
            note = f"OpenBLAS already preloaded ({pre})"
        else:
            # The benchmark modules may import mlx.core before funasr_nano, so the library that
            # `import funasr_nano` would load is preloaded instead (funasr_nano/runtime/blas.py).
            lib = openblas_path()
            if lib:
                env["LD_PRELOAD"] = (lib + " " + pre).strip()
                note = f"preloading OpenBLAS for MLX: LD_PRELOAD={lib}"
            else:
                from ..runtime import blas as blas_mod

                note = ("OpenBLAS not available: MLX will use its bundled reference BLAS (slow GEMMs): "
                        f"{blas_mod.status().get('detail')}. Install scipy-openblas32 and a C compiler, "
                        "or apt-get install -y libopenblas0-pthread")
    if quick:
        env.setdefault("FUNASR_NANO_BENCH_REPEAT", "1")
    env.update(extra or {})
    return env, note


def child_fingerprint(env: dict, name: str | None = None, python: str | None = None) -> dict:
    cmd = [python or sys.executable, "-m", "funasr_nano.bench.machine", "--json", "--no-write"]
    if name:
        cmd += ["--machine", name]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def git(root: Path, *args) -> str:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout.strip()


def head_commit(root: Path) -> tuple[str | None, bool]:
    try:
        head = git(root, "rev-parse", "HEAD")
    except (subprocess.CalledProcessError, FileNotFoundError):
        return None, False
    try:
        dirty = bool(git(root, "status", "--porcelain", "--untracked-files=no"))
    except subprocess.CalledProcessError:
        dirty = False
    return head, dirty


def prepare_checkpoint(root: Path, env: dict, python: str | None = None) -> dict:
    """Write the synthetic checkpoint (if needed) and convert it, in a child with the bench env."""
    code = (
        "import json, sys, time\n"
        f"sys.path.insert(0, {str(root)!r})\n"
        "from benchmarks import common as c\n"
        "t0 = time.perf_counter(); ck = c.checkpoint(); t1 = time.perf_counter()\n"
        "import funasr_nano\n"
        "asr = funasr_nano.load(ck); t2 = time.perf_counter()\n"
        "print(json.dumps({'checkpoint': ck, 'synthetic': bool(asr.synthetic), "
        "'synthetic_preset': c.synthetic_preset() if asr.synthetic else None, "
        "'prepare_s': round(t1 - t0, 1), 'first_load_s': round(t2 - t1, 1)}))\n"
    )
    out = subprocess.run([python or sys.executable, "-c", code], cwd=root, env=env, capture_output=True,
                         text=True)
    if out.returncode != 0:
        sys.stderr.write(out.stderr)
        raise RuntimeError("could not prepare the benchmark checkpoint (see above)")
    sys.stderr.write(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


class Interrupted(Exception):
    """Ctrl-C, SIGTERM or SIGHUP while benchmarks run (what was measured is on disk)."""


def _raise_interrupted(signum, frame):
    raise Interrupted(signal.Signals(signum).name)


def catch_signals():
    """SIGTERM / SIGHUP end a run the way Ctrl-C does: asv and its benchmark processes are stopped."""
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_interrupted)


def _stop(proc: subprocess.Popen):
    """Stop asv and the benchmark process it runs (its own process group): SIGINT, then harder."""
    for sig, grace in ((signal.SIGINT, 10), (signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(grace)
            break
        except subprocess.TimeoutExpired:
            continue
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # a benchmark process asv left behind
    except ProcessLookupError:
        pass


def run_asv(args: list[str], root: Path, env: dict, echo: bool = True, keep_fds=()) -> int:
    """asv in this interpreter (the one with the package). ``asv run``/``continuous`` go through
    ``asv_safe`` (each finished entry saved at once, atomically). asv runs in its own process group,
    so an interrupted run stops it and its benchmark process; ``keep_fds`` (the run lock) is
    inherited, so the lock lives as long as asv does."""
    module = "funasr_nano.bench.asv_safe" if args and args[0] in ("run", "continuous") else "asv"
    cmd = [sys.executable, "-m", module, *args]
    if echo:
        print("$ " + " ".join(_quote(a) for a in cmd), flush=True)
    proc = subprocess.Popen(cmd, cwd=root, env=env, start_new_session=True,
                            pass_fds=tuple(fd for fd in keep_fds if fd is not None))
    try:
        return proc.wait()
    except (KeyboardInterrupt, Interrupted) as e:
        _stop(proc)
        raise Interrupted(str(e) or "Ctrl-C") from None


def results_location(root: Path, conf: dict, results_dir_arg: str | None) -> tuple[Path, list[str]]:
    """The results folder and the asv --config arguments that point asv at it."""
    if not results_dir_arg:
        return root / conf.get("results_dir", "results"), []
    results_dir = Path(results_dir_arg).resolve()
    cpath = scratch_conf(root, conf, Path(tempfile.mkdtemp(prefix="asv-conf-")), results_dir)
    return results_dir, ["--config", str(cpath)]


def take_lock(results_dir: Path, args) -> BenchLock:
    """The results folder's run lock (refuses, or with --wait queues, when another run holds it)."""
    try:
        return BenchLock(results_dir, " ".join(sys.argv)).acquire(wait=getattr(args, "wait", False))
    except Busy as e:
        raise RuntimeError(str(e)) from None


def selection(args) -> list[str]:
    """The asv -b regexes of a run: --only, else the quick selection (nothing: the grid) + --bench."""
    if args.only:
        return list(args.only)
    return ([] if args.full else selectors(QUICK)) + list(args.bench or [])


def _quote(a: str) -> str:
    return a if re.fullmatch(r"[\w@%+=:,./-]+", a) else "'" + a.replace("'", "'\\''") + "'"


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("mlx", "mlx-cpu", "mlx-metal", "mlx-cuda-12", "mlx-cuda-13", "numpy", "asv", "asv_runner",
                "funasr-nano-mlx"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def append_run_record(results_dir: Path, machine: str, record: dict) -> Path:
    d = results_dir / machine
    d.mkdir(parents=True, exist_ok=True)
    path = d / "runs.jsonl"
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")
    return path


# ----- the quick suite -------------------------------------------------------------------------------------
def cmd_run(args) -> int:
    if getattr(args, "commits", None):
        return history.cmd_backfill(args)
    t_start = time.perf_counter()
    root = repo_root()
    conf = read_conf(root)
    try:
        asv_ver = check_asv(conf, args.any_asv)
    except RuntimeError as e:
        print(f"funasr-nano bench: error: {e}", file=sys.stderr)
        return 4
    quick = not args.full
    env, note = bench_env(not args.no_openblas, quick, root=root)
    if note:
        print(f"[bench] {note}", flush=True)
    python = args.python or sys.executable
    lock = None
    results_dir, conf_args = results_location(root, conf, args.results_dir)
    if not args.dry_run:
        try:
            lock = take_lock(results_dir, args)
        except RuntimeError as e:
            print(f"funasr-nano bench: error: {e}", file=sys.stderr)
            return 5
    try:
        return _run_locked(args, root, conf, env, python, asv_ver, t_start, lock, results_dir, conf_args)
    except Interrupted as e:
        print(f"[bench] interrupted ({e}): every benchmark measured so far is kept; run the same command "
              "again to measure only what is missing", flush=True)
        return 130
    finally:
        if lock is not None:
            lock.release()


def _resume(root, results_dir, name, head, python, sel, base_args, env, lock):
    """What is still missing for ``head`` in this environment: (asv -b selectors, or None when nothing
    is; entries kept; entries selected). The suite is discovered first (asv writes benchmarks.json),
    so the selection's entries and the benchmarks' current versions are known."""
    files = history.result_files(results_dir, name, head, python=python)
    if not files:
        return sel, 0, None
    rc = run_asv([*base_args, "-b", "just-discover"], root, env, echo=False, keep_fds=(lock.fd,))
    meta = history.load_benchmarks(results_dir)
    if rc != 0 or not meta:
        return sel, 0, None
    want = history.grid_entries(meta, sel or None)
    have = history.measured(files, meta)
    todo = [e for e in want if e not in have]
    if not todo:
        return None, len(want), len(want)
    est = history.estimate_seconds(todo, history.seconds_per_entry(results_dir, name))
    print(f"[bench] resuming {head[:8]}: {len(want) - len(todo)} of the {len(want)} selected entries are already "
          f"measured in this environment ({files[0].name}) and kept; measuring the {len(todo)} missing "
          f"(about {history.fmt_minutes(est)} by the stored durations)", flush=True)
    return [history.entry_selector(e) for e in todo], len(want) - len(todo), len(want)


def _must_dry_run(args, head, ck) -> bool:
    """Whether this run must be a dry run: asked for, no commit to file results under, or a tiny
    synthetic model whose numbers must not land in results/ (each forced case says so)."""
    dry = args.dry_run
    if head is None and not dry:
        print("[bench] not a git checkout with a commit: running with --dry-run (nothing is saved)", flush=True)
        dry = True
    if ck.get("synthetic_preset") not in (None, "real") and not dry and not args.results_dir:
        print("[bench] tiny synthetic model: running with --dry-run (such numbers must not be stored in "
              "results/; pass --results-dir to keep them elsewhere)", flush=True)
        dry = True
    return dry


def _run_record(args, *, head, dirty, name, ck, fp, env, asv_ver, rc, asv_s, wall, kept) -> dict:
    """The runs.jsonl line of a stored run: what was measured, with what, and how long it took."""
    return {
        "commit": head, "dirty": dirty, "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "mode": "full" if args.full else "quick", "machine": name,
        "checkpoint": (ck["checkpoint"] if not ck["synthetic"]
                       else f"synthetic-{ck.get('synthetic_preset') or 'real'}-seed0"),
        "synthetic": ck["synthetic"], "tokens_per_second": 4,
        "blas": fp.get("blas"), "ld_preload": env.get("LD_PRELOAD", ""), "backend": fp.get("backend"),
        "policy": (fp.get("details") or {}).get("policy"),
        "versions": _versions(), "asv": asv_ver, "python": platform.python_version(),
        "asv_rc": rc, "asv_seconds": round(asv_s, 1), "wall_seconds": round(wall, 1),
        "selection": "full grid" if args.full else f"{len(selection(args))} selectors (funasr_nano.bench.quick.QUICK)",
        "kept_from_earlier_run": kept,
    }


def _print_report(args, root, conf, results_dir, name):
    """Rebuild the report over all machines and print this machine's section and the files written."""
    from .report import build_report, machine_section

    rep = build_report(results_dir, args.report_dir or (results_dir / "report"))  # all machines
    print()
    print(machine_section(rep["results"], name))
    print(f"[bench] table:  {rep['table']}")
    for c in rep["charts"]:
        print(f"[bench] chart:  {c}")
    if not args.no_publish:
        print(f"[bench] html:   {root / conf.get('html_dir', '.asv/html')}/index.html  (asv preview)")


def _run_locked(args, root, conf, env, python, asv_ver, t_start, lock, results_dir, conf_args) -> int:
    fp = child_fingerprint(env, args.machine, python)
    name = fp["machine"]
    machine_mod.write_machine_file(fp)  # asv reads only ~/.asv-machine.json
    print("[bench] " + machine_mod.describe(fp).replace("\n", "\n[bench] "), flush=True)

    t0 = time.perf_counter()
    ck = prepare_checkpoint(root, env, python)
    print(f"[bench] checkpoint {ck['checkpoint']} ({'SYNTHETIC weights' if ck['synthetic'] else 'real weights'}); "
          f"prepared in {time.perf_counter() - t0:.0f} s", flush=True)

    head, dirty = head_commit(root)
    dry = _must_dry_run(args, head, ck)

    base_args = ["run", *conf_args, "-E", f"existing:{python}", "--machine", name, "--show-stderr",
                 "--launch-method", "spawn"]
    asv_args = list(base_args)
    if not dry:
        asv_args += ["--set-commit-hash", head, "--record-samples"]
    else:
        asv_args += ["--dry-run"]
    if args.asv_quick:
        asv_args += ["--quick"]
    sel = selection(args)
    kept = 0
    if not dry and not args.rerun:
        sel, kept, total = _resume(root, results_dir, name, head, python, sel, base_args, env, lock)
        if sel is None:
            print(f"[bench] all {total} selected entries are already measured for {head[:8]} in this environment "
                  "(--rerun to measure them again)", flush=True)
    rc, asv_s = 0, 0.0
    if sel is not None:
        for s in sel:
            asv_args += ["-b", s]
        asv_args += args.asv_arg or []
        t_asv = time.perf_counter()
        rc = run_asv(asv_args, root, env, keep_fds=(lock.fd if lock else None,))
        asv_s = time.perf_counter() - t_asv

    wall = time.perf_counter() - t_start
    if not dry:
        append_run_record(results_dir, name, _run_record(args, head=head, dirty=dirty, name=name, ck=ck, fp=fp,
                                                         env=env, asv_ver=asv_ver, rc=rc, asv_s=asv_s,
                                                         wall=wall, kept=kept))
        if dirty:
            print("[bench] note: the working tree has uncommitted changes; results are filed under HEAD "
                  f"{head[:8]} (runs.jsonl records dirty=true)", flush=True)

    if not dry and not args.no_publish:
        run_asv(["publish", *conf_args], root, env, echo=True)
    if not dry and not args.no_report:
        _print_report(args, root, conf, results_dir, name)
    wall = time.perf_counter() - t_start
    print(f"[bench] done in {wall / 60:.1f} min (asv {asv_s / 60:.1f} min); asv exit status {rc}", flush=True)
    return 0 if rc == 0 else 1


# ----- regression check ------------------------------------------------------------------------------------
def _result_files(results_dir: Path, machine: str) -> list[Path]:
    d = results_dir / machine
    return sorted(p for p in d.glob("*.json") if p.name not in ("machine.json", "benchmarks.json"))


def find_baseline(results_dir: Path, machine: str, root: Path, rev: str | None, needed) -> Path:
    files = _result_files(results_dir, machine)
    if not files:
        raise FileNotFoundError(f"no stored results for machine {machine!r} in {results_dir}")
    if rev:
        try:
            full = git(root, "rev-parse", rev + "^{commit}")
        except subprocess.CalledProcessError:
            full = rev
        hits = [p for p in files if full.startswith(p.name.split("-")[0]) or p.name.startswith(rev)]
        if not hits:
            raise FileNotFoundError(f"no stored results of {rev} for machine {machine!r}")
        return max(hits, key=lambda p: p.stat().st_mtime)

    def score(p):
        d = json.loads(p.read_text())
        res = d.get("results", {})
        has = sum(1 for b in needed if b in res)
        started = max((v[3] for v in res.values() if isinstance(v, list) and len(v) > 3 and v[3]), default=0)
        return has, started

    return max(files, key=score)


def scratch_conf(root: Path, conf: dict, scratch: Path, results_dir: Path | None = None) -> Path:
    """A copy of asv.conf.json in ``scratch`` with absolute paths and its own results/html dirs."""
    c = dict(conf)
    c.update({"repo": str(root), "benchmark_dir": str(root / conf.get("benchmark_dir", "benchmarks")),
              "results_dir": str(Path(results_dir).resolve() if results_dir else scratch / "results"),
              "html_dir": str(scratch / "html"), "env_dir": str(root / conf.get("env_dir", ".asv/env"))})
    scratch.mkdir(parents=True, exist_ok=True)
    path = scratch / "asv.conf.json"
    path.write_text(json.dumps(c, indent=2), encoding="utf-8")
    return path


def _relabel(path: Path, label: str, dest_dir: Path, env_name: str | None = None) -> Path:
    """Copy a result file into ``dest_dir`` filed under the commit label ``label`` (asv compare
    accepts names git does not know), optionally under another environment name."""
    d = json.loads(path.read_text())
    if env_name:
        d["env_name"] = env_name
    env = d.get("env_name", "env")
    d["commit_hash"] = label
    out = dest_dir / f"{label}-{env}.json"
    out.write_text(json.dumps(d), encoding="utf-8")
    return out


def calibration_ratio(mdir: Path) -> float | None:
    """worktree / baseline median of the calibration benchmark, when both sides have it."""
    vals = {}
    for label in ("baseline", "worktree"):
        for p in mdir.glob(f"{label}-*.json"):
            d = json.loads(p.read_text())
            row = d.get("results", {}).get(CALIBRATION[0])
            if row:
                v = dict(zip(d.get("result_columns", ["result"]), row)).get("result")
                v = v[0] if isinstance(v, list) else v
                if isinstance(v, (int, float)) and v == v:
                    vals[label] = float(v)
    if len(vals) == 2 and vals["baseline"] > 0:
        return vals["worktree"] / vals["baseline"]
    return None


def tidy_compare_output(text: str) -> str:
    """asv compare's tables without the rows that have no ratio (parameter sets measured on one side
    only: the rest of the grid, baseline-only benchmarks) and without sections left empty."""
    blocks, cur = [], []
    for line in text.splitlines():
        if re.match(r"^\|\s*\|[^|]*\|[^|]*\|\s*n/a\s*\|", line):
            continue
        cur.append(line)
        if not line.strip():
            blocks.append(cur)
            cur = []
    blocks.append(cur)
    out = []
    for i, b in enumerate(blocks):
        rows = [ln for ln in b if ln.startswith("|") and not ln.startswith(("| Change", "|---"))]
        if any(ln.startswith("| Change") for ln in b) and not rows:
            if out and out[-1] and out[-1][0].rstrip().endswith(":"):
                out.pop()  # the section title that introduced this empty table
            continue
        out.append(b)
    return "\n".join(line for b in out for line in b).rstrip("\n") + "\n"


def worsened_rows(compare_output: str) -> list[str]:
    """Rows of ``asv compare``'s table marked ``+`` (slower, significant) or ``!`` (newly failing)."""
    return [line for line in compare_output.splitlines() if re.match(r"^\|\s*[+!]\s*\|", line)]


def environment_note(base_data: dict, python: str, machine_dir: Path) -> str | None:
    """A sentence when the baseline was measured with another interpreter than ``python``, with the
    package versions that differ (from runs.jsonl) when known."""
    base_py = base_data.get("python")
    if not base_py or os.path.abspath(base_py) == os.path.abspath(python):
        return None
    msg = (f"the baseline was measured in another environment (python {base_py}, asv environment "
           f"{base_data.get('env_name')!r}); this run uses {python}, so the comparison includes any difference "
           "between the two environments")
    commit = str(base_data.get("commit_hash", ""))
    recs = []
    try:
        for line in (machine_dir / "runs.jsonl").read_text(encoding="utf-8").splitlines():
            r = json.loads(line)
            if commit and str(r.get("commit", "")).startswith(commit[:8]) and r.get("versions"):
                recs.append(r)
    except (OSError, ValueError):
        pass
    if recs and os.path.abspath(python) == os.path.abspath(sys.executable):
        there, here = recs[-1]["versions"], _versions()
        diff = [f"{k} {there.get(k)} -> {here.get(k)}" for k in sorted(set(there) | set(here))
                if k != "funasr-nano-mlx" and there.get(k) != here.get(k)]
        msg += "; versions: " + ("; ".join(diff) if diff else "the same MLX, numpy and asv")
    return msg


def cmd_compare(args) -> int:
    root = repo_root()
    scratch = Path(args.scratch).resolve() if args.scratch else root / ".asv" / "regress"
    try:
        lock = BenchLock(scratch.parent, " ".join(sys.argv), name=f".{scratch.name}.lock").acquire(wait=args.wait)
    except Busy as e:
        print(f"funasr-nano bench compare: error: {e}", file=sys.stderr)
        return 5
    try:
        return _compare(args, root, scratch, lock)
    except Interrupted as e:
        print(f"[compare] interrupted ({e})", flush=True)
        return 130
    finally:
        lock.release()


def _measure(label: str, code_root: Path, commit: str, *, root, env, cpath, python, name, sel, scratch,
             lock) -> list[Path]:
    """Run the selection with the package from ``code_root`` (benchmarks: this checkout's) and
    file the results under ``label``."""
    mdir = scratch / "results" / name
    e = dict(env)
    for var in ("ASV_PYTHONPATH", "PYTHONPATH"):
        rest = [p for p in e.get(var, "").split(os.pathsep) if p and p != str(root)]
        e[var] = os.pathsep.join([str(code_root)] + rest)
    asv_args = ["run", "--config", str(cpath), "-E", f"existing:{python}", "--machine", name,
                "--set-commit-hash", commit, "--record-samples", "--show-stderr", "--launch-method", "spawn"]
    for s_ in sel:
        asv_args += ["-b", s_]
    print(f"[compare] measuring {label} ({code_root})", flush=True)
    rc_ = run_asv(asv_args, root, e, keep_fds=(lock.fd,))
    files = [p for p in _result_files(scratch / "results", name) if not p.name.startswith(("baseline-", "worktree-"))]
    out_files = []
    for p in files:
        out_files.append(_relabel(p, label, mdir, env_name=None))
        p.unlink()
    if rc_ != 0:
        print(f"[compare] asv run for {label} exited with {rc_}", flush=True)
    return out_files


def _measure_baseline_now(args, root, scratch, env, name, head, python, measure) -> tuple[list[Path], list[Path]]:
    """Measure the baseline commit now, back to back with the working tree, instead of trusting
    a stored result from another time (and another machine load) -> (baseline files, worktree files)."""
    rev = args.baseline or "HEAD"
    full = git(root, "rev-parse", rev + "^{commit}")
    src = scratch / "baseline-src"
    src.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", "--format=tar", full], cwd=root, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(src)], input=archive.stdout, check=True)
    print(f"[compare] machine {name}; baseline = commit {full[:8]} measured now; python {python}", flush=True)
    prepare_checkpoint(root, env, python)
    base_files = measure("baseline", src, full)
    new = measure("worktree", root, head)
    return base_files, new


def _measure_against_stored(args, root, results_dir, env, name, head, python, mdir, measure) -> list[Path]:
    """Measure the working tree and file a stored baseline result next to it (under the baseline's
    environment name, so asv compares the two) -> the worktree files."""
    base = find_baseline(results_dir, name, root, args.baseline, sorted({e[0] for e in SENTINELS + REGRESS_EXTRA}))
    base_data = json.loads(base.read_text())
    print(f"[compare] machine {name}; baseline {base}; python {python}", flush=True)
    other = environment_note(base_data, python, results_dir / name)
    if other:
        print(f"[compare] note: {other}", flush=True)
    prepare_checkpoint(root, env, python)
    new = measure("worktree", root, head)
    base_env = base_data.get("env_name")
    for p in list(new):
        env_here = json.loads(p.read_text()).get("env_name")
        if base_env and env_here != base_env:
            print(f"[compare] note: filing the working-tree results under the baseline's environment name "
                  f"{base_env!r} (was {env_here!r}) so asv compares them", flush=True)
            new.remove(p)
            new.append(_relabel(p, "worktree", mdir, env_name=base_env))
            p.unlink()
    _relabel(base, "baseline", mdir)
    return new


def _verdict(args, root, env, cpath, name, mdir) -> int:
    """Run ``asv compare`` on the two labelled sides and judge it: 0 no regression, 1 regression,
    2 asv compare failed, 3 inconclusive (the calibration workload moved as much as the factor)."""
    cmp_args = ["compare", "--config", str(cpath), "--machine", name, "--factor", str(args.factor),
                "--split", "baseline", "worktree"]
    if args.only_changed:
        cmp_args.insert(-2, "--only-changed")
    cmd = [sys.executable, "-m", "asv", *cmp_args]
    print("$ " + " ".join(_quote(a) for a in cmd), flush=True)
    out = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True)
    sys.stdout.write(tidy_compare_output(out.stdout))
    sys.stderr.write(out.stderr)
    worse = worsened_rows(out.stdout)
    if out.returncode not in (0, 1):
        return 2
    cal = calibration_ratio(mdir)
    if cal is not None:
        print(f"[compare] calibration (package-independent MLX GEMM+GEMV): worktree/baseline = {cal:.2f}", flush=True)
    # A slower machine can fake a regression, a faster one can hide it: then the verdict is open.
    if cal is not None and ((worse and cal > args.factor) or (not worse and cal < 1 / args.factor)):
        print(f"[compare] INCONCLUSIVE: the calibration workload itself changed by x{cal:.2f}, so the machine "
              "(its load, clocks or MLX/BLAS) differs between the two measurements; rerun when the machine "
              "is quiet, or with --rerun-baseline to measure both sides back to back", flush=True)
        return 3
    if worse:
        print(f"[compare] REGRESSION: {len(worse)} benchmark(s) slower than the baseline by more than "
              f"x{args.factor} and statistically different (or newly failing)", flush=True)
        return 1
    print(f"[compare] no regression beyond x{args.factor}", flush=True)
    return 0


def _compare(args, root, scratch, lock) -> int:
    conf = read_conf(root)
    try:
        check_asv(conf, args.any_asv)
    except RuntimeError as e:
        print(f"funasr-nano bench compare: error: {e}", file=sys.stderr)
        return 4
    env, note = bench_env(not args.no_openblas, quick=False, root=root)
    if note:
        print(f"[compare] {note}", flush=True)
    fp = child_fingerprint(env, args.machine, args.python or sys.executable)
    name = fp["machine"]
    machine_mod.write_machine_file(fp)  # asv reads only ~/.asv-machine.json
    results_dir = Path(args.results_dir).resolve() if args.results_dir else root / conf.get("results_dir", "results")
    if scratch.exists():
        shutil.rmtree(scratch)
    (scratch / "results").mkdir(parents=True)
    cpath = scratch_conf(root, conf, scratch)
    head, _ = head_commit(root)
    sel = args.bench or selectors(SENTINELS + REGRESS_EXTRA)
    mdir = scratch / "results" / name
    # Always this environment (the one with the package), never the interpreter a stored baseline
    # recorded: that path may be another environment, or one without MLX.
    python = args.python or sys.executable

    def measure(label: str, code_root: Path, commit: str) -> list[Path]:
        return _measure(label, code_root, commit, root=root, env=env, cpath=cpath, python=python, name=name,
                        sel=sel, scratch=scratch, lock=lock)

    if args.rerun_baseline:
        base_files, new = _measure_baseline_now(args, root, scratch, env, name, head, python, measure)
        if not base_files:
            print("[compare] error: the baseline run produced no results", file=sys.stderr)
            return 2
    else:
        new = _measure_against_stored(args, root, results_dir, env, name, head, python, mdir, measure)
    if not new:
        print("[compare] error: the working-tree run produced no results", file=sys.stderr)
        return 2
    if not (scratch / "results" / "benchmarks.json").exists() and (results_dir / "benchmarks.json").exists():
        shutil.copy(results_dir / "benchmarks.json", scratch / "results" / "benchmarks.json")
    return _verdict(args, root, env, cpath, name, mdir)


# ----- CLI ---------------------------------------------------------------------------------------------
def _common(p):
    p.add_argument("--machine", default=None, help="machine name (default: derived from the hardware)")
    p.add_argument("--python", default=None, help="interpreter of the existing environment (default: this one)")
    p.add_argument("--no-openblas", action="store_true", help="do not preload OpenBLAS on Linux")
    p.add_argument("--any-asv", action="store_true", help="accept an asv version other than asv.conf.json's")


def build_parser():
    p = argparse.ArgumentParser(prog="funasr-nano bench",
                                description="Quick asv benchmark suite (default) or regression check (compare).")
    sub = p.add_subparsers(dest="cmd")
    r = sub.add_parser("run", help="run the quick suite (default)")
    c = sub.add_parser("compare", help="regression check: working tree vs a stored baseline (asv compare)")
    sub.add_parser("policy-ab", add_help=False,
                   help="measure each backend-policy choice both ways on this machine (see `policy-ab --help`)")
    for q in (p, r):
        _common(q)
        q.add_argument("--full", action="store_true", help="the whole grid instead of the quick selection (hours on a CPU)")
        q.add_argument("--dry-run", action="store_true", help="asv --dry-run: run but save nothing")
        q.add_argument("--asv-quick", action="store_true", help="pass --quick to asv (one sample per benchmark)")
        q.add_argument("--bench", "-b", action="append", help="extra asv -b regex (added to the selection)")
        q.add_argument("--only", action="append", help="asv -b regex replacing the selection")
        q.add_argument("--asv-arg", action="append", help="extra argument passed to asv run (repeatable)")
        q.add_argument("--no-publish", action="store_true", help="skip asv publish")
        q.add_argument("--no-report", action="store_true", help="skip the Markdown table and charts")
        q.add_argument("--report-dir", default=None, help="report output (default <results>/report)")
        q.add_argument("--results-dir", default=None, help="store results here instead of asv.conf.json's")
        q.add_argument("--commits", default=None, metavar="RANGE",
                       help="history back-fill: measure each commit of RANGE (git rev-list --first-parent: "
                            "A..B, or one commit) in asv-built virtualenvs, oldest first, skipping what is measured")
        q.add_argument("--rerun", action="store_true",
                       help="measure everything selected again (default: keep what this commit and environment "
                            "already have and measure only what is missing)")
        q.add_argument("--wait", action="store_true", help="queue behind a run holding the results folder's lock "
                                                           "instead of refusing")
    _common(c)
    c.add_argument("--baseline", default=None,
                   help="commit whose stored results are the baseline (default: the newest stored result); "
                        "with --rerun-baseline the commit to measure (default HEAD)")
    c.add_argument("--rerun-baseline", action="store_true",
                   help="measure the baseline commit now (git archive into the scratch folder), back to back "
                        "with the working tree, instead of reading a stored result: for noisy machines")
    c.add_argument("--factor", type=float, default=1.1, help="slowdown ratio that counts (default 1.1, asv's)")
    c.add_argument("--bench", "-b", action="append", help="asv -b regex replacing the sentinel selection")
    c.add_argument("--only-changed", action="store_true", help="print only changed benchmarks")
    c.add_argument("--results-dir", default=None, help="where the stored baseline results are (default: results)")
    c.add_argument("--scratch", default=None, help="scratch folder of the check (default .asv/regress)")
    c.add_argument("--wait", action="store_true", help="queue behind another check using the scratch folder")
    return p


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["policy-ab"]:  # its own parser: measures in this process, no asv
        from .policy_ab import main as policy_ab_main

        return policy_ab_main(argv[1:])
    args = build_parser().parse_args(argv)
    catch_signals()
    if args.cmd == "compare":
        return cmd_compare(args)
    return cmd_run(args)


if __name__ == "__main__":  # pragma: no cover
    # Run the imported module, not this __main__ copy: history.py calls funasr_nano.bench.quick, and
    # two copies would have two Interrupted classes (the signal handler's would not be caught).
    from . import quick as _quick

    sys.exit(_quick.main())
