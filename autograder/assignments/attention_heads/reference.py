"""Hidden reference math for `attention_heads`: the true attention head, its named wrong variants,
the answers to Q3-Q6 and a canonical solution of Exercise 1 from which its answers are derived.

Never shipped to students. Expected values are computed here, not typed in, so a change to the
given data (tc_checks.q6_heads, a student's variant) or the exercise moves the answers with it.
"""

from __future__ import annotations

import itertools

import numpy as np

from . import public_module

tc = public_module("tc_checks")
lib = public_module("tclib")

# -- one attention head, with switches for the classic mistakes ---------------------------------

# Each option: value -> description of the mistake (None for the correct choice).
MASKS = {
    "causal": None,
    "none": "no causal mask: positions also attend to later positions",
    "zero": "masked scores set to 0 instead of -inf: exp(0) = 1, so later positions still get weight",
    "after": "mask applied after the softmax without renormalising: rows no longer sum to 1",
    "diagonal": "the mask also hides the diagonal (np.triu(..., k=0)): a position may attend to "
    "itself, so only src > dest is masked (k=1)",
    "next": "the mask hides only src > dest + 1 (np.triu(..., k=2)): each position still sees the "
    "next one; mask every src > dest (k=1)",
}
SCALES = {
    "sqrt": None,
    "none": "scores not scaled by 1/sqrt(d_head)",
    "d_head": "scores divided by d_head instead of sqrt(d_head)",
    "sqrt_d_model": "scores divided by sqrt(d_model) instead of sqrt(d_head) (d_head is the "
    "length of a query, W_Q.shape[0])",
}
# Divisors a student may have typed in place of sqrt(d_head): the course's own sizes.
FIXED_DIVISORS = (2, 4, 8, 16)
AXES = {
    "src": None,
    "dest": "softmax taken over destination positions (down each column) instead of over "
    "source positions (along each row)",
}
NORMALISED = {True: None, False: "pattern not normalised: the exponentials are not divided by their sum"}
TRANSPOSED = {False: None, True: "pattern transposed: A[src, dest] instead of A[dest, src]"}
OUTPUTS = {
    "head": None,
    "residual": "returns X + the head's output: the residual stream is added outside the head, so "
    "return only what the head writes",
    "no_W_O": "the result is not multiplied by W_O: it is the head's d_head-dim result, before W_O "
    "writes it back into the residual stream",
}
QK_SIDES = {
    False: None,
    True: "scores use W_QK.T: score[dest, src] should be x_dest^T W_QK x_src (the query comes from the destination)",
}
OV_SIDES = {
    False: None,
    True: "uses W_OV.T instead of W_OV: W_OV maps what is read (columns) to what is written (rows)",
}


def scale_factor(scale, d_head, d_model):
    """What the scores are multiplied by: a named choice of SCALES, or ("fixed", c) for 1/c."""
    if isinstance(scale, tuple):
        return 1 / scale[1]
    return {"sqrt": 1 / np.sqrt(d_head), "none": 1.0, "d_head": 1 / d_head, "sqrt_d_model": 1 / np.sqrt(d_model)}[scale]


def pattern_from_scores(
    scores, d_head, mask="causal", scale="sqrt", axis="src", normalised=True, transposed=False, d_model=None
):
    """A[dest, src] from raw scores[dest, src] = q_dest . k_src, with the chosen (mis)steps."""
    n_ctx = scores.shape[0]
    scores = scores * scale_factor(scale, d_head, d_model)
    allowed = np.tril(np.ones((n_ctx, n_ctx), dtype=bool), k={"diagonal": -1, "next": 1}.get(mask, 0))
    if mask in ("causal", "next"):
        scores = np.where(allowed, scores, -np.inf)
    elif mask == "diagonal":  # as with a large finite fill (-1e9): row 0 then spreads over all
        scores = np.where(allowed, scores, -1e9)
    elif mask == "zero":
        scores = np.where(allowed, scores, 0.0)
    ax = 1 if axis == "src" else 0
    if normalised:
        shifted = np.exp(scores - scores.max(axis=ax, keepdims=True))
        A = shifted / shifted.sum(axis=ax, keepdims=True)
    else:
        A = np.exp(scores)
    if mask == "after":
        A = np.where(allowed, A, 0.0)
    return A.T if transposed else A


