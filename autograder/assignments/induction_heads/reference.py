"""Hidden side of the induction-heads assignment: the grader's draws and a reference answer.

The simulator and the judging rules are public (`source/induction_heads/induction_tools.py`,
imported here as the course's trusted copy); what stays hidden is which sequences the grader
draws. `reference_answers(variant)` is an independent construction of one correct answer in a
student's variant, used by the course's own tests to confirm that every variant leaves
comfortable margins; no check compares a submission with it.
"""

import functools

import numpy as np

from . import public_module

tools = public_module("induction_tools")

# One seed per check family, so adding a check never changes another check's draw.
SEEDS = {
    "a": 7101,
    "b": 7102,
    "c": 7103,
    "d": 7104,
    "f": 7106,
    "prev": 7201,
    "ind_qk": 7202,
    "ind_ov": 7203,
    "figures": 7300,
}
COUNT = 12  # sequences per check: every half-length 3..8 twice (see draw_sequences)


@functools.cache
def _drawn(check: str) -> tuple[tuple[int, ...], ...]:
    return tuple(tuple(tokens) for tokens in tools.draw_sequences(np.random.default_rng(SEEDS[check]), COUNT))


def sequences(check: str) -> list[list[int]]:
    """The sequences one check family judges on: fixed per family, the same for every submission."""
    return [list(tokens) for tokens in _drawn(check)]


def reference_answers(variant=tools.DEFAULT_VARIANT) -> dict[str, np.ndarray]:
    """One correct answer to every part in `variant` (rotation on the key side, content/position
    ratio 4), built from the variant's own dims and frequencies."""
    d_head, d_model = tools.D_HEAD, tools.D_MODEL
    tok, pos, free, alphas = variant.TOK, variant.POS, variant.FREE, variant.ALPHAS
    copy_dims = free[:6]  # (e): where the layer-1 head writes the position it read
    prev_dims = free[:9]  # Ex. 3: where the previous-token head writes the token it read

    def zeros(rows, cols):
        return np.zeros((rows, cols))

    answers = {}
    for part, (q_rows, k_rows) in {
        "a": ((slice(0, 9), tok), (slice(0, 9), tok)),
        "b": ((slice(0, 6), pos), (slice(0, 6), pos)),
    }.items():
        W_Q, W_K = zeros(d_head, d_model), zeros(d_head, d_model)
        W_Q[q_rows] = np.eye(W_Q[q_rows].shape[0])
        W_K[k_rows] = np.eye(W_K[k_rows].shape[0])
        answers[f"W_Q_{part}"], answers[f"W_K_{part}"] = W_Q, W_K

    # (c) and the previous-token head: the key advertises the position after its own.
    for suffix in ("c", "prev"):
        W_Q, W_K = zeros(d_head, d_model), zeros(d_head, d_model)
        W_Q[0:6, pos] = np.eye(6)
        W_K[0:6, pos] = tools.pair_rotation(alphas)
        answers[f"W_Q_{suffix}"], answers[f"W_K_{suffix}"] = W_Q, W_K

    # (d): content match minus a quarter of the present-position match.
    W_Q, W_K = zeros(d_head, d_model), zeros(d_head, d_model)
    W_Q[0:9, tok], W_K[0:9, tok] = np.eye(9), np.eye(9)
    W_Q[9:15, pos], W_K[9:15, pos] = np.eye(6), -0.25 * np.eye(6)
    answers["W_Q_d"], answers["W_K_d"] = W_Q, W_K

    # (e): copy the positional code into free dims; (f): query = that copy, key shifted back one.
    W_V, W_O = zeros(d_head, d_model), zeros(d_model, d_head)
    W_V[0:6, pos], W_O[copy_dims, 0:6] = np.eye(6), np.eye(6)
    answers["W_V_e"], answers["W_O_e"] = W_V, W_O
    W_Q, W_K = zeros(d_head, d_model), zeros(d_head, d_model)
    W_Q[0:6, copy_dims] = np.eye(6)
    W_K[0:6, pos] = tools.pair_rotation(-alphas)
    answers["W_Q_f"], answers["W_K_f"] = W_Q, W_K

    # Exercise 3: previous-token head copies token content; induction head matches it and copies.
    W_V, W_O = zeros(d_head, d_model), zeros(d_model, d_head)
    W_V[0:9, tok], W_O[prev_dims, 0:9] = np.eye(9), np.eye(9)
    answers["W_V_prev"], answers["W_O_prev"] = W_V, W_O
    W_Q, W_K = zeros(d_head, d_model), zeros(d_head, d_model)
    W_Q[0:9, tok], W_K[0:9, prev_dims] = np.eye(9), np.eye(9)
    answers["W_Q_ind"], answers["W_K_ind"] = W_Q, W_K
    W_V, W_O = zeros(d_head, d_model), zeros(d_model, d_head)
    W_V[0:9, tok], W_O[tok, 0:9] = np.eye(9), np.eye(9)
    answers["W_V_ind"], answers["W_O_ind"] = W_V, W_O
    return answers
