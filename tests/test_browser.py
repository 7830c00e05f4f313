"""The transposed-convolution explorer in a real browser: JupyterLab on loopback, Debian's headless Chromium.

Starts JupyterLab with the offline flags of ``make lab`` (read from the Makefile; temporary config, settings and
workspace folders; a random token) on a free port and opens a copy of lesson 05. Before anything runs, the explorer
cell shows its static picture and the notebook is not marked modified. Then it runs the explorer cell on its own
(it imports what it needs) and drives the widget with the keyboard and the mouse, checking on the page: the picture
at its natural width, steps counted from 1, the picture of each step, End on the step slider after a view switch,
the conv ↔ transpose view, the matrix view within one screen, an invalid setting (the greyed picture stays, the
offending value is marked), and the note after a kernel restart. No request may leave the machine. Screenshots of
a failure go to test-artifacts/. Needs /usr/bin/chromium (``apt-get install chromium``); never downloads a browser.
"""
from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
REPO = Path(__file__).resolve().parents[1]
LESSON = REPO / "notebooks" / "05_transposed_convolution.ipynb"
ARTIFACTS = REPO / "test-artifacts"
WIDGET_CELL = "explorer = transposed_conv_explorer("
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
SCREEN = 900          # px: the explorer must fit on one laptop screen
REDRAW_LIMIT_MS = 2000

pytestmark = pytest.mark.browser

# the time from a key press to the new picture, installed on the page
TIMING_JS = """() => { const img = document.querySelector('.tc-explorer .tc-picture');
  window.__keyAt = null; window.__srcAt = null;
  document.addEventListener('keydown', () => { window.__keyAt = performance.now(); window.__srcAt = null; }, true);
  new MutationObserver(() => { window.__srcAt = performance.now(); })
    .observe(img, {attributes: true, attributeFilter: ['src']}); }"""
# the bytes of the picture on the page, base64
PICTURE_JS = """async (img) => { const bytes = new Uint8Array(await (await fetch(img.src)).arrayBuffer());
  let s = ''; for (let i = 0; i < bytes.length; i += 8192) s += String.fromCharCode(...bytes.subarray(i, i + 8192));
  return btoa(s); }"""


def _require_chromium() -> None:
    if Path(CHROMIUM).exists():
        return
    message = f"{CHROMIUM} not found: install Debian's browser with `apt-get install chromium`"
    if os.environ.get("LECTURELIB_REQUIRE_BROWSER") == "1":
        pytest.fail(message + " (LECTURELIB_REQUIRE_BROWSER=1 forbids skipping this test)")
    pytest.skip(message)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_server(url: str, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"JupyterLab exited early with code {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"JupyterLab did not answer {url} within {timeout:.0f} s")


def lab_offline_flags() -> list[str]:
    """The LAB_OFFLINE flags of the Makefile (the ones `make lab` passes), with $(CURDIR) made absolute."""
    text = (REPO / "Makefile").read_text().replace("\\\n", " ")
    match = re.search(r"^LAB_OFFLINE\s*:=\s*(.+)$", text, re.MULTILINE)
    assert match, "the Makefile defines no LAB_OFFLINE"
    return match.group(1).replace("$(CURDIR)", str(REPO)).split()


def _get_json(url: str):
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.load(r)


def _write_environment(tmp: Path, lesson: Path = LESSON) -> dict:
    """Folders of a throw-away JupyterLab (config, empty user settings, workspaces) and a copy of the lesson."""
    root, config, settings, workspaces, runtime = (tmp / d for d in ("root", "config", "settings", "workspaces",
                                                                      "runtime"))
    for d in (root, config, settings, workspaces, runtime):
        d.mkdir(parents=True)
    shutil.copy(lesson, root / "lesson.ipynb")
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(config), JUPYTERLAB_SETTINGS_DIR=str(settings),
               JUPYTERLAB_WORKSPACES_DIR=str(workspaces), JUPYTER_RUNTIME_DIR=str(runtime),
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
               LECTURELIB_PROFILE="quick")
    return {"root": root, "env": env}


