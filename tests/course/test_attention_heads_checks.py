"""Unit tests of the attention_heads content: hidden checks, public checks, alternatives, mistakes.

No notebook is executed by Jupyter: the code cells of the instructor notebooks are run in this
process (answer cells optionally replaced), the names the checks read are turned into a
`Submission` with `autograder.testing.make_submission` (the driver's own encoder), and every
check is called directly. So the content is verified without the sandbox, in about a second.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import json
import re
import sys
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from autograder.core.checks import Mistake
from autograder.core.testing import call_function, make_submission
from tests.builders import REPOSITORY

ASSIGNMENT = REPOSITORY.source / "attention_heads"
ref = REPOSITORY.grading_module("attention_heads", "reference")
MODULES = {
    notebook: REPOSITORY.grading_module("attention_heads", f"test_{notebook}")
    for notebook in ("questions", "virtual_head")
}
ALTERNATIVES = REPOSITORY.library("alternatives", "attention_heads")
MISTAKES = REPOSITORY.library("mistakes", "attention_heads")
SOLUTION = re.compile(r"### BEGIN SOLUTION\n(.*?)### END SOLUTION", re.S)


def _cells(notebook):
    return json.loads((ASSIGNMENT / f"{notebook}.ipynb").read_text())["cells"]


def _meta(cell):
    return cell.get("metadata", {}).get("nbgrader", {})


def _source(cell):
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def _checks(module):
    """(name, function, grade_id, points) of every hidden check in a module."""
    found = []
    for name in sorted(dir(module)):
        function = getattr(module, name)
        if name.startswith("test_") and callable(function):
            for mark in getattr(function, "pytestmark", []):
                if mark.name == "part":
                    found.append((name, function, mark.kwargs["grade_id"], mark.kwargs["points"]))
    return found


@pytest.fixture(scope="module", autouse=True)
def _public_helpers_importable():
    sys.path.insert(0, str(ASSIGNMENT))
    yield
    sys.path.remove(str(ASSIGNMENT))


def run_notebook(notebook, replacements=None, blank_solutions=False):
    """Run the notebook's code cells in one namespace, like the sandbox driver does.

    Returns (namespace, {grade_id of a test cell: error message or None}).
    """
    replacements = replacements or {}
    namespace = {"__name__": "__main__"}
    public = {}
    for cell in _cells(notebook):
        if cell["cell_type"] != "code":
            continue
        meta = _meta(cell)
        source = _source(cell)
        if meta.get("grade_id") in replacements:
            source = replacements[meta["grade_id"]]
        elif blank_solutions and meta.get("solution"):
            source = SOLUTION.sub("raise NotImplementedError()\n", source)
        error = None
        with contextlib.redirect_stdout(io.StringIO()):
            try:
                exec(compile(source, f"<cell {meta.get('grade_id', '')}>", "exec"), namespace)
            except Exception as exc:  # noqa: BLE001 - a failing cell does not stop the run
                error = f"{type(exc).__name__}: {exc}"
        if meta.get("grade") and not meta.get("solution"):
            public[meta["grade_id"]] = error
    return namespace, public


def grade(notebook, namespace, seed=0):
    """{check name: (grade_id, points, None if passed else message)} for one namespace."""
    module = MODULES[notebook]
    values = {name: namespace[name] for name in module.EXTRACT if name in namespace}
    rng = np.random.default_rng(seed)
    calls = {
        name: call_function(namespace[name], probes, rng)
        for name, probes in module.PROBES.items()
        if callable(namespace.get(name))
    }
    sub = make_submission(values, calls)
    verdicts = {}
    for name, function, grade_id, points in _checks(module):
        try:
            function(sub)
            verdicts[name] = (grade_id, points, None)
        except Mistake as mistake:
            assert str(mistake).strip(), f"{name} raised an empty Mistake"
            verdicts[name] = (grade_id, points, str(mistake))
        # Any other exception propagates: it would be an internal grader error.
    return verdicts


def failures(verdicts):
    return {name: message for name, (_, _, message) in verdicts.items() if message is not None}


# -- structure of the notebooks -----------------------------------------------------------------


@pytest.mark.parametrize("notebook", sorted(MODULES))
def test_cells_follow_the_nbgrader_conventions(notebook):
    ids = [_meta(c)["grade_id"] for c in _cells(notebook) if _meta(c)]
    assert len(ids) == len(set(ids)), "grade_ids must be unique"
    for cell in _cells(notebook):
        meta, source = _meta(cell), _source(cell)
        if not meta:
            continue
        assert meta["schema_version"] == 3 and meta["task"] is False
        if meta["solution"]:
            assert SOLUTION.search(source), meta["grade_id"]
        if meta["grade"] and meta["solution"]:  # written answer, graded by hand
            assert cell["cell_type"] == "markdown" and meta["points"] > 0
            assert "Mark scheme:" in SOLUTION.search(source).group(1), meta["grade_id"]
        if meta["grade"] and not meta["solution"]:  # autograded part: only a public check
            assert meta["locked"] and re.fullmatch(r"check_\w+\([\w,\s]*\)", source.strip()), source
        if meta["solution"] and cell["cell_type"] == "code":
            outside = SOLUTION.sub("", source)
            assert not re.search(r"^\s*[A-Za-z_]\w*\s*=|^\s*def ", outside, re.M), (
                f"{meta['grade_id']} defines names outside its solution region"
            )


@pytest.mark.parametrize("notebook", sorted(MODULES))
def test_extract_names_every_name_a_check_reads(notebook):
    module = MODULES[notebook]
    text = (REPOSITORY.grading_dir("attention_heads") / f"test_{notebook}.py").read_text()
    read = set(re.findall(r'sub\.\w+\("(\w+)"', text)) | set(module.PROBES)
    assert read <= set(module.EXTRACT), read - set(module.EXTRACT)
    assert set(module.PROBES) <= set(module.EXTRACT)


# -- the reference solution, the blank release, alternatives and mistakes -----------------------


def _answer_ids(notebook):
    return {_meta(c)["grade_id"] for c in _cells(notebook) if _meta(c).get("solution")}


@pytest.mark.parametrize("mistake", sorted(name for name, spec in MISTAKES.items() if "public_fails" in spec))
def test_common_slips_are_caught_by_the_public_checks(mistake):
    """The public checks, which reveal no answer, catch the slips an entry lists under
    "public_fails" (grade_id -> the message the locked cell must raise)."""
    spec = MISTAKES[mistake]
    _, public = run_notebook(spec["notebook"], spec["cells"])
    for grade_id, pattern in spec["public_fails"].items():
        assert public[grade_id], f"the public check of {grade_id} passes {mistake}"
        assert re.search(pattern, public[grade_id]), f"{grade_id}: {public[grade_id]!r} !~ {pattern!r}"


def test_messages_never_print_q6_answers():
    answers = ref.q6_answers()
    # Small whole numbers (the rank, a singular value of 2) are everywhere in prose; the score
    # and the fractional singular values are what a message must never print.
    values = [answers["score"], *answers["singular_values"][: answers["rank"]]]
    secrets = {text for v in values if abs(v - round(v)) > 1e-6 for text in (ref.lib.fmt(v), f"{v:.3f}", f"{v:.2f}")}
    for name, spec in MISTAKES.items():
        if spec["notebook"] != "questions" or not any(k.startswith("q6") for k in spec["cells"]):
            continue
        namespace, _ = run_notebook("questions", spec["cells"])
        for check, message in failures(grade("questions", namespace)).items():
            if check in ("test_W_V2_W_O1", "test_singular_values", "test_rank", "test_v_composition_score"):
                message = re.sub(r"\b\w+ is -?[\d.e+-]+", "", message)  # echoing the student's value is fine
                for secret in secrets:
                    assert not re.search(rf"(?<![\w.]){re.escape(secret)}(?![\w])", message), (name, check, secret)


# -- public checks ------------------------------------------------------------------------------


def test_public_checks_reject_what_they_should():
    import tc_checks as tc  # the copy students get

    def fails(function, *args, match):
        with pytest.raises(AssertionError, match=match):
            function(*args)

    def no_mask(X, W_Q, W_K):
        return ref.attention_pattern(X, W_Q, W_K, mask="none")

    fails(tc.check_attention_pattern, no_mask, match="comes later")
    fails(tc.check_attention_pattern, lambda X, Q, K: ref.attention_pattern(X, Q, K, normalised=False), match="sums to")
    fails(
        tc.check_attention_head,
        lambda X, Q, K, V, O: X + ref.attention_head(X, Q, K, V, O),
        match="add the residual stream",
    )
    fails(tc.check_attention_head, lambda X, Q, K, V, O: V @ X @ ref.attention_pattern(X, Q, K).T, match="before W_O")
    fails(
        tc.check_attention_head,
        lambda X, Q, K, V, O: O @ V @ X @ ref.attention_pattern(X, Q, K),
        match="changed the output at earlier positions",
    )
    fails(tc.check_decide_attention, {"W_Q"}, match="two")
    fails(tc.check_read_write, {"W_Q", "W_X"}, {"W_O"}, match="not one of")
    heads = tc.q6_heads()
    fails(tc.check_q6_product, heads["W_O1"] @ heads["W_V2"], match="other order")
    # The shape alone does not say which product a 16 x 16 array is: nothing is named.
    fails(tc.check_q6_product, np.zeros((16, 16)), match=r"\(d_model x d_model\)\. W_V2 @ W_O1 takes")
    fails(tc.check_q6_singular_values, np.array([0.5, 2.0, 0, 0]), match="descending")
    fails(tc.check_q6_rank, 2.5, match="not a whole number")
    fails(tc.check_q6_v_composition, 3.0, match="between 0 and 1")
    fails(tc.check_head1, np.zeros((16, 4)), np.zeros((4, 16)), match="transpose")
    fails(tc.check_capacity, 87.5, 12.5, match="percentage")
    fails(tc.check_ranks, 17, 4, 1, 8, match="rank 0 to 16")


def test_public_checks_print_the_agreed_line():
    import tc_checks as tc

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        tc.check_q6_rank(2)
    assert "public checks passed" in out.getvalue() and "all tests passed" not in out.getvalue()


# -- pictures -----------------------------------------------------------------------------------


def _parses(svg):
    root = ET.fromstring(svg)
    assert root.tag.endswith("svg")


def test_heatmaps_draw_anything_they_are_given():
    import heatmaps

    for value in (
        [[1, -2], [np.nan, np.inf]],
        np.zeros((0, 3)),
        [1, 2, 3],
        5.0,
        np.ones((40, 70)),
        "not a matrix",
        np.eye(4, dtype=int),
    ):
        figure = heatmaps.show_matrix(value, "t<i>tle & co", "rows", "cols", highlight_rows=[0, 99])
        _parses(figure.svg)
        assert figure._repr_svg_() == figure.svg and figure.svg in figure._repr_html_()
    _parses(heatmaps.show_attention(np.tril(np.ones((3, 3))) / 3, tokens=["a", "<b>", "c"]).svg)
    _parses(heatmaps.show_head(np.eye(4, 16), np.eye(16, 4, k=-8), "head").svg)
    _parses(heatmaps.side_by_side(heatmaps.show_matrix(np.eye(2)), heatmaps.show_head(np.eye(2), np.eye(2))).svg)


@pytest.mark.parametrize("notebook", sorted(MODULES))
def test_feedback_figures_are_svg_of_the_students_values(notebook):
    namespace, _ = run_notebook(notebook)
    module = MODULES[notebook]
    values = {name: namespace[name] for name in module.EXTRACT if name in namespace}
    calls = {
        name: call_function(namespace[name], probes, np.random.default_rng(0)) for name, probes in module.PROBES.items()
    }
    sub = make_submission(values, calls)
    drawn = 0
    for _, _, grade_id, _ in _checks(module):
        for svg in module.figures(sub, grade_id):
            _parses(svg)
            drawn += 1
    assert drawn > 0
    assert module.figures(make_submission({}), "ex1_head1") == []


# -- robustness: odd submissions are student mistakes, never grader errors ----------------------

ODD_VALUES = [
    None,
    "W_Q",
    ["a", "b"],
    {"x": 1},
    3,
    -1.5,
    float("nan"),
    1 + 2j,
    np.zeros((0,)),
    np.ones((2, 3, 4)),
    np.full((16, 16), np.inf),
    np.eye(16) * (1 + 1j),
    [[1, 2], [3]],
    np.ones((4, 4)),
    np.ones((16, 16)),
    np.ones(4),
    True,
    print,
]
ODD_FUNCTIONS = [
    lambda *args: None,
    lambda *args: "text",
    lambda *args: np.ones((2, 2)),
    lambda *args: args[0],
    lambda *args: np.full(np.shape(args[0]), np.nan),
    lambda *args: 1 / 0,
    lambda *args: np.zeros(np.shape(args[0])[1:] * 2),
    lambda *args: np.ones(np.shape(args[0])) * (1 + 1j),
]


@pytest.mark.parametrize("notebook", sorted(MODULES))
def test_checks_turn_odd_values_into_mistakes(notebook):
    module = MODULES[notebook]
    rng = np.random.default_rng(3)
    for round_ in range(len(ODD_VALUES)):
        values, calls = {}, {}
        for k, name in enumerate(module.EXTRACT):
            if name in module.PROBES:
                function = ODD_FUNCTIONS[(round_ + k) % len(ODD_FUNCTIONS)]
                calls[name] = call_function(function, module.PROBES[name], rng)
            else:
                values[name] = ODD_VALUES[(round_ + k) % len(ODD_VALUES)]
        sub = make_submission(values, calls)
        for _name, function, _grade_id, _ in _checks(module):
            try:
                function(sub)
            except Mistake:
                pass
        for _, _, grade_id, _ in _checks(module):
            for svg in module.figures(sub, grade_id):
                _parses(svg)


def test_public_checks_explain_odd_values_with_assertion_errors():
    import tc_checks as tc

    checks = [getattr(tc, name) for name in dir(tc) if name.startswith("check_")]
    for check in checks:
        # the student's answers; a trailing `variant` is the notebook's own, never odd
        arity = len([name for name in inspect.signature(check).parameters if name != "variant"])
        for k, odd in enumerate(ODD_VALUES + ODD_FUNCTIONS):
            args = [odd] + [ODD_VALUES[(k + i) % len(ODD_VALUES)] for i in range(1, arity)]
            with contextlib.redirect_stdout(io.StringIO()):
                try:
                    check(*args)
                except AssertionError as error:
                    assert str(error).strip()


# Each diagnosis rule (a recognisable sentence of a check's message) is triggered by one entry
# of the mistakes library and must not be triggered by another entry that fails the same check.
# (The simulation's "fix ex1_headN first" has no such other entry: with both heads passing their
# checks the simulation always passes, so every simulation failure names a head.)
DIAGNOSES = {
    "rounding noise": ("test_rank", r"rounding noise"),
    "ranks of other matrices listed": ("test_rank", r"the rank of W_O1 @ W_V2"),
    "mask hides the diagonal": ("test_attention_pattern_matches_reference", r"diagonal"),
    "mask lets the next position through": ("test_attention_pattern_matches_reference", r"src > dest \+ 1"),
    "divided by sqrt(d_model)": ("test_attention_pattern_matches_reference", r"sqrt\(d_model\)"),
    "divided by a typed constant": ("test_attention_pattern_matches_reference", r"divided by the same number"),
    "grader does not know which step": ("test_attention_pattern_matches_reference", r"does not know which step"),
    "head waits for the pattern": ("test_attention_head_matches_reference", r"cannot be judged yet"),
    "head output transposed": ("test_attention_head_matches_reference", r"That is the transpose"),
    "W_V2_W_O1 in the other order": ("test_W_V2_W_O1", r"the product in the other order"),
    "two orders alike: cannot judge": ("test_two_token_copy", r"cannot be judged yet"),
    "rank counts noise (Exercise 1)": ("test_rank_two_token_copy", r"counting rounding noise"),
    "fractions of head 2 alone": ("test_fraction_previous_token", r"head 2's dims alone"),
    "a head leaves a position out": ("test_attention_head_matches_reference", r"writes nothing at position"),
    "a pattern leaves a position out": ("test_attention_pattern_matches_reference", r"leaves out position"),
}


# Each rule with the library entry that leaves something out (a position a pattern or head
# skips, a dim a head does not copy) and that the rule must not fire on: its cause is not there.
# (Where that entry passes the rule's check, the rule cannot fire on it either.)
LEFT_OUT = {
    "rounding noise": "pattern_leaves_out_a_position",
    "ranks of other matrices listed": "pattern_leaves_out_a_position",
    "mask hides the diagonal": "pattern_leaves_out_a_position",
    "mask lets the next position through": "pattern_leaves_out_a_position",
    "divided by sqrt(d_model)": "pattern_leaves_out_a_position",
    "divided by a typed constant": "pattern_leaves_out_a_position",
    "grader does not know which step": "pattern_leaves_out_a_position",
    "head waits for the pattern": "head_writes_nothing_for_a_token",
    "head output transposed": "head_writes_nothing_for_a_token",
    "W_V2_W_O1 in the other order": "head_writes_nothing_for_a_token",
    "two orders alike: cannot judge": "head1_leaves_a_dim_out",
    "rank counts noise (Exercise 1)": "head1_leaves_a_dim_out",
    "fractions of head 2 alone": "head1_leaves_a_dim_out",
    # the left-out rules themselves, on an answer that computes every position wrongly
    "a head leaves a position out": "head_adds_residual",
    "a pattern leaves a position out": "pattern_no_scaling",
}


@pytest.mark.parametrize("rule", sorted(DIAGNOSES))
def test_each_diagnosis_is_withheld_from_an_answer_that_leaves_something_out(rule):
    check, pattern = DIAGNOSES[rule]
    entry = MISTAKES[LEFT_OUT[rule]]
    namespace, _ = run_notebook(entry["notebook"], entry["cells"])
    verdicts = grade(entry["notebook"], namespace)
    message = verdicts[check][2] if check in verdicts else None
    assert not (message and re.search(pattern, message)), f"{rule!r} fires on {LEFT_OUT[rule]}: {message}"


def _failure_messages(check):
    """(entry, message) of every library mistake that fails `check`."""
    found = []
    for name, spec in MISTAKES.items():
        if check in spec["fails"]:
            namespace, _ = run_notebook(spec["notebook"], spec["cells"])
            module = MODULES[spec["notebook"]]
            message = grade(spec["notebook"], namespace)[check][2] if hasattr(module, check) else None
            if message:
                found.append((name, message))
    return found


@pytest.mark.parametrize("rule", sorted(DIAGNOSES))
def test_each_diagnosis_is_triggered_by_one_mistake_and_withheld_from_another(rule):
    check, pattern = DIAGNOSES[rule]
    messages = _failure_messages(check)
    triggered = [name for name, message in messages if re.search(pattern, message)]
    withheld = [name for name, message in messages if not re.search(pattern, message)]
    assert triggered, f"no mistake in the library triggers {rule!r}"
    assert withheld, f"no mistake that fails {check} shows that {rule!r} is withheld when it does not apply"
