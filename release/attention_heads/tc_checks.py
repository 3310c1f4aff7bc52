"""Public checks, given data and shared diagnostics for the `attention_heads` assignment.

Each `check_*` function runs in well under a second on your own answers. It checks the form of
an answer (present, type, shape, finite) and properties that any correct answer has; when it
is happy it prints a line saying the public checks passed. Hidden checks, which run when your
work is graded, test more, so passing here is necessary, not sufficient.

Conventions (the same as in the notebooks): column vectors; W_Q, W_K, W_V are d_head x d_model,
W_O is d_model x d_head (the transposes of TransformerLens's row-vector shapes; W_OV = W_O @ W_V);
a sequence X is (d_model, n_ctx) with column t = position t; an attention pattern is A[dest, src]
with rows summing to 1.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


def _beside_this_file(module: str):
    """Import `module`.py from this file's own folder, and from nowhere else.

    The grader loads this file from the course itself, so what it imports must come from there
    too, never from a search path on which a submission could put a file of that name.
    """
    import importlib.machinery
    import importlib.util
    import pathlib
    import sys

    name = f"{__name__.rpartition('.')[0]}.{module}".lstrip(".")
    if name not in sys.modules:
        # Found by the path hooks, in this folder alone: the sandbox's hook reuses code it compiled once.
        spec = importlib.machinery.PathFinder.find_spec(name, [str(pathlib.Path(__file__).parent)])
        if spec is None:
            raise ImportError(f"{module}.py is missing beside {__file__}")
        loaded = importlib.util.module_from_spec(spec)
        sys.modules[name] = loaded
        spec.loader.exec_module(loaded)
    return sys.modules[name]


tclib = _beside_this_file("tclib")  # shared by every assignment: staging, messages, tolerance
public_check, tolerance = tclib.public_check, tclib.tolerance
fmt, dims_text, bullet_list, difference_report = tclib.fmt, tclib.dims_text, tclib.bullet_list, tclib.difference_report
stage_array, stage_number, stage_whole_number = tclib.stage_array, tclib.stage_number, tclib.stage_whole_number

D_MODEL = 16
D_HEAD = 4
WRITTEN_DIMS = 2 * D_HEAD  # the dims the two heads of Exercise 1 write together
MATRIX_NAMES = ("W_Q", "W_K", "W_V", "W_O")
PASSED = "public checks passed (hidden checks run when your work is graded)"
WHEN = ("the token itself", "the previous token", "the token two back")

# What the grader uses of this module (tested: the grader uses these names and no others).
# Judges return a list of problems, empty when the answer has the property.
GRADER_API = (
    "D_MODEL",
    "D_HEAD",
    "DEFAULT_VARIANT",
    "EXERCISE_PAGE_LAYOUT",
    "variant_for",
    "head1_goal",
    "product_tolerance",
    "negativity_problems",
    "causality_problems",
    "normalisation_problems",
    "copy_problems_head1",
    "copy_problems_head2",
    "product_problems",
    "composition_problems",
    "q6_heads",
    "q6_square_mix_up",
    "example_stream",
    "run_two_heads",
    "trace_two_heads",
    "simulation_problems",
)


# -- your variant: where Exercise 1 keeps what, and Q6's two heads ------------------------------


class Layout(NamedTuple):
    """Where Exercise 1's residual stream (d_model = 16) holds what.

    Before layer 1 the token's content sits in `content`; the other dims are zero. Head 1
    copies `head1_reads[i]` into `head1_writes[i]`; head 2 writes into `head2_writes`, copying
    three of `other_content` and one of `head1_writes`.
    """

    content: tuple[int, ...]  # 8 dims, ascending
    head1_reads: tuple[int, ...]  # 4 of the content dims, in the order they are copied
    head1_writes: tuple[int, ...]  # 4 free dims: head1_reads[i] is copied into head1_writes[i]
    head2_writes: tuple[int, ...]  # the other 4 free dims, ascending

    @property
    def other_content(self) -> tuple[int, ...]:
        """The content dims head 1 does not copy (head 2 copies three of them)."""
        return tuple(d for d in self.content if d not in self.head1_reads)

    @property
    def free(self) -> tuple[int, ...]:
        """The dims that are zero before layer 1 (the heads write there)."""
        return tuple(sorted(self.head1_writes + self.head2_writes))

    def role(self, dim: int) -> str:
        if dim in self.head1_reads:
            return f"content, copied by head 1 into dim {self.head1_writes[self.head1_reads.index(dim)]}"
        if dim in self.content:
            return "content, not copied by head 1"
        if dim in self.head1_writes:
            return f"free, head 1 writes its copy of dim {self.head1_reads[self.head1_writes.index(dim)]} here"
        return "free, head 2 writes here"

    def permutation(self) -> np.ndarray:
        """P with P @ x moving the exercise page's own layout into this one (P[new, old] = 1)."""
        page = EXERCISE_PAGE_LAYOUT
        P = np.zeros((D_MODEL, D_MODEL))
        for old_dims, new_dims in (
            (page.head1_reads, self.head1_reads),
            (page.other_content, self.other_content),
            (page.head1_writes, self.head1_writes),
            (page.head2_writes, self.head2_writes),
        ):
            P[list(new_dims), list(old_dims)] = 1.0
        return P


EXERCISE_PAGE_LAYOUT = Layout(tuple(range(0, 8)), (0, 1, 2, 3), (8, 9, 10, 11), (12, 13, 14, 15))


class Q6Heads(NamedTuple):
    """How Q6's two given heads are drawn: a seed for their bases, and the two nonzero singular
    values of W_V2 W_O1 (the gains with which head 2 reads two directions head 1 writes)."""

    seed: int
    gains: tuple[float, float]


class Variant(NamedTuple):
    """Your version of this assignment's given data: Exercise 1's layout and Q6's heads."""

    layout: Layout
    q6: Q6Heads
    student_id: str | None = None  # None: the exercise page's own set-up

    def table(self):
        """What the set-up cells show (and record) of this variant."""
        layout = self.layout
        copies = ", ".join(f"{r} -> {w}" for r, w in zip(layout.head1_reads, layout.head1_writes))
        rows = (
            ("content dims (the token itself)", dims_text(layout.content)),
            ("head 1 copies (read -> written)", copies),
            ("content dims head 1 leaves", dims_text(layout.other_content)),
            ("head 2 writes into", dims_text(layout.head2_writes)),
            ("Q6: the heads' random seed", str(self.q6.seed)),
        )
        return tclib.VariantTable("attention_heads", self.student_id, rows, residual_stream_svg(layout))

    def _repr_mimebundle_(self, include=None, exclude=None):
        return self.table()._repr_mimebundle_(include, exclude)

    def __str__(self) -> str:
        return str(self.table())


DEFAULT_VARIANT = Variant(EXERCISE_PAGE_LAYOUT, Q6Heads(20211222, (2.0, 0.5)))


