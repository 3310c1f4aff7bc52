"""The batch grader's once-per-run steps give nbgrader's own verdicts and rows."""

from __future__ import annotations

import copy

import nbformat
import pytest
from nbgrader.api import Gradebook
from nbgrader.preprocessors import CheckCellMetadata

from autograder.nbgrader import batch_steps
from tests.builders import REPOSITORY


def _release():
    return nbformat.read(str(REPOSITORY.release / "attention_heads" / "virtual_head.ipynb"), as_version=4)


def _graded_cell(nb):
    return next(cell for cell in nb.cells if cell.metadata.get("nbgrader", {}).get("grade"))


def _verdict(step, nb):
    try:
        step.preprocess(copy.deepcopy(nb), {})
    except Exception as error:  # noqa: BLE001 - nbgrader also raises SchemaMismatchError
        return type(error), str(error)
    return None


def corruptions():
    """(name, change to a notebook) that nbgrader's metadata check refuses."""

    def bad_points(nb):
        _graded_cell(nb).metadata["nbgrader"]["points"] = "many"

    def too_new(nb):
        _graded_cell(nb).metadata["nbgrader"]["schema_version"] = 99

    def duplicate_id(nb):
        cells = [cell for cell in nb.cells if cell.metadata.get("nbgrader", {}).get("grade_id")]
        cells[1].metadata["nbgrader"]["grade_id"] = cells[0].metadata["nbgrader"]["grade_id"]

    def unknown_type(nb):
        _graded_cell(nb).metadata["nbgrader"]["grade"] = "yes"

    return [bad_points, too_new, duplicate_id, unknown_type]


@pytest.mark.parametrize("corrupt", corruptions(), ids=lambda corrupt: corrupt.__name__)
def test_metadata_check_refuses_what_nbgrader_refuses_even_after_valid_notebooks(corrupt):
    ours, theirs = batch_steps.CheckCellMetadataOnce(), CheckCellMetadata()
    valid = _release()
    for _ in range(2):  # valid metadata remembered: it must not let a corrupted cell through
        assert _verdict(ours, valid) is None and _verdict(theirs, valid) is None
    broken = _release()
    corrupt(broken)
    assert _verdict(theirs, broken) is not None
    assert _verdict(ours, broken) == _verdict(theirs, broken)


def test_the_batch_runs_the_once_compiled_check_for_nbgrader_check_only():
    assert batch_steps.run_once_equivalent(CheckCellMetadata) is batch_steps.CheckCellMetadataOnce

    class CoursesOwn(CheckCellMetadata):
        pass

    assert batch_steps.run_once_equivalent(CoursesOwn) is CoursesOwn


def test_one_transaction_commits_at_the_end_and_rolls_back_on_error(tmp_path):
    url = f"sqlite:///{tmp_path / 'gradebook.db'}"
    with Gradebook(url, "course") as gradebook:
        with batch_steps.one_transaction(gradebook):
            gradebook.update_or_create_student("alice")
            gradebook.update_or_create_student("bob")
            with Gradebook(url, "course") as other:  # another connection sees nothing yet
                assert [student.id for student in other.students] == []
        assert "commit" not in vars(gradebook.db)
        with pytest.raises(RuntimeError):
            with batch_steps.one_transaction(gradebook):
                gradebook.update_or_create_student("carol")
                raise RuntimeError("stop")
        assert "commit" not in vars(gradebook.db)
    with Gradebook(url, "course") as gradebook:
        assert sorted(student.id for student in gradebook.students) == ["alice", "bob"]


def _submission_rows(gradebook, student):
    """A student's submission as rows, named instead of by their random ids."""
    from nbgrader.api import SubmittedAssignment

    submission = gradebook.db.query(SubmittedAssignment).filter(SubmittedAssignment.student_id == student).one()
    rows = [("submission", submission.assignment.name, submission.timestamp, submission.extension)]
    for notebook in submission.notebooks:
        rows.append(("notebook", notebook.name, notebook.flagged, notebook.late_submission_penalty))
        for grade in notebook.grades:
            rows.append(
                ("grade", notebook.name, grade.name, grade.auto_score, grade.manual_score, grade.needs_manual_grade)
            )
        for comment in notebook.comments:
            rows.append(("comment", notebook.name, comment.name, comment.auto_comment, comment.manual_comment))
    return sorted(rows, key=repr)