def attention_pattern(X, W_Q, W_K, **mistakes):
    """The correct causal pattern (no keyword arguments), or a named wrong variant."""
    X, W_Q, W_K = (np.asarray(a, float) for a in (X, W_Q, W_K))
    scores = (W_Q @ X).T @ (W_K @ X)  # [dest, src] = q_dest . k_src
    return pattern_from_scores(scores, W_Q.shape[0], d_model=X.shape[0], **mistakes)


def head_output(X, W_OV_or_V, A, W_O=None, output="head"):
    """What the head adds to the residual stream: out[:, dest] = sum_src A[dest, src] W_OV x_src."""
    values = W_OV_or_V @ X  # (d_head or d_model, n_ctx)
    moved = values @ A.T
    if output == "no_W_O":
        return moved
    out = W_O @ moved if W_O is not None else moved
    return X + out if output == "residual" else out


def attention_head(X, W_Q, W_K, W_V, W_O, output="head", **mistakes):
    X, W_V, W_O = (np.asarray(a, float) for a in (X, W_V, W_O))
    A = attention_pattern(X, W_Q, W_K, **mistakes)
    return head_output(X, W_V, A, W_O=W_O, output=output)


def factor(M, d_head):
    """(left, right) with left @ right = M, left d_model x d_head: a head behind W_QK or W_OV."""
    U, S, Vh = np.linalg.svd(np.asarray(M, float))
    root = np.sqrt(S[:d_head])
    return U[:, :d_head] * root, root[:, None] * Vh[:d_head]


def attention_head_low_rank_four_matrix(X, W_QK, W_OV, d_head):
    """The four-matrix head behind (W_QK, W_OV) (both of rank <= d_head): the reference for Q5."""
    left_qk, right_qk = factor(W_QK, d_head)
    W_O, W_V = factor(W_OV, d_head)
    return attention_head(X, left_qk.T, right_qk, W_V, W_O)


def attention_head_low_rank(X, W_QK, W_OV, d_head, output="head", qk_transposed=False, ov_transposed=False, **mistakes):
    X, W_QK, W_OV = (np.asarray(a, float) for a in (X, W_QK, W_OV))
    scores = X.T @ (W_QK.T if qk_transposed else W_QK) @ X
    A = pattern_from_scores(scores, int(d_head), d_model=X.shape[0], **mistakes)
    return head_output(X, W_OV.T if ov_transposed else W_OV, A, output=output)


def variants(option_sets: dict, max_mistakes: int = 3):
    """Every combination of at most `max_mistakes` named mistakes: (kwargs, [descriptions])."""
    names = list(option_sets)
    found = []
    for values in itertools.product(*(list(option_sets[n]) for n in names)):
        descriptions = [option_sets[n][v] for n, v in zip(names, values) if option_sets[n][v]]
        if 0 < len(descriptions) <= max_mistakes:
            found.append((dict(zip(names, values)), descriptions))
    found.sort(key=lambda item: len(item[1]))  # prefer the simplest explanation
    return found


PATTERN_OPTIONS = {"mask": MASKS, "scale": SCALES, "axis": AXES, "normalised": NORMALISED, "transposed": TRANSPOSED}
HEAD_OPTIONS = {**PATTERN_OPTIONS, "output": OUTPUTS}
LOW_RANK_OPTIONS = {
    **PATTERN_OPTIONS,
    "output": {k: v for k, v in OUTPUTS.items() if k != "no_W_O"},
    "qk_transposed": QK_SIDES,
    "ov_transposed": OV_SIDES,
}


