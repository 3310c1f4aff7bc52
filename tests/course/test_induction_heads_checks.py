"""Fast unit tests of the induction-heads checks, without the sandbox.

Namespaces are built by exec'ing the instructor notebook's setup cell and solution code (with
each alternative's or mistake's replacement cells), then graded by calling the hidden checks on
`make_submission` of the extracted names, and by the public checks the test cells call.
"""

import re
import sys
import types

import numpy as np
import pytest

from autograder.core.testing import make_submission
from tests.builders.induction_heads import (
    ANSWER_CELLS,
    CHECKS,
    MISTAKES,
    NOTEBOOK,
    TEST_CELLS,
    failed,
    grade,
    hidden,
    meta,
    namespace,
    part_of,
    reference,
    run_public,
    solution_code,
    source,
)


# --- the notebook and the checks agree --------------------------------------------------------
def test_test_cells_only_call_the_public_check():
    for cell in TEST_CELLS:
        grade_id = meta(cell)["grade_id"]
        assert re.fullmatch(rf"check_{grade_id}\([\w, ]+\)", source(cell).strip()), source(cell)
        assert meta(cell)["locked"]


def test_answer_cells_define_every_extracted_name_inside_solution_regions():
    defined = set()
    for cell in ANSWER_CELLS:
        text = source(cell)
        outside = text.split("### BEGIN SOLUTION")[0] + text.split("### END SOLUTION")[1]
        for name in hidden.EXTRACT:
            assert not re.search(rf"\b{name}\s*=", outside), (name, meta(cell)["grade_id"])
            if re.search(rf"\b{name}\b[^=\n]*=", solution_code(cell)):
                defined.add(name)
    assert defined == set(hidden.EXTRACT)


def test_free_text_cells_have_model_answer_and_mark_scheme():
    written = [cell for cell in NOTEBOOK["cells"] if cell["cell_type"] == "markdown" and meta(cell).get("solution")]
    assert {meta(cell)["grade_id"] for cell in written} == {"q_rotary", "q_composition"}
    for cell in written:
        assert meta(cell)["grade"] and meta(cell)["points"] > 0
        assert "Mark scheme:" in solution_code(cell)


# --- grading ------------------------------------------------------------------------------
def test_reference_solution_earns_full_marks_twice_in_a_row():
    """Grading caches nothing that changes a verdict (their speed is measured by make bench)."""
    ns = namespace()
    assert failed(grade(ns)) == {}
    assert failed(grade(ns)) == {}


def test_notebook_solution_matches_the_independent_reference_construction():
    ns = namespace()
    tools = reference.tools
    for name, expected in reference.reference_answers().items():
        if name.startswith(("W_Q", "W_K")):
            continue  # compared through W_QK below
        assert np.allclose(np.asarray(ns[name]), expected), name
    for suffix in ("a", "b", "c", "d", "f", "prev", "ind"):
        answers = reference.reference_answers()
        assert np.allclose(
            tools.qk(ns[f"W_Q_{suffix}"], ns[f"W_K_{suffix}"]),
            tools.qk(answers[f"W_Q_{suffix}"], answers[f"W_K_{suffix}"]),
        ), suffix


@pytest.mark.parametrize("variant", sorted(MISTAKES))
def test_mistake_messages_never_show_internal_values(variant):
    failures = failed(grade(namespace(MISTAKES[variant]["cells"])))
    for message in failures.values():
        assert "array(" not in message and "Traceback" not in message
        assert "nan" not in message.lower().split()


# --- public checks ------------------------------------------------------------------------
def test_public_checks_pass_on_the_solution(capsys):
    ns = namespace()
    for cell in TEST_CELLS:
        run_public(ns, cell)
    printed = capsys.readouterr().out
    assert printed.count("public checks passed") == len(TEST_CELLS)
    assert "all tests passed" not in printed.lower()


@pytest.mark.parametrize("variant", sorted(MISTAKES))
def test_public_checks_catch_each_mistake(variant):
    entry = MISTAKES[variant]
    ns = namespace(entry["cells"])
    broken = {part_of(CHECKS[name])[0] for name in entry["fails"]}
    for cell in TEST_CELLS:
        if meta(cell)["grade_id"] in broken:
            with pytest.raises(AssertionError):
                run_public(ns, cell)
        else:
            run_public(ns, cell)


def test_public_checks_stage_their_input_messages():
    ns = namespace()
    check = ns["check_ex2a"]
    with pytest.raises(AssertionError, match="W_Q_a is None"):
        check(None, ns["W_K_a"])
    with pytest.raises(AssertionError, match="transpose"):
        check(ns["W_Q_a"].T, ns["W_K_a"])
    with pytest.raises(AssertionError, match=r"NaN or infinite \(the first at index \(0, 0\)\)"):
        check(ns["W_Q_a"] * np.nan, ns["W_K_a"])
    with pytest.raises(AssertionError, match="real numbers"):
        check(np.array([["x"] * 32] * 16), ns["W_K_a"])


# --- feedback pictures --------------------------------------------------------------------
def test_figures_show_the_students_own_heads():
    sub = make_submission({name: namespace()[name] for name in hidden.EXTRACT})
    for cell in TEST_CELLS:
        pictures = hidden.figures(sub, meta(cell)["grade_id"])
        assert pictures and all(picture.startswith("<svg") for picture in pictures)
    assert hidden.figures(make_submission({}), "ex2a") == []


