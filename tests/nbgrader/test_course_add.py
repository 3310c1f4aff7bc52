"""The course inside an instructor's own nbgrader course: one command adds it, nothing else changes.

From a wheel built from this checkout and pip-installed (not editable) into a fresh virtual
environment (built once per test session; its dependencies are this environment's, reached by a
path file, so that the test needs no network beyond the wheel's build), two `nbgrader quickstart`
courses are made: "stock", left as nbgrader makes it, and "ours", to which `python -m autograder
add` adds this course. Both get the same assignment of the instructor's own with hidden tests and
manual cells, and a term runs through a filesystem exchange: release, students (distinct nbgrader
student ids) fetch, work and submit, collect, grade. Quickstart's ps1 and the instructor's
assignment must come out of "ours" exactly as out of "stock", cell by cell (gradebook scores and
comments, the autograded notebooks' test-cell outputs, the exported CSV), on both paths (the
batch grader and `nbgrader autograde`); the course's own assignment is graded by its grader.
"""

from __future__ import annotations

import csv
import json
import os
import pathlib
import re
import site
import subprocess
import sys
import venv
import zipfile

import pytest

from tests.builders import REPOSITORY

pytestmark = pytest.mark.slow

DEV_SCRIPTS = pathlib.Path(sys.executable).parent  # alembic, which nbgrader runs by name


@pytest.fixture(scope="session")
def wheel(tmp_path_factory) -> pathlib.Path:
    """A wheel of this checkout, built as pip builds one (in an isolated build environment)."""
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(REPOSITORY.root)],
        check=True,
        capture_output=True,
    )
    (built,) = out.glob("*.whl")
    return built


@pytest.fixture(scope="session")
def installed(wheel, tmp_path_factory) -> pathlib.Path:
    """A fresh virtual environment with the wheel pip-installed; returns its python."""
    home = tmp_path_factory.mktemp("venv") / "env"
    venv.create(home, with_pip=True)
    python = home / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-deps", str(wheel)], check=True, capture_output=True
    )
    # The dependencies (nbgrader, numpy, ...) are this environment's, after the new one's own
    # packages, so that `autograder` is the installed wheel and never this checkout.
    (env_site,) = [path for path in (home / "lib").glob("python3*/site-packages")]
    (env_site / "dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    # numpy for real in the new environment: the sandbox sees only the grader's own site-packages
    import numpy

    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-deps", "--ignore-installed", f"numpy=={numpy.__version__}"],
        check=True,
        capture_output=True,
    )
    return python


def run(python, *args, cwd, env=None, check=True) -> subprocess.CompletedProcess:
    environment = {
        **os.environ,
        "PATH": f"{python.parent}{os.pathsep}{DEV_SCRIPTS}{os.pathsep}/usr/bin:/bin",
        # the dependencies' data files (nbconvert's templates, which nbgrader's extend)
        "JUPYTER_PATH": str(pathlib.Path(sys.prefix, "share", "jupyter")),
    }
    environment.pop("PYTHONPATH", None)
    completed = subprocess.run(
        [str(python), *args], cwd=cwd, env={**environment, **(env or {})}, capture_output=True, text=True
    )
    if check and completed.returncode != 0:
        raise AssertionError(f"{args} failed ({completed.returncode}):\n{completed.stdout}\n{completed.stderr}")
    return completed


