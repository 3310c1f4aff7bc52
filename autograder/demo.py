"""`make demo`: the instructor's workflow end to end on a bundled example class.

In build/demo/ (a scratch nbgrader course made from this repository's source/ and
nbgrader_config.py): generate the assignments, collect a class of five students (correct,
alternative, partly wrong, blank, careless), grade it with the sandboxed batch grader, write
feedback and grades.csv with nbgrader, and print a score table.
"""
from __future__ import annotations

import csv
import json
import os
import pathlib
import shutil
import subprocess
import sys
import time

from autograder import build, classroom, course, specs

DEMO = course.COURSE_ROOT / "build" / "demo"


def _nbgrader(*args: str) -> None:
    command = [sys.executable, "-m", "nbgrader", *args, "--log-level=WARN"]
    completed = subprocess.run(command, cwd=DEMO, capture_output=True, text=True)
    if completed.returncode != 0:
        raise SystemExit(f"`nbgrader {' '.join(args)}` failed:\n{completed.stdout}{completed.stderr}")


def _first(library: dict, notebook: str) -> dict:
    return next((entry["cells"] for entry in library.values() if entry["notebook"] == notebook), {})


def make_class(assignment: str) -> dict[str, str]:
    """Write the example class's submissions; returns student -> what they handed in."""
    notebooks = [spec.notebook for spec in specs.all_specs() if spec.assignment == assignment]
    alternatives = classroom.variants("alternatives", assignment)
    mistakes = classroom.variants("mistakes", assignment)
    students = {
        "ada": ("the reference solution", lambda nb: classroom.filled_notebook(assignment, nb)),
        "ben": ("alternative correct answers",
                lambda nb: classroom.filled_notebook(assignment, nb, _first(alternatives, nb))),
        "cleo": ("a few typical mistakes",
                 lambda nb: classroom.filled_notebook(assignment, nb, _first(mistakes, nb))),
        "dev": ("the untouched release notebook", lambda nb: classroom.filled_notebook(assignment, nb, blank=True)),
    }
    for student, (_, make) in students.items():
        classroom.write_submission(DEMO, student, assignment, {nb: make(nb) for nb in notebooks})
    # eli: a renamed first notebook, and the rest saved as broken JSON
    folder = classroom.write_submission(DEMO, "eli", assignment, {})
    for position, nb in enumerate(notebooks):
        target = folder / (f"{nb} (copy).ipynb" if position == 0 else f"{nb}.ipynb")
        target.write_text(json.dumps(classroom.filled_notebook(assignment, nb)) if position == 0 else '{"cells": [')
    described = {student: what for student, (what, _) in students.items()}
    described["eli"] = "a renamed notebook, and broken JSON for the rest"
    return described


def main() -> int:
    started = time.monotonic()
    print("== regenerating release/ and solutions/ from source/")
    build.build()
    if DEMO.exists():
        shutil.rmtree(DEMO)
    DEMO.mkdir(parents=True)
    shutil.copytree(course.SOURCE, DEMO / "source", symlinks=True)
    shutil.copy(course.COURSE_ROOT / "nbgrader_config.py", DEMO / "nbgrader_config.py")
    os.symlink(course.COURSE_ROOT / "autograder", DEMO / "autograder")
    described = {}
    for assignment in specs.assignments():
        print(f"== nbgrader generate_assignment {assignment}")
        _nbgrader("generate_assignment", assignment, "--force")
        described = make_class(assignment)
        print(f"== grading {assignment} (sandboxed, parallel) into {DEMO / 'gradebook.db'}")
        subprocess.run([sys.executable, "-m", "autograder", "grade", "--course", str(DEMO), assignment],
                       cwd=course.COURSE_ROOT, check=True)
        print(f"== nbgrader generate_feedback {assignment}")
        _nbgrader("generate_feedback", assignment, "--force")
    print("== nbgrader export")
    _nbgrader("export", "--to", str(DEMO / "grades.csv"))
    print_table(DEMO / "grades.csv", described)
    print(f"\nfeedback: {DEMO / 'feedback'}\ngrades:   {DEMO / 'grades.csv'}\n"
          f"done in {time.monotonic() - started:.0f} s")
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
