"""Hidden checks of questions.ipynb (Q2-Q6; Q1 and the written answers are graded by hand).

Functions are graded by calling them on inputs the grader draws (PROBES) and comparing with
reference.py; a wrong result is explained by finding the simplest combination of classic
mistakes that reproduces every result. Messages never print an expected value.
"""

import numpy as np

from autograder.core.checks import Mistake, part

from . import public_module
from . import reference as ref

tc = public_module("tc_checks")
lib = public_module("tclib")  # staging, messages and the tolerance rule, as the public checks

NOTEBOOK = "questions"
EXTRACT = [
    "attention_pattern",
    "attention_head",
    "matrices_that_read",
    "matrices_that_write",
    "matrices_that_decide_attention",
    "attention_head_low_rank",
    "max_rank_W_QK",
    "max_rank_W_OV",
    "W_V2_W_O1",
    "singular_values_W_V2_W_O1",
    "rank_W_V2_W_O1",
    "v_composition_score",
]
PROBES = {
    "attention_pattern": ref.probe_pattern,
    "attention_head": ref.probe_head,
    "attention_head_low_rank": ref.probe_low_rank,
}
VARIANT = tc.variant_for  # Q6's given heads are the student's own (sub.variant)


def _case(number, args):
    d_model, n_ctx = np.shape(args[0])
    d_head = int(args[3]) if len(args) == 4 else np.shape(args[1])[0]
    return f"the grader's input #{number} (d_model={d_model}, d_head={d_head}, n_ctx={n_ctx})"


def _args(sub, name):
    return [call.args for call in sub.calls(name)]


def _masked_rows(sub, name):
    """A function whose result has whole rows of NaN at the first positions: every score of
    those rows was masked (the softmax divided 0 by 0), the sign of a mask that hides the diagonal."""
    for number, call in enumerate(sub.calls(name), start=1):
        result = call.result
        if (
            call.error is not None
            or not isinstance(result, np.ndarray)
            or result.ndim != 2
            or result.dtype.kind != "f"
            or not np.isnan(result).any()
        ):
            continue
        n_ctx = np.shape(call.args[0])[1]
        rows = (
            [t for t in range(result.shape[0]) if np.isnan(result[t]).all()]
            if result.shape[0] == n_ctx
            else [t for t in range(result.shape[1]) if np.isnan(result[:, t]).all()]
        )
        if rows and rows == list(range(len(rows))):
            raise Mistake(
                f"{name}(...) on {_case(number, call.args)} returned NaN at position"
                f"{'s' if len(rows) > 1 else ''} {', '.join(map(str, rows))} only: every "
                "score there was masked, so the softmax divided 0 by 0. Position 0 can "
                "attend only to itself: the causal mask must hide later positions "
                "(src > dest, np.triu(..., k=1)) and never the diagonal."
            )


def _pattern_results(sub):
    _masked_rows(sub, "attention_pattern")
    results = sub.call_results(
        "attention_pattern", shape_of=lambda args: (np.shape(args[0])[1],) * 2, labels=("n_ctx", "n_ctx")
    )
    return results, _args(sub, "attention_pattern")


def _head_results(sub, name):
    """Results of a head function, with the classic shape mistake (no W_O) named first."""
    calls = sub.calls(name)
    low_rank = name == "attention_head_low_rank"
    before_W_O = [
        call
        for call in calls
        if call.error is None
        and isinstance(call.result, np.ndarray)
        and not low_rank
        and call.result.shape == (np.shape(call.args[3])[0], np.shape(call.args[0])[1])
        and np.shape(call.args[3])[0] != np.shape(call.args[0])[0]
    ]
    if before_W_O:
        raise Mistake(
            f"{name}(...) returned shape {before_W_O[0].result.shape} = (d_head, n_ctx) "
            f"on {_case(calls.index(before_W_O[0]) + 1, before_W_O[0].args)}: "
            f"{ref.OUTPUTS['no_W_O']}. It should return (d_model, n_ctx)."
        )
    _masked_rows(sub, name)
    results = sub.call_results(name, shape_of=lambda args: np.shape(args[0]), labels=("d_model", "n_ctx"))
    return results, [call.args for call in calls]


