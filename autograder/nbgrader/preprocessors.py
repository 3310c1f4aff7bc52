"""nbgrader integration: the sandboxed grader as a drop-in for nbgrader's Execute preprocessor.

`nbgrader autograde` (configured in nbgrader_config.py) and the batch grader both end here:
the engine's report (autograder.core.report) is written into each autograded test cell as
  * a display_data output with the part's checks, messages and pictures (what feedback shows),
  * an execute_result whose text is the part's score, which nbgrader's SaveAutoGrades reads as
    partial credit (nbgrader.utils.determine_grade),
  * the part's result as plain data in the cell's metadata (`report.PART_RESULT_KEY`), which
    feedback reads back,
so the gradebook, feedback and export see exactly what stock nbgrader would produce, from
verdicts reached outside the student's kernel.
"""

from __future__ import annotations

import functools
import json
import os

from nbconvert.exporters import NotebookExporter
from nbgrader.preprocessors import NbGraderPreprocessor
from traitlets import Bool, Enum, Unicode

from autograder.core import engine, variants
from autograder.core.course import Course
from autograder.core.notebook import quote
from autograder.core.report import PART_RESULT_KEY
from autograder.core.restore import restore_course_cells
from autograder.nbgrader.course_view import CourseView, SubmissionKey


def output(output_type: str, data: dict, **fields):
    """A code cell's output, as nbformat's `new_output` makes it, without its JSON-schema
    validation (a few ms an output, most of the cost of writing a graded notebook): what the
    grader writes here is always string data under MIME types."""
    from nbformat import NotebookNode

    made = NotebookNode(output_type=output_type, metadata=NotebookNode(), data=NotebookNode(data))
    if output_type == "execute_result":
        made.execution_count = fields.pop("execution_count", None)
    made.update(fields)
    return made


def apply_report(nb, report: engine.Report, note: str | None = None) -> None:
    """Write the report into the autograded test cells of `nb` (an nbformat NotebookNode): each
    part's block (what feedback shows), its score (what nbgrader records) and its result as data
    in the cell's metadata (what feedback reads back, e.g. to withhold the checks' messages)."""
    auto_ids = {part.grade_id for part in report.spec.auto_parts} if report.spec else set()
    if report.variant.table:
        # The set-up cell shows the variant the notebook was graded against, as the grader drew
        # it: the formgrader and feedback show it beside the messages.
        for cell in nb.cells:
            if cell.cell_type == "code" and variants.SETUP_CALL in cell.source:
                cell.outputs = [output("display_data", report.variant.table)]
    said = "; ".join(text for text in (note, report.variant.note) if text) or None
    for cell in nb.cells:
        cell.get("metadata", {}).pop(PART_RESULT_KEY, None)  # only the grader writes it, never the student
        meta = cell.get("metadata", {}).get("nbgrader", {})
        grade_id = meta.get("grade_id")
        if cell.cell_type != "code" or not meta.get("grade") or meta.get("solution") or grade_id not in auto_ids:
            continue
        part = report.part(grade_id, said)
        cell.metadata[PART_RESULT_KEY] = part.to_json()
        cell.outputs = [
            output("display_data", {"text/html": part.as_html(), "text/plain": part.as_text()}),
            output("execute_result", {"text/plain": repr(float(part.score))}, execution_count=1),
        ]
        cell.execution_count = 1


def grade_notebook_node(
    course: Course, nb, key: engine.NotebookKey, submission_id: str, **grade_options
) -> engine.Report:
    """Grade an in-memory notebook (nbgrader's sanitised copy) through the one engine path."""
    student_id = grade_options.pop("student_id", None)
    request = engine.GradeRequest(
        f"{submission_id}.ipynb",
        submission_id,
        expected=key,
        notebook=json.loads(json.dumps(nb)),
        student_id=student_id,
    )
    (report,) = engine.grade(course, [request], with_figures=True, **grade_options)
    return report


def restore_course_metadata(nb, course: Course, assignment: str, notebook_id: str) -> None:
    """Make a submitted notebook's nbgrader structure the course's own, before nbgrader reads it
    (the one restoring step of every grading path and of the self-check: `restore_course_cells`)."""
    restore_course_cells(nb, course.release_notebook(assignment, notebook_id))


REFUSED_KEY = "autograder_refused"  # notebook metadata: why the submitted file is not graded


def renamed_note(original: str, notebook_id: str) -> str:
    """What the student and the instructor read when a notebook was graded under another name."""
    return (
        f"note: {quote(original, 200)} was graded as {notebook_id}.ipynb (it is this assignment's "
        f"{notebook_id} notebook under another name); submit it as {notebook_id}.ipynb next time"
    )


def renamed_record(submitted):
    """Where the pre-convert hook notes the notebooks it gave back their names, for the submission
    folder `submitted` (beside it, where no student writes): submitted/<student>/.<assignment>.renamed.json."""
    import pathlib

    submitted = pathlib.Path(submitted)
    return submitted.parent / f".{submitted.name}.renamed.json"


