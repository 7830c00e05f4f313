"""The course's website (``make site``) in a real browser: Debian's headless Chromium on a loopback server.

Builds the site with the Makefile's command unless build/site/ is newer than every input (README, notebooks,
docs/, lecturelib), serves it on 127.0.0.1 and opens the index and every lesson page (one per notebooks/*.ipynb)
and the API reference. On each page: every <img> loaded (none broken), no console error or page error, no request
to anything but the loopback server (all others are aborted and reported), every formula typeset by MathJax
(no MathJax error); every internal link, fragment included, points to a page and an id that exist. The landing
page is the README and its navigation lists the lessons in order; a cell tagged ``widget`` shows its stored picture
and the note that the live widget runs in JupyterLab. Needs /usr/bin/chromium; never downloads a browser.
"""
from __future__ import annotations

import functools
import html
import json
import os
import re
import shlex
import subprocess
import sys
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urldefrag, urljoin, urlparse

import pytest
from test_browser import CHROMIUM, CHROMIUM_ARGS, _require_chromium

REPO = Path(__file__).resolve().parents[1]
SITE = REPO / "build" / "site"
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
INPUTS = [REPO / "README.md", *NOTEBOOKS, *(REPO / "docs").glob("*.*"), *(REPO / "lecturelib").rglob("*.py")]

pytestmark = pytest.mark.browser

# every <img> and whether it loaded; every link; every id; Sphinx's formulas and those MathJax typeset
PAGE_JS = """() => ({
  images: [...document.images].map(i => ({src: i.currentSrc || i.src, ok: i.complete && i.naturalWidth > 0})),
  links: [...document.querySelectorAll('a[href]')].map(a => a.href),
  ids: [...document.querySelectorAll('[id]')].map(e => e.id),
  math: document.querySelectorAll('.math.notranslate').length,
  typeset: [...document.querySelectorAll('.math.notranslate')].filter(e => e.querySelector('.MathJax')).length,
  mathErrors: document.querySelectorAll('.MathJax_Error, .mjx-merror, merror').length,
  title: document.title,
})"""
MATHJAX_DONE_JS = """() => new Promise(done => {
  if (!document.querySelector('.math.notranslate')) return done(true);
  const wait = () => window.MathJax && MathJax.Hub ? MathJax.Hub.Queue(() => done(true)) : setTimeout(wait, 50);
  wait(); })"""


def site_command() -> list[str]:
    """The site's sphinx-build command of the Makefile (SITE_BUILD), with this interpreter."""
    text = (REPO / "Makefile").read_text().replace("\\\n", " ")
    match = re.search(r"^SITE_BUILD\s*:=\s*(.+)$", text, re.MULTILINE)
    assert match, "the Makefile defines no SITE_BUILD"
    return [sys.executable, *shlex.split(match.group(1).replace("$(SITE)", "build/site"))]


