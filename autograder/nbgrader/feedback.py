"""Feedback pages, the one renderer of the batch grader, the grading service and `autograder feedback`.

A page is made by nbgrader's own `GenerateFeedback` converter run in-process for one student
(autograded/<student>/<a>/ -> feedback/<student>/<a>/<notebook>.html, the submission's
timestamp.txt and submission_secret.txt copied along), so `nbgrader release_feedback` and
`fetch_feedback` work on what it leaves exactly as on what `nbgrader generate_feedback` leaves.
What differs from a stock run is cost and size, never what nbgrader's template says:

* the HTML exporter (compiled templates, registered preprocessors) is kept between students,
  and its closing accessibility pass is skipped where it has nothing to do (FeedbackHTMLExporter);
* the page's template is nbgrader's feedback template with a short stylesheet of the rules that
  template uses, in place of the whole of Bootstrap (117 KB) that nbgrader inlines in every page.
  `release_feedback` publishes only the .html files, so each page must carry its styles itself;
* the execute_result that carries a part's score for nbgrader's SaveAutoGrades (`Out[1]: 1.0`)
  is not shown (HideScoreOutputs; also configured for `nbgrader generate_feedback` in
  nbgrader_config.py); the score itself is on the page, from the gradebook, as nbgrader shows it;
* ParallelFeedback renders many students at once, in worker processes, while grading goes on.

A student left ungraded (a fault of the grader, or nothing graded yet) gets no page, and any page
of an earlier grading is removed: it would describe work that is not what the gradebook holds.
"""

from __future__ import annotations

import functools
import logging
import os
import pathlib
import shutil

from nbconvert.preprocessors import Preprocessor
from traitlets import default

from autograder.core import processes, report

log = logging.getLogger("autograder.feedback")

TEMPLATES = pathlib.Path(__file__).resolve().parent / "templates"
TEMPLATE_NAME = "tc_feedback"  # templates/tc_feedback/: nbgrader's feedback template, compact styles


class WithholdCheckMessages(Preprocessor):
    """Before the due date, if the policy says so: each autograded part's feedback lists which
    checks passed and their points, without the checks' messages and pictures. It is drawn from
    the part's result the autograded test cell carries as data (autograder.core.report), in
    place of the block the grader wrote there; the data itself is not passed on to the page."""

    @default("enabled")
    def _enabled_default(self):
        return True  # nbconvert preprocessors start disabled; this one is only registered when wanted

    def preprocess_cell(self, cell, resources, index):
        stored = cell.get("metadata", {}).pop(report.PART_RESULT_KEY, None)
        if stored is None:
            if _graded_before_results_were_kept(cell):
                cell.outputs = [_withheld(report.WITHHELD_BLOCK, report.WITHHELD)]
            return cell, resources
        part = report.PartResult.from_json(stored)
        shown = (
            (part.withheld_html(), part.withheld_text())
            if part is not None
            else (report.WITHHELD_BLOCK, report.WITHHELD)
        )
        cell.outputs = [
            _withheld(*shown) if output.get("output_type") == "display_data" else output
            for output in cell.get("outputs", [])
        ]
        return cell, resources


def _withheld(body: str, plain: str):
    from autograder.nbgrader.preprocessors import output

    return output("display_data", {"text/html": body, "text/plain": plain})


def _graded_before_results_were_kept(cell) -> bool:
    """An autograded test cell written before parts' results were kept as data: its block is
    the grader's (it starts with the part's header), and only the whole of it can be withheld."""
    meta = cell.get("metadata", {}).get("nbgrader", {})
    return (
        bool(meta.get("grade"))
        and not meta.get("solution")
        and any(
            output.get("output_type") == "display_data"
            and str(output.get("data", {}).get("text/plain", "")).startswith("Autograder, part")
            for output in cell.get("outputs", [])
        )
    )


