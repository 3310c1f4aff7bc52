"""The toy model of the induction-heads assignment: its residual stream, a simulator, the checks.

Everything the notebook states about the setting is defined here, once:

* the residual stream (``D_MODEL = 32``): one-hot token content in ``TOK``, an additive
  sinusoidal positional code in ``POS`` (three (cos, sin) pairs with angular frequencies
  ``ALPHAS``), and ``FREE`` dimensions that only heads write to. Where these sit and the
  frequencies are *your variant* (``Variant``, drawn from your student id by ``my_variant``;
  ``DEFAULT_VARIANT`` is the exercise page's own set-up): every function that needs them takes
  the variant;
* the attention rule: causal mask, the scale of ``W_QK`` (and ``W_OV``) divided out, then
  inverse temperature ``BETA``;
* the sequences the heads are judged on: BOS, ``n`` distinct letters, the same ``n`` letters again.

The public checks (``check_ex2a`` ... ``check_ex3_ind_ov``) and the hidden grader use the same
``judge_*`` functions below; each returns a list of problems, empty when the behaviour is
right, each problem a message in terms of positions and tokens. Reading answers, formatting
and the tolerance rule come from ``tclib``, shared by every assignment of the course.
Conventions: column vectors; ``W_Q, W_K, W_V`` are ``D_HEAD x D_MODEL``, ``W_O`` is
``D_MODEL x D_HEAD``; ``W_QK = W_Q.T @ W_K``, ``W_OV = W_O @ W_V``; a sequence is ``X`` of
shape ``(D_MODEL, n_ctx)``; patterns are ``A[dest, src]``.
"""

from __future__ import annotations

import functools
import itertools
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
public_check, stage_array, tolerance, dims_text = (
    tclib.public_check,
    tclib.stage_array,
    tclib.tolerance,
    tclib.dims_text,
)


__all__ = [
    "VOCAB",
    "BOS",
    "N_VOCAB",
    "D_MODEL",
    "D_HEAD",
    "BETA",
    "MASS_THRESHOLD",
    "LOGIT_MARGIN",
    "MAX_HALF",
    "N_CTX_MAX",
    "Variant",
    "DEFAULT_VARIANT",
    "my_variant",
    "pair_rotation",
    "make_sequence",
    "draw_sequences",
    "EXAMPLE",
    "qk",
    "ov",
    "attention_pattern",
    "head_output",
    "composition_score",
    "composition_scores",
    "show_pattern",
    "show_ex2",
    "show_ex3",
    "check_ex2a",
    "check_ex2b",
    "check_ex2c",
    "check_ex2d",
    "check_ex2e",
    "check_ex2f",
    "check_ex3_prev",
    "check_ex3_ind_qk",
    "check_ex3_ind_ov",
]

# What the grader uses of this module (tested: the grader uses these names and no others).
# Judges return a list of problems, empty when the behaviour is right.
GRADER_API = (
    "VOCAB",
    "D_MODEL",
    "D_HEAD",
    "DEFAULT_VARIANT",
    "variant_for",
    "pair_rotation",
    "draw_sequences",
    "qk",
    "ov",
    "normalised",
    "attention_pattern",
    "composition_score",
    "composition_scores",
    "layer1_residual",
    "previous_position_targets",
    "previous_copy_targets",
    "judge_same_content",
    "judge_present",
    "judge_previous",
    "judge_previous_copy",
    "judge_writes_free",
    "judge_readable",
    "judge_induction",
    "judge_ablation",
    "judge_copies_attended_token",
    "judge_predictions",
    "judge_composition",
    "layer1_problems",
    "judged_after",
)

# --- what every variant shares --------------------------------------------------------------
VOCAB = ("BOS", "A", "B", "C", "D", "E", "F", "G", "H")
BOS = 0
N_VOCAB = len(VOCAB)
D_MODEL = 32
D_HEAD = 16
N_PAIRS = 3  # positional (cos, sin) pairs
MAX_HALF = 8  # at most 8 distinct letters before the repeat
N_CTX_MAX = 1 + 2 * MAX_HALF

# --- the attention rule and the grading thresholds ----------------------------------------
BETA = 100.0  # inverse temperature, applied after dividing W_QK by its largest singular value
MASS_THRESHOLD = 0.9  # a head "attends to" a position when it puts at least this much there
LOGIT_MARGIN = 0.05  # the predicted token must beat every other by this (normalised W_OV)


def pair_rotation(angles) -> np.ndarray:
    """6 x 6 block-diagonal matrix; block k is [[cos a, -sin a], [sin a, cos a]] with a = angles[k]."""
    R = np.zeros((2 * N_PAIRS, 2 * N_PAIRS))
    for k, angle in enumerate(np.broadcast_to(np.asarray(angles, dtype=float), (N_PAIRS,))):
        c, s = np.cos(angle), np.sin(angle)
        R[2 * k : 2 * k + 2, 2 * k : 2 * k + 2] = [[c, -s], [s, c]]
    return R


def kappa(periods, offsets) -> np.ndarray:
    """kappa(m) = p_t . p_{t+m} = sum_k cos(2 pi m / period_k) (every pair has magnitude 1)."""
    m = np.asarray(offsets, dtype=float)
    return sum(np.cos(2 * np.pi * m / period) for period in periods)


# --- your variant: where the residual stream keeps what, and the positional frequencies ---------
OFFSETS = np.arange(1, N_CTX_MAX)  # every offset between two positions of a sequence
MIN_SELF_GAP = 1.0  # kappa(0) - kappa(m) for every offset m: positions are told apart by this much
MAX_SPREAD = 3.2  # max - min of kappa over the offsets: (d)'s penalty r = 1/4 stays below a content match
PERIOD_RANGE = range(3, 13)  # 3+: the rotation by alpha tells one step ahead from one behind;
# at most 12: each pair alone repeats within a sequence, so it takes the pairs together


def keeps_the_maths(periods) -> bool:
    """Whether positional periods keep the exercise's maths with the margins of the exercise page.

    Distinct whole periods in PERIOD_RANGE; every offset 1..16 scores at least MIN_SELF_GAP
    below kappa(0) = 3 (so (b), (c), (e), (f) and the previous-token head separate positions by
    at least BETA * MIN_SELF_GAP before normalising); kappa varies by at most MAX_SPREAD over
    those offsets (so (d) with a penalty of 1/4 keeps a content match ahead by 1 - MAX_SPREAD / 4).
    """
    if len(set(periods)) != N_PAIRS or not all(period in PERIOD_RANGE for period in periods):
        return False
    values = kappa(periods, OFFSETS)
    return bool(N_PAIRS - values.max() >= MIN_SELF_GAP and values.max() - values.min() <= MAX_SPREAD)


# Every set of periods that keeps the maths (the exercise page's 4, 5, 10 among them).
PERIOD_CHOICES = tuple(periods for periods in itertools.combinations(PERIOD_RANGE, N_PAIRS) if keeps_the_maths(periods))