def _compare_with_reference(name, results, arg_lists, expected_fn, explain_fn, options, what, inherited=None):
    """Raise Mistake naming where results first differ and which mistakes reproduce them.

    `inherited`: options of mistakes the student's own attention_pattern makes; the head
    inherits them, and the message says so (they cost the pattern's points, not these)."""
    for number, (result, args) in enumerate(zip(results, arg_lists), start=1):
        with np.errstate(all="ignore"):
            expected = expected_fn(*args)
        report = lib.difference_report(result, expected, "your result", what, reveal=False)
        if report is None:
            continue
        message = f"{name}(...) on {_case(number, args)}: {report}."
        found = ref.explain_with_options(results, arg_lists, explain_fn, options)
        mistakes = None
        if found:
            found_options, mistakes = found
            if inherited:
                from_pattern = {
                    options[key][value]
                    for key, value in inherited.items()
                    if key in options
                    and found_options.get(key) == value
                    and isinstance(value, (str, bool))
                    and options[key].get(value)
                }
                mistakes = [
                    m
                    + (
                        " (this comes from your attention_pattern and costs its points there, not here)"
                        if m in from_pattern
                        else ""
                    )
                    for m in mistakes
                ]
        if mistakes:
            message += (
                "\nYour results on every input the grader tried match the correct "
                "computation with these mistakes:\n" + lib.bullet_list(mistakes)
            )
        elif (left_out := _positions_left_out(name, results, arg_lists, expected_fn)) is not None:
            message += left_out
        else:
            facts = _pattern_facts(results, arg_lists) if name == "attention_pattern" else []
            message += (
                "\nThe grader does not know which step is wrong: no combination of up to "
                "three of the mistakes it knows reproduces your results on every input."
            )
            if facts:
                message += " What it measured on your results:\n" + lib.bullet_list(facts)
            else:
                message += " Go through your steps against the formula in the notebook."
        raise Mistake(message)


def _positions_left_out(name, results, arg_lists, expected_fn):
    """The sentence for results that are right except at positions where they are nothing (a
    head that writes nothing for a token, a pattern row left empty), or None when that is not
    what happened: said in the student's positions, measured on every input."""
    by_input = []
    for result, args in zip(results, arg_lists):
        with np.errstate(all="ignore"):
            expected = np.asarray(expected_fn(*args), float)
        result = np.asarray(result, float)
        if result.shape != expected.shape or result.ndim != 2:
            return None
        # a head's column t is what it writes at position t; a pattern's row t is where t looks
        along = 0 if name == "attention_pattern" else 1
        result_t, expected_t = (result, expected) if along == 1 else (result.T, expected.T)
        allowed = lib.tolerance(float(np.abs(expected_t).max(initial=0.0)))
        nothing = np.abs(result_t).max(axis=0) <= allowed
        something = np.abs(expected_t).max(axis=0) > allowed
        left = nothing & something
        rest = ~left
        if lib.difference_report(result_t[:, rest], expected_t[:, rest], "", "", reveal=False) is not None:
            return None
        by_input.append([int(t) for t in np.flatnonzero(left)])
    if not any(by_input):
        return None
    shown = sorted({tuple(positions) for positions in by_input if positions})
    where = "; ".join(
        ("position " if len(positions) == 1 else "positions ") + ", ".join(map(str, positions)) for positions in shown
    )
    single = all(len(positions) == 1 for positions in shown)
    if name == "attention_pattern":
        return (
            f"\nYour pattern is right everywhere except that it leaves out {where} "
            f"({'its row is' if single else 'their rows are'} all zero): every position, the first included, attends somewhere, and its row sums to 1."
        )
    return (
        f"\nYour result is right everywhere except that it writes nothing at {where} "
        f"({'its column is' if single else 'their columns are'} zero), where the head writes something: every position, the first included, "
        "gets the weighted sum of the values it attends to (a loop that skips a position leaves "
        "it out)."
    )


