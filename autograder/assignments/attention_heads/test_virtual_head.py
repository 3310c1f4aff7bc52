"""Hidden checks of virtual_head.ipynb (Exercise 1: the virtual attention head).

Graded by behaviour, never by spelling: the heads through their products W_O @ W_V (so any
re-basing W_V -> M W_V, W_O -> W_O M^-1 and any admissible choice of dims earns full marks),
the derived matrices by consistency with the student's own factors, and the two heads together
by running the two-layer model on random residual streams. Each part checks only its own
answers, so a mistake costs the parts it breaks and no others (except the end-to-end
simulation, which every head mistake also breaks).
"""
import numpy as np

from . import reference as ref
from autograder.core.checks import Mistake, part
from . import public_module

tc = public_module("tc_checks")
lib = public_module("tclib")  # staging, messages and the tolerance rule, as the public checks

NOTEBOOK = "virtual_head"
EXTRACT = [
    "W_V1", "W_O1", "W_V2", "W_O2", "W_net1", "W_net2",
    "two_token_copy", "one_token_copy",
    "rank_W_net1", "rank_W_net2", "rank_two_token_copy", "rank_one_token_copy",
    "fraction_previous_token", "fraction_two_tokens_back",
]
PROBES = {}

_SQUARE = (tc.D_MODEL, tc.D_MODEL)


def _head(sub, number):
    """W_V, W_O of one head, with shape messages in the student's terms."""
    W_V = sub.array(f"W_V{number}", shape=(tc.D_HEAD, tc.D_MODEL), labels=("d_head", "d_model"))
    W_O = sub.array(f"W_O{number}", shape=(tc.D_MODEL, tc.D_HEAD), labels=("d_model", "d_head"))
    return W_V, W_O


def _square(sub, name, hints=None):
    """A d_model x d_model answer; a known wrong shape gets a hint naming what it probably is."""
    encoded = sub.encoded(name)
    shape = tuple(encoded.get("shape", ())) if encoded.get("kind") == "array" else None
    if hints and shape in hints:
        raise Mistake(f"{name} has shape {shape}: {hints[shape]}")
    return sub.array(name, shape=_SQUARE, labels=("d_model", "d_model"))


def _net(sub, number):
    return _square(sub, f"W_net{number}", {
        (tc.D_HEAD, tc.D_HEAD): f"that is W_V{number} @ W_O{number} (d_head x d_head); W_net{number} "
                                f"is the d_model x d_model product W_O{number} @ W_V{number}.",
    })


def _sentences(problems):
    """A judge's problems as the message: one per line, each ending with a full stop."""
    return "\n".join(problem + ("" if problem.endswith(".") else ".") for problem in problems)


# -- the heads ----------------------------------------------------------------------------------

@part("ex1_head1", points=2)
def test_head1_copies(sub):
    W_V1, W_O1 = _head(sub, 1)
    problems = tc.copy_problems_head1(W_O1 @ W_V1, tc.product_tolerance(W_O1, W_V1))
    if problems:
        raise Mistake("head 1 (W_O1 @ W_V1) is not a copy of dims 0-3 into dims 8-11:\n"
                      + lib.bullet_list(problems))


@part("ex1_head2", points=2)
def test_head2_copies(sub):
    W_V2, W_O2 = _head(sub, 2)
    problems = tc.copy_problems_head2(W_O2 @ W_V2, tc.product_tolerance(W_O2, W_V2))
    if problems:
        raise Mistake("head 2 (W_O2 @ W_V2) is not an admissible copy into dims 12-15:\n"
                      + lib.bullet_list(problems))


# -- the expanded products ----------------------------------------------------------------------

def _product(sub, number):
    W_net = _net(sub, number)
    W_V, W_O = _head(sub, number)
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
    value = _square(sub, which)
    W_net1, W_net2 = _net(sub, 1), _net(sub, 2)
    problems = tc.composition_problems(value, W_net1, W_net2, which)
    if problems:
        raise Mistake(_sentences(problems))


@part("ex1_composition", points=1)
def test_two_token_copy(sub):
    _composition(sub, "two_token_copy")


@part("ex1_composition", points=1)
def test_one_token_copy(sub):
    _composition(sub, "one_token_copy")


# -- ranks --------------------------------------------------------------------------------------

_UPSTREAM = {"W_net1": "ex1_head1 or ex1_products", "W_net2": "ex1_head2 or ex1_products",
             "two_token_copy": "ex1_head1, ex1_head2, ex1_products or ex1_composition",
             "one_token_copy": "ex1_head1, ex1_head2, ex1_products or ex1_composition"}