def variant_for(student_id: str | None, salt: str = "") -> Variant:
    """The variant drawn for `student_id` (the exercise page's own set-up for None).

    Every variant keeps the exercise's maths: 8 content dims and 8 free ones, so the heads
    still write 8 dims of which 7 carry the previous token and 1 the token two back; Q6's
    product W_V2 W_O1 still has rank 2, with gains of different sizes.
    """
    rng = tclib.variant_rng("attention_heads", student_id, salt)
    if rng is None:
        return DEFAULT_VARIANT
    dims = [int(d) for d in rng.permutation(D_MODEL)]
    layout = Layout(
        content=tuple(sorted(dims[0:8])),
        head1_reads=tuple(sorted(dims[0:4])),
        head1_writes=tuple(dims[8:12]),  # in drawn order: the pairing is part of the variant
        head2_writes=tuple(sorted(dims[12:16])),
    )
    strong = round(float(rng.uniform(1.5, 3.0)), 2)  # two gains of clearly different sizes
    weak = round(float(rng.uniform(0.2, 0.8)), 2)
    return Variant(layout, Q6Heads(int(rng.integers(1, 2**31 - 1)), (strong, weak)), student_id)


def my_variant(per_student: bool = False, salt: str = "", student_id: str | None = None) -> Variant:
    """Your variant, as the set-up cell draws it. The course sets `per_student` and `salt`
    (nbgrader writes them into the set-up cell); the student id is found as nbgrader finds it
    (tclib.find_student_id: set $AUTOGRADER_STUDENT_ID where your id is not your login)."""
    if not per_student:
        return DEFAULT_VARIANT
    return variant_for(student_id or tclib.find_student_id(), salt)


_ROLE_COLOURS = {"content": "#4e79a7", "copied": "#f28e2b", "head1": "#e15759", "head2": "#59a14f"}


def residual_stream_svg(layout: Layout) -> str:
    """A labelled strip of the 16 residual dims, coloured by what each holds."""
    cell, top = 34, 34
    kinds = []
    for d in range(D_MODEL):
        kind = "copied" if d in layout.head1_reads else "content" if d in layout.content else None
        kind = kind or ("head1" if d in layout.head1_writes else "head2")
        kinds.append(kind)
    boxes = []
    for d, kind in enumerate(kinds):
        x = 4 + d * cell
        label = ""
        if kind == "head1":
            label = f"\u2190{layout.head1_reads[layout.head1_writes.index(d)]}"
        boxes.append(
            f'<rect x="{x}" y="{top}" width="{cell - 2}" height="{cell - 2}" fill="{_ROLE_COLOURS[kind]}"/>'
            f'<text x="{x + cell / 2 - 1}" y="{top + 20}" font-size="13" text-anchor="middle" fill="#fff" '
            f'font-family="sans-serif">{d}</text>'
            f'<text x="{x + cell / 2 - 1}" y="{top + cell + 14}" font-size="11" text-anchor="middle" '
            f'fill="#222" font-family="sans-serif">{label}</text>'
        )
    legend = [
        ("content", "content, head 1 leaves it"),
        ("copied", "content head 1 copies"),
        ("head1", "head 1 writes (\u2190 its source)"),
        ("head2", "head 2 writes"),
    ]
    keys, x = [], 4
    for kind, words in legend:
        keys.append(
            f'<rect x="{x}" y="6" width="12" height="12" fill="{_ROLE_COLOURS[kind]}"/>'
            f'<text x="{x + 16}" y="16" font-size="11" font-family="sans-serif" fill="#222">{words}</text>'
        )
        x += 24 + 6 * len(words)
    width = max(8 + D_MODEL * cell, x)
    height = top + cell + 22
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="residual stream layout">'
        f"<title>Residual dims 0-{D_MODEL - 1} before layer 1 and where the heads write</title>"
        + "".join(keys + boxes)
        + "</svg>"
    )


def product_tolerance(W_O, W_V, rtol: float = tclib.RTOL) -> float:
    """How far from 0 (or 1) an entry of W_O @ W_V may be and still count as 0 (or 1).

    Based on the product itself, which re-basing a head (W_V -> M W_V, W_O -> W_O M^-1) leaves
    unchanged: a tolerance grown with |W_O| |W_V| could be inflated at will by an
    ill-conditioned M, until a copy with gain 2 passed as gain 1. Rounding in such a product is
    allowed for, but never more than a thousandth of the product's own size.
    """
    W_O, W_V = np.asarray(W_O, float), np.asarray(W_V, float)
    size = float(np.abs(W_O @ W_V).max(initial=0.0))
    rounding = 64 * np.finfo(float).eps * float((np.abs(W_O) @ np.abs(W_V)).max(initial=0.0))
    return tolerance(size, atol=min(rounding, 1e-3 * max(1.0, size)), rtol=rtol)


def _fail(message: str):
    raise AssertionError(message)


def shape_of(value):
    """np.shape(value), or None for values numpy cannot read as an array (ragged lists...)."""
    try:
        return np.shape(value)
    except Exception:  # noqa: BLE001
        return None


def _matrix_choice(value, name: str) -> frozenset:
    """A non-empty set of the four matrix names (spelling forgiven)."""
    chosen = tclib.stage_matrix_names(value, name, MATRIX_NAMES)
    if not chosen:
        _fail(f"{name} is empty; it should name at least one matrix.")
    return chosen


# -- one attention head: properties any correct implementation has -----------------------------


def _result(function, args, what: str, shape, labels=None) -> np.ndarray:
    try:
        value = function(*[np.array(a, copy=True) if isinstance(a, np.ndarray) else a for a in args])
    except Exception as error:  # noqa: BLE001
        _fail(f"{what} raised {type(error).__name__}: {error}")
    return tclib.stage_result(value, what, shape=shape, labels=labels)


def _random_head(rng, d_model, d_head, n_ctx, scale=1.0):
    X = rng.normal(size=(d_model, n_ctx))
    W_Q, W_K, W_V = (rng.normal(size=(d_head, d_model)) * scale / np.sqrt(d_model) for _ in range(3))
    W_O = rng.normal(size=(d_model, d_head)) / np.sqrt(d_head)
    return X, W_Q, W_K, W_V, W_O


def negativity_problems(A: np.ndarray, tol: float = tclib.RTOL) -> list[str]:
    if (A < -tol).any():
        dest, src = np.argwhere(A < -tol)[0]
        return [f"A[{dest}, {src}] = {fmt(A[dest, src])} is negative; attention weights are probabilities"]
    return []


def causality_problems(A: np.ndarray, tol: float = tclib.RTOL) -> list[str]:
    """Whether a pattern A[dest, src] puts weight on later positions."""
    future = np.triu(np.abs(A), k=1)
    if not (future > tol).any():
        return []
    dest, src = np.unravel_index(np.argmax(future), future.shape)
    text = (
        f"position {dest} gives weight {fmt(A[dest, src])} to position {src}, which comes "
        "later: a causal head looks only at earlier positions and itself (A[dest, src] = 0 "
        "for src > dest)"
    )
    if A.shape[0] > 1 and not (np.tril(np.abs(A), k=-1) > tol).any():
        text += (
            "; all your weight sits on or above the diagonal, as if the pattern were stored "
            "as A[src, dest]: rows should be destinations"
        )
    return [text]


def normalisation_problems(A: np.ndarray, tol: float = tclib.RTOL) -> list[str]:
    sums = A.sum(axis=1)
    if not (np.abs(sums - 1) > tolerance(A.shape[0], rtol=tol)).any():  # a sum of n_ctx weights
        return []
    dest = int(np.argmax(np.abs(sums - 1)))
    return [
        f"row {dest} (destination position {dest}) sums to {fmt(sums[dest])}; each row is a "
        "probability distribution over source positions and sums to 1"
    ]


