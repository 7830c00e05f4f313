"""Sphinx hooks of the course's website (loaded by conf.py as an extension).

- the README gets a hidden table of contents: every notebooks/*.ipynb in file-name order (a new lesson appears
  without any edit), then the API reference;
- docs/api.md gets one section per lecturelib module (a new module appears without any edit); a docstring that is
  not valid reStructuredText is shown verbatim instead of failing the build;
- after the output of every code cell tagged ``widget``: a note that the picture is a still and the live widget
  runs in JupyterLab;
- MathJax is linked in from the jupyter-server-mathjax package; index.html is a copy of the landing page.
"""
from __future__ import annotations

import importlib
import io
import pkgutil
from pathlib import Path

import jupyter_server_mathjax
from docutils import nodes
from docutils.core import publish_doctree
from docutils.utils import Reporter

import lecturelib

REPO = Path(__file__).resolve().parents[1]
MATHJAX = Path(jupyter_server_mathjax.__file__).parent / "static"
WIDGET_CLASS = "tag_widget"                    # myst-nb's class for a cell tagged "widget"
WIDGET_NOTE = ("On this website the picture above is a still of the widget's first frame. The live widget runs "
               "in JupyterLab: make lab, open this notebook and run the cell.")
TOCTREE = """

```{toctree}
:hidden:
:glob:
:caption: Lessons

notebooks/*
```

```{toctree}
:hidden:
:caption: Reference

docs/api
```
"""


def jupyterlab_anchor(title: str) -> str:
    """The anchor JupyterLab gives a heading: its text with spaces as hyphens (``6-·-Step-through-it-yourself``)."""
    return title.strip().replace(" ", "-")


def static_folder() -> Path:
    """build/site-static/ with ``mathjax`` linking to the package's MathJax files (Sphinx copies them)."""
    static = REPO / "build" / "site-static"
    static.mkdir(parents=True, exist_ok=True)
    link = static / "mathjax"
    if link.is_symlink() and link.resolve() != MATHJAX.resolve():
        link.unlink()
    if not link.exists():
        link.symlink_to(MATHJAX, target_is_directory=True)
    return static


def lecturelib_modules() -> list[str]:
    """Every module of lecturelib, sub-packages included, in name order."""
    return sorted(["lecturelib"] + [m.name for m in pkgutil.walk_packages(lecturelib.__path__, "lecturelib.")])


def api_sections() -> str:
    lines = [""]
    for name in lecturelib_modules():
        importlib.import_module(name)
        lines += [f"## `{name}`", "", "```{eval-rst}", f".. automodule:: {name}", "```", ""]
    return "\n".join(lines)


def on_source_read(app, docname, source):
    if docname == app.config.root_doc:
        source[0] += TOCTREE
    elif docname == "docs/api":
        source[0] += api_sections()


def valid_rst(app, text: str) -> bool:
    """Whether ``text`` parses as reStructuredText without a warning (the warnings go to a string, not the log)."""
    stream = io.StringIO()
    publish_doctree(text, settings_overrides={"report_level": Reporter.WARNING_LEVEL, "warning_stream": stream,
                                              "halt_level": Reporter.SEVERE_LEVEL + 1, "env": app.env})
    return not stream.getvalue()


def on_autodoc_docstring(app, what, name, obj, options, lines):
    """Show a docstring that is not valid reStructuredText (an indented list after a line, ``|a ∩ b|``) verbatim."""
    if lines and not valid_rst(app, "\n".join(lines)):
        lines[:] = ["::", ""] + ["    " + line for line in lines] + [""]


def on_doctree_read(app, doctree):
    for cell in list(doctree.findall(nodes.container)):
        if WIDGET_CLASS in cell.get("classes", []):
            note = nodes.note(classes=["widget-still"])
            note += nodes.paragraph(text=WIDGET_NOTE)
            cell.parent.insert(cell.parent.index(cell) + 1, note)


def on_build_finished(app, exception):
    """index.html: the landing page under the name a web server serves first."""
    if exception is None and app.builder.format == "html":
        out = Path(app.outdir)
        (out / "index.html").write_bytes((out / f"{app.config.root_doc}.html").read_bytes())


def setup(app):
    app.connect("source-read", on_source_read)
    app.connect("autodoc-process-docstring", on_autodoc_docstring)
    app.connect("doctree-read", on_doctree_read)
    app.connect("build-finished", on_build_finished)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