def _pattern_facts(results, arg_lists):
    """Facts about where a pattern puts weight, measured on every input (no expected values)."""
    facts = []
    for number, (A, args) in enumerate(zip(results, arg_lists), start=1):
        n_ctx = A.shape[0]
        if n_ctx < 2:
            continue
        zero_diagonal = [t for t in range(n_ctx) if abs(A[t, t]) <= lib.RTOL]
        if zero_diagonal and len(zero_diagonal) >= n_ctx - 1:
            facts.append(
                f"on {_case(number, args)}, positions {', '.join(map(str, zero_diagonal))} "
                "give no weight to themselves: a causal mask hides only later positions "
                "(src > dest), never the diagonal"
            )
            break
        next_weight = [t for t in range(n_ctx - 1) if abs(A[t, t + 1]) > lib.RTOL]
        if next_weight:
            facts.append(
                f"on {_case(number, args)}, position {next_weight[0]} gives weight "
                f"{lib.fmt(A[next_weight[0], next_weight[0] + 1])} to the next position: "
                "the mask should hide every src > dest"
            )
            break
    return facts


# -- Q2: the pattern ----------------------------------------------------------------------------


@part("q2_attention_pattern", points=1)
def test_attention_pattern_is_causal(sub):
    results, arg_lists = _pattern_results(sub)
    for number, (A, args) in enumerate(zip(results, arg_lists), start=1):
        problems = tc.causality_problems(A)
        if problems:
            raise Mistake(f"attention_pattern(...) on {_case(number, args)}: {problems[0]}.")


@part("q2_attention_pattern", points=1)
def test_attention_pattern_rows_sum_to_one(sub):
    results, arg_lists = _pattern_results(sub)
    for number, (A, args) in enumerate(zip(results, arg_lists), start=1):
        problems = tc.negativity_problems(A) or tc.normalisation_problems(A)
        if problems:
            raise Mistake(f"attention_pattern(...) on {_case(number, args)}: {problems[0]}.")


@part("q2_attention_pattern", points=2)
def test_attention_pattern_matches_reference(sub):
    results, arg_lists = _pattern_results(sub)
    _compare_with_reference(
        "attention_pattern",
        results,
        arg_lists,
        ref.attention_pattern,
        ref.attention_pattern,
        ref.PATTERN_OPTIONS,
        "the correct pattern",
    )


# -- Q2: the head -------------------------------------------------------------------------------


def _causality(sub, name):
    results, arg_lists = _head_results(sub, name)
    for i, j in ref.later_pairs(arg_lists):
        earlier = lib.difference_report(
            results[j][:, :-1], results[i][:, :-1], "the output at earlier positions", "before the change"
        )
        if earlier:
            raise Mistake(
                f"{name}(...): the grader's inputs #{i + 1} and #{j + 1} differ only in the last "
                f"position of X, yet {earlier}. Later positions must not influence earlier "
                "ones: check the causal mask, and that the pattern A[dest, src] multiplies the "
                "values from the right side (position dest sums over sources src)."
            )


def _head_explain_options():
    return {k: v for k, v in ref.HEAD_OPTIONS.items() if k != "output"} | {
        "output": {k: v for k, v in ref.OUTPUTS.items() if k != "no_W_O"}
    }


def _own_pattern(sub):
    """What the student's attention_pattern does, for follow-through in the head's checks:
    {} when it is correct, the options of its named mistakes, or None when the grader cannot
    reproduce it (or it is missing or unusable)."""
    if not sub.has("attention_pattern"):
        return None
    try:
        results, arg_lists = _pattern_results(sub)
    except Mistake:
        return None
    with np.errstate(all="ignore"):
        if all(ref.close(A, ref.attention_pattern(*args)) for A, args in zip(results, arg_lists)):
            return {}
    found = ref.explain_with_options(results, arg_lists, ref.attention_pattern, ref.PATTERN_OPTIONS)
    return None if found is None else found[0]


def _head_follows_own_pattern(results, arg_lists, pattern):
    """Whether the head's results are the correct head built on the student's own pattern."""
    if not pattern:
        return False
    with np.errstate(all="ignore"):
        return all(ref.close(result, ref.attention_head(*args, **pattern)) for result, args in zip(results, arg_lists))


