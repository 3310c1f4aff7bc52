"""Grade a whole class: nbgrader's autograde workflow with sandboxed, parallel grading.

`python -m autograder grade --course ROOT ASSIGNMENT` leaves what `nbgrader autograde
ASSIGNMENT` leaves (the gradebook's scores, review flags, comments and late penalties, and the
autograded/ tree that generate_feedback, export and the formgrader read; a test compares the
two), except that student code runs in the sandbox, many notebooks at a time, with no Jupyter
kernel. Students are committed one at a time, and a marker written last records what was
graded, so an interrupted batch loses nothing and a rerun grades only what is missing or newer.
With `feedback`, each committed student's feedback pages are rendered (autograder.nbgrader.feedback,
in worker processes) while the next students are graded, where `nbgrader generate_feedback`
would write them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
import shutil
import sys
from typing import NamedTuple

from autograder.core import engine, safe_files
from autograder.core import names as student_ids
from autograder.core import notebook as nbio
from autograder.core.course import Course
from autograder.core.errors import UsageError
from autograder.nbgrader import feedback as pages
from autograder.nbgrader import settings
from autograder.nbgrader.lock import GraderLock
from autograder.sandbox import supervisor as sandbox

MARKER = ".autograder.json"  # what autograded/ held before markers moved to MARKERS_DIR
MARKERS_DIR = pathlib.Path(".autograder", "graded")  # <course>/.autograder/graded/<student>/<assignment>.json
CHUNK_NOTEBOOKS_PER_JOB = 8  # notebooks graded per chunk and job: one checks session and one commit a chunk
ENGINE_VERSION = 3  # bump when grading changes, so reruns regrade everything
MAX_STRAY_NOTEBOOKS = 16  # notebooks under other names read to find a renamed one


@dataclasses.dataclass
class StudentWork:
    student: str
    submitted: pathlib.Path
    notebooks: dict[str, pathlib.Path | None]  # notebook id -> submitted file (None: missing)
    fingerprint: str = ""
    refused: dict[str, str] = dataclasses.field(default_factory=dict)  # notebook id -> why it scores 0


class NotebookOfStudent(NamedTuple):
    """One notebook of one student's submission of the assignment being graded."""

    student: str
    notebook: str


@dataclasses.dataclass
class Prepared:
    """A submitted notebook ready to grade (nbgrader's sanitised copy), or why there is none."""

    notebook: object | None = None  # nbformat NotebookNode
    reason: str | None = None  # "notebook not submitted", "unreadable notebook: ..."


def _fingerprint(work: StudentWork) -> str:
    digest = hashlib.sha256(f"engine {ENGINE_VERSION}".encode())
    return safe_files.fingerprint(work.submitted, digest).hexdigest()


def with_policy(fingerprint: str, policy: str) -> str:
    """A submission's fingerprint joined with the late policy in force for it: after a due date,
    an extension or the penalty settings change, its grade is no longer current."""
    return hashlib.sha256(f"{fingerprint}\n{policy}".encode()).hexdigest()


def find_work(course: Course, assignment: str, notebook_ids: list[str], only: list[str] | None) -> list[StudentWork]:
    """Every student's submission of `assignment`, with renamed notebooks matched by content.

    Nothing of a submission is followed: a submission folder that is a link, or a notebook that
    is a link, a hard link, a folder, a pipe or a device, is refused with the reason (see
    safe_files), and that notebook scores 0 with the reason as its comment.
    """
    work = []
    submitted_root = course.root / "submitted"
    for student_dir in sorted(submitted_root.glob(f"*/{assignment}")):
        student = student_dir.parent.name
        if only and student not in only:
            continue
        unacceptable = student_ids.refusal(student)  # a glob, markup, control codes, bytes that are not UTF-8
        if unacceptable:
            print(f"warning: {student_ids.shown(student_dir)} is not graded: {unacceptable}", file=sys.stderr)
            continue
        try:
            safe_files.check_inside(student_dir / "notebook", course.root)
        except safe_files.UnsafeFile as error:
            item = StudentWork(
                student,
                student_dir,
                {nb: None for nb in notebook_ids},
                refused={nb: f"the submission is not graded: {error}" for nb in notebook_ids},
            )
            item.fingerprint = hashlib.sha256(f"refused {error}".encode()).hexdigest()
            work.append(item)
            continue
        notebooks: dict[str, pathlib.Path | None] = {}
        refused: dict[str, str] = {}
        for notebook_id in notebook_ids:
            path = student_dir / f"{notebook_id}.ipynb"
            try:
                info = os.lstat(path)
            except OSError:
                notebooks[notebook_id] = None
                continue
            reason = safe_files.refusal(info)
            notebooks[notebook_id] = None if reason else path
            if reason:
                refused[notebook_id] = f"{path.name} is not graded: {reason}"
        missing = [nb for nb, path in notebooks.items() if path is None and nb not in refused]
        if missing:
            # Each stray notebook is read once, and only the first few: a folder of a thousand
            # large notebooks costs no more than a handful.
            strays = sorted(p for p in student_dir.glob("*.ipynb") if p.stem not in notebook_ids)
            defined = _defined_names(strays[:MAX_STRAY_NOTEBOOKS], course.root)
            for notebook_id in missing:
                match = _match_renamed(course, defined, assignment, notebook_id)
                notebooks[notebook_id] = match
                if match is not None:
                    del defined[match]
        item = StudentWork(student, student_dir, notebooks, refused=refused)
        item.fingerprint = _fingerprint(item)
        work.append(item)
    return work