class Variant(NamedTuple):
    """Your setting of the model: which residual dims hold what, and the positional frequencies.

    Token j is the unit vector of dim ``tok[j]``; positional pair k is dims ``pos[2k]`` (cos)
    and ``pos[2k + 1]`` (sin) with angular frequency ``2 pi / periods[k]``; ``free`` is zero in
    every embedding. The arrays the notebook uses are the properties ``TOK``, ``POS``,
    ``FREE``, ``ALPHAS``, ``W_E``, ``W_U`` and the methods ``pos_pair``, ``positional_code``,
    ``embed``.
    """

    tok: tuple[int, ...]  # 9 dims
    pos: tuple[int, ...]  # 6 dims: 3 (cos, sin) pairs
    free: tuple[int, ...]  # the other 17 dims, ascending
    periods: tuple[int, ...]  # one whole period (in positions) per pair
    student_id: str | None = None  # None: the exercise page's own set-up

    @property
    def TOK(self) -> np.ndarray:
        """The token dims (an index array: W[:, TOK] are the columns that read token content)."""
        return np.array(self.tok)

    @property
    def POS(self) -> np.ndarray:
        """The positional dims, pair by pair (cos, sin)."""
        return np.array(self.pos)

    @property
    def FREE(self) -> np.ndarray:
        """The dims that are zero in every embedding (heads may write there)."""
        return np.array(self.free)

    @property
    def ALPHAS(self) -> np.ndarray:
        """The angular frequency of each pair, 2 pi / period."""
        return np.array([2 * np.pi / period for period in self.periods])

    @property
    def LAMBDAS(self) -> np.ndarray:
        """The magnitude of each pair (1 in every variant)."""
        return np.ones(N_PAIRS)

    @property
    def W_E(self) -> np.ndarray:
        """Token embedding (D_MODEL, N_VOCAB): column j embeds token j."""
        return _tables(self)[0].copy()

    @property
    def W_U(self) -> np.ndarray:
        """Unembedding: logits = W_U @ (what the head writes); W_U = W_E.T."""
        return _tables(self)[0].T.copy()

    def pos_pair(self, k: int) -> np.ndarray:
        """The two residual dims (cos, sin) of positional pair k."""
        return np.array(self.pos[2 * k : 2 * k + 2])

    def positional_code(self, n_ctx: int) -> np.ndarray:
        """(D_MODEL, n_ctx): column t is (cos alpha_k t, sin alpha_k t) in pair k, zero elsewhere."""
        if n_ctx <= N_CTX_MAX:
            return _tables(self)[1][:, :n_ctx].copy()
        return _positional_code(self, n_ctx)

    def embed(self, tokens) -> np.ndarray:
        """The residual stream X (D_MODEL, n_ctx) of a token sequence: token content + position."""
        tokens = [int(token) for token in tokens]
        W_E, P = _tables(self)
        n = len(tokens)
        return W_E[:, tokens] + (P[:, :n] if n <= N_CTX_MAX else _positional_code(self, n))

    def kappa_range(self) -> tuple[float, float]:
        """(min, max) of kappa(m) over the offsets 1..16 of a sequence (kappa(0) = 3)."""
        values = kappa(self.periods, OFFSETS)
        return float(values.min()), float(values.max())

    def table(self):
        """What the set-up cell shows (and records) of this variant."""
        pairs = "; ".join(
            f"pair {k}: dims {self.pos[2 * k]}, {self.pos[2 * k + 1]} (period {period})"
            for k, period in enumerate(self.periods)
        )
        alphas = ", ".join(f"2\u03c0/{period}" for period in self.periods)
        low, high = self.kappa_range()
        rows = (
            ("TOK (token j is e_TOK[j])", dims_text(self.tok)),
            ("POS (positional pairs: cos, sin)", pairs),
            ("FREE (zero in every embedding)", dims_text(self.free)),
            ("ALPHAS (angular frequencies)", alphas),
            (
                f"\u03ba(m) for offsets 1 \u2264 |m| \u2264 {N_CTX_MAX - 1}",
                f"between {low:.2f} and {high:.2f} (\u03ba(0) = 3)",
            ),
        )
        return tclib.VariantTable("induction_heads", self.student_id, rows, residual_stream_svg(self))

    def _repr_mimebundle_(self, include=None, exclude=None):
        return self.table()._repr_mimebundle_(include, exclude)

    def __str__(self) -> str:
        return str(self.table())


DEFAULT_VARIANT = Variant(tuple(range(0, 9)), tuple(range(9, 15)), tuple(range(15, 32)), (4, 5, 10))


def _positional_code(variant: Variant, n_ctx: int) -> np.ndarray:
    t = np.arange(n_ctx)
    P = np.zeros((D_MODEL, n_ctx))
    for k, alpha in enumerate(variant.ALPHAS):
        P[variant.pos_pair(k), :] = np.stack([np.cos(alpha * t), np.sin(alpha * t)])
    return P


@functools.lru_cache(maxsize=256)
def _tables(variant: Variant) -> tuple[np.ndarray, np.ndarray]:
    """(W_E, positional code of N_CTX_MAX positions), computed once per variant (read-only):
    the checks embed many short sequences."""
    W_E = np.zeros((D_MODEL, N_VOCAB))
    W_E[list(variant.tok), np.arange(N_VOCAB)] = 1.0
    P = _positional_code(variant, N_CTX_MAX)
    W_E.setflags(write=False)
    P.setflags(write=False)
    return W_E, P


def variant_for(student_id: str | None, salt: str = "") -> Variant:
    """The variant drawn for `student_id` (the exercise page's own set-up for None).

    The 32 dims are shuffled: 9 of them (ascending) hold the token content, 6 (ascending, pair
    by pair) the positional code, the other 17 are free; the periods are one of PERIOD_CHOICES
    in a drawn order. Every variant keeps the exercise's maths (keeps_the_maths): a permutation
    of the residual dims changes no margin.
    """
    rng = tclib.variant_rng("induction_heads", student_id, salt)
    if rng is None:
        return DEFAULT_VARIANT
    dims = [int(d) for d in rng.permutation(D_MODEL)]
    n_pos = 2 * N_PAIRS
    tok = tuple(sorted(dims[:N_VOCAB]))
    pos = tuple(sorted(dims[N_VOCAB : N_VOCAB + n_pos]))
    free = tuple(sorted(dims[N_VOCAB + n_pos :]))
    periods = PERIOD_CHOICES[int(rng.integers(len(PERIOD_CHOICES)))]
    periods = tuple(int(periods[k]) for k in rng.permutation(N_PAIRS))
    return Variant(tok, pos, free, periods, student_id)


def my_variant(per_student: bool = False, salt: str = "", student_id: str | None = None) -> Variant:
    """Your variant, as the set-up cell draws it. The course sets `per_student` and `salt`
    (nbgrader writes them into the set-up cell); the student id is found as nbgrader finds it
    (tclib.find_student_id: set $AUTOGRADER_STUDENT_ID where your id is not your login)."""
    if not per_student:
        return DEFAULT_VARIANT
    return variant_for(student_id or tclib.find_student_id(), salt)


_ROLE_COLOURS = {"TOK": "#4e79a7", "POS": "#f28e2b", "FREE": "#bab0ac"}


def residual_stream_svg(variant: Variant) -> str:
    """A labelled strip of the 32 residual dims, coloured by what the embedding puts there."""
    cell, top = 26, 34
    boxes = []
    for d in range(D_MODEL):
        if d in variant.tok:
            role, label = "TOK", VOCAB[variant.tok.index(d)]
        elif d in variant.pos:
            k, which = divmod(variant.pos.index(d), 2)
            role, label = "POS", f"{'cs'[which]}{k}"
        else:
            role, label = "FREE", ""
        x = 4 + d * cell
        boxes.append(
            f'<rect x="{x}" y="{top}" width="{cell - 2}" height="{cell - 2}" fill="{_ROLE_COLOURS[role]}"/>'
            f'<text x="{x + cell / 2 - 1}" y="{top + 16}" font-size="11" text-anchor="middle" fill="#fff" '
            f'font-family="sans-serif">{d}</text>'
            f'<text x="{x + cell / 2 - 1}" y="{top + cell + 12}" font-size="10" text-anchor="middle" '
            f'fill="#222" font-family="sans-serif">{label}</text>'
        )
    legend = [
        ("TOK", "TOK: token content (letter below)"),
        ("POS", "POS: pair k, cos (c) or sin (s)"),
        ("FREE", "FREE: heads write here"),
    ]
    keys, x = [], 4
    for role, words in legend:
        keys.append(
            f'<rect x="{x}" y="6" width="12" height="12" fill="{_ROLE_COLOURS[role]}"/>'
            f'<text x="{x + 16}" y="16" font-size="11" font-family="sans-serif" fill="#222">{words}</text>'
        )
        x += 24 + 6 * len(words)
    width = max(8 + D_MODEL * cell, x)
    height = top + cell + 20
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="residual stream layout">'
        f"<title>Residual dims 0-{D_MODEL - 1}: what the embedding puts where</title>"
        + "".join(keys + boxes)
        + "</svg>"
    )