def _check_offline_server(base: str, token: str) -> None:
    """The server fetches no news and checks for no update; the browser settings default to both off."""
    with urllib.request.urlopen(f"{base}/lab?token={token}", timeout=30) as r:
        page = r.read().decode()
    config = json.loads(re.search(r'<script id="jupyter-config-data" type="application/json">(.*?)</script>',
                                  page, re.DOTALL).group(1))
    assert config["news"] == {"disabled": True}, config.get("news")
    assert _get_json(f"{base}/lab/api/update?token={token}")["notification"] is None
    settings = _get_json(f"{base}/lab/api/settings/@jupyterlab/apputils-extension:notification?token={token}")
    defaults = {name: p.get("default") for name, p in settings["schema"]["properties"].items()}
    assert defaults["fetchNews"] == "false" and defaults["checkForUpdates"] is False, defaults
    assert not settings["raw"].strip("{} \n"), "the test's user settings should be empty"


def _stop_server(base: str, token: str, proc: subprocess.Popen) -> None:
    """Ask the server to shut down (it stops its kernels first); a signal if it does not answer."""
    request = urllib.request.Request(f"{base}/api/shutdown", method="POST", headers={"Authorization": f"token {token}"})
    try:
        urllib.request.urlopen(request, timeout=10).close()
    except OSError:
        proc.terminate()


