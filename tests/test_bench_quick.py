"""The asv suite and the quick runner: `asv check`, the quick selection, a dry run, the regression
check plumbing. Runs the tiny synthetic model (FUNASR_NANO_BENCH_SYNTHETIC=tiny); no timing
thresholds anywhere."""

import importlib
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from funasr_nano.bench import quick
from tests.support.optional import need

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = Path(__file__).parent / "data" / "asv_results"

need("asv")


def _env(tmp_path, **extra):
    env = dict(os.environ)
    env.update({"HOME": str(tmp_path / "home"), "FUNASR_NANO_BENCH_SYNTHETIC": "tiny",
                "FUNASR_NANO_CACHE": str(tmp_path / "cache"), "MPLBACKEND": "Agg"})
    env.update(extra)
    (tmp_path / "home").mkdir(exist_ok=True)
    return env


def _suite():
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    mods = sorted(p.stem for p in (ROOT / "benchmarks").glob("*.py") if p.stem != "__init__")
    assert {"common", "e2e", "decode", "stages", "memory", "fidelity", "accuracy", "meta", "modes"} <= set(mods)
    return {m: importlib.import_module(f"benchmarks.{m}") for m in mods}


def _asv_names(mods):
    """Every parameterised name asv builds for the suite: ``module.Class.method(p1, p2)``."""
    names = []
    for mname, mod in mods.items():
        for cname, cls in vars(mod).items():
            if not isinstance(cls, type) or cls.__module__ != mod.__name__ or cname.startswith("_"):
                continue
            for meth in dir(cls):
                if not re.match(r"(time|track|peakmem|mem|timeraw)_", meth):
                    continue
                base = f"{mname}.{cname}.{meth}"
                params = getattr(cls, "params", [])
                if not params:
                    names.append(base)
                    continue
                if not isinstance(params[0], list):
                    params = [params]
                for combo in itertools.product(*params):
                    names.append(f"{base}({', '.join(repr(p) for p in combo)})")
    return names


def test_quick_selection_is_part_of_the_grid():
    names = _asv_names(_suite())
    for entry in quick.QUICK + quick.REGRESS_EXTRA:
        sel = re.compile(quick.selector(*entry))
        hits = [n for n in names if sel.search(n)]
        assert len(hits) == 1, (entry, hits)


def test_grid_is_fixed_and_decode_rule():
    c = _suite()["common"]
    assert c.TOKENS_PER_SECOND == 4
    assert [c.decode_tokens(s) for s in c.AUDIO_SECONDS] == [20, 40, 120]
    from funasr_nano.precision import plan as precision

    assert set(c.PRESETS) <= set(precision.PRESETS) | {"fp32"}
    # every model benchmark has an explicit version (history survives refactors)
    for mod in _suite().values():
        for cls in vars(mod).values():
            if isinstance(cls, type) and issubclass(cls, c.ModelBenchmark):
                assert cls.version == c.SUITE_VERSION


def test_asv_conf():
    conf = quick.read_conf(ROOT)
    assert conf["repo"] == "." and conf["branches"] == ["main"] and conf["results_dir"] == "results"
    assert conf["html_dir"].startswith(".asv/") and conf["env_dir"].startswith(".asv/")
    assert conf["asv_version"] == "0.6.6"
    assert any("build" in c for c in conf["build_command"])


