"""What tests of several layers build alike, in one place (no test module imports another):
the repository's course and the mini course (here), nbgrader run as instructors run it, a
graded mini class (classes.py), the sandbox's two starts and a broken driver (sandbox.py), a
PostgreSQL server (postgres.py), the content contract (content.py), graded courses for the
pages (grading_pages.py, grading_view_class.py) and a browser (browser/). Fixtures built from
them live in tests/conftest.py."""

from __future__ import annotations

import pathlib
import subprocess
import sys

from autograder.core.course import Course

TESTS = pathlib.Path(__file__).resolve().parent.parent
REPOSITORY = Course(
    TESTS.parent
)  # the course this repository is: source/, release/, solutions/, autograder/assignments/
FIXTURES = TESTS / "fixtures"
GOLDEN = TESTS / "golden"
MINI = Course(FIXTURES / "mini_course")  # a tiny course for testing the engine apart from the content


def nbgrader(root: pathlib.Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """`nbgrader ARGS` run in the course at `root`, as an instructor runs it; fails the test
    with nbgrader's output when it fails."""
    completed = subprocess.run(
        [sys.executable, "-m", "nbgrader", *args, "--log-level=WARN"], cwd=root, capture_output=True, text=True, env=env
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    return completed
