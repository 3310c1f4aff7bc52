"""The command line as instructors and self-learners use it: output formats and exit codes."""

import json
import pathlib
import subprocess
import sys

import pytest

from autograder.dev import classroom
from tests.builders import REPOSITORY

pytestmark = pytest.mark.slow


def run(*args):
    return subprocess.run(
        [sys.executable, "-m", "autograder", *args], cwd=REPOSITORY.root, capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def notebooks(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    paths = {
        "reference": classroom.filled_notebook(REPOSITORY, "attention_heads", "virtual_head"),
        "blank": classroom.filled_notebook(REPOSITORY, "attention_heads", "virtual_head", blank=True),
        "wrong": classroom.filled_notebook(
            REPOSITORY,
            "attention_heads",
            "virtual_head",
            {
                "ex1_head1_answer": "W_V1 = np.eye(4, 16)\nW_O1 = 2 * np.eye(16, 4, k=-8)",
            },
        ),
    }
    result = {}
    for name, notebook in paths.items():
        result[name] = folder / f"{name}.ipynb"
        result[name].write_text(json.dumps(notebook))
    result["unreadable"] = folder / "unreadable.ipynb"
    result["unreadable"].write_text("[1, 2")
    return result


def test_grade_json_prints_one_report_per_notebook_and_exits_0(notebooks):
    order = ["reference", "blank", "unreadable"]
    completed = run("grade", "--json", *(str(notebooks[name]) for name in order))
    assert completed.returncode == 0, completed.stderr
    reports = [json.loads(line) for line in completed.stdout.splitlines()]
    assert [r["notebook"] for r in reports] == [str(notebooks[name]) for name in order]
    reference, blank, unreadable = reports
    assert reference["score"] == reference["max_score"] == 13 and reference["error"] is None
    assert blank["score"] == 0 and blank["max_score"] == 13
    assert unreadable["score"] == 0 and "not valid notebook JSON" in unreadable["error"]
    manual = [c for c in reference["checks"] if c.get("manual")]
    assert manual and all(c["points"] is None for c in manual)
    for check in reference["checks"]:
        assert {"id", "points", "max_points", "passed", "message"} <= set(check)


def test_grade_misuse_exits_2():
    completed = run("grade", "--as", "no_such/notebook", "x.ipynb")
    assert completed.returncode == 2 and "no such course notebook" in completed.stderr
    assert run("frobnicate").returncode == 2


def test_check_reports_per_part_and_exit_status(notebooks):
    passed = run("check", str(notebooks["reference"]))
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert "autograded total: 13/13" in passed.stdout
    assert "solutions/attention_heads/virtual_head.ipynb" in passed.stdout

    failed = run("check", str(notebooks["wrong"]))
    assert failed.returncode == 1
    assert "ex1_head1" in failed.stdout and "gain 2" in failed.stdout

    blank = run("check", str(notebooks["blank"]))
    assert blank.returncode == 1
    told = [line.split()[1] for line in blank.stdout.splitlines() if "is not defined yet" in line]
    assert told and len(told) == len(set(told)), "each undefined name is printed once"
    assert "this part's answer cell" in blank.stdout and "stopped early" not in blank.stdout
    assert "reference solutions" not in blank.stdout, "solutions are offered only for attempted parts"


def test_the_grader_opens_gradebooks_with_its_environment_not_activated(tmp_path):
    """nbgrader runs `alembic` by name to open a gradebook: `.venv/bin/python -m autograder` (and
    `make demo`) must work with nothing but the system on PATH, as a fresh shell has it."""
    bare = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}

    def open_new_gradebook(name: str, first: str = "") -> subprocess.CompletedProcess:
        # nbgrader runs alembic only for a new database
        url = f"sqlite:///{tmp_path / name}.db"
        code = f"{first}import nbgrader.api; nbgrader.api.Gradebook({url!r}, 'course').close(); print('opened')"
        return subprocess.run([sys.executable, "-c", code], env=bare, capture_output=True, text=True)

    ours = open_new_gradebook("ours", first="import autograder; ")
    assert ours.stdout.strip() == "opened", ours.stderr
    if not any(pathlib.Path(folder, "alembic").exists() for folder in bare["PATH"].split(":")):
        assert "alembic" in open_new_gradebook("without").stderr  # what importing autograder cures
