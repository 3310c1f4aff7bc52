"""Grade a whole class: nbgrader's autograde workflow with sandboxed, parallel grading.

`python -m autograder grade --course ROOT ASSIGNMENT` leaves what `nbgrader autograde
ASSIGNMENT` leaves (the gradebook's scores, review flags, comments and late penalties, and the
autograded/ tree that generate_feedback, export and the formgrader read; a test compares the
two), except that student code runs in the sandbox, many notebooks at a time, with no Jupyter
kernel. Each chunk of students is committed in one transaction, and a marker written after it
records what was graded, so an interrupted batch loses nothing and a rerun grades only what is missing or newer.
With `feedback`, each committed student's feedback pages are rendered (autograder.nbgrader.feedback,
in worker processes) while the next students are graded, where `nbgrader generate_feedback`
would write them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import os
import pathlib
import shutil
import sys

from autograder.core import engine, processes, safe_files
from autograder.core import names as student_ids
from autograder.core import notebook as nbio
from autograder.core.course import Course
from autograder.core.errors import UsageError
from autograder.nbgrader import batch_steps, settings
from autograder.nbgrader import feedback as pages
from autograder.nbgrader.course_view import CourseView, SubmissionKey
from autograder.nbgrader.lock import GraderLock
from autograder.sandbox import supervisor as sandbox

MARKER = ".autograder.json"  # what autograded/ held before markers moved to MARKERS_DIR
MARKERS_DIR = pathlib.Path(".autograder", "graded")  # <course>/.autograder/graded/<student>/<assignment>.json
CHUNK_NOTEBOOKS_PER_JOB = 8  # notebooks graded per chunk and job: one checks session and one commit a chunk
ENGINE_VERSION = 3  # bump when grading changes, so reruns regrade everything
MAX_STRAY_NOTEBOOKS = 16  # notebooks under other names read to find a renamed one


@dataclasses.dataclass
class HandedIn:
    """What a student handed in for one notebook of the assignment, decided once at intake
    (`find_work`; `unreadable` when the file is parsed) and carried to grading, recording and
    feedback: the file to grade, or why none is graded (every part then scores 0 with the reason)."""

    path: pathlib.Path | None = None  # the file graded (None: nothing to grade)
    refused: str | None = None  # why the file handed in is not graded (a link, a device, ...)
    renamed_from: str | None = None  # the name it was handed in under, when not the notebook's own
    unreadable: str | None = None  # why it could not be parsed (the release notebook stands in)

    @property
    def reason(self) -> str | None:
        """Why this notebook scores 0, if it does: refused, unreadable or not handed in."""
        if self.refused or self.unreadable:
            return self.refused or self.unreadable
        return None if self.path is not None else "notebook not submitted"

    @property
    def gradable(self) -> bool:
        """A file to run: handed in and not refused (an unreadable one is found when parsed)."""
        return self.path is not None and self.refused is None


@dataclasses.dataclass
class StudentWork:
    student: str
    submitted: pathlib.Path
    notebooks: dict[str, HandedIn]  # notebook id -> what was handed in for it
    fingerprint: str = ""


@dataclasses.dataclass
class Prepared:
    """A submitted notebook ready to grade (nbgrader's sanitised copy), or why there is none."""

    notebook: object | None = None  # nbformat NotebookNode; for an unreadable one, the release's
    reason: str | None = None  # HandedIn.reason, or a fault of the grader's preparing it


def _fingerprint(work: StudentWork) -> str:
    digest = hashlib.sha256(f"engine {ENGINE_VERSION}".encode())
    return safe_files.fingerprint(work.submitted, digest).hexdigest()


def with_policy(fingerprint: str, policy: str) -> str:
    """A submission's fingerprint joined with the late policy in force for it: after a due date,
    an extension or the penalty settings change, its grade is no longer current."""
    return hashlib.sha256(f"{fingerprint}\n{policy}".encode()).hexdigest()


def find_work(
    course: Course, assignment: str, notebook_ids: list[str], only: list[str] | None, view: CourseView | None = None
) -> list[StudentWork]:
    """Every student's submission of `assignment`, with renamed notebooks matched by content.

    Nothing of a submission is followed: a submission folder that is a link, or a notebook that
    is a link, a hard link, a folder, a pipe or a device, is refused with the reason (see
    safe_files), and that notebook scores 0 with the reason as its comment.
    """
    from autograder.nbgrader.preprocessors import renamed_from

    view = view or CourseView.load(course)
    work = []
    for student, student_dir in view.students_in(view.coursedir.submitted_directory, assignment):
        if only and student not in only:
            continue
        unacceptable = student_ids.refusal(student)  # a glob, markup, control codes, bytes that are not UTF-8
        if unacceptable:
            print(f"warning: {student_ids.shown(student_dir)} is not graded: {unacceptable}", file=sys.stderr)
            continue
        try:
            safe_files.check_inside(student_dir / "notebook", course.root)
        except safe_files.UnsafeFile as error:
            reason = f"the submission is not graded: {error}"
            item = StudentWork(student, student_dir, {nb: HandedIn(refused=reason) for nb in notebook_ids})
            item.fingerprint = hashlib.sha256(f"refused {error}".encode()).hexdigest()
            work.append(item)
            continue
        notebooks: dict[str, HandedIn] = {}
        for notebook_id in notebook_ids:
            path = student_dir / f"{notebook_id}.ipynb"
            try:
                info = os.lstat(path)
            except OSError:
                notebooks[notebook_id] = HandedIn()
                continue
            refusal = safe_files.refusal(info)
            notebooks[notebook_id] = (
                HandedIn(refused=f"{path.name} is not graded: {refusal}")
                if refusal
                else HandedIn(path, renamed_from=renamed_from(student_dir, course.root, notebook_id))
            )
        missing = [nb for nb, handed in notebooks.items() if handed.path is None and handed.refused is None]
        if missing:
            # Each stray notebook is read once, and only the first few: a folder of a thousand
            # large notebooks costs no more than a handful.
            strays = sorted(p for p in student_dir.glob("*.ipynb") if p.stem not in notebook_ids)
            defined = defined_names(strays[:MAX_STRAY_NOTEBOOKS], course.root)
            for notebook_id in missing:
                match = match_renamed(course, defined, assignment, notebook_id)
                if match is not None:
                    notebooks[notebook_id] = HandedIn(match, renamed_from=match.name)
                    del defined[match]
        item = StudentWork(student, student_dir, notebooks)
        item.fingerprint = _fingerprint(item)
        work.append(item)
    return work


def defined_names(paths, root) -> dict[pathlib.Path, set[str]]:
    """The names each readable notebook among `paths` appears to define (unreadable ones left out)."""
    defined = {}
    for path in paths:
        try:
            defined[path] = nbio.defined_names(nbio.read_notebook(str(path), root=root))
        except nbio.UnreadableNotebook:
            continue
    return defined


def match_renamed(course: Course, defined: dict[pathlib.Path, set[str]], assignment, notebook_id):
    """The candidate that defines most of the names `notebook_id`'s checks ask for, if any: a
    notebook handed in under another name (`questions-Copy1.ipynb`) is graded as the one missing.
    The batch grader's intake (`find_work`) and nbgrader's pre-convert hook decide by this."""
    spec = course.find_spec(assignment, notebook_id)
    if spec is None:
        return None
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


def _already_graded(view: CourseView, assignment, work: StudentWork) -> bool:
    marker = marker_path(view.root, work.student, assignment)
    if not view.autograded(work.student, assignment).is_dir():
        return False  # autograded/ removed or never written: grade again
    try:
        return json.loads(marker.read_text())["fingerprint"] == work.fingerprint
    except (OSError, ValueError, KeyError):
        return False


def configured_steps(config, name: str) -> list:
    """nbgrader's `Autograde.<name>` (sanitize_preprocessors, autograde_preprocessors) as the
    course configures it (nbgrader's default when it does not): classes, in order."""
    from nbgrader.converters import Autograde
    from traitlets.utils.importstring import import_item

    section = config.get("Autograde", {})
    steps = section[name] if name in section else Autograde.class_traits()[name].default()
    return [import_item(step) if isinstance(step, str) else step for step in steps]


class Pipeline:
    """nbgrader's autograde pipeline as the course configures it (`Autograde.sanitize_preprocessors`
    and `autograde_preprocessors`), run by the batch grader: the configured steps run, in order (less those an earlier step
    supersedes, and each with its once-per-run equivalent in `batch_steps` where it has one),
    except that the grading step (SandboxedGrading, or nbgrader's Execute) is the parallel engine,
    run between `prepare` and `finish`, and the recording steps (SaveAutoGrades and
    AssignLatePenalties) are `record`, which does what they do with nbgrader's own functions
    (determine_grade, compute_checksum, the course's late-submission plugin) in the caller's
    transaction instead of a gradebook connection per step and a commit per cell, which dominated
    the cost of a batch. A step a course adds therefore runs on both paths.
    """

    RECORDING = "record"  # stands in `after` for the recording steps

    def __init__(self, course: Course, view: CourseView, assignment: str):
        from nbgrader.preprocessors import AssignLatePenalties, Execute, SaveAutoGrades

        from autograder.nbgrader.preprocessors import CoursePreprocessor, SandboxedGrading

        config = view.config  # the course's nbgrader configuration
        self.course, self.view, self.assignment = course, view, assignment

        def made(step):
            instance = batch_steps.run_once_equivalent(step)(config=config)
            if isinstance(instance, CoursePreprocessor):
                instance.course = course
            return instance

        sanitize = configured_steps(config, "sanitize_preprocessors")
        # A step may do another's work (RestoreCourseMetadata restores the cells and kernelspec that
        # nbgrader's OverwriteCells and OverwriteKernelspec then find unchanged): the batch leaves out
        # what an earlier step supersedes, and with it a gradebook connection per notebook and step.
        superseded: set[str] = set()
        kept = []
        for step in sanitize:
            if f"{step.__module__}.{step.__name__}" not in superseded and step.__name__ not in superseded:
                kept.append(step)
            superseded.update(getattr(step, "supersedes", ()))
        self.sanitize = [made(step) for step in kept]
        autograde = configured_steps(config, "autograde_preprocessors")
        grading = next((i for i, step in enumerate(autograde) if issubclass(step, (SandboxedGrading, Execute))), None)
        if grading is None:
            raise UsageError("the course's Autograde.autograde_preprocessors has no grading step (SandboxedGrading)")
        self.before = [made(step) for step in autograde[:grading]]  # after sanitising, before grading
        self.after: list = []  # after grading: steps, and RECORDING where the recording steps were
        for step in autograde[grading + 1 :]:
            if issubclass(step, (SaveAutoGrades, AssignLatePenalties)):
                if self.RECORDING not in self.after:
                    self.after.append(self.RECORDING)
            else:
                self.after.append(made(step))
        if self.RECORDING not in self.after:
            self.after.append(self.RECORDING)
        late = AssignLatePenalties(config=config)
        late.init_plugin()
        self.late = late

    @functools.cached_property
    def gradebook(self):
        """The run's gradebook session (each chunk one transaction in it): one engine, whose
        compiled statements serve every chunk, instead of a connection and schema check a chunk."""
        return self.view.gradebook()

    def close(self) -> None:
        if "gradebook" in self.__dict__:
            self.__dict__.pop("gradebook").close()

    def resources(self, student, notebook_id):
        return {
            "nbgrader": {
                "student": student,
                "assignment": self.assignment,
                "notebook": notebook_id,
                "db_url": self.view.db_url,
                "course_id": self.view.course_id,
            },
            "metadata": {"name": notebook_id},
        }

    def _run(self, steps, nb, resources):
        for step in steps:
            nb, resources = step(nb, resources)  # as nbconvert calls it: a disabled step does nothing
        return nb

    def sanitized(self, path, student, notebook_id):
        """The submitted notebook through the sanitising steps and those before grading."""
        import nbformat

        nb = nbformat.from_dict(nbio.read_notebook(str(path), root=str(self.course.root)))
        return self._run([*self.sanitize, *self.before], nb, self.resources(student, notebook_id))

    def stand_in(self, student, notebook_id):
        """The release notebook, sanitised as a submission is, graded in place of an unreadable one."""
        import nbformat

        nb = nbformat.from_dict(json.loads(json.dumps(self.course.release_notebook(self.assignment, notebook_id))))
        return self._run([*self.sanitize, *self.before], nb, self.resources(student, notebook_id))

    def finish(self, nb, student, notebook_id, submitted):
        """The steps after grading, recording (in the caller's transaction) where nbgrader records;
        `submitted` is the notebook's gradebook row."""
        resources = self.resources(student, notebook_id)
        for step in self.after:
            if step == self.RECORDING:
                self.record(nb, student, submitted)
            else:
                nb, resources = step(nb, resources)
        return nb

    def submitted_notebooks(self, gradebook, students) -> dict:
        """The chunk's submitted notebooks, by (student, notebook id), fetched at once."""
        return batch_steps.submitted_notebooks(gradebook, self.assignment, students)

    def record(self, nb, student, submitted) -> None:
        """SaveAutoGrades and AssignLatePenalties for one notebook (`submitted`: its gradebook
        row), in the caller's transaction."""
        from nbgrader import utils

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
        with batch_steps.one_transaction(self.gradebook) as gradebook:
            timestamps = {item.student: read_timestamp(item.submitted, self.course.root) for item in chunk}
            for student in timestamps:
                gradebook.update_or_create_student(student)
            batch_steps.update_or_create_submissions(gradebook, self.assignment, timestamps)
        prepared: dict[SubmissionKey, Prepared] = {}
        requests = []
        for item in chunk:
            for notebook_id, handed in item.notebooks.items():
                key = SubmissionKey(item.student, self.assignment, notebook_id)
                path = handed.path
                if path is None or not handed.gradable:  # not on the progress bar, which counts what is graded
                    prepared[key] = Prepared(reason=handed.reason)
                    continue
                try:
                    nb = self.sanitized(path, item.student, notebook_id)
                except nbio.UnreadableNotebook as error:
                    from autograder.nbgrader.preprocessors import unreadable_reason

                    # As under `nbgrader autograde` (TolerantNotebookExporter): the release notebook
                    # stands in, so the autograded notebook, the formgrader and feedback show why.
                    handed.unreadable = unreadable_reason(path.name, error)
                    prepared[key] = Prepared(notebook=self.stand_in(item.student, notebook_id), reason=handed.reason)
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
                        str(key),
                        expected=engine.NotebookKey(self.assignment, notebook_id),
                        notebook=json.loads(json.dumps(nb)),
                        student_id=item.student,
                    )
                )
        return prepared, requests