# --- sequences -------------------------------------------------------------------------------
def make_sequence(letters) -> list[int]:
    """BOS, the letters, the letters again: 'CAF' -> [0, 3, 1, 6, 3, 1, 6]."""
    ids = [VOCAB.index(letter) if isinstance(letter, str) else int(letter) for letter in letters]
    return [BOS, *ids, *ids]


def draw_sequences(rng: np.random.Generator, count: int) -> list[list[int]]:
    """`count` random sequences; their half-lengths cycle through 8, 3, 4, ..., 7 (all lengths early)."""
    lengths = [MAX_HALF] + list(range(3, MAX_HALF))
    sequences = []
    for i in range(count):
        n = lengths[i % len(lengths)]
        letters = rng.choice(np.arange(1, N_VOCAB), size=n, replace=False)
        sequences.append(make_sequence(letters))
    return sequences


EXAMPLE = make_sequence("DACHFB")  # the sequence the notebook plots


# --- the simulator -------------------------------------------------------------------------
def qk(W_Q, W_K) -> np.ndarray:
    return np.asarray(W_Q, dtype=float).T @ np.asarray(W_K, dtype=float)


def ov(W_V, W_O) -> np.ndarray:
    return np.asarray(W_O, dtype=float) @ np.asarray(W_V, dtype=float)


def normalised(W: np.ndarray) -> np.ndarray | None:
    """W divided by its largest singular value (None for the zero matrix): only its shape counts."""
    top = np.linalg.norm(W, 2)
    if not np.isfinite(top) or top <= 1e-300:
        return None
    return W / top


def scores(W_QK: np.ndarray, X: np.ndarray) -> np.ndarray:
    """Normalised scores S[dest, src] = x_dest . (W_QK / sigma_max) x_src (before BETA and the mask)."""
    W = normalised(W_QK)
    return _scores(W, X)


def attention_pattern(W_QK: np.ndarray, X: np.ndarray, beta: float = BETA) -> np.ndarray:
    """A[dest, src] = causal softmax over src of beta * normalised score."""
    return _softmax_causal(beta * scores(W_QK, X))


def head_output(W_OV: np.ndarray, A: np.ndarray, X: np.ndarray) -> np.ndarray:
    """What the head writes: column t is sum_s A[t, s] (W_OV / sigma_max) x_s."""
    return _write(normalised(W_OV), A, X)


# The same three steps for matrices already divided by sigma_max (the checks normalise once).
def _scores(W: np.ndarray | None, X: np.ndarray) -> np.ndarray:
    if W is None:
        return np.zeros((X.shape[1], X.shape[1]))
    return X.T @ W @ X


def _softmax_causal(S: np.ndarray) -> np.ndarray:
    n = S.shape[0]
    S = np.where(np.tri(n, dtype=bool), S, -np.inf)
    A = np.exp(S - S.max(axis=1, keepdims=True))
    return A / A.sum(axis=1, keepdims=True)


def _write(W: np.ndarray | None, A: np.ndarray, X: np.ndarray) -> np.ndarray:
    if W is None:
        return np.zeros_like(X)
    return W @ X @ A.T


def composition_score(reader: np.ndarray, W_OV1: np.ndarray) -> float:
    """||reader @ W_OV1||_F / (||reader||_F ||W_OV1||_F): how much of what head 1 writes the
    matrix `reader` of a later head reads (0 = none of it, at most 1)."""
    reader, W_OV1 = np.asarray(reader, dtype=float), np.asarray(W_OV1, dtype=float)
    denominator = np.linalg.norm(reader) * np.linalg.norm(W_OV1)
    return float(np.linalg.norm(reader @ W_OV1) / denominator) if denominator > 0 else 0.0


def composition_scores(W_QK2, W_OV1, W_OV2=None) -> dict[str, float]:
    """Q-, K- (and V-) composition of a layer-2 head with a layer-1 head (framework paper).

    Q: ||W_QK2^T W_OV1||_F / (||W_QK2||_F ||W_OV1||_F)   (the query side reads head 1's output)
    K: ||W_QK2   W_OV1||_F / (||W_QK2||_F ||W_OV1||_F)   (the key side reads it)
    V: ||W_OV2   W_OV1||_F / (||W_OV2||_F ||W_OV1||_F)   (the value side reads it)
    """
    W_QK2 = np.asarray(W_QK2, dtype=float)
    result = {"Q": composition_score(W_QK2.T, W_OV1), "K": composition_score(W_QK2, W_OV1)}
    if W_OV2 is not None:
        result["V"] = composition_score(W_OV2, W_OV1)
    return result


# --- where each head should look ----------------------------------------------------------
def half_length(tokens) -> int:
    return (len(tokens) - 1) // 2


def previous_position_targets(tokens) -> dict[int, int]:
    return {t: t - 1 for t in range(1, len(tokens))}


def present_targets(tokens) -> dict[int, int]:
    return {t: t for t in range(len(tokens))}


def previous_copy_targets(tokens) -> dict[int, int]:
    """Second-half positions -> their token's first copy (the first half has no earlier copy)."""
    n = half_length(tokens)
    return {t: t - n for t in range(n + 1, 2 * n + 1)}


def induction_targets(tokens) -> dict[int, int]:
    """Second-half positions -> the position right after their token's first copy."""
    n = half_length(tokens)
    return {t: t - n + 1 for t in range(n + 1, 2 * n + 1)}


def ideal_pattern(n_ctx: int, targets: dict[int, int], default: int = BOS) -> np.ndarray:
    """Hard attention on `targets`; positions without a target look at `default` (BOS)."""
    A = np.zeros((n_ctx, n_ctx))
    for t in range(n_ctx):
        A[t, targets.get(t, min(default, t))] = 1.0
    return A


def layer1_residual(W_OV1, tokens, targets, variant: Variant = DEFAULT_VARIANT) -> np.ndarray:
    """X + what a layer-1 head with this W_OV writes when it attends exactly to `targets`.

    The checks of the layer-2 heads use this idealised layer-1 pattern, so a mistake in where
    the layer-1 head looks costs only the points of the part that asks for that pattern.
    """
    return _layer1(normalised(W_OV1), tokens, targets, variant)


def _layer1(W1: np.ndarray | None, tokens, targets, variant: Variant) -> np.ndarray:
    X = variant.embed(tokens)
    return X + _write(W1, ideal_pattern(len(tokens), targets), X)


# --- describing what went wrong ------------------------------------------------------------
def render(tokens) -> str:
    return " ".join(VOCAB[int(token)] for token in tokens)