def test_a_failing_pattern_is_pictured_on_the_sequence_where_its_check_fails():
    """The picture shows the sequence the message describes, not a fixed example on which the
    wrong head may look right."""
    ns = namespace(MISTAKES["d_attends_to_self"]["cells"])
    sub = make_submission({name: ns[name] for name in hidden.EXTRACT})
    message = grade(ns)["test_d_attends_to_earlier_copy_not_itself"]
    shown = re.search(r"on the sequence ((?:\w+ )+)\(positions", message).group(1).split()
    (picture,) = hidden.figures(sub, "ex2d")
    assert "on the sequence where the check fails" in picture
    labels = [f"{token}{i}" for i, token in enumerate(shown)]
    assert all(f">{label}<" in picture for label in labels)
    correct = make_submission({name: namespace()[name] for name in hidden.EXTRACT})
    assert "where the check fails" not in hidden.figures(correct, "ex2d")[0]


def test_a_failing_public_pattern_check_draws_the_sequence_it_describes(monkeypatch):
    """In a notebook, a failing pattern check shows the pattern on the public sequence its
    message names (and outside IPython it draws nothing)."""
    shown = []
    ipython = types.ModuleType("IPython")
    ipython.get_ipython = lambda: object()
    display = types.ModuleType("IPython.display")
    display.display = shown.append
    monkeypatch.setitem(sys.modules, "IPython", ipython)
    monkeypatch.setitem(sys.modules, "IPython.display", display)
    ns = namespace(MISTAKES["d_attends_to_self"]["cells"])
    with pytest.raises(AssertionError) as failure:
        ns["check_ex2d"](ns["W_Q_d"], ns["W_K_d"])
    sequence = re.search(r"on the sequence ((?:\w+ )+)\(positions", str(failure.value)).group(1).strip()
    (figure,) = shown
    assert f"on {sequence}, where the check fails" in figure.svg
    ipython.get_ipython = lambda: None
    with pytest.raises(AssertionError):
        ns["check_ex2d"](ns["W_Q_d"], ns["W_K_d"])
    assert len(shown) == 1


DIAGNOSES = {  # rule -> (check, what its message says): see test_attention_heads_checks
    "shift by one step": ("test_ind_attends_after_earlier_copy", r"shift by one step"),
    "a tie names every tied position": (
        "test_ind_attends_after_earlier_copy",
        r"those positions score exactly as high",
    ),
    "the tie's shared content term": (
        "test_ind_attends_after_earlier_copy",
        r"Every position holding the present token",
    ),
    "layer-2 part waits for layer 1": ("test_ind_attends_after_earlier_copy", r"cannot be judged yet"),
    "predicts the present token again": ("test_ind_predicts_next_token", r"predicts the present token again"),
    "logits tie": ("test_ind_predicts_next_token", r"its logits tie"),
    "(f) waits for (e)": ("test_f_attends_after_earlier_copy", r"Fix part \(e\) \(ex2e\) first"),
    "lands on itself": ("test_c_attends_to_previous_position", r"lands on itself"),
    "the penalty moves other positions": ("test_d_attends_to_earlier_copy_not_itself", r"different token"),
    "no content match for a token": ("test_d_attends_to_earlier_copy_not_itself", r"no content match"),
    "two distances": ("test_prev_written_token_is_readable", r"squared distances"),
    "writes nothing for a token": ("test_prev_written_token_is_readable", r"writes nothing when the head reads"),
    "a query reads nothing": ("test_ind_attends_after_earlier_copy", r"reads nothing through your W_QK"),
    "copies nothing of a token": ("test_ind_copies_attended_token", r"it writes nothing"),
}

# Each rule that names a cause, with the library entry that leaves something out (a token, a
# query that reads nothing, a head that writes nothing for a token) and fails the same check:
# the rule must not fire on it, since its cause is not there.
LEFT_OUT = {
    "shift by one step": "ind_qk_tokens_left_out",
    "a tie names every tied position": "ind_ov_tokens_left_out",
    "the tie's shared content term": "ind_qk_tokens_left_out",
    "layer-2 part waits for layer 1": "ind_qk_tokens_left_out",
    "predicts the present token again": "ind_ov_tokens_left_out",
    "logits tie": "ind_qk_tokens_left_out",
    "(f) waits for (e)": "ind_qk_tokens_left_out",
    "lands on itself": "a_tokens_left_out",
    "the penalty moves other positions": "d_tokens_left_out",
    "no content match for a token": "d_penalty_too_strong",
    "two distances": "prev_tokens_left_out",
    "writes nothing for a token": "prev_reads_position",
    "a query reads nothing": "ind_extra_content_term",
    "copies nothing of a token": "ind_copies_current_token",
}


@pytest.mark.parametrize("rule", sorted(DIAGNOSES))
def test_each_diagnosis_is_triggered_by_one_mistake_and_withheld_from_another(rule):
    check, pattern = DIAGNOSES[rule]
    messages = [
        (name, grade(namespace(entry["cells"]))[check]) for name, entry in MISTAKES.items() if check in entry["fails"]
    ]
    assert any(re.search(pattern, message) for _, message in messages), f"nothing triggers {rule!r}"
    assert any(not re.search(pattern, message) for _, message in messages), (
        f"no mistake that fails {check} shows {rule!r} withheld"
    )


@pytest.mark.parametrize("rule", sorted(DIAGNOSES))
def test_each_diagnosis_is_withheld_from_an_answer_that_leaves_something_out(rule):
    check, pattern = DIAGNOSES[rule]
    entry = MISTAKES[LEFT_OUT[rule]]
    message = grade(namespace(entry["cells"])).get(check)
    if check in entry["fails"]:
        assert message and not re.search(pattern, message), f"{rule!r} fires on {LEFT_OUT[rule]}: {message}"
    else:  # the entry passes this check: the rule cannot fire on it either
        assert message is None, message