def test_explorer_widget_in_jupyterlab(tmp_path):
    _require_chromium()
    from playwright.sync_api import expect, sync_playwright

    from lecturelib import frame_pictures as fp
    from lecturelib import frames as fr

    started = time.monotonic()
    where = _write_environment(tmp_path)
    port, token = _free_port(), secrets.token_hex(16)
    base = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
           f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={where['root']}",
           "--ServerApp.port_retries=0", *lab_offline_flags()]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")
    log = open(tmp_path / "jupyter.log", "wb")
    proc = subprocess.Popen(cmd, env=where["env"], stdout=log, stderr=subprocess.STDOUT, cwd=where["root"])
    browser = page = None
    pw = sync_playwright().start()
    try:
        _wait_for_server(f"{base}/api/status?token={token}", proc)
        _check_offline_server(base, token)
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(60_000)
        leaving = []
        page.on("request", lambda r: None if r.url.startswith((base, "data:", "blob:")) else leaving.append(r.url))
        page.goto(f"{base}/lab/tree/lesson.ipynb?token={token}")
        expect(page.get_by_text("Python 3 (ipykernel) | Idle")).to_be_visible(timeout=60_000)

        # before the cell runs: its committed output is a static picture, and opening changed nothing
        cell = page.locator(".jp-CodeCell").filter(has_text=WIDGET_CELL)
        expect(cell).to_have_count(1)
        cell.scroll_into_view_if_needed()
        static = cell.locator(".jp-OutputArea-output img")
        expect(static).to_be_visible()
        assert "VBox(" not in cell.locator(".jp-OutputArea").inner_text(), "the committed output is raw widget text"
        expect(page.locator(".lm-TabBar-tab.jp-mod-dirty")).to_have_count(0)

        # run the explorer cell alone, in a fresh kernel
        cell.locator(".cm-content").click()
        page.keyboard.press("Shift+Enter")
        root = page.locator(".tc-explorer")
        size, picture, message = root.locator(".tc-size"), root.locator(".tc-picture"), root.locator(".tc-message")
        expect(size).to_contain_text("output size: 4\u00d74", timeout=60_000)
        expect(picture).to_be_visible()
        expect(picture).to_have_attribute("src", re.compile("^blob:"))
        root.scroll_into_view_if_needed()

        def shown() -> bytes:
            return base64.b64decode(picture.evaluate(PICTURE_JS))

        def press(handle: str, key: str, times: int = 1) -> None:
            root.locator(f"{handle} .noUi-handle").focus()
            for _ in range(times):
                page.keyboard.press(key)

        natural, width = picture.evaluate("e => [e.naturalWidth, e.getBoundingClientRect().width]")
        assert natural == 900 and abs(width - natural) <= 2, f"picture {natural} px shown at {width:.0f} px"
        label = root.locator(".widget-label", has_text=re.compile("^view$")).bounding_box()
        first_view = root.locator(".tc-view button").first.bounding_box()
        assert abs(label["y"] + label["height"] / 2 - first_view["y"] - first_view["height"] / 2) <= 6, \
            "the 'view' label is not on the line of its buttons"
        assert root.locator(".tc-play").get_attribute("title"), "the Play buttons have no tooltip"

        # steps are counted from 1; two key presses -> step 3, whose picture is frame 2 (0-based) of the scatter view
        slide4 = fr.Settings(2, 3, 2, 1, 1, 1)
        step_readout = root.locator(".tc-step .widget-readout")
        expect(step_readout).to_have_text("1")
        page.evaluate(TIMING_JS)
        redraws = []
        for _ in range(2):
            press(".tc-step", "ArrowRight")
            page.wait_for_function("window.__srcAt !== null")
            redraws.append(page.evaluate("window.__srcAt - window.__keyAt"))
        expect(step_readout).to_have_text("3")
        assert shown() == fr.frame_png(fr.scatter_frame(slide4, 2))

        # stride 2 -> 3: (2-1)*3 - 2 + 2 + 1 + 1 = 5
        press(".tc-stride", "ArrowRight")
        page.wait_for_function("window.__srcAt !== null")
        redraws.append(page.evaluate("window.__srcAt - window.__keyAt"))
        expect(size).to_contain_text("output size: 5\u00d75")

        # gather: 25 steps; End on the (rebuilt) step slider reaches the last one
        root.locator(".tc-view button", has_text="gather").click()
        expect(root.locator(".tc-step .noUi-handle")).to_have_attribute("aria-valuemax", re.compile(r"^25(\.0)?$"))
        press(".tc-step", "End")
        expect(step_readout).to_have_text("25")

        # conv <-> transpose: 4 steps, the value follows; the page shows the frame whose windows are highlighted
        root.locator(".tc-view button", has_text="conv \u2194 transpose").click()
        expect(step_readout).to_have_text("4")
        expect(picture).to_have_attribute("src", re.compile("^blob:"))
        page.wait_for_timeout(300)
        pair = fr.pair_frame(fr.Settings(2, 3, 3, 1, 1, 1), 3)
        assert shown() == fr.frame_png(pair)
        panels, _ = fp.panels_of(pair)
        assert panels[0].outline.any() and (panels[0].outline == panels[-1].outline).all()

        # the matrix view of input 4, dilation 2 (C^T is 100x16) fits one screen
        press(".tc-stride", "ArrowLeft")
        press(".tc-in-size", "ArrowRight", 2)
        press(".tc-dilation", "ArrowRight")
        root.locator(".tc-view button", has_text="matrix").click()
        expect(size).to_contain_text("output size: 10\u00d710")
        page.wait_for_timeout(300)
        box = root.bounding_box()
        assert box["height"] <= SCREEN and picture.bounding_box()["height"] <= fp.MAX_HEIGHT, box

        # an invalid setting: output_padding 2 with stride 2 and dilation 2; the greyed picture stays in place
        top = picture.bounding_box()["y"]
        expect(message).to_be_hidden()
        press(".tc-output-padding", "ArrowRight")
        expect(message).to_be_visible()
        expect(message).to_contain_text("must be smaller than stride")
        expect(size).to_contain_text("invalid")
        expect(root.locator(".tc-offending")).to_have_text("2")
        expect(picture).to_be_visible()
        expect(picture).to_have_class(re.compile(r"\btc-stale\b"))
        assert abs(picture.bounding_box()["y"] - top) <= 2, "the picture moved when the setting became invalid"
        assert page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']").count() == 0, \
            "the widget printed an error"
        page.keyboard.press("ArrowLeft")
        expect(message).to_be_hidden()
        expect(picture).not_to_have_class(re.compile(r"\btc-stale\b"))
        expect(size).to_contain_text("output size: 10\u00d710")

        # a kernel restart: the explorer says it is disconnected
        note = root.locator(".tc-disconnected-note-text")
        expect(note).to_be_hidden()
        page.locator(".lm-MenuBar-itemLabel", has_text="Kernel").click()
        page.locator(".lm-Menu-itemLabel", has_text=re.compile("^Restart Kernel")).first.click()
        page.locator(".jp-Dialog-button", has_text="Restart").click()
        expect(page.locator(".tc-explorer.jupyter-widgets-disconnected")).to_have_count(1)
        expect(note).to_be_visible()

        assert page.locator("text=official Jupyter news").count() == 0, "the news toast is showing"
        assert not leaving, f"requests left the machine: {leaving}"
        assert max(redraws) < REDRAW_LIMIT_MS, redraws
        print(f"\nredraw after a key press: {', '.join(f'{ms:.0f}' for ms in redraws)} ms; "
              f"test {time.monotonic() - started:.0f} s")
        assert time.monotonic() - started < 150, "the browser test should take under 2.5 minutes"
    except BaseException:
        if page is not None:
            ARTIFACTS.mkdir(exist_ok=True)
            shot = ARTIFACTS / f"browser-failure-{int(time.time())}.png"
            try:
                page.screenshot(path=str(shot), full_page=True)
            except Exception:  # the page may be gone; the log below still helps
                pass
        log.flush()
        shutil.copy(tmp_path / "jupyter.log", ARTIFACTS / "browser-jupyter.log") if ARTIFACTS.exists() else None
        raise
    finally:
        if browser is not None:
            browser.close()
        pw.stop()
        _stop_server(base, token, proc)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


