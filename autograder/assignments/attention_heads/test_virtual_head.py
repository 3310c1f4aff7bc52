"""Hidden checks of virtual_head.ipynb (Exercise 1: the virtual attention head).

Graded by behaviour, never by spelling: the heads through their products W_O @ W_V (so any
re-basing W_V -> M W_V, W_O -> W_O M^-1 and any admissible choice of dims earns full marks),
the derived matrices by consistency with the student's own factors, and the two heads together
by running the two-layer model on random residual streams.

Marking policy (docs/MARKING.md): follow-through. A part computed from the student's earlier
answers (products, compositions, ranks, capacity fractions) earns its marks when it is right
for their values, or when it is the right answer itself. Where the student's values cannot show
the right computation apart from a known mistake, the check says so and what to fix first. The
simulation has no answer of its own: it runs the two heads together, so a head mistake also
costs it, and its message names the head part to fix first.
"""

import numpy as np

from autograder.core.checks import Mistake, part

from . import public_module
from . import reference as ref

tc = public_module("tc_checks")
lib = public_module("tclib")  # staging, messages and the tolerance rule, as the public checks

NOTEBOOK = "virtual_head"
EXTRACT = [
    "W_V1",
    "W_O1",
    "W_V2",
    "W_O2",
    "W_net1",
    "W_net2",
    "two_token_copy",
    "one_token_copy",
    "rank_W_net1",
    "rank_W_net2",
    "rank_two_token_copy",
    "rank_one_token_copy",
    "fraction_previous_token",
    "fraction_two_tokens_back",
]
PROBES = {}
VARIANT = tc.variant_for  # each submission is judged in its student's own layout (sub.variant)

_SQUARE = (tc.D_MODEL, tc.D_MODEL)


def _layout(sub):
    """The residual-stream layout of the student's variant."""
    return (sub.variant or tc.DEFAULT_VARIANT).layout


def _head(sub, number):
    """W_V, W_O of one head, with shape messages in the student's terms."""
    W_V = sub.array(f"W_V{number}", shape=(tc.D_HEAD, tc.D_MODEL), labels=("d_head", "d_model"))
    W_O = sub.array(f"W_O{number}", shape=(tc.D_MODEL, tc.D_HEAD), labels=("d_model", "d_head"))
    return W_V, W_O


def _square(sub, name, hints=None):
    """A d_model x d_model answer; a wrong shape that a hint recognises (from the value, never
    from the shape alone) gets the hint."""
    encoded = sub.encoded(name)
    shape = tuple(encoded.get("shape", ())) if encoded.get("kind") == "array" else None
    if hints and shape in hints:
        hint = hints[shape](sub.array(name))
        if hint:
            raise Mistake(f"{name} has shape {shape}: {hint}")
    return sub.array(name, shape=_SQUARE, labels=("d_model", "d_model"))


def _net(sub, number):
    def head_space(value):
        try:
            W_V, W_O = _head(sub, number)
        except Mistake:
            return None
        if not ref.close(value, W_V @ W_O):
            return None
        return (
            f"that is W_V{number} @ W_O{number} (d_head x d_head); W_net{number} is the "
            f"d_model x d_model product W_O{number} @ W_V{number}."
        )

    return _square(sub, f"W_net{number}", {(tc.D_HEAD, tc.D_HEAD): head_space})


def _sentences(problems):
    """A judge's problems as the message: one per line, each ending with a full stop."""
    return "\n".join(problem + ("" if problem.endswith(".") else ".") for problem in problems)


# -- the heads ----------------------------------------------------------------------------------


@part("ex1_head1", points=2)
def test_head1_copies(sub):
    W_V1, W_O1 = _head(sub, 1)
    layout = _layout(sub)
    problems = tc.copy_problems_head1(W_O1 @ W_V1, tc.product_tolerance(W_O1, W_V1), layout=layout)
    if problems:
        raise Mistake(f"head 1 (W_O1 @ W_V1) is not {tc.head1_goal(layout)}:\n" + lib.bullet_list(problems))


@part("ex1_head2", points=2)
def test_head2_copies(sub):
    W_V2, W_O2 = _head(sub, 2)
    layout = _layout(sub)
    problems = tc.copy_problems_head2(W_O2 @ W_V2, tc.product_tolerance(W_O2, W_V2), layout=layout)
    if problems:
        raise Mistake(
            f"head 2 (W_O2 @ W_V2) is not an admissible copy into {lib.dims_text(layout.head2_writes)}:\n"
            + lib.bullet_list(problems)
        )


# -- the expanded products ----------------------------------------------------------------------


def _waiting(what, upstream, fix):
    """`upstream()`, or a Mistake saying that `what` cannot be judged until `fix` is fixed."""
    try:
        return upstream()
    except Mistake as problem:
        raise Mistake(
            f"{what} cannot be judged yet: it is judged on your own {fix[0]}, and {problem} Fix {fix[1]} first."
        ) from None


def _product(sub, number):
    W_V, W_O = _waiting(
        f"W_net{number}", lambda: _head(sub, number), (f"W_V{number}, W_O{number}", f"ex1_head{number}")
    )
    W_net = _net(sub, number)
    problems = tc.product_problems(W_net, W_V, W_O, number)
    if problems:
        raise Mistake(_sentences(problems))