def pattern_problems(A: np.ndarray, tol: float = tclib.RTOL) -> list[str]:
    """What is wrong with A as a causal attention pattern A[dest, src] (empty when nothing)."""
    return negativity_problems(A, tol) + causality_problems(A, tol) + normalisation_problems(A, tol)


@public_check
def check_attention_pattern(attention_pattern):
    """Shape, probabilities, causality, and uniform attention when all scores are equal."""
    if not callable(attention_pattern):
        _fail("attention_pattern should be a function attention_pattern(X, W_Q, W_K).")
    rng = np.random.default_rng(2021)
    for d_model, d_head, n_ctx in [(16, 4, 6), (8, 2, 1), (12, 3, 5)]:
        X, W_Q, W_K, _, _ = _random_head(rng, d_model, d_head, n_ctx, scale=3.0)
        what = f"attention_pattern(X, W_Q, W_K) with d_model={d_model}, d_head={d_head}, n_ctx={n_ctx}"
        A = _result(attention_pattern, (X, W_Q, W_K), what, (n_ctx, n_ctx), ("n_ctx", "n_ctx"))
        problems = pattern_problems(A)
        if problems:
            _fail(f"{what}:\n{bullet_list(problems)}")
    # With W_Q = 0 every score is 0, so each position spreads its attention evenly.
    X, _, W_K, _, _ = _random_head(rng, 8, 2, 5)
    W_Q = np.zeros((2, 8))
    what = "attention_pattern(X, W_Q, W_K) with W_Q = 0 (d_model=8, d_head=2, n_ctx=5)"
    A = _result(attention_pattern, (X, W_Q, W_K), what, (5, 5), ("n_ctx", "n_ctx"))
    uniform = np.tril(np.ones((5, 5))) / np.arange(1, 6)[:, None]
    report = difference_report(A, uniform, "your pattern", "even attention over positions 0..dest")
    if report:
        _fail(f"{what}: all scores are equal, so position t should attend evenly to positions 0..t; {report}.")
    _scaling_property(
        attention_pattern,
        lambda X, W_Q, W_K, W_V, W_O: (X, W_Q, W_K),
        "attention_pattern(X, W_Q, W_K)",
        ("n_ctx", "n_ctx"),
        lambda X: (X.shape[1],) * 2,
    )
    print(f"attention_pattern: {PASSED}")


def _scaling_property(function, make_args, signature: str, labels, shape_for):
    """Zero rows added to W_Q, W_K (and W_V, with zero columns in W_O) leave every product
    q . k and W_O W_V unchanged but make d_head 4 times larger, so 1/sqrt(d_head) halves: the
    result must equal the result with W_Q halved. A head that scales by anything else (nothing,
    d_head, sqrt(d_model), a typed constant) fails."""
    rng = np.random.default_rng(2023)
    d_model, d_head, n_ctx = 12, 3, 5
    X, W_Q, W_K, W_V, W_O = _random_head(rng, d_model, d_head, n_ctx, scale=3.0)
    rows = np.zeros((3 * d_head, d_model))
    padded = (X, np.vstack([W_Q, rows]), np.vstack([W_K, rows]), np.vstack([W_V, rows]), np.hstack([W_O, rows.T]))
    what = f"{signature} with zero rows added to the head's matrices (d_head {d_head} -> {4 * d_head})"
    wide = _result(function, make_args(*padded), what, shape_for(X), labels)
    halved = _result(
        function, make_args(X, W_Q / 2, W_K, W_V, W_O), f"{signature} with W_Q halved", shape_for(X), labels
    )
    report = difference_report(wide, halved, "the padded result", "the result with W_Q / 2")
    if report:
        _fail(
            f"{what} (d_model={d_model}, n_ctx={n_ctx}): zero rows leave every score q . k "
            f"unchanged while d_head grows from {d_head} to {4 * d_head}, so scaling by "
            "1/sqrt(d_head) should give exactly the result for W_Q / 2; "
            f"{report}. Scale the scores by 1/sqrt(d_head), with d_head read from the arguments "
            "(not d_model, not a typed number)."
        )


def _head_properties(head, make_args, name: str, signature: str):
    """Shared by check_attention_head and check_attention_head_low_rank."""
    if not callable(head):
        _fail(f"{name} should be a function {signature}.")
    rng = np.random.default_rng(2022)
    for d_model, d_head, n_ctx in [(16, 4, 6), (8, 2, 1), (12, 3, 5)]:
        X, W_Q, W_K, W_V, W_O = _random_head(rng, d_model, d_head, n_ctx, scale=2.0)
        what = f"{name}{signature[signature.index('(') :]} with d_model={d_model}, d_head={d_head}, n_ctx={n_ctx}"
        try:
            raw = head(*make_args(X, W_Q, W_K, W_V, W_O))
        except Exception as error:  # noqa: BLE001
            _fail(f"{what} raised {type(error).__name__}: {error}")
        shape = shape_of(raw)
        if shape == (d_head, n_ctx) and d_head != d_model:
            _fail(
                f"{what} returned shape {shape} (d_head, n_ctx): that is the head's result "
                "before W_O writes it back into the residual stream; return (d_model, n_ctx)."
            )
        out = tclib.stage_result(raw, what, shape=(d_model, n_ctx), labels=("d_model", "n_ctx"))

        # Every position attends somewhere (at least to itself), so with random weights the head
        # writes something at every position: a zero column is a position left out.
        silent = [t for t in range(n_ctx) if np.abs(out[:, t]).max() <= 1e-12]
        if silent:
            where = ("position " if len(silent) == 1 else "positions ") + ", ".join(map(str, silent))
            _fail(
                f"{what}: your output writes nothing at {where} (column all zero). Every position "
                "attends to itself and earlier positions and gets the weighted sum of their values, "
                "which for these random weights is never zero: the head leaves that position out "
                "(does a loop over positions skip it?)."
            )

        # Causality: changing the last position may change only the last output column.
        X_later = X.copy()
        X_later[:, -1] = rng.normal(size=d_model) * 3
        out_later = _result(head, make_args(X_later, W_Q, W_K, W_V, W_O), what, (d_model, n_ctx), ("d_model", "n_ctx"))
        report = difference_report(
            out_later[:, :-1], out[:, :-1], "the output at earlier positions after the change", "before"
        )
        if report:
            _fail(
                f"{what}: changing only the last position (n_ctx - 1) changed the output at "
                f"earlier positions; {report}. A position may only read from itself and earlier "
                "positions: check the causal mask and which side of the values the pattern "
                "multiplies (A[dest, src])."
            )

        # With zero value weights the head moves nothing, so it adds nothing.
        zero = _result(
            head, make_args(X, W_Q, W_K, np.zeros_like(W_V), W_O), what, (d_model, n_ctx), ("d_model", "n_ctx")
        )
        if np.abs(zero).max() > 1e-9:
            hint = (
                " Your output equals X: does the function add the residual stream X to what "
                "the head writes? Return only the head's contribution."
                if np.allclose(zero, X)
                else ""
            )
            _fail(
                f"{what} with W_V = 0: the head moves nothing, so its output should be all zero, "
                f"but an entry is {fmt(np.abs(zero).max())}.{hint}"
            )

        if n_ctx == 1:  # one position attends to itself with weight 1
            report = difference_report(out, W_O @ W_V @ X, "your output", "W_O @ W_V @ X")
            if report:
                _fail(
                    f"{what}: with one position the head attends to it with weight 1 and "
                    f"writes W_O @ W_V @ x; {report}."
                )
    _scaling_property(head, make_args, signature, ("d_model", "n_ctx"), lambda X: X.shape)
    print(f"{name}: {PASSED}")