def not_registered(loaded: settings.CourseSettings, assignment: str) -> UsageError:
    return UsageError(
        f"assignment {assignment!r} is not in the {settings.describe(loaded)}: "
        f"run `nbgrader generate_assignment --force {assignment}` first (it registers the "
        "assignment; with --force it also rewrites release/, identically)"
    )


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
        self.flagged: list[SubmissionKey] = []  # left ungraded by a fault of the grader
        self.drawn_for_others: list[str] = []  # student/notebook: worked for another student's variant
        processes.prepare_process()
        self.view = CourseView.load(course)
        self.settings = self.view.settings

    def notebook_ids(self) -> list[str]:
        """The assignment's notebooks, as the gradebook lists them (and its due date, announced)."""
        from nbgrader.api import MissingEntry

        with self.view.gradebook() as gradebook:
            try:
                assignment = gradebook.find_assignment(self.assignment)
            except MissingEntry:
                raise not_registered(self.settings, self.assignment) from None
            due = assignment.duedate
            print(
                f"{self.assignment}: due {f'{due:%Y-%m-%d %H:%M} UTC' if due else 'never (no due date set)'}",
                file=sys.stderr,
            )
            return [nb.name for nb in assignment.notebooks]

    def late_policies(self) -> dict[str | None, str]:
        """What decides each student's late penalty besides their files: the assignment's due
        date, the student's extension and the late-penalty configuration (key None: no extension)."""
        config = self.settings.config
        settings_text = json.dumps(
            {
                section: {key: repr(value) for key, value in sorted(dict(config.get(section, {})).items())}
                for section in ("LateSubmissionPlugin", "AssignLatePenalties")
            },
            sort_keys=True,
        )
        from nbgrader.api import MissingEntry

        with self.view.gradebook() as gradebook:
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
        with GraderLock(self.view.db_url, self.view.course_id, self.assignment, shared=self.shared_lock):
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
        work = find_work(self.course, self.assignment, self.notebook_ids(), self.students, self.view)
        policies = self.late_policies()
        for item in work:
            item.fingerprint = with_policy(item.fingerprint, policies.get(item.student, policies[None]))
        todo = [item for item in work if self.force or not _already_graded(self.view, self.assignment, item)]
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
        wanted = []
        for item in work:
            autograded = sorted(self.view.autograded(item.student, self.assignment).glob("*.ipynb"))
            folder = self.view.feedback(item.student, self.assignment)
            for notebook in autograded:
                page = folder / f"{notebook.stem}.html"
                if not page.is_file() or page.stat().st_mtime < notebook.stat().st_mtime:
                    wanted.append(item.student)
                    break
        ungraded = pages.ungraded_students(self.view, self.assignment, wanted) if wanted else {}
        return [student for student in wanted if student not in ungraded]

    def _finish_feedback(self, renderer: pages.ParallelFeedback) -> None:
        count = len(renderer)
        if count and not self.quiet:
            print(f"{self.assignment}: finishing feedback pages ({count} students)", file=sys.stderr)
        self.feedback_errors = renderer.finish()
        for student, error in sorted(self.feedback_errors.items()):
            print(f"feedback error: {student}/{self.assignment}: no feedback pages:\n{error}", file=sys.stderr)
        if count and not self.quiet:
            where = self.view.step_root(self.view.coursedir.feedback_directory)
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

        isolation = sandbox.choose_isolation(self.isolation, self.allow_unisolated)
        total = sum(1 for item in todo for handed in item.notebooks.values() if handed.gradable)
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
            contextlib.closing(Pipeline(self.course, self.view, self.assignment)) as pipeline,
            engine.CheckSession([spec for spec in self.course.specs if spec.assignment == self.assignment]) as checks,
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
                    reports = engine.check(
                        [future.result() for future in done_futures], with_figures=True, checks=checks
                    )
                    by_id = {report.submission_id: report for report in reports}
                    self.drawn_for_others += [
                        f"{report.submission_id}: {report.variant.note}"
                        for report in reports
                        if report.variant.drawn_for_other
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
                + ", ".join(f"{key.student}/{key.notebook}" for key in self.flagged),
                file=sys.stderr,
            )

    def _grader_faults(self, chunk, reports) -> set[str]:
        """Students of the chunk with a notebook the grader failed on (noted in `flagged`)."""
        faulty = set()
        for item in chunk:
            for notebook_id in item.notebooks:
                key = SubmissionKey(item.student, self.assignment, notebook_id)
                report = reports.get(str(key))
                if report is not None and report.grader_error:
                    faulty.add(item.student)
                    self.flagged.append(key)
                    print(
                        f"grader error: {item.student}/{self.assignment}/{notebook_id} not graded: "
                        f"{report.grader_error}",
                        file=sys.stderr,
                    )
        return faulty


