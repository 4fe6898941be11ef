"""Regenerate the stored asv results the report tests read (tests/test_bench_report.py).

    python tests/data/asv_results/make_fixture.py

Runs the quick selection of the suite (``funasr_nano.bench.quick.QUICK``) with the *tiny* synthetic
model (``FUNASR_NANO_BENCH_SYNTHETIC=tiny``: real code paths, toy sizes, seconds per benchmark) on
this machine, twice with OpenBLAS preloaded and once on MLX's bundled reference BLAS, so the fixture
holds two real machine entries written by ``funasr_nano.bench.machine`` (``...-cpu-openblas`` and
``...-cpu-reference``) and two commits on the first. The two commits are the labels ``HEAD~1`` and
``HEAD`` of the checkout: both runs use the installed package (asv ``-E existing``), so they only
give the history chart two points. The numbers are tiny-model numbers, meaningful for nothing but
the tests. Machine entries go to a temporary HOME, not to ~/.asv-machine.json.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]


def main() -> int:
    sys.path.insert(0, str(ROOT))
    from funasr_nano.bench import machine as m
    from funasr_nano.bench.quick import QUICK, bench_env, read_conf, selectors

    home = Path(tempfile.mkdtemp(prefix="asvfix-home-"))
    cache = os.environ.get("FUNASR_NANO_CACHE", str(Path.home() / ".cache" / "funasr_nano"))
    results = Path(tempfile.mkdtemp(prefix="asvfix-results-"))
    conf = read_conf(ROOT)
    conf.update({"repo": str(ROOT), "benchmark_dir": str(ROOT / "benchmarks"), "results_dir": str(results),
                 "html_dir": str(results / "html")})
    cpath = results / "asv.conf.json"
    cpath.write_text(json.dumps(conf))
    commits = [subprocess.check_output(["git", "rev-parse", r], cwd=ROOT, text=True).strip()
               for r in ("HEAD~1", "HEAD")]
    runs = [(True, commits[0]), (True, commits[1]), (False, commits[1])]
    for openblas, commit in runs:
        env, _ = bench_env(use_openblas=openblas, quick=True, root=ROOT,
                           extra={"HOME": str(home), "FUNASR_NANO_CACHE": cache,
                                  "FUNASR_NANO_BENCH_SYNTHETIC": "tiny"})
        if not openblas:
            env.pop("LD_PRELOAD", None)
        fp = json.loads(subprocess.check_output([sys.executable, "-m", "funasr_nano.bench.machine", "--json",
                                                 "--no-write"], env=env, text=True))
        m.write_machine_file(fp, home / ".asv-machine.json")
        args = [sys.executable, "-m", "asv", "run", "--config", str(cpath), "-E", f"existing:{sys.executable}",
                "--machine", fp["machine"], "--set-commit-hash", commit, "--record-samples", "--show-stderr"]
        for s in selectors(QUICK):
            args += ["-b", s]
        print(f"== {fp['machine']} @ {commit[:8]}", flush=True)
        subprocess.run(args, cwd=ROOT, env=env, check=False)
    dest = HERE
    for p in dest.iterdir():
        if p.is_dir():
            shutil.rmtree(p)
        elif p.name != Path(__file__).name and p.name != "README.md":
            p.unlink()
    for p in results.iterdir():
        if p.name in ("asv.conf.json", "html"):
            continue
        (shutil.copytree if p.is_dir() else shutil.copy)(p, dest / p.name)
    print(f"fixture written to {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
