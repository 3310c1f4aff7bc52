"""The model answer and mark scheme of each manually graded cell, where the grader grades it.

Their one source is the instructor notebook in source/: the solution region of the cell (between
`### BEGIN SOLUTION` and `### END SOLUTION`) holds the model answer, then a line starting
`Mark scheme:` and the scheme's items (docs/MARKING.md). nbgrader removes the region from the
release, so students never receive it.

`MarkSchemePanels` is an nbconvert preprocessor, registered for nbgrader's HTML exporters in
nbgrader_config.py (`c.HTMLExporter.preprocessors`). It acts only when its exporter renders
nbgrader's `formgrade` template, the formgrader's page for grading one submission: after every
manually graded cell of the submission it inserts a read-only panel with the model answer and
the mark scheme read from source/ at that moment (so an edited scheme shows on the next page
load). A notebook none of whose cells has a mark scheme gets no panels. Any other page (feedback above all, which is rendered by the same exporter class from
the same autograded notebooks) is left exactly as it was, and nothing is ever written to a
notebook on disk.
"""

from __future__ import annotations

import dataclasses
import html
import os
import re

from nbconvert.preprocessors import Preprocessor
from nbformat import v4
from traitlets import default

from autograder.core.notebook import grade_id, read_course_notebook, source_text

SCHEME_HEADING = "Mark scheme:"
GRADING_TEMPLATE = "formgrade"  # nbgrader's template of the formgrader's grading page
PANEL_CLASS = "tc-markscheme"

_REGION = re.compile(r"^[ \t]*#*[ \t]*BEGIN SOLUTION[^\n]*\n(.*?)^[ \t]*#*[ \t]*END SOLUTION", re.M | re.S)


@dataclasses.dataclass(frozen=True)
class MarkScheme:
    """What a grader needs to mark one manually graded cell."""

    grade_id: str
    model_answer: str  # markdown (a code cell's: code)
    scheme: str  # markdown; "" when the region has no `Mark scheme:` line
    code: bool


def _nbgrader(cell) -> dict:
    meta = cell.get("metadata", {})
    found = meta.get("nbgrader") if isinstance(meta, dict) else None
    return found if isinstance(found, dict) else {}


def manually_graded(cell) -> bool:
    """A cell a person scores in the formgrader: an answer cell with points of its own."""
    meta = _nbgrader(cell)
    return bool(meta.get("grade") and meta.get("solution"))


def scheme_of(cell) -> MarkScheme | None:
    """The model answer and mark scheme in a source cell's solution region, or None. A cell
    without a region is a solution as a whole (nbgrader's usual Markdown answer cell): the whole
    cell is the model answer."""
    found = grade_id(cell)
    text = source_text(cell.get("source", ""))
    region = _REGION.search(text)
    if found is None:
        return None
    if region is None:
        return MarkScheme(found, text.strip("\n"), "", cell.get("cell_type") == "code")
    answer, heading, scheme = region.group(1).partition(SCHEME_HEADING)
    if not heading:
        answer, scheme = region.group(1), ""
    return MarkScheme(found, answer.strip("\n"), scheme.strip("\n"), cell.get("cell_type") == "code")


def mark_schemes(source_notebook: dict) -> dict[str, MarkScheme]:
    """grade_id -> MarkScheme for every manually graded cell of an instructor notebook."""
    schemes = {}
    for cell in source_notebook.get("cells", []):
        if manually_graded(cell) and (scheme := scheme_of(cell)) is not None:
            schemes[scheme.grade_id] = scheme
    return schemes


def panel_markdown(scheme: MarkScheme | None, wanted: str, where: str) -> str:
    """A markdown cell's source that renders as the formgrader's read-only panel for one cell.

    HTML blocks around markdown (blank lines between, as CommonMark wants), so the answer and
    scheme are rendered by the page's own markdown filter, maths included."""
    heading = (
        f'<div class="panel panel-info {PANEL_CLASS}" data-grade-id="{html.escape(wanted)}">\n'
        '<div class="panel-heading"><span class="nbgrader-label">For graders: model answer and mark scheme'
        f'</span><span class="pull-right"><code>{html.escape(where)}</code></span></div>\n'
        '<div class="panel-body">\n'
    )
    if scheme is None:
        body = f"No model answer for `{wanted}` in `{where}`: write one in that cell's solution region."
    else:
        answer = f"```python\n{scheme.model_answer}\n```" if scheme.code else scheme.model_answer
        body = f"**Model answer**\n\n{answer}\n\n**{SCHEME_HEADING}**\n\n" + (
            scheme.scheme or f"(none: add a `{SCHEME_HEADING}` line and its items to the solution region)"
        )
    return f"{heading}\n{body}\n\n</div>\n</div>"


class MarkSchemePanels(Preprocessor):
    """Beside each manually graded cell of the formgrader's grading page, a read-only panel with
    that cell's model answer and mark scheme from source/ (see the module's docstring)."""

    @default("enabled")
    def _enabled_default(self):
        return True  # acts on the formgrader's grading page only; see grading_page()

    def grading_page(self, resources) -> bool:
        """Whether this render is the formgrader's page for grading a submission."""
        template = getattr(self.parent, "template_name", None)
        return template == GRADING_TEMPLATE and "submission_id" in resources and "assignment_id" in resources

    def _source_notebook(self, assignment: str, notebook: str) -> tuple[dict | None, str]:
        from nbgrader.coursedir import CourseDirectory

        from autograder.nbgrader.course_view import CourseView

        coursedir = CourseDirectory(config=self.config)
        folder = CourseView(coursedir).source(assignment)
        path = os.path.join(folder, f"{notebook}.ipynb")
        where = os.path.relpath(path, coursedir.root)
        try:
            return read_course_notebook(path), where
        except Exception as error:  # noqa: BLE001 - the page still shows the submission and says why
            self.log.warning("no mark schemes for %s: %s", where, error)
            return None, where

    def preprocess(self, nb, resources):
        if not self.grading_page(resources):
            return nb, resources
        source, where = self._source_notebook(resources["assignment_id"], resources["notebook_id"])
        schemes = mark_schemes(source) if source is not None else {}
        if not any(scheme.scheme for scheme in schemes.values()):
            return nb, resources  # a notebook without a mark scheme (not this course's): nbgrader's page as it is
        cells = []
        for cell in nb.cells:
            cells.append(cell)
            if manually_graded(cell) and (wanted := grade_id(cell)) is not None:
                cells.append(v4.new_markdown_cell(panel_markdown(schemes.get(wanted), wanted, where)))
        nb.cells = cells
        return nb, resources