def _record_chunk(pipeline, chunk, prepared, reports):
    """Write each student's autograded notebooks and grades in one transaction (one gradebook
    session a chunk), then the student's marker: an interruption before a student's commit
    leaves that student to be graded again by the rerun."""
    with batch_steps.one_transaction(pipeline.gradebook) as gradebook:
        rows = pipeline.submitted_notebooks(gradebook, [item.student for item in chunk])
        for item in chunk:
            _record_student(gradebook, pipeline, item, prepared, reports, rows)
    for item in chunk:  # after the commit: a marker always speaks of grades in the gradebook
        marker = marker_path(pipeline.course.root, item.student, pipeline.assignment)
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps({"fingerprint": item.fingerprint, "engine": ENGINE_VERSION}))


def _flag_grader_faults(pipeline, items, reports) -> None:
    """Leave every notebook of these students without a score, marked for manual grading with
    the grader's reason (the next run grades them again: they get no marker)."""
    if not items:
        return
    for item in items:
        # No marker (a run that graded these files before must not make the next run skip
        # them), and no feedback pages: those of an earlier grading would contradict the
        # gradebook, which now holds no score.
        marker_path(pipeline.course.root, item.student, pipeline.assignment).unlink(missing_ok=True)
        pages.remove(pipeline.view, item.student, pipeline.assignment)
    gradebook = pipeline.gradebook
    for item in items:
        for notebook_id in item.notebooks:
            report = reports.get(str(SubmissionKey(item.student, pipeline.assignment, notebook_id)))
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


