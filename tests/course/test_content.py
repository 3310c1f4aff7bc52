"""Every assignment's content, in-process and in seconds, under one contract (tests/builders/content.py):
points of test cells equal points of checks, the reference earns every point, the blank release
none, every alternative every point, every mistake fails exactly what its entry says, and every
mark scheme's points add up."""

import re

import pytest

from autograder.core import notebook as nbio
from tests.builders import REPOSITORY
from tests.builders.content import assert_meets_the_contract, check_marks, run_in_process

SPECS = {spec.key: spec for spec in REPOSITORY.specs}
ENTRIES = [
    pytest.param(spec, kind, name, entry, id=f"{spec.key}/{kind}/{name}")
    for spec in REPOSITORY.specs
    for kind in ("alternatives", "mistakes")
    for name, entry in sorted(REPOSITORY.library(kind, spec.assignment).items())
    if entry["notebook"] == spec.notebook
]


@pytest.mark.parametrize("spec", SPECS.values(), ids=SPECS.keys())
def test_points_of_test_cells_equal_points_of_checks(spec):
    summed: dict[str, float] = {}
    for grade_id, points in check_marks(spec).values():
        summed[grade_id] = summed.get(grade_id, 0.0) + points
    assert summed == {part.grade_id: part.points for part in spec.auto_parts}


@pytest.mark.parametrize("spec", SPECS.values(), ids=SPECS.keys())
@pytest.mark.parametrize("seed", [0, 1])  # the grader draws new probe inputs every time
def test_reference_earns_every_point(spec, seed):
    assert run_in_process(REPOSITORY, spec, {}, seed=seed) == {}


@pytest.mark.parametrize("spec", SPECS.values(), ids=SPECS.keys())
def test_blank_release_earns_nothing_and_says_what_is_missing(spec):
    failures = run_in_process(REPOSITORY, spec, {}, blank=True)
    assert set(failures) == set(check_marks(spec))
    assert all("not defined" in message or "could not be called" in message for message in failures.values())


@pytest.mark.parametrize(("spec", "kind", "name", "entry"), ENTRIES)
def test_library_entry_meets_the_contract(spec, kind, name, entry):
    assert entry["description"].strip()
    assert set(entry["cells"]) <= _answer_ids(spec), "entries replace answer cells only"
    assert_meets_the_contract(entry, run_in_process(REPOSITORY, spec, entry["cells"]), spec)


# Two students' variants (any salt): the libraries hold in each, as on the exercise page.
VARIANT_STUDENTS = ("ada", "grace")


@pytest.mark.parametrize("student", VARIANT_STUDENTS)
@pytest.mark.parametrize("spec", [spec for spec in SPECS.values() if spec.variant], ids=lambda spec: spec.key)
def test_reference_earns_every_point_in_other_variants(spec, student):
    assert run_in_process(REPOSITORY, spec, {}, student=student, salt="tests") == {}


@pytest.mark.parametrize("student", VARIANT_STUDENTS)
# (entries marked "frequencies": "exercise page" hold only with the page's own periods; the
# induction variants' tests show them breaking under other periods)
@pytest.mark.parametrize(
    ("spec", "kind", "name", "entry"),
    [e for e in ENTRIES if e.values[0].variant and e.values[3].get("frequencies") != "exercise page"],
)
def test_library_entry_meets_the_contract_in_other_variants(spec, kind, name, entry, student):
    failures = run_in_process(REPOSITORY, spec, entry["cells"], student=student, salt="tests")
    assert_meets_the_contract(entry, failures, spec, messages=False)


@pytest.mark.parametrize("spec", SPECS.values(), ids=SPECS.keys())
def test_every_autograded_part_is_broken_by_some_mistake(spec):
    marks = check_marks(spec)
    mistakes = REPOSITORY.library("mistakes", spec.assignment).values()
    broken = {
        marks[name.removeprefix("test_")][0]
        for entry in mistakes
        if entry["notebook"] == spec.notebook
        for name in entry["fails"]
    }
    assert sorted({part.grade_id for part in spec.auto_parts} - broken) == [], (
        "parts no mistake in mistakes.json breaks"
    )


def _answer_ids(spec) -> set[str]:
    release = REPOSITORY.release_notebook(spec.assignment, spec.notebook)
    return {
        cell["metadata"]["nbgrader"]["grade_id"]
        for cell in release["cells"]
        if cell.get("metadata", {}).get("nbgrader", {}).get("solution")
    }


@pytest.mark.parametrize("spec", SPECS.values(), ids=SPECS.keys())
def test_mark_schemes_score_every_element_with_points_that_add_up(spec):
    """Each free-text cell's mark scheme ("* 0.5: ...") has at least two items, whose points are the cell's."""
    cells = nbio.read_course_notebook(REPOSITORY.source / spec.assignment / f"{spec.notebook}.ipynb")["cells"]
    free_text = [
        cell
        for cell in cells
        if cell["cell_type"] == "markdown"
        and cell.get("metadata", {}).get("nbgrader", {}).get("grade")
        and cell["metadata"]["nbgrader"].get("solution")
    ]
    assert free_text
    for cell in free_text:
        text = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        scheme = text.partition("Mark scheme:")[2].partition("### END SOLUTION")[0]
        items = [float(points) for points in re.findall(r"^\* (\d+(?:\.\d+)?):", scheme, re.M)]
        grade_id, points = cell["metadata"]["nbgrader"]["grade_id"], cell["metadata"]["nbgrader"]["points"]
        assert len(items) >= 2, grade_id
        assert sum(items) == pytest.approx(points), grade_id
