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

import os
import pathlib
import re
import sys
from collections.abc import Callable

from autograder.core import engine, variants
from autograder.core import notebook as nbio
from autograder.core.course import GRADING_DIR, Course, CourseNotFound, bundled_course
from autograder.core.errors import UsageError
from autograder.core.restore import restore_course_cells
from autograder.core.submission import not_written

WORK_RECORD_KEY = "autograder_work"  # notebook metadata of a copy `autograder work` made: its course


def points_text(points: float) -> str:
    """'1 point', '2 points', '0.5 points', as people write them."""
    return f"{points:g} point" + ("" if points == 1 else "s")


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


def render(course: Course, report: engine.Report, color: bool = False) -> str:
    good, bad, dim, reset = ("\033[32m", "\033[31m", "\033[2m", "\033[0m") if color else ("", "", "", "")
    from autograder.cli.main import shown

    lines = [f"{shown(report.notebook)}: graded as {report.graded_as or '?'} (isolation: {report.isolation or 'none'})"]
    if report.error or report.spec is None:
        lines.append(f"{bad}error: {shown(report.error or 'not graded')}{reset}")
        return "\n".join(lines)
    if report.variant_of is not None:
        lines.append(f"{dim}variant: the one drawn for student {shown(report.variant_of)}{reset}")
    if report.variant_note:
        lines.append(f"{bad}note: {shown(report.variant_note)}{reset}")
    scores = report.part_scores()
    told: set[str] = set()
    for part in report.spec.parts:
        if part.manual:
            lines.append(f"{dim}  {part.grade_id:<24} {points_text(part.points)}, graded by hand{reset}")
            continue
        score = scores.get(part.grade_id, 0.0)
        full = score == part.points
        lines.append(
            f"{good if full else bad}{'✔' if full else '✘'} {part.grade_id:<24} {score:g}/{part.points:g}{reset}"
        )
        said = len(lines)
        needed: list[str] = []  # names this part needs that an earlier part already said are missing
        for check in report.checks:
            if check.part != part.grade_id or (check.passed and not check.message):
                continue
            missing = _MISSING.match(check.message) if not check.passed else None
            if missing:  # each undefined name once, with the cell that should define it
                name = missing.group(1)
                if name not in told:
                    told.add(name)
                    why = check.message[missing.end() :].strip()
                    why = "" if why == not_written(name) else f" {shown(why, '    ')}"
                    lines.append(f"    ✘ {name} is not defined yet{_where(report, part.grade_id)}{why}")
                elif name not in needed:
                    needed.append(name)
                continue
            mark = "·" if check.passed else "✘"
            lines.append(f"    {mark} {check.id}: {shown(check.message, '    ')}")
        if not full and not any(line.startswith("    ✘") for line in lines[said:]):  # every zero says why
            reason = f"needs {', '.join(needed)}, not defined yet (see above)" if needed else None
            lines.append(f"    ✘ {reason or _no_reason(report, part.grade_id)}")
    lines.append(
        f"autograded total: {report.score:g}/{report.max_score:g} (the same checks run when your work is graded)"
    )
    attempted = report.attempted
    if attempted:
        solution = course.solutions / report.spec.assignment / f"{report.spec.notebook}.ipynb"
        lines.append(
            f"reference solutions for the parts you attempted ({', '.join(attempted)}): {os.path.relpath(solution)}"
        )
    return "\n".join(lines)


_MISSING = re.compile(r"(\w{1,100}) is not defined\.")


def _no_reason(report: engine.Report, part: str) -> str:
    """Why a part is short of full marks when none of its checks said so (a grader's fault)."""
    if not any(check.part == part for check in report.checks):
        return "this part could not be checked (its checks did not run); see the lines above"
    return "a check of this part failed without a message; this is the grader's fault, please report it"


def _where(report: engine.Report, part: str) -> str:
    """Where the student should define a name of `part`: its answer cell, when it has one."""
    position = report.answer_cells.get(part)
    return f": write it in cell {position + 1}, this part's answer cell, and run it." if position is not None else "."


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
    print(render(course, report, color=sys.stdout.isatty()))
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
