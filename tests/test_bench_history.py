"""Nothing measured is lost, runs do not collide, and the history back-fill (funasr_nano.bench.history,
asv_safe, lock). Runs the tiny synthetic model (FUNASR_NANO_BENCH_SYNTHETIC=tiny); no timing thresholds."""

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from funasr_nano.bench import history, quick
from funasr_nano.bench.asv_safe import _atomic
from funasr_nano.bench.lock import BenchLock
from tests.support.optional import need

ROOT = Path(__file__).resolve().parents[1]

need("asv")

# Fast entries with the tiny model: each is one benchmark process of a few seconds.
ENTRIES = [
    ("meta.Context.track_synthetic_weights",),
    ("meta.Load.time_load", "fp32"),
    ("memory.Weights.track_weight_bytes", "fp32"),
    ("memory.Weights.track_weight_bytes", "q4"),
    ("stages.Frontend.time_frontend", "fp32", 1, 5),
    ("stages.Encoder.time_encoder", "fp32", 1, 5),
    ("stages.Adaptor.time_adaptor", "fp32", 1, 5),
    ("stages.Prefill.time_prefill", "fp32", 1, 5),
    ("stages.DecodeStep.time_decode_step", "fp32", 1, 5),
]


def _env(tmp_path, **extra):
    env = dict(os.environ)
    env.setdefault("PIP_CACHE_DIR", str(Path.home() / ".cache" / "pip"))  # HOME moves below
    env.update({"HOME": str(tmp_path / "home"), "FUNASR_NANO_BENCH_SYNTHETIC": "tiny",
                "FUNASR_NANO_CACHE": str(tmp_path / "cache"), "MPLBACKEND": "Agg"})
    env.update(extra)
    (tmp_path / "home").mkdir(exist_ok=True)
    return env


def _run_cmd(results, machine, entries=ENTRIES):
    cmd = [sys.executable, "-m", "funasr_nano.bench.quick", "run", "--results-dir", str(results), "--machine",
           machine, "--asv-quick", "--no-publish", "--no-report"]
    for e in entries:
        cmd += ["--only", quick.selector(*e)]
    return cmd


def _measured(results, machine):
    files = sorted((results / machine).glob("*-existing-*.json"))
    for p in files:
        json.loads(p.read_text())  # always a complete file, whenever the run was stopped
    return history.measured(files, history.load_benchmarks(results))


def _wait_for(proc, results, machine, more_than, timeout=300):
    t0 = time.time()
    while time.time() - t0 < timeout:
        have = _measured(results, machine) if (results / machine).is_dir() else {}
        if len(have) > more_than:
            return have
        assert proc.poll() is None, "the run ended before it could be interrupted"
        time.sleep(0.2)
    raise AssertionError("no new result within the timeout")


def test_atomic_json_write(tmp_path):
    from asv import util

    write = _atomic(util.write_json)
    write(str(tmp_path / "a" / "r.json"), {"x": 1}, api_version=2)
    assert json.loads((tmp_path / "a" / "r.json").read_text()) == {"x": 1, "version": 2}
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["r.json"]  # no temporary file left


