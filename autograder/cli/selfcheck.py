"""`python -m autograder check NOTEBOOK`: the grader's verdict, per part, for a self-learner.

Runs exactly what grading runs (the course's locked cells restored as grading restores them,
the sandbox, the hidden checks) and prints a readable report in which every part short of full
marks says why. Exits 1 when any autograded part is short of full marks, so it can gate a
script; points at the reference solutions only for parts the learner has attempted.

The course is found for a notebook anywhere (`find_course`): a copy in the checkout, one that
`autograder work` made (it records its course), or one elsewhere while the checkout is the
installed one; otherwise the error says which `--course` to give.
"""

from __future__ import annotations

import pathlib
import sys
from collections.abc import Callable

from autograder.core import engine, variants
from autograder.core import notebook as nbio
from autograder.core.course import GRADING_DIR, Course, CourseNotFound, bundled_course
from autograder.core.errors import UsageError
from autograder.core.restore import restore_course_cells

WORK_RECORD_KEY = "autograder_work"  # notebook metadata of a copy `autograder work` made: its course


# -- which course a notebook belongs to ----------------------------------------------------------


def _is_course(root: pathlib.Path) -> bool:
    return (root / GRADING_DIR).is_dir() and (root / "source").is_dir()


def _holding(start) -> Course | None:
    try:
        return Course.discover(start)
    except CourseNotFound:
        return None


def _recorded(notebook: pathlib.Path) -> Course | None:
    """The course `autograder work` recorded in the copy (it may have been moved anywhere since)."""
    try:
        record = nbio.read_notebook(str(notebook)).get("metadata", {}).get(WORK_RECORD_KEY)
    except (nbio.UnreadableNotebook, OSError, AttributeError):
        return None
    root = record.get("course") if isinstance(record, dict) else None
    if isinstance(root, str) and _is_course(pathlib.Path(root)):
        return Course(root)
    return None


# Where `check` looks for a notebook's course, in order; the first that names one wins. Another
# source is one more (description, finder) pair.
COURSE_CANDIDATES: list[tuple[str, Callable[[pathlib.Path], Course | None]]] = [
    ("the folders holding the notebook", _holding),
    ("the course recorded in the notebook by `autograder work`", _recorded),
    ("the working directory and the folders holding it", lambda _notebook: _holding(None)),
    (
        "the course installed with this grader (its package data, or the checkout it runs from)",
        lambda _nb: bundled_course(),
    ),
]


def find_course(notebook: str, course: str | None = None) -> Course:
    """The course to check `notebook` against: `--course` when given, else the first candidate."""
    if course:
        root = pathlib.Path(course)
        if not _is_course(root.resolve()):
            raise UsageError(
                f"--course {course}: not a course (a course is the folder of your clone of the course, "
                f"holding source/ and {GRADING_DIR}/)"
            )
        return Course(root)
    path = pathlib.Path(notebook).absolute()
    for _, finder in COURSE_CANDIDATES:
        found = finder(path)
        if found is not None:
            return found
    looked = "; ".join(description for description, _ in COURSE_CANDIDATES)
    raise CourseNotFound(
        f"no course found for {notebook} (looked in: {looked}). Give the folder of your clone of "
        f"the course, the one holding source/ and {GRADING_DIR}/: --course PATH, e.g. "
        f"`autograder check {notebook} --course ~/transformer-circuits`"
    )


# -- the report ----------------------------------------------------------------------------------


def as_grading_sees_it(course: Course, path: str, graded_as) -> dict | None:
    """The notebook with the course's locked cells restored, exactly as grading restores them
    (None when it cannot be read or recognised: the engine then reports why)."""
    try:
        notebook = nbio.read_notebook(path)
    except (nbio.UnreadableNotebook, OSError):
        return None
    spec = engine.identify(course, notebook, path, graded_as)
    if spec is None:
        return None
    variants.keep_record(notebook)  # whose variant the set-up cell showed, before it is restored
    restore_course_cells(notebook, course.release_notebook(spec.assignment, spec.notebook))
    return notebook


def main(course: Course, notebook: str, graded_as, jobs, limits, isolation, student_id: str | None = None) -> int:
    restored = as_grading_sees_it(course, notebook, graded_as)
    request = engine.GradeRequest(notebook, "self-check", expected=graded_as, notebook=restored, student_id=student_id)
    # A self-learner grades only their own work: the plain-process tier is acceptable here.
    (report,) = engine.grade(course, [request], jobs=jobs, limits=limits, isolation=isolation, allow_unisolated=True)
    print(report.as_self_check(course.solutions, sys.stdout.isatty()))
    if report.grader_error:
        return 3
    if report.error or report.spec is None:
        return 1
    return (
        0
        if all(
            score == part.points
            for part in report.spec.auto_parts
            for score in [report.part_scores().get(part.grade_id, 0.0)]
        )
        else 1
    )
