"""Unit tests of the nbgrader preprocessors on synthetic cells (no kernel, no sandbox, no nbgrader run).

Each step is tested on notebooks built cell by cell, as nbgrader's own preprocessor tests are:
`restore_course_metadata` against a synthetic release, `apply_report` against a synthetic report.
"""

import html
import json
import pathlib

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from autograder.core import engine, specs
from autograder.core.course import Course
from autograder.core.runner import CheckResult
from autograder.nbgrader import preprocessors


def _meta(grade_id=None, grade=False, solution=False, locked=False, points=None):
    meta = {"grade": grade, "solution": solution, "locked": locked, "schema_version": 3, "task": False}
    if grade_id:
        meta["grade_id"] = grade_id
    if points is not None:
        meta["points"] = points
    return {"nbgrader": meta}


def _release() -> nbformat.NotebookNode:
    """intro (markdown) | setup (locked code) | answer | test (locked, 2 points) | essay (manual)."""
    return new_notebook(
        cells=[
            new_markdown_cell("# Intro"),
            new_code_cell("import numpy as np", metadata=_meta("setup", locked=True)),
            new_code_cell("# YOUR CODE HERE\nraise NotImplementedError()", metadata=_meta("answer", solution=True)),
            new_code_cell("check(W)", metadata=_meta("part1", grade=True, locked=True, points=2)),
            new_markdown_cell("YOUR ANSWER HERE", metadata=_meta("essay", grade=True, solution=True, points=1)),
        ],
        metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
    )


@pytest.fixture
def course(tmp_path) -> Course:
    """A course whose only content is the synthetic release of assignment `a`, notebook `nb`."""
    (tmp_path / "release" / "a").mkdir(parents=True)
    (tmp_path / "release" / "a" / "nb.ipynb").write_text(json.dumps(_release()))
    return Course(tmp_path)


def _restored(course, cells, metadata=None):
    nb = new_notebook(cells=cells, metadata=metadata or {})
    preprocessors.restore_course_metadata(nb, course, "a", "nb")
    return nb


def _ids(nb):
    return [cell.metadata.get("nbgrader", {}).get("grade_id") for cell in nb.cells]


def test_locked_cells_are_the_releases_own_whatever_the_student_did(course):
    edited_test = new_code_cell("print('passed')", metadata=_meta("part1", grade=False, locked=False, points=99))
    nb = _restored(course, [new_code_cell("W = 1", metadata=_meta("answer", solution=True)), edited_test])
    test = next(cell for cell in nb.cells if _ids(nb)[nb.cells.index(cell)] == "part1")
    assert test.source == "check(W)"
    assert test.metadata.nbgrader["points"] == 2 and test.metadata.nbgrader["grade"] is True


def test_answer_cells_keep_the_students_source_with_the_releases_metadata(course):
    answer = new_code_cell("W = 2", metadata=_meta("answer", solution=False, points=5))
    nb = _restored(course, [answer])
    restored = nb.cells[_ids(nb).index("answer")]
    assert restored.source == "W = 2"
    assert restored.metadata.nbgrader == _release().cells[2].metadata.nbgrader


def test_deleted_graded_cells_come_back_in_release_order(course):
    nb = _restored(course, [new_code_cell("W = 1", metadata=_meta("answer", solution=True))])
    assert [i for i in _ids(nb) if i] == ["answer", "part1", "essay"]


def test_only_the_first_cell_claiming_a_grade_id_keeps_it_and_strangers_lose_theirs(course):
    cells = [
        new_code_cell("W = 1", metadata=_meta("answer", solution=True)),
        new_code_cell("W = 2", metadata=_meta("answer", solution=True)),  # a duplicated cell
        new_code_cell("x = 3", metadata=_meta("not_in_release", grade=True, points=10)),
        new_code_cell("y = 4", metadata={"nbgrader": "a string, not a dict"}),
    ]
    nb = _restored(course, cells)
    assert _ids(nb).count("answer") == 1
    assert nb.cells[_ids(nb).index("answer")].source == "W = 1"
    assert "not_in_release" not in _ids(nb)
    assert all("nbgrader" not in cell.metadata for cell in nb.cells if cell.source in ("W = 2", "x = 3", "y = 4"))