def _defined_names(paths, root) -> dict[pathlib.Path, set[str]]:
    """The names each readable notebook among `paths` appears to define (unreadable ones left out)."""
    defined = {}
    for path in paths:
        try:
            defined[path] = nbio.defined_names(nbio.read_notebook(str(path), root=root))
        except nbio.UnreadableNotebook:
            continue
    return defined


def _match_renamed(course: Course, defined: dict[pathlib.Path, set[str]], assignment, notebook_id):
    """The candidate that defines most of the names `notebook_id`'s checks ask for, if any."""
    spec = course.find_spec(assignment, notebook_id)
    best, best_count = None, 0
    for path, names in defined.items():
        count = sum(1 for name in spec.extract if name in names)
        if count > best_count:
            best, best_count = path, count
    return best


def read_timestamp(submitted: pathlib.Path, root: pathlib.Path):
    """The submission's timestamp.txt as nbgrader reads it, or None (with a warning on stderr)
    when it is absent, not a regular file, too long or not a date: one odd file must not stop
    the batch."""
    from nbgrader.utils import parse_utc

    path = submitted / "timestamp.txt"
    if not os.path.lexists(path):
        return None
    try:
        text = safe_files.read_regular(path, 200, root=root).decode("utf-8").strip()
        return parse_utc(text) if text else None
    except Exception as error:  # noqa: BLE001 - dateutil raises ValueError, OverflowError, TypeError...
        print(
            f"warning: {nbio.quote(path, 300)} is ignored ({nbio.quote(error)}); the submission is treated as on time",
            file=sys.stderr,
        )
        return None


def marker_path(root: pathlib.Path, student: str, assignment: str) -> pathlib.Path:
    """What records that a student's assignment was graded, and from what: in a hidden folder of
    the course, never in autograded/, whose files nbgrader copies into feedback/ for students."""
    return pathlib.Path(root) / MARKERS_DIR / student / f"{assignment}.json"


def _already_graded(root, assignment, work: StudentWork) -> bool:
    marker = marker_path(root, work.student, assignment)
    if not (pathlib.Path(root) / "autograded" / work.student / assignment).is_dir():
        return False  # autograded/ removed or never written: grade again
    try:
        return json.loads(marker.read_text())["fingerprint"] == work.fingerprint
    except (OSError, ValueError, KeyError):
        return False


