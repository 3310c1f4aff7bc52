"""Every student's variant of the induction-heads assignment keeps the exercise's maths.

A variant (`induction_tools.Variant`) places TOK, POS and FREE in the residual stream and picks
the positional periods; the grader draws it from the student id (`VARIANT = tools.variant_for`
in the checks module). Over many drawn students these tests hold every variant to the exercise:
the facts the notebook states about the setting are true in it, the reference answer built in
it earns full marks with margins to spare (and the composition and ablation numbers the model
answers quote), the notebook's one source solution is right in it, the answer libraries meet
their contract in it, the judges do not care where the dims sit (permuting the dims of an
answer carries its verdicts along), the messages name the student's own dims, and an answer
worked for one student loses points under another student's variant.

A library entry marked `"frequencies": "exercise page"` is right (or wrong in the way it says)
only with the exercise page's periods; it is run in drawn layouts with those periods.
"""

import itertools
import re
import shutil

import numpy as np
import pytest

from autograder.core import engine
from autograder.core import variants as course_variants
from autograder.core.course import Course
from autograder.core.testing import make_submission
from autograder.dev import classroom
from autograder.student import tclib
from tests.builders import REPOSITORY
from tests.builders import induction_heads as base
from tests.builders.content import assert_meets_the_contract, check_marks

tools = base.reference.tools  # the course's trusted copy, as the grader loads it
hidden, reference = base.hidden, base.reference
SPEC = next(
    spec for spec in REPOSITORY.specs if (spec.assignment, spec.notebook) == ("induction_heads", "induction_heads")
)
MARKS = check_marks(SPEC)  # check name -> (grade_id, points)
FULL = sum(points for _, points in MARKS.values())
DEFAULT = tools.DEFAULT_VARIANT

STUDENTS = [f"student-{i:03d}" for i in range(200)]
VARIANTS = {student: tools.variant_for(student) for student in STUDENTS}


def _first_students_per_period_set() -> list[str]:
    """One drawn student for each set of periods a variant can have (so every set is run)."""
    chosen = {}
    for student, variant in VARIANTS.items():
        chosen.setdefault(tuple(sorted(variant.periods)), student)
    assert set(chosen) == set(tools.PERIOD_CHOICES), "200 students should draw every set of periods"
    return [chosen[periods] for periods in sorted(chosen)]


LIBRARY_STUDENTS = _first_students_per_period_set()


def _graded(values: dict, variant) -> dict[str, str]:
    """check name -> message of every failing hidden check, for `values` judged in `variant`."""
    sub = make_submission(values)
    sub.variant = variant
    failures = {}
    for name, check in base.CHECKS.items():
        try:
            check(sub)
        except base.Mistake as mistake:
            failures[name.removeprefix("test_")] = str(mistake)
    return failures


def _score(failures: dict) -> float:
    return FULL - sum(MARKS[name][1] for name in failures)


def _extracted(ns) -> dict:
    return {name: ns[name] for name in hidden.EXTRACT if name in ns}


# --- the variants themselves -------------------------------------------------------------------
def test_the_default_variant_is_the_exercise_pages_setting():
    assert DEFAULT.tok == tuple(range(0, 9)) and DEFAULT.pos == tuple(range(9, 15))
    assert DEFAULT.free == tuple(range(15, 32)) and DEFAULT.student_id is None
    assert np.array_equal(DEFAULT.ALPHAS, np.array([np.pi / 2, 2 * np.pi / 5, np.pi / 5]))  # bit for bit
    assert np.array_equal(DEFAULT.LAMBDAS, np.ones(3))
    assert tools.variant_for(None) is DEFAULT
    assert tools.my_variant() is DEFAULT and tools.my_variant(per_student=False, student_id="someone") is DEFAULT
    assert hidden.VARIANT is tools.variant_for  # what the engine draws each submission's variant with
    release = base.json.loads((REPOSITORY.root / "release" / "induction_heads" / "induction_heads.ipynb").read_text())
    assert course_variants.settings_of(release) == course_variants.Settings(per_student=False, salt="")
    assert tools.keeps_the_maths(DEFAULT.periods) and DEFAULT.periods in tools.PERIOD_CHOICES