def build_site() -> float:
    """Build the site unless the existing build is newer than every input; returns the build's seconds (0 if reused)."""
    index = SITE / "index.html"
    if index.exists() and index.stat().st_mtime > max(p.stat().st_mtime for p in INPUTS):
        return 0.0
    start = time.monotonic()
    # a dead proxy for every protocol: a build step that tried to download something would fail (-W)
    dead = "http://127.0.0.1:9"
    env = dict(os.environ, PYTHONPATH=str(REPO), HTTP_PROXY=dead, HTTPS_PROXY=dead, ALL_PROXY=dead, NO_PROXY="",
               http_proxy=dead, https_proxy=dead, all_proxy=dead, no_proxy="")
    proc = subprocess.run(site_command(), cwd=REPO, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, f"the site build failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}"
    return time.monotonic() - start


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def site():
    seconds = build_site()
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(SITE)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", seconds
    finally:
        server.shutdown()
        server.server_close()


def lesson_pages() -> list[str]:
    return [f"notebooks/{p.stem}.html" for p in NOTEBOOKS]


def widget_cells(path: Path) -> int:
    nb = json.loads(path.read_text())
    return sum("widget" in c.get("metadata", {}).get("tags", []) for c in nb["cells"])


def ids_of(url: str, seen: dict[str, set[str]]) -> set[str] | None:
    """The ids of the page at ``url`` (from a visited page, or read from the build); None if no such file."""
    if url in seen:
        return seen[url]
    path = SITE / unquote(urlparse(url).path).lstrip("/")
    if path.is_dir():
        path = path / "index.html"
    if not path.is_file():
        return None
    text = path.read_text(errors="replace") if path.suffix == ".html" else ""
    seen[url] = {html.unescape(i) for i in re.findall(r'\bid="([^"]+)"', text)}
    return seen[url]


def test_site_pages_in_chromium(site):
    _require_chromium()
    from playwright.sync_api import sync_playwright

    base, build_seconds = site
    started = time.monotonic()
    pages = ["index.html", *lesson_pages(), "docs/api.html"]
    missing = [p for p in pages if not (SITE / p).is_file()]
    assert not missing, f"pages missing from the site: {missing}"
    leaving, errors, seen, problems = [], [], {}, []
    typeset_pages = 0
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(30_000)

            def route(r):
                if r.request.url.startswith((base, "data:", "blob:")):
                    r.continue_()
                else:
                    leaving.append(r.request.url)
                    r.abort()

            page.route("**/*", route)
            page.on("console", lambda m: errors.append(f"{page.url}: console {m.type}: {m.text}")
                    if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(f"{page.url}: page error: {e}"))
            for name in pages:
                url = urljoin(base, name)
                response = page.goto(url, wait_until="load")
                assert response is not None and response.ok, f"{name}: HTTP {response and response.status}"
                page.evaluate(MATHJAX_DONE_JS)
                info = page.evaluate(PAGE_JS)
                seen[url] = set(info["ids"])
                broken = [i["src"] for i in info["images"] if not i["ok"]]
                if broken:
                    problems.append(f"{name}: broken images {broken}")
                if info["math"]:
                    typeset_pages += 1
                    if info["typeset"] < info["math"] or info["mathErrors"]:
                        problems.append(f"{name}: {info['math']} formulas, {info['typeset']} typeset, "
                                        f"{info['mathErrors']} MathJax errors")
                for link in info["links"]:
                    target, fragment = urldefrag(link)
                    if not target.startswith(base):
                        continue
                    ids = ids_of(target, seen)
                    if ids is None:
                        problems.append(f"{name}: link to a missing page {link}")
                    elif fragment and unquote(fragment) not in ids:
                        problems.append(f"{name}: link to a missing id {link}")
                if name == "index.html":
                    assert "Segmentation, one idea per notebook" in page.locator("main h1").first.inner_text()
                    nav = [urlparse(h).path.rsplit("/", 1)[-1] for h in page.eval_on_selector_all(
                        "nav.bd-links a.reference.internal", "els => els.map(e => e.href)")]
                    lessons = [n for n in nav if n.endswith(".html") and n[:2].isdigit()]
                    assert lessons == [Path(p).name for p in lesson_pages()], f"navigation lists {nav}"
                stem = Path(name).stem
                nb = REPO / "notebooks" / f"{stem}.ipynb"
                if nb.exists() and widget_cells(nb):
                    cells = page.locator(".cell.tag_widget")
                    assert cells.count() == widget_cells(nb), f"{name}: widget cells on the page"
                    for k in range(cells.count()):
                        cell = cells.nth(k)
                        assert cell.locator(".cell_output img").count() >= 1, f"{name}: widget cell without a picture"
                        note = cell.locator("xpath=following-sibling::*[1]")
                        assert "live widget runs in JupyterLab" in note.inner_text(), f"{name}: no widget note"
        finally:
            browser.close()
    assert typeset_pages >= 1, "no page has a formula: the math check would not test anything"
    assert not leaving, f"requests that would leave the machine: {sorted(set(leaving))[:10]}"
    assert not errors, "\n".join(errors[:20])
    assert not problems, "\n".join(problems[:40])
    seconds = time.monotonic() - started
    assert seconds < 60, f"the browser checks took {seconds:.0f} s (budget 60 s; the build took {build_seconds:.0f} s)"


def test_every_notebook_is_a_page_of_the_site(site):
    """Also without a browser: one page per notebook, and no page of the site refers to an address off this
    machine in a script, stylesheet, image or frame."""
    for name in ["index.html", *lesson_pages()]:
        text = (SITE / name).read_text()
        external = re.findall(r'<(?:script|link|img|iframe|source)\b[^>]*\b(?:src|href)="((?:https?:)?//[^"]+)"', text)
        assert not external, f"{name} loads {external}"
