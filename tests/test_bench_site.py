"""The published asv site is self-contained and works in a real browser.

asv 0.6.6's template loads its JavaScript and CSS from CDNs; `funasr_nano.bench.publish` (an asv
plugin named in asv.conf.json) vendors them at publish time. The browser test publishes this
project's results/ with the project's asv.conf.json, serves the site from 127.0.0.1, opens it in
headless Chromium with every request to another host aborted, and checks that the index lists the
suite's benchmarks without JavaScript errors and that a benchmark's graph page plots this
project's machines with the benchmark's unit.
"""

import base64
import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.optional import need

asv = need("asv")
from funasr_nano.bench import browser, publish  # noqa: E402
from funasr_nano.bench.results import load_results  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = Path(asv.__file__).parent / "www" / "index.html"
# CDN files that the npm registry serves byte for byte (their SRI hash in asv's template matches the
# vendored file); the others are the same release from npm in another form (site_vendor/README.md).
IDENTICAL = {"https://code.jquery.com/jquery-3.3.1.min.js",
             "https://cdn.jsdelivr.net/npm/flot-orderbars@1.0.0/js/jquery.flot.orderBars.js",
             "https://cdnjs.cloudflare.com/ajax/libs/blueimp-md5/2.19.0/js/md5.min.js",
             "https://cdn.jsdelivr.net/npm/bootstrap@3.1.1/dist/js/bootstrap.min.js",
             "https://cdn.jsdelivr.net/npm/bootstrap@3.1.1/dist/css/bootstrap.min.css"}


def test_every_cdn_file_of_the_template_is_vendored():
    html = TEMPLATE.read_text(encoding="utf-8")
    urls = publish.external_urls(html)
    assert len(urls) == 10 and set(urls) == set(publish.CDN_FILES)
    for url in urls:
        f = publish.VENDOR / publish.CDN_FILES[url]
        assert f.is_file() and f.stat().st_size > 1000, f
        assert any(p.name.startswith("LICENSE") for p in f.parent.iterdir()), f"no licence beside {f}"
    for url in IDENTICAL:
        m = re.search(re.escape(url) + r'" integrity="(sha\d+)-([^"]+)"', html)
        alg, want = m.groups()
        got = base64.b64encode(hashlib.new(alg, (publish.VENDOR / publish.CDN_FILES[url]).read_bytes()).digest())
        assert got.decode() == want, url