def describe(tokens, s: int, dest: int | None = None) -> str:
    """'position 4 (token 'C', first copy)'; 'position 0 (BOS)'; 'position 9 (itself)'."""
    if dest is not None and s == dest:
        return f"position {s} (itself)"
    if s == 0:
        return "position 0 (BOS)"
    n = half_length(tokens)
    which = "first copy" if s <= n else "second copy"
    return f"position {s} (token '{VOCAB[int(tokens[s])]}', {which})"


def _context(name: str, tokens) -> str:
    return f"{name} on the sequence {render(tokens)} (positions 0 to {len(tokens) - 1}):"


def _others(failures: list[int], judged: int) -> str:
    if len(failures) <= 1:
        return ""
    shown = ", ".join(str(t) for t in failures[1:8]) + (", ..." if len(failures) > 8 else "")
    return (
        f" The same goes wrong at {len(failures) - 1} more of the {judged} positions judged here (positions {shown})."
    )


def judge_targets(A, S, tokens, targets, name: str, target_words: str, hints=None) -> list[str]:
    """No problem if at every judged position the argmax is the target and holds >= MASS_THRESHOLD.

    `S`: normalised scores (to tell a tie or a too-small gap from a wrong winner);
    `hints(tokens, t, target, rival, tie, tied)` may add a sentence about a recognisable mistake (it must not
    reveal anything hidden).
    """
    failures = [t for t, target in targets.items() if int(np.argmax(A[t])) != target or A[t, target] < MASS_THRESHOLD]
    if not failures:
        return []
    t = failures[0]
    target = targets[t]
    rivals = [s for s in range(t + 1) if s != target]
    rival = max(rivals, key=lambda s: (S[t, s], -s))  # the best-scoring other position
    gap = S[t, target] - S[t, rival]
    where = (
        f"{_context(name, tokens)} at {describe(tokens, t)} the head should attend to "
        f"{target_words}, {describe(tokens, target, t)}, but"
    )
    if gap < -1e-9:
        message = (
            f"{where} it puts {A[t, rival]:.2f} of its attention on {describe(tokens, rival, t)} "
            f"and only {A[t, target]:.2f} on position {target}."
        )
    elif gap <= 1e-9:
        tied = [s for s in range(t + 1) if s != target and abs(S[t, s] - S[t, target]) <= 1e-9]
        names = [describe(tokens, s, t) for s in tied]
        them = "that position scores" if len(tied) == 1 else "those positions score"
        shares = ", ".join(f"{A[t, s]:.2f}" for s in [target, *tied])
        message = (
            f"{where} it cannot tell it from {' or '.join(names) if len(names) < 3 else ', '.join(names[:-1]) + ' or ' + names[-1]}: "
            f"{them} exactly as high, so they share the attention ({shares})."
        )
    else:
        message = (
            f"{where} it puts only {A[t, target]:.2f} of its attention there (at least "
            f"{MASS_THRESHOLD:.2f} is needed). The right position wins, but its score beats "
            f"{describe(tokens, rival, t)} by only {gap:.3f} (scores measured with W_QK divided by "
            f"its largest singular value), so at BETA = {BETA:g} the attention is not nearly hard: "
            "make the part of W_QK that draws this distinction larger relative to the rest."
        )
    message += _others(failures, len(targets))
    if hints is not None and gap <= 1e-9:
        tie = abs(gap) <= 1e-9
        tied = [s for s in range(t + 1) if s != target and abs(S[t, s] - S[t, target]) <= 1e-9] if tie else []
        extra = hints(tokens, t, target, rival, tie, tied)
        if extra:
            message += " " + extra
    return [message]


def _pattern_of(W: np.ndarray, X: np.ndarray):
    """Pattern and normalised scores for an already normalised W_QK."""
    S = _scores(W, X)
    return _softmax_causal(BETA * S), S


def _zero_message(what: str) -> str:
    return f"{what} is the zero matrix, so the head attends uniformly and cannot pick out any position."


# -- what a student's matrices leave out (said in their tokens, never guessed) ----------------


def _some(indices, total: int) -> list[int]:
    """`indices` when they are some but not all of `total` values, else none: a matrix that does
    nothing with every token reads or writes something else (a different mistake), one that does
    nothing with some tokens leaves those out."""
    indices = [int(i) for i in indices]
    return indices if 0 < len(indices) < total else []


def _nothing(vectors: np.ndarray) -> np.ndarray:
    """Which columns of a normalised matrix's image are nothing (by the tolerance rule, scale 1)."""
    return np.abs(vectors).max(axis=0, initial=0.0) <= tolerance()


def _tokens_text(indices) -> str:
    names = [f"'{VOCAB[j]}'" for j in indices]
    return ("token " if len(names) == 1 else "tokens ") + ", ".join(names)


def tokens_written_as_nothing(W: np.ndarray, variant: Variant = DEFAULT_VARIANT) -> list[int]:
    """Tokens j a normalised map sends to nothing (W e_j = 0): a head that writes nothing when it
    reads them, or a key reading them that no query matches (some tokens only: see `_some`)."""
    return _some(np.flatnonzero(_nothing(W @ _tables(variant)[0])), N_VOCAB)


def tokens_queried_as_nothing(W_QK: np.ndarray, variant: Variant = DEFAULT_VARIANT) -> list[int]:
    """Tokens j whose query reads nothing through a normalised W_QK (e_j^T W_QK = 0)."""
    return tokens_written_as_nothing(W_QK.T, variant)


def tokens_without_content_match(W_QK: np.ndarray, variant: Variant = DEFAULT_VARIANT) -> list[int]:
    """Tokens j that a query holding j does not match in a key holding j (e_j^T W_QK e_j = 0)."""
    W_E = _tables(variant)[0]
    match = np.einsum("dj,de,ej->j", W_E, W_QK, W_E)
    return _some(np.flatnonzero(np.abs(match) <= tolerance()), N_VOCAB)


def _content_left_out(W_QK: np.ndarray | None, token: int, variant: Variant) -> str | None:
    """The sentence for a query token the content match leaves out, or None when it has one."""
    if W_QK is None:
        return None
    missing = tokens_without_content_match(W_QK, variant)
    if token not in missing:
        return None
    return (
        f"Your W_QK gives '{VOCAB[token]}' no content match: a query holding '{VOCAB[token]}' "
        f"scores a key holding '{VOCAB[token]}' 0, nothing more than any other key. It leaves out "
        f"{_tokens_text(missing)}: every token needs its match."
    )


def judge_same_content(W_QK, sequences, name="head (a)", variant: Variant = DEFAULT_VARIANT) -> list[str]:
    """Part (a): at every position, >= MASS_THRESHOLD on positions holding the same token, and a
    fair share (at least half of 1/k) on each of the k such positions: content alone cannot
    tell the copies apart."""
    W = normalised(W_QK)
    if W is None:
        return [_zero_message("W_QK")]
    for tokens in sequences:
        A, _ = _pattern_of(W, variant.embed(tokens))
        for t in range(len(tokens)):
            same = [s for s in range(t + 1) if tokens[s] == tokens[t]]
            mass = A[t, same].sum()
            token = VOCAB[tokens[t]]
            if mass < MASS_THRESHOLD:
                top = int(np.argmax(A[t]))
                left_out = _content_left_out(W, tokens[t], variant)
                return [
                    f"{_context(name, tokens)} at {describe(tokens, t)} the head puts only {mass:.2f} "
                    f"of its attention on positions holding '{token}' (positions "
                    f"{', '.join(map(str, same))}); the largest share, {A[t, top]:.2f}, goes to "
                    f"{describe(tokens, top, t)}. It should put at least {MASS_THRESHOLD:.2f} on "
                    f"positions with the same token." + (f" {left_out}" if left_out else "")
                ]
            fair = 0.5 / len(same)
            starved = [s for s in same if A[t, s] < fair]
            if starved:
                s = starved[0]
                shares = ", ".join(f"{A[t, u]:.2f} on {describe(tokens, u, t)}" for u in same)
                return [
                    f"{_context(name, tokens)} at {describe(tokens, t)} the head puts {shares}. "
                    f"A head that attends by content alone cannot tell the copies of '{token}' apart, "
                    f"so each should get a fair share (at least {fair:.2f} here); {describe(tokens, s, t)} "
                    "is nearly ignored, so this head also looks at position."
                ]
    return []