def close(actual, expected, rtol=lib.RTOL, atol=1e-8) -> bool:
    """Whether `actual` equals a finite `expected` by the course's tolerance rule (tclib)."""
    if not np.all(np.isfinite(np.asarray(expected, float))):
        return False
    return lib.difference_report(actual, expected, "", "", rtol=rtol, atol=atol) is None


def _reproduces(results, arg_lists, function, kwargs) -> bool:
    with np.errstate(all="ignore"):
        return all(close(result, function(*args, **kwargs)) for result, args in zip(results, arg_lists))


def explain(results, arg_lists, function, option_sets, max_mistakes=3):
    """Descriptions of the simplest set of named mistakes reproducing every result, or None."""
    found = explain_with_options(results, arg_lists, function, option_sets, max_mistakes)
    return None if found is None else found[1]


def explain_with_options(results, arg_lists, function, option_sets, max_mistakes=3):
    """(options, descriptions) of the simplest set of named mistakes reproducing every result,
    or None.

    Besides the named options, a divisor typed as a constant (sqrt(d_head) of one size, or
    d_model of one input) is recognised by trying the course's sizes with every other option
    correct or with one other named mistake.
    """
    for kwargs, descriptions in variants(option_sets, max_mistakes):
        if _reproduces(results, arg_lists, function, kwargs):
            return kwargs, descriptions
    if "scale" in option_sets:
        others = [({}, [])] + [(kw, d) for kw, d in variants({k: v for k, v in option_sets.items() if k != "scale"}, 1)]
        constants = {}  # value -> how it may have been typed (sqrt(4) and 2 are one number)
        for divisor in FIXED_DIVISORS:
            constants.setdefault(float(divisor), []).append(f"{divisor}")
            constants.setdefault(float(np.sqrt(divisor)), []).append(f"sqrt({divisor})")
        for constant, typed in sorted(constants.items()):
            for kwargs, descriptions in others:
                if _reproduces(results, arg_lists, function, {**kwargs, "scale": ("fixed", constant)}):
                    return {**kwargs, "scale": ("fixed", constant)}, [
                        f"scores divided by the same number, {lib.fmt(constant)} (typed as "
                        f"{' or '.join(typed)}?), on every input: d_head differs between the "
                        "grader's inputs, so divide by np.sqrt(d_head) with d_head taken from "
                        "the arguments"
                    ] + descriptions
    return None


# -- probes: inputs the grader draws ------------------------------------------------------------

SIZES = [(16, 4, 6), (8, 2, 1), (12, 3, 5), (10, 5, 7), (6, 6, 4), (9, 3, 2)]


def random_head(rng, d_model, d_head, n_ctx):
    """Weights with O(1)-size scores, so every named mistake changes the result visibly."""
    X = rng.normal(size=(d_model, n_ctx))
    W_Q, W_K, W_V = (rng.normal(size=(d_head, d_model)) * 1.5 / np.sqrt(d_model) for _ in range(3))
    W_O = rng.normal(size=(d_model, d_head)) / np.sqrt(d_head)
    return X, W_Q, W_K, W_V, W_O


def later_changed(X, rng):
    """X with only its last position replaced: for checking causality."""
    X = X.copy()
    X[:, -1] = rng.normal(size=X.shape[0]) * 2
    return X


def probe_pattern(rng):
    cases = []
    for d_model, d_head, n_ctx in SIZES:
        X, W_Q, W_K, _, _ = random_head(rng, d_model, d_head, n_ctx)
        cases.append((X, W_Q, W_K))
    return cases


def probe_head(rng):
    cases = []
    for d_model, d_head, n_ctx in SIZES:
        X, W_Q, W_K, W_V, W_O = random_head(rng, d_model, d_head, n_ctx)
        cases.append((X, W_Q, W_K, W_V, W_O))
        if n_ctx >= 3:
            cases.append((later_changed(X, rng), W_Q, W_K, W_V, W_O))
    return cases


