"""nbgrader integration: the sandboxed grader as a drop-in for nbgrader's Execute preprocessor.

`nbgrader autograde` (configured in nbgrader_config.py) and the batch grader both end here:
the engine's report is written into each autograded test cell as
  * a display_data output with the part's checks, messages and pictures (what feedback shows),
  * an execute_result whose text is the part's score, which nbgrader's SaveAutoGrades reads as
    partial credit (nbgrader.utils.determine_grade),
so the gradebook, feedback and export see exactly what stock nbgrader would produce, from
verdicts reached outside the student's kernel.
"""
from __future__ import annotations

import functools
import html
import json

from nbgrader.preprocessors import NbGraderPreprocessor
from traitlets import Bool, Enum

from autograder import engine


# Words, not emoji: feedback is often read where no emoji font is installed.
_PASSED = '<b style="color:#1a7f37">passed</b>'
_FAILED = '<b style="color:#cf222e">failed</b>'


def _render_part(grade_id: str, report: engine.Report) -> tuple[str, str]:
    """(html, plain text) describing one part's checks for the student."""
    checks = [check for check in report.checks if check.part == grade_id]
    rows, plain = [], []
    if report.error:
        rows.append(f"<li>{_FAILED} {html.escape(report.error)}</li>")
        plain.append(f"ERROR {report.error}")
    elif not checks:
        rows.append(f"<li>{_FAILED} this part could not be checked</li>")
    for check in checks:
        icon = _PASSED if check.passed else _FAILED
        text = check.id.replace("_", " ")
        detail = f": {html.escape(check.message)}" if check.message else ""
        rows.append(f"<li>{icon} <b>{html.escape(text)}</b> ({check.points:g}/{check.max_points:g}){detail}</li>")
        plain.append(f"{'PASS' if check.passed else 'FAIL'} {check.id} ({check.points:g}/{check.max_points:g})"
                     + (f": {check.message}" if check.message else ""))
    score = sum(check.points for check in checks)
    maximum = next((part.points for part in report.spec.auto_parts if part.grade_id == grade_id), 0) if report.spec else 0
    figures = "".join(f'<div style="display:inline-block;margin:4px">{svg}</div>' for svg in report.figures.get(grade_id, []))
    body = (
        f'<div class="tc-grading"><p><b>Autograder, part {html.escape(grade_id)}: {score:g} / {maximum:g}</b> '
        f'<span style="color:#666">(isolation: {html.escape(report.isolation or "none")})</span></p>'
        f"<ul>{''.join(rows)}</ul>{figures}</div>"
    )
    return body, "\n".join([f"Autograder, part {grade_id}: {score:g} / {maximum:g}", *plain])


def apply_report(nb, report: engine.Report) -> None:
    """Write the report into the autograded test cells of `nb` (an nbformat NotebookNode)."""
    from nbformat.v4 import new_output

    scores = report.part_scores()
    auto_ids = {part.grade_id for part in report.spec.auto_parts} if report.spec else set()
    for cell in nb.cells:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        grade_id = meta.get("grade_id")
        if cell.cell_type != "code" or not meta.get("grade") or meta.get("solution") or grade_id not in auto_ids:
            continue
        body, plain = _render_part(grade_id, report)
        score = scores.get(grade_id, 0.0)
        cell.outputs = [
            new_output("display_data", data={"text/html": body, "text/plain": plain}),
            new_output("execute_result", data={"text/plain": repr(float(score))}, execution_count=1),
        ]
        cell.execution_count = 1


def grade_notebook_node(nb, assignment: str, notebook_id: str, submission_id: str, **grade_options) -> engine.Report:
    """Grade an in-memory notebook (nbgrader's sanitised copy) through the one engine path."""
    request = engine.GradeRequest(f"{submission_id}.ipynb", submission_id, expected=f"{assignment}/{notebook_id}",
                                  notebook=json.loads(json.dumps(nb)))
    (report,) = engine.grade([request], with_figures=True, **grade_options)
    return report


