"""Grade a whole class: nbgrader's autograde workflow with sandboxed, parallel grading.

`python -m autograder grade --course ROOT ASSIGNMENT` leaves what `nbgrader autograde
ASSIGNMENT` leaves (the gradebook's scores, review flags, comments and late penalties, and the
autograded/ tree that generate_feedback, export and the formgrader read; a test compares the
two), except that student code runs in the sandbox, many notebooks at a time, with no Jupyter
kernel. Students are committed one at a time, and a marker written last records what was
graded, so an interrupted batch loses nothing and a rerun grades only what is missing or newer.
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

from autograder.core import engine
from autograder.core import notebook as nbio
from autograder.core.course import Course
from autograder.core.errors import UsageError
from autograder.sandbox import supervisor as sandbox

MARKER = ".autograder.json"
CHUNK_NOTEBOOKS_PER_JOB = 8  # notebooks graded per chunk and job: one checks session and one commit a chunk
ENGINE_VERSION = 1  # bump when grading changes, so reruns regrade everything


@dataclasses.dataclass
class StudentWork:
    student: str
    submitted: pathlib.Path
    notebooks: dict[str, pathlib.Path | None]  # notebook id -> submitted file (None: missing)
    fingerprint: str = ""


class NotebookOfStudent(NamedTuple):
    """One notebook of one student's submission of the assignment being graded."""

    student: str
    notebook: str


@dataclasses.dataclass
class Prepared:
    """A submitted notebook ready to grade (nbgrader's sanitised copy), or why there is none."""

    notebook: object | None = None  # nbformat NotebookNode
    reason: str | None = None  # "notebook not submitted", "unreadable notebook: ..."


def course_config(root: pathlib.Path):
    """The course's nbgrader_config.py as a traitlets Config (empty when there is none)."""
    from traitlets.config import Config
    from traitlets.config.loader import PyFileConfigLoader

    if not (root / "nbgrader_config.py").exists():
        return Config()
    return PyFileConfigLoader("nbgrader_config.py", path=str(root)).load_config()


def course_settings(root: pathlib.Path) -> tuple[str, str]:
    """(db_url, course_id) as the course's nbgrader_config.py sets them (nbgrader's defaults otherwise)."""
    coursedir = course_config(root).get("CourseDirectory", {})
    db_url = coursedir.get("db_url") or f"sqlite:///{root / 'gradebook.db'}"
    return db_url, coursedir.get("course_id") or "default_course"


