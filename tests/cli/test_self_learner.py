"""A self-learner's way through the course, as the README gives it, on a copy of the course.

* `autograder work` copies the assignments into work/, which git ignores, and never overwrites
  what is there (a `git pull` never meets the learner's answers);
* `autograder check` finds the course of a notebook anywhere (`selfcheck.find_course`), and says
  which `--course` to give when it cannot;
* the self-check restores locked cells exactly as grading does, so answers typed into a locked
  check cell earn nothing there either;
* every part short of full marks says why.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import pytest

from autograder.cli import selfcheck, work
from autograder.core.course import CourseNotFound
from autograder.core.errors import UsageError
from autograder.core.notebook import source_text
from autograder.core.restore import restore_course_cells
from autograder.dev import classroom
from autograder.nbgrader import release
from tests.builders import REPOSITORY


@pytest.fixture
def course(tmp_path):
    """A copy of the course (source, grading content, release), as a clone would be."""
    return release.copy_course(REPOSITORY, tmp_path / "my clone", with_release=True)


def test_work_copies_the_release_once_and_never_overwrites(course):
    made = work.make_copies(course)
    folder = course.root / "work"
    assert {path.relative_to(folder).as_posix() for path in made} >= {
        "attention_heads/virtual_head.ipynb",
        "attention_heads/tc_checks.py",
        "induction_heads/induction_heads.ipynb",
    }
    copy = folder / "attention_heads" / "virtual_head.ipynb"
    record = json.loads(copy.read_text())["metadata"][selfcheck.WORK_RECORD_KEY]
    assert record == {"course": str(course.root), "assignment": "attention_heads", "notebook": "virtual_head"}
    copy.write_text(copy.read_text().replace("YOUR CODE HERE", "my answer"))
    edited = copy.read_text()
    assert work.make_copies(course) == []
    assert copy.read_text() == edited, "the learner's work is kept"
    assert (course.release / "attention_heads" / "virtual_head.ipynb").read_text().count("my answer") == 0


def test_git_ignores_the_work_folder():
    if not (REPOSITORY.root / ".git").exists():
        pytest.skip("not a git checkout")
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", "work/attention_heads/virtual_head.ipynb"], cwd=REPOSITORY.root
    )
    assert ignored.returncode == 0, ".gitignore must keep work/ out of the repository"


def test_the_course_is_found_for_a_copy_anywhere(course, tmp_path, monkeypatch):
    (copy,) = [path for path in work.make_copies(course, ["attention_heads"]) if path.name == "virtual_head.ipynb"]
    elsewhere = tmp_path / "desktop"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert selfcheck.find_course(str(copy)) == course, "the course holding the notebook"
    moved = elsewhere / "virtual_head.ipynb"
    shutil.copy(copy, moved)
    assert selfcheck.find_course(str(moved)) == course, "the course the copy recorded"
    plain = elsewhere / "plain.ipynb"
    shutil.copy(course.release / "attention_heads" / "virtual_head.ipynb", plain)
    assert selfcheck.find_course(str(plain)) == REPOSITORY, "the course installed with this grader"
    assert selfcheck.find_course(str(plain), str(course.root)) == course, "--course first"

    monkeypatch.setattr(selfcheck, "bundled_course", lambda: None)  # a grader installed without course content
    with pytest.raises(CourseNotFound) as error:
        selfcheck.find_course(str(plain))
    assert "--course PATH" in str(error.value) and "source/ and autograder/assignments/" in str(error.value)
    with pytest.raises(UsageError, match="not a course"):
        selfcheck.find_course(str(plain), str(elsewhere))


def _locked_answers_notebook() -> dict:
    """A blank notebook whose answers are typed into the locked check cells (after the check
    call, so the check cell itself defines every name)."""
    notebook = classroom.filled_notebook(REPOSITORY, "attention_heads", "virtual_head", blank=True)
    answers = classroom.model_answers(REPOSITORY, "attention_heads", "virtual_head")
    cells = notebook["cells"]
    check_cell = {
        "ex1_head1_answer": "ex1_head1",
        "ex1_head2_answer": "ex1_head2",
        "ex1_products_answer": "ex1_products",
        "ex1_composition_answer": "ex1_composition",
        "ex1_ranks_answer": "ex1_ranks",
        "ex1_capacity_answer": "ex1_capacity",
    }
    for answer, check in check_cell.items():
        (cell,) = [c for c in cells if c.get("metadata", {}).get("nbgrader", {}).get("grade_id") == check]
        cell["source"] = answers[answer] + "\n"
    return notebook


def test_locked_cells_are_restored_for_the_self_check_as_for_grading():
    notebook = _locked_answers_notebook()
    restore_course_cells(notebook, REPOSITORY.release_notebook("attention_heads", "virtual_head"))
    blank = classroom.filled_notebook(REPOSITORY, "attention_heads", "virtual_head", blank=True)
    assert [source_text(cell["source"]) for cell in notebook["cells"]] == [
        source_text(cell["source"]) for cell in blank["cells"]
    ]


def _check(path, cwd):
    return subprocess.run(
        [sys.executable, "-m", "autograder", "check", str(path)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
@pytest.mark.sandbox
def test_answers_in_locked_cells_earn_nothing_in_the_self_check(tmp_path):
    path = tmp_path / "virtual_head.ipynb"
    path.write_text(json.dumps(_locked_answers_notebook()))
    checked = _check(path, REPOSITORY.root)
    assert checked.returncode == 1, checked.stdout + checked.stderr
    assert "autograded total: 0/13" in checked.stdout, checked.stdout


@pytest.mark.slow
@pytest.mark.sandbox
def test_a_moved_work_copy_is_checked_against_its_course_and_every_zero_says_why(course, tmp_path):
    (copy,) = [path for path in work.make_copies(course, ["attention_heads"]) if path.name == "virtual_head.ipynb"]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    moved = elsewhere / "virtual_head.ipynb"
    shutil.copy(copy, moved)
    checked = _check(moved, elsewhere)
    assert checked.returncode == 1, checked.stdout + checked.stderr
    assert "autograded total: 0/13" in checked.stdout
    lines = checked.stdout.splitlines()
    for number, line in enumerate(lines):
        if line.startswith("✘ "):
            assert lines[number + 1].startswith("    ✘ "), f"no reason for {line!r}:\n{checked.stdout}"
    assert "1 point," in checked.stdout and "1 points" not in checked.stdout


def test_each_machine_s_extra_is_in_the_readme_and_the_hub_student_gets_nbgrader():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((REPOSITORY.root / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    readme = (REPOSITORY.root / "README.md").read_text()
    rows = readme[readme.index("| machine | extra |") :].split("\n\n")[0].splitlines()[2:]
    for machine in ("self-learner", "student image of a hub", "the grader"):
        assert any(machine in row.split("|")[1] for row in rows), machine
    named = {name for row in rows for name in re.findall(r"`([\w-]+)`", row.split("|")[2])}
    assert {"student", "hub-student", "instructor"} <= named <= set(extras)
    hub = " ".join(extras["hub-student"])
    assert "nbgrader" in hub and "[student]" in hub, "the Assignment List, fetch, submit and Validate are nbgrader's"
    self_learner = readme[readme.index("## Self-learners") :]
    assert "autograder work" in self_learner and "--ServerApp.root_dir=." in self_learner


@pytest.mark.sandbox
def test_a_check_that_fails_without_a_message_still_says_why(mini_course, tmp_path):
    """Every part below full marks carries a line saying why, even when a check's Mistake is
    empty (the grader's fault): in the report, and so in check, feedback and the formgrader."""
    from autograder.core import engine

    course = release.copy_course(mini_course, tmp_path / "course", with_release=True)
    checks_file = course.grading / "mini" / "test_mini.py"
    checks_file.write_text(checks_file.read_text().replace('raise Mistake("k should be 3")', 'raise Mistake("  ")'))
    path = tmp_path / "mini.ipynb"
    path.write_text(json.dumps(classroom.filled_notebook(course, "mini", "mini", {"mini_function_answer": "k = 4\n"})))
    (report,) = engine.grade(course, [engine.GradeRequest(str(path), "ada")], jobs=1, allow_unisolated=True)
    (failed,) = [check for check in report.checks if check.id == "k_is_three"]
    assert not failed.passed and "without saying why" in failed.message and failed.internal_error
    assert "    ✘ k_is_three: this check failed without saying why" in report.as_self_check(course.solutions)