def test_interrupted_run_keeps_results_and_resumes(tmp_path):
    """SIGTERM to the runner, then SIGKILL to every process of the run (a machine going away): what was
    measured stays on disk, each time the same command measures only what is missing."""
    res, machine, env = tmp_path / "results", "pytest-resume", _env(tmp_path)
    cmd = _run_cmd(res, machine)
    n_all = len(ENTRIES)  # one entry per selector (tests/test_bench_quick.py checks the selector rule)

    # 1. SIGTERM to the runner after the first measured entry
    p = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    first = _wait_for(p, res, machine, 0)
    tree = psutil.Process(p.pid).children(recursive=True)
    p.send_signal(signal.SIGTERM)
    log1, _ = p.communicate(timeout=120)
    assert p.returncode == 130, log1
    assert "interrupted (SIGTERM)" in log1 and "run the same command again" in log1
    gone, alive = psutil.wait_procs(tree, timeout=30)
    assert not alive, f"asv or a benchmark process outlived the runner: {alive}"
    kept1 = _measured(res, machine)
    assert first.items() <= kept1.items() and 0 < len(kept1) < n_all

    # 2. the same command resumes; then everything of the run is SIGKILLed at once
    p = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    _wait_for(p, res, machine, len(kept1))
    procs = [psutil.Process(p.pid)] + psutil.Process(p.pid).children(recursive=True)
    for q in procs:
        q.kill()
    psutil.wait_procs(procs, timeout=30)
    log2 = p.stdout.read()
    assert f"{len(kept1)} of the {n_all} selected entries are already measured" in log2, log2
    kept2 = _measured(res, machine)
    # kept values are unchanged (a re-measured timing would differ) and asv was asked only for the rest
    assert kept1.items() < kept2.items(), "entries measured before the kill were lost or re-measured"
    asked = [ln for ln in log2.splitlines() if ln.startswith("$ ") and " -b " in ln]
    assert len(asked) == 1
    argv = shlex.split(asked[0][2:])
    asked_for = {argv[i + 1] for i, a in enumerate(argv) if a == "-b"}
    assert asked_for == {quick.selector(*e) for e in ENTRIES} - {history.entry_selector(e) for e in kept1}
    BenchLock(res).acquire().release()  # the dead run left no lock behind

    # 3. the same command finishes the rest, keeping both earlier parts untouched
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    log3 = out.stdout + out.stderr
    assert out.returncode == 0, log3
    assert f"{len(kept2)} of the {n_all} selected entries are already measured" in log3
    final = _measured(res, machine)
    assert len(final) == n_all and kept2.items() <= final.items()
    # and once complete, nothing is measured again
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and f"all {n_all} selected entries are already measured" in out.stdout
    assert _measured(res, machine) == final


def test_second_run_refuses_while_one_holds_the_lock(tmp_path):
    res = tmp_path / "results"
    with BenchLock(res, "pytest holder"):
        out = subprocess.run(_run_cmd(res, "pytest-lock", ENTRIES[:1]), cwd=ROOT, env=_env(tmp_path),
                             capture_output=True, text=True, timeout=300)
    assert out.returncode == 5, out.stdout + out.stderr
    assert "another benchmark run holds" in out.stderr and "pytest holder" in out.stderr
    assert not (res / "pytest-lock").exists()


def test_lock_wait_queues(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from funasr_nano.bench.lock import BenchLock\n"
        f"l = BenchLock({str(tmp_path)!r}, 'holder').acquire(); print('held', flush=True); time.sleep(2)")],
        cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(RuntimeError, match="holder"):
        BenchLock(tmp_path).acquire()
    t0 = time.time()
    lock = BenchLock(tmp_path, "waiter").acquire(wait=True)  # queues until the holder exits
    assert holder.wait(timeout=30) == 0 and time.time() - t0 > 0.5
    lock.release()


# ----- history back-fill -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_repo(tmp_path_factory):
    """A git repository of this checkout's files with three commits (CI clones may be shallow:
    the back-fill test must not depend on this repository's history)."""
    repo = tmp_path_factory.mktemp("repo")
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split("\n")
    for f in files:
        if f and not f.startswith(("results/", "tests/data/")) and (ROOT / f).is_file():
            (repo / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, repo / f)
    g = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=repo, check=True)
    for i in range(3):
        with open(repo / "benchmarks" / "README.md", "a") as f:
            f.write(f"\n<!-- back-fill test commit {i} -->\n")
        subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
        subprocess.run([*g, "commit", "-q", "-m", f"commit {i}"], cwd=repo, check=True)
    return repo