def _rank(sub, matrix):
    name = f"rank_{matrix}"
    value = sub.integer(name)
    expected = ref.virtual_head_ranks()[name]
    if value == expected:
        return
    own = None
    if sub.has(matrix):
        try:
            own = _square(sub, matrix)
        except Mistake:
            own = None
    if own is not None:
        singular = np.linalg.svd(own, compute_uv=False)
        if value == int(np.count_nonzero(singular)) and value > np.linalg.matrix_rank(own):
            raise Mistake(f"{name} is {value}, the number of singular values of {matrix} that are not "
                          "exactly 0; some are rounding noise. Count singular values above a "
                          "tolerance, as np.linalg.matrix_rank does.")
        if value == np.linalg.matrix_rank(own):
            raise Mistake(f"{name} is {value}, the rank of your {matrix}; but your {matrix} is not "
                          "yet what a correct pair of heads gives (see the failing checks of "
                          f"{_UPSTREAM[matrix]}).")
        raise Mistake(f"{name} is {value}, which is not the rank of your {matrix} either; the rank "
                      "is the number of linearly independent columns (np.linalg.matrix_rank).")
    raise Mistake(f"{name} is {value}, which is not the rank of {matrix} for a correct pair of "
                  "heads; think about how many independent directions the map moves.")


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

_SIMULATION = ("In the two-layer attention-only model with previous-token attention, run on "
               "random residual streams with your W_V1, W_O1, W_V2, W_O2, at each position:\n")


def _simulation(sub, distance):
    W_V1, W_O1 = _head(sub, 1)
    W_V2, W_O2 = _head(sub, 2)
    tol = max(1e-6, tc.product_tolerance(W_O1, W_V1), tc.product_tolerance(W_O2, W_V2))
    return tc.simulation_problems(tc.trace_two_heads(W_V1, W_O1, W_V2, W_O2, seed=7), tol=tol,
                                  distances=(distance,))


@part("ex1_simulation", points=1)
def test_simulation_previous_token(sub):
    previous = _simulation(sub, "previous")
    if previous:
        raise Mistake(_SIMULATION + lib.bullet_list(previous, limit=8))


@part("ex1_simulation", points=1)
def test_simulation_two_tokens_back(sub):
    two_back = _simulation(sub, "two_back")
    if two_back:
        raise Mistake(_SIMULATION + lib.bullet_list(two_back, limit=8))


# -- capacity -----------------------------------------------------------------------------------

def _fraction(sub, name, numerator_key, other_key):
    counts = ref.virtual_head_capacity()
    value = sub.number(name)
    expected = counts[numerator_key] / counts["written"]
    if abs(value - expected) <= lib.tolerance():
        return
    within_head2 = {"previous": counts["head2_previous"],
                    "two_back": counts["head2"] - counts["head2_previous"]}[numerator_key]
    if abs(value - within_head2 / counts["head2"]) <= lib.tolerance():
        raise Mistake(f"{name} is {lib.fmt(value)}: that is a fraction of head 2's dims alone; the "
                      "question is about the capacity of both heads together (all the dims "
                      "they write).")
    if abs(value - 100 * expected) <= 1e-4 or abs(value / 100 - expected) <= 1e-6 and value > 1:
        raise Mistake(f"{name} is {lib.fmt(value)}, which looks like a percentage; give a fraction "
                      "between 0 and 1.")
    if abs(value - counts[numerator_key]) <= lib.tolerance():
        raise Mistake(f"{name} is {lib.fmt(value)}: that is a number of dims; divide by the number "
                      "of dims the two heads write in total.")
    if abs(value - counts[other_key] / counts["written"]) <= lib.tolerance():
        raise Mistake(f"{name} is {lib.fmt(value)}: that looks like the other fraction (the two "
                      "answers are swapped).")
    raise Mistake(f"{name} is {lib.fmt(value)}; count the dims the two heads write, and how many "
                  "of them carry information from the given distance.")


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
            pictures.append(heatmaps.show_matrix(W_O @ W_V, f"your W_O{number} @ W_V{number}",
                                                 "written dim", "read dim").svg)
        elif grade_id == "ex1_products":
            pictures.append(heatmaps.side_by_side(
                heatmaps.show_matrix(_net(sub, 1), "your W_net1", "written dim", "read dim"),
                heatmaps.show_matrix(_net(sub, 2), "your W_net2", "written dim", "read dim")).svg)
        elif grade_id == "ex1_composition":
            pictures.append(heatmaps.side_by_side(
                heatmaps.show_matrix(_square(sub, "two_token_copy"), "your two_token_copy",
                                     "written dim", "read dim (two tokens back)"),
                heatmaps.show_matrix(_square(sub, "one_token_copy"), "your one_token_copy",
                                     "written dim", "read dim (previous token)")).svg)
        elif grade_id == "ex1_simulation":
            W_V1, W_O1 = _head(sub, 1)
            W_V2, W_O2 = _head(sub, 2)
            X0 = tc.example_stream()
            _, X2 = tc.run_two_heads(X0, W_V1, W_O1, W_V2, W_O2)
            pictures.append(heatmaps.side_by_side(
                heatmaps.show_matrix(X0, "example residual stream before layer 1", "residual dim",
                                     "position"),
                heatmaps.show_matrix(X2, "after your two heads", "residual dim", "position")).svg)
    except Exception:  # noqa: BLE001 - a picture is optional; its absence hides nothing
        return pictures
    return pictures
