"""A self-contained ``asv publish`` site: an asv plugin that serves the site's JavaScript and CSS
from the site itself instead of CDNs.

asv 0.6.6's ``www/index.html`` loads jQuery, flot (+ plugins), Bootstrap, blueimp-md5 and
stupidtable from code.jquery.com / cdnjs / jsdelivr, so on a machine without internet the site
only shows asv's "Can not determine continental origin of swallow" page. ``asv.conf.json`` names
this module in ``plugins``; asv imports it for every command, and during ``asv publish`` calls
`SelfContainedSite.publish` (an ``OutputPublisher``, asv's hook for pages) after it has copied its
template into ``html_dir``. That copies ``site_vendor/`` (pinned npm packages with their
licences, see ``site_vendor/README.md``) to ``html_dir/vendor/`` and points ``index.html`` at it.
So every way this project publishes (``asv publish``, ``funasr-nano bench``) writes an offline
site.

Each rewritten tag carries a fresh ``integrity`` hash of the local file, so a browser refuses a
vendored file that was changed after publishing. Tags whose URL ``CDN_FILES`` does not know (a
different asv version) are left alone with a warning.
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
import shutil
from pathlib import Path

from asv.publishing import OutputPublisher

VENDOR = Path(__file__).with_name("site_vendor")
SITE_DIR = "vendor"  # under html_dir

# URL in asv 0.6.6's www/index.html -> file under site_vendor/ (see site_vendor/README.md for
# which are byte-identical to the CDN file and which are the npm package's equivalent).
CDN_FILES = {
    "https://code.jquery.com/jquery-3.3.1.min.js": "jquery-3.3.1/jquery.min.js",
    "https://cdnjs.cloudflare.com/ajax/libs/flot/0.8.3/jquery.flot.min.js": "flot-0.8.3/jquery.flot.js",
    "https://cdnjs.cloudflare.com/ajax/libs/flot/0.8.3/jquery.flot.time.min.js": "flot-0.8.3/jquery.flot.time.js",
    "https://cdnjs.cloudflare.com/ajax/libs/flot/0.8.3/jquery.flot.selection.min.js":
        "flot-0.8.3/jquery.flot.selection.js",
    "https://cdnjs.cloudflare.com/ajax/libs/flot/0.8.3/jquery.flot.categories.min.js":
        "flot-0.8.3/jquery.flot.categories.js",
    "https://cdn.jsdelivr.net/npm/flot-orderbars@1.0.0/js/jquery.flot.orderBars.js":
        "flot-orderbars-1.0.0/jquery.flot.orderBars.js",
    "https://cdnjs.cloudflare.com/ajax/libs/stupidtable/1.0.1/stupidtable.min.js":
        "stupid-table-plugin-1.1.3/stupidtable.min.js",
    "https://cdnjs.cloudflare.com/ajax/libs/blueimp-md5/2.19.0/js/md5.min.js": "blueimp-md5-2.19.0/md5.min.js",
    "https://cdn.jsdelivr.net/npm/bootstrap@3.1.1/dist/js/bootstrap.min.js": "bootstrap-3.1.1/bootstrap.min.js",
    "https://cdn.jsdelivr.net/npm/bootstrap@3.1.1/dist/css/bootstrap.min.css": "bootstrap-3.1.1/bootstrap.min.css",
}

# An opening <script ... src="http..."> or <link ... href="http..."> tag.
_TAG = re.compile(r"<(script|link)\b[^>]*?\b(src|href)=\"(https?://[^\"]+)\"[^>]*>", re.I)


def sri(path: Path, alg: str = "sha384") -> str:
    """A Subresource Integrity value (``sha384-<base64>``) of a file."""
    return f"{alg}-" + base64.b64encode(hashlib.new(alg, path.read_bytes()).digest()).decode()


def external_urls(html: str) -> list[str]:
    """The http(s) URLs of the script and stylesheet tags of a page."""
    return [m.group(3) for m in _TAG.finditer(html)]


def rewrite_html(html: str, vendor_dir: Path, prefix: str = SITE_DIR) -> tuple[str, list[str]]:
    """``html`` with every tag of a ``CDN_FILES`` URL pointing at ``prefix/<file>`` instead;
    also the URLs it did not know (left as they are)."""
    unknown = []

    def local(m: re.Match) -> str:
        kind, url = m.group(1).lower(), m.group(3)
        rel = CDN_FILES.get(url)
        if rel is None:
            unknown.append(url)
            return m.group(0)
        integrity = sri(vendor_dir / rel)
        if kind == "script":
            # asv's onerror handler stays: a missing vendored file still shows asv's error page
            return f'<script src="{prefix}/{rel}" integrity="{integrity}" onerror="js_load_failure()">'
        return f'<link rel="stylesheet" href="{prefix}/{rel}" integrity="{integrity}">'

    return _TAG.sub(local, html), unknown


def make_self_contained(html_dir, vendor_dir: Path = VENDOR) -> list[str]:
    """Copy the vendored files into ``html_dir/vendor`` and rewrite ``html_dir``'s pages to use
    them. Returns the external URLs left in place (empty with asv 0.6.6)."""
    html_dir = Path(html_dir)
    dest = html_dir / SITE_DIR
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(vendor_dir, dest, ignore=shutil.ignore_patterns("README.md"))
    left = []
    for page in sorted(html_dir.glob("*.html")):
        text = page.read_text(encoding="utf-8")
        new, unknown = rewrite_html(text, dest)
        left += unknown
        if new != text:
            page.write_text(new, encoding="utf-8")
    return left


class SelfContainedSite(OutputPublisher):
    """Runs inside ``asv publish`` (any OutputPublisher subclass does); adds no page of its own."""

    name = "funasr_nano_self_contained"
    button_label = None
    description = "vendored JavaScript/CSS (funasr_nano.bench.publish)"
    order = math.inf

    @classmethod
    def publish(cls, conf, repo, benchmarks, graphs, revisions):
        from asv.console import log

        left = make_self_contained(conf.html_dir)
        for url in left:
            log.warning(f"funasr_nano.bench.publish: {url} is not vendored; the site needs internet for it")
        if not left:
            log.info(f"JavaScript and CSS served from {Path(conf.html_dir) / SITE_DIR} (no CDN)")
