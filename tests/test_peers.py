"""tools/peers.py: the side-by-side of this project and the other runtimes, on the tiny synthetic model.

One real run (module fixture): the official funasr reference, this project fp32 and q4, and an
mlx-audio row pointed at an interpreter that does not exist (its reason must appear instead of
numbers). It checks the table's structure, the request order (warm-ups, then rounds A B C ... A B C),
the first-differing-token column against the raw token ids, and the reason row. The grouping and the
first-difference rule are checked on made-up inputs too, where differences are certain (the tiny
random model emits one token over and over, so its rows agree).
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from tests.support.optional import need

REPO = Path(__file__).resolve().parent.parent
TOOLS = REPO / "tools"

need("funasr")
need("torch")


def _peers():
    sys.path.insert(0, str(TOOLS))
    spec = importlib.util.spec_from_file_location("peers_tool", TOOLS / "peers.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


ROWS = ["funasr:fp32", "project:fp32", "project:q4", "mlx-audio:bf16"]
TOKENS, REPEATS = 4, 3
MISSING_PY = "/nonexistent/peer-python"


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_reference_ckpt):
    peers = _peers()
    out = tmp_path_factory.mktemp("peers")
    argv = ["--model", str(tiny_reference_ckpt), "--seconds", "2", "--tokens", str(TOKENS),
            "--repeats", str(REPEATS), "--memory-budget-gb", "100", "--json", str(out / "p.json"),
            "--md", str(out / "p.md"), "--log-dir", str(out / "logs"), "--python", f"mlx-audio={MISSING_PY}",
            "--parallel-load", "on"]  # the workers load at once (the GPU default); the order tests still hold
    for r in ROWS + ["funasr:tf32"]:  # tf32 exists only on CUDA: a reason row here
        argv += ["--rows", r]
    assert peers.main(argv) == 0
    doc = json.loads((out / "p.json").read_text(encoding="utf-8"))
    return peers, doc, (out / "p.md").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def tiny_reference_ckpt():
    sys.path.insert(0, str(REPO / "tests"))
    from tests.support.reference_harness import reference_checkpoint

    return reference_checkpoint("tiny", 0)


def test_rows_measured_and_reason_rows(run):
    _, doc, _ = run
    rows = {r["id"]: r for r in doc["rows"]}
    for rid in ("funasr:fp32", "project:fp32", "project:q4"):
        r = rows[rid]
        assert not r.get("reason"), r.get("reason")
        assert len(r["runs"]) == REPEATS and len(r["warmups"]) == 1
        assert all(len(x["token_ids"]) == TOKENS for x in r["runs"])
        for m in ("e2e_s", "rtfx", "encoder_ms", "prefill_ms", "ms_per_token", "tokens_per_s", "peak_mb"):
            s = r["stats"][m]
            assert s["n"] == REPEATS and s["min"] <= s["median"] <= s["max"] and s["min"] > 0, (rid, m, s)
        assert r["info"]["precision"]
    # the peer that cannot run: its exact reason, no numbers
    bad = rows["mlx-audio:bf16"]
    assert MISSING_PY in bad["reason"] and not bad.get("runs")
    assert rows["funasr:tf32"]["reason"].startswith("not on cpu:") and "CUDA" in rows["funasr:tf32"]["reason"]


def test_interleaved_order(run):
    _, doc, _ = run
    group = doc["header"]["groups"][0]
    assert group == ["funasr:fp32", "project:fp32", "project:q4", "mlx-audio:bf16"]
    ran = [g for g in group if g != "mlx-audio:bf16"]
    expect = [(None, r) for r in ran] + [(k, r) for k in range(REPEATS) for r in ran]
    assert [(o["round"], o["row"]) for o in doc["order"]] == expect


def test_first_diff_column_matches_token_ids(run):
    peers, doc, _ = run
    rows = {r["id"]: r for r in doc["rows"]}
    ref_ids = rows["funasr:fp32"]["runs"][0]["token_ids"]
    for rid in ("funasr:fp32", "project:fp32", "project:q4"):
        diffs = [peers.first_diff(x["token_ids"], ref_ids) for x in rows[rid]["runs"]]
        assert [x["derived"]["first_diff"] for x in rows[rid]["runs"]] == diffs
        assert rows[rid]["all_agree"] == all(d is None for d in diffs)
    assert rows["funasr:fp32"]["all_agree"]  # the reference against itself


def test_markdown_table(run):
    _, doc, md = run
    lines = md.splitlines()
    head = next(i for i, x in enumerate(lines) if x.startswith("| row |"))
    n_cols = lines[head].count("|") - 1
    assert n_cols == 12
    body = [x for x in lines[head + 2:] if x.startswith("| ")]
    assert len(body) == len(doc["rows"])
    for x in body:
        assert x.count("|") - 1 == n_cols, x
    text = "\n".join(lines[:head])
    assert "synthetic weights" in text and "MLX 0.32" in text and "torch" in text
    assert f"{TOKENS} new tokens pinned" in text and "groups: 1:" in text
    ref_line = next(x for x in body if x.startswith("| funasr fp32 (reference)"))
    assert f"= ({TOKENS}/{TOKENS})" in ref_line
    assert MISSING_PY in next(x for x in body if x.startswith("| mlx-audio bf16"))
    assert "not on cpu" in next(x for x in body if x.startswith("| funasr tf32"))


def test_first_diff_rule():
    peers = _peers()
    assert peers.first_diff([1, 2, 3], [1, 2, 3]) is None
    assert peers.first_diff([1, 9, 3], [1, 2, 3]) == 1
    assert peers.first_diff([5, 2, 3], [1, 2, 3]) == 0
    assert peers.first_diff([1, 2], [1, 2, 3]) == 2


def test_groups_keep_reference_and_budget():
    peers = _peers()
    from tools.peerkit.rows import rows_for

    rows, not_here = rows_for("cpu")
    assert [x[0] for x in not_here] == ["funasr:tf32"] and "CUDA" in not_here[0][2]
    gpu_rows, gpu_not = rows_for("cuda")
    assert {x[0] for x in gpu_not} == {"crispasr:f32", "crispasr:f16"}
    params = 800_000_000
    budget = 10.0
    groups = peers.make_groups(rows, params, budget)
    assert all(g[0].id == "funasr:fp32" for g in groups)
    flat = [r.id for g in groups for r in g[1:]]
    assert sorted(flat) == sorted(r.id for r in rows if r.id != "funasr:fp32")  # each row exactly once
    for g in groups:
        if len(g) > 2:  # a group of one row may exceed the budget on its own
            assert sum(peers.estimate_gb(r, params) for r in g) <= budget
    assert len(peers.make_groups(rows, params, 1000.0)) == 1
