"""A graded class for the grading view's tests and benchmark: the course's assignments generated
by nbgrader, N students' submissions (the reference code; free-text answers of their own, some
left blank, some identical but for spaces and case, one hostile) graded by the batch grader.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import time
import urllib.error

import pytest

from autograder.core.course import Course
from autograder.core.notebook import grade_id as grade_id_of
from autograder.core.notebook import source_text
from autograder.dev import classroom
from autograder.nbgrader import markscheme, release
from tests.builders import REPOSITORY, nbgrader
from tests.builders.browser import lab

HOSTILE_STUDENT = "s013"
HOSTILE = (
    '<script>window.tcPwned = 1</script><img src=x onerror="window.tcPwned = 2">'
    '[click me](javascript:window.tcPwned=3) <a href="javascript:window.tcPwned=4">link</a>'
    '<iframe src="https://example.invalid/"></iframe><style>body{display:none}</style>'
    '<svg onload="window.tcPwned=5"></svg> $\\text{<script>window.tcPwned=6</script>}$ '
    "odd \u202eUnicode\u202c \u200b zero-width, \U0001f600 emoji. " + "huge " * 20000
)


def students(count: int) -> list[str]:
    return [f"s{i:03d}" for i in range(1, count + 1)]


def answer(student: str, part: str, released: str) -> str:
    """What `student` writes for the free-text `part`: blank (as released) for every seventh,
    the same short answer (spaced and cased differently) for every fifth, else their own."""
    number = int(student[1:])
    if student == HOSTILE_STUDENT:
        return HOSTILE
    if number % 7 == 0:
        return released
    if number % 5 == 1:
        return ["The head copies the token.", "the  head copies\nthe TOKEN. "][number % 2]
    return f"{student} on {part}: the channel $W_O W_V$ of rank {number % 4 + 1}, as I read it."


def manual_parts(course: Course) -> list[tuple[str, str, str]]:
    """(assignment, notebook, part) of every hand-graded part of the course."""
    found = []
    for assignment, notebook in sorted({(spec.assignment, spec.notebook) for spec in course.specs}):
        source = json.loads((course.source / assignment / f"{notebook}.ipynb").read_text(encoding="utf-8"))
        found += [(assignment, notebook, grade_id_of(c)) for c in source["cells"] if markscheme.manually_graded(c)]
    return found


def build(
    repository: Course, folder: pathlib.Path, count: int, db_url: str | None = None, only: str | None = None
) -> Course:
    """The course in `folder`/course with `count` students graded (on `db_url` if given; only
    the assignment `only` if given)."""
    course = release.copy_course(repository, folder / "course")
    root = course.root
    if db_url is not None:
        with open(root / "nbgrader_config.py", "a", encoding="utf-8") as config:
            config.write(f"\nc.CourseDirectory.db_url = {db_url!r}\n")
    for assignment in release.source_assignments(root):
        if only is not None and assignment != only:
            continue
        nbgrader(root, "generate_assignment", assignment, "--force")
        notebooks = sorted({spec.notebook for spec in course.specs if spec.assignment == assignment})
        released = {}
        for notebook in notebooks:
            cells = json.loads((root / "release" / assignment / f"{notebook}.ipynb").read_text(encoding="utf-8"))[
                "cells"
            ]
            released[notebook] = {grade_id_of(c): source_text(c["source"]) for c in cells if grade_id_of(c)}
        parts = [p for p in manual_parts(course) if p[0] == assignment]
        for student in students(count):
            filled = {}
            for notebook in notebooks:
                replacements = {
                    part: answer(student, part, released[notebook][part]) for a, nb, part in parts if nb == notebook
                }
                filled[notebook] = classroom.filled_notebook(course, assignment, notebook, replacements)
            classroom.write_submission(root, student, assignment, filled)
        done = subprocess.run(
            [sys.executable, "-m", "autograder", "grade", "--course", str(root), assignment],
            cwd=root,
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return course


# -- serving and driving the view (the tests of one grader and of two at once) --

EXTENSION = {"ServerApp": {"jpserver_extensions": {"autograder.nbgrader.grading_view": True}}}


def start_server(root, state):
    """A Jupyter server at the course root, the view enabled as the package's config file enables it."""
    config = state / "config" / "jupyter_server_config.d"
    config.mkdir(parents=True, exist_ok=True)
    (config / "autograder-grading-view.json").write_text(json.dumps(EXTENSION))
    return lab.LabServer(root, state).start()


def browser_page(playwright, profile):
    from tests.builders.browser import notebook_page  # Playwright's types: only where a browser runs

    if not os.access(notebook_page.CHROMIUM, os.X_OK):
        pytest.skip(f"no chromium at {notebook_page.CHROMIUM}")
    context = playwright.chromium.launch_persistent_context(
        str(profile),
        executable_path=notebook_page.CHROMIUM,
        headless=True,
        args=notebook_page.CHROMIUM_ARGS,
        viewport={"width": 1400, "height": 1000},
    )
    return context, context.pages[0] if context.pages else context.new_page()


def api(server, method, path, body=None):
    """(status, JSON) of one of the view's API calls, as a script with the token calls it."""
    try:
        return 200, server.api(method, f"/grading-view/api/{path}", body)
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def part_path(part) -> str:
    return "/".join(part)


if (
    __name__ == "__main__"
):  # python -m tests.builders.grading_view_class FOLDER COUNT [ASSIGNMENT]: build one to look at
    start = time.monotonic()
    built = build(REPOSITORY, pathlib.Path(sys.argv[1]), int(sys.argv[2]), only=(sys.argv[3:] or [None])[0])
    print(built.root, f"{time.monotonic() - start:.0f} s")
