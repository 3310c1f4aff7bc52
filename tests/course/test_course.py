"""The real course graded through the engine: reference, blank release, alternatives, mistakes.

Every notebook here is built the way a student builds one, by filling in the committed release
notebook (autograder.dev.classroom), and all of them are graded in one parallel engine run.
"""

import json
import re

import pytest

from autograder.core import engine
from autograder.dev import classroom
from tests.builders import REPOSITORY
from tests.builders.content import assert_meets_the_contract

pytestmark = pytest.mark.sandbox  # every test here runs submissions in the real sandbox


def _cases():
    """name -> (spec, replacements or None for the blank release, expectation). Cheap: notebooks
    are filled in by the `reports` fixture, not at collection."""
    cases = {}
    for spec in REPOSITORY.specs:
        a, nb = spec.assignment, spec.notebook
        cases[f"{a}/{nb}/reference"] = (spec, {}, {"full": True})
        cases[f"{a}/{nb}/blank release"] = (spec, None, {"zero": True})
        for kind in ("alternatives", "mistakes"):
            for name, entry in REPOSITORY.library(kind, a).items():
                if entry["notebook"] == nb:
                    expectation = {"full": True} if kind == "alternatives" else entry
                    cases[f"{a}/{nb}/{kind}/{name}"] = (spec, entry["cells"], expectation)
    return cases


CASES = _cases()


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    """Grade every case in one engine run (parallel sandboxes, one pytest session of checks)."""
    folder = tmp_path_factory.mktemp("course_cases")
    requests = []
    for number, (name, (spec, replacements, _)) in enumerate(CASES.items()):
        notebook = classroom.filled_notebook(
            REPOSITORY, spec.assignment, spec.notebook, replacements, blank=replacements is None
        )
        path = folder / f"case{number}.ipynb"
        path.write_text(json.dumps(notebook))
        requests.append(
            engine.GradeRequest(str(path), name, expected=engine.NotebookKey(spec.assignment, spec.notebook))
        )
    return {report.submission_id: report for report in engine.grade(REPOSITORY, requests)}


def _failures(report):
    return {check.id: check.message for check in report.checks if not check.passed}


@pytest.mark.parametrize("case", [name for name, (_, _, e) in CASES.items() if e.get("full")])
def test_correct_answers_earn_full_marks(reports, case):
    report = reports[case]
    assert report.error is None
    assert _failures(report) == {}
    assert report.score == report.max_score > 0


@pytest.mark.parametrize("case", [name for name, (_, _, e) in CASES.items() if e.get("zero")])
def test_untouched_release_earns_zero_on_every_autograded_part(reports, case):
    report = reports[case]
    assert set(report.part_scores().values()) == {0.0}
    assert all(
        "is not defined" in check.message or "could not be called" in check.message for check in report.checks
    ), _failures(report)


@pytest.mark.parametrize("case", [name for name, (_, _, e) in CASES.items() if "fails" in e])
def test_each_mistake_meets_the_contract_through_the_real_sandbox(reports, case):
    """The contract of tests/builders/content.py, on what the sandbox and the checks runner report."""
    spec, _, entry = CASES[case]
    report = reports[case]
    assert report.error is None
    assert_meets_the_contract(entry, _failures(report), spec)


@pytest.mark.parametrize("spec", REPOSITORY.specs, ids=lambda spec: spec.key)
def test_every_graded_name_is_defined_only_inside_solution_regions(spec):
    """So the untouched release defines none of them, and students cannot miss one."""
    release = classroom.release_notebook(REPOSITORY, spec.assignment, spec.notebook)
    release_code = "\n".join("".join(cell["source"]) for cell in release["cells"] if cell["cell_type"] == "code")
    for name in spec.extract:
        assert not re.search(rf"^\s*{re.escape(name)}\s*=|def\s+{re.escape(name)}\b", release_code, re.M), name