@public_check
def check_attention_head(attention_head):
    """Output shape, causality, zero output when W_V = 0, and the one-position case."""
    _head_properties(
        attention_head,
        lambda X, W_Q, W_K, W_V, W_O: (X, W_Q, W_K, W_V, W_O),
        "attention_head",
        "attention_head(X, W_Q, W_K, W_V, W_O)",
    )


@public_check
def check_attention_head_low_rank(attention_head_low_rank):
    """The same properties for the head written with W_QK and W_OV only."""
    _head_properties(
        attention_head_low_rank,
        lambda X, W_Q, W_K, W_V, W_O: (X, W_Q.T @ W_K, W_O @ W_V, W_Q.shape[0]),
        "attention_head_low_rank",
        "attention_head_low_rank(X, W_QK, W_OV, d_head)",
    )


@public_check
def check_read_write(matrices_that_read, matrices_that_write):
    """Both answers are sets of the four matrix names (which ones is for the hidden checks)."""
    _matrix_choice(matrices_that_read, "matrices_that_read")
    _matrix_choice(matrices_that_write, "matrices_that_write")
    print(f"matrices_that_read, matrices_that_write: {PASSED}")


@public_check
def check_decide_attention(matrices_that_decide_attention):
    chosen = _matrix_choice(matrices_that_decide_attention, "matrices_that_decide_attention")
    if len(chosen) != 2:
        _fail(f"matrices_that_decide_attention names {len(chosen)} matrices; the question asks for two.")
    print(f"matrices_that_decide_attention: {PASSED}")


@public_check
def check_max_ranks(max_rank_W_QK, max_rank_W_OV):
    for value, name in ((max_rank_W_QK, "max_rank_W_QK"), (max_rank_W_OV, "max_rank_W_OV")):
        rank = stage_whole_number(value, name)
        if not 0 <= rank <= D_MODEL:
            _fail(f"{name} is {rank}, but the rank of a {D_MODEL} x {D_MODEL} matrix is between 0 and {D_MODEL}.")
    print(f"max_rank_W_QK, max_rank_W_OV: {PASSED}")


# -- Q6: given heads ----------------------------------------------------------------------------


def q6_heads(variant: Variant = DEFAULT_VARIANT) -> dict:
    """Two heads with d_model = 16, d_head = 4 (the same every time for one variant): W_V1,
    W_O1, W_V2, W_O2.

    Head 2 reads part of what head 1 writes (and other directions as well).
    """
    rng = np.random.default_rng(variant.q6.seed)
    basis, _ = np.linalg.qr(rng.normal(size=(D_MODEL, D_MODEL)))  # orthonormal directions
    mix1, _ = np.linalg.qr(rng.normal(size=(D_HEAD, D_HEAD)))
    W_O1 = basis[:, 0:4] @ mix1  # head 1 writes into span(basis[:, 0:4])
    W_V1 = rng.normal(size=(D_HEAD, D_MODEL)) / 2
    left, _ = np.linalg.qr(rng.normal(size=(D_HEAD, D_HEAD)))
    right, _ = np.linalg.qr(rng.normal(size=(D_HEAD, D_HEAD)))
    # Head 2 reads two directions of head 1's output (with the variant's two gains) ...
    reads_head1 = left @ np.diag([*variant.q6.gains, 0.0, 0.0]) @ right.T @ W_O1.T
    # ... and, independently, directions head 1 never writes.
    reads_other = 0.3 * rng.normal(size=(D_HEAD, D_HEAD)) @ basis[:, 4:8].T
    W_V2 = reads_head1 + reads_other
    W_O2 = basis[:, 8:12] @ rng.normal(size=(D_HEAD, D_HEAD))
    return {"W_V1": W_V1, "W_O1": W_O1, "W_V2": W_V2, "W_O2": W_O2}


@public_check
def q6_square_mix_up(value, variant: Variant = DEFAULT_VARIANT) -> str | None:
    """What a d_model x d_model W_V2_W_O1 is, named only when it equals that product of the
    given heads (the shape alone does not tell which product it is)."""
    heads = q6_heads(variant)
    products = {
        "W_O1 @ W_V2, the product in the other order": heads["W_O1"] @ heads["W_V2"],
        "W_OV1 = W_O1 @ W_V1, head 1's own map": heads["W_O1"] @ heads["W_V1"],
        "W_OV2 = W_O2 @ W_V2, head 2's own map": heads["W_O2"] @ heads["W_V2"],
        "W_OV2 @ W_OV1, the two heads' maps composed": (heads["W_O2"] @ heads["W_V2"])
        @ (heads["W_O1"] @ heads["W_V1"]),
    }
    try:
        value = np.asarray(value)
    except Exception:  # noqa: BLE001 - an odd object is staged (and explained) by the caller
        return None
    if value.dtype.kind not in "biuf":
        return None
    value = value.astype(float)
    for what, product in products.items():
        if value.shape == product.shape and difference_report(value, product, "", "") is None:
            return what
    return None


def check_q6_product(W_V2_W_O1, variant: Variant = DEFAULT_VARIANT):
    shape = shape_of(W_V2_W_O1)
    if shape == (D_MODEL, D_MODEL):
        what = q6_square_mix_up(W_V2_W_O1, variant)
        _fail(
            f"W_V2_W_O1 has shape {shape} (d_model x d_model)"
            + (f": that is {what}." if what else ".")
            + " W_V2 @ W_O1 takes what head 1 writes (through W_O1) and reads it with head 2's "
            f"W_V2, so it is d_head x d_head = ({D_HEAD}, {D_HEAD})."
        )
    stage_array(W_V2_W_O1, "W_V2_W_O1", shape=(D_HEAD, D_HEAD), labels=("d_head", "d_head"))
    print(f"W_V2_W_O1: {PASSED}")


def _q6_products(W_V2_W_O1, variant: Variant) -> list:
    """The products a Q6 answer may be measured on: your own W_V2_W_O1 (follow-through) and the
    given heads' (which you compute from the heads printed above)."""
    heads = q6_heads(variant)
    products = [heads["W_V2"] @ heads["W_O1"]]
    own = _own_matrix(W_V2_W_O1, (D_HEAD, D_HEAD)) if W_V2_W_O1 is not None else None
    return ([own] if own is not None else []) + products


def _same_singular_values(values, matrix) -> bool:
    expected = np.linalg.svd(matrix, compute_uv=False)
    tol = tolerance(float(expected.max(initial=0.0)))
    n = len(values)
    return (
        int(np.sum(expected > tol)) <= n <= len(expected)
        and bool(np.all(np.abs(values - expected[:n]) <= tol))
        and bool(np.all(expected[n:] <= tol))
    )


