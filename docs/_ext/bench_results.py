"""``.. bench-results::`` - render the benchmark tables of ``bench/results/*.md``.

The benchmark scripts write Markdown under ``bench/results/``. This directive parses each
file with MyST and inserts it in the page; relative links and images are rewritten so they
still point into ``bench/results/``. When no result file exists yet (a fresh clone), it
inserts a short note instead of failing the build.

Configuration: ``bench_results_dir`` (absolute path of the results folder).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from docutils import nodes
from docutils.utils import new_document
from myst_parser.parsers.sphinx_ import MystParser
from sphinx.util.docutils import SphinxDirective

# Markdown link or image target: ](target) or ](target "title")
_LINK = re.compile(r"\]\((?!#|/|[a-zA-Z][a-zA-Z0-9+.-]*:)([^)\s]+)")


def _relink(text: str, prefix: str) -> str:
    """Prefix every relative Markdown link or image target with ``prefix/``."""
    return _LINK.sub(lambda m: f"]({prefix}/{m.group(1)}", text)


class BenchResults(SphinxDirective):
    """Insert every ``*.md`` file of ``bench_results_dir`` (sorted by name)."""

    has_content = False
    optional_arguments = 1  # glob pattern, default "*.md"

    def run(self) -> list[nodes.Node]:
        results = Path(self.config.bench_results_dir)
        pattern = self.arguments[0] if self.arguments else "*.md"
        files = sorted(results.glob(pattern)) if results.is_dir() else []
        if not files:
            note = nodes.note()
            para = nodes.paragraph()
            para += nodes.Text("No benchmark results were found when these pages were built. ")
            para += nodes.Text("Run ")
            para += nodes.literal(text="bash bench/run.sh")
            para += nodes.Text(" to produce them under ")
            para += nodes.literal(text="bench/results/")
            para += nodes.Text(".")
            note += para
            return [note]

        doc_dir = Path(self.env.doc2path(self.env.docname)).parent
        out: list[nodes.Node] = []
        for path in files:
            self.env.note_dependency(str(path))
            prefix = Path(os.path.relpath(path.parent, doc_dir)).as_posix()
            text = _relink(path.read_text("utf-8"), prefix)
            document = new_document(str(path), self.state.document.settings)
            MystParser().parse(text, document)
            out.extend(document.children)
        return out


def setup(app):
    app.add_config_value("bench_results_dir", "", "env")
    app.add_directive("bench-results", BenchResults)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
