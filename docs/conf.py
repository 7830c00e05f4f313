"""Sphinx configuration of the course's website (``make site``): the README as the landing page, every notebook of
notebooks/ in file-name order with its stored outputs (never executed here), and an API reference of lecturelib
from its docstrings. Sphinx reads the repository root (``sphinx-build -c docs . build/site``) so that links between
the README and notebooks/ resolve as they do on disk; ``course_site.py`` beside this file holds the hooks.

Nothing on a page is fetched from the internet: MathJax is the copy shipped by the ``jupyter-server-mathjax``
package, the theme ships its own fonts and scripts, and no widget script is loaded (live widgets run in JupyterLab;
their cells, tagged ``widget``, show their stored picture and a note).
"""
from __future__ import annotations

import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
REPO = DOCS.parent
sys.path[:0] = [str(REPO), str(DOCS)]          # this checkout's lecturelib (autodoc) and course_site

import course_site  # noqa: E402

import lecturelib  # noqa: E402

project = "Segmentation, one idea per notebook"
author = "the course's authors"
copyright = "the course's authors, MIT licence"
version = release = lecturelib.__version__

extensions = ["myst_nb", "sphinx.ext.autodoc", "sphinx.ext.mathjax", "course_site"]

root_doc = "README"
include_patterns = ["README.md", "notebooks/*.ipynb", "docs/*.md"]
exclude_patterns = [".venv", "build", "data", "runs", "test-artifacts", "tests", "**/.ipynb_checkpoints"]

# the notebooks are rendered with their committed outputs (the quick profile's real outputs); never executed
nb_execution_mode = "off"
nb_ipywidgets_js = {}                          # no widget manager from a CDN: the widgets live in JupyterLab only
nb_merge_streams = True
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3
myst_heading_slug_func = "course_site.jupyterlab_anchor"   # JupyterLab's anchors: the notebooks' own #links work

# MathJax 2 from the jupyter-server-mathjax package (the configuration and STIX-Web fonts the classic Jupyter
# notebook used), copied into _static/mathjax; never a CDN. myst-nb marks each page "tex2jax_ignore" and its
# formulas "math": MathJax typesets those only.
html_static_path = [str(course_site.static_folder())]
mathjax_path = "mathjax/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full,Safe"
mathjax2_config = {
    "tex2jax": {"inlineMath": [["\\(", "\\)"]], "displayMath": [["\\[", "\\]"]], "processEscapes": True,
                "ignoreClass": "tex2jax_ignore|mathjax_ignore",
                "processClass": "tex2jax_process|mathjax_process|math|output_area"},
    "HTML-CSS": {"availableFonts": [], "webFont": "STIX-Web", "imageFont": None, "preferredFont": None,
                 # MathJax's empty probe font: a missing local font instead of url('about:blank'), which Chromium
                 # reports as a blocked request (the browser falls back to its default font either way)
                 "styles": {"@font-face": {"font-family": "MathJax_Blank", "src": "local('MathJax_Blank')"}}},
    "menuSettings": {"zoom": "None"},
    "showMathMenu": False,
    "messageStyle": "none",
}

html_theme = "sphinx_book_theme"
html_title = project
html_theme_options = {
    "use_download_button": False,
    "use_fullscreen_button": False,
    "use_repository_button": False,
    "show_toc_level": 2,
    "navigation_with_keys": False,
}
html_context = {"default_mode": "light"}      # a set mode: the theme logs no "invalid theme mode" console error
html_show_sourcelink = False
html_favicon = "favicon.png"                   # a label map; without an icon the browser asks for /favicon.ico

autodoc_member_order = "bysource"
autodoc_default_options = {"members": True}
autodoc_typehints = "none"                     # the docstrings give shapes and dtypes; signatures stay short