def test_variants_are_drawn_from_the_student_id_and_the_course_salt(monkeypatch):
    assert tools.variant_for("ada") == tools.variant_for("ada")
    assert tools.variant_for("ada").student_id == "ada"
    layouts = {(v.tok, v.pos, v.periods) for v in VARIANTS.values()}
    assert len(layouts) >= 190, f"only {len(layouts)} different variants among 200 students"
    assert len({v.tok for v in VARIANTS.values()}) >= 195 and len({v.pos for v in VARIANTS.values()}) >= 195
    salted = sum(tools.variant_for(s, "course salt")[:4] != VARIANTS[s][:4] for s in STUDENTS[:50])
    assert salted >= 45
    monkeypatch.setenv(tclib.STUDENT_ID_VARIABLE, "student-007")  # as the sandbox sets it
    assert tools.my_variant(per_student=True) == VARIANTS["student-007"]


@pytest.mark.parametrize("student", STUDENTS[:8])
def test_the_setup_cell_draws_the_graders_variant(student):
    """The notebook's set-up cell, run as the student's (per-student course), draws exactly the
    variant the grader draws, and binds the names the exercise text uses to it."""
    ns = base.namespace(student_id=student)
    assert tuple(ns["variant"]) == tuple(hidden.VARIANT(student, "")) == tuple(VARIANTS[student])
    v = VARIANTS[student]
    assert list(ns["TOK"]) == list(v.tok) and list(ns["POS"]) == list(v.pos) and list(ns["FREE"]) == list(v.free)
    assert np.array_equal(ns["ALPHAS"], v.ALPHAS) and np.array_equal(ns["W_E"], v.W_E)
    assert np.array_equal(ns["embed"](tools.EXAMPLE), v.embed(tools.EXAMPLE))
    assert list(ns["pos_pair"](1)) == list(v.pos_pair(1))


def test_every_variant_places_the_three_groups_in_the_32_dims():
    for student, v in VARIANTS.items():
        assert sorted(v.tok + v.pos + v.free) == list(range(tools.D_MODEL)), student
        assert (len(v.tok), len(v.pos), len(v.free)) == (9, 6, 17)
        assert list(v.free) == sorted(v.free)
        assert tuple(sorted(v.periods)) in tools.PERIOD_CHOICES and tools.keeps_the_maths(v.periods)


def test_every_choice_of_periods_keeps_the_maths_and_no_other_does():
    for periods in itertools.permutations(range(2, 20), 3):
        kappa = tools.kappa(periods, tools.OFFSETS)
        distinct = len(set(periods)) == 3 and all(3 <= p <= 12 for p in periods)
        told_apart = 3 - kappa.max() >= tools.MIN_SELF_GAP
        spread_ok = kappa.max() - kappa.min() <= tools.MAX_SPREAD
        assert tools.keeps_the_maths(periods) == (distinct and told_apart and spread_ok), periods
        assert (tuple(sorted(periods)) in tools.PERIOD_CHOICES) == tools.keeps_the_maths(periods)


def test_what_the_notebook_states_about_the_setting_holds_in_every_variant():
    n = tools.N_CTX_MAX
    for v in VARIANTS.values():
        P = v.positional_code(n)
        W_E = v.W_E
        # token j is the unit vector of dim TOK[j]; W_U = W_E.T; the embedding leaves FREE empty
        assert np.array_equal(W_E, np.eye(tools.D_MODEL)[:, list(v.tok)]) and np.array_equal(v.W_U, W_E.T)
        X = v.embed(tools.EXAMPLE)
        assert np.array_equal(X, W_E[:, tools.EXAMPLE] + P[:, : len(tools.EXAMPLE)])
        assert not X[list(v.free)].any() and not P[list(v.tok)].any()
        # pair k holds (cos alpha_k t, sin alpha_k t) in dims pos_pair(k) = POS[2k], POS[2k+1]
        for k in range(3):
            assert list(v.pos_pair(k)) == list(v.POS[2 * k : 2 * k + 2])
            t = np.arange(n)
            assert np.allclose(P[v.pos_pair(k)], [np.cos(v.ALPHAS[k] * t), np.sin(v.ALPHAS[k] * t)])
        # kappa(t - s) = p_t . p_s depends only on the offset; kappa(0) = 3; the table's range
        gram = P.T @ P
        offsets = np.subtract.outer(np.arange(n), np.arange(n))
        assert np.allclose(gram, tools.kappa(v.periods, offsets))
        assert np.allclose(np.diag(gram), 3)
        low, high = v.kappa_range()
        off_diagonal = gram[~np.eye(n, dtype=bool)]
        assert np.isclose(off_diagonal.min(), low) and np.isclose(off_diagonal.max(), high)
        assert 3 - high >= tools.MIN_SELF_GAP and high - low <= tools.MAX_SPREAD
        assert f"between {low:.2f} and {high:.2f}" in str(v)
        # the rotation turns every position's code into the next one's (and back)
        R = tools.pair_rotation(v.ALPHAS)
        assert np.allclose(R @ P[list(v.pos), :-1], P[list(v.pos), 1:])
        assert np.allclose(tools.pair_rotation(-v.ALPHAS) @ P[list(v.pos), 1:], P[list(v.pos), :-1])