class HideScoreOutputs(Preprocessor):
    """Feedback shows each autograded part's checks, not the number nbgrader reads its score from.

    The grader leaves in every autograded test cell an execute_result whose text is the part's
    score, which nbgrader's SaveAutoGrades reads as partial credit when it grades; a feedback
    page would show it as `Out[1]: 1.0`. The page's scores come from the gradebook (GetGrades),
    so the output, and the execution count that numbers its prompt, are dropped from the copy
    that is rendered; the autograded notebook keeps them."""

    @default("enabled")
    def _enabled_default(self):
        return True

    def preprocess(self, nb, resources):
        from autograder.nbgrader.preprocessors import course_of

        assignment = resources.get("nbgrader", {}).get("assignment")
        if assignment is not None and not course_of(self).grades(assignment):
            return nb, resources  # nbgrader's own assignment: its outputs are the kernel's, shown as stock
        return super().preprocess(nb, resources)

    def preprocess_cell(self, cell, resources, index):
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if cell.get("cell_type") == "code" and meta.get("grade") and not meta.get("solution"):
            cell.outputs = [
                output for output in cell.get("outputs", []) if output.get("output_type") != "execute_result"
            ]
            cell.execution_count = None
        return cell, resources


_GRADEBOOK: dict = {}  # db_url -> the Gradebook this process reads pages' grades from (the last one)


def _gradebook(db_url: str):
    """A gradebook session kept for the pages of a run: its engine's compiled queries serve every
    page (a feedback process renders one course's pages, one at a time)."""
    from nbgrader.api import Gradebook

    if db_url not in _GRADEBOOK:
        for kept in _GRADEBOOK.values():
            kept.close()
        _GRADEBOOK.clear()
        _GRADEBOOK[db_url] = Gradebook(db_url)
    return _GRADEBOOK[db_url]


@functools.cache
def _get_grades_class():
    from nbgrader import utils
    from nbgrader.api import MissingEntry
    from nbgrader.preprocessors import GetGrades

    from autograder.nbgrader import batch_steps

    class GetGradesAtOnce(GetGrades):
        """nbgrader's GetGrades (each graded cell's score and points, each answer's comment, the
        notebook's score and late penalty), read as plain rows in four queries for the submitted
        notebook (batch_steps.notebook_scores) instead of a query per cell (most of a page's cost,
        with a dozen parts)."""

        def preprocess(self, nb, resources):
            info = resources["nbgrader"]
            gradebook = _gradebook(info["db_url"])
            try:
                self._read(gradebook, nb, info)
            finally:
                gradebook.db.rollback()  # the read ends: the next page reads what the gradebook holds then
            return nb, resources

        def _read(self, gradebook, nb, info) -> None:
            student, notebook_id = info["student"], info["notebook"]
            found = batch_steps.notebook_scores(gradebook, info["assignment"], student, notebook_id)
            if found is None:
                raise MissingEntry(f"No such submitted notebook: {notebook_id}/{info['assignment']}/{student}")
            for cell in nb.cells:
                meta = cell.metadata.get("nbgrader", {})
                grade_id = meta.get("grade_id")
                if utils.is_solution(cell) or utils.is_task(cell):
                    meta["comment"] = found.comments[grade_id]
                if utils.is_grade(cell) or utils.is_task(cell):
                    meta["score"], meta["points"] = found.grades[grade_id]
            late_penalty = found.late_penalty or 0
            info["score"] = found.score - late_penalty
            info["max_score"] = found.max_score
            info["late_penalty"] = late_penalty

    return GetGradesAtOnce


def converter_config(course_config, root: pathlib.Path, assignment: str, student: str):
    """The configuration one student's feedback is rendered with: the course's, for this student,
    with the compact template (unless the course names a feedback template of its own)."""
    from traitlets.config import Config

    config = Config()
    config.merge(course_config)
    config.CourseDirectory.root = str(root)
    config.CourseDirectory.assignment_id = assignment
    config.CourseDirectory.student_id = student
    if "template_name" not in config.HTMLExporter:
        from autograder.nbgrader import maths

        config.HTMLExporter.template_name = TEMPLATE_NAME
        # this package's templates first (the compact feedback template, the offline maths), then nbgrader's
        config.HTMLExporter.extra_template_basedirs = maths.template_basedirs()
    return config


_exporters: dict[tuple, object] = {}