@public_check
def check_q6_singular_values(singular_values_W_V2_W_O1, W_V2_W_O1=None, variant: Variant = DEFAULT_VARIANT):
    name = "singular_values_W_V2_W_O1"
    values = stage_array(singular_values_W_V2_W_O1, name).reshape(-1)
    if len(shape_of(singular_values_W_V2_W_O1) or ()) == 2:
        _fail(
            f"{name} is a 2-D array; it should be the 1-D array of singular values "
            "(np.linalg.svd returns U, S, Vh: S is the one you want)."
        )
    if not 1 <= values.size <= D_HEAD:
        _fail(f"{name} has {values.size} values, but a {D_HEAD} x {D_HEAD} matrix has {D_HEAD} singular values.")
    if (values < -1e-12).any():
        _fail(
            f"{name} contains the negative value {fmt(values.min())}; singular values are never "
            "negative (eigenvalues can be, singular values cannot)."
        )
    if (np.diff(values) > 1e-12).any():
        _fail(
            f"{name} is not in descending order ({', '.join(fmt(v) for v in values)}); list the "
            "largest first, as np.linalg.svd does."
        )
    if W_V2_W_O1 is not None:
        products = _q6_products(W_V2_W_O1, variant)
        if not any(_same_singular_values(values, product) for product in products):
            own = "your W_V2_W_O1" if len(products) == 2 else "W_V2 @ W_O1 for the given heads"
            _fail(
                f"{name} ({len(values)} values) are not the singular values of {own}: compute them "
                "with np.linalg.svd(W_V2_W_O1, compute_uv=False)."
            )
    print(f"{name}: {PASSED}")


@public_check
def check_q6_rank(rank_W_V2_W_O1, W_V2_W_O1=None, variant: Variant = DEFAULT_VARIANT):
    rank = stage_whole_number(rank_W_V2_W_O1, "rank_W_V2_W_O1")
    if not 0 <= rank <= D_HEAD:
        _fail(f"rank_W_V2_W_O1 is {rank}, but a {D_HEAD} x {D_HEAD} matrix has rank 0 to {D_HEAD}.")
    if W_V2_W_O1 is not None:
        products = _q6_products(W_V2_W_O1, variant)
        if not any(rank == int(np.linalg.matrix_rank(product)) for product in products):
            if len(products) == 2:
                _fail(own_rank_problem("rank_W_V2_W_O1", rank, "W_V2_W_O1", products[0]) or "")
            _fail(
                f"rank_W_V2_W_O1 is {rank}; the rank is the number of clearly nonzero singular "
                "values of W_V2 @ W_O1 (np.linalg.matrix_rank)."
            )
    print(f"rank_W_V2_W_O1: {PASSED}")


@public_check
def check_q6_v_composition(v_composition_score):
    score = stage_number(v_composition_score, "v_composition_score")
    if not 0 <= score <= 1 + 1e-9:
        _fail(
            f"v_composition_score is {fmt(score)}, but the Frobenius norm of a product is at "
            "most the product of the Frobenius norms, so the score lies between 0 and 1."
        )
    print(f"v_composition_score: {PASSED}")


# -- Exercise 1: copy maps ----------------------------------------------------------------------


def copy_problems_head1(
    W_net, tol: float = tclib.RTOL, head: str = "head 1", layout: Layout = EXERCISE_PAGE_LAYOUT
) -> list[str]:
    """How W_net (= W_O1 @ W_V1) differs from copying head1_reads[i] into head1_writes[i]."""
    W = np.asarray(W_net, float)
    if W.shape != (D_MODEL, D_MODEL):
        return [f"{head}'s W_O @ W_V has shape {W.shape}, not ({D_MODEL}, {D_MODEL})"]
    problems = _head1_core(W, tol, head, layout)
    if problems and not _head1_core(W.T, tol, head, layout):
        return [
            f"{head} reads {dims_text(layout.head1_writes)} and writes {dims_text(layout.head1_reads)}: it is "
            "the transpose of the intended copy. With column vectors, entry [dest, src] of "
            "W_O @ W_V is how much of dim src lands in dim dest (rows are written, columns "
            "are read)"
        ]
    return problems


def _gain_problem(head, src, dest, gain, tol):
    if abs(gain - 1) <= tol:
        return None
    if abs(gain) <= tol:
        return f"{head} does not copy dim {src} into dim {dest}"
    if abs(gain + 1) <= tol:
        return f"{head} copies dim {src} into dim {dest} with gain -1: that flips the sign; a copy has gain 1"
    return f"{head} copies dim {src} into dim {dest} with gain {fmt(gain)}; a copy has gain 1"


def _head1_core(W, tol, head, layout: Layout):
    big = np.abs(W) > tol
    if not big.any():
        return [f"{head} copies nothing: its W_O @ W_V is zero, so it adds nothing to the residual stream"]
    problems = []
    reads, writes = layout.head1_reads, layout.head1_writes
    rows = np.flatnonzero(big.any(axis=1))
    cols = np.flatnonzero(big.any(axis=0))
    into_content = [d for d in rows if d in layout.content]
    into_free = [d for d in rows if d in layout.head2_writes]
    if into_content:
        problems.append(
            f"{head} writes into {dims_text(into_content)}, which hold the token's own content "
            f"({dims_text(layout.content)})"
        )
    if into_free:
        problems.append(f"{head} writes into {dims_text(into_free)}, which must stay free for head 2")
    other_content = [s for s in cols if s in layout.content and s not in reads]
    empty = [s for s in cols if s not in layout.content]
    if other_content:
        problems.append(f"{head} reads {dims_text(other_content)}; head 1 copies {dims_text(reads)} only")
    if empty:
        problems.append(
            f"{head} reads {dims_text(empty)}, which are empty before layer 1; head 1 copies {dims_text(reads)} only"
        )
    gains = [W[w, r] for r, w in zip(reads, writes)]
    if all(abs(g - gains[0]) <= tol for g in gains) and abs(gains[0] - 1) > tol and abs(gains[0]) > tol:
        first = _gain_problem(head, reads[0], writes[0], gains[0], tol)
        problems.append(
            first.replace(
                f"dim {reads[0]} into dim {writes[0]}",
                f"each of {dims_text(reads)} into its dim of {dims_text(writes)}",
            )
        )
    else:
        for r, w in zip(reads, writes):
            problem = _gain_problem(head, r, w, W[w, r], tol)
            if problem:
                problems.append(problem)
    for r, w in zip(reads, writes):
        for other in writes:
            if other != w and big[other, r]:
                problems.append(
                    f"{head} puts {fmt(W[other, r])} x dim {r} into dim {other}; dim {r} should land only in dim {w}"
                )
    return problems


def copy_problems_head2(
    W_net, tol: float = tclib.RTOL, head: str = "head 2", layout: Layout = EXERCISE_PAGE_LAYOUT
) -> list[str]:
    """How W_net (= W_O2 @ W_V2) differs from an admissible head 2.

    Admissible: copy three of the content dims head 1 leaves and one of the dims head 1
    wrote, each with gain 1, one-to-one into head 2's dims in any order.
    """
    W = np.asarray(W_net, float)
    if W.shape != (D_MODEL, D_MODEL):
        return [f"{head}'s W_O @ W_V has shape {W.shape}, not ({D_MODEL}, {D_MODEL})"]
    problems = _head2_core(W, tol, head, layout)
    if problems and not _head2_core(W.T, tol, head, layout):
        return [
            f"{head} reads {dims_text(layout.head2_writes)} and writes the dims it should read: it is "
            "the transpose of an admissible copy. With column vectors, entry [dest, src] of "
            "W_O @ W_V is how much of dim src lands in dim dest (rows are written, columns "
            "are read)"
        ]
    return problems