def probe_low_rank(rng):
    cases = []
    for d_model, d_head, n_ctx in SIZES:
        X, W_Q, W_K, W_V, W_O = random_head(rng, d_model, d_head, n_ctx)
        cases.append((X, W_Q.T @ W_K, W_O @ W_V, int(d_head)))
        if n_ctx >= 3:
            cases.append((later_changed(X, rng), W_Q.T @ W_K, W_O @ W_V, int(d_head)))
    return cases


def later_pairs(arg_lists):
    """Index pairs (i, j) of probes that differ only in the last position of X."""
    pairs = []
    for i, j in itertools.combinations(range(len(arg_lists)), 2):
        a, b = arg_lists[i], arg_lists[j]
        Xa, Xb = np.asarray(a[0], float), np.asarray(b[0], float)
        if Xa.shape != Xb.shape or Xa.shape[1] < 2:
            continue
        same_rest = all(np.array_equal(np.asarray(p), np.asarray(q)) for p, q in zip(a[1:], b[1:]))
        if same_rest and np.array_equal(Xa[:, :-1], Xb[:, :-1]) and not np.array_equal(Xa, Xb):
            pairs.append((i, j))
    return pairs


# -- Q3, Q4, Q5 ---------------------------------------------------------------------------------

READ = frozenset({"W_Q", "W_K", "W_V"})  # multiply a residual vector x
WRITE = frozenset({"W_O"})  # its output is added to the residual stream
# The exercise page's reading of Q3: which matrix controls the subspace that is read (and then
# moved) by the head, and which the subspace written. Both readings earn the points.
READ_SUBSPACE = frozenset({"W_V"})
DECIDE_ATTENTION = frozenset({"W_Q", "W_K"})  # the only inputs of the pattern
WHY_NOT_READ = {
    "W_O": "W_O multiplies the head's d_head-dim result, not a residual vector: it maps back into the residual stream"
}
WHY_NOT_WRITE = {
    "W_Q": "W_Q's output (the queries) only feeds the attention scores; none of it is added to the residual stream",
    "W_K": "W_K's output (the keys) only feeds the attention scores; none of it is added to the residual stream",
    "W_V": "W_V turns a residual vector (d_model) into a d_head-dim value: it reads; the value "
    "reaches the residual stream only through another matrix",
}
WHY_NOT_DECIDE = {
    "W_V": "W_V decides what is moved from the attended positions, not which positions are attended",
    "W_O": "W_O decides where the moved information is written, not which positions are attended",
}


def max_rank(d_model, d_head):
    """Largest rank of W_Q^T W_K or W_O W_V: the product passes through d_head dims."""
    return min(d_model, d_head)


# -- Q6 -----------------------------------------------------------------------------------------


def q6_answers(variant=tc.DEFAULT_VARIANT):
    heads = tc.q6_heads(variant)
    W_V1, W_O1, W_V2, W_O2 = (heads[k] for k in ("W_V1", "W_O1", "W_V2", "W_O2"))
    product = W_V2 @ W_O1
    singular = np.linalg.svd(product, compute_uv=False)
    W_OV1, W_OV2 = W_O1 @ W_V1, W_O2 @ W_V2
    score = np.linalg.norm(W_OV2 @ W_OV1) / (np.linalg.norm(W_OV2) * np.linalg.norm(W_OV1))
    return {
        "heads": heads,
        "product": product,
        "singular_values": singular,
        "rank": int(np.linalg.matrix_rank(product)),
        "score": float(score),
        "W_OV1": W_OV1,
        "W_OV2": W_OV2,
    }