def _fingerprint(work: StudentWork) -> str:
    digest = hashlib.sha256(f"engine {ENGINE_VERSION}".encode())
    for path in sorted(work.submitted.rglob("*")):
        if path.is_file():
            digest.update(str(path.relative_to(work.submitted)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def find_work(course: Course, assignment: str, notebook_ids: list[str], only: list[str] | None) -> list[StudentWork]:
    """Every student's submission of `assignment`, with renamed notebooks matched by content."""
    work = []
    submitted_root = course.root / "submitted"
    for student_dir in sorted(submitted_root.glob(f"*/{assignment}")):
        student = student_dir.parent.name
        if only and student not in only:
            continue
        notebooks = {nb: student_dir / f"{nb}.ipynb" for nb in notebook_ids}
        notebooks = {nb: (path if path.exists() else None) for nb, path in notebooks.items()}
        strays = sorted(p for p in student_dir.glob("*.ipynb") if p.stem not in notebook_ids)
        for notebook_id in [nb for nb, path in notebooks.items() if path is None]:
            notebooks[notebook_id] = _match_renamed(course, strays, assignment, notebook_id)
            if notebooks[notebook_id] is not None:
                strays.remove(notebooks[notebook_id])
        item = StudentWork(student, student_dir, notebooks)
        item.fingerprint = _fingerprint(item)
        work.append(item)
    return work


def _match_renamed(course: Course, candidates, assignment, notebook_id):
    spec = course.find_spec(assignment, notebook_id)
    best, best_count = None, 0
    for path in candidates:
        try:
            count = nbio.count_defined(nbio.read_notebook(str(path)), spec.extract)
        except nbio.UnreadableNotebook:
            continue
        if count > best_count:
            best, best_count = path, count
    return best


def _already_graded(root, assignment, work: StudentWork) -> bool:
    marker = root / "autograded" / work.student / assignment / MARKER
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
        from nbgrader.coursedir import CourseDirectory
        from nbgrader.preprocessors import AssignLatePenalties, ClearOutput, DeduplicateIds

        from autograder.nbgrader.preprocessors import RestoreCourseMetadata

        self.course, self.db_url, self.course_id, self.assignment = course, db_url, course_id, assignment
        self.coursedir = CourseDirectory(root=str(course.root))
        restore = RestoreCourseMetadata()
        restore.course = course
        self.sanitize = [restore, ClearOutput(), DeduplicateIds()]
        late = AssignLatePenalties(config=config) if config is not None else AssignLatePenalties()
        late.init_plugin()
        self.late = late

    def resources(self, student, notebook_id):
        return {"nbgrader": {"student": student, "assignment": self.assignment,
                             "notebook": notebook_id, "db_url": self.db_url}}

    def sanitized(self, path, student, notebook_id):
        import nbformat

        nb = nbformat.from_dict(nbio.read_notebook(str(path)))
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
                timestamp = self.coursedir.get_existing_timestamp(str(item.submitted))
                gradebook.update_or_create_student(item.student)
                gradebook.update_or_create_submission(self.assignment, item.student,
                                                      **({"timestamp": timestamp} if timestamp else {}))
        prepared: dict[NotebookOfStudent, Prepared] = {}
        requests = []
        for item in chunk:
            for notebook_id, path in item.notebooks.items():
                key = NotebookOfStudent(item.student, notebook_id)
                if path is None:
                    prepared[key] = Prepared(reason="notebook not submitted")
                    progress.update(1)
                    continue
                try:
                    nb = self.sanitized(path, item.student, notebook_id)
                except nbio.UnreadableNotebook as error:
                    prepared[key] = Prepared(reason=f"unreadable notebook: {error}")
                    progress.update(1)
                    continue
                prepared[key] = Prepared(notebook=nb)
                requests.append(engine.GradeRequest(
                    str(path), submission_id(self.assignment, key),
                    expected=engine.NotebookKey(self.assignment, notebook_id), notebook=json.loads(json.dumps(nb)),
                ))
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

    sys.modules.setdefault("rfc3987_syntax", None)
    warnings.filterwarnings("ignore", message=".*not in session.*")


class BatchGrader:
    """Grade every submission of one assignment of a course into its gradebook and autograded/."""

    def __init__(self, course: Course, assignment: str, jobs: int | None = None,
                 limits: sandbox.Limits = sandbox.Limits(), isolation: str = "auto", force: bool = False,
                 students: list[str] | None = None, quiet: bool = False, on_recorded=None):
        self.course, self.assignment = course, assignment
        self.quiet = quiet  # no progress bar or summary line (the grading service logs its own)
        # Called with each chunk's StudentWork once committed (the grading service releases
        # their feedback there, while the next chunk's notebooks run in their sandboxes).
        self.on_recorded = on_recorded
        self.jobs = jobs or os.cpu_count() or 1
        self.limits, self.isolation, self.force, self.students = limits, isolation, force, students
        self.db_url, self.course_id = course_settings(course.root)

    def notebook_ids(self) -> list[str]:
        """The assignment's notebooks, as the gradebook lists them."""
        from nbgrader.api import Gradebook, MissingEntry

        with Gradebook(self.db_url, self.course_id) as gradebook:
            try:
                return [nb.name for nb in gradebook.find_assignment(self.assignment).notebooks]
            except MissingEntry:
                raise UsageError(
                    f"assignment {self.assignment!r} is not in the gradebook {self.db_url}: "
                    f"run `nbgrader generate_assignment {self.assignment}` first"
                ) from None

    def run(self) -> list[StudentWork]:
        """Grade what is missing or changed (everything with `force`); returns what was graded."""
        _lighten_imports()
        work = find_work(self.course, self.assignment, self.notebook_ids(), self.students)
        todo = [item for item in work if self.force or not _already_graded(self.course.root, self.assignment, item)]
        if not self.quiet:
            print(f"{self.assignment}: {len(work)} submissions, {len(todo)} to grade "
                  f"({len(work) - len(todo)} already graded and unchanged)", file=sys.stderr)
        if todo:
            self.grade(todo)
        return todo

    def grade(self, todo: list[StudentWork]) -> None:
        """Grade in chunks, pipelined: while one chunk's notebooks run in sandboxes, the main thread
        checks and records the previous chunk and prepares the next."""
        from concurrent.futures import ThreadPoolExecutor

        from tqdm import tqdm

        pipeline = _Pipeline(self.course, self.db_url, self.course_id, self.assignment, course_config(self.course.root))
        isolation = sandbox.choose_isolation(self.isolation)
        total = sum(len(item.notebooks) for item in todo)
        chunk_size = max(1, CHUNK_NOTEBOOKS_PER_JOB * self.jobs // max(1, len(todo[0].notebooks)))
        chunks = [todo[start:start + chunk_size] for start in range(0, len(todo), chunk_size)]
        with tqdm(total=total, unit="notebook", desc=f"grading {self.assignment}", file=sys.stderr,
                  mininterval=0.5, dynamic_ncols=True, disable=self.quiet) as progress, ThreadPoolExecutor(self.jobs) as pool:
            running = None
            for chunk in [*chunks, None]:
                started = None
                if chunk is not None:
                    prepared, requests = pipeline.prepare(chunk, progress)
                    futures = engine.submit_extractions(self.course, pool, requests, self.limits, isolation,
                                                        on_extracted=lambda report: progress.update(1))
                    started = (chunk, prepared, futures)
                if running is not None:
                    done_chunk, done_prepared, done_futures = running
                    reports = engine.check([future.result() for future in done_futures], with_figures=True)
                    by_id = {report.submission_id: report for report in reports}
                    _record_chunk(pipeline, done_chunk, done_prepared, by_id)
                    if self.on_recorded is not None:
                        self.on_recorded(done_chunk)
                running = started


def _record_chunk(pipeline, chunk, prepared, reports):
    """Write the chunk's autograded notebooks and grades in one transaction, then its markers:
    an interruption before the commit leaves those students to be graded again by the rerun."""
    from nbgrader.api import Gradebook

    with Gradebook(pipeline.db_url, pipeline.course_id) as gradebook:
        for item in chunk:
            _record_student(gradebook, pipeline, item, prepared, reports)
        gradebook.db.commit()
    for item in chunk:
        marker = pipeline.course.root / "autograded" / item.student / pipeline.assignment / MARKER
        marker.write_text(json.dumps({"fingerprint": item.fingerprint, "engine": ENGINE_VERSION}))


def _record_student(gradebook, pipeline, item, prepared, reports):
    from autograder.nbgrader.preprocessors import apply_report

    assignment, root = pipeline.assignment, pipeline.course.root
    destination = root / "autograded" / item.student / assignment
    if destination.exists():
        shutil.rmtree(destination)
    destination.mkdir(parents=True)
    ignore = shutil.ignore_patterns("*.ipynb", ".ipynb_checkpoints", "__pycache__", MARKER)
    shutil.copytree(item.submitted, destination, ignore=ignore, dirs_exist_ok=True)
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
        apply_report(state.notebook, reports[submission_id(assignment, key)])
        pipeline.record(gradebook, state.notebook, item.student, notebook_id)
        # Written as nbformat writes notebooks, without its JSON-schema validation: every
        # cell nbgrader reads carries the release's metadata, and the outputs are the grader's.
        with open(destination / f"{notebook_id}.ipynb", "w", encoding="utf-8") as stream:
            json.dump(state.notebook, stream, indent=1, sort_keys=True, ensure_ascii=False)
            stream.write("\n")