def _release_notebook(assignment: str, notebook_id: str) -> dict:
    from autograder import course
    from autograder import notebook as nbio

    path = course.RELEASE / assignment / f"{notebook_id}.ipynb"
    return _read_cached(str(path), path.stat().st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _read_cached(path: str, mtime_ns: int) -> dict:
    """A parsed release notebook, read once per batch (callers copy what they change)."""
    from autograder import notebook as nbio

    return nbio.read_notebook(path)


def restore_course_metadata(nb, assignment: str, notebook_id: str) -> None:
    """Make a submitted notebook's nbgrader structure the course's own, before nbgrader reads it.

    Every cell carrying a grade_id of this notebook gets the release cell's nbgrader metadata
    (only the first such cell keeps it) and, where the release cell is locked, its cell type and
    source; every other cell loses any nbgrader metadata; graded cells the student deleted are
    put back from the release, after the cell that precedes them there; the kernelspec is the
    release's. Student metadata therefore never reaches nbgrader's steps, which raise on
    malformed metadata, and a mangled notebook is still graded by what its code defines. (What
    nbgrader's OverwriteCells and OverwriteKernelspec then check finds nothing left to change.)
    """
    from nbformat import from_dict

    release = _release_notebook(assignment, notebook_id)
    cells = release["cells"]
    order = {}
    for position, cell in enumerate(cells):
        grade_id = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
        if grade_id:
            order[grade_id] = position
    seen = set()
    for index, cell in enumerate(nb.cells):
        meta = cell.get("metadata")
        if not isinstance(meta, dict):
            cell["metadata"] = meta = {}
        claimed = meta.pop("nbgrader", None)
        grade_id = claimed.get("grade_id") if isinstance(claimed, dict) else None
        if not (isinstance(grade_id, str) and grade_id in order and grade_id not in seen):
            continue
        seen.add(grade_id)
        original = cells[order[grade_id]]
        if original["metadata"]["nbgrader"].get("locked"):
            nb.cells[index] = cell = from_dict(json.loads(json.dumps(original)))
        else:
            cell["metadata"]["nbgrader"] = json.loads(json.dumps(original["metadata"]["nbgrader"]))
    for grade_id, position in sorted(order.items(), key=lambda item: item[1]):
        meta = cells[position]["metadata"]["nbgrader"]
        if grade_id in seen or not (meta.get("grade") or meta.get("solution")):
            continue
        earlier = [i for i, cell in enumerate(nb.cells)
                   if order.get(cell.get("metadata", {}).get("nbgrader", {}).get("grade_id"), len(cells)) < position]
        nb.cells.insert(earlier[-1] + 1 if earlier else 0, from_dict(json.loads(json.dumps(cells[position]))))
        seen.add(grade_id)
    if "kernelspec" in release.get("metadata", {}):
        nb.metadata["kernelspec"] = json.loads(json.dumps(release["metadata"]["kernelspec"]))


class RestoreCourseMetadata(NbGraderPreprocessor):
    """First sanitising step: the course's nbgrader metadata, never the student's (see above)."""

    def preprocess(self, nb, resources):
        restore_course_metadata(nb, resources["nbgrader"]["assignment"], resources["nbgrader"]["notebook"])
        return nb, resources


class SandboxedGrading(NbGraderPreprocessor):
    """Grade the notebook with the course's sandboxed grader instead of executing it in a kernel.

    There is deliberately no option that runs student code unsandboxed: the benchmark's kernel
    baseline is injected by benchmarks/kernel_autograde.py into `_benchmark_options`, which no
    configuration file or command-line flag can set.
    """

    isolation = Enum(
        ["auto", "bubblewrap", "landlock", "unisolated"], default_value="auto",
        help="sandbox tier: the strongest that works here by default; 'unisolated' needs allow_unisolated",
    ).tag(config=True)
    allow_unisolated = Bool(
        False, help="accept grading in a plain process with the grader's rights when no sandbox can run",
    ).tag(config=True)
    _benchmark_options: dict = {}

    def preprocess(self, nb, resources):
        info = resources["nbgrader"]
        options = dict(self._benchmark_options) or {"isolation": self.isolation,
                                                     "allow_unisolated": self.allow_unisolated}
        report = grade_notebook_node(
            nb, info["assignment"], info["notebook"], f"{info['student']}/{info['assignment']}/{info['notebook']}",
            **options,
        )
        if report.grader_error:
            # nbgrader then reports this submission as failed and leaves its grades unset: a
            # fault of the grader must reach the instructor, never become a silent 0.
            raise RuntimeError(f"grader error, {info['student']}/{info['notebook']} not graded: {report.grader_error}")
        if report.error:
            self.log.warning("%s: %s", info["notebook"], report.error)
        apply_report(nb, report)
        return nb, resources