def test_the_notebook_states_the_bounds_every_variant_keeps():
    """The text's promise ("at least 1 below kappa(0), varies by at most 3.2") and the (d)
    solution's comment are the module's bounds, so changing one without the other fails."""
    text = "\n".join("".join(cell["source"]) for cell in base.NOTEBOOK["cells"])
    assert f"at least {tools.MIN_SELF_GAP:g} below $\\kappa(0)$ and varies by at most {tools.MAX_SPREAD:g}." in text
    assert f"at most {tools.MAX_SPREAD:g} r, which must stay below the content" in text
    assert 1 - tools.MAX_SPREAD / 4 > 0  # so r = 1/4 (the solution's penalty) keeps a content match ahead


def test_the_setup_cell_shows_and_records_the_variant():
    v = VARIANTS["student-001"]
    text = str(v)
    assert "student-001" in text
    for words in (tclib.dims_text(v.tok), tclib.dims_text(v.free), *(f"period {p}" for p in v.periods)):
        assert words in text
    bundle, record = v._repr_mimebundle_()
    assert record == {"autograder_variant": {"assignment": "induction_heads", "student": "student-001"}}
    assert bundle["text/html"].count("<rect") == tools.D_MODEL + 3  # the 32 dims and the legend
    assert "exercise page" in str(DEFAULT)


# --- the reference answer in every variant ------------------------------------------------------
def test_the_reference_earns_full_marks_in_every_variant():
    for student, v in VARIANTS.items():
        assert _graded(reference.reference_answers(v), v) == {}, student


def test_the_reference_keeps_comfortable_margins_in_every_variant(monkeypatch):
    """Full marks even at half the hardness (BETA / 2), with 0.99 instead of 0.9 of the
    attention on the target and four times the logit and readability margin, for every order of
    every set of periods a variant can have (each in a drawn layout: the layout changes no
    margin, see the permutation test below)."""
    monkeypatch.setattr(tools, "BETA", tools.BETA / 2)
    monkeypatch.setattr(tools, "MASS_THRESHOLD", 0.99)
    monkeypatch.setattr(tools, "LOGIT_MARGIN", 4 * tools.LOGIT_MARGIN)
    orders = [order for periods in tools.PERIOD_CHOICES for order in itertools.permutations(periods)]
    for order, student in zip(orders, STUDENTS):
        v = VARIANTS[student]._replace(periods=order)
        assert _graded(reference.reference_answers(v), v) == {}, v


def test_the_numbers_the_model_answers_quote_hold_in_every_variant():
    """q_composition's model answer: (f) Q = 0.41, K = 0; the induction head K = 0.33, Q = 0,
    V = 0; without layer 1 the induction head's mass on its target drops from 1.00 to about 0.1."""
    sequences = reference.sequences("ind_qk")
    for student, v in VARIANTS.items():
        a = reference.reference_answers(v)
        f = tools.composition_scores(tools.qk(a["W_Q_f"], a["W_K_f"]), tools.ov(a["W_V_e"], a["W_O_e"]))
        W_QK, W_OV1 = tools.qk(a["W_Q_ind"], a["W_K_ind"]), tools.ov(a["W_V_prev"], a["W_O_prev"])
        ind = tools.composition_scores(W_QK, W_OV1, tools.ov(a["W_V_ind"], a["W_O_ind"]))
        assert (round(f["Q"], 2), round(f["K"], 2)) == (0.41, 0.0), student
        assert (round(ind["K"], 2), round(ind["Q"], 2), round(ind["V"], 2)) == (0.33, 0.0, 0.0), student
        mass = tools.induction_attention_mass(W_QK, W_OV1, tools.previous_position_targets, sequences, v)
        ablated = tools.induction_attention_mass(W_QK, 0 * W_OV1, tools.previous_position_targets, sequences, v)
        assert mass > 0.995 and ablated < 0.2, student


