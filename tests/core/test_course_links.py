"""The grader's own files are trusted as its own (issue 20.6): a course file with a second name
(an instructor's `cp -al` of the course, or a student's hard link to a release notebook where the
kernel allows one) never stops grading, on either grading path; student files keep the strict rules."""

import os
import pathlib
import subprocess
import sys

import pytest

from autograder.cli.main import main
from autograder.core import notebook as nbio
from autograder.core import safe_files

pytestmark = pytest.mark.slow

COURSE_FOLDERS = ("source", "release", "autograder")


def link_course_files(root: pathlib.Path, backup: pathlib.Path) -> int:
    """Give every file of the course's own folders a second name below `backup`, as `cp -al`
    of those folders does; the number of files linked."""
    linked = 0
    for folder in COURSE_FOLDERS:
        for path in (root / folder).rglob("*"):
            if path.is_file() and not path.is_symlink():
                target = backup / path.relative_to(root)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.link(path, target)
                linked += 1
    return linked


def scores(root: pathlib.Path) -> dict[str, float]:
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{root / 'gradebook.db'}", "transformer-circuits") as gradebook:
        return {s.student.id: s.score for s in gradebook.assignment_submissions("mini")}


def test_a_course_notebook_with_two_names_is_read_and_a_student_file_is_still_refused(tmp_path):
    course_file = tmp_path / "release.ipynb"
    course_file.write_text('{"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": []}')
    os.link(course_file, tmp_path / "second_name.ipynb")
    assert nbio.read_course_notebook(course_file)["cells"] == []
    with pytest.raises(nbio.UnreadableNotebook, match="hard link"):
        nbio.read_notebook(str(course_file))
    with pytest.raises(safe_files.UnsafeFile, match="limit"):
        safe_files.read_course_file(course_file, 10)


def test_batch_grader_grades_a_hard_linked_course(mini_class, tmp_path):
    assert link_course_files(mini_class, tmp_path / "cp-al") > 5
    assert main(["grade", "--course", str(mini_class), "mini", "--jobs", "2", "--cell-timeout", "5"]) == 0
    graded = scores(mini_class)
    assert graded["ada"] == 4 and graded["cy"] == 0, graded


def test_nbgrader_autograde_grades_a_hard_linked_course(mini_class, tmp_path):
    assert link_course_files(mini_class, tmp_path / "cp-al") > 5
    finished = subprocess.run(
        [sys.executable, "-m", "nbgrader", "autograde", "mini", "--force"],
        cwd=mini_class,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    graded = scores(mini_class)
    assert graded["ada"] == 4 and graded["cy"] == 0, graded