class _Pipeline:
    """nbgrader's autograde steps around the sandboxed grading, with one gradebook session a chunk.

    Sanitising is RestoreCourseMetadata (the course's cells and metadata, which leaves nbgrader's
    OverwriteCells, OverwriteKernelspec and CheckCellMetadata nothing to do) and nbgrader's
    ClearOutput and DeduplicateIds. Recording does what nbgrader's SaveAutoGrades and
    AssignLatePenalties do, with nbgrader's own functions (determine_grade, compute_checksum,
    the course's late-submission plugin), but in one transaction per student instead of a
    gradebook connection per step and a commit per cell, which dominated the cost of a batch.
    """

    def __init__(self, course: Course, db_url: str, course_id: str, assignment: str, config=None):
        from nbgrader.preprocessors import AssignLatePenalties, ClearOutput, DeduplicateIds

        from autograder.nbgrader.preprocessors import RestoreCourseMetadata

        self.course, self.db_url, self.course_id, self.assignment = course, db_url, course_id, assignment
        restore = RestoreCourseMetadata()
        restore.course = course
        self.sanitize = [restore, ClearOutput(), DeduplicateIds()]
        late = AssignLatePenalties(config=config) if config is not None else AssignLatePenalties()
        late.init_plugin()
        self.late = late

    def resources(self, student, notebook_id):
        return {
            "nbgrader": {
                "student": student,
                "assignment": self.assignment,
                "notebook": notebook_id,
                "db_url": self.db_url,
            }
        }

    def sanitized(self, path, student, notebook_id):
        import nbformat

        nb = nbformat.from_dict(nbio.read_notebook(str(path), root=str(self.course.root)))
        resources = self.resources(student, notebook_id)
        for step in self.sanitize:
            nb, resources = step.preprocess(nb, resources)
        return nb

    def stand_in(self, student, notebook_id):
        """The release notebook, sanitised as a submission is, graded in place of an unreadable one."""
        import nbformat

        nb = nbformat.from_dict(json.loads(json.dumps(self.course.release_notebook(self.assignment, notebook_id))))
        resources = self.resources(student, notebook_id)
        for step in self.sanitize:
            nb, resources = step.preprocess(nb, resources)
        return nb

    def record(self, gradebook, nb, student, notebook_id) -> None:
        """SaveAutoGrades and AssignLatePenalties for one notebook, in the caller's transaction."""
        from nbgrader import utils

        submitted = gradebook.find_submission_notebook(notebook_id, self.assignment, student)
        grades = {grade.name: grade for grade in submitted.grades}
        comments = {comment.name: comment for comment in submitted.comments}
        for cell in nb.cells:
            grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
            if utils.is_grade(cell) and grade_id in grades:
                grade = grades[grade_id]
                grade.auto_score, _ = utils.determine_grade(cell)
                grade.needs_manual_grade = grade.manual_score is not None or grade.auto_score is None
            if (utils.is_solution(cell) or utils.is_task(cell)) and grade_id in comments:
                unchanged = cell.metadata.nbgrader.get("checksum") == utils.compute_checksum(cell)
                comments[grade_id].auto_comment = "No response." if unchanged and not utils.is_task(cell) else None
        submitted.late_submission_penalty = None
        seconds_late = submitted.assignment.total_seconds_late
        if seconds_late > 0:
            penalty = self.late.plugin_inst.late_submission_penalty(student, submitted.score, seconds_late)
            if penalty is not None:
                submitted.late_submission_penalty = self.late._check_late_penalty(submitted, penalty)

    def prepare(self, chunk, progress):
        """Record the submissions, sanitise their notebooks; returns (prepared, grade requests)."""
        from nbgrader.api import Gradebook

        with Gradebook(self.db_url, self.course_id) as gradebook:
            for item in chunk:
                timestamp = read_timestamp(item.submitted, self.course.root)
                gradebook.update_or_create_student(item.student)
                gradebook.update_or_create_submission(
                    self.assignment, item.student, **({"timestamp": timestamp} if timestamp else {})
                )
        prepared: dict[NotebookOfStudent, Prepared] = {}
        requests = []
        for item in chunk:
            for notebook_id, path in item.notebooks.items():
                key = NotebookOfStudent(item.student, notebook_id)
                if notebook_id in item.refused:  # not on the progress bar, which counts what is graded
                    prepared[key] = Prepared(reason=item.refused[notebook_id])
                    continue
                if path is None:
                    prepared[key] = Prepared(reason="notebook not submitted")
                    continue
                try:
                    nb = self.sanitized(path, item.student, notebook_id)
                except nbio.UnreadableNotebook as error:
                    from autograder.nbgrader.preprocessors import unreadable_reason

                    # As under `nbgrader autograde` (TolerantNotebookExporter): the release notebook
                    # stands in, so the autograded notebook, the formgrader and feedback show why.
                    prepared[key] = Prepared(
                        notebook=self.stand_in(item.student, notebook_id), reason=unreadable_reason(path.name, error)
                    )
                    progress.update(1)
                    continue
                except Exception as error:  # noqa: BLE001 - one odd notebook must not stop the class
                    import traceback

                    print(
                        f"error: preparing {item.student}/{notebook_id} failed:\n{traceback.format_exc()}",
                        file=sys.stderr,
                    )
                    prepared[key] = Prepared(
                        reason="the grader could not process this notebook's structure "
                        f"({type(error).__name__}); your instructor has been told"
                    )
                    progress.update(1)
                    continue
                prepared[key] = Prepared(notebook=nb)
                requests.append(
                    engine.GradeRequest(
                        str(path),
                        submission_id(self.assignment, key),
                        expected=engine.NotebookKey(self.assignment, notebook_id),
                        notebook=json.loads(json.dumps(nb)),
                        student_id=item.student,
                    )
                )
        return prepared, requests


