"""Sphinx configuration for the otcore documentation.

Build with ``sphinx-build -W --keep-going -b html docs docs/_build/html`` from the
repository root (needs the ``docs`` extra: ``pip install -e ".[docs]"``).
"""

import sys
from pathlib import Path

import matplotlib

matplotlib.use("agg")  # the gallery runs headless

import otcore

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS / "_ext"))

# -- Project -------------------------------------------------------------------------
project = "otcore"
author = "otcore developers"
copyright = "otcore developers"
release = otcore.__version__
version = release.split(".dev")[0]

# -- General -------------------------------------------------------------------------
extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
    "myst_parser",
    "bench_results",
]
templates_path = ["_templates"]
exclude_patterns = ["_build", "_ext", "examples/README.rst", "**.ipynb_checkpoints"]
source_suffix = {".rst": "restructuredtext"}

# -- API reference -------------------------------------------------------------------
autosummary_generate = True
autodoc_typehints = "none"  # types are in the numpydoc Parameters sections
autodoc_member_order = "bysource"
numpydoc_show_class_members = False  # members are listed by the autosummary templates
numpydoc_class_members_toctree = False

# -- Gallery -------------------------------------------------------------------------
sphinx_gallery_conf = {
    "examples_dirs": "examples",
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",
    "download_all_examples": False,
    "remove_config_comments": True,
    "within_subsection_order": "FileNameSortKey",
}

# -- Benchmark results (docs/_ext/bench_results.py) ----------------------------------
bench_results_dir = str(DOCS.parent / "bench" / "results")
suppress_warnings = ["myst.header"]  # bench tables may start at any heading level

# -- HTML ----------------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = f"otcore {release}"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
}
html_static_path: list[str] = []
