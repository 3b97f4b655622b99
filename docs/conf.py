"""Sphinx configuration: furo, Markdown pages (MyST), autodoc, and the option tables that
docs/_ext/aiotls_docs.py renders from the code's TypedDicts."""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE / "_ext")]

import aiotls  # noqa: E402  (after the path is set)

project = "aiotls"
author = "aiotls contributors"
release = version = aiotls.__version__
extensions = ["myst_parser", "sphinx.ext.autodoc", "aiotls_docs"]
source_suffix = {".md": "markdown"}
exclude_patterns = ["_build"]
html_theme = "furo"
html_title = f"aiotls {release}"
myst_heading_anchors = 3
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