def q6_score_variants(variant=tc.DEFAULT_VARIANT):
    """Wrong v-composition scores: (value, what went wrong)."""
    a = q6_answers(variant)
    W_OV1, W_OV2 = a["W_OV1"], a["W_OV2"]
    heads = a["heads"]
    fro = np.linalg.norm

    def spec(M):
        return np.linalg.norm(M, 2)

    return [
        (
            spec(W_OV2 @ W_OV1) / (spec(W_OV2) * spec(W_OV1)),
            "that uses the spectral norm (ord=2, the largest singular value); the score uses the "
            "Frobenius norm (np.linalg.norm's default for matrices)",
        ),
        (
            fro(W_OV1 @ W_OV2) / (fro(W_OV2) * fro(W_OV1)),
            "that multiplies W_OV1 @ W_OV2: head 2 runs after head 1, so its matrix goes on the left (W_OV2 @ W_OV1)",
        ),
        (fro(W_OV2 @ W_OV1), "that is ||W_OV2 W_OV1||_F without the normalisation by ||W_OV2||_F ||W_OV1||_F"),
        (fro(W_OV2 @ W_OV1) / (fro(W_OV2) * fro(W_OV1)) ** 2, "that divides by the square of ||W_OV2||_F ||W_OV1||_F"),
        (
            fro(heads["W_V2"] @ heads["W_O1"]) / (fro(heads["W_V2"]) * fro(heads["W_O1"])),
            "that scores W_V2 @ W_O1 against W_V2 and W_O1; the score compares the full d_model x "
            "d_model maps W_OV2 = W_O2 @ W_V2 and W_OV1 = W_O1 @ W_V1",
        ),
    ]


# -- Exercise 1 ---------------------------------------------------------------------------------


def canonical_virtual_head(layout=tc.EXERCISE_PAGE_LAYOUT):
    """One correct answer to Exercise 1 in `layout`; every expected number is derived from it."""
    W_V1 = np.zeros((4, 16))
    W_O1 = np.zeros((16, 4))
    W_V2 = np.zeros((4, 16))
    W_O2 = np.zeros((16, 4))
    for i, (src, dest) in enumerate(zip(layout.head1_reads, layout.head1_writes)):
        W_V1[i, src] = 1.0  # read one of the content dims head 1 copies
        W_O1[dest, i] = 1.0  # write it into its dim
    sources = [*layout.other_content[:3], layout.head1_writes[0]]
    for slot, (src, dest) in enumerate(zip(sources, layout.head2_writes)):
        W_V2[slot, src] = 1.0
        W_O2[dest, slot] = 1.0
    W_net1, W_net2 = W_O1 @ W_V1, W_O2 @ W_V2
    return {
        "W_V1": W_V1,
        "W_O1": W_O1,
        "W_V2": W_V2,
        "W_O2": W_O2,
        "W_net1": W_net1,
        "W_net2": W_net2,
        "two_token_copy": W_net2 @ W_net1,
        "one_token_copy": W_net2 + W_net1,
    }


def virtual_head_ranks(layout=tc.EXERCISE_PAGE_LAYOUT):
    solution = canonical_virtual_head(layout)
    return {
        f"rank_{name}": int(np.linalg.matrix_rank(solution[name]))
        for name in ("W_net1", "W_net2", "two_token_copy", "one_token_copy")
    }


def virtual_head_capacity(layout=tc.EXERCISE_PAGE_LAYOUT):
    """Counts of written dims by what they carry, measured on the canonical solution."""
    s = canonical_virtual_head(layout)
    return capacity_counts(s["W_V1"], s["W_O1"], s["W_V2"], s["W_O2"], layout=layout)


def capacity_counts(W_V1, W_O1, W_V2, W_O2, tol=1e-9, layout=tc.EXERCISE_PAGE_LAYOUT):
    """The same counts measured on any two heads (for follow-through on a student's own heads)."""
    coef = tc.trace_two_heads(W_V1, W_O1, W_V2, W_O2, layout=layout)
    written = [d for d in layout.free if np.abs(coef[d]).max() > tol]
    previous = [d for d in written if np.abs(coef[d, 1]).max() > tol]
    two_back = [d for d in written if np.abs(coef[d, 2]).max() > tol]
    head2 = [d for d in written if d in layout.head2_writes]
    return {
        "written": len(written),
        "previous": len(previous),
        "two_back": len(two_back),
        "head2": len(head2),
        "head2_previous": len([d for d in previous if d in head2]),
    }