def _feedback_exporter_class():
    from nbconvert.exporters import HTMLExporter, TemplateExporter
    from nbconvert.filters.highlight import Highlight2HTML
    from nbconvert.filters.widgetsdatatypefilter import WidgetsDataTypeFilter

    from autograder.nbgrader import inert, maths

    class RememberedHighlight:
        """nbconvert's code highlighting, remembered: a class's pages show the same course cells
        (given code, test cells) again and again, and highlighting them is a pure function of
        the cell's text, the notebook's lexer and the cell's magics language."""

        LIMIT = 2048

        def __init__(self):
            self.highlighters: dict = {}
            self.done: dict = {}

        def using(self, exporter, lexer):
            if lexer not in self.highlighters:
                self.highlighters[lexer] = Highlight2HTML(pygments_lexer=lexer, parent=exporter)
            highlight = self.highlighters[lexer]

            def highlight_code(source, language=None, metadata=None):
                key = (source, language, lexer, (metadata or {}).get("magics_language"))
                if key not in self.done:
                    if len(self.done) >= self.LIMIT:
                        self.done.clear()
                    self.done[key] = highlight(source, language, metadata)
                return self.done[key]

            return highlight_code

    class FeedbackHTMLExporter(HTMLExporter):
        """nbconvert's HTML exporter without its closing accessibility pass where that pass has
        nothing to do, and with its code highlighting remembered between pages. The pass
        re-parses the whole page with BeautifulSoup (85% of a feedback page's cost, with the
        checks' SVG pictures) to give <img> tags without alt text one, and JupyterLab-template
        cells a tabindex; a feedback page (nbgrader's classic-based template) with no <img> has
        neither, and then the page is returned as rendered. Either way the page is made inert
        (autograder.nbgrader.inert.inert_page: cleaned, and a policy that runs and loads nothing),
        its outputs, where the pass has not run, set in after the clean (inert.Slots)."""

        remembered = None
        PASS_HAS_WORK = ("<img", "jp-Cell-inputWrapper", "jp-OutputArea-output")

        @default("optimistic_validation")
        def _validate_once(self):
            # nbconvert's own option: the notebook is validated once, after the last preprocessor
            # (an invalid one is refused all the same), not after each of the page's six.
            return True

        def from_notebook_node(self, nb, resources=None, **kw):
            language = nb.metadata.get("language_info", {})
            lexer = language.get("pygments_lexer", language.get("name", None))
            if "highlight_code" in self.filters:  # the course configured its own: used as it is
                self.register_filter("highlight_code", self.filters["highlight_code"])
            else:
                self.remembered = self.remembered or RememberedHighlight()
                self.register_filter("highlight_code", self.remembered.using(self, lexer))
            resources = self._init_resources(resources)
            resources[inert.SLOTS] = inert.Slots()  # outputs set in after the page's clean
            self.register_filter(
                "filter_data_type",
                WidgetsDataTypeFilter(notebook_metadata=self._nb_metadata, parent=self, resources=resources),
            )
            page, resources = TemplateExporter.from_notebook_node(self, nb, resources, **kw)
            slots = resources[inert.SLOTS]  # the preprocessors' copy of the resources, as they left it
            if any(marker in text for text in (page, *slots.held.values()) for marker in self.PASS_HAS_WORK):
                resources.pop(maths.PAGE_BUDGET, None)  # the page is rendered again, with its whole budget
                resources[inert.SLOTS] = slots = None  # and the pass sees every output
                page, resources = super().from_notebook_node(nb, resources, **kw)  # the pass has work: run it all
            resources.pop(inert.SLOTS, None)
            return inert.inert_page(page, slots), resources

    return FeedbackHTMLExporter


def _feedback_converter_class():
    from nbconvert.writers import FilesWriter
    from nbgrader.converters import GenerateFeedback

    class OneStudentFeedback(GenerateFeedback):
        """GenerateFeedback whose HTML exporter (its compiled templates and registered
        preprocessors, which hold no per-student state) is kept between students: compiling the
        feedback templates afresh cost more than the rest of a submission's feedback."""

        def start(self) -> None:
            self.init_notebooks()
            self.writer = FilesWriter(parent=self, config=self.config)
            key = (self.coursedir.root, tuple(self.preprocessors), repr(self.config.HTMLExporter))
            if key not in _exporters:
                exporter = _feedback_exporter_class()(parent=self, config=self.config)
                for preprocessor in self.preprocessors:
                    exporter.register_preprocessor(preprocessor)
                _exporters[key] = exporter
            self.exporter = _exporters[key]
            here = os.getcwd()
            os.chdir(self.coursedir.root)  # as nbgrader's converters run
            try:
                self.convert_notebooks()
            finally:
                os.chdir(here)

    return OneStudentFeedback