def _head_waits_for_pattern(sub, pattern, failure):
    """Whether a failing head check may fail only because of a pattern the grader cannot
    reproduce: then it cannot be judged yet (never when the head's own mistake is named)."""
    if pattern is not None or not sub.has("attention_pattern"):
        return False
    try:
        _head_results(sub, "attention_head")
    except Mistake:
        # Unreadable results wait only when they inherit the NaN rows of the student's pattern.
        try:
            _masked_rows(sub, "attention_pattern")
        except Mistake:
            return True
        return False
    return "match the correct computation" not in str(failure)


_PATTERN_FIRST = (
    "attention_head(...) cannot be judged yet: it is built on your attention_pattern, "
    "which does not yet give the correct pattern, and the grader cannot reproduce "
    "what your pattern does, so it cannot tell whether the head is right for it. Fix "
    "attention_pattern first (see the q2_attention_pattern checks); then the head is "
    "judged on it."
)


@part("q2_attention_head", points=1)
def test_attention_head_is_causal(sub):
    try:
        _causality(sub, "attention_head")
    except Mistake as failure:
        pattern = _own_pattern(sub)
        if pattern and _head_follows_own_pattern(*_head_results(sub, "attention_head"), pattern):
            return  # follow-through: non-causal only because the student's own pattern is
        if _head_waits_for_pattern(sub, pattern, failure):
            raise Mistake(_PATTERN_FIRST) from None
        raise


@part("q2_attention_head", points=3)
def test_attention_head_matches_reference(sub):
    try:
        results, arg_lists = _head_results(sub, "attention_head")
        _compare_with_reference(
            "attention_head",
            results,
            arg_lists,
            ref.attention_head,
            ref.attention_head,
            _head_explain_options(),
            "the head's output",
        )
    except Mistake as mistake:
        pattern = _own_pattern(sub)
        if pattern is not None and _head_follows_own_pattern(*_head_results(sub, "attention_head"), pattern):
            return  # follow-through: the correct head on the student's own pattern
        if _head_waits_for_pattern(sub, pattern, mistake):
            raise Mistake(_PATTERN_FIRST) from None
        if pattern:
            results, arg_lists = _head_results(sub, "attention_head")
            _compare_with_reference(
                "attention_head",
                results,
                arg_lists,
                ref.attention_head,
                ref.attention_head,
                _head_explain_options(),
                "the head's output",
                inherited=pattern,
            )
        raise


# -- Q3, Q4 -------------------------------------------------------------------------------------


def _choice(sub, name, expected, why_not, missing_hint, readings=()):
    chosen = sub.matrix_names(name)
    if chosen in readings:
        return  # another reading of the question, worth the same points
    wrong = sorted(chosen - expected)
    if wrong:
        raise Mistake(f"{name} includes {', '.join(wrong)}:\n" + lib.bullet_list([why_not[m] for m in wrong]))
    missing = expected - chosen
    if missing:
        matrices = "one matrix" if len(missing) == 1 else f"{len(missing)} matrices"
        raise Mistake(f"{name} leaves out {matrices}: {missing_hint}")


@part("q3_read_write", points=1)
def test_matrices_that_read(sub):
    _choice(
        sub,
        "matrices_that_read",
        ref.READ,
        ref.WHY_NOT_READ,
        "which matrices are multiplied directly by a residual vector x (d_model entries)?",
        readings=(ref.READ_SUBSPACE,),
    )


@part("q3_read_write", points=1)
def test_matrices_that_write(sub):
    _choice(
        sub,
        "matrices_that_write",
        ref.WRITE,
        ref.WHY_NOT_WRITE,
        "which matrix produces the d_model-dim vector that is added to the residual stream?",
    )


@part("q4_decide_attention", points=1)
def test_matrices_that_decide_attention(sub):
    _choice(
        sub,
        "matrices_that_decide_attention",
        ref.DECIDE_ATTENTION,
        ref.WHY_NOT_DECIDE,
        "your attention_pattern(X, W_Q, W_K) computes where the head looks; which matrices does it use?",
    )


# -- Q5 -----------------------------------------------------------------------------------------


@part("q5_low_rank_head", points=1)
def test_low_rank_head_is_causal(sub):
    _causality(sub, "attention_head_low_rank")