def _record_student(gradebook, pipeline, item, prepared, reports, rows):
    from autograder.nbgrader.preprocessors import apply_report, renamed_note

    assignment, root = pipeline.assignment, pipeline.course.root
    destination = pipeline.view.autograded(item.student, assignment)
    # The marker goes before anything of the old grading does: interrupted from here to the
    # commit, the student counts as not graded.
    marker_path(root, item.student, assignment).unlink(missing_ok=True)
    if destination.exists():
        shutil.rmtree(destination)
    destination.mkdir(parents=True)
    ignore = shutil.ignore_patterns("*.ipynb", ".ipynb_checkpoints", "__pycache__", MARKER)
    if not any((handed.refused or "").startswith("the submission is not graded") for handed in item.notebooks.values()):
        # The student's other files, read as hostile: no link followed, no device, pipe or hard
        # link copied, nothing over the size cap; the course's own files then overwrite them.
        left_out = safe_files.copy_submitted_files(
            item.submitted, destination, skip=lambda relative: any(ignore(None, [part]) for part in relative.parts)
        )
        for line in left_out:
            print(f"warning: {item.student}/{assignment}/{nbio.quote(line, 300)}", file=sys.stderr)
    source = pipeline.view.source(assignment)
    shutil.copytree(source, destination, ignore=ignore, dirs_exist_ok=True)
    for notebook_id in item.notebooks:
        key = SubmissionKey(item.student, assignment, notebook_id)
        state = prepared[key]
        submitted = rows.get((item.student, notebook_id)) or gradebook.find_submission_notebook(
            notebook_id, assignment, item.student
        )
        if state.notebook is None:
            # Missing or unreadable: every part scores 0 (nbgrader does the same for missing
            # files), and the reason is left as the automatic comment of every part.
            for grade in submitted.grades:
                grade.auto_score, grade.needs_manual_grade = 0, False
            for comment in submitted.comments:
                comment.auto_comment = state.reason
            continue
        if state.reason is not None:  # unreadable: the release notebook, every part 0 with the reason
            spec = pipeline.course.find_spec(assignment, notebook_id)
            report = engine.Report(
                notebook=notebook_id,
                submission_id=str(key),
                spec=spec,
                graded_as=spec.key if spec else None,
                error=state.reason,
            )
        else:
            report = reports[str(key)]
        original = item.notebooks[notebook_id].renamed_from
        apply_report(state.notebook, report, renamed_note(original, notebook_id) if original else None)
        graded = pipeline.finish(state.notebook, item.student, notebook_id, submitted)
        # Written as nbformat writes notebooks, without its JSON-schema validation: every
        # cell nbgrader reads carries the release's metadata, and the outputs are the grader's.
        # One write (json.dump writes each token: thousands of calls a notebook).
        text = json.dumps(graded, indent=1, sort_keys=True, ensure_ascii=False)
        (destination / f"{notebook_id}.ipynb").write_text(text + "\n", encoding="utf-8")