def renamed_from(submitted, root, notebook_id: str) -> str | None:
    """The name `notebook_id` was submitted under in the submission folder `submitted`, if the
    pre-convert hook renamed it."""
    from autograder.core import safe_files

    try:
        record = json.loads(safe_files.read_regular(renamed_record(submitted), 1 << 16, root=root))
        original = record.get(notebook_id) if isinstance(record, dict) else None
    except (OSError, ValueError, safe_files.UnsafeFile):
        return None
    return original if isinstance(original, str) else None


def unreadable_reason(filename: str, error) -> str:
    """What the student and the instructor read when a submitted notebook cannot be parsed."""
    return (
        f"unreadable notebook: {filename} could not be read ({error}), so none of it was graded and "
        "every part scores 0; open it in JupyterLab (or restore it from a checkpoint), save it and submit again"
    )


class TolerantNotebookExporter(NotebookExporter):
    """nbgrader's notebook exporter, reading as the batch grader reads: a notebook that cannot be
    parsed (cut off, not JSON, not a notebook) is replaced by the release notebook, and the reason
    goes in the resources for RestoreCourseMetadata, instead of an error that stops the student."""

    def from_file(self, file_stream, resources=None, **kw):
        from nbformat import from_dict

        from autograder.core import notebook as nbio

        resources = resources if resources is not None else {}
        if not course_of(self).grades(resources.get("nbgrader", {}).get("assignment")):
            return super().from_file(file_stream, resources, **kw)  # nbgrader's own assignment: as stock
        try:
            text = file_stream.read(nbio.MAX_NOTEBOOK_BYTES + 1)
            nb = from_dict(nbio.parse_notebook(text))
        except (nbio.UnreadableNotebook, UnicodeDecodeError) as error:
            if isinstance(error, UnicodeDecodeError):
                error = "the file is not UTF-8 text, so it is not a notebook"
            info = resources.get("nbgrader", {})
            name = f"{info.get('notebook', 'the notebook')}.ipynb"
            info["unreadable"] = unreadable_reason(name, error)
            release = course_of(self).release_notebook(info["assignment"], info["notebook"])
            nb = from_dict(json.loads(json.dumps(release)))
        return self.from_notebook_node(nb, resources, **kw)


def refused_submission(resources, root) -> str | None:
    """Why nbgrader must not grade the file it has read for this notebook (a link, a hard link,
    something not a regular file, a folder on the way that is a link), or None.

    nbgrader reads the submitted file itself, following links; this looks at what it read.
    """
    import pathlib

    from autograder.core import safe_files

    folder = resources.get("metadata", {}).get("path")
    if not folder:
        return None
    path = pathlib.Path(folder) / f"{resources['nbgrader']['notebook']}.ipynb"
    try:
        safe_files.check_inside(path, pathlib.Path(root))
        reason = safe_files.refusal(os.lstat(path))
    except safe_files.UnsafeFile as error:
        reason = str(error)
    except OSError as error:
        reason = f"it cannot be read ({error.strerror})"
    return f"{path.name} is not graded: {reason}" if reason else None


def course_of(preprocessor) -> Course:
    """The course nbgrader is working on: its converter's `coursedir` (found through the
    preprocessor's parents), else the `CourseDirectory` of the preprocessor's configuration."""
    node = preprocessor
    while node is not None:
        coursedir = getattr(node, "coursedir", None)
        if coursedir is not None:
            return _course_at(coursedir.root)
        node = getattr(node, "parent", None)
    from nbgrader.coursedir import CourseDirectory

    return _course_at(CourseDirectory(config=preprocessor.config).root)


def view_of(preprocessor: CoursePreprocessor) -> CourseView:
    """nbgrader's view of the course the preprocessor works on (its folders, its gradebook):
    its converter's `coursedir`, else that of its configuration at the course's root."""
    node: object = preprocessor
    while node is not None:
        coursedir = getattr(node, "coursedir", None)
        if coursedir is not None:
            return CourseView(coursedir)
        node = getattr(node, "parent", None)
    from nbgrader.coursedir import CourseDirectory

    return CourseView(CourseDirectory(config=preprocessor.config, root=str(preprocessor.course.root)))


@functools.lru_cache(maxsize=8)
def _course_at(root: str) -> Course:
    return Course(root)


class CoursePreprocessor(NbGraderPreprocessor):
    """A step that works on the course nbgrader is converting (see `course_of`)."""

    _course: Course | None = None

    @property
    def course(self) -> Course:
        if self._course is None:
            self._course = course_of(self)
        return self._course

    @course.setter
    def course(self, value: Course) -> None:
        self._course = value