@part("q5_low_rank_head", points=2)
def test_low_rank_head_matches_four_matrix_head(sub):
    results, arg_lists = _head_results(sub, "attention_head_low_rank")
    _compare_with_reference(
        "attention_head_low_rank",
        results,
        arg_lists,
        ref.attention_head_low_rank_four_matrix,
        ref.attention_head_low_rank,
        ref.LOW_RANK_OPTIONS,
        "the four-matrix head with the same W_Q^T W_K and W_O W_V",
    )


def _max_rank(sub, name, product, inner):
    value = sub.integer(name)
    expected = ref.max_rank(tc.D_MODEL, tc.D_HEAD)
    if value == expected:
        return
    if value == tc.D_MODEL:
        raise Mistake(
            f"{name} is {value} = d_model: a generic {tc.D_MODEL} x {tc.D_MODEL} matrix "
            f"has that rank, but {product} is a product that passes through the "
            f"{inner} space; what does that bound?"
        )
    raise Mistake(
        f"{name} is {value}. The rank of a product A @ B is at most the rank of A and "
        f"at most the rank of B; apply that to {product} with d_model = {tc.D_MODEL}, "
        f"d_head = {tc.D_HEAD}."
    )


@part("q5_max_rank", points=1)
def test_max_rank_W_QK(sub):
    _max_rank(sub, "max_rank_W_QK", "W_QK = W_Q^T W_K", "d_head-dim query/key")


@part("q5_max_rank", points=1)
def test_max_rank_W_OV(sub):
    _max_rank(sub, "max_rank_W_OV", "W_OV = W_O W_V", "d_head-dim value")


# -- Q6 -----------------------------------------------------------------------------------------


def _variant(sub):
    """The student's variant: it decides Q6's two given heads."""
    return sub.variant or tc.DEFAULT_VARIANT


@part("q6_product", points=1)
def test_W_V2_W_O1(sub):
    answers = ref.q6_answers(_variant(sub))
    heads = answers["heads"]
    value = sub.array("W_V2_W_O1")
    if value.shape == (tc.D_MODEL, tc.D_MODEL):
        what = tc.q6_square_mix_up(value, _variant(sub))
        raise Mistake(
            "W_V2_W_O1 has shape (16, 16) (d_model x d_model)"
            + (f": that is {what}." if what else ".")
            + " Head 1 writes with W_O1 and head 2 then reads with W_V2, so the "
            "product is W_V2 @ W_O1 (d_head x d_head)."
        )
    value = sub.array("W_V2_W_O1", shape=(tc.D_HEAD, tc.D_HEAD), labels=("d_head", "d_head"))
    expected = answers["product"]
    if ref.close(value, expected):
        return
    if ref.close(value, expected.T):
        raise Mistake("W_V2_W_O1 is the transpose of W_V2 @ W_O1 (it is W_O1.T @ W_V2.T).")
    if ref.close(value, heads["W_V1"] @ heads["W_O2"]):
        raise Mistake(
            "W_V2_W_O1 equals W_V1 @ W_O2: that is head 1 reading what head 2 writes; "
            "the question is about head 2 reading head 1."
        )
    raise Mistake(
        lib.difference_report(value, expected, "W_V2_W_O1", "W_V2 @ W_O1 of the given heads", reveal=False)
        + ". Use the heads the notebook gives you (its Q6 cell)."
    )