def _head2_core(W, tol, head, layout: Layout):
    big = np.abs(W) > tol
    if not big.any():
        return [f"{head} copies nothing: its W_O @ W_V is zero, so it adds nothing to the residual stream"]
    problems = []
    mine, others, written = layout.head2_writes, layout.other_content, layout.head1_writes
    rows = np.flatnonzero(big.any(axis=1))
    cols = np.flatnonzero(big.any(axis=0))
    into_head1 = [d for d in rows if d in written]
    into_content = [d for d in rows if d in layout.content]
    if into_head1:
        problems.append(f"{head} writes into {dims_text(into_head1)}, which head 1 already uses")
    if into_content:
        problems.append(
            f"{head} writes into {dims_text(into_content)}, which hold the token's own content "
            f"({dims_text(layout.content)})"
        )
    rereads = [s for s in cols if s in layout.head1_reads]
    own = [s for s in cols if s in mine]
    if rereads:
        problems.append(
            f"{head} re-reads {dims_text(rereads)}, which head 1 already copies from the "
            "previous token; take content dims head 1 does not copy"
        )
    if own:
        problems.append(
            f"{head} reads {dims_text(own)}, which are still empty when head 2 runs (they are where head 2 writes)"
        )
    sources = list(others) + list(written)  # the admissible region: read these, write head 2's dims
    block = W[np.ix_(list(mine), sources)]
    block_big = np.abs(block) > tol
    for d, s in zip(*np.nonzero(block_big)):
        problem = _gain_problem(head, sources[s], mine[d], block[d, s], tol)
        if problem:
            problems.append(problem)
    for s in np.flatnonzero(block_big.sum(axis=0) > 1):
        targets = [mine[d] for d in np.flatnonzero(block_big[:, s])]
        problems.append(f"{head} copies dim {sources[s]} into {dims_text(targets)}; copy each dim into one dim only")
    for d in np.flatnonzero(block_big.sum(axis=1) > 1):
        from_dims = [sources[s] for s in np.flatnonzero(block_big[d])]
        problems.append(
            f"dim {mine[d]} receives a mix of {dims_text(from_dims)}; each of {dims_text(mine)} should hold a copy of one dim"
        )
    n = len(others)
    content_sources = [sources[s] for s in np.flatnonzero(block_big[:, :n].any(axis=0))]
    head1_sources = [sources[n + s] for s in np.flatnonzero(block_big[:, n:].any(axis=0))]
    if len(content_sources) != 3:
        which = f" ({dims_text(content_sources)})" if content_sources else ""
        problems.append(
            f"into {dims_text(mine)}, {head} copies {len(content_sources)} of the content "
            f"{dims_text(others)}{which}; it should copy three of them"
        )
    if len(head1_sources) != 1:
        which = f" ({dims_text(head1_sources)})" if head1_sources else ""
        problems.append(
            f"into {dims_text(mine)}, {head} copies {len(head1_sources)} of the dims head 1 "
            f"wrote{which}; it should copy exactly one of {dims_text(written)}"
        )
    return problems


def _matrix_pair(W_V, W_O, number):
    W_V = stage_array(W_V, f"W_V{number}", shape=(D_HEAD, D_MODEL), labels=("d_head", "d_model"))
    W_O = stage_array(W_O, f"W_O{number}", shape=(D_MODEL, D_HEAD), labels=("d_model", "d_head"))
    return W_V, W_O


def head1_goal(layout: Layout) -> str:
    """What head 1 should do, in words: 'a copy of dims 0-3 into dims 8-11'."""
    if layout.head1_writes == tuple(sorted(layout.head1_writes)):
        return f"a copy of {dims_text(layout.head1_reads)} into {dims_text(layout.head1_writes)}"
    return "a copy of " + ", ".join(f"dim {r} into dim {w}" for r, w in zip(layout.head1_reads, layout.head1_writes))


@public_check
def check_head1(W_V1, W_O1, variant: Variant = DEFAULT_VARIANT):
    W_V1, W_O1 = _matrix_pair(W_V1, W_O1, 1)
    problems = copy_problems_head1(W_O1 @ W_V1, product_tolerance(W_O1, W_V1), layout=variant.layout)
    if problems:
        _fail(f"head 1 (W_O1 @ W_V1) is not yet {head1_goal(variant.layout)}:\n" + bullet_list(problems))
    print(f"head 1: {PASSED}")


@public_check
def check_head2(W_V2, W_O2, variant: Variant = DEFAULT_VARIANT):
    W_V2, W_O2 = _matrix_pair(W_V2, W_O2, 2)
    problems = copy_problems_head2(W_O2 @ W_V2, product_tolerance(W_O2, W_V2), layout=variant.layout)
    if problems:
        _fail(
            f"head 2 (W_O2 @ W_V2) is not yet an admissible copy into {dims_text(variant.layout.head2_writes)}:\n"
            + bullet_list(problems)
        )
    print(f"head 2: {PASSED}")


def product_problems(W_net, W_V, W_O, number) -> list[str]:
    """Whether W_net<number> is W_O<number> @ W_V<number> (all already-checked arrays)."""
    name = f"W_net{number}"
    product = W_O @ W_V
    tol = product_tolerance(W_O, W_V)
    report = difference_report(W_net, product, name, f"W_O{number} @ W_V{number}", rtol=0, atol=tol)
    if report is None:
        return []
    if difference_report(W_net, product.T, name, "", rtol=0, atol=tol) is None:
        return [
            f"{name} is the transpose of W_O{number} @ W_V{number} (it equals "
            f"W_V{number}.T @ W_O{number}.T, the row-vector layout). With column vectors "
            f"{name} = W_O{number} @ W_V{number}, so that {name} @ x is what the head writes "
            "when it reads x."
        ]
    return [report]


@public_check
def check_products(W_net1, W_net2, W_V1, W_O1, W_V2, W_O2):
    problems = []
    for number, W_net, W_V, W_O in ((1, W_net1, W_V1, W_O1), (2, W_net2, W_V2, W_O2)):
        W_net = stage_array(W_net, f"W_net{number}", shape=(D_MODEL, D_MODEL), labels=("d_model", "d_model"))
        W_V, W_O = _matrix_pair(W_V, W_O, number)
        problems += product_problems(W_net, W_V, W_O, number)
    if problems:
        _fail("\n".join(problems))
    print(f"W_net1, W_net2: {PASSED}")


