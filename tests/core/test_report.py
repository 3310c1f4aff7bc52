"""The report module's views, each from a synthetic result (autograder.core.report), and the
structured data the checks runner and the autograded notebook give them (no sandbox)."""

import dataclasses
import json
import pathlib

import numpy as np
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from autograder.core import specs
from autograder.core.report import PART_RESULT_KEY, CheckResult, MissingName, PartResult, Report
from autograder.core.runner import run_checks
from autograder.core.submission import Submission
from autograder.core.testing import make_submission
from autograder.core.variants import Choice
from autograder.nbgrader.preprocessors import apply_report
from tests.builders import MINI

SPEC = specs.NotebookSpec(
    assignment="hw",
    notebook="nb",
    checks_path=pathlib.Path("test_nb.py"),
    module=None,
    helpers_dir=pathlib.Path("."),
    extract=("W", "k"),
    probes={},
    parts=(specs.Part("p1", 2.0, False), specs.Part("p2", 1.0, False), specs.Part("essay", 1.0, True)),
)

NOT_WRITTEN = "No code cell that ran defines it: write `W = ...` in the answer cell for this part and run it."


def _report(**changes) -> Report:
    fields = dict(
        notebook="hw/nb.ipynb",
        submission_id="ada",
        graded_as="hw/nb",
        spec=SPEC,
        checks=[
            CheckResult("shape", "p1", 1.0, 1.0, True, ""),
            CheckResult("values", "p1", 0.0, 1.0, False, f"W is not defined. {NOT_WRITTEN}", missing=MissingName("W")),
            CheckResult("uses_w", "p2", 0.0, 1.0, False, f"W is not defined. {NOT_WRITTEN}", missing=MissingName("W")),
        ],
        manual_parts=[SPEC.parts[2]],
        isolation="landlock",
        answer_cells={"p1": 2},
        variant=Choice("bob", "drawn for someone else", drawn_for_other=True),
    )
    fields.update(changes)
    return Report(**fields)


def test_json_view_has_every_check_the_manual_parts_and_the_variant():
    data = json.loads(json.dumps(_report().to_json()))
    assert (data["score"], data["max_score"]) == (1.0, 3.0)
    assert [check["id"] for check in data["checks"]] == ["shape", "values", "uses_w", "essay"]
    assert data["checks"][-1] == {
        "id": "essay",
        "part": "essay",
        "points": None,
        "max_points": 1.0,
        "passed": None,
        "manual": True,
        "message": "graded by hand",
    }
    assert (data["variant_of"], data["variant_note"]) == ("bob", "drawn for someone else")
    assert "missing" not in data["checks"][1]  # the JSON report keeps its fields


def test_text_view_says_every_check_and_a_grader_fault_alone():
    text = _report().as_text()
    assert text.splitlines()[:3] == [
        "hw/nb.ipynb: 1 / 3 (graded as hw/nb) [isolation: landlock]",
        "  variant: the one drawn for student bob",
        "  note: drawn for someone else",
    ]
    assert "  FAIL p2 / uses_w (0/1): W is not defined." in text
    assert text.endswith("  ---- essay (1 point) is graded by hand")
    fault = _report(grader_error="the sandbox could not start").as_text()
    assert fault == "hw/nb.ipynb: NOT GRADED (grader error, isolation landlock): the sandbox could not start"