# ----------------------------------------------------------------------------- lesson 09's θ explorer
THETA_LESSON = REPO / "notebooks" / "09_attention_and_spatial_transformers.ipynb"
THETA_CELL = "explorer = theta_explorer("


@contextlib.contextmanager
def _lab_page(tmp_path: Path, lesson: Path):
    """A throw-away offline JupyterLab on loopback with a copy of ``lesson`` open in headless Chromium: the page."""
    from playwright.sync_api import sync_playwright

    where = _write_environment(tmp_path, lesson)
    port, token = _free_port(), secrets.token_hex(16)
    base = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
           f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={where['root']}",
           "--ServerApp.port_retries=0", *lab_offline_flags()] + (["--allow-root"] if os.geteuid() == 0 else [])
    with open(tmp_path / "jupyter.log", "wb") as log:
        proc = subprocess.Popen(cmd, env=where["env"], stdout=log, stderr=subprocess.STDOUT, cwd=where["root"])
        pw = sync_playwright().start()
        browser = None
        try:
            _wait_for_server(f"{base}/api/status?token={token}", proc)
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(60_000)
            page.goto(f"{base}/lab/tree/lesson.ipynb?token={token}")
            yield page
        finally:
            if browser is not None:
                browser.close()
            pw.stop()
            _stop_server(base, token, proc)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


def test_theta_explorer_in_jupyterlab(tmp_path):
    """Lesson 09's θ explorer: its static picture before running, then live: a slider step redraws the frame of
    the new θ, and a scale of 0 is refused with a message while the greyed picture stays."""
    _require_chromium()
    from playwright.sync_api import expect

    from lecturelib.clutter import cluttered_item
    from lecturelib.scenes import to_tensor_image
    from lecturelib.stn_frames import ThetaSettings, frame_png, theta_frame

    with _lab_page(tmp_path, THETA_LESSON) as page:
        expect(page.get_by_text("Python 3 (ipykernel) | Idle")).to_be_visible(timeout=60_000)
        cell = page.locator(".jp-CodeCell").filter(has_text=THETA_CELL)
        expect(cell).to_have_count(1)
        cell.scroll_into_view_if_needed()
        expect(cell.locator(".jp-OutputArea-output img")).to_be_visible()       # the committed static picture
        cell.locator(".cm-content").click()
        page.keyboard.press("Shift+Enter")
        root = page.locator(".stn-explorer")
        picture, message, theta = root.locator(".stn-picture"), root.locator(".stn-message"), root.locator(".stn-theta")
        expect(theta).to_contain_text("s = 0.50", timeout=60_000)
        expect(picture).to_have_attribute("src", re.compile("^blob:"))
        root.locator(".stn-scale .noUi-handle").focus()
        page.keyboard.press("ArrowRight")
        expect(theta).to_contain_text("s = 0.55")
        page.wait_for_timeout(300)
        image = to_tensor_image(cluttered_item("test", 1).image)
        assert base64.b64decode(picture.evaluate(PICTURE_JS)) == frame_png(theta_frame(image, ThetaSettings(0.55)))
        expect(message).to_be_hidden()
        page.keyboard.press("Home")                                             # scale 0: refused
        expect(message).to_contain_text("scale must be positive")
        expect(picture).to_have_class(re.compile(r"\bstn-stale\b"))
        assert page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']").count() == 0
