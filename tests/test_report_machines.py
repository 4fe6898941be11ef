"""The machines chart and table (funasr_nano.bench.report.compare_machines) on synthetic asv results
directories: machines measured at different commits all appear, labelled with their commits, at
the current suite version, with a warning exactly when the calibration benchmark says the package
changed between those commits.

The result files are written here in asv 0.6.6's result format (version 2), with values chosen
per case; the format is the one tests/data/asv_results holds from real runs."""

import json
from pathlib import Path

import pytest

from funasr_nano.bench import report
from funasr_nano.bench.results import load_results
from tests.support.optional import need

COLUMNS = ["result", "params", "version", "started_at", "duration", "stats_ci_99_a", "stats_ci_99_b",
           "stats_q_25", "stats_q_75", "stats_number", "stats_repeat", "samples", "profile"]
GRID = [["'fp32'", "'q4'"], ["1"], ["5"]]  # preset x batch x seconds, as asv writes parameter values
BENCHMARKS = {
    report.B_RTF: {"name": report.B_RTF, "type": "track", "unit": "RTF (s/s)", "version": "1",
                   "params": GRID, "param_names": ["preset", "batch", "seconds"]},
    report.B_CALIB: {"name": report.B_CALIB, "type": "time", "unit": "seconds", "version": "1",
                     "params": [], "param_names": []},
    report.B_SYNTH: {"name": report.B_SYNTH, "type": "track", "unit": "0 real, 1 synthetic, 2 synthetic tiny",
                     "version": "1", "params": [], "param_names": []},
    "version": 2,
}
COMMITS = {c * 40: 1795650000000 + i * 3600_000 for i, c in enumerate("abcdef")}  # hash -> commit date


def _write(root: Path, machine: str, commit: str, rtf: dict, calibration: float | None, started: int,
           version: str = "1"):
    """One result file: RTF per preset (fp32, q4), the calibration time, synthetic weights."""
    mdir = root / machine
    mdir.mkdir(parents=True, exist_ok=True)
    (mdir / "machine.json").write_text(json.dumps({"machine": machine, "version": 1, "cpu": "test"}))

    def row(result, params):
        return [result, params, version, started, 1.0] + [None] * (len(COLUMNS) - 5)

    results = {report.B_RTF: row([rtf.get("fp32"), rtf.get("q4")], GRID),
               report.B_SYNTH: row([1.0], [])}
    if calibration is not None:
        results[report.B_CALIB] = row([calibration], [])
    d = {"commit_hash": commit, "env_name": "existing-py", "date": COMMITS[commit], "params": {"machine": machine},
         "python": "3.11", "requirements": {}, "env_vars": {}, "result_columns": COLUMNS, "results": results,
         "durations": {}, "version": 2}
    (mdir / f"{commit[:8]}-existing-py.json").write_text(json.dumps(d))
    (root / "benchmarks.json").write_text(json.dumps(BENCHMARKS))


A, B, C, D = (c * 40 for c in "abcd")


def test_every_machine_at_its_newest_commit(tmp_path):
    """Three machines, three commits, no commit shared by two machines: all three are compared (the
    old rule, the commit measured on most machines, showed one), each at its newest result."""
    _write(tmp_path, "cpu-box", A, {"fp32": 0.5, "q4": 2.0}, 0.02, started=1)
    _write(tmp_path, "cpu-box", B, {"fp32": 0.4, "q4": 1.8}, 0.02, started=5)  # newer: this one
    _write(tmp_path, "gpu-one", C, {"fp32": 0.03, "q4": 0.035}, 0.0007, started=3)
    _write(tmp_path, "gpu-two", D, {"fp32": 0.025, "q4": 0.03}, 0.0005, started=4)
    rs = load_results(tmp_path)
    cmp = report.compare_machines(rs)
    assert cmp.points == {"cpu-box": B, "gpu-one": C, "gpu-two": D}
    assert cmp.presets == ["fp32", "q4"] and cmp.seconds == 5
    assert cmp.values[("cpu-box", "fp32")] == 0.4 and cmp.values[("gpu-two", "q4")] == 0.03
    assert [cmp.label(m) for m in cmp.points] == ["cpu-box @ bbbbbbbb", "gpu-one @ cccccccc", "gpu-two @ dddddddd"]
    # no machine measured two of these commits: every pair is "unchecked", none is a warning
    assert sorted(n["level"] for n in cmp.notes) == ["unchecked"] * 3

    md = report.markdown_report(rs)
    table = md.split("## Machines compared", 1)[1].split("\n## ", 1)[0]
    for m, c in cmp.points.items():
        assert f"| {m} | `{c[:8]}` |" in table
    assert "| cpu-box | `bbbbbbbb` | 1970-01-01 | 0.4 | 1.8 | 20 |" in table
    assert "WARNING" not in table and table.count("Unchecked") == 3

    need("matplotlib")  # the chart
    out = tmp_path / "report"
    out.mkdir()
    path = report.machines_chart(rs, out, cmp=cmp)
    assert path.read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize("case", ["package-slower", "machine-slower", "same-commit"])