def _basic_periods(periods) -> list[int]:
    """The periods that are no multiple of another one (4 and 5 of 4, 5, 10): offsets that differ
    by a multiple of any period differ by a multiple of one of these."""
    return sorted(p for p in set(periods) if not any(q != p and p % q == 0 for q in periods))


def _hint_previous(tokens, t, target, top, tie, tied=(), variant: Variant = DEFAULT_VARIANT):
    if top == t and not tie:
        return (
            "A head that should look one step back but lands on itself is usually rotating the "
            "wrong way (or has W_Q and W_K swapped): it looks one step ahead, the causal mask "
            "hides the future, and the nearest allowed position is itself."
        )
    lag = t - top
    basic = _basic_periods(variant.periods)
    if lag > 1 and any((lag - 1) % period == 0 for period in basic):
        first, others = basic[0], "".join(f" (or {period})" for period in basic[1:])
        return (
            f"Offsets that differ by {first}{others} look alike to the pair of period {first}{others} alone: "
            "it takes the pairs together to single out one offset."
        )
    return None


def judge_present(W_QK, sequences, name="head (b)", variant: Variant = DEFAULT_VARIANT) -> list[str]:
    W = normalised(W_QK)
    if W is None:
        return [_zero_message("W_QK")]
    for tokens in sequences:
        A, S = _pattern_of(W, variant.embed(tokens))
        message = judge_targets(A, S, tokens, present_targets(tokens), name, "the present position")
        if message:
            return message
    return []


def judge_previous(W_QK, sequences, name="head (c)", variant: Variant = DEFAULT_VARIANT) -> list[str]:
    W = normalised(W_QK)
    if W is None:
        return [_zero_message("W_QK")]
    for tokens in sequences:
        A, S = _pattern_of(W, variant.embed(tokens))
        message = judge_targets(
            A,
            S,
            tokens,
            previous_position_targets(tokens),
            name,
            "the previous position",
            functools.partial(_hint_previous, variant=variant),
        )
        if message:
            return message
    return []


def _hint_not_self(tokens, t, target, top, tie, tied=(), W=None, variant: Variant = DEFAULT_VARIANT):
    left_out = _content_left_out(W, tokens[t], variant)
    if left_out:  # no content match for this token: the penalty's effect on others is not the cause
        return left_out
    if top == t:
        return (
            "Content alone scores a position's own token exactly like its earlier copy; "
            "something must lower the score of the present position."
        )
    if tokens[top] != tokens[t] and not tie:
        return (
            "The head prefers a position with a different token: whatever lowers the score "
            "of the present position also moves the scores of other positions, by more than "
            "the content match adds."
        )
    return None


def judge_previous_copy(W_QK, sequences, name="head (d)", variant: Variant = DEFAULT_VARIANT) -> list[str]:
    W = normalised(W_QK)
    if W is None:
        return [_zero_message("W_QK")]
    for tokens in sequences:
        A, S = _pattern_of(W, variant.embed(tokens))
        message = judge_targets(
            A,
            S,
            tokens,
            previous_copy_targets(tokens),
            name,
            "the earlier copy of the same token",
            functools.partial(_hint_not_self, W=W, variant=variant),
        )
        if message:
            return message
    return []


def judge_writes_free(W_OV, name: str, variant: Variant = DEFAULT_VARIANT) -> list[str]:
    """The head may write only into FREE: writing into TOK or POS would change the destination's
    own token or position as later heads see them."""
    W = normalised(W_OV)
    if W is None:
        return [f"{name} is the zero matrix: the head writes nothing."]
    for label, rows in (("token", variant.tok), ("positional", variant.pos)):
        block = W[list(rows), :]
        if np.abs(block).max() > tolerance():  # W is normalised: the rule's scale is 1
            i, j = np.unravel_index(np.argmax(np.abs(block)), block.shape)
            return [
                f"{name} writes into the {label} subspace ({dims_text(rows)}): for "
                f"example it maps residual dim {j} into dim {rows[i]} with weight "
                f"{block[i, j]:.2f} (after dividing {name} by its largest singular value). That "
                f"would change the destination's own {label} code as later heads see it; write "
                f"only into the free {dims_text(variant.free)}."
            ]
    return []


def judge_readable(W_OV, name: str, what: str, variant: Variant = DEFAULT_VARIANT) -> list[str]:
    """What the head writes, reading any token at any position, must identify `what`
    ('position' or 'token') of the position it reads: it must be nearer (by LOGIT_MARGIN, in
    squared distance) to the head's own code for that value than to its code for any other."""
    W = normalised(W_OV)
    if W is None:
        return [f"{name} is the zero matrix: the head writes nothing."]
    W_E, P = _tables(variant)
    by_token, by_position = W @ W_E, W @ P  # what the head writes for each part of x_s
    codes = by_position if what == "position" else by_token  # column v: its code for value v
    label = (lambda v: f"position {v}") if what == "position" else (lambda v: f"token '{VOCAB[v]}'")
    for j in range(N_VOCAB):
        written = by_token[:, j : j + 1] + by_position  # column s: reading token j at position s
        distances = ((written[:, :, None] - codes[:, None, :]) ** 2).sum(axis=0)  # [s, value]
        for s in range(N_CTX_MAX):
            truth = s if what == "position" else j
            rivals = np.delete(distances[s], truth)
            other = int(np.argmin(rivals))
            other += other >= truth
            if distances[s, other] - distances[s, truth] < LOGIT_MARGIN:
                blank = _some(np.flatnonzero(_nothing(codes)), codes.shape[1])
                if truth in blank:  # the head writes nothing for it: both distances say only that
                    left = _tokens_text(blank) if what == "token" else "positions " + ", ".join(map(str, blank))
                    return [
                        f"{name} writes nothing when the head reads {label(truth)} (it maps it to "
                        f"zero), so a later head cannot tell {label(truth)} from {label(other)}. It "
                        f"leaves out {left}: write the {what} of every position the head reads."
                    ]
                closer = "closer to" if distances[s, other] < distances[s, truth] else "about as close to"
                return [
                    f"{name}: reading token '{VOCAB[j]}' at position {s}, the head writes a vector "
                    f"that is {closer} what it writes for {label(other)} as for {label(truth)} "
                    f"(squared distances {distances[s, other]:.3f} and {distances[s, truth]:.3f}, with "
                    f"{name} divided by its largest singular value), so a later head cannot tell "
                    f"which {what} was read. Write the {what} of the position the head reads, in a "
                    f"way that does not depend on the {'token' if what == 'position' else 'position'} there."
                ]
    return []


def judge_induction(
    W_QK2, W_OV1, layer1_targets, sequences, name: str, variant: Variant = DEFAULT_VARIANT
) -> list[str]:
    """Layer-2 head on the residual stream after an (idealised) layer-1 head: second-half
    positions must attend to the position after their token's first copy."""
    W2, W1 = normalised(W_QK2), normalised(W_OV1)
    if W2 is None:
        return [_zero_message("W_QK")]
    for tokens in sequences:
        A, S = _pattern_of(W2, _layer1(W1, tokens, layer1_targets(tokens), variant))
        message = judge_targets(
            A,
            S,
            tokens,
            induction_targets(tokens),
            name,
            "the position after the first copy of its token",
            functools.partial(_hint_induction, W2=W2, W1=W1, variant=variant),
        )
        if message:
            return message
    return []