def _preprocessors(configured: list, withhold_messages: bool) -> list:
    """The course's GenerateFeedback preprocessors, with the score outputs hidden first and,
    when asked, the checks' messages withheld."""
    from nbgrader.preprocessors import GetGrades
    from traitlets.utils.importstring import import_item

    steps = [import_item(step) if isinstance(step, str) else step for step in configured]
    steps = [step for step in steps if step not in (HideScoreOutputs, WithholdCheckMessages)]
    steps = [_get_grades_class() if step is GetGrades else step for step in steps]
    return [HideScoreOutputs, *([WithholdCheckMessages] if withhold_messages else []), *steps]


def generate(course_config, root: pathlib.Path, assignment: str, student: str, withhold_messages: bool) -> None:
    """feedback/<student>/<assignment>/*.html from autograded/, by nbgrader's GenerateFeedback
    (nothing for a student who handed in no notebook: nbgrader would stop on an empty folder)."""
    from nbgrader.coursedir import CourseDirectory

    from autograder.nbgrader.course_view import CourseView

    config = converter_config(course_config, root, assignment, student)
    coursedir = CourseDirectory(config=config)
    if not any(CourseView(coursedir).autograded(student, assignment).glob("*.ipynb")):
        return
    converter = _feedback_converter_class()(coursedir=coursedir, config=config)
    converter.force = True
    converter.preprocessors = _preprocessors(list(converter.preprocessors), withhold_messages)
    converter.start()


def remove(view, student: str, assignment: str) -> bool:
    """Remove a student's pages for the assignment (they describe a grading that no longer
    holds) from the course (a CourseView); True if there were any."""
    folder = view.feedback(student, assignment)
    if folder.is_symlink():
        folder.unlink()
        return True
    if folder.is_dir():
        shutil.rmtree(folder)
        return True
    return False


def ungraded_students(view, assignment: str, students) -> dict[str, str]:
    """Students among `students` with an autograded part that has no score in the course's
    gradebook (a CourseView; a fault of the grader left it for the next run, or it was never
    graded), and why."""
    from nbgrader.api import MissingEntry

    found = {}
    with view.gradebook() as gradebook:
        for student in students:
            try:
                submission = gradebook.find_submission(assignment, student)
            except MissingEntry:
                found[student] = "no submission in the gradebook"
                continue
            for notebook in submission.notebooks:
                for grade in notebook.grades:
                    if grade.cell.cell_type == "code" and grade.auto_score is None and grade.manual_score is None:
                        found[student] = f"{notebook.name}: part {grade.name} has no score"
                        break
                if student in found:
                    break
    return found


# -- rendering many students at once ------------------------------------------------------------


def _setup_pages(root: str, assignment: str, withhold_messages: bool) -> dict:
    """In a feedback worker: the course's configuration, the renderer's classes imported."""
    from autograder.core.course import Course
    from autograder.nbgrader import settings

    logging.basicConfig(level=logging.ERROR)  # nbgrader's per-page info lines are not wanted here
    config = settings.load(Course(root)).config
    _feedback_converter_class(), _feedback_exporter_class()  # their imports, before the first page is asked for
    return {"config": config, "root": pathlib.Path(root), "assignment": assignment, "withhold": withhold_messages}


def _page(context: dict, student: str) -> str | None:
    """Make one student's pages; None, or the traceback of what failed (one student's fault
    stops nobody else)."""
    import traceback

    try:
        generate(context["config"], context["root"], context["assignment"], student, context["withhold"])
    except Exception:  # noqa: BLE001 - reported by the parent
        return traceback.format_exc(limit=8)
    return None


PAGES = processes.Tasks(_setup_pages, page=_page)