def test_package_change_warning(tmp_path, case):
    """cpu-box measured commits A and B; gpu-one only B... or A. The warning appears when cpu-box's
    RTF ratio between A and B differs from its calibration ratio by more than the factor."""
    if case == "package-slower":      # RTF x2, calibration unchanged: the package got slower
        a_rtf, b_rtf, a_cal, b_cal, gpu_commit = 0.4, 0.8, 0.020, 0.020, A
    elif case == "machine-slower":    # RTF x2 and calibration x2: the machine was busier, not the code
        a_rtf, b_rtf, a_cal, b_cal, gpu_commit = 0.4, 0.8, 0.020, 0.040, A
    else:                             # both machines at B: nothing to cross-check
        a_rtf, b_rtf, a_cal, b_cal, gpu_commit = 0.4, 0.8, 0.020, 0.020, B
    _write(tmp_path, "cpu-box", A, {"fp32": a_rtf, "q4": 5 * a_rtf}, a_cal, started=1)
    _write(tmp_path, "cpu-box", B, {"fp32": b_rtf, "q4": 5 * b_rtf}, b_cal, started=2)
    _write(tmp_path, "gpu-one", gpu_commit, {"fp32": 0.03, "q4": 0.04}, 0.0007, started=3)
    rs = load_results(tmp_path)
    cmp = report.compare_machines(rs)
    assert cmp.points == {"cpu-box": B, "gpu-one": gpu_commit}
    md = report.markdown_report(rs)
    section = md.split("## Machines compared", 1)[1].split("\n## ", 1)[0]
    if case == "package-slower":
        assert [n["level"] for n in cmp.notes] == ["warning"]
        assert "**WARNING: the package changed between `aaaaaaaa` (gpu-one) and `bbbbbbbb` (cpu-box)" in section
        assert "on cpu-box aaaaaaaa → bbbbbbbb: `fp32` x2.00, `q4` x2.00, calibration x1.00" in section
    elif case == "machine-slower":
        assert [n["level"] for n in cmp.notes] == ["checked"]
        assert "WARNING" not in section
        assert "Checked `aaaaaaaa` (gpu-one) and `bbbbbbbb` (cpu-box)" in section and "calibration x2.00" in section
    else:
        assert cmp.notes == [] and "WARNING" not in section and "Unchecked" not in section
    need("matplotlib")  # the chart
    out = tmp_path / "report"
    out.mkdir()
    assert report.machines_chart(rs, out, cmp=cmp).is_file()


def test_factor_is_the_threshold(tmp_path):
    """A package change of x1.05 after calibration is inside the default factor (1.1), x1.2 outside."""
    _write(tmp_path, "cpu-box", A, {"fp32": 1.0, "q4": 1.0}, 0.02, started=1)
    _write(tmp_path, "cpu-box", B, {"fp32": 1.05, "q4": 1.2}, 0.02, started=2)
    _write(tmp_path, "gpu-one", A, {"fp32": 0.03, "q4": 0.04}, 0.0007, started=3)
    rs = load_results(tmp_path)
    notes = report.compare_machines(rs).notes
    assert [n["level"] for n in notes] == ["warning"]
    rows = {r["preset"]: r for r in notes[0]["rows"]}
    assert rows["fp32"]["adjusted"] == pytest.approx(1.05) and rows["q4"]["adjusted"] == pytest.approx(1.2)
    assert [n["level"] for n in report.compare_machines(rs, factor=1.25).notes] == ["checked"]


def test_suite_version(tmp_path):
    """A machine whose newest result is of another suite version is compared at its newest result of
    the current version; one with none at the current version is listed as not compared."""
    _write(tmp_path, "cpu-box", A, {"fp32": 0.5, "q4": 2.0}, 0.02, started=1)
    _write(tmp_path, "cpu-box", B, {"fp32": 0.1, "q4": 0.2}, 0.02, started=9, version="2")
    _write(tmp_path, "gpu-one", C, {"fp32": 0.03, "q4": 0.04}, 0.0007, started=3)
    _write(tmp_path, "gpu-old", D, {"fp32": 0.03, "q4": 0.04}, 0.0007, started=4, version="0")
    rs = load_results(tmp_path)  # benchmarks.json says version "1"
    cmp = report.compare_machines(rs)
    assert cmp.version == "1"
    assert cmp.points == {"cpu-box": A, "gpu-one": C} and cmp.missing == ["gpu-old"]
    assert cmp.values[("cpu-box", "fp32")] == 0.5
    md = report.markdown_report(rs)
    assert "Not compared (no `e2e.Transcribe.track_rtf` result at suite version 1): gpu-old." in md


def test_project_results_show_every_machine():
    """The committed results/: every machine with an RTF result is in the comparison."""
    root = Path(__file__).resolve().parents[1] / "results"
    rs = load_results(root)
    with_rtf = {r.machine for r in rs.select(report.B_RTF)}
    cmp = report.compare_machines(rs)
    assert len(with_rtf) >= 3 and set(cmp.points) == with_rtf


def test_at_one_commit(tmp_path):
    """``--commit``: every machine at that commit; the others are listed as not compared."""
    _write(tmp_path, "cpu-box", A, {"fp32": 0.5, "q4": 2.0}, 0.02, started=1)
    _write(tmp_path, "cpu-box", B, {"fp32": 0.4, "q4": 1.8}, 0.02, started=5)
    _write(tmp_path, "gpu-one", A, {"fp32": 0.03, "q4": 0.04}, 0.0007, started=3)
    _write(tmp_path, "gpu-two", C, {"fp32": 0.03, "q4": 0.04}, 0.0007, started=4)
    rs = load_results(tmp_path)
    cmp = report.compare_machines(rs, commit="aaaa")
    assert cmp.points == {"cpu-box": A, "gpu-one": A} and cmp.missing == ["gpu-two"] and cmp.notes == []
    md = report.markdown_report(rs, commit="aaaa")
    assert "every machine at commit `aaaaaaaa`" in md
    assert "Not compared (no `e2e.Transcribe.track_rtf` result at commit aaaaaaaa): gpu-two." in md