@part("ex1_products", points=1)
def test_W_net1_is_product(sub):
    _product(sub, 1)


@part("ex1_products", points=1)
def test_W_net2_is_product(sub):
    _product(sub, 2)


# -- composition --------------------------------------------------------------------------------


def _composition(sub, which):
    W_net1, W_net2 = _waiting(which, lambda: (_net(sub, 1), _net(sub, 2)), ("W_net1 and W_net2", "ex1_products"))
    value = _square(sub, which)
    problems = tc.composition_problems(value, W_net1, W_net2, which, _layout(sub))
    if problems:
        raise Mistake(_sentences(problems))


@part("ex1_composition", points=1)
def test_two_token_copy(sub):
    _composition(sub, "two_token_copy")


@part("ex1_composition", points=1)
def test_one_token_copy(sub):
    _composition(sub, "one_token_copy")


# -- ranks --------------------------------------------------------------------------------------

_RANKED = ("W_net1", "W_net2", "two_token_copy", "one_token_copy")


def _own_square(sub, matrix):
    """The student's own d_model x d_model matrix, or None when it is missing or malformed
    (its own check explains why)."""
    if not sub.has(matrix):
        return None
    try:
        return _square(sub, matrix)
    except Mistake:
        return None


def _rank(sub, matrix):
    name = f"rank_{matrix}"
    value = sub.integer(name)
    expected = ref.virtual_head_ranks(_layout(sub))[name]
    if value == expected:
        return
    own = _own_square(sub, matrix)
    if own is not None and value == np.linalg.matrix_rank(own):
        return  # follow-through: the rank of the student's own matrix
    fits = []
    if own is not None:
        singular = np.linalg.svd(own, compute_uv=False)
        if value == int(np.count_nonzero(singular)) and value > np.linalg.matrix_rank(own):
            fits.append(
                f"the number of singular values of your {matrix} that are not exactly 0, "
                "counting rounding noise as nonzero (count those above a tolerance, as "
                "np.linalg.matrix_rank does)"
            )
    others = [
        other
        for other in _RANKED
        if other != matrix and (m := _own_square(sub, other)) is not None and np.linalg.matrix_rank(m) == value
    ]
    if others:
        fits.append(f"the rank of your {' and your '.join(others)}, not of {matrix}")
    if len(fits) == 1:
        raise Mistake(f"{name} is {value}: that is {fits[0]}.")
    if fits:
        raise Mistake(
            f"{name} is {value}, and the grader cannot tell which of these it is:\n"
            + lib.bullet_list(fits)
            + f"\nGive the rank of your {matrix} "
            "(np.linalg.matrix_rank)."
        )
    if own is not None:
        raise Mistake(
            f"{name} is {value}, which is not the rank of your {matrix}; the rank is "
            "the number of linearly independent columns (np.linalg.matrix_rank)."
        )
    raise Mistake(
        f"{name} is {value}, which is not the rank of {matrix} for a correct pair of "
        f"heads (your {matrix} could not be read, so the grader cannot use it); think "
        "about how many independent directions the map moves."
    )


@part("ex1_ranks", points=0.5)
def test_rank_W_net1(sub):
    _rank(sub, "W_net1")


@part("ex1_ranks", points=0.5)
def test_rank_W_net2(sub):
    _rank(sub, "W_net2")


@part("ex1_ranks", points=0.5)
def test_rank_two_token_copy(sub):
    _rank(sub, "two_token_copy")


@part("ex1_ranks", points=0.5)
def test_rank_one_token_copy(sub):
    _rank(sub, "one_token_copy")


# -- the two heads in the model -----------------------------------------------------------------

_SIMULATION = (
    "In the two-layer attention-only model with previous-token attention, run on "
    "random residual streams with your W_V1, W_O1, W_V2, W_O2, at each position:\n"
)


def _simulation(sub, distance):
    W_V1, W_O1 = _head(sub, 1)
    W_V2, W_O2 = _head(sub, 2)
    tol = max(1e-6, tc.product_tolerance(W_O1, W_V1), tc.product_tolerance(W_O2, W_V2))
    layout = _layout(sub)
    problems = tc.simulation_problems(
        tc.trace_two_heads(W_V1, W_O1, W_V2, W_O2, seed=7, layout=layout), tol=tol, distances=(distance,), layout=layout
    )
    if not problems:
        return
    failing = [
        f"ex1_head{number}"
        for number, judge, (W_V, W_O) in (
            (1, tc.copy_problems_head1, (W_V1, W_O1)),
            (2, tc.copy_problems_head2, (W_V2, W_O2)),
        )
        if judge(W_O @ W_V, tc.product_tolerance(W_O, W_V), layout=layout)
    ]
    first = ""
    if failing:
        first = (
            f"\nThis part has no answer of its own: it runs your two heads together, so it "
            f"passes once they do. Fix {' and '.join(failing)} first (its message says what "
            "is wrong with the head)."
        )
    raise Mistake(_SIMULATION + lib.bullet_list(problems, limit=8) + first)


