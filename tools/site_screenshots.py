"""Screenshots of the report's charts and of the published asv site, in headless Chromium.

    python tools/site_screenshots.py [--results results] [--out docs/screenshots]

1. ``asv publish`` of ``--results`` (with this checkout's asv.conf.json, so the site is the
   self-contained one, funasr_nano/bench/publish.py) into a temporary folder;
2. serves it from 127.0.0.1 and shoots, with every other host blocked: ``site-index.png`` (the
   benchmark grid) and ``site-graph.png`` (``e2e.Transcribe.track_rtf``, all machines);
3. ``report-charts.png``: the PNG charts of ``<results>/report`` (``funasr-nano report``) on one
   page.
Needs playwright and a Chromium (``funasr_nano.bench.browser``).
"""

from __future__ import annotations

import argparse
import html
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from funasr_nano.bench import browser  # noqa: E402

GRAPH = "e2e.Transcribe.track_rtf"


def publish(results: Path, html_dir: Path) -> None:
    conf = json.loads("\n".join(line for line in (ROOT / "asv.conf.json").read_text().splitlines()
                                if not line.lstrip().startswith("//")))
    conf.update({"repo": str(ROOT), "results_dir": str(results.resolve()), "html_dir": str(html_dir),
                 "benchmark_dir": str(ROOT / "benchmarks")})
    cpath = html_dir.parent / "asv.conf.json"
    cpath.write_text(json.dumps(conf))
    subprocess.run([sys.executable, "-m", "asv", "publish", "--config", str(cpath)], cwd=ROOT, check=True)


def _shown(path: Path) -> str:
    path = path.resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def charts_page(report_dir: Path, dest: Path) -> Path:
    charts = sorted(report_dir.glob("*.png"), key=lambda p: (not p.name.startswith("machines"),
                                                             not p.name.startswith("history"), p.name))
    if not charts:
        raise SystemExit(f"no charts in {report_dir}: run `funasr-nano report` first")
    dest.mkdir(parents=True, exist_ok=True)
    for c in charts:
        shutil.copy(c, dest / c.name)
    figs = "\n".join(f'<figure><img src="{html.escape(c.name)}"><figcaption>{html.escape(c.name)}</figcaption></figure>'
                     for c in charts)
    (dest / "index.html").write_text(
        "<!doctype html><meta charset=utf-8><title>funasr-nano report charts</title><style>"
        "body{font-family:sans-serif;margin:16px;background:#fff} h1{font-size:18px}"
        "main{display:grid;grid-template-columns:1fr 1fr;gap:12px} figure{margin:0}"
        "img{width:100%;border:1px solid #ddd} figcaption{font-size:12px;color:#555}</style>"
        f"<h1>funasr-nano report — charts of {html.escape(_shown(report_dir))}</h1><main>{figs}</main>",
        encoding="utf-8")
    return dest


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", default=str(ROOT / "results"), help="asv results directory (default: results)")
    ap.add_argument("--report", default=None, help="report directory with the PNGs (default: <results>/report)")
    ap.add_argument("--out", default=str(ROOT / "docs" / "screenshots"), help="where the PNGs go")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = Path(args.results)
    with tempfile.TemporaryDirectory(prefix="site-shots-") as tmp:
        tmp = Path(tmp)
        publish(results, tmp / "html")
        charts_page(Path(args.report or results / "report"), tmp / "html" / "report-charts")
        with browser.chromium() as b, browser.serve(tmp / "html") as url:
            page, blocked = browser.offline_page(b, url, viewport={"width": 1280, "height": 800})
            page.goto(url, wait_until="networkidle")
            page.wait_for_selector("#summarygrid-display .benchmark-container")
            page.screenshot(path=str(out / "site-index.png"))
            page.goto(url + "#" + GRAPH, wait_until="networkidle")
            page.wait_for_function("$('#main-graph').data('plot') !== undefined")
            for button in ("legend", "log scale"):  # the legend of 30 series hides the plot; CPU vs GPU spans 100x
                page.get_by_text(button, exact=True).click()
                page.wait_for_timeout(300)
            page.screenshot(path=str(out / "site-graph.png"))
            page.set_viewport_size({"width": 1400, "height": 800})
            page.goto(url + "report-charts/index.html", wait_until="networkidle")
            page.screenshot(path=str(out / "report-charts.png"), full_page=True)
            if blocked:
                print(f"warning: requests to other hosts were blocked: {blocked}", file=sys.stderr)
    for name in ("site-index.png", "site-graph.png", "report-charts.png"):
        print(out / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