def test_the_notebooks_own_solution_is_right_in_every_variant(capsys):
    """One source solution, written in terms of the variant: full marks, the reference's W_QK and
    W_OV, and every public check passes, for each drawn student."""
    for student in STUDENTS[:24]:
        v = VARIANTS[student]
        ns = base.namespace(student_id=student)
        assert _graded(_extracted(ns), v) == {}, student
        answers = reference.reference_answers(v)
        for suffix in ("a", "b", "c", "d", "f", "prev", "ind"):
            assert np.allclose(
                tools.qk(ns[f"W_Q_{suffix}"], ns[f"W_K_{suffix}"]),
                tools.qk(answers[f"W_Q_{suffix}"], answers[f"W_K_{suffix}"]),
            ), (student, suffix)
        for suffix in ("e", "prev", "ind"):
            assert np.allclose(
                tools.ov(ns[f"W_V_{suffix}"], ns[f"W_O_{suffix}"]),
                tools.ov(answers[f"W_V_{suffix}"], answers[f"W_O_{suffix}"]),
            ), (student, suffix)
        for cell in base.TEST_CELLS:
            base.run_public(ns, cell)
    assert capsys.readouterr().out.count("public checks passed") == 24 * len(base.TEST_CELLS)


# --- the answer libraries in several variants -------------------------------------------------
def _library_cases():
    for student in LIBRARY_STUDENTS:
        for kind, library in (("alternatives", base.ALTERNATIVES), ("mistakes", base.MISTAKES)):
            for name in sorted(library):
                yield pytest.param(student, kind, name, id=f"{student}/{kind}/{name}")


def _setting_for(entry, student):
    """The variant an entry is run in: the student's, or for an entry that holds only with the
    exercise page's frequencies, the student's layout with those frequencies."""
    variant = VARIANTS[student]
    if entry.get("frequencies") == "exercise page":
        return variant._replace(periods=DEFAULT.periods)
    assert "frequencies" not in entry, f"unknown 'frequencies': {entry['frequencies']!r}"
    return variant


@pytest.mark.parametrize(("student", "kind", "name"), list(_library_cases()))
def test_library_entry_meets_the_contract_in_other_variants(student, kind, name):
    entry = (base.ALTERNATIVES if kind == "alternatives" else base.MISTAKES)[name]
    variant = _setting_for(entry, student)
    ns = base.namespace(entry["cells"], variant=variant)
    assert tuple(ns["variant"]) == tuple(variant)
    assert_meets_the_contract(entry, _graded(_extracted(ns), variant), SPEC)


def test_frequency_bound_entries_really_need_the_exercise_pages_frequencies():
    """The marking is not a way round a failure: each marked entry breaks its contract under
    some drawn student's own frequencies."""
    marked = [
        (kind, name, entry)
        for kind, library in (("alternatives", base.ALTERNATIVES), ("mistakes", base.MISTAKES))
        for name, entry in library.items()
        if "frequencies" in entry
    ]
    assert marked
    for kind, name, entry in marked:
        broken = []
        for student in LIBRARY_STUDENTS:
            v = VARIANTS[student]
            try:
                assert_meets_the_contract(
                    entry, _graded(_extracted(base.namespace(entry["cells"], variant=v)), v), SPEC
                )
            except AssertionError:
                broken.append(student)
        assert broken, f"{kind}/{name} holds in every variant: drop its 'frequencies' mark"


