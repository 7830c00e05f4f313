"""The transposed-convolution explorer in a real browser: JupyterLab on loopback, Debian's headless Chromium.

Starts JupyterLab (temporary config, settings and workspace folders; a random token) on a free port, opens a small
notebook that shows the lesson's widget, runs it, moves the stride and step sliders with the keyboard and checks on
the page that the output-size readout and the picture changed, and that an invalid setting shows its message.
Screenshots of a failure go to test-artifacts/. Needs /usr/bin/chromium (``apt-get install chromium``); never
downloads a browser.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

CHROMIUM = "/usr/bin/chromium"
REPO = Path(__file__).resolve().parents[1]
LESSON = REPO / "notebooks" / "05_transposed_convolution.ipynb"
ARTIFACTS = REPO / "test-artifacts"
WIDGET_CALL = "transposed_conv_explorer("
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]

pytestmark = pytest.mark.browser


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


def _lesson_widget_cell() -> str:
    """The cell of the lesson that students run to get the widget (the test runs the same call)."""
    nb = nbformat.read(LESSON, as_version=4)
    cells = [c.source for c in nb.cells if c.cell_type == "code" and WIDGET_CALL in c.source
             and "import" not in c.source]
    assert len(cells) == 1, f"expected one widget cell calling {WIDGET_CALL}...) in {LESSON.name}, found {len(cells)}"
    return cells[0]


def _write_environment(tmp: Path) -> dict:
    """Folders of a throw-away JupyterLab: config, user settings (news toast off), workspaces, the notebook."""
    root, config, settings, workspaces, runtime = (tmp / d for d in ("root", "config", "settings", "workspaces",
                                                                      "runtime"))
    for d in (root, config, settings, workspaces, runtime):
        d.mkdir(parents=True)
    # no "news" / "check for updates" toast covering the page
    notification = settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    notification.parent.mkdir(parents=True)
    notification.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    widget_cell = _lesson_widget_cell().replace("# NBVAL_IGNORE_OUTPUT\n", "")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "from lecturelib.widgets import transposed_conv_explorer\n" + widget_cell)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, root / "explorer.ipynb")
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(config), JUPYTERLAB_SETTINGS_DIR=str(settings),
               JUPYTERLAB_WORKSPACES_DIR=str(workspaces), JUPYTER_RUNTIME_DIR=str(runtime),
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
               LECTURELIB_PROFILE="quick")
    return {"root": root, "env": env}


def test_explorer_widget_in_jupyterlab(tmp_path):
    _require_chromium()
    from playwright.sync_api import expect, sync_playwright

    started = time.monotonic()
    where = _write_environment(tmp_path)
    port, token = _free_port(), secrets.token_hex(16)
    cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
           f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={where['root']}",
           "--ServerApp.port_retries=0"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")
    log = open(tmp_path / "jupyter.log", "wb")
    proc = subprocess.Popen(cmd, env=where["env"], stdout=log, stderr=subprocess.STDOUT, cwd=where["root"])
    browser = page = None
    pw = sync_playwright().start()
    try:
        _wait_for_server(f"http://127.0.0.1:{port}/api/status?token={token}", proc)
        # the temporary user settings are the ones in force: no news toast will cover the page
        url = f"http://127.0.0.1:{port}/lab/api/settings/@jupyterlab/apputils-extension:notification?token={token}"
        with urllib.request.urlopen(url, timeout=30) as r:
            notification = json.load(r)["settings"]
        assert notification.get("fetchNews") == "false" and notification.get("checkForUpdates") is False, notification
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(60_000)
        page.goto(f"http://127.0.0.1:{port}/lab/tree/explorer.ipynb?token={token}")
        editor = page.locator(".jp-Notebook .jp-Cell .cm-content").first
        editor.wait_for()
        # the kernel must be connected before the cell is run, or the run request is dropped
        expect(page.get_by_text("Python 3 (ipykernel) | Idle")).to_be_visible(timeout=60_000)
        editor.click()
        page.keyboard.press("Shift+Enter")                   # run the widget cell

        root = page.locator(".tc-explorer")
        size = root.locator(".tc-size")
        picture = root.locator(".tc-picture")
        expect(size).to_contain_text("output size: 3\u00d73", timeout=60_000)
        expect(picture).to_be_visible()
        src0 = picture.get_attribute("src")
        assert src0, "the picture has no source"

        # stride 2 -> 3 with the keyboard: (2-1)*3 - 2 + 2 + 0 + 1 = 4
        stride = root.locator(".tc-stride .noUi-handle")
        stride.focus()
        page.keyboard.press("ArrowRight")
        expect(root.locator(".tc-stride .widget-readout")).to_have_text("3")
        expect(size).to_contain_text("output size: 4\u00d74")
        expect(picture).not_to_have_attribute("src", src0)
        src1 = picture.get_attribute("src")

        # the step slider: step 0 -> 2
        step = root.locator(".tc-step .noUi-handle")
        step.focus()
        page.keyboard.press("ArrowRight")
        page.keyboard.press("ArrowRight")
        expect(root.locator(".tc-step .widget-readout")).to_have_text("2")
        expect(picture).not_to_have_attribute("src", src1)

        # an invalid setting: output_padding 3 with stride 3 and dilation 1
        message = root.locator(".tc-message")
        expect(message).to_be_hidden()
        padding = root.locator(".tc-output-padding .noUi-handle")
        padding.focus()
        for _ in range(3):
            page.keyboard.press("ArrowRight")
        expect(message).to_be_visible()
        expect(message).to_contain_text("must be smaller than stride")
        expect(size).to_contain_text("invalid")
        expect(picture).to_be_hidden()
        assert page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']").count() == 0, \
            "the widget printed an error"
        # back to a valid setting: the picture returns
        page.keyboard.press("ArrowLeft")
        expect(message).to_be_hidden()
        expect(picture).to_be_visible()
        expect(size).to_contain_text("output size: 6\u00d76")     # (2-1)*3 - 2 + 2 + 2 + 1
        assert page.locator("text=official Jupyter news").count() == 0, "the news toast is showing"
        assert time.monotonic() - started < 120, "the browser test should take under 2 minutes"
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
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()