def _hint_induction(tokens, t, target, top, tie, tied=(), W2=None, W1=None, variant: Variant = DEFAULT_VARIANT):
    """A sentence about a recognisable mistake, from where the scores tie or win (never a guess:
    a tie names only what every tied position has in common; a token left out is said as such)."""
    n = half_length(tokens)
    same_token = [s for s in range(t + 1) if tokens[s] == tokens[t]]  # the earlier copy and itself
    if W2 is not None and tokens[t] in (queried := tokens_queried_as_nothing(W2, variant)):
        return (
            f"A query holding '{VOCAB[tokens[t]]}' reads nothing through your W_QK, so every key "
            f"scores the same for it. Your W_QK's query leaves out {_tokens_text(queried)}: "
            "every token needs its query."
        )
    if W1 is not None and tokens[t] in (unwritten := tokens_written_as_nothing(W1, variant)):
        return (
            f"The previous-token head writes nothing when it reads '{VOCAB[tokens[t]]}', so no key "
            f"shows that its previous token was '{VOCAB[tokens[t]]}'. That head leaves out "
            f"{_tokens_text(unwritten)}."
        )
    if W2 is not None and W1 is not None and tokens[t] in (keyed := tokens_written_as_nothing(W2 @ W1, variant)):
        return (
            f"No query matches a key whose previous token is '{VOCAB[tokens[t]]}' (through what "
            "the previous-token head wrote there, your W_QK reads nothing of it). Your W_QK's key "
            f"leaves out {_tokens_text(keyed)} as previous tokens: every token needs its key."
        )
    if W2 is not None:  # the shared-content rule needs a content match to be there
        embedding = _tables(variant)[0][:, tokens[t]]
        content = abs(float(embedding @ W2 @ embedding)) > tolerance()
    else:
        content = True
    if tie and set(same_token) <= set(tied) and content:
        return (
            "Every position holding the present token (positions "
            f"{', '.join(map(str, same_token))}) scores as high as the target: part of W_QK "
            "matches the query's token against the key's own token, which every copy of the "
            "present token matches. Only the part that singles out the position after the "
            "earlier copy should decide."
        )
    if not tie and top == t - n:
        return (
            "It finds the earlier copy of its own token but not the position after it: "
            "shift by one step somewhere on the way."
        )
    if not tie and top == t - n - 1:
        return "It lands one step before the earlier copy: the shift goes the wrong way."
    return None


def induction_attention_mass(W_QK2, W_OV1, layer1_targets, sequences, variant: Variant = DEFAULT_VARIANT) -> float:
    """Mean attention the layer-2 head puts on its induction target (second-half positions)."""
    W2, W1 = normalised(W_QK2), normalised(W_OV1)
    masses = []
    for tokens in sequences:
        A, _ = _pattern_of(W2, _layer1(W1, tokens, layer1_targets(tokens), variant))
        masses += [A[t, s] for t, s in induction_targets(tokens).items()]
    return float(np.mean(masses))


def judge_ablation(W_QK2, W_OV1, layer1_targets, sequences, name: str, variant: Variant = DEFAULT_VARIANT) -> list[str]:
    """Zeroing the layer-1 head's output must destroy the induction pattern (mean mass < 0.5)."""
    if normalised(W_QK2) is None:
        return [_zero_message("W_QK")]
    with_head = induction_attention_mass(W_QK2, W_OV1, layer1_targets, sequences, variant)
    ablated = induction_attention_mass(W_QK2, np.zeros((D_MODEL, D_MODEL)), layer1_targets, sequences, variant)
    if ablated >= 0.5:
        return [
            f"With the layer-1 head's output set to zero, {name} still puts on average {ablated:.2f} "
            f"of its attention on the position after the first copy of its token (with the layer-1 "
            f"head: {with_head:.2f}). An induction head has to learn from layer 1 where the earlier "
            "copy is; this one does not depend on it."
        ]
    return []


# How each layer-2 head must compose with its layer-1 head: (the score that must lead, the other,
# what the head is called, what its layer-1 head is, why).
_COMPOSITION = {
    "f": (
        "Q",
        "K",
        "head (f)",
        "the layer-1 head (pattern (d), W_OV = W_O_e @ W_V_e)",
        "In the pointer-arithmetic induction head the query reads what layer 1 wrote (the position "
        "of the earlier copy)",
    ),
    "ind": (
        "K",
        "Q",
        "the induction head",
        "the previous-token head (W_OV = W_O_prev @ W_V_prev)",
        "In this induction head the key reads what the previous-token head wrote",
    ),
}


def judge_composition(W_QK2, W_OV1, head: str) -> list[str]:
    """The composition the part asks for (`head`: "f" Q-composition, "ind" K-composition): at
    least 0.10 and larger than the other kind. Measured on the student's own matrices."""
    leads, other, name, layer1, why = _COMPOSITION[head]
    scores = composition_scores(W_QK2, W_OV1)
    if scores[leads] >= 0.1 and scores[leads] > scores[other]:
        return []
    return [
        f"Composition of {name} with {layer1}: {leads}-composition {scores[leads]:.2f}, "
        f"{other}-composition {scores[other]:.2f}. {why}, so {leads}-composition should be clearly "
        f"nonzero (at least 0.10) and larger than {other}-composition."
    ]


def judge_copies_attended_token(W_OV, name: str, variant: Variant = DEFAULT_VARIANT) -> list[str]:
    """Reading letter j, the head's logits W_U (W_OV / sigma_max) e_j must favour j by LOGIT_MARGIN."""
    W = normalised(W_OV)
    if W is None:
        return [f"{name} is the zero matrix: the head writes nothing."]
    W_E = _tables(variant)[0]
    for j in range(1, N_VOCAB):
        logits = W_E.T @ W @ W_E[:, j]
        best = int(np.argmax(np.delete(logits, j)))
        best += best >= j
        if logits[j] - logits[best] < LOGIT_MARGIN:
            blank = tokens_written_as_nothing(W, variant)
            if j in blank:
                return [
                    f"{name}: when the head attends to a position holding '{VOCAB[j]}', it writes "
                    f"nothing ({name} maps '{VOCAB[j]}' to zero), so no logit goes up. It leaves "
                    f"out {_tokens_text(blank)}: the head must copy every token it attends to."
                ]
            return [
                f"{name}: when the head attends to a position holding '{VOCAB[j]}', its output gives "
                f"'{VOCAB[j]}' a logit of {logits[j]:.2f} and '{VOCAB[best]}' {logits[best]:.2f} "
                f"(W_U = W_E.T, {name} divided by its largest singular value). To predict the token it "
                f"attends to, the head must raise that token's logit above every other by at least "
                f"{LOGIT_MARGIN:g}."
            ]
    return []


