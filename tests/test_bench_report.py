"""Result-to-table/chart code (funasr_nano.bench.results / report) on stored asv result files.

The fixture (tests/data/asv_results, made by make_fixture.py there) holds real asv 0.6.6 result
files of the quick selection run with the tiny synthetic model on two machine entries
(OpenBLAS / reference BLAS) and two commits.
"""

import json
import math
import shutil
from pathlib import Path

import pytest

from funasr_nano.bench import report
from funasr_nano.bench.results import load_results
from tests.support.optional import need, requires

DATA = Path(__file__).parent / "data" / "asv_results"
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def rs():
    return load_results(DATA)


def _machines(rs):
    ms = rs.machine_names()
    assert len(ms) >= 2, ms
    return ms


def test_load_results(rs):
    ms = _machines(rs)
    assert any(m.endswith("-openblas") for m in ms) and any(m.endswith("-reference") for m in ms)
    ok = rs.ok()
    assert len(ok) > 20
    r = rs.select(report.B_RTF, preset="fp32", batch=1, seconds=5)[0]
    assert isinstance(r.params["preset"], str) and isinstance(r.params["batch"], int)
    assert r.unit == "RTF (s/s)" and r.type == "track" and r.value > 0
    t = rs.select("stages.Encoder.time_encoder", preset="fp32", batch=1, seconds=5)[0]
    assert t.type == "time" and t.samples and len(t.samples) >= 1
    # skipped / unselected combinations are NaN, not values
    assert not rs.select(report.B_RTF, preset="bf16")


def test_commits_and_synthetic(rs):
    ob = [m for m in rs.machine_names() if m.endswith("-openblas")][0]
    commits = rs.commits(ob)
    assert len(commits) == 2
    latest = rs.latest_commit(ob)
    assert latest in [c for c, _ in commits]
    assert rs.synthetic(ob, latest) is True
    assert rs.weights_kind(ob, latest) == "synthetic-tiny"  # the fixture ran the tiny test model
    ref = [m for m in rs.machine_names() if m.endswith("-reference")][0]
    assert rs.value(report.B_REFBLAS, ref, rs.latest_commit(ref)) == 1.0
    assert rs.value(report.B_REFBLAS, ob, latest) == 0.0


def test_preset_rows_derived_values(rs):
    ob = [m for m in rs.machine_names() if m.endswith("-openblas")][0]
    c = rs.latest_commit(ob)
    rows = {r["preset"]: r for r in report.preset_rows(rs, ob, c, 5)}
    assert {"fp32", "q8", "q4"} <= set(rows)
    fp = rows["fp32"]
    assert math.isclose(fp["rtfx"], 1 / fp["rtf"])
    assert math.isclose(fp["tokens_per_s"], 1000 / fp["ms_per_token"])
    assert fp["peak_bytes"] > 0 and fp["weight_bytes"] > rows["q4"]["weight_bytes"]
    assert rows["q4"]["top1_disagreement"] is not None and rows["q4"]["mean_kl"] is not None
    assert report.pick_seconds(rs, ob, c) == 5


def test_markdown_table(rs):
    md = report.markdown_report(rs)
    assert "SYNTHETIC TINY TEST MODEL" in md
    for m in rs.machine_names():
        assert f"## {m}" in md
    assert "| `fp32` |" in md and "| `q4` |" in md
    assert "Per-stage time" in md and "decode step" in md
    assert "RTF b=4" in md  # batch table
    assert "reference BLAS" in md  # the reference-BLAS machine is flagged
    header = [l for l in md.splitlines() if l.startswith("| Preset | RTF |")][0]
    assert header.count("|") - 1 == len(header.split("|")) - 2


@requires("matplotlib")
def test_build_report_writes_charts(tmp_path, rs):
    rep = report.build_report(DATA, tmp_path)
    names = sorted(Path(p).name for p in rep["charts"])
    assert "machines.png" in names
    assert any(n.startswith("tradeoff-") for n in names)
    assert any(n.startswith("history-") for n in names)
    assert len([n for n in names if n.startswith("tradeoff-")]) == len(rs.machine_names())
    for p in rep["charts"]:
        data = Path(p).read_bytes()
        assert data.startswith(PNG) and len(data) > 5000
    table = (tmp_path / "BENCHMARKS.md").read_text()
    assert table == rep["markdown"]
    assert "![machines](machines.png)" in table


def test_real_weights_are_not_labelled_synthetic(tmp_path):
    """Flip the synthetic flag in a copy: the banner disappears, the footer says real checkpoint."""
    dst = tmp_path / "res"
    shutil.copytree(DATA, dst, ignore=shutil.ignore_patterns("*.py"))
    for f in dst.glob("*/*.json"):
        if f.name == "machine.json":
            continue
        d = json.loads(f.read_text())
        if report.B_SYNTH in d["results"]:
            d["results"][report.B_SYNTH][0] = [0.0]
            f.write_text(json.dumps(d))
    rs = load_results(dst)
    md = report.markdown_report(rs)
    assert "SYNTHETIC" not in md
    assert "Weights: real checkpoint" in md
    for f in dst.glob("*/*.json"):  # value 1: the synthetic checkpoint with the released shapes
        if f.name != "machine.json":
            d = json.loads(f.read_text())
            if report.B_SYNTH in d["results"]:
                d["results"][report.B_SYNTH][0] = [1.0]
                f.write_text(json.dumps(d))
    md = report.markdown_report(load_results(dst))
    assert "SYNTHETIC WEIGHTS (seeded random, released shapes)" in md and "TINY" not in md


def test_history_params_and_cli(tmp_path, capsys):
    assert report.parse_params("preset=q4,batch=1,seconds=5") == {"preset": "q4", "batch": 1, "seconds": 5}
    assert report.main(["--results", str(tmp_path / "missing")]) == 2
    need("matplotlib")  # the charts
    rc = report.main(["--results", str(DATA), "--out", str(tmp_path), "--history", "decode.Decode.track_ms_per_token",
                      "--history-params", "preset=q4,batch=1,seconds=5", "--quality", "kl"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "| Preset |" in out and "chart:" in out
    assert (tmp_path / "history-decode.Decode.track_ms_per_token.png").is_file()
