"""What people read, compared with committed golden files: the text report of `grade`, the
self-check report of `check`, and the per-part block that feedback pages and the formgrader show.

The reports are built from a fixed synthetic grading (no sandbox, no randomness), so any change
to wording or layout shows up as a diff of tests/golden/ (`pytest --update-golden` rewrites it).
"""

import pathlib

import pytest

from autograder.core import engine, specs
from autograder.core.course import Course
from autograder.core.report import MissingName
from autograder.core.runner import CheckResult


@pytest.fixture
def report(tmp_path) -> engine.Report:
    """One notebook, three autograded parts (full, partly wrong, failed) and one free-text part."""
    spec = specs.NotebookSpec(
        assignment="attention_heads",
        notebook="virtual_head",
        checks_path=pathlib.Path("test_virtual_head.py"),
        module=None,
        helpers_dir=tmp_path,
        extract=("W_V1", "W_O1"),
        probes={},
        parts=(
            specs.Part("ex1_head1", 2.0, False),
            specs.Part("ex1_head2", 3.0, False),
            specs.Part("ex1_ranks", 2.0, False),
            specs.Part("ex1_capacity_why", 1.0, True),
        ),
    )

    def check(check_id, part, points, passed, message="", missing=None):
        return CheckResult(check_id, part, points if passed else 0.0, points, passed, message, missing=missing)

    checks = [
        check("head1_copies", "ex1_head1", 2.0, True),
        check("head2_reads_head1_output", "ex1_head2", 2.0, True, "V-composition score 1.00"),
        check(
            "head2_writes_free_dims",
            "ex1_head2",
            1.0,
            False,
            "W_net2 writes into dims 8-11, which head 1 already uses:\n- dim 8 gets 1.0\n- dim 9 gets 1.0",
        ),
        check(
            "ranks",
            "ex1_ranks",
            1.0,
            False,
            "rank_W_net1 is not defined. No code cell that ran defines it: "
            "write `rank_W_net1 = ...` in the answer cell for this part and run it.",
            MissingName("rank_W_net1"),
        ),
        check(
            "ranks_agree",
            "ex1_ranks",
            0.0 + 1.0,
            False,
            "rank_W_net1 is not defined. No code cell that ran "
            "defines it: write `rank_W_net1 = ...` in the answer cell for this part and run it.",
            MissingName("rank_W_net1"),
        ),
    ]
    return engine.Report(
        notebook="submitted/ada/attention_heads/virtual_head.ipynb",
        submission_id="ada",
        graded_as="attention_heads/virtual_head",
        spec=spec,
        checks=checks,
        manual_parts=[spec.parts[3]],
        isolation="bubblewrap",
        figures={
            "ex1_head2": ['<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><title>W_net2</title></svg>']
        },
        attempted=["ex1_head1", "ex1_head2"],
        answer_cells={"ex1_head1": 4, "ex1_head2": 7, "ex1_ranks": 12},
    )


def test_text_report(report, golden):
    golden("grade_report.txt", report.as_text() + "\n")


def test_self_check_report(report, golden, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    golden("self_check_report.txt", report.as_self_check(Course(tmp_path).solutions) + "\n")


def test_feedback_part_blocks(report, golden):
    blocks = []
    for part in report.spec.auto_parts:
        block = report.part(part.grade_id)
        html, plain = block.as_html(), block.as_text()
        blocks.append(f"<!-- {part.grade_id}: html -->\n{html}\n<!-- {part.grade_id}: text/plain -->\n{plain}\n")
    golden("feedback_parts.html", "\n".join(blocks))


def test_feedback_for_an_unreadable_notebook(report, golden):
    report.checks, report.error = [], "unreadable notebook: the file is not valid notebook JSON (line 1)"
    block = report.part("ex1_head1")
    html, plain = block.as_html(), block.as_text()
    golden("feedback_unreadable.html", f"{html}\n{plain}\n")