def test_kernelspec_is_the_releases(course):
    nb = _restored(course, [], metadata={"kernelspec": {"name": "evil", "display_name": "x", "language": "sh"}})
    assert nb.metadata.kernelspec["name"] == "python3"


def _report(course, checks, error=None):
    spec = specs.NotebookSpec(
        assignment="a",
        notebook="nb",
        checks_path=pathlib.Path("test_nb.py"),
        module=None,
        helpers_dir=course.release / "a",
        extract=("W",),
        probes={},
        parts=(specs.Part("part1", 2.0, False), specs.Part("essay", 1.0, True)),
    )
    return engine.Report(
        notebook="nb.ipynb",
        submission_id="s",
        graded_as="a/nb",
        spec=spec,
        checks=checks,
        error=error,
        isolation="bubblewrap",
    )


def _check(passed, points, message=""):
    return CheckResult(
        id="w_right", part="part1", points=points if passed else 0.0, max_points=points, passed=passed, message=message
    )


def test_apply_report_writes_score_and_messages_into_autograded_test_cells_only(course):
    nb = _release()
    preprocessors.apply_report(nb, _report(course, [_check(False, 2.0, "W is <b>wrong</b>")]))
    test = nb.cells[3]
    display, result = test.outputs
    assert result.output_type == "execute_result" and result.data["text/plain"] == "0.0"
    assert "W is &lt;b&gt;wrong&lt;/b&gt;" in display.data["text/html"]  # escaped, never markup
    assert "FAIL w_right (0/2): W is <b>wrong</b>" in display.data["text/plain"]
    assert all(not cell.get("outputs") for i, cell in enumerate(nb.cells) if i != 3)


def test_apply_report_gives_partial_credit_that_nbgrader_reads(course):
    from nbgrader.utils import determine_grade

    nb = _release()
    preprocessors.apply_report(nb, _report(course, [_check(True, 2.0)]))
    assert determine_grade(nb.cells[3]) == (2.0, 2.0)


def test_a_report_error_is_shown_in_every_autograded_part(course):
    nb = _release()
    preprocessors.apply_report(nb, _report(course, [], error="unreadable notebook: truncated"))
    assert "unreadable notebook: truncated" in nb.cells[3].outputs[0].data["text/plain"]
    assert nb.cells[3].outputs[1].data["text/plain"] == "0.0"


def test_course_of_a_preprocessor_is_its_converters_course_directory(tmp_path):
    from nbgrader.coursedir import CourseDirectory
    from traitlets.config import Configurable

    converter = Configurable()
    converter.coursedir = CourseDirectory(root=str(tmp_path))
    step = preprocessors.RestoreCourseMetadata(parent=Configurable(parent=converter))
    assert step.course == Course(tmp_path)


def test_course_of_a_lone_preprocessor_is_its_configured_course_directory(tmp_path):
    from traitlets.config import Config

    config = Config()
    config.CourseDirectory.root = str(tmp_path)
    assert preprocessors.RestoreCourseMetadata(config=config).course == Course(tmp_path)


def test_a_message_of_several_lines_keeps_its_line_breaks_in_html(course):
    """A message listing what is wrong, one point a line, must not run together on the page."""
    message = "W_net2 is wrong:\n  - head 2 writes into dims 8-11\n  - into dims 12-15"
    nb = _release()
    preprocessors.apply_report(nb, _report(course, [_check(False, 2.0, message)]))
    page = nb.cells[3].outputs[0].data["text/html"]
    assert f'<span style="white-space:pre-wrap">{html.escape(message)}</span>' in page
    assert message in nb.cells[3].outputs[0].data["text/plain"]