def submission_id(assignment: str, key: NotebookOfStudent) -> str:
    """How a student's notebook is named in reports and logs: student/assignment/notebook."""
    return f"{key.student}/{assignment}/{key.notebook}"


def _lighten_imports() -> None:
    """Start-up cost: with the optional rfc3987_syntax installed, importing jsonschema (which
    nbgrader does) compiles an IRI grammar, seconds on every run. nbgrader's schemas use no IRI
    formats, so the batch grader goes without it. Also silence the SQLAlchemy warnings nbgrader's
    own gradebook code triggers on every submission."""
    import warnings

    sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]  # None: "not installed"
    warnings.filterwarnings("ignore", message=".*not in session.*")


class BatchGrader:
    """Grade every submission of one assignment of a course into its gradebook and autograded/."""

    def __init__(
        self,
        course: Course,
        assignment: str,
        jobs: int | None = None,
        limits: sandbox.Limits = sandbox.Limits(),
        isolation: str = "auto",
        force: bool = False,
        students: list[str] | None = None,
        allow_unisolated: bool = False,
        quiet: bool = False,
        on_recorded=None,
        shared_lock: bool = False,
        feedback: bool = False,
    ):
        self.course, self.assignment = course, assignment
        self.feedback = feedback  # render each graded student's feedback pages as part of grading
        self.feedback_errors: dict[str, str] = {}  # student -> why their pages could not be made
        self.quiet = quiet  # no progress bar or summary line (the grading service logs its own)
        # Called with each chunk's StudentWork once committed (the grading service releases
        # their feedback there, while the next chunk's notebooks run in their sandboxes).
        self.on_recorded = on_recorded
        # The grading service's instances grade disjoint students (its queue sees to it), so they
        # share the assignment's lock; a batch run takes it alone.
        self.shared_lock = shared_lock
        self.jobs = jobs or os.cpu_count() or 1
        self.limits, self.isolation, self.force, self.students = limits, isolation, force, students
        self.allow_unisolated = allow_unisolated
        self.flagged: list[str] = []  # student/notebook left ungraded by a fault of the grader
        self.drawn_for_others: list[str] = []  # student/notebook: worked for another student's variant
        _lighten_imports()
        self.settings = settings.load(course)
        self.db_url, self.course_id = self.settings.db_url, self.settings.course_id

    def notebook_ids(self) -> list[str]:
        """The assignment's notebooks, as the gradebook lists them (and its due date, announced)."""
        from nbgrader.api import Gradebook, MissingEntry

        with Gradebook(self.db_url, self.course_id) as gradebook:
            try:
                assignment = gradebook.find_assignment(self.assignment)
            except MissingEntry:
                raise UsageError(
                    f"assignment {self.assignment!r} is not in the {settings.describe(self.settings)}: "
                    f"run `nbgrader generate_assignment --force {self.assignment}` first (it registers the "
                    "assignment; with --force it also rewrites release/, identically)"
                ) from None
            due = assignment.duedate
            print(
                f"{self.assignment}: due {f'{due:%Y-%m-%d %H:%M} UTC' if due else 'never (no due date set)'}",
                file=sys.stderr,
            )
            return [nb.name for nb in assignment.notebooks]

    def late_policies(self) -> dict[str | None, str]:
        """What decides each student's late penalty besides their files: the assignment's due
        date, the student's extension and the late-penalty configuration (key None: no extension)."""
        from nbgrader.api import Gradebook

        config = self.settings.config
        settings_text = json.dumps(
            {
                section: {key: repr(value) for key, value in sorted(dict(config.get(section, {})).items())}
                for section in ("LateSubmissionPlugin", "AssignLatePenalties")
            },
            sort_keys=True,
        )
        from nbgrader.api import MissingEntry

        with Gradebook(self.db_url, self.course_id) as gradebook:
            due = gradebook.find_assignment(self.assignment).duedate
            base = f"due {due.isoformat() if due else None}; {settings_text}"
            policies: dict[str | None, str] = {None: f"{base}; extension None"}
            if self.students:  # only these (the grading service: a few students of a large class)
                for student in self.students:
                    try:
                        extension = gradebook.find_submission(self.assignment, student).extension
                    except MissingEntry:
                        continue
                    policies[student] = f"{base}; extension {extension}"
                return policies
            for submission in gradebook.assignment_submissions(self.assignment):
                policies[submission.student.id] = f"{base}; extension {submission.extension}"
        return policies

    def run(self) -> list[StudentWork]:
        """Grade what is missing or changed (everything with `force`); returns what was graded.
        Raises GraderBusy while another grader works on the same assignment."""
        print(settings.describe(self.settings), file=sys.stderr)
        with GraderLock(self.db_url, self.course_id, self.assignment, shared=self.shared_lock):
            return self._run()

    def _run(self) -> list[StudentWork]:
        renderer = pages.ParallelFeedback(self.course.root, self.assignment, self.jobs) if self.feedback else None
        if renderer is not None:
            renderer.start()  # a worker takes seconds to start: from here on, alongside the rest
        try:
            return self._grade_and_render(renderer)
        finally:
            if renderer is not None:
                renderer.close()

    def _grade_and_render(self, renderer) -> list[StudentWork]:
        work = find_work(self.course, self.assignment, self.notebook_ids(), self.students)
        policies = self.late_policies()
        for item in work:
            item.fingerprint = with_policy(item.fingerprint, policies.get(item.student, policies[None]))
        todo = [item for item in work if self.force or not _already_graded(self.course.root, self.assignment, item)]
        if not self.quiet:
            print(
                f"{self.assignment}: {len(work)} submissions, {len(todo)} to grade "
                f"({len(work) - len(todo)} already graded and unchanged)",
                file=sys.stderr,
            )
        if renderer is not None:
            # Unchanged students whose pages are missing or older than their grading get them now.
            graded = {item.student for item in todo}
            renderer.render(self._without_current_feedback([item for item in work if item.student not in graded]))
        if todo:
            self.grade(todo, renderer)
        if renderer is not None:
            self._finish_feedback(renderer)
        return todo

    def _without_current_feedback(self, work: list[StudentWork]) -> list[str]:
        """Students among `work` (graded before) whose feedback pages are missing or older than
        their autograded notebooks, and whose every autograded part has a score."""
        root = self.course.root
        wanted = []
        for item in work:
            autograded = sorted((root / "autograded" / item.student / self.assignment).glob("*.ipynb"))
            folder = pages.feedback_folder(root, item.student, self.assignment)
            for notebook in autograded:
                page = folder / f"{notebook.stem}.html"
                if not page.is_file() or page.stat().st_mtime < notebook.stat().st_mtime:
                    wanted.append(item.student)
                    break
        ungraded = pages.ungraded_students(self.db_url, self.course_id, self.assignment, wanted) if wanted else {}
        return [student for student in wanted if student not in ungraded]

    def _finish_feedback(self, renderer: pages.ParallelFeedback) -> None:
        count = len(renderer)
        if count and not self.quiet:
            print(f"{self.assignment}: finishing feedback pages ({count} students)", file=sys.stderr)
        self.feedback_errors = renderer.finish()
        for student, error in sorted(self.feedback_errors.items()):
            print(f"feedback error: {student}/{self.assignment}: no feedback pages:\n{error}", file=sys.stderr)
        if count and not self.quiet:
            where = self.course.root / "feedback"
            print(
                f"{self.assignment}: feedback for {count - len(self.feedback_errors)} students in {where} "
                "(nbgrader release_feedback publishes it)",
                file=sys.stderr,
            )

    def grade(self, todo: list[StudentWork], renderer: pages.ParallelFeedback | None = None) -> None:
        """Grade in chunks, pipelined: while one chunk's notebooks run in sandboxes, the main thread
        checks and records the previous chunk and prepares the next (and, with a `renderer`,
        hands each recorded chunk's students to it)."""
        from concurrent.futures import ThreadPoolExecutor

        from tqdm import tqdm

        pipeline = _Pipeline(self.course, self.db_url, self.course_id, self.assignment, self.settings.config)
        isolation = sandbox.choose_isolation(self.isolation, self.allow_unisolated)
        total = sum(
            1
            for item in todo
            for notebook_id, path in item.notebooks.items()
            if path is not None and notebook_id not in item.refused
        )
        missing = sum(len(item.notebooks) for item in todo) - total
        chunk_size = max(1, CHUNK_NOTEBOOKS_PER_JOB * self.jobs // max(1, len(todo[0].notebooks)))
        chunks = [todo[start : start + chunk_size] for start in range(0, len(todo), chunk_size)]
        with (
            tqdm(
                total=total,
                unit="notebook",
                desc=f"grading {self.assignment}",
                file=sys.stderr,
                mininterval=0.5,
                dynamic_ncols=True,
                disable=self.quiet,
            ) as progress,
            ThreadPoolExecutor(self.jobs) as pool,
        ):
            if missing:
                progress.set_postfix_str(f"{missing} not submitted or refused, scored 0", refresh=False)
            running = None
            for chunk in [*chunks, None]:
                started = None
                if chunk is not None:
                    prepared, requests = pipeline.prepare(chunk, progress)
                    futures = engine.submit_extractions(
                        self.course,
                        pool,
                        requests,
                        self.limits,
                        isolation,
                        on_extracted=lambda report: progress.update(1),
                    )
                    started = (chunk, prepared, futures)
                if running is not None:
                    done_chunk, done_prepared, done_futures = running
                    reports = engine.check([future.result() for future in done_futures], with_figures=True)
                    by_id = {report.submission_id: report for report in reports}
                    self.drawn_for_others += [
                        f"{report.submission_id}: {report.variant_note}" for report in reports if report.drawn_for_other
                    ]
                    faulty = self._grader_faults(done_chunk, by_id)
                    # A grader fault is never a silent 0: no score, flagged for manual grading with
                    # the reason, and no marker, so that the next run grades the student again.
                    recorded = [item for item in done_chunk if item.student not in faulty]
                    _record_chunk(pipeline, recorded, done_prepared, by_id)
                    _flag_grader_faults(pipeline, [item for item in done_chunk if item.student in faulty], by_id)
                    if renderer is not None:
                        renderer.render([item.student for item in recorded])
                    if self.on_recorded is not None:
                        self.on_recorded(recorded)
                running = started
        if self.drawn_for_others:
            print(
                f"variants: {len(self.drawn_for_others)} notebooks were worked for another student's variant "
                "(graded against the submitter's own):\n" + "\n".join(f"  {line}" for line in self.drawn_for_others),
                file=sys.stderr,
            )
        if self.flagged:
            print(
                f"grader error: {len(self.flagged)} notebooks were NOT graded (left for the next run): "
                + ", ".join(self.flagged),
                file=sys.stderr,
            )

    def _grader_faults(self, chunk, reports) -> set[str]:
        """Students of the chunk with a notebook the grader failed on (noted in `flagged`)."""
        faulty = set()
        for item in chunk:
            for notebook_id in item.notebooks:
                report = reports.get(submission_id(self.assignment, NotebookOfStudent(item.student, notebook_id)))
                if report is not None and report.grader_error:
                    faulty.add(item.student)
                    self.flagged.append(f"{item.student}/{notebook_id}")
                    print(
                        f"grader error: {item.student}/{self.assignment}/{notebook_id} not graded: "
                        f"{report.grader_error}",
                        file=sys.stderr,
                    )
        return faulty


def _record_chunk(pipeline, chunk, prepared, reports):
    """Write the chunk's autograded notebooks and grades in one transaction, then its markers:
    an interruption before the commit leaves those students to be graded again by the rerun."""
    from nbgrader.api import Gradebook

    with Gradebook(pipeline.db_url, pipeline.course_id) as gradebook:
        for item in chunk:
            _record_student(gradebook, pipeline, item, prepared, reports)
        gradebook.db.commit()
    for item in chunk:
        marker = marker_path(pipeline.course.root, item.student, pipeline.assignment)
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps({"fingerprint": item.fingerprint, "engine": ENGINE_VERSION}))