@part("ex1_simulation", points=1)
def test_simulation_previous_token(sub):
    _simulation(sub, "previous")


@part("ex1_simulation", points=1)
def test_simulation_two_tokens_back(sub):
    _simulation(sub, "two_back")


# -- capacity -----------------------------------------------------------------------------------


def _own_capacity(sub):
    """Capacity counts measured on the student's own heads, or None when they cannot be read."""
    try:
        W_V1, W_O1 = _head(sub, 1)
        W_V2, W_O2 = _head(sub, 2)
    except Mistake:
        return None
    counts = ref.capacity_counts(
        W_V1,
        W_O1,
        W_V2,
        W_O2,
        tol=max(1e-6, tc.product_tolerance(W_O1, W_V1), tc.product_tolerance(W_O2, W_V2)),
        layout=_layout(sub),
    )
    return counts if counts["written"] else None


def _fraction(sub, name, numerator_key, other_key):
    counts = ref.virtual_head_capacity(_layout(sub))
    value = sub.number(name)
    expected = counts[numerator_key] / counts["written"]
    if abs(value - expected) <= lib.tolerance():
        return
    own = _own_capacity(sub)
    if own is not None and abs(value - own[numerator_key] / own["written"]) <= lib.tolerance():
        return  # follow-through: the fraction measured on the student's own heads
    within_head2 = {"previous": counts["head2_previous"], "two_back": counts["head2"] - counts["head2_previous"]}[
        numerator_key
    ]
    if abs(value - within_head2 / counts["head2"]) <= lib.tolerance():
        raise Mistake(
            f"{name} is {lib.fmt(value)}: that is a fraction of head 2's dims alone; the "
            "question is about the capacity of both heads together (all the dims "
            "they write)."
        )
    if abs(value - 100 * expected) <= 1e-4 or abs(value / 100 - expected) <= 1e-6 and value > 1:
        raise Mistake(f"{name} is {lib.fmt(value)}, which looks like a percentage; give a fraction between 0 and 1.")
    if abs(value - counts[numerator_key]) <= lib.tolerance():
        raise Mistake(
            f"{name} is {lib.fmt(value)}: that is a number of dims; divide by the number "
            "of dims the two heads write in total."
        )
    if abs(value - counts[other_key] / counts["written"]) <= lib.tolerance():
        raise Mistake(f"{name} is {lib.fmt(value)}: that looks like the other fraction (the two answers are swapped).")
    raise Mistake(
        f"{name} is {lib.fmt(value)}; count the dims the two heads write, and how many "
        "of them carry information from the given distance."
    )


@part("ex1_capacity", points=0.5)
def test_fraction_previous_token(sub):
    _fraction(sub, "fraction_previous_token", "previous", "two_back")


@part("ex1_capacity", points=0.5)
def test_fraction_two_tokens_back(sub):
    _fraction(sub, "fraction_two_tokens_back", "two_back", "previous")


# -- feedback pictures --------------------------------------------------------------------------


def figures(sub, grade_id):
    """SVGs of the student's own matrices for a part (never the expected ones)."""
    heatmaps = public_module("heatmaps")
    pictures = []
    try:
        if grade_id in ("ex1_head1", "ex1_head2"):
            number = grade_id[-1]
            W_V, W_O = _head(sub, int(number))
            pictures.append(heatmaps.show_head(W_V, W_O, f"your head {number}").svg)
            pictures.append(
                heatmaps.show_matrix(W_O @ W_V, f"your W_O{number} @ W_V{number}", "written dim", "read dim").svg
            )
        elif grade_id == "ex1_products":
            pictures.append(
                heatmaps.side_by_side(
                    heatmaps.show_matrix(_net(sub, 1), "your W_net1", "written dim", "read dim"),
                    heatmaps.show_matrix(_net(sub, 2), "your W_net2", "written dim", "read dim"),
                ).svg
            )
        elif grade_id == "ex1_composition":
            pictures.append(
                heatmaps.side_by_side(
                    heatmaps.show_matrix(
                        _square(sub, "two_token_copy"),
                        "your two_token_copy",
                        "written dim",
                        "read dim (two tokens back)",
                    ),
                    heatmaps.show_matrix(
                        _square(sub, "one_token_copy"),
                        "your one_token_copy",
                        "written dim",
                        "read dim (previous token)",
                    ),
                ).svg
            )
        elif grade_id == "ex1_simulation":
            W_V1, W_O1 = _head(sub, 1)
            W_V2, W_O2 = _head(sub, 2)
            X0 = tc.example_stream(layout=_layout(sub))
            _, X2 = tc.run_two_heads(X0, W_V1, W_O1, W_V2, W_O2)
            pictures.append(
                heatmaps.side_by_side(
                    heatmaps.show_matrix(X0, "example residual stream before layer 1", "residual dim", "position"),
                    heatmaps.show_matrix(X2, "after your two heads", "residual dim", "position"),
                ).svg
            )
    except Exception:  # noqa: BLE001 - a picture is optional; its absence hides nothing
        return pictures
    return pictures