def _permutation(variant) -> np.ndarray:
    """P with P @ x moving a residual vector of the exercise page's layout into `variant`'s."""
    P = np.zeros((tools.D_MODEL, tools.D_MODEL))
    for old, new in ((DEFAULT.tok, variant.tok), (DEFAULT.pos, variant.pos), (DEFAULT.free, variant.free)):
        P[list(new), list(old)] = 1.0
    return P


def _moved(value, P):
    """An answer matrix moved by P along its d_model axis (whichever it is, so that a wrongly
    shaped answer stays wrong in the same way)."""
    W = np.asarray(value, float)
    if W.ndim == 2 and W.shape[1] == tools.D_MODEL:
        return W @ P.T  # reads the residual stream: W_Q, W_K, W_V
    if W.ndim == 2 and W.shape[0] == tools.D_MODEL:
        return P @ W  # writes it: W_O (or a read-side matrix in the row-vector layout)
    return W


@pytest.mark.parametrize("student", LIBRARY_STUDENTS[:3])
def test_permuting_the_dims_of_an_answer_carries_its_verdicts_along(student):
    """Every library answer worked on the exercise page, moved into a drawn layout (read side
    W -> W P^T, write side W_O -> P W_O), gets the same verdicts there (with the exercise page's
    frequencies, which a permutation does not change): no judge depends on where the dims sit."""
    variant = VARIANTS[student]._replace(periods=DEFAULT.periods)
    P = _permutation(variant)
    for library in (base.ALTERNATIVES, base.MISTAKES):
        for name, entry in library.items():
            values = _extracted(base.namespace(entry["cells"]))
            moved = {key: _moved(value, P) for key, value in values.items()}
            assert set(_graded(moved, variant)) == set(_graded(values, DEFAULT)), name


# --- messages in the student's terms --------------------------------------------------------------
def test_messages_name_the_students_own_dims_and_periods():
    student = next(s for s, v in VARIANTS.items() if v.tok[0] != 0 and v.pos[0] != 9 and v.periods[0] != 4)
    v = VARIANTS[student]
    failures = _graded(_extracted(base.namespace(base.MISTAKES["e_writes_into_pos"]["cells"], variant=v)), v)
    message = failures["e_writes_only_into_free_dims"]
    assert f"positional subspace ({tclib.dims_text(v.pos)})" in message
    assert f"write only into the free {tclib.dims_text(v.free)}." in message
    assert "9-14" not in message and "15-31" not in message
    written = re.search(r"into dim (\d+) with weight", message).group(1)
    assert int(written) in v.pos
    failures = _graded(_extracted(base.namespace(base.MISTAKES["prev_writes_into_tok"]["cells"], variant=v)), v)
    assert f"token subspace ({tclib.dims_text(v.tok)})" in failures["prev_writes_only_into_free_dims"]
    failures = _graded(_extracted(base.namespace(base.MISTAKES["c_fast_pair_only"]["cells"], variant=v)), v)
    basic = tools._basic_periods(v.periods)
    assert f"look alike to the pair of period {basic[0]}" in failures["c_attends_to_previous_position"]
    assert all(f"{p}" in failures["c_attends_to_previous_position"] for p in basic)


def test_public_checks_judge_in_the_variant_they_are_given():
    student = LIBRARY_STUDENTS[-1]
    v = VARIANTS[student]
    ns = base.namespace(student_id=student)
    ns["check_ex2e"](ns["W_V_e"], ns["W_O_e"], ns["variant"])
    with pytest.raises(AssertionError, match=re.escape(f"write only into the free {tclib.dims_text(DEFAULT.free)}")):
        ns["check_ex2e"](ns["W_V_e"], ns["W_O_e"])  # without it: the exercise page's set-up
    assert tuple(ns["variant"]) == tuple(v)


# --- an answer worked for someone else ------------------------------------------------------------
DEPENDS = {  # part -> what of the setting its answer is built on
    "ex2a": ("tok",),
    "ex2b": ("pos",),
    "ex2c": ("pos", "periods"),
    "ex2d": ("tok", "pos"),
    "ex2e": ("pos",),
    "ex2f": ("pos", "periods"),
    "ex3_prev": ("tok", "pos", "periods"),
    "ex3_ind_qk": ("tok",),
    "ex3_ind_ov": ("tok",),
}