def judge_predictions(
    W_OV2, W_OV1, layer1_targets, sequences, name: str, variant: Variant = DEFAULT_VARIANT
) -> list[str]:
    """With the layer-2 head attending exactly to the position after the first copy, on the
    residual stream your layer-1 head produces, its logits must predict the next token."""
    W2, W1 = normalised(W_OV2), normalised(W_OV1)
    if W2 is None:
        return [f"{name} is the zero matrix: the head writes nothing."]
    W_U = _tables(variant)[0].T
    for tokens in sequences:
        X1 = _layer1(W1, tokens, layer1_targets(tokens), variant)
        targets = induction_targets(tokens)
        logits = W_U @ _write(W2, ideal_pattern(len(tokens), targets), X1)
        for t, source in targets.items():
            right = int(tokens[source])
            best = int(np.argmax(np.delete(logits[:, t], right)))
            best += best >= right
            gap = logits[right, t] - logits[best, t]
            if gap < LOGIT_MARGIN:
                hint = ""
                reads_layer1 = W1 is not None and composition_score(W2, W1) > 0.1
                if _nothing(W2 @ X1[:, source : source + 1])[0]:
                    hint = (
                        f" The head writes nothing when it attends to {describe(tokens, source)}: "
                        f"{name} maps all it holds to zero"
                        + (
                            f" (it leaves out {_tokens_text(blank)})."
                            if tokens[source] in (blank := tokens_written_as_nothing(W2, variant))
                            else "."
                        )
                    )
                elif best == tokens[t] and gap < -1e-9 and reads_layer1:
                    hint = (
                        " It predicts the present token again: the head copies what the layer-1 "
                        "head wrote at the attended position (the token before it), not the "
                        "token there."
                    )
                if abs(gap) <= 1e-9:
                    verdict = (
                        f"its logits tie: '{VOCAB[best]}' and '{VOCAB[right]}' (the token that "
                        f"followed the first '{VOCAB[tokens[t]]}') both get {logits[right, t]:.2f}, "
                        "so the head does not single out the next token."
                    )
                elif gap < 0:
                    verdict = (
                        f"its logits favour '{VOCAB[best]}' ({logits[best, t]:.2f}) over "
                        f"'{VOCAB[right]}' ({logits[right, t]:.2f}), the token that followed the "
                        f"first '{VOCAB[tokens[t]]}'."
                    )
                else:
                    verdict = (
                        f"'{VOCAB[right]}', the token that followed the first "
                        f"'{VOCAB[tokens[t]]}', beats '{VOCAB[best]}' by only {gap:.3f} "
                        f"({logits[right, t]:.2f} against {logits[best, t]:.2f}); it must win by "
                        f"at least {LOGIT_MARGIN:g}."
                    )
                return [
                    f"{_context(name, tokens)} when the head attends to {describe(tokens, source)}, "
                    f"at {describe(tokens, t)} {verdict}{hint}"
                ]
    return []


# --- follow-through: judging a part on your own earlier answers ------------------------------
def layer1_problems(W_OV1, name: str, what: str, variant: Variant = DEFAULT_VARIANT) -> list[str]:
    """What is wrong with a layer-1 head's W_OV for the layer-2 parts built on it: it must write
    only into FREE and write `what` ('position' or 'token') readably."""
    return judge_writes_free(W_OV1, name, variant) or judge_readable(W_OV1, name, what, variant)


def judged_after(problems: list[str], upstream: list[str], upstream_part: str) -> list[str]:
    """Follow-through: a layer-2 part is judged on your own layer-1 head. When it fails while
    that head has a problem of its own, the failure may come from either, so it is reported as
    not judged yet, with what to fix first; when it passes, it passes."""
    if not problems or not upstream:
        return problems
    return [
        f"This part cannot be judged yet: it is judged on your own layer-1 head, and that head "
        f"has a problem of its own ({upstream_part}):\n  {upstream[0]}\nFix {upstream_part} "
        "first; then this part is judged on the corrected head. (What the grader saw with "
        f"your current head: {problems[0]})"
    ]


# --- plots ---------------------------------------------------------------------------------
def _heatmaps():
    import heatmaps  # shipped next to this file; imported only when plotting

    return heatmaps


def show_pattern(W_Q, W_K, tokens=EXAMPLE, title="attention pattern", X=None, variant: Variant = DEFAULT_VARIANT):
    """The pattern of the head (W_Q, W_K) on `tokens` (or on a given residual stream X)."""
    X = variant.embed(tokens) if X is None else X
    A = attention_pattern(qk(W_Q, W_K), X)
    return _heatmaps().show_attention(A, [f"{VOCAB[int(t)]}{i}" for i, t in enumerate(tokens)], title=title)


def show_ex2(W_Q_d, W_K_d, W_V_e, W_O_e, W_Q_f, W_K_f, tokens=EXAMPLE, variant: Variant = DEFAULT_VARIANT):
    """Your two-layer pointer-arithmetic model: layer 1 = (d) pattern + (e) output, layer 2 = (f)."""
    X = variant.embed(tokens)
    A1 = attention_pattern(qk(W_Q_d, W_K_d), X)
    X1 = X + head_output(ov(W_V_e, W_O_e), A1, X)
    hm = _heatmaps()
    return hm.side_by_side(
        show_pattern(W_Q_d, W_K_d, tokens, "layer 1: pattern (d)", variant=variant),
        show_pattern(W_Q_f, W_K_f, tokens, "layer 2: pattern (f)", X=X1),
        caption="your heads, with your own layer-1 pattern",
    )


def show_ex3(
    W_Q_prev,
    W_K_prev,
    W_V_prev,
    W_O_prev,
    W_Q_ind,
    W_K_ind,
    W_V_ind,
    W_O_ind,
    tokens=EXAMPLE,
    variant: Variant = DEFAULT_VARIANT,
):
    """Your K-composition model: patterns of both heads and the induction head's logits."""
    X = variant.embed(tokens)
    A1 = attention_pattern(qk(W_Q_prev, W_K_prev), X)
    X1 = X + head_output(ov(W_V_prev, W_O_prev), A1, X)
    A2 = attention_pattern(qk(W_Q_ind, W_K_ind), X1)
    logits = _tables(variant)[0].T @ head_output(ov(W_V_ind, W_O_ind), A2, X1)
    labels = [f"{VOCAB[int(t)]}{i}" for i, t in enumerate(tokens)]
    hm = _heatmaps()
    return hm.side_by_side(
        show_pattern(W_Q_prev, W_K_prev, tokens, "layer 1: previous-token head", variant=variant),
        show_pattern(W_Q_ind, W_K_ind, tokens, "layer 2: induction head", X=X1),
        hm.show_matrix(
            logits,
            title="induction head logits",
            row_label="predicted token",
            col_label="position",
            row_ticks=list(VOCAB),
            col_ticks=labels,
        ),
        caption="your heads, with your own layer-1 pattern",
    )


# --- public checks -------------------------------------------------------------------------
# Each takes your answers and, last, your variant (the set-up cell's `variant`; without it, the
# exercise page's own set-up).
PUBLIC_SEQUENCES = draw_sequences(np.random.default_rng(2021), 6)


def _failing_picture(judge_one, W_QK, title, variant: Variant, layer1=None):
    """A callable that shows, in a notebook, W_QK's pattern on the first public sequence where
    `judge_one([tokens])` finds a problem (nothing outside IPython)."""

    def show():
        try:
            from IPython import get_ipython  # only in a notebook
            from IPython.display import display
        except ImportError:
            return
        if get_ipython() is None:
            return
        for tokens in PUBLIC_SEQUENCES:
            if judge_one([tokens]):
                if layer1 is None:
                    X = variant.embed(tokens)
                else:
                    X = layer1_residual(layer1[0], tokens, layer1[1](tokens), variant)
                labels = [f"{VOCAB[int(t)]}{i}" for i, t in enumerate(tokens)]
                display(
                    _heatmaps().show_attention(
                        attention_pattern(W_QK, X), labels, title=f"{title} on {render(tokens)}, where the check fails"
                    )
                )
                return

    return show


