"""The nbgrader view of a course: folders by nbgrader's layout rules (a course with folder names
of its own is graded where nbgrader would grade it, by the batch grader and by the service), the
gradebook of the course, and the submission key's text form (student ids judged when parsed)."""

from __future__ import annotations

import json
import pathlib

import pytest
from nbgrader.coursedir import CourseDirectory

from autograder.core.course import Course
from autograder.nbgrader.course_view import CourseView, SubmissionKey
from autograder.service import collect
from tests.builders.classes import auto_scores, run_batch

# A course that names its folders itself (nbgrader_config.py), as nbgrader allows.
OWN_FOLDERS = {"submitted_directory": "handed_in", "autograded_directory": "marked", "feedback_directory": "returned"}


def test_submission_key_text_form_round_trips_and_refuses_what_is_not_a_student():
    key = SubmissionKey("ada", "mini", "mini")
    assert str(key) == "ada/mini/mini"
    assert SubmissionKey.parse(str(key)) == key
    for text in ("ada/mini", "ada/mini/mini/x", "/mini/mini", "*/mini/mini", "..hidden/mini/mini", "a b/mini/mini"):
        with pytest.raises(ValueError):
            SubmissionKey.parse(text)


def test_folders_follow_nbgrader_layout_rules(tmp_path):
    default = CourseView(CourseDirectory(root=str(tmp_path)))
    assert default.submitted("ada", "mini") == tmp_path / "submitted" / "ada" / "mini"
    assert default.autograded("ada", "mini") == tmp_path / "autograded" / "ada" / "mini"
    assert default.feedback("ada", "mini") == tmp_path / "feedback" / "ada" / "mini"
    assert default.source("mini") == tmp_path / "source" / "mini"
    assert default.release("mini") == tmp_path / "release" / "mini"
    assert default.step_root("feedback") == tmp_path / "feedback"

    own = CourseView(
        CourseDirectory(
            root=str(tmp_path),
            directory_structure="{assignment_id}/{nbgrader_step}/{student_id}",
            **OWN_FOLDERS,
        )
    )
    assert own.submitted("ada", "mini") == tmp_path / "mini" / "handed_in" / "ada"
    assert own.step_root(own.coursedir.feedback_directory) == tmp_path
    for student in ("ada", "bob", ".hidden"):
        own.submitted(student, "mini").mkdir(parents=True)
    own.submitted("cy", "other").mkdir(parents=True)
    found = own.students_in(own.coursedir.submitted_directory, "mini")
    assert found == [(student, own.submitted(student, "mini")) for student in (".hidden", "ada", "bob")]


def _with_own_folder_names(root: pathlib.Path, tmp_path: pathlib.Path) -> None:
    """The course's nbgrader_config.py names its folders; its submissions move there."""
    with open(root / "nbgrader_config.py", "a") as config:
        for name, value in OWN_FOLDERS.items():
            config.write(f"\nc.CourseDirectory.{name} = {value!r}")
        config.write(f"\nc.Exchange.root = {str(tmp_path / 'no-exchange')!r}\n")  # no exchange: submitted/ is scanned
    (root / "submitted").rename(root / "handed_in")


def test_batch_grader_uses_the_courses_own_folder_names(mini_class, tmp_path):
    _with_own_folder_names(mini_class, tmp_path)
    view = CourseView.load(Course(mini_class))
    assert view.submitted("ada", "mini") == mini_class / "handed_in" / "ada" / "mini"
    assert run_batch(mini_class) == 0
    scores = auto_scores(mini_class)
    assert scores["ada"] == {"mini_matrix": 2, "mini_function": 2, "mini_why": 0}
    assert scores["eve"]["mini_matrix"] == 2, "a renamed notebook is found in the course's own submitted folder"
    graded = json.loads((mini_class / "marked" / "bob" / "mini" / "mini.ipynb").read_text())
    assert any("differs from the identity" in json.dumps(cell.get("outputs", [])) for cell in graded["cells"])
    assert (mini_class / "returned" / "ada" / "mini" / "mini.html").is_file()
    assert not (mini_class / "autograded").exists() and not (mini_class / "feedback").exists()
    assert run_batch(mini_class) == 0  # the rerun finds every student graded in marked/
    assert auto_scores(mini_class) == scores


def test_service_scans_and_grades_the_courses_own_submitted_folder(mini_class, tmp_path):
    from autograder.service.service import Service

    _with_own_folder_names(mini_class, tmp_path)
    course = Course(mini_class)
    found = collect.scan_submitted(CourseView.load(course), {"mini"})
    assert sorted(item.student for item in found) == ["ada", "bob", "cy", "dee", "eve"]
    assert all(item.path.parent.parent.name == "handed_in" for item in found)
    Service(course, jobs=1).run(until_idle=True)
    scores = auto_scores(mini_class)
    assert scores["ada"] == {"mini_matrix": 2, "mini_function": 2, "mini_why": 0}
    assert (mini_class / "marked" / "ada" / "mini" / "mini.ipynb").is_file()
    assert not (mini_class / "autograded").exists()
