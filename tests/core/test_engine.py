"""The grading engine on the mini course: recognition, staged messages, scores, reports."""

import json

import pytest

from autograder.core import engine
from autograder.dev import classroom

pytestmark = pytest.mark.sandbox  # every test here runs submissions in the real sandbox


def grade_cells(tmp_path, mini_course, replacements=None, blank=False, name="mini.ipynb", mutate=None):
    notebook = classroom.filled_notebook(mini_course, "mini", "mini", replacements, blank=blank)
    if mutate:
        mutate(notebook)
    path = tmp_path / name
    path.write_text(json.dumps(notebook))
    (report,) = engine.grade(mini_course, [engine.GradeRequest(str(path), "s1")])
    return report


def by_id(report):
    return {check.id: check for check in report.checks}


def test_reference_earns_full_marks(tmp_path, mini_course):
    report = grade_cells(tmp_path, mini_course)
    assert report.error is None
    assert (report.score, report.max_score) == (4.0, 4.0)
    assert report.graded_as == "mini/mini"
    assert [part.grade_id for part in report.manual_parts] == ["mini_why"]


def test_untouched_release_earns_nothing_and_says_why(tmp_path, mini_course):
    report = grade_cells(tmp_path, mini_course, blank=True)
    assert report.score == 0
    message = by_id(report)["w_is_identity"].message
    assert "W is not defined" in message and "NotImplementedError" in message


def test_wrong_values_lose_only_their_part(tmp_path, mini_course):
    report = grade_cells(tmp_path, mini_course, {"mini_matrix_answer": "W = [[1, 0], [0, 3]]"})
    assert report.part_scores() == {"mini_matrix": 0.0, "mini_function": 2.0}
    assert "differs from the identity by up to 2" in by_id(report)["w_is_identity"].message


def test_renamed_notebook_is_recognised_by_content(tmp_path, mini_course):
    report = grade_cells(tmp_path, mini_course, name="Untitled (3).ipynb")
    assert report.graded_as == "mini/mini" and report.score == 4.0


def test_name_in_a_raw_cell_is_explained(tmp_path, mini_course):
    def to_raw(notebook):
        cell = next(c for c in notebook["cells"] if "W = np.eye(2)" in "".join(c["source"]))
        cell["cell_type"] = "raw"
        cell.pop("outputs"), cell.pop("execution_count")

    report = grade_cells(tmp_path, mini_course, mutate=to_raw)
    assert "Raw cell, which never runs" in by_id(report)["w_is_identity"].message


def test_unreadable_notebook_gets_a_report_with_the_reason(tmp_path, mini_course):
    path = tmp_path / "broken.ipynb"
    path.write_text('{"cells": [')
    (report,) = engine.grade(mini_course, [engine.GradeRequest(str(path), "s1")])
    assert report.score == 0 and "not valid notebook JSON" in report.error


def test_report_json_has_the_documented_fields(tmp_path, mini_course):
    data = grade_cells(tmp_path, mini_course).to_json()
    assert {"notebook", "score", "max_score", "checks", "error"} <= set(data)
    auto = [c for c in data["checks"] if not c.get("manual")]
    assert all({"id", "points", "max_points", "passed", "message"} <= set(c) for c in auto)
    assert [c["id"] for c in data["checks"] if c.get("manual")] == ["mini_why"]


@pytest.mark.parametrize(
    "code, expected",
    [
        ("W = np.eye(2)[:, :1]", "should have shape (2, 2), but it has shape (2, 1)"),
        ("W = np.full((2, 2), np.nan)", "NaN or infinite"),
        ("W = 'identity'", "should be an array of real numbers, but it is a string"),
        ("W = np.eye(2) * (1 + 1j)", "complex entries"),
    ],
)
def test_staged_messages(tmp_path, mini_course, code, expected):
    report = grade_cells(tmp_path, mini_course, {"mini_matrix_answer": "import numpy as np\n" + code})
    assert expected in by_id(report)["w_is_identity"].message


def test_probe_inputs_are_the_same_on_every_regrade_of_the_same_code(tmp_path, mini_course):
    """Regrading a notebook draws the same inputs for its functions, so its messages do not
    change; other code draws other inputs (a submission cannot hard-code answers for them)."""
    from autograder.sandbox import supervisor as sandbox

    def drawn(replacements=None):
        notebook = classroom.filled_notebook(mini_course, "mini", "mini", replacements)
        path = tmp_path / "mini.ipynb"
        path.write_text(json.dumps(notebook))
        _, submission = engine.extract(mini_course, engine.GradeRequest(str(path), "s1"), sandbox.Limits(), "auto")
        return [[arg.tolist() for arg in call.args] for call in submission.calls("double")]

    first = drawn()
    assert first and drawn() == first
    answer = classroom.model_answers(mini_course, "mini", "mini")
    changed = {grade_id: text + "\n# checked twice" for grade_id, text in answer.items() if "def double" in text}
    assert changed and drawn(changed) != first