@part("q6_singular_values", points=2)
def test_singular_values(sub):
    name = "singular_values_W_V2_W_O1"
    answers = ref.q6_answers(_variant(sub))
    expected = answers["singular_values"]
    encoded = sub.encoded(name)
    if encoded.get("kind") == "array" and encoded.get("dtype") == "complex128":
        raise Mistake(
            f"{name} has complex entries: eigenvalues (np.linalg.eig, eigvals) can be "
            "complex, singular values are real and never negative. Use "
            "np.linalg.svd(W_V2_W_O1, compute_uv=False)."
        )
    array = sub.array(name)
    if array.ndim == 2 and array.shape[0] > 1 and array.shape[1] > 1:
        raise Mistake(
            f"{name} is a {array.shape} matrix; np.linalg.svd returns U, S, Vh and the "
            "singular values are the 1-D array S."
        )
    values = array.reshape(-1)
    tol = lib.tolerance(expected.max())

    def matches(candidate):
        candidate = np.asarray(candidate, float).reshape(-1)
        n = len(values)
        if n == 0 or n > len(candidate) or (n < len(candidate) and np.abs(candidate[n:]).max() > tol):
            return False
        return bool(np.all(np.abs(values - candidate[:n]) <= tol))

    if matches(expected):
        rank = int(np.sum(expected > tol))
        if len(values) >= rank:
            return
    own = _own_product(sub)
    if own is not None and own.ndim == 2 and not ref.close(own, answers["product"]):
        own_values = np.linalg.svd(own, compute_uv=False)
        own_tol = lib.tolerance(own_values.max(initial=0.0))
        if (
            len(values) >= int(np.sum(own_values > own_tol))
            and len(values) <= len(own_values)
            and np.all(np.abs(values - own_values[: len(values)]) <= own_tol)
            and np.all(own_values[len(values) :] <= own_tol)
        ):
            return  # follow-through: the singular values of the student's own W_V2_W_O1
    descending = np.sort(values)[::-1]
    product = answers["product"]
    heads = answers["heads"]
    eigen = np.linalg.eigvals(product)
    explanations = [
        (np.sort(expected), "they are in ascending order; list them largest first (np.linalg.svd already does)"),
        (expected**2, "they are the squares of the singular values: the eigenvalues of A.T @ A are sigma squared"),
        (
            np.sort(expected**2),
            "they are the squares of the singular values (eigenvalues of "
            "A.T @ A are sigma squared), and in ascending order",
        ),
        (
            np.linalg.svd(heads["W_O1"] @ heads["W_V2"], compute_uv=False),
            "they are the singular values of W_O1 @ W_V2, the product in the other order",
        ),
        (
            np.sort(np.abs(eigen))[::-1],
            "they are the magnitudes of the eigenvalues of W_V2 @ W_O1; "
            "singular values are different for a non-symmetric matrix",
        ),
    ]
    for candidate, why in explanations:
        if matches(candidate):
            raise Mistake(f"{name}: {why}.")
    if matches(expected) and len(values) < int(np.sum(expected > tol)):
        raise Mistake(f"{name} has only {len(values)} values: it leaves out nonzero singular values.")
    if (
        not np.array_equal(descending, values)
        and lib.difference_report(descending, expected[: len(values)], "", "", atol=tol) is None
    ):
        raise Mistake(f"{name} is not in descending order; list the largest first.")
    raise Mistake(
        f"{name} ({len(values)} values) are not the singular values of W_V2 @ W_O1 for "
        "the given heads. Compute them with np.linalg.svd(W_V2_W_O1, compute_uv=False)."
    )


def _own_product(sub):
    """The student's W_V2_W_O1 when it is a usable array, else None (its own check explains why)."""
    try:
        return sub.array("W_V2_W_O1") if sub.has("W_V2_W_O1") else None
    except Mistake:
        return None


@part("q6_rank", points=1)
def test_rank(sub):
    answers = ref.q6_answers(_variant(sub))
    value = sub.integer("rank_W_V2_W_O1")
    if value == answers["rank"]:
        return
    own = _own_product(sub)
    if own is not None and own.ndim == 2 and not ref.close(own, answers["product"]):
        if value == np.linalg.matrix_rank(own):
            return  # follow-through: the rank of the student's own W_V2_W_O1 (q6_product marks that)
    fits = _rank_explanations(sub, value, answers)
    if len(fits) == 1:
        raise Mistake(f"rank_W_V2_W_O1 is {value}: {fits[0]}.")
    if fits:
        raise Mistake(
            f"rank_W_V2_W_O1 is {value}, and the grader cannot tell which of these you "
            "computed; none is the rank of W_V2 @ W_O1:\n"
            + lib.bullet_list(fits)
            + "\nThe rank is the number of singular values of W_V2 @ W_O1 above a "
            "tolerance (np.linalg.matrix_rank)."
        )
    raise Mistake(
        f"rank_W_V2_W_O1 is {value}; the rank is the number of clearly nonzero singular "
        "values of W_V2 @ W_O1 (np.linalg.matrix_rank)."
    )


