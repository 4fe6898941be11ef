"""What is already measured, and the history back-fill: ``funasr-nano bench run --commits A..B``.

A benchmark *entry* is one benchmark and one parameter combination, named as asv names it:
``decode.Decode.track_ms_per_token('q4', 1, 5)``. An entry counts as measured for a commit on a
machine when a stored result file of that commit holds a finite value for it with the benchmark's
current version (asv's ``benchmarks.json``); failed (``null``) and skipped (``NaN``) entries are
measured again. ``funasr-nano bench`` uses this to resume an interrupted run: it asks asv (``-b``)
only for what is missing, and ``funasr_nano.bench.asv_safe`` writes every finished entry at once.

The back-fill runs the quick selection (``--full``: the grid) for each commit of a range in
asv-built virtualenvs (``asv.conf.json``: ``environment_type: virtualenv``; the commit's wheel is
built and installed, the benchmarks are this checkout's), one asv call per commit, oldest first,
skipping what is measured, with progress and an estimate of the time left.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

Entry = tuple  # (benchmark name, (param repr, ...))


def full_name(entry: Entry) -> str:
    name, combo = entry
    return f"{name}({', '.join(combo)})" if combo else name


def entry_selector(entry: Entry) -> str:
    return "^" + re.escape(full_name(entry)) + "$"


def _combos(params) -> list[tuple]:
    return [tuple(c) for c in itertools.product(*params)] if params else [()]


def load_benchmarks(results_dir: Path) -> dict:
    p = Path(results_dir) / "benchmarks.json"
    if not p.is_file():
        return {}
    d = json.loads(p.read_text(encoding="utf-8"))
    d.pop("version", None)
    return d


def grid_entries(meta: dict, regexes: list[str] | None) -> list[Entry]:
    """The entries asv's ``-b`` regexes select (asv's rule: a regex matching the benchmark name
    selects every combination, else each combination's full name is matched); None: all."""
    out = []
    for name in sorted(meta):
        name_hit = regexes is None or any(re.search(r, name) for r in regexes)
        for combo in _combos(meta[name].get("params") or []):
            e = (name, combo)
            if name_hit or any(re.search(r, full_name(e)) for r in regexes):
                out.append(e)
    return out


def result_files(results_dir: Path, machine: str, commit: str, python: str | None = None) -> list[Path]:
    """Stored result files of ``commit`` on ``machine``; with ``python``, only those of that interpreter."""
    d = Path(results_dir) / machine
    files = sorted(d.glob(f"{commit[:8]}-*.json"))
    if python is not None:
        files = [p for p in files if _read(p).get("python") == python]
    return files


def _read(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _rows(data: dict):
    cols = data.get("result_columns") or ["result", "params", "version", "started_at", "duration"]
    for name, row in (data.get("results") or {}).items():
        yield name, dict(zip(cols, row))


def measured(files, meta: dict) -> dict:
    """{entry: value} of the entries with a finite value in ``files``."""
    out = {}
    for p in files:
        for name, r in _rows(_read(p)):
            want = meta.get(name, {}).get("version")
            if want is not None and r.get("version") != want:
                continue  # the benchmark changed since: its old value is no measurement of this suite
            vals = r.get("result")
            if not isinstance(vals, list):
                continue
            for combo, v in zip(_combos(r.get("params") or []), vals):
                if isinstance(v, (int, float)) and math.isfinite(v):
                    out[(name, combo)] = v
    return out


def seconds_per_entry(results_dir: Path, machine: str) -> dict:
    """Benchmark name -> seconds one combination took, from the newest stored result having it
    (asv stores the time of a whole benchmark: divided by its measured combinations)."""
    out = {}
    files = sorted((Path(results_dir) / machine).glob("*.json"), key=lambda p: p.stat().st_mtime)
    for p in files:
        if p.name in ("machine.json", "benchmarks.json"):
            continue
        for name, r in _rows(_read(p)):
            vals, dur = r.get("result"), r.get("duration")
            n = sum(1 for v in vals if isinstance(v, (int, float)) and math.isfinite(v)) if isinstance(vals, list) else 0
            if n and isinstance(dur, (int, float)):
                out[name] = dur / n
    return out


def estimate_seconds(entries, per: dict) -> float | None:
    if not per or not entries:
        return None
    mean = sum(per.values()) / len(per)
    return sum(per.get(name, mean) for name, _ in entries)


def fmt_minutes(s: float | None) -> str:
    if s is None:
        return "unknown"
    return f"{s:.0f} s" if s < 90 else f"{s / 60:.1f} min"


# ----- commit ranges -------------------------------------------------------------------------------------
def _git(root: Path, *args) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)


def resolve_commits(root: Path, spec: str) -> list[str]:
    """The commits of ``spec``, oldest first. ``A..B`` as ``git rev-list --first-parent`` reads it (asv's
    rule); a single revision is that one commit. In a shallow clone (CI) a revision beyond the
    clone's depth is an error that says how to fetch more history."""
    shallow = _git(root, "rev-parse", "--is-shallow-repository").stdout.strip() == "true"
    fetch_hint = (" This clone is shallow: fetch more history first (git fetch --unshallow, or "
                  "git fetch --deepen=N; actions/checkout: fetch-depth: 0).") if shallow else ""
    if ".." in spec or spec.endswith(("^!", "^@")) or spec.startswith("^"):
        out = _git(root, "rev-list", "--first-parent", "--reverse", *spec.split())
        if out.returncode != 0:
            raise ValueError(f"cannot read the commit range {spec!r}: {out.stderr.strip()}.{fetch_hint}")
        commits = out.stdout.split()
    else:
        out = _git(root, "rev-parse", "--verify", "--quiet", spec + "^{commit}")
        if out.returncode != 0:
            raise ValueError(f"unknown commit {spec!r}.{fetch_hint}")
        commits = [out.stdout.strip()]
    if not commits:
        raise ValueError(f"the range {spec!r} holds no commits")
    return commits