def _flag_grader_faults(pipeline, items, reports) -> None:
    """Leave every notebook of these students without a score, marked for manual grading with
    the grader's reason (the next run grades them again: they get no marker)."""
    from nbgrader.api import Gradebook

    if not items:
        return
    for item in items:
        # No marker (a run that graded these files before must not make the next run skip
        # them), and no feedback pages: those of an earlier grading would contradict the
        # gradebook, which now holds no score.
        marker_path(pipeline.course.root, item.student, pipeline.assignment).unlink(missing_ok=True)
        pages.remove(pipeline.course.root, item.student, pipeline.assignment)
    with Gradebook(pipeline.db_url, pipeline.course_id) as gradebook:
        for item in items:
            for notebook_id in item.notebooks:
                report = reports.get(submission_id(pipeline.assignment, NotebookOfStudent(item.student, notebook_id)))
                reason = (
                    f"NOT GRADED, grader error: {report.grader_error}"
                    if report and report.grader_error
                    else "NOT GRADED: another notebook of this submission hit a grader error"
                )
                notebook = gradebook.find_submission_notebook(notebook_id, pipeline.assignment, item.student)
                for grade in notebook.grades:
                    grade.auto_score, grade.needs_manual_grade = None, True
                for comment in notebook.comments:
                    comment.auto_comment = reason
        gradebook.db.commit()