def test_the_wheel_carries_the_course_content_as_real_files(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    content = "autograder/course_content/"
    for assignment in REPOSITORY.assignments():
        for path in (REPOSITORY.source / assignment).iterdir():
            assert f"{content}source/{assignment}/{path.name}" in names  # links included, as files
        for path in REPOSITORY.grading_dir(assignment).glob("*.*"):
            if "__pycache__" not in path.parts:
                assert f"{content}autograder/assignments/{assignment}/{path.name}" in names
    assert f"{content}docs/DEPLOYMENT.md" in names
    with zipfile.ZipFile(wheel) as archive:
        tclib = archive.read(f"{content}source/attention_heads/tclib.py")
    assert tclib == (REPOSITORY.source / "common" / "tclib.py").read_bytes()


# -- a term in two quickstart courses ------------------------------------------------------------

HIDDEN_TESTS_NOTEBOOK = {
    "cells": [
        {"cell_type": "markdown", "metadata": {}, "source": "Write `double(x)` and explain it. Maths: $n<1$ & $x>0$."},
        {
            "cell_type": "code",
            "metadata": {"nbgrader": {"grade": False, "grade_id": "double", "locked": False, "solution": True}},
            "source": "def double(x):\n    ### BEGIN SOLUTION\n    return 2 * x\n    ### END SOLUTION",
        },
        {
            "cell_type": "code",
            "metadata": {
                "nbgrader": {"grade": True, "grade_id": "test_double", "locked": True, "points": 2, "solution": False}
            },
            "source": "assert double(1) == 2\n### BEGIN HIDDEN TESTS\nassert double(5) == 10\n### END HIDDEN TESTS",
        },
        {
            "cell_type": "markdown",
            "metadata": {
                "nbgrader": {"grade": True, "grade_id": "explain", "locked": False, "points": 3, "solution": True}
            },
            "source": "It doubles $x$, for every $x>0$.",
        },
        {
            "cell_type": "code",
            "metadata": {
                "nbgrader": {"grade": True, "grade_id": "manual_code", "locked": False, "points": 1, "solution": True}
            },
            "source": "### BEGIN SOLUTION\ndef triple(x):\n    return 3 * x\n### END SOLUTION",
        },
    ],
    "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
    "nbformat": 4,
    "nbformat_minor": 5,
}

SQUARES = {
    "correct": None,  # the source's solutions
    "blank": "",  # the release as handed out
    "wrong": "def squares(n):\n    return [0] * n",
    "raising": "def squares(n):\n    raise RuntimeError('no squares today')",
    "looping": "def squares(n):\n    while True:\n        pass",
}
STUDENTS = list(SQUARES)


def _make_course(python, parent: pathlib.Path, ours: bool) -> pathlib.Path:
    run(python, "-m", "nbgrader", "quickstart", "course", cwd=parent)
    root = parent / "course"
    (root / "source" / "hw").mkdir()
    for cell in HIDDEN_TESTS_NOTEBOOK["cells"]:
        cell.setdefault("metadata", {}).get("nbgrader", {}).setdefault("schema_version", 3)
        if cell["cell_type"] == "code":
            cell.update(outputs=[], execution_count=None)
    (root / "source" / "hw" / "hw.ipynb").write_text(json.dumps(HIDDEN_TESTS_NOTEBOOK))
    with open(root / "nbgrader_config.py", "a") as config:
        config.write(f"\nc.Exchange.root = {str(parent / 'exchange')!r}\nc.Execute.timeout = 3\n")
    if ours:
        added = run(python, "-m", "autograder", "add", "--course", str(root), cwd=parent)
        assert "configure(c)" in added.stdout
    return root


def _solutions(source_nb: dict) -> dict[str, str]:
    """grade_id -> the source cell's text with nbgrader's solution markers removed."""
    found = {}
    for cell in source_nb["cells"]:
        grade_id = cell["metadata"].get("nbgrader", {}).get("grade_id")
        if cell["metadata"].get("nbgrader", {}).get("solution"):
            text = "".join(cell["source"])
            found[grade_id] = "\n".join(line for line in text.split("\n") if "SOLUTION" not in line)
    return found


def _work(release_nb: dict, source_nb: dict, student: str) -> dict:
    """What `student` hands in for one notebook fetched from the exchange."""
    nb = json.loads(json.dumps(release_nb))
    solutions = _solutions(source_nb)
    for cell in nb["cells"]:
        grade_id = cell["metadata"].get("nbgrader", {}).get("grade_id")
        if grade_id not in solutions or student == "blank":
            continue
        cell["source"] = solutions[grade_id]
        if grade_id == "squares" and SQUARES[student]:
            cell["source"] = SQUARES[student]
    return nb


def _term(python, root: pathlib.Path, assignments: list[str]) -> None:
    """The class on the roster, release, every student fetches, works and submits, then collect.

    The roster is the instructor's usual first step, and on this exchange (one uid for every
    student) the course's collector takes only students on it (ExchangeTrust)."""
    for student in STUDENTS:
        run(python, "-m", "nbgrader", "db", "student", "add", student, cwd=root)
    for assignment in assignments:
        run(python, "-m", "nbgrader", "generate_assignment", assignment, "--force", cwd=root)
        run(python, "-m", "nbgrader", "release_assignment", assignment, "--force", cwd=root)
    for student in STUDENTS:
        home = root.parent / "students" / student
        home.mkdir(parents=True, exist_ok=True)
        (home / "nbgrader_config.py").write_text(
            f"c = get_config()\nc.Exchange.root = {str(root.parent / 'exchange')!r}\n"
        )
        identity = {"USER": student, "LOGNAME": student, "HOME": str(home)}
        for assignment in assignments:
            run(python, "-m", "nbgrader", "fetch_assignment", assignment, "--course", "course", cwd=home, env=identity)
            for path in sorted((home / assignment).glob("*.ipynb")):
                source_nb = json.loads((root / "source" / assignment / path.name).read_text())
                path.write_text(json.dumps(_work(json.loads(path.read_text()), source_nb, student)))
            submit = ["submit", assignment, "--course", "course", f"--student={student}"]
            run(python, "-m", "nbgrader", *submit, cwd=home, env=identity)
    for assignment in assignments:
        run(python, "-m", "nbgrader", "collect", assignment, cwd=root)


def _gradebook(root: pathlib.Path, assignment: str) -> dict:
    """(student, notebook, cell) -> (auto score, needs manual grade, automatic comment)."""
    from nbgrader.api import Gradebook

    found = {}
    with Gradebook(f"sqlite:///{root / 'gradebook.db'}", "course") as gradebook:
        for submission in gradebook.find_assignment(assignment).submissions:
            for notebook in submission.notebooks:
                for grade in notebook.grades:
                    key = (submission.student.id, notebook.name, grade.name)
                    found[key] = (grade.auto_score, grade.needs_manual_grade)
                for comment in notebook.comments:
                    found[(submission.student.id, notebook.name, comment.name, "comment")] = comment.auto_comment
    return found


def _outputs(root: pathlib.Path, assignment: str) -> dict:
    """(student, notebook, cell index) -> the autograded test cell's outputs, as feedback shows them."""
    found = {}
    for path in sorted((root / "autograded").glob(f"*/{assignment}/*.ipynb")):
        nb = json.loads(path.read_text())
        for index, cell in enumerate(nb["cells"]):
            if cell["cell_type"] == "code" and cell["metadata"].get("nbgrader", {}).get("grade"):
                shown = [
                    (output["output_type"], output.get("ename"), re.sub(r"\s+", " ", str(output.get("evalue", ""))))
                    for output in cell.get("outputs", [])
                ]
                found[(path.parent.parent.name, path.stem, index)] = shown
    return found


def _export(python, root: pathlib.Path) -> list[dict]:
    run(python, "-m", "nbgrader", "export", "--to", str(root / "grades.csv"), cwd=root)
    with open(root / "grades.csv", newline="") as handle:
        rows = [{k: v for k, v in row.items() if k != "timestamp"} for row in csv.DictReader(handle)]
    return sorted(rows, key=lambda row: (row["assignment"], row["student_id"]))


@pytest.fixture(scope="module")
def term(installed, tmp_path_factory):
    """Two quickstart courses (stock, ours) after a term of ps1 and hw; stock graded by nbgrader."""
    python = installed
    stock = _make_course(python, tmp_path_factory.mktemp("stock"), ours=False)
    ours = _make_course(python, tmp_path_factory.mktemp("ours"), ours=True)
    for root in (stock, ours):
        _term(python, root, ["ps1", "hw"])
    for assignment in ("ps1", "hw"):
        run(python, "-m", "nbgrader", "autograde", assignment, cwd=stock)
    return python, stock, ours


@pytest.mark.parametrize("path", ["batch", "nbgrader"])
def test_the_instructors_assignments_are_graded_exactly_as_stock_nbgrader_grades_them(term, path):
    python, stock, ours = term
    for assignment in ("ps1", "hw"):
        if path == "batch":
            graded = run(python, "-m", "autograder", "grade", "--course", str(ours), assignment, "--force", cwd=ours)
            assert "student" in graded.stdout and "total" in graded.stdout  # the score table
        else:
            run(python, "-m", "nbgrader", "autograde", assignment, "--force", cwd=ours)
        assert _gradebook(ours, assignment) == _gradebook(stock, assignment)
        assert _outputs(ours, assignment) == _outputs(stock, assignment)
    assert _export(python, ours) == _export(python, stock)
    scores = _gradebook(stock, "ps1")
    # stock nbgrader's verdicts, so that the comparison above compares something
    assert scores[("correct", "problem1", "correct_squares")] == (1.0, False)
    for student in ("blank", "wrong", "raising", "looping"):
        assert scores[(student, "problem1", "correct_squares")] == (0.0, False), student
    assert _gradebook(stock, "hw")[("correct", "hw", "test_double")] == (2.0, False)


def test_add_refuses_to_overwrite_the_instructors_files_and_the_course_grades_its_own(installed, tmp_path):
    python = installed
    ours = _make_course(python, tmp_path, ours=True)
    checks = ours / "source" / "attention_heads" / "tc_checks.py"
    assert checks.is_file() and not checks.is_symlink()
    assert not [path for path in (ours / "source").rglob("*") if path.is_symlink()]
    original = checks.read_text()
    checks.write_text(original + "\n# the instructor's edit\n")
    refused = run(python, "-m", "autograder", "add", "--course", str(ours), cwd=ours, check=False)
    assert refused.returncode == 2 and "tc_checks.py" in refused.stderr and "--force" in refused.stderr
    assert checks.read_text().endswith("# the instructor's edit\n")
    run(python, "-m", "autograder", "add", "--course", str(ours), "--force", cwd=ours)
    assert checks.read_text() == original
    config = (ours / "nbgrader_config.py").read_text()
    assert config.count("configure(c)") == 1
    # the course's own assignment, in the same course, from the installed package
    run(python, "-m", "nbgrader", "generate_assignment", "attention_heads", "--force", cwd=ours)
    release = json.loads((ours / "release" / "attention_heads" / "virtual_head.ipynb").read_text())
    folder = ours / "submitted" / "blank" / "attention_heads"
    folder.mkdir(parents=True)
    (folder / "virtual_head.ipynb").write_text(json.dumps(release))
    graded = run(python, "-m", "autograder", "grade", "--course", str(ours), "attention_heads", cwd=ours)
    assert re.search(r"^blank .*0/", graded.stdout, re.M), graded.stdout
    printed = run(python, "-m", "autograder", "docs", "deployment", cwd=tmp_path)
    assert printed.stdout.startswith("#")
