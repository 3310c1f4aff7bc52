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