def subject(root: Path, commit: str) -> str:
    return _git(root, "log", "-1", "--format=%cs %s", commit).stdout.strip()[:70]


# ----- the back-fill -------------------------------------------------------------------------------------
def cmd_backfill(args) -> int:
    from . import quick

    t_start = time.perf_counter()
    root = quick.repo_root()
    conf = quick.read_conf(root)
    try:
        quick.check_asv(conf, args.any_asv)
        commits = resolve_commits(root, args.commits)
    except (RuntimeError, ValueError) as e:
        print(f"funasr-nano bench: error: {e}", file=sys.stderr)
        return 4
    # No checkout on the benchmark processes' path: each commit's own installed wheel is measured.
    env, note = quick.bench_env(not args.no_openblas, not args.full, root=None)
    env.pop("ASV_PYTHONPATH", None)
    if note:
        print(f"[backfill] {note}", flush=True)
    results_dir, conf_args = quick.results_location(root, conf, args.results_dir)
    try:
        lock = quick.take_lock(results_dir, args)
    except RuntimeError as e:
        print(f"funasr-nano bench: error: {e}", file=sys.stderr)
        return 5
    try:
        with lock:
            return _backfill(args, root, conf, env, commits, results_dir, conf_args, lock, t_start)
    except quick.Interrupted as e:
        print(f"[backfill] interrupted ({e}): every entry measured so far is kept in {results_dir}; run the same "
              "command again to resume", flush=True)
        return 130


def _backfill(args, root, conf, env, commits, results_dir, conf_args, lock, t_start) -> int:
    from . import machine as machine_mod
    from . import quick

    fp = quick.child_fingerprint(env, args.machine)
    name = fp["machine"]
    machine_mod.write_machine_file(fp)
    ck = quick.prepare_checkpoint(root, env)
    if ck.get("synthetic_preset") not in (None, "real") and not args.results_dir:
        print("funasr-nano bench: error: the tiny synthetic model's numbers must not go to results/: "
              "pass --results-dir", file=sys.stderr)
        return 4
    regexes = None if args.full and not args.only else quick.selection(args)
    # durations stored for this machine: here, else in the checkout's own results/
    per = seconds_per_entry(results_dir, name) or seconds_per_entry(root / conf.get("results_dir", "results"), name)
    done_s: list[float] = []
    print(f"[backfill] {len(commits)} commit(s) of {args.commits!r} on machine {name}, "
          f"{'full grid' if args.full else 'quick selection'}, asv virtualenvs in "
          f"{conf.get('env_dir', '.asv/env')}", flush=True)
    rc_all = 0
    for i, commit in enumerate(commits, 1):
        meta = load_benchmarks(results_dir)
        have = measured(result_files(results_dir, name, commit), meta)
        if meta and not args.rerun:
            want = grid_entries(meta, regexes)
            todo = [e for e in want if e not in have]
            sel = [entry_selector(e) for e in todo] if len(todo) < len(want) else (regexes or [])
        else:  # nothing discovered yet: the selection as given
            todo, want, sel = None, None, (regexes or [])
        head = f"[backfill] commit {i}/{len(commits)} {commit[:8]} ({subject(root, commit)})"
        if todo == []:
            print(f"{head}: all {len(want)} entries already measured, skipped", flush=True)
            continue
        left = len(commits) - i
        if done_s:
            eta = sum(done_s) / len(done_s) * (left + 1)
            basis = f"mean {fmt_minutes(sum(done_s) / len(done_s))} per commit so far"
        else:
            est = estimate_seconds(todo if todo is not None else
                                   ([] if args.full else [(e[0], ()) for e in quick.QUICK]), per)
            eta = None if est is None else est * (left + 1)
            basis = "stored durations of this machine, plus building the environment"
        kept = f", {len(want) - len(todo)} kept" if want else ""
        print(f"{head}: measuring {len(todo) if todo is not None else 'the selection'}{kept}; elapsed "
              f"{fmt_minutes(time.perf_counter() - t_start)}, remaining ~{fmt_minutes(eta)} ({basis})",
              flush=True)
        with tempfile.NamedTemporaryFile("w", suffix=".txt", prefix="asv-commit-", delete=False) as f:
            f.write(commit + "\n")
        asv_args = ["run", *conf_args, f"HASHFILE:{f.name}", "--machine", name, "--show-stderr",
                    "--launch-method", "spawn", "--record-samples"]
        if args.asv_quick:
            asv_args.append("--quick")
        for s in sel:
            asv_args += ["-b", s]
        asv_args += args.asv_arg or []
        t0 = time.perf_counter()
        try:
            rc = quick.run_asv(asv_args, root, env, keep_fds=(lock.fd,))
        finally:
            Path(f.name).unlink(missing_ok=True)
        dt = time.perf_counter() - t0
        done_s.append(dt)
        rc_all = rc_all or rc
        quick.append_run_record(results_dir, name, {
            "commit": commit, "dirty": False, "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "mode": ("full" if args.full else "quick") + " back-fill", "machine": name,
            "environment": "asv virtualenv", "synthetic": ck["synthetic"], "asv_rc": rc,
            "asv_seconds": round(dt, 1), "entries": len(todo) if todo is not None else None})
        print(f"[backfill] commit {commit[:8]} done in {fmt_minutes(dt)} (asv exit status {rc})", flush=True)
    print(f"[backfill] done in {fmt_minutes(time.perf_counter() - t_start)}; results in {results_dir / name} "
          "(funasr-nano report; asv publish)", flush=True)
    return 0 if rc_all == 0 else 1