def _rank_explanations(sub, value, answers):
    """Every known computation that gives `value`, each as a sentence (the grader names all that
    fit, because the value alone cannot tell them apart)."""
    heads = answers["heads"]
    fits = []
    singular = answers["singular_values"]
    if value == int(np.count_nonzero(singular)) and value > answers["rank"]:
        fits.append(
            "the number of singular values of W_V2 @ W_O1 that are not exactly 0, "
            "counting rounding noise (around 1e-16) as nonzero"
        )
    if sub.has("singular_values_W_V2_W_O1"):
        try:
            own_values = sub.array("singular_values_W_V2_W_O1").reshape(-1)
        except Mistake:
            own_values = None
        if (
            own_values is not None
            and own_values.size == value
            and value > answers["rank"]
            and not any("singular values" in fit for fit in fits)
        ):
            fits.append("the number of entries of your singular_values_W_V2_W_O1, some of which are rounding noise")
    others = {
        "W_O1 @ W_V2 (the product in the other order)": heads["W_O1"] @ heads["W_V2"],
        "W_V2": heads["W_V2"],
        "W_O1": heads["W_O1"],
        "W_OV1 = W_O1 @ W_V1": answers["W_OV1"],
        "W_OV2 = W_O2 @ W_V2": answers["W_OV2"],
        "W_OV2 @ W_OV1": answers["W_OV2"] @ answers["W_OV1"],
    }
    same = [name for name, matrix in others.items() if np.linalg.matrix_rank(matrix) == value]
    if same:
        fits.append(
            f"the rank of {', '.join(same[:-1]) + ' and ' + same[-1] if len(same) > 1 else same[0]}, not of W_V2 @ W_O1"
        )
    if value == tc.D_HEAD and not same:
        fits.append(f"d_head = {tc.D_HEAD}, the largest rank a d_head x d_head matrix can have")
    return fits


@part("q6_v_composition", points=2)
def test_v_composition_score(sub):
    answers = ref.q6_answers(_variant(sub))
    value = sub.number("v_composition_score")
    expected = answers["score"]
    if abs(value - expected) <= lib.tolerance(abs(expected)):
        return
    for candidate, why in ref.q6_score_variants(_variant(sub)):
        if abs(value - candidate) <= lib.tolerance(abs(candidate)):
            raise Mistake(f"v_composition_score = {lib.fmt(value)}: {why}.")
    if abs(value - expected) <= 1e-2:
        raise Mistake(
            f"v_composition_score is {lib.fmt(value)}, close to the score but not equal to it: do not round it."
        )
    raise Mistake(
        f"v_composition_score is {lib.fmt(value)}, which is not "
        "||W_OV2 W_OV1||_F / (||W_OV2||_F ||W_OV1||_F) for the given heads, with "
        "W_OV = W_O @ W_V of each head."
    )


# -- feedback pictures --------------------------------------------------------------------------


def figures(sub, grade_id):
    """SVGs of the student's own results for a part (never the expected ones)."""
    heatmaps = public_module("heatmaps")
    try:
        if grade_id in ("q2_attention_pattern", "q2_attention_head", "q5_low_rank_head"):
            name = {
                "q2_attention_pattern": "attention_pattern",
                "q2_attention_head": "attention_head",
                "q5_low_rank_head": "attention_head_low_rank",
            }[grade_id]
            for number, call in enumerate(sub.calls(name), start=1):
                result = call.result
                if (
                    call.error is None
                    and isinstance(result, np.ndarray)
                    and result.ndim == 2
                    and np.shape(call.args[0])[1] >= 4
                ):
                    title = f"your {name}(...) on the grader's input #{number}"
                    if name == "attention_pattern":
                        return [heatmaps.show_attention(result, title=title).svg]
                    return [heatmaps.show_matrix(result, title, "residual dim", "position").svg]
        if grade_id == "q6_product":
            return [
                heatmaps.show_matrix(
                    sub.array("W_V2_W_O1"), "your W_V2_W_O1", "head 2 value dim", "head 1 result dim"
                ).svg
            ]
    except Exception:  # noqa: BLE001 - a picture is optional; its absence hides nothing
        pass
    return []