class RestoreCourseMetadata(CoursePreprocessor):
    """First sanitising step: the course's nbgrader metadata, never the student's (see above).
    The student's answers are kept as written (`$s > t$` stays so); pages make them inert where
    they render them (autograder.nbgrader.inert). A submitted file that is a link (or a hard
    link, ...) is replaced by the release notebook, and marked so that it is graded 0 with the
    reason instead of with what the link points at."""

    # Steps after it that find nothing left to do on the course's assignments (the batch grader
    # leaves them out; `nbgrader autograde` runs them, for its own assignments too).
    supersedes = ("OverwriteCells", "OverwriteKernelspec")

    def preprocess(self, nb, resources):
        info = resources["nbgrader"]
        if not self.course.grades(info.get("assignment")):
            return nb, resources  # nbgrader's own assignment: its OverwriteCells and the rest, as stock
        nb.metadata.pop(REFUSED_KEY, None)  # only this step may say so, never the student
        reason = refused_submission(resources, self.course.root) or info.pop("unreadable", None)
        if reason is not None:
            from nbformat import from_dict

            # nbgrader autogrades in two passes, each with fresh resources: the reason travels
            # to SandboxedGrading in the sanitised notebook's metadata (cleared after grading).
            info["refused"] = nb.metadata[REFUSED_KEY] = reason
            release = self.course.release_notebook(info["assignment"], info["notebook"])
            nb.cells = [from_dict(json.loads(json.dumps(cell))) for cell in release["cells"]]
        variants.keep_record(nb)  # before ClearOutput: whose variant the set-up cell showed
        restore_course_metadata(nb, self.course, info["assignment"], info["notebook"])
        return nb, resources


class StudentVariants(NbGraderPreprocessor):
    """First step of generate_assignment: write the course's variant settings into the set-up
    call `my_variant(per_student=..., salt=...)` of each notebook, so that the release records
    them once for the students' notebooks, their public checks and the grader (which reads them
    from the release, never from a submission)."""

    per_student = Bool(
        False,
        help="give every student their own variant of the exercises, drawn from their student id "
        "(off: everyone gets the exercise page's own set-up)",
    ).tag(config=True)
    salt = Unicode(
        "",
        help="mixed into every draw, so that this course's variants differ from another's or last "
        "term's; not a secret (it is written into the release)",
    ).tag(config=True)

    def preprocess_cell(self, cell, resources, index):
        if cell.cell_type == "code" and variants.SETUP_CALL in cell.source:
            settings = variants.Settings(self.per_student, self.salt)
            cell.source = variants.with_settings(cell.source, settings)
            if variants.settings_of({"cells": [cell]}) != settings:
                raise ValueError(
                    f"cell {index} calls {variants.SETUP_CALL} but not as "
                    f"{variants.setup_call(variants.Settings())}: the settings cannot be written into it"
                )
        return cell, resources


class SandboxedGrading(CoursePreprocessor):
    """Grade the notebook with the course's sandboxed grader instead of executing it in a kernel.

    There is deliberately no option that runs student code unsandboxed: the benchmark's kernel
    baseline is injected by benchmarks/kernel_autograde.py into `_benchmark_options`, which no
    configuration file or command-line flag can set.
    """

    isolation = Enum(
        ["auto", "bubblewrap", "landlock", "unisolated"],
        default_value="auto",
        help="sandbox tier: the strongest that works here by default; 'unisolated' needs allow_unisolated",
    ).tag(config=True)
    allow_unisolated = Bool(
        False,
        help="accept grading in a plain process with the grader's rights when no sandbox can run",
    ).tag(config=True)
    _benchmark_options: dict = {}
    _execute = None

    def execute_as_nbgrader(self, nb, resources):
        """nbgrader's own Execute step, configured as the course configures it (its timeout, ...),
        for an assignment that is not this course's: graded exactly as stock nbgrader grades it."""
        if self._execute is None:
            from nbgrader.preprocessors import Execute

            self._execute = Execute(parent=self.parent, config=self.config)
        return self._execute.preprocess(nb, resources)

    def preprocess(self, nb, resources):
        info = resources["nbgrader"]
        if not self.course.grades(info.get("assignment")):
            return self.execute_as_nbgrader(nb, resources)
        refused = info.get("refused") or nb.metadata.pop(REFUSED_KEY, None)
        if refused:
            spec = self.course.find_spec(info["assignment"], info["notebook"])
            report = engine.Report(
                notebook=info["notebook"],
                submission_id=info["student"],
                spec=spec,
                graded_as=spec.key if spec else None,
                error=str(refused),
            )
            self.log.warning("%s: %s", info["notebook"], report.error)
            apply_report(nb, report)
            return nb, resources
        options = dict(self._benchmark_options) or {
            "isolation": self.isolation,
            "allow_unisolated": self.allow_unisolated,
        }
        report = grade_notebook_node(
            self.course,
            nb,
            engine.NotebookKey(info["assignment"], info["notebook"]),
            str(SubmissionKey(info["student"], info["assignment"], info["notebook"])),
            student_id=info["student"],
            **options,
        )
        if report.grader_error:
            # nbgrader then reports this submission as failed and leaves its grades unset: a
            # fault of the grader must reach the instructor, never become a silent 0.
            raise RuntimeError(f"grader error, {info['student']}/{info['notebook']} not graded: {report.grader_error}")
        if report.error:
            self.log.warning("%s: %s", info["notebook"], report.error)
        submitted = view_of(self).submitted(info["student"], info["assignment"])
        original = renamed_from(submitted, self.course.root, info["notebook"])
        apply_report(nb, report, renamed_note(original, info["notebook"]) if original else None)
        return nb, resources