def _assignment_of_two_notebooks(gradebook) -> None:
    """Assignment ps1: notebooks one and two, each with a graded code cell (2 points), an answer,
    a graded written answer (3 points) and a task (1.5 points)."""
    gradebook.add_assignment("ps1")
    for notebook in ("one", "two"):
        gradebook.add_notebook(notebook, "ps1")
        gradebook.add_grade_cell("points", notebook, "ps1", max_score=2, cell_type="code")
        gradebook.add_solution_cell("answer", notebook, "ps1")
        gradebook.add_grade_cell("essay", notebook, "ps1", max_score=3, cell_type="markdown")
        gradebook.add_solution_cell("essay", notebook, "ps1")
        gradebook.add_task_cell("task", notebook, "ps1", max_score=1.5, cell_type="markdown")


def test_submissions_made_at_once_are_the_rows_nbgrader_makes_one_by_one(tmp_path):
    """Grade, solution and task cells, with a timestamp and without; an existing submission is
    updated as nbgrader updates it."""
    with Gradebook(f"sqlite:///{tmp_path / 'gradebook.db'}", "course") as gradebook:
        _assignment_of_two_notebooks(gradebook)
        for student in ("theirs-dated", "ours-dated", "theirs-undated", "ours-undated", "again"):
            gradebook.add_student(student)
        when, later = "2026-12-01 10:00:00", "2026-12-02 11:30:00"
        gradebook.update_or_create_submission("ps1", "theirs-dated", timestamp=when)
        gradebook.update_or_create_submission("ps1", "theirs-undated")
        gradebook.update_or_create_submission("ps1", "again", timestamp=when)
        with batch_steps.one_transaction(gradebook):
            batch_steps.update_or_create_submissions(
                gradebook, "ps1", {"ours-dated": when, "ours-undated": None, "again": later}
            )
        assert _submission_rows(gradebook, "ours-dated") == _submission_rows(gradebook, "theirs-dated")
        assert _submission_rows(gradebook, "ours-undated") == _submission_rows(gradebook, "theirs-undated")
        assert len(_submission_rows(gradebook, "ours-dated")) == 1 + 2 * (1 + 3 + 3)
        again = gradebook.find_submission("ps1", "again")
        assert again.timestamp.isoformat(" ") == later and len(gradebook.assignment_submissions("ps1")) == 5


def test_a_pages_scores_read_as_rows_are_what_nbgraders_rows_say(tmp_path):
    """Automatic, manual and extra-credit scores, a task cell, comments (automatic and manual) and
    a late penalty: notebook_scores reads each as nbgrader's own objects have it."""
    with Gradebook(f"sqlite:///{tmp_path / 'gradebook.db'}", "course") as gradebook:
        _assignment_of_two_notebooks(gradebook)
        for student in ("ada", "bob"):
            gradebook.add_student(student)
            gradebook.update_or_create_submission("ps1", student)
        one = gradebook.find_submission_notebook("one", "ps1", "ada")
        grades = {grade.name: grade for grade in one.grades}
        grades["points"].auto_score = 1.5
        grades["essay"].manual_score, grades["essay"].extra_credit = 2, 0.5
        grades["task"].manual_score = 1
        for comment in one.comments:
            comment.auto_comment = f"automatic on {comment.name}"
        one.comments[0].manual_comment = "said by hand"
        one.late_submission_penalty = 0.75
        gradebook.db.commit()
        for student, notebook in (("ada", "one"), ("ada", "two"), ("bob", "one")):
            read = batch_steps.notebook_scores(gradebook, "ps1", student, notebook)
            row = gradebook.find_submission_notebook(notebook, "ps1", student)
            assert read.grades == {grade.name: (grade.score, grade.max_score) for grade in row.grades}
            assert read.comments == {comment.name: comment.comment for comment in row.comments}
            assert (read.score, read.max_score, read.late_penalty) == (
                row.score,
                row.max_score,
                row.late_submission_penalty,
            )
        ada = batch_steps.notebook_scores(gradebook, "ps1", "ada", "one")
        assert ada.grades == {"points": (1.5, 2), "essay": (2.5, 3), "task": (1, 1.5)}
        assert (ada.score, ada.max_score, ada.late_penalty) == (5, 6.5, 0.75)
        assert "said by hand" in ada.comments.values()
        assert batch_steps.notebook_scores(gradebook, "ps1", "carol", "one") is None
        assert batch_steps.notebook_scores(gradebook, "ps2", "ada", "one") is None