def grade_with_nbgrader(
    course: Course, assignment: str, force: bool, students: list[str] | None, feedback: bool, quiet: bool
) -> int:
    """An assignment without this course's grading content, graded by nbgrader itself (`nbgrader
    autograde`, then `generate_feedback`), so that it scores exactly as stock nbgrader scores it."""
    import subprocess

    from nbgrader.api import MissingEntry

    view = CourseView.load(course)
    with view.gradebook() as gradebook:
        try:
            gradebook.find_assignment(assignment)
        except MissingEntry:
            raise not_registered(view.settings, assignment) from None

    def nbgrader(*command: str) -> int:
        arguments = [sys.executable, "-m", "nbgrader", *command, f"--CourseDirectory.root={course.root}"]
        arguments += ["--force"] if force else []
        arguments += [] if not quiet else ["--log-level=WARN"]
        return subprocess.run(arguments, cwd=course.root).returncode

    only_these: list[str | None] = [*students] if students else [None]
    for student in only_these:
        only = [f"--student={student}"] if student else []
        status = nbgrader("autograde", assignment, *only)
        if status == 0 and feedback:
            status = nbgrader("generate_feedback", assignment, *only)
        if status != 0:
            return status
    if not quiet:
        print(score_table(course, assignment, students))
    return 0