def test_self_check_view_says_each_missing_name_once_where_to_write_it_and_why_when_known(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    lines = _report().as_self_check(tmp_path / "solutions").splitlines()
    assert lines[3:6] == [
        "✘ p1                       1/2",
        "    ✘ W is not defined yet: write it in cell 3, this part's answer cell, and run it.",
        "✘ p2                       0/1",
    ]
    assert lines[6] == "    ✘ needs W, not defined yet (see above)"  # said once, and the later part points to it
    hinted = _report(
        checks=[
            CheckResult(
                "values",
                "p1",
                0.0,
                2.0,
                False,
                "W is not defined. It is in a Raw cell.",
                missing=MissingName("W", "It is in a Raw cell."),
            )
        ]
    )
    assert (
        "    ✘ W is not defined yet: write it in cell 3, this part's answer cell, and run it. It is in a Raw cell."
        in (hinted.as_self_check(tmp_path))
    )


def test_self_check_view_tells_a_check_whose_message_only_reads_like_a_missing_name_as_it_is(tmp_path):
    """Only the checks' own data says a name is missing: a message that merely starts alike is shown whole."""
    said = "W is not defined. (as far as this check can tell)"
    text = _report(checks=[CheckResult("values", "p1", 0.0, 2.0, False, said)]).as_self_check(tmp_path)
    assert f"    ✘ values: {said}" in text and "not defined yet" not in text


def test_self_check_view_colours_only_when_asked_and_names_the_solutions_of_attempted_parts(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    report = _report(attempted=["p1"])
    assert "\033[" not in report.as_self_check(tmp_path / "solutions")
    assert "\033[31m✘ p1" in report.as_self_check(tmp_path / "solutions", color=True)
    assert report.as_self_check(tmp_path / "solutions").endswith(
        "reference solutions for the parts you attempted (p1): solutions/hw/nb.ipynb"
    )


def test_part_views_show_the_checks_and_the_withheld_views_only_which_passed():
    report = _report(figures={"p1": ["<svg><title>W</title></svg>"]})
    part = report.part("p1", note="note: renamed")
    assert (part.score, part.max_score) == (1.0, 2.0)
    assert part.as_text().splitlines() == [
        "Autograder, part p1: 1 / 2",
        "note: renamed",
        "PASS shape (1/1)",
        f"FAIL values (0/1): W is not defined. {NOT_WRITTEN}",
    ]
    assert "<svg><title>W</title></svg>" in part.as_html() and "note: renamed" in part.as_html()
    assert part.withheld_text() == "Autograder, part p1: 1 / 2\nPASS shape (1/1)\nFAIL values (0/1)"
    withheld = part.withheld_html()
    assert "not defined" not in withheld and "svg" not in withheld and "renamed" not in withheld
    assert "<li>FAIL values (0/1)</li>" in withheld and "shown after the due date" in withheld


def test_a_part_of_an_unreadable_notebook_says_why_and_a_part_without_checks_says_so():
    report = _report(checks=[], error="unreadable notebook: not JSON")
    part = report.part("p2")
    assert part.as_text() == "Autograder, part p2: 0 / 1\nERROR unreadable notebook: not JSON"
    assert "could not be checked" not in part.as_html()
    assert "this part could not be checked" in _report(checks=[]).part("p2").as_html()


def test_a_part_result_as_data_gives_the_same_views_back_without_its_pictures():
    part = _report(figures={"p1": ["<svg></svg>"]}).part("p1", note="a note")
    data = json.loads(json.dumps(part.to_json()))
    back = PartResult.from_json(data)
    assert back is not None and "figures" not in data
    assert (back.as_text(), back.withheld_html(), back.withheld_text()) == (
        part.as_text(),
        part.withheld_html(),
        part.withheld_text(),
    )
    assert back.as_html() == dataclasses.replace(part, figures=[]).as_html()


@pytest.mark.parametrize(
    "data",
    [None, "text", [], {"grade_id": "p1"}, {"grade_id": "p1", "score": 1, "max_score": 2, "checks": [{"id": "x"}]}],
)
def test_data_that_is_not_a_part_result_reads_as_none(data):
    assert PartResult.from_json(data) is None


def test_a_part_result_as_data_keeps_a_long_message_as_shown():
    long = "x" * 10_000
    data = _report(checks=[CheckResult("c", "p1", 0.0, 2.0, False, long)]).part("p1").to_json()
    assert len(data["checks"][0]["message"]) < 4100


def test_apply_report_keeps_each_parts_result_in_its_test_cell_and_drops_any_the_student_wrote():
    def test_cell(grade_id):
        return new_code_cell(
            "check()", metadata={"nbgrader": {"grade": True, "solution": False, "locked": True, "grade_id": grade_id}}
        )

    forged = {"grade_id": "p1", "score": 2, "max_score": 2, "checks": []}
    answer = new_markdown_cell("my answer", metadata={PART_RESULT_KEY: forged})
    nb = new_notebook(cells=[answer, test_cell("p1"), test_cell("p2")])
    report = _report()
    apply_report(nb, report)
    assert PART_RESULT_KEY not in nb.cells[0].metadata
    for cell, grade_id in zip(nb.cells[1:], ["p1", "p2"]):
        stored = PartResult.from_json(cell.metadata[PART_RESULT_KEY])
        assert stored is not None and stored.as_text() == cell.outputs[0]["data"]["text/plain"]
        assert stored.note == "drawn for someone else"  # the variant's note, said in each part
        assert float(cell.outputs[1]["data"]["text/plain"]) == stored.score == report.part_scores()[grade_id]


def test_the_checks_runner_says_which_name_was_missing_and_why_as_data():
    spec = MINI.find_spec("mini", "mini")
    unwritten = make_submission({"W": np.eye(2), "k": 3}, submission_id="unwritten")
    hinted = Submission("hinted", {}, static_hints={"k": "It is assigned in cell 3, a Raw cell, which never runs."})
    crashed = Submission("crashed", {}, fatal="The notebook ran out of time.")
    results = run_checks([(spec, [unwritten, hinted, crashed])])
    by_id = {name: {check.id: check for check in checks} for name, checks in results.items()}
    assert by_id["unwritten"]["double_doubles"].missing == MissingName("double")
    assert by_id["unwritten"]["w_is_identity"].missing is None and by_id["unwritten"]["w_is_identity"].passed
    assert by_id["hinted"]["k_is_three"].missing == MissingName(
        "k", "It is assigned in cell 3, a Raw cell, which never runs."
    )
    assert (
        by_id["hinted"]["k_is_three"].message
        == "k is not defined. It is assigned in cell 3, a Raw cell, which never runs."
    )
    assert by_id["crashed"]["w_is_identity"].missing == MissingName("W", "The notebook ran out of time.")
