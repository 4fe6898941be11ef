"""Headless Chromium for looking at the published site and the report the way a user does: the
site test (tests/test_bench_site.py) and the screenshots (tools/site_screenshots.py).

Playwright (``pip install -e .[test]``) drives the *system* Chromium (Debian's ``chromium``
package; ``scripts/test.sh`` installs it as root) through ``executable_path``, so no browser build
is downloaded. `serve` serves a directory from 127.0.0.1 (asv's site fetches ``index.json`` with
XHR, which browsers refuse on ``file://``). Nothing here is imported by the package itself.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import shutil
import threading
from pathlib import Path

ENV_CHROMIUM = "FUNASR_NANO_CHROMIUM"
CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable",
              "/Applications/Chromium.app/Contents/MacOS/Chromium",
              "/Applications/Google Chrome.app/Contents/MacOS/Google Chrome")


def find_chromium() -> str | None:
    """``$FUNASR_NANO_CHROMIUM``, else the first Chromium / Chrome on PATH or in /Applications."""
    env = os.environ.get(ENV_CHROMIUM)
    if env:
        return env if Path(env).is_file() else None
    for c in CANDIDATES:
        path = shutil.which(c) if "/" not in c else (c if Path(c).is_file() else None)
        if path:
            return path
    return None


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the stdlib's name
        pass


@contextlib.contextmanager
def serve(directory):
    """Serve ``directory`` on 127.0.0.1 (a free port) in a thread; yields the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@contextlib.contextmanager
def chromium(executable: str | None = None):
    """A headless Chromium (Playwright ``Browser``); raises RuntimeError when there is none."""
    from playwright.sync_api import sync_playwright

    executable = executable or find_chromium()
    if executable is None:
        raise RuntimeError("no Chromium found: install Debian's `chromium` package or set $" + ENV_CHROMIUM)
    # --no-sandbox: Chromium's sandbox refuses to start as root (CI and containers run as root)
    args = ["--no-sandbox"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, headless=True, args=args)
        try:
            yield browser
        finally:
            browser.close()


def offline_page(browser, base_url: str, **context_args):
    """``(page, blocked)``: a page whose requests to anything but ``base_url`` are aborted and listed
    in ``blocked``, so the site must be self-contained even on a machine with internet."""
    page = browser.new_context(**context_args).new_page()
    blocked = []

    def route(r):
        if r.request.url.startswith((base_url, "data:")):
            r.continue_()
        else:
            blocked.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    return page, blocked
