"""`python -m autograder check NOTEBOOK`: the grader's verdict, per part, for a self-learner.

Runs exactly what grading runs (sandbox, hidden checks) and prints a readable report. Exits 1
when any autograded part is short of full marks, so it can gate a script; points at the
reference solutions only for parts the learner has attempted.
"""

from __future__ import annotations

import os
import re
import sys

from autograder.core import engine
from autograder.core.course import Course
from autograder.core.submission import not_written


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
            lines.append(f"{dim}  {part.grade_id:<24} {part.points:g} points, graded by hand{reset}")
            continue
        score = scores.get(part.grade_id, 0.0)
        full = score == part.points
        lines.append(
            f"{good if full else bad}{'✔' if full else '✘'} {part.grade_id:<24} {score:g}/{part.points:g}{reset}"
        )
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
                continue
            mark = "·" if check.passed else "✘"
            lines.append(f"    {mark} {check.id}: {shown(check.message, '    ')}")
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


def _where(report: engine.Report, part: str) -> str:
    """Where the student should define a name of `part`: its answer cell, when it has one."""
    position = report.answer_cells.get(part)
    return f": write it in cell {position + 1}, this part's answer cell, and run it." if position is not None else "."


def main(course: Course, notebook: str, graded_as, jobs, limits, isolation, student_id: str | None = None) -> int:
    request = engine.GradeRequest(notebook, "self-check", expected=graded_as, student_id=student_id)
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