def composition_problems(value, W_net1, W_net2, which: str, layout: Layout = EXERCISE_PAGE_LAYOUT) -> list[str]:
    """Whether two_token_copy = W_net2 @ W_net1 / one_token_copy = W_net2 + W_net1, naming mix-ups."""
    identity = np.eye(D_MODEL)
    intended = {
        "two_token_copy": ("W_net2 @ W_net1", W_net2 @ W_net1),
        "one_token_copy": ("W_net2 + W_net1", W_net2 + W_net1),
    }[which]
    # the scale of the tolerance rule: the largest terms a product or a sum of the two can hold
    tol = tolerance(
        max(
            np.abs(W_net1).max(initial=0) * np.abs(W_net2).max(initial=0) * D_MODEL,
            np.abs(W_net1).max(initial=0) + np.abs(W_net2).max(initial=0),
        )
    )
    report = difference_report(value, intended[1], which, intended[0], rtol=0, atol=tol)
    mix_ups = [
        (
            "W_net1 @ W_net2",
            W_net1 @ W_net2,
            "that applies head 2 first and head 1 second. A vector goes through head 1 first, and "
            "with column vectors the first map stands on the right: W_net2 @ W_net1",
        ),
        (
            "W_net2 * W_net1",
            W_net2 * W_net1,
            "that is the element-wise product (*); composing maps is the matrix product (@)",
        ),
        (
            "I + W_net2 + W_net1",
            identity + W_net2 + W_net1,
            "that adds the identity, the direct path that carries the token's own content; "
            "one_token_copy is only what the heads move from the previous token",
        ),
        (
            "(I + W_net2) @ (I + W_net1)",
            (identity + W_net2) @ (identity + W_net1),
            "that is the whole two-layer map (direct path, both one-token paths and the two-token "
            "path); keep only the paths the name asks for",
        ),
        ("W_net2 + W_net1", W_net2 + W_net1, "that is one_token_copy: one head acting alone"),
        ("W_net2 @ W_net1", W_net2 @ W_net1, "that is two_token_copy: head 2 reading head 1"),
    ]
    if report is None:
        # Follow-through: right for these W_net1, W_net2, unless on them the intended formula
        # gives the same matrix as a known mix-up; then the value cannot show which was computed.
        alike = [
            formula
            for formula, matrix, _ in mix_ups
            if formula != intended[0] and difference_report(matrix, intended[1], "", "", rtol=0, atol=tol) is None
        ]
        if not alike:
            return []
        nets = [
            f"W_net{number}"
            for number, judge, W in ((1, copy_problems_head1, W_net1), (2, copy_problems_head2, W_net2))
            if judge(W, tol, layout=layout)
        ]
        fix = (
            f"Your {' and '.join(nets)} {'is' if len(nets) == 1 else 'are'} not yet what a "
            "correct head gives (see check_head1, check_head2 and check_products): fix that "
            "first; for correct heads these formulas give different matrices"
            if nets
            else "With other heads these formulas give different matrices"
        )
        return [
            f"{which} cannot be judged yet: for your W_net1 and W_net2, {intended[0]} is the "
            f"same matrix as {' and as '.join(alike)}, so your {which} cannot show which one "
            f"you computed. {fix}"
        ]
    # Several mix-ups can coincide (for correct heads W_net1 @ W_net2 and W_net2 * W_net1 are
    # both zero), so name every one that fits.
    fits = [
        f"{formula}: {why}"
        for formula, matrix, why in mix_ups
        if formula != intended[0] and difference_report(value, matrix, "", "", rtol=0, atol=tol) is None
    ]
    if len(fits) == 1:
        return [f"{which} equals {fits[0]}."]
    if fits:
        return [f"{which} equals each of these, and none is what the name asks for:\n" + bullet_list(fits)]
    return [report]


@public_check
def check_composition(two_token_copy, one_token_copy, W_net1, W_net2, variant: Variant = DEFAULT_VARIANT):
    W_net1 = stage_array(W_net1, "W_net1", shape=(D_MODEL, D_MODEL), labels=("d_model", "d_model"))
    W_net2 = stage_array(W_net2, "W_net2", shape=(D_MODEL, D_MODEL), labels=("d_model", "d_model"))
    problems = []
    for which, value in (("two_token_copy", two_token_copy), ("one_token_copy", one_token_copy)):
        value = stage_array(value, which, shape=(D_MODEL, D_MODEL), labels=("d_model", "d_model"))
        problems += composition_problems(value, W_net1, W_net2, which, variant.layout)
    if problems:
        _fail("\n".join(problems))
    print(f"two_token_copy, one_token_copy: {PASSED}")


def _own_matrix(value, shape):
    """The student's own matrix as a float array, or None when it is missing or malformed (its
    own check explains why)."""
    try:
        return stage_array(value, "", shape=shape)
    except AssertionError:
        return None


def own_rank_problem(name: str, value: int, matrix: str, own, others: dict | None = None) -> str | None:
    """None when `value` is the rank of the student's own `matrix` (np.linalg.matrix_rank);
    otherwise what it is instead, in their terms (only their own values are used)."""
    rank = int(np.linalg.matrix_rank(own))
    if value == rank:
        return None
    fits = []
    if value == int(np.count_nonzero(np.linalg.svd(own, compute_uv=False))) and value > rank:
        fits.append(
            f"the number of singular values of your {matrix} that are not exactly 0, counting "
            "rounding noise as nonzero (count those above a tolerance, as np.linalg.matrix_rank does)"
        )
    same = [
        other for other, matrix_value in (others or {}).items() if int(np.linalg.matrix_rank(matrix_value)) == value
    ]
    if same:
        fits.append(f"the rank of your {' and your '.join(same)}, not of {matrix}")
    if len(fits) == 1:
        return f"{name} is {value}: that is {fits[0]}."
    if fits:
        return (
            f"{name} is {value}, and it could be any of these:\n"
            + bullet_list(fits)
            + (f"\nGive the rank of your {matrix} (np.linalg.matrix_rank).")
        )
    return (
        f"{name} is {value}, which is not the rank of your {matrix}; the rank is the number of "
        f"linearly independent columns (np.linalg.matrix_rank({matrix}))."
    )


@public_check
def check_ranks(
    rank_W_net1,
    rank_W_net2,
    rank_two_token_copy,
    rank_one_token_copy,
    W_net1=None,
    W_net2=None,
    two_token_copy=None,
    one_token_copy=None,
):
    """Each rank a whole number from 0 to 16 and, where your matrix is given and well formed,
    the rank of *your* matrix (follow-through: the ranks are marked on your own matrices)."""
    values = {
        "W_net1": (rank_W_net1, W_net1),
        "W_net2": (rank_W_net2, W_net2),
        "two_token_copy": (rank_two_token_copy, two_token_copy),
        "one_token_copy": (rank_one_token_copy, one_token_copy),
    }
    own = {
        matrix: m
        for matrix, (_, value) in values.items()
        if value is not None and (m := _own_matrix(value, (D_MODEL, D_MODEL))) is not None
    }
    problems = []
    for matrix, (value, _) in values.items():
        name = f"rank_{matrix}"
        rank = stage_whole_number(value, name)
        if not 0 <= rank <= D_MODEL:
            _fail(f"{name} is {rank}, but a {D_MODEL} x {D_MODEL} matrix has rank 0 to {D_MODEL}.")
        if matrix in own:
            others = {other: m for other, m in own.items() if other != matrix}
            problem = own_rank_problem(name, rank, matrix, own[matrix], others)
            if problem:
                problems.append(problem)
    if problems:
        _fail("\n".join(problems))
    print(f"ranks: {PASSED}")


# -- Exercise 1: the two-layer model with previous-token attention ------------------------------


def previous_token_pattern(n_ctx: int) -> np.ndarray:
    """A[dest, src] = 1 for src = dest - 1 (position 0, with nothing before it, attends to itself)."""
    A = np.eye(n_ctx, k=-1)
    A[0, 0] = 1.0
    return A


def run_two_heads(X0, W_V1, W_O1, W_V2, W_O2):
    """Residual streams after layer 1 and layer 2, both heads attending to the previous token."""
    X0 = np.asarray(X0, float)
    A = previous_token_pattern(X0.shape[1])
    X1 = X0 + W_O1 @ W_V1 @ X0 @ A.T  # x1_t = x0_t + W_O1 W_V1 x0_{t-1}
    X2 = X1 + W_O2 @ W_V2 @ X1 @ A.T  # x2_t = x1_t + W_O2 W_V2 x1_{t-1}
    return X1, X2