def _differs(v, w, what) -> bool:
    return getattr(v, what) != getattr(w, what)


def test_a_correct_answer_loses_each_varied_part_under_another_students_variant():
    """For a class of 30: each student's correct answer, graded as two other students' work,
    scores below full and loses every part whose setting (dims or periods) differs between the
    two variants."""
    class_ = STUDENTS[:30]
    assert len({VARIANTS[s][:4] for s in class_}) == 30
    judged = 0
    for i, student in enumerate(class_):
        own = VARIANTS[student]
        answer = reference.reference_answers(own)
        assert _graded(answer, own) == {}
        for other in (class_[(i + 1) % 30], class_[(i + 7) % 30]):
            failures = _graded(answer, VARIANTS[other])
            assert _score(failures) < FULL, (student, other)
            lost = {MARKS[name][0] for name in failures}
            for part, setting in DEPENDS.items():
                if any(_differs(own, VARIANTS[other], what) for what in setting):
                    judged += 1
                    assert part in lost, (student, other, part)
    assert judged >= 400


# --- the whole chain, in the real sandbox ---------------------------------------------------------
def _per_student_course(root):
    """A copy of this course's induction_heads whose release draws per-student variants (the
    set-up call as nbgrader writes it for a course that turns them on)."""
    shutil.copytree(REPOSITORY.source / "induction_heads", root / "source" / "induction_heads")
    shutil.copytree(REPOSITORY.release / "induction_heads", root / "release" / "induction_heads")
    shutil.copytree(REPOSITORY.grading / "induction_heads", root / "autograder" / "assignments" / "induction_heads")
    path = root / "release" / "induction_heads" / "induction_heads.ipynb"
    release = base.json.loads(path.read_text(encoding="utf-8"))
    (setup,) = [c for c in release["cells"] if c.get("metadata", {}).get("nbgrader", {}).get("grade_id") == "setup"]
    text = "".join(setup["source"])
    assert len(course_variants.SETUP_CALL_PATTERN.findall(text)) == 1
    setup["source"] = course_variants.with_settings(text, course_variants.Settings(True, ""))
    path.write_text(base.json.dumps(release), encoding="utf-8")
    return Course(root)


@pytest.mark.sandbox
def test_the_sandboxed_grader_grades_each_submission_in_its_students_variant(tmp_path):
    """An honest notebook (answers written in terms of the variant) earns full marks as anyone's
    work; a notebook of literal matrices worked for ada earns full marks as ada's and loses points
    as grace's. The sandbox draws the variant from the submitter's id, as the grader does."""
    course = _per_student_course(tmp_path / "course")
    honest = classroom.filled_notebook(course, "induction_heads", "induction_heads")
    literal = "\n".join(
        f"{name} = np.array({np.asarray(value).tolist()!r})"
        for name, value in reference.reference_answers(tools.variant_for("ada")).items()
    )
    answer_ids = [grade_id for grade_id in classroom.model_answers(course, "induction_heads", "induction_heads")]
    code_ids = [grade_id for grade_id in answer_ids if grade_id.endswith("_answer")]
    copied = classroom.filled_notebook(
        course,
        "induction_heads",
        "induction_heads",
        {grade_id: "pass" for grade_id in code_ids} | {code_ids[0]: literal},
    )
    key = engine.NotebookKey("induction_heads", "induction_heads")
    requests = []
    for name, notebook in (("honest", honest), ("copied", copied)):
        path = tmp_path / f"{name}.ipynb"
        path.write_text(base.json.dumps(notebook), encoding="utf-8")
        for student in ("ada", "grace"):
            requests.append(engine.GradeRequest(str(path), f"{name}/{student}", expected=key, student_id=student))
    reports = {report.submission_id: report for report in engine.grade(course, requests)}
    for submission, report in reports.items():
        assert report.error is None, (submission, report.error)
        assert report.variant.student_id == submission.split("/")[1]
    for student in ("ada", "grace"):
        report = reports[f"honest/{student}"]
        assert report.score == report.max_score > 0, [c.message for c in report.checks if not c.passed]
    assert reports["copied/ada"].score == reports["copied/ada"].max_score
    assert reports["copied/grace"].score < reports["copied/grace"].max_score