def test_resolve_commits_and_shallow_clones(tiny_repo, tmp_path):
    revs = subprocess.run(["git", "rev-list", "--reverse", "HEAD"], cwd=tiny_repo, capture_output=True,
                          text=True).stdout.split()
    assert history.resolve_commits(tiny_repo, "HEAD~2..HEAD") == revs[1:]
    assert history.resolve_commits(tiny_repo, "HEAD~1") == [revs[1]]
    with pytest.raises(ValueError, match="unknown commit"):
        history.resolve_commits(tiny_repo, "no-such-branch")
    shallow = tmp_path / "shallow"
    subprocess.run(["git", "clone", "-q", "--depth", "2", f"file://{tiny_repo}", str(shallow)], check=True)
    with pytest.raises(ValueError, match="shallow.*fetch-depth: 0"):
        history.resolve_commits(shallow, "HEAD~2..HEAD")
    assert history.resolve_commits(shallow, "HEAD~1..HEAD") == [revs[2]]


def test_backfill_two_commits(tiny_repo, tmp_path):
    """`bench run --commits HEAD~2..HEAD` builds both commits into an asv virtualenv, measures them,
    and a second call skips both."""
    res, machine = tmp_path / "results", "pytest-backfill"
    entries = [("meta.Context.track_synthetic_weights",), ("memory.Weights.track_weight_bytes", "fp32")]
    cmd = _run_cmd(res, machine, entries) + ["--commits", "HEAD~2..HEAD"]
    env = _env(tmp_path)
    for var in ("PYTHONPATH", "ASV_PYTHONPATH"):
        env.pop(var, None)  # the runner imports the repo's own copy (cwd); asv builds each commit
    revs = subprocess.run(["git", "rev-list", "--reverse", "HEAD"], cwd=tiny_repo, capture_output=True,
                          text=True).stdout.split()[1:]
    # SIGTERM once the first commit has a measured entry: stopped cleanly, that entry kept
    p = subprocess.Popen(cmd, cwd=tiny_repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    t0 = time.time()
    while not history.measured(history.result_files(res, machine, revs[0]), {}):
        assert p.poll() is None and time.time() - t0 < 1200, p.stdout.read() if p.poll() is not None else "timeout"
        time.sleep(0.2)
    tree = psutil.Process(p.pid).children(recursive=True)
    p.send_signal(signal.SIGTERM)
    log0, _ = p.communicate(timeout=120)
    assert p.returncode == 130 and "[backfill] interrupted (SIGTERM)" in log0, log0[-4000:]
    assert not psutil.wait_procs(tree, timeout=30)[1], "asv or a benchmark process outlived the back-fill"
    assert history.measured(history.result_files(res, machine, revs[0]), {})

    out = subprocess.run(cmd, cwd=tiny_repo, env=env, capture_output=True, text=True, timeout=1200)
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-6000:]
    assert "commit 1/2" in log and "commit 2/2" in log and "remaining ~" in log
    meta = history.load_benchmarks(res)
    want = set(history.grid_entries(meta, [quick.selector(*e) for e in entries]))
    assert len(want) == 2
    for c in revs:
        files = history.result_files(res, machine, c)
        assert len(files) == 1 and json.loads(files[0].read_text())["env_name"].startswith("virtualenv-")
        assert json.loads(files[0].read_text())["commit_hash"] == c
        got = history.measured(files, meta)
        assert set(got) == want, (c, got)
    runs = [json.loads(x) for x in (res / machine / "runs.jsonl").read_text().splitlines()]
    # The interrupted attempt recorded nothing, unless commit 1's second entry finished before the
    # signal landed: then the resumed run skips commit 1 and records only commit 2.
    assert [r["commit"] for r in runs] in (revs, revs[1:]), runs
    assert all(r["mode"] == "quick back-fill" for r in runs), runs

    out = subprocess.run(cmd, cwd=tiny_repo, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("already measured, skipped") == 2 and "$ " not in out.stdout