def test_asv_check(tmp_path):
    """`asv check` imports and validates the suite in the current environment (the CI check)."""
    out = subprocess.run([sys.executable, "-m", "asv", "check", "-E", f"existing:{sys.executable}"],
                         cwd=ROOT, env=_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "No problems found" in out.stdout


def test_quick_dry_run(tmp_path):
    """`funasr-nano bench --dry-run` end to end on a slice of the quick selection (tiny model)."""
    sel = [quick.selector("meta.Context.track_synthetic_weights"),
           quick.selector("e2e.Transcribe.track_rtf", "fp32", 1, 5),
           quick.selector("decode.Decode.time_generate", "fp32", 1, 5),
           quick.selector("fidelity.Fidelity.track_top1_disagreement", "q4", 5)]
    results = tmp_path / "results"
    cmd = [sys.executable, "-m", "funasr_nano.bench.quick", "--dry-run", "--asv-quick", "--results-dir",
           str(results), "--machine", "pytest-dry-run"]
    for s in sel:
        cmd += ["--only", s]
    out = subprocess.run(cmd, cwd=ROOT, env=_env(tmp_path), capture_output=True, text=True, timeout=600)
    log = out.stdout + out.stderr
    assert out.returncode == 0, log
    for name in ("meta.Context.track_synthetic_weights", "e2e.Transcribe.track_rtf",
                 "decode.Decode.time_generate", "fidelity.Fidelity.track_top1_disagreement"):
        assert name in log
    assert "failed" not in log.lower()
    assert "--dry-run" in log and "--set-commit-hash" not in log
    # nothing stored but asv's machine.json and benchmarks.json; the machine file went to the temporary HOME
    stored = [p for p in results.rglob("*.json") if p.name not in ("machine.json", "benchmarks.json")]
    assert stored == []
    assert "pytest-dry-run" in json.loads((tmp_path / "home" / ".asv-machine.json").read_text())


def test_compare_helpers(tmp_path):
    ob = [p.parent.name for p in FIXTURE.glob("*/machine.json") if p.parent.name.endswith("-openblas")][0]
    base = quick.find_baseline(FIXTURE, ob, ROOT, None, ["decode.Decode.time_generate"])
    assert base.is_file()
    out = quick._relabel(base, "baseline", tmp_path)
    d = json.loads(out.read_text())
    assert d["commit_hash"] == "baseline" and out.name.startswith("baseline-")
    table = ("| Change   | Before [baseline]   | After [worktree]   |   Ratio | Benchmark (Parameter)   |\n"
             "|----------|---------------------|--------------------|---------|-------------------------|\n"
             "| +        | 1.00±0.01s          | 2.00±0.01s         |    2.00 | decode.Decode.time_generate('fp32', 1, 5) |\n"
             "|          | 1.00±0.01s          | 1.01±0.01s         |    1.01 | e2e.Transcribe.time_transcribe('fp32', 1, 5) |\n")
    assert len(quick.worsened_rows(table)) == 1
    noisy = ("Benchmarks that have stayed the same:\n\n"
             "| Change   | Before [baseline]   | After [worktree]   | Ratio   | Benchmark (Parameter)   |\n"
             "|----------|---------------------|--------------------|---------|-------------------------|\n"
             "|          | n/a                 | n/a                | n/a     | x('bf16', 1, 5)         |\n"
             "|          | 3.38G               | n/a                | n/a     | memory.y('fp32', 1, 5)  |\n\n"
             "Benchmarks that have got worse:\n\n" + table)
    tidy = quick.tidy_compare_output(noisy)
    assert "stayed the same" not in tidy and "n/a" not in tidy
    assert quick.worsened_rows(tidy) == quick.worsened_rows(table)


def test_compare_runs_asv_compare(tmp_path):
    """`funasr-nano bench compare` on the stored tiny-model results: it runs the working tree, puts the
    baseline beside it and prints asv's comparison table (the verdict itself is timing-dependent)."""
    ob = [p.parent.name for p in FIXTURE.glob("*/machine.json") if p.parent.name.endswith("-openblas")][0]
    res = tmp_path / "results"
    shutil.copytree(FIXTURE, res, ignore=shutil.ignore_patterns("*.py", "*.md"))
    cmd = [sys.executable, "-m", "funasr_nano.bench.quick", "compare", "--machine", ob, "--results-dir", str(res),
           "--scratch", str(tmp_path / "scratch"), "--factor", "1000",
           "--bench", quick.selector("stages.DecodeStep.time_decode_step", "fp32", 1, 5)]
    out = subprocess.run(cmd, cwd=ROOT, env=_env(tmp_path), capture_output=True, text=True, timeout=600)
    log = out.stdout + out.stderr
    assert out.returncode == 0, log  # factor 1000: nothing can count as a regression
    assert "Before [baseline]" in log and "After [worktree]" in log
    assert "stages.DecodeStep.time_decode_step('fp32', 1, 5)" in log


def test_calibration_ratio(tmp_path):
    cols = ["result", "params", "version", "started_at", "duration"]
    for label, v in (("baseline", 0.10), ("worktree", 0.15)):
        (tmp_path / f"{label}-env.json").write_text(json.dumps({
            "commit_hash": label, "env_name": "env", "result_columns": cols,
            "results": {quick.CALIBRATION[0]: [[v], [], "1", 0, 1.0]}}))
    assert abs(quick.calibration_ratio(tmp_path) - 1.5) < 1e-9
    (tmp_path / "worktree-env.json").unlink()
    assert quick.calibration_ratio(tmp_path) is None


def test_compare_uses_this_interpreter_not_the_baselines(tmp_path):
    """A baseline recorded with another interpreter (here one that would fail loudly) is compared
    with benchmarks run by this interpreter, and the output says the environments differ."""
    ob = [p.parent.name for p in FIXTURE.glob("*/machine.json") if p.parent.name.endswith("-openblas")][0]
    res = tmp_path / "results"
    shutil.copytree(FIXTURE, res, ignore=shutil.ignore_patterns("*.py", "*.md"))
    marker = tmp_path / "foreign-python-ran"
    foreign = tmp_path / "other-env" / "bin" / "python"
    foreign.parent.mkdir(parents=True)
    foreign.write_text(f"#!/bin/sh\ntouch {marker}\necho 'No module named mlx' >&2\nexit 1\n")
    foreign.chmod(0o755)
    for p in (res / ob).glob("*-existing-*.json"):
        d = json.loads(p.read_text())
        d["python"] = str(foreign)
        p.write_text(json.dumps(d))
    cmd = [sys.executable, "-m", "funasr_nano.bench.quick", "compare", "--machine", ob, "--results-dir", str(res),
           "--scratch", str(tmp_path / "scratch"), "--factor", "1000",
           "--bench", quick.selector("stages.DecodeStep.time_decode_step", "fp32", 1, 5)]
    out = subprocess.run(cmd, cwd=ROOT, env=_env(tmp_path), capture_output=True, text=True, timeout=600)
    log = out.stdout + out.stderr
    assert out.returncode == 0, log
    assert not marker.exists(), "the baseline's recorded interpreter was run"
    assert f"python {sys.executable}" in log
    assert "baseline was measured in another environment" in log and str(foreign) in log
    assert "stages.DecodeStep.time_decode_step('fp32', 1, 5)" in log