def _read(names_values: dict) -> dict:
    """Staged input checks (present, type, shape, finite), with the grader's own messages."""
    out = {}
    for name, value in names_values.items():
        if name.startswith("W_O"):
            out[name] = stage_array(value, name, (D_MODEL, D_HEAD), ("d_model", "d_head"))
        else:
            out[name] = stage_array(value, name, (D_HEAD, D_MODEL), ("d_head", "d_model"))
    return out


def _verdict(judgements, part: str, picture=None):
    """Fail with the problems of the first judge that found any (as the hidden checks do).

    `picture(judge_one)`: on a failure of the first (pattern) judge, draw the pattern on the
    sequence where it fails, so the picture shows what the message describes."""
    for number, problems in enumerate(judgements):
        if problems:
            if picture is not None and number == 0:
                picture()
            raise AssertionError("\n".join(problems))
    print(f"({part}) public checks passed (hidden checks run on more sequences when your work is graded)")


def _check_pattern(judge, W_Q, W_K, names, part, title, variant):
    m = _read(dict(zip(names, (W_Q, W_K))))
    W_QK = qk(*m.values())
    _verdict(
        [judge(W_QK, PUBLIC_SEQUENCES, variant=variant)],
        part,
        _failing_picture(lambda seqs: judge(W_QK, seqs, variant=variant), W_QK, title, variant),
    )


@public_check
def check_ex2a(W_Q_a, W_K_a, variant: Variant = DEFAULT_VARIANT):
    _check_pattern(judge_same_content, W_Q_a, W_K_a, ("W_Q_a", "W_K_a"), "a", "your head (a)", variant)


@public_check
def check_ex2b(W_Q_b, W_K_b, variant: Variant = DEFAULT_VARIANT):
    _check_pattern(judge_present, W_Q_b, W_K_b, ("W_Q_b", "W_K_b"), "b", "your head (b)", variant)


@public_check
def check_ex2c(W_Q_c, W_K_c, variant: Variant = DEFAULT_VARIANT):
    _check_pattern(judge_previous, W_Q_c, W_K_c, ("W_Q_c", "W_K_c"), "c", "your head (c)", variant)


@public_check
def check_ex2d(W_Q_d, W_K_d, variant: Variant = DEFAULT_VARIANT):
    _check_pattern(judge_previous_copy, W_Q_d, W_K_d, ("W_Q_d", "W_K_d"), "d", "your head (d)", variant)


@public_check
def check_ex2e(W_V_e, W_O_e, variant: Variant = DEFAULT_VARIANT):
    m = _read({"W_V_e": W_V_e, "W_O_e": W_O_e})
    W_OV = ov(m["W_V_e"], m["W_O_e"])
    name = "W_O_e @ W_V_e"
    _verdict([judge_writes_free(W_OV, name, variant), judge_readable(W_OV, name, "position", variant)], "e")


@public_check
def check_ex2f(W_Q_f, W_K_f, W_V_e, W_O_e, variant: Variant = DEFAULT_VARIANT):
    m = _read({"W_Q_f": W_Q_f, "W_K_f": W_K_f, "W_V_e": W_V_e, "W_O_e": W_O_e})
    W_QK, W_OV = qk(m["W_Q_f"], m["W_K_f"]), ov(m["W_V_e"], m["W_O_e"])
    upstream = layer1_problems(W_OV, "W_O_e @ W_V_e", "position", variant)
    _verdict(
        [
            judged_after(
                judge_induction(W_QK, W_OV, previous_copy_targets, PUBLIC_SEQUENCES, "head (f)", variant),
                upstream,
                "part (e)",
            ),
            judge_ablation(W_QK, W_OV, previous_copy_targets, PUBLIC_SEQUENCES, "head (f)", variant),
            judged_after(judge_composition(W_QK, W_OV, "f"), upstream, "part (e)"),
        ],
        "f",
        _failing_picture(
            lambda seqs: judge_induction(W_QK, W_OV, previous_copy_targets, seqs, "head (f)", variant),
            W_QK,
            "your head (f)",
            variant,
            (W_OV, previous_copy_targets),
        ),
    )
    c = composition_scores(W_QK, W_OV)
    print(f"    composition of (f) with the layer-1 head: Q {c['Q']:.2f}, K {c['K']:.2f}")


@public_check
def check_ex3_prev(W_Q_prev, W_K_prev, W_V_prev, W_O_prev, variant: Variant = DEFAULT_VARIANT):
    m = _read({"W_Q_prev": W_Q_prev, "W_K_prev": W_K_prev, "W_V_prev": W_V_prev, "W_O_prev": W_O_prev})
    W_OV = ov(m["W_V_prev"], m["W_O_prev"])
    W_QK = qk(m["W_Q_prev"], m["W_K_prev"])
    _verdict(
        [
            judge_previous(W_QK, PUBLIC_SEQUENCES, "the previous-token head", variant),
            judge_writes_free(W_OV, "W_O_prev @ W_V_prev", variant),
            judge_readable(W_OV, "W_O_prev @ W_V_prev", "token", variant),
        ],
        "previous-token head",
        _failing_picture(
            lambda seqs: judge_previous(W_QK, seqs, variant=variant), W_QK, "your previous-token head", variant
        ),
    )


@public_check
def check_ex3_ind_qk(W_Q_ind, W_K_ind, W_V_prev, W_O_prev, variant: Variant = DEFAULT_VARIANT):
    m = _read({"W_Q_ind": W_Q_ind, "W_K_ind": W_K_ind, "W_V_prev": W_V_prev, "W_O_prev": W_O_prev})
    W_QK, W_OV = qk(m["W_Q_ind"], m["W_K_ind"]), ov(m["W_V_prev"], m["W_O_prev"])
    name = "the induction head"
    upstream = layer1_problems(W_OV, "W_O_prev @ W_V_prev", "token", variant)
    _verdict(
        [
            judged_after(
                judge_induction(W_QK, W_OV, previous_position_targets, PUBLIC_SEQUENCES, name, variant),
                upstream,
                "the previous-token head",
            ),
            judge_ablation(W_QK, W_OV, previous_position_targets, PUBLIC_SEQUENCES, name, variant),
            judged_after(judge_composition(W_QK, W_OV, "ind"), upstream, "the previous-token head"),
        ],
        "induction head W_Q, W_K",
        _failing_picture(
            lambda seqs: judge_induction(W_QK, W_OV, previous_position_targets, seqs, name, variant),
            W_QK,
            "your induction head",
            variant,
            (W_OV, previous_position_targets),
        ),
    )
    c = composition_scores(W_QK, W_OV)
    print(f"    composition with the previous-token head: Q {c['Q']:.2f}, K {c['K']:.2f}")


@public_check
def check_ex3_ind_ov(W_V_ind, W_O_ind, W_V_prev, W_O_prev, variant: Variant = DEFAULT_VARIANT):
    m = _read({"W_V_ind": W_V_ind, "W_O_ind": W_O_ind, "W_V_prev": W_V_prev, "W_O_prev": W_O_prev})
    W_OV2, W_OV1 = ov(m["W_V_ind"], m["W_O_ind"]), ov(m["W_V_prev"], m["W_O_prev"])
    name = "the induction head's W_O_ind @ W_V_ind"
    _verdict(
        [
            judge_copies_attended_token(W_OV2, "W_O_ind @ W_V_ind", variant),
            judged_after(
                judge_predictions(W_OV2, W_OV1, previous_position_targets, PUBLIC_SEQUENCES, name, variant),
                layer1_problems(W_OV1, "W_O_prev @ W_V_prev", "token", variant),
                "the previous-token head",
            ),
        ],
        "induction head W_V, W_O",
    )
    print(f"    V-composition with the previous-token head: {composition_score(W_OV2, W_OV1):.2f}")
