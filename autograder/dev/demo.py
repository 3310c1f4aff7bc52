"""`make demo`: the instructor's workflow end to end on a bundled example class.

In build/demo/ (a fresh `nbgrader quickstart` course, to which `python -m autograder add` adds
this course's assignments, as an instructor adds them to a course of their own): generate the
assignments, collect a class of five students (correct, alternative, partly wrong, blank,
careless), grade it with the sandboxed batch grader (which writes each student's feedback as it
goes and prints its score table), export grades.csv with nbgrader, and print a score table of
every assignment.
"""

from __future__ import annotations

import argparse
import csv
import json
import pathlib
import shutil
import subprocess
import sys
import time

from autograder.core.course import Course
from autograder.dev import classroom
from autograder.nbgrader import release


def _nbgrader(demo: Course, *args: str) -> None:
    command = [sys.executable, "-m", "nbgrader", *args, "--log-level=WARN"]
    completed = subprocess.run(command, cwd=demo.root, capture_output=True, text=True)
    if completed.returncode != 0:
        raise SystemExit(f"`nbgrader {' '.join(args)}` failed:\n{completed.stdout}{completed.stderr}")


def _run(command: list[str], cwd: pathlib.Path) -> None:
    completed = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    if completed.returncode != 0:
        raise SystemExit(f"`{' '.join(command)}` failed:\n{completed.stdout}{completed.stderr}")
    if command[2] == "autograder":
        print(completed.stdout, end="")


def _first(library: dict, notebook: str) -> dict:
    return next((entry["cells"] for entry in library.values() if entry["notebook"] == notebook), {})


def make_class(demo: Course, assignment: str) -> dict[str, str]:
    """Write the example class's submissions; returns student -> what they handed in."""
    notebooks = [spec.notebook for spec in demo.specs if spec.assignment == assignment]
    alternatives = demo.library("alternatives", assignment)
    mistakes = demo.library("mistakes", assignment)

    def filled(nb, replacements=None, blank=False):
        return classroom.filled_notebook(demo, assignment, nb, replacements, blank=blank)

    students = {
        "ada": ("the reference solution", lambda nb: filled(nb)),
        "ben": ("alternative correct answers", lambda nb: filled(nb, _first(alternatives, nb))),
        "cleo": ("a few typical mistakes", lambda nb: filled(nb, _first(mistakes, nb))),
        "dev": ("the untouched release notebook", lambda nb: filled(nb, blank=True)),
    }
    for student, (_, make) in students.items():
        classroom.write_submission(demo.root, student, assignment, {nb: make(nb) for nb in notebooks})
    # eli: a renamed first notebook, and the rest saved as broken JSON
    folder = classroom.write_submission(demo.root, "eli", assignment, {})
    for position, nb in enumerate(notebooks):
        target = folder / (f"{nb} (copy).ipynb" if position == 0 else f"{nb}.ipynb")
        target.write_text(json.dumps(filled(nb)) if position == 0 else '{"cells": [')
    described = {student: what for student, (what, _) in students.items()}
    described["eli"] = "a renamed notebook, and broken JSON for the rest"
    return described


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m autograder.dev.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--course", default=".", help="the course to demonstrate (default: the working directory)")
    parser.add_argument("--into", default=None, help="where to build the scratch course (default: COURSE/build/demo)")
    args = parser.parse_args(argv)
    started = time.monotonic()
    course = Course(args.course)
    target = pathlib.Path(args.into) if args.into else course.root / "build" / "demo"
    print("== regenerating release/ and solutions/ from source/")
    release.build(course)
    if target.exists():
        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    print(f"== nbgrader quickstart {target.name}, then python -m autograder add --course {target}")
    _run([sys.executable, "-m", "nbgrader", "quickstart", target.name], cwd=target.parent)
    _run([sys.executable, "-m", "autograder", "add", "--course", str(target)], cwd=target.parent)
    demo = Course(target)
    described = {}
    for assignment in demo.assignments():
        print(f"== nbgrader generate_assignment {assignment}")
        _nbgrader(demo, "generate_assignment", assignment, "--force")
        described = make_class(demo, assignment)
        print(f"== grading {assignment} (sandboxed, parallel) into {demo.root / 'gradebook.db'}, with feedback")
        subprocess.run(
            [sys.executable, "-m", "autograder", "grade", "--course", str(demo.root), assignment], check=True
        )
    print("== nbgrader export")
    _nbgrader(demo, "export", "--to", str(demo.root / "grades.csv"))
    print_table(demo.root / "grades.csv", described)
    print(
        f"\nfeedback: {demo.root / 'feedback'}\ngrades:   {demo.root / 'grades.csv'}\n"
        f"done in {time.monotonic() - started:.0f} s"
    )
    return 0


def print_table(grades_csv: pathlib.Path, described: dict[str, str]) -> None:
    with open(grades_csv, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assignments = sorted({row["assignment"] for row in rows})
    header = f"{'student':<8}" + "".join(f"{a:>22}" for a in assignments) + "  handed in"
    print("\n" + header + "\n" + "-" * len(header))
    for student in sorted({row["student_id"] for row in rows}):
        cells = []
        for assignment in assignments:
            row = next(r for r in rows if r["student_id"] == student and r["assignment"] == assignment)
            cells.append(f"{float(row['score']):>10g} / {float(row['max_score']):<9g}")
        print(f"{student:<8}" + "".join(f"{cell:>22}" for cell in cells) + f"  {described.get(student, '')}")
    print("(max_score includes the free-text parts, which a person grades in the formgrader)")


if __name__ == "__main__":
    sys.exit(main())