def test_rewrite_html():
    new, unknown = publish.rewrite_html(TEMPLATE.read_text(encoding="utf-8"), publish.VENDOR)
    assert unknown == [] and publish.external_urls(new) == []
    assert "https://" not in "".join(re.findall(r"<(?:script|link)\b[^>]*>", new))
    tags = re.findall(r'(?:src|href)="vendor/([^"]+)" integrity="([^"]+)"', new)
    assert len(tags) == 10
    for rel, integrity in tags:
        assert integrity == publish.sri(publish.VENDOR / rel)
    # a URL it does not know is left alone and reported
    html = '<script src="https://example.org/x.js"></script>'
    assert publish.rewrite_html(html, publish.VENDOR) == (html, ["https://example.org/x.js"])


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """This project's results/ published with its asv.conf.json (the plugin included)."""
    results = ROOT / "results"
    commits = {json.loads(f.read_text())["commit_hash"] for f in results.glob("*/*.json") if f.name != "machine.json"}
    missing = [c for c in commits
               if subprocess.run(["git", "cat-file", "-e", c + "^{commit}"], cwd=ROOT, capture_output=True).returncode]
    if missing:
        pytest.skip(f"this checkout lacks the commits of results/ (shallow clone?): {sorted(missing)[:3]}")
    html = tmp_path_factory.mktemp("site") / "html"
    p = subprocess.run([sys.executable, "-m", "asv", "publish", "--config", str(ROOT / "asv.conf.json"),
                        "-o", str(html)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "served from" in p.stdout and "not vendored" not in p.stdout + p.stderr
    return html


def test_published_site_is_self_contained(site):
    index = (site / "index.html").read_text(encoding="utf-8")
    assert publish.external_urls(index) == []
    for rel in publish.CDN_FILES.values():
        assert (site / "vendor" / rel).is_file()


@pytest.fixture(scope="module")
def chromium():
    exe = browser.find_chromium()
    if exe is None and os.environ.get("CI"):
        pytest.fail("no Chromium in CI: scripts/test.sh should have installed Debian's `chromium` (apt-get, as root)")
    if exe is None:
        pytest.skip("no Chromium on this machine: scripts/test.sh installs Debian's `chromium` when run as "
                    f"root; elsewhere install one or set ${browser.ENV_CHROMIUM}")
    need("playwright.sync_api")
    with browser.chromium(exe) as b:
        yield b


def test_site_in_chromium(site, chromium):
    index = json.loads((site / "index.json").read_text())
    benchmarks = index["benchmarks"]
    measured = [json.loads(f.read_text())["machine"] for f in (ROOT / "results").glob("*/machine.json")]
    unmeasured = {name for name in benchmarks if not list((site / "graphs").rglob(f"{name}.json"))}
    with browser.serve(site) as url:
        page, blocked = browser.offline_page(chromium, url, viewport={"width": 1280, "height": 900})
        errors, not_found = [], []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("response", lambda r: not_found.append(r.url) if r.status >= 400 else None)
        page.goto(url, wait_until="networkidle")
        page.wait_for_selector("#summarygrid-display .benchmark-container", timeout=20000)
        grid = page.inner_text("#summarygrid-display")
        assert "error.html" not in page.url and "continental origin" not in page.content()
        for name in benchmarks:  # "e2e.Transcribe.track_rtf" is listed as "Transcribe.track_rtf" under "e2e"
            module, rest = name.split(".", 1)
            assert module in grid and rest in grid, name

        bench = "e2e.Transcribe.track_rtf"
        page.goto(url + "#" + bench, wait_until="networkidle")
        page.wait_for_selector("#graph-display canvas", timeout=20000)
        page.wait_for_function("$('#main-graph').data('plot') !== undefined", timeout=20000)
        plot = page.evaluate("""() => { const p = $('#main-graph').data('plot');
            return {ylabel: p.getOptions().yaxes[0].axisLabel,
                    series: p.getData().map(s => ({label: s.label, values: s.data.map(d => d[1])}))}; }""")

        # the list and regressions pages use stupidtable (1.1.3 for asv's 1.0.1) and blueimp-md5
        page.goto(url + "#/summarylist", wait_until="networkidle")
        page.wait_for_selector("#summarylist-display table tbody tr", timeout=20000)
        page.click("#summarylist-display th:has-text('Value')")
        page.wait_for_timeout(200)
        keys = [float(v) for v in page.eval_on_selector_all(
            "#summarylist-display table tbody tr td[data-sort-value]:nth-child(2)",
            "tds => tds.map(td => td.getAttribute('data-sort-value'))")]
        assert len(keys) > 5 and keys in (sorted(keys), sorted(keys, reverse=True)), keys
        page.goto(url + "#/regressions", wait_until="networkidle")
        page.wait_for_selector("#regressions-body > *", timeout=20000)
        assert errors == [], errors
        assert blocked == [], f"the site tried to load from other hosts: {blocked}"
        # 404s only for the summary graphs of benchmarks never measured (asv asks for every benchmark's)
        assert all(re.search(r"/graphs/summary/([^/?]+)\.json", u) and re.search(r"/graphs/summary/([^/?]+)\.json",
                   u).group(1) in unmeasured for u in not_found), not_found
    assert benchmarks[bench]["unit"] == "RTF (s/s)" and plot["ylabel"] == "RTF (s/s)"
    # one series per machine and parameter set, with this project's numbers in them
    rs = load_results(ROOT / "results")
    for m in measured:
        series = [s for s in plot["series"] if f"machine-{m};" in s["label"] and "preset-fp32;" in s["label"]
                  and "batch-1;" in s["label"] and s["label"].endswith("seconds-5")]
        plotted = [v for s in series for v in s["values"] if v is not None]
        stored = [r.value for r in rs.select(bench, m, preset="fp32", batch=1, seconds=5)]
        assert stored and plotted, m
        assert any(abs(v - w) <= 1e-9 * abs(w) for v in plotted for w in stored), (m, plotted, stored)