def example_stream(n_ctx: int = 6, layout: Layout = EXERCISE_PAGE_LAYOUT) -> np.ndarray:
    """A readable residual stream: content dim i of position t holds 10 t + i; the free dims are 0."""
    X0 = np.zeros((D_MODEL, n_ctx))
    content = list(layout.content)
    X0[content, :] = 10 * np.arange(n_ctx)[None, :] + np.array(content)[:, None]
    return X0


def trace_two_heads(
    W_V1, W_O1, W_V2, W_O2, n_ctx: int = 48, seed: int = 0, layout: Layout = EXERCISE_PAGE_LAYOUT
) -> np.ndarray:
    """Run the model on a random residual stream and measure where each input ends up.

    Returns coef with coef[d, k, j] = how much of content dim layout.content[j] of the token k
    positions back (k = 0, 1, 2) arrives in dim d of the final residual stream. Measured, not
    derived: the model is linear, so a least-squares fit over the positions recovers it exactly.
    """
    rng = np.random.default_rng(seed)
    content = list(layout.content)
    X0 = np.zeros((D_MODEL, n_ctx))
    X0[content] = rng.normal(size=(len(content), n_ctx))
    _, X2 = run_two_heads(X0, W_V1, W_O1, W_V2, W_O2)
    t = np.arange(2, n_ctx)
    features = np.concatenate([X0[content][:, t - k].T for k in range(3)], axis=1)  # (T, 3 x 8)
    solution, *_ = np.linalg.lstsq(features, X2[:, t].T, rcond=None)
    return solution.T.reshape(D_MODEL, 3, len(content))


def _terms_text(terms, layout: Layout) -> str:
    if not terms:
        return "nothing"
    return " + ".join(
        f"{'' if abs(g - 1) < 1e-9 else fmt(g) + ' x '}dim {layout.content[j]} of {WHEN[k]}" for k, j, g in terms
    )


def simulation_problems(
    coef, tol: float = tclib.RTOL, distances=("previous", "two_back"), layout: Layout = EXERCISE_PAGE_LAYOUT
) -> list[str]:
    """What is wrong with what arrives from the given token distances ("previous", "two_back").

    A problem belongs to every token distance it involves, so one wrong head 2 dim that mixes
    both can cost both.
    """
    by_distance = dict(zip(("previous", "two_back"), _simulation_findings(coef, tol, layout)))
    return [problem for distance in distances for problem in by_distance[distance]]


def _simulation_findings(coef, tol, layout: Layout):
    """(problems with what arrives from the previous token, problems with two tokens back)."""
    previous, two_back = [], []
    content = list(layout.content)

    def report(text, ks):
        if ks & {0, 1}:
            previous.append(text)
        if 2 in ks:
            two_back.append(text)

    terms = [
        [(k, j, float(coef[d, k, j])) for k in range(3) for j in range(len(content)) if abs(coef[d, k, j]) > tol]
        for d in range(D_MODEL)
    ]
    # the content dims and head 1's dims: one exact term each
    expected = {d: (0, j, f"the token's own dim {d}") for j, d in enumerate(content)}
    for r, w in zip(layout.head1_reads, layout.head1_writes):
        expected[w] = (1, content.index(r), f"dim {r} of the previous token (head 1's copy)")
    for d in sorted(expected):
        k0, j0, should = expected[d]
        got = terms[d]
        if len(got) == 1 and got[0][:2] == (k0, j0) and abs(got[0][2] - 1) <= tol:
            continue
        offending = {k for k, j, g in got if (k, j) != (k0, j0) or abs(g - 1) > tol}
        if not any((k, j) == (k0, j0) for k, j, _ in got):
            offending.add(k0)
        report(f"dim {d} holds {_terms_text(got, layout)}; it should hold exactly {should}", offending)
    copies_previous, copies_back = [], []
    mine = layout.head2_writes
    for d in mine:  # head 2's dims: one exact copy each, from 1 or 2 tokens back
        got = terms[d]
        if len(got) == 1 and abs(got[0][2] - 1) <= tol:
            k, j, _ = got[0]
            if k == 1 and content[j] in layout.other_content:
                copies_previous.append(content[j])
                continue
            if k == 2 and content[j] in layout.head1_reads:
                copies_back.append(content[j])
                continue
        if not got:
            continue  # an empty dim shows up in the counts below
        text = f"dim {d} holds {_terms_text(got, layout)}"
        if len(got) > 1:
            text += f"; each of {dims_text(mine)} should hold one copied dim"
        elif abs(got[0][2] - 1) > tol:
            text += "; a copy has gain 1"
        else:
            text += (
                f"; head 2 should copy content {dims_text(layout.other_content)} of the previous token, or one of "
                f"{dims_text(layout.head1_reads)} from two tokens back"
            )
        report(text, {k for k, _, _ in got})
    if len(set(copies_previous)) != len(copies_previous):
        previous.append(
            f"{dims_text(mine)} hold exact copies of content dims "
            f"{', '.join(str(j) for j in sorted(copies_previous))} of the previous token: "
            f"the same dim twice; three different ones of {dims_text(layout.other_content)} should be copied"
        )
    elif len(copies_previous) != 3:
        previous.append(
            f"{len(copies_previous)} of {dims_text(mine)} hold an exact copy of one of content "
            f"{dims_text(layout.other_content)} of the previous token (three different ones should)"
        )
    if len(copies_back) != 1:
        two_back.append(
            f"{len(copies_back)} of {dims_text(mine)} hold an exact copy of a dim from two tokens back (exactly one should)"
        )
    return previous, two_back


@public_check
def check_simulation(W_V1, W_O1, W_V2, W_O2, variant: Variant = DEFAULT_VARIANT):
    W_V1, W_O1 = _matrix_pair(W_V1, W_O1, 1)
    W_V2, W_O2 = _matrix_pair(W_V2, W_O2, 2)
    layout = variant.layout
    problems = simulation_problems(trace_two_heads(W_V1, W_O1, W_V2, W_O2, layout=layout), layout=layout)
    if problems:
        _fail(
            "In the two-layer model with previous-token attention (run on a random residual "
            "stream), at each position:\n" + bullet_list(problems, limit=8)
        )
    print(f"simulation: {PASSED}")


@public_check
def check_capacity(fraction_previous_token, fraction_two_tokens_back):
    a = stage_number(fraction_previous_token, "fraction_previous_token")
    b = stage_number(fraction_two_tokens_back, "fraction_two_tokens_back")
    for value, name in ((a, "fraction_previous_token"), (b, "fraction_two_tokens_back")):
        if not 0 <= value <= 1:
            _fail(
                f"{name} is {fmt(value)}; a fraction of the capacity lies between 0 and 1"
                + (" (is it a percentage?)" if 1 < value <= 100 else "")
                + "."
            )
    for value, name in ((a, "fraction_previous_token"), (b, "fraction_two_tokens_back")):
        dims = value * WRITTEN_DIMS
        if abs(dims - round(dims)) > tolerance(WRITTEN_DIMS):
            _fail(
                f"{name} is {fmt(value)}, which is {fmt(dims)} of the {WRITTEN_DIMS} dims the two "
                "heads write: a fraction of those dims counts whole dims, so it is a multiple "
                f"of 1/{WRITTEN_DIMS}."
            )
    if abs(a + b - 1) > tolerance():
        _fail(
            f"fraction_previous_token + fraction_two_tokens_back = {fmt(a + b)}; every dim the "
            "two heads write carries either the previous token or the token two back, so the "
            "fractions add up to 1."
        )
    print(f"fraction_previous_token, fraction_two_tokens_back: {PASSED}")