def _record_student(gradebook, pipeline, item, prepared, reports):
    from autograder.nbgrader.preprocessors import apply_report, renamed_from, renamed_note

    assignment, root = pipeline.assignment, pipeline.course.root
    destination = root / "autograded" / item.student / assignment
    # The marker goes before anything of the old grading does: interrupted from here to the
    # commit, the student counts as not graded.
    marker_path(root, item.student, assignment).unlink(missing_ok=True)
    if destination.exists():
        shutil.rmtree(destination)
    destination.mkdir(parents=True)
    ignore = shutil.ignore_patterns("*.ipynb", ".ipynb_checkpoints", "__pycache__", MARKER)
    if not any(reason.startswith("the submission is not graded") for reason in item.refused.values()):
        # The student's other files, read as hostile: no link followed, no device, pipe or hard
        # link copied, nothing over the size cap; the course's own files then overwrite them.
        left_out = safe_files.copy_submitted_files(
            item.submitted, destination, skip=lambda relative: any(ignore(None, [part]) for part in relative.parts)
        )
        for line in left_out:
            print(f"warning: {item.student}/{assignment}/{nbio.quote(line, 300)}", file=sys.stderr)
    source = pipeline.course.source / assignment
    shutil.copytree(source, destination, ignore=ignore, dirs_exist_ok=True)
    for notebook_id in item.notebooks:
        key = NotebookOfStudent(item.student, notebook_id)
        state = prepared[key]
        if state.notebook is None:
            # Missing or unreadable: every part scores 0 (nbgrader does the same for missing
            # files), and the reason is left as the automatic comment of every part.
            notebook = gradebook.find_submission_notebook(notebook_id, assignment, item.student)
            for grade in notebook.grades:
                grade.auto_score, grade.needs_manual_grade = 0, False
            for comment in notebook.comments:
                comment.auto_comment = state.reason
            continue
        if state.reason is not None:  # unreadable: the release notebook, every part 0 with the reason
            spec = pipeline.course.find_spec(assignment, notebook_id)
            report = engine.Report(
                notebook=notebook_id,
                submission_id=submission_id(assignment, key),
                spec=spec,
                graded_as=spec.key if spec else None,
                error=state.reason,
            )
        else:
            report = reports[submission_id(assignment, key)]
        submitted_as = item.notebooks[notebook_id]
        original = (
            submitted_as.name
            if submitted_as is not None and submitted_as.stem != notebook_id
            else renamed_from(root, item.student, assignment, notebook_id)
        )
        apply_report(state.notebook, report, renamed_note(original, notebook_id) if original else None)
        pipeline.record(gradebook, state.notebook, item.student, notebook_id)
        # Written as nbformat writes notebooks, without its JSON-schema validation: every
        # cell nbgrader reads carries the release's metadata, and the outputs are the grader's.
        with open(destination / f"{notebook_id}.ipynb", "w", encoding="utf-8") as stream:
            json.dump(state.notebook, stream, indent=1, sort_keys=True, ensure_ascii=False)
            stream.write("\n")