class ParallelFeedback:
    """Feedback pages rendered by `jobs` worker processes (started on first use) while the
    caller goes on; `finish()` waits for every page asked for and returns {student: error} for
    those that could not be made.

    Each worker (core/processes.py: a fresh interpreter, never a fork of a grader that runs
    threads) is fed one student at a time by a thread of its own. (Not at a lower priority: on a
    machine shared with other work, a niced worker starves.) A worker that dies costs the page it
    was making (reported) and is replaced."""

    def __init__(self, root: pathlib.Path, assignment: str, jobs: int, withhold_messages=False):
        import queue

        self.root, self.assignment, self.jobs = pathlib.Path(root), assignment, max(1, jobs)
        self.withhold_messages = withhold_messages
        self._todo: queue.Queue = queue.Queue()
        self._done: queue.Queue = queue.Queue()
        self._feeders: list = []
        self._asked = 0

    def _feed(self) -> None:
        """One worker's feeder thread: hand it the next student, wait for its page."""
        worker = processes.Worker(
            "autograder.nbgrader.feedback:PAGES", [str(self.root), self.assignment, self.withhold_messages]
        )
        worker.start()  # at once: its imports and configuration overlap with the caller's work
        try:
            while (student := self._todo.get()) is not None:
                try:
                    error = worker.submit("page", student).result()
                except processes.WorkerDied as died:
                    error = f"the feedback worker {died.why}"
                except processes.TaskFailed as failed:
                    error = str(failed.__cause__)
                self._done.put((student, error))
        finally:
            worker.close()  # one never asked for a page is not waited for

    def start(self) -> None:
        """Start the workers now (render() does it too), so that they are ready when pages are wanted."""
        import threading

        while len(self._feeders) < self.jobs:
            feeder = threading.Thread(target=self._feed, name="feedback-feeder", daemon=True)
            feeder.start()
            self._feeders.append(feeder)

    def render(self, students) -> None:
        for student in students:
            self.start()
            self._todo.put(student)
            self._asked += 1

    def finish(self, on_done=None) -> dict[str, str]:
        """Wait for every page asked for; `on_done(student, error)` as each finishes."""
        errors = {}
        try:
            for _ in range(self._asked):
                student, error = self._done.get()
                if error is not None:
                    errors[student] = error
                if on_done is not None:
                    on_done(student, error)
        finally:
            self.close()
        return errors

    def close(self) -> None:
        """Stop the workers once they have made the pages already asked for (at once if interrupted)."""
        import queue

        if any(feeder.is_alive() for feeder in self._feeders) and self._asked:
            try:  # interrupted: what was not started is not made
                while True:
                    self._todo.get_nowait()
                    self._asked -= 1
            except queue.Empty:
                pass
        for _ in self._feeders:
            self._todo.put(None)
        for feeder in self._feeders:
            feeder.join()
        self._feeders = []

    def __len__(self) -> int:
        return self._asked


def main(course, assignment: str, students: list[str] | None = None, jobs: int | None = None) -> int:
    """`python -m autograder feedback --course ROOT ASSIGNMENT`: every graded student's pages,
    rendered afresh in parallel (after manual grading, say); 0 when every page was made, 3 when
    some could not be (named on stderr). Students with an autograded part left without a score
    get no pages, and lose those of an earlier grading."""
    import sys

    from tqdm import tqdm

    from autograder.nbgrader import settings
    from autograder.nbgrader.course_view import CourseView

    view = CourseView.load(course)
    print(settings.describe(view.settings), file=sys.stderr)
    found = [
        student
        for student, folder in view.students_in(view.coursedir.autograded_directory, assignment)
        if folder.is_dir()
    ]
    chosen = [student for student in found if not students or student in students]
    ungraded = ungraded_students(view, assignment, chosen)
    for student, why in sorted(ungraded.items()):
        removed = remove(view, student, assignment)
        print(
            f"{student}/{assignment}: no feedback ({why})" + ("; the earlier pages are removed" if removed else ""),
            file=sys.stderr,
        )
    renderer = ParallelFeedback(course.root, assignment, jobs or os.cpu_count() or 1)
    wanted = [student for student in chosen if student not in ungraded]
    renderer.render(wanted)
    with tqdm(total=len(wanted), unit="student", desc=f"feedback {assignment}", file=sys.stderr) as progress:
        errors = renderer.finish(on_done=lambda student, error: progress.update(1))
    for student, error in sorted(errors.items()):
        print(f"feedback error: {student}/{assignment}: no feedback pages:\n{error}", file=sys.stderr)
    print(
        f"{assignment}: feedback for {len(wanted) - len(errors)} students in {view.step_root(view.coursedir.feedback_directory)}",
        file=sys.stderr,
    )
    return 3 if errors else 0