def score_table(course: Course, assignment: str, students: list[str] | None = None) -> str:
    """The gradebook's scores of `assignment`: a line per student with each notebook's score, the
    total and flags (`manual`: parts left to grade by hand; `late`: a late penalty; `flagged`)."""
    from nbgrader.api import Assignment, SubmittedAssignment, SubmittedNotebook
    from sqlalchemy.orm import joinedload, selectinload, undefer

    with CourseView.load(course).gradebook() as gradebook:
        found = gradebook.find_assignment(assignment)
        notebooks = [notebook.name for notebook in found.notebooks]
        # Every score at once (nbgrader's scores are subqueries it runs one attribute at a time).
        submissions = (
            gradebook.db.query(SubmittedAssignment)
            .join(Assignment, SubmittedAssignment.assignment_id == Assignment.id)
            .filter(Assignment.name == assignment)
            .options(
                joinedload(SubmittedAssignment.student),
                undefer(SubmittedAssignment.score),
                undefer(SubmittedAssignment.max_score),
                undefer(SubmittedAssignment.late_submission_penalty),
                selectinload(SubmittedAssignment.notebooks).options(
                    joinedload(SubmittedNotebook.notebook),
                    undefer(SubmittedNotebook.score),
                    undefer(SubmittedNotebook.max_score),
                    undefer(SubmittedNotebook.needs_manual_grade),
                ),
            )
            .all()
        )
        return format_score_table(assignment, notebooks, submissions, students)


def format_score_table(assignment: str, notebooks: list[str], submissions, students: list[str] | None = None) -> str:
    """The score table of these gradebook submissions (nbgrader's SubmittedAssignment rows),
    a column per notebook name in `notebooks`."""
    rows = []
    for submission in sorted(submissions, key=lambda submission: submission.student.id):
        if students and submission.student.id not in students:
            continue
        by_name = {notebook.name: notebook for notebook in submission.notebooks}
        flags = []
        if any(notebook.needs_manual_grade for notebook in submission.notebooks):
            flags.append("manual")
        if submission.late_submission_penalty:
            flags.append(f"late -{submission.late_submission_penalty:g}")
        if any(notebook.flagged for notebook in submission.notebooks):
            flags.append("flagged")
        scores = [
            f"{by_name[name].score:g}/{by_name[name].max_score:g}" if name in by_name else "-" for name in notebooks
        ]
        total = f"{submission.score:g}/{submission.max_score:g}"
        rows.append([nbio.quote(submission.student.id, 30), *scores, total, " ".join(flags)])
    header = ["student", *notebooks, "total", "flags"]
    widths = [max(len(str(row[column])) for row in [header, *rows]) for column in range(len(header))]
    lines = ["  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip() for row in [header, *rows]]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join([f"{assignment}: scores in the gradebook (manual: parts left to grade by hand)", *lines])
