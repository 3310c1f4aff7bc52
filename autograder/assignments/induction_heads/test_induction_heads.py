"""Hidden checks of `induction_heads.ipynb`: Exercises 2 and 3 of the Transformer Circuits exercises.

Every check simulates the student's heads in the course's toy model (the trusted copy of
`induction_tools`) on sequences drawn here (BOS, distinct letters, the same letters again) and
judges behaviour: where each head attends, what it writes, what it predicts. Scale never
matters: the simulator divides W_QK and W_OV by their largest singular value, so re-based,
rescaled and list-valued answers are graded alike. Layer-2 checks use an idealised layer-1
pattern with the student's own layer-1 W_OV (follow-through, docs/MARKING.md): a layer-2 part
earns its points when it is right for the student's own layer-1 head; when it fails while that
head has a problem of its own, it says it cannot be judged yet and which part to fix first.
Every submission is judged in its student's own variant (`sub.variant`: where TOK, POS and FREE
sit and the positional frequencies), so every message names the student's own dims.
"""

from autograder.core.checks import Mistake, part

from . import public_module, reference

tools = reference.tools

NOTEBOOK = "induction_heads"
EXTRACT = [
    "W_Q_a",
    "W_K_a",
    "W_Q_b",
    "W_K_b",
    "W_Q_c",
    "W_K_c",
    "W_Q_d",
    "W_K_d",
    "W_V_e",
    "W_O_e",
    "W_Q_f",
    "W_K_f",
    "W_Q_prev",
    "W_K_prev",
    "W_V_prev",
    "W_O_prev",
    "W_Q_ind",
    "W_K_ind",
    "W_V_ind",
    "W_O_ind",
]
PROBES = {}
VARIANT = tools.variant_for  # each submission is judged in its student's own setting (sub.variant)

READ = ("d_head", "d_model")
WRITE = ("d_model", "d_head")


def _variant(sub):
    """The student's variant: where their residual stream keeps what, and their frequencies."""
    return sub.variant or tools.DEFAULT_VARIANT


def _reader(sub, name):
    return sub.array(name, shape=(tools.D_HEAD, tools.D_MODEL), labels=READ)


def _writer(sub, name):
    return sub.array(name, shape=(tools.D_MODEL, tools.D_HEAD), labels=WRITE)


def _qk(sub, suffix):
    return tools.qk(_reader(sub, f"W_Q_{suffix}"), _reader(sub, f"W_K_{suffix}"))


def _ov(sub, suffix):
    return tools.ov(_reader(sub, f"W_V_{suffix}"), _writer(sub, f"W_O_{suffix}"))


def _layer1(sub, suffix):
    """(W_OV of the layer-1 head, its own problems, the part that owns them)."""
    W_OV, variant = _ov(sub, suffix), _variant(sub)
    if suffix == "e":
        return W_OV, tools.layer1_problems(W_OV, "W_O_e @ W_V_e", "position", variant), "part (e) (ex2e)"
    return (
        W_OV,
        tools.layer1_problems(W_OV, "W_O_prev @ W_V_prev", "token", variant),
        "the previous-token head (ex3_prev)",
    )


def _fail_after(problems, layer1):
    """Fail with a layer-2 judge's problems, or say it cannot judge yet (tools.judged_after)."""
    _, upstream, owner = layer1
    _fail_on(tools.judged_after(problems, upstream, owner))


def _fail_on(problems):
    """Fail with what a judge found (judges return a list of problems, empty when all is well)."""
    if problems:
        raise Mistake("\n".join(problems))


# --- Exercise 2 ----------------------------------------------------------------------------
@part("ex2a", points=2)
def test_a_attends_to_same_token(sub):
    _fail_on(tools.judge_same_content(_qk(sub, "a"), reference.sequences("a"), variant=_variant(sub)))


@part("ex2b", points=1)
def test_b_attends_to_present_position(sub):
    _fail_on(tools.judge_present(_qk(sub, "b"), reference.sequences("b"), variant=_variant(sub)))


@part("ex2c", points=2)
def test_c_attends_to_previous_position(sub):
    _fail_on(tools.judge_previous(_qk(sub, "c"), reference.sequences("c"), variant=_variant(sub)))


@part("ex2d", points=2)
def test_d_attends_to_earlier_copy_not_itself(sub):
    _fail_on(tools.judge_previous_copy(_qk(sub, "d"), reference.sequences("d"), variant=_variant(sub)))


@part("ex2e", points=1)
def test_e_writes_only_into_free_dims(sub):
    _fail_on(tools.judge_writes_free(_ov(sub, "e"), "W_O_e @ W_V_e", _variant(sub)))


@part("ex2e", points=1)
def test_e_written_position_is_readable(sub):
    _fail_on(tools.judge_readable(_ov(sub, "e"), "W_O_e @ W_V_e", "position", _variant(sub)))


@part("ex2f", points=2)
def test_f_attends_after_earlier_copy(sub):
    layer1 = _layer1(sub, "e")
    _fail_after(
        tools.judge_induction(
            _qk(sub, "f"), layer1[0], tools.previous_copy_targets, reference.sequences("f"), "head (f)", _variant(sub)
        ),
        layer1,
    )


@part("ex2f", points=1)
def test_f_uses_q_composition(sub):
    layer1 = _layer1(sub, "e")
    scores = tools.composition_scores(_qk(sub, "f"), layer1[0])
    sub.note(f"composition of (f) with the layer-1 head: Q {scores['Q']:.2f}, K {scores['K']:.2f}")
    _fail_after(tools.judge_composition(_qk(sub, "f"), layer1[0], "f"), layer1)


@part("ex2f", points=1)
def test_f_needs_layer1_head(sub):
    # Ablation sets layer 1's output to zero, so it judges (f) alone: no follow-through needed.
    _fail_on(
        tools.judge_ablation(
            _qk(sub, "f"),
            _ov(sub, "e"),
            tools.previous_copy_targets,
            reference.sequences("f"),
            "head (f)",
            _variant(sub),
        )
    )


# --- Exercise 3 ----------------------------------------------------------------------------
@part("ex3_prev", points=1)
def test_prev_attends_to_previous_position(sub):
    _fail_on(
        tools.judge_previous(
            _qk(sub, "prev"), reference.sequences("prev"), "the previous-token head", variant=_variant(sub)
        )
    )


@part("ex3_prev", points=1)
def test_prev_writes_only_into_free_dims(sub):
    _fail_on(tools.judge_writes_free(_ov(sub, "prev"), "W_O_prev @ W_V_prev", _variant(sub)))


@part("ex3_prev", points=1)
def test_prev_written_token_is_readable(sub):
    _fail_on(tools.judge_readable(_ov(sub, "prev"), "W_O_prev @ W_V_prev", "token", _variant(sub)))


@part("ex3_ind_qk", points=2)
def test_ind_attends_after_earlier_copy(sub):
    layer1 = _layer1(sub, "prev")
    _fail_after(
        tools.judge_induction(
            _qk(sub, "ind"),
            layer1[0],
            tools.previous_position_targets,
            reference.sequences("ind_qk"),
            "the induction head",
            _variant(sub),
        ),
        layer1,
    )


@part("ex3_ind_qk", points=1)
def test_ind_uses_k_composition(sub):
    layer1 = _layer1(sub, "prev")
    W_QK, W_OV1 = _qk(sub, "ind"), layer1[0]
    scores = tools.composition_scores(W_QK, W_OV1)
    sub.note(f"composition with the previous-token head: Q {scores['Q']:.2f}, K {scores['K']:.2f}")
    _fail_after(tools.judge_composition(W_QK, W_OV1, "ind"), layer1)


@part("ex3_ind_qk", points=1)
def test_ind_needs_previous_token_head(sub):
    _fail_on(
        tools.judge_ablation(
            _qk(sub, "ind"),
            _ov(sub, "prev"),
            tools.previous_position_targets,
            reference.sequences("ind_qk"),
            "the induction head",
            _variant(sub),
        )
    )


@part("ex3_ind_ov", points=1)
def test_ind_copies_attended_token(sub):
    _fail_on(tools.judge_copies_attended_token(_ov(sub, "ind"), "W_O_ind @ W_V_ind", _variant(sub)))


@part("ex3_ind_ov", points=1)
def test_ind_predicts_next_token(sub):
    W_OV2 = _ov(sub, "ind")
    layer1 = _layer1(sub, "prev")
    W_OV1 = layer1[0]
    sub.note(f"V-composition with the previous-token head: {tools.composition_score(W_OV2, W_OV1):.2f}")
    _fail_after(
        tools.judge_predictions(
            W_OV2,
            W_OV1,
            tools.previous_position_targets,
            reference.sequences("ind_ov"),
            "the induction head (W_O_ind @ W_V_ind)",
            _variant(sub),
        ),
        layer1,
    )


# --- feedback pictures of the student's own heads -------------------------------------------
_PATTERNS = {  # grade_id -> (suffix, title, layer-1 OV suffix and targets or None)
    "ex2a": ("a", "your head (a)", None),
    "ex2b": ("b", "your head (b)", None),
    "ex2c": ("c", "your head (c)", None),
    "ex2d": ("d", "your head (d)", None),
    "ex2f": (
        "f",
        "your head (f), after an exact layer-1 pattern (d) with your W_OV (e)",
        ("e", tools.previous_copy_targets),
    ),
    "ex3_prev": ("prev", "your previous-token head", None),
    "ex3_ind_qk": (
        "ind",
        "your induction head, after an exact previous-token pattern with your W_OV",
        ("prev", tools.previous_position_targets),
    ),
}


_JUDGES = {  # grade_id -> (draw, judge of one head's pattern on a list of sequences)
    "ex2a": ("a", lambda sub, seqs: tools.judge_same_content(_qk(sub, "a"), seqs, variant=_variant(sub))),
    "ex2b": ("b", lambda sub, seqs: tools.judge_present(_qk(sub, "b"), seqs, variant=_variant(sub))),
    "ex2c": ("c", lambda sub, seqs: tools.judge_previous(_qk(sub, "c"), seqs, variant=_variant(sub))),
    "ex2d": ("d", lambda sub, seqs: tools.judge_previous_copy(_qk(sub, "d"), seqs, variant=_variant(sub))),
    "ex2f": (
        "f",
        lambda sub, seqs: tools.judge_induction(
            _qk(sub, "f"), _ov(sub, "e"), tools.previous_copy_targets, seqs, "", _variant(sub)
        ),
    ),
    "ex3_prev": ("prev", lambda sub, seqs: tools.judge_previous(_qk(sub, "prev"), seqs, variant=_variant(sub))),
    "ex3_ind_qk": (
        "ind_qk",
        lambda sub, seqs: tools.judge_induction(
            _qk(sub, "ind"), _ov(sub, "prev"), tools.previous_position_targets, seqs, "", _variant(sub)
        ),
    ),
}


def _shown_sequence(sub, grade_id):
    """The first sequence on which the part's pattern check fails (so the picture shows what the
    message describes), else the usual example."""
    if grade_id in _JUDGES:
        draw, judge = _JUDGES[grade_id]
        for tokens in reference.sequences(draw):
            if judge(sub, [tokens]):
                return tokens, " on the sequence where the check fails"
    return reference.sequences("figures")[0], ""


def figures(sub, grade_id):
    """SVG pictures of the student's own heads for one part (never the expected answer)."""
    try:
        heatmaps = public_module("heatmaps")
        tokens, where = _shown_sequence(sub, grade_id)
        labels = [f"{tools.VOCAB[token]}{i}" for i, token in enumerate(tokens)]
        if grade_id in _PATTERNS:
            suffix, title, layer1 = _PATTERNS[grade_id]
            title += where
            if layer1 is None:
                X = _variant(sub).embed(tokens)
            else:
                X = tools.layer1_residual(_ov(sub, layer1[0]), tokens, layer1[1](tokens), _variant(sub))
            A = tools.attention_pattern(_qk(sub, suffix), X)
            return [heatmaps.show_attention(A, labels, title=title).svg]
        if grade_id == "ex2e":
            W = tools.normalised(_ov(sub, "e"))
            if W is None:
                return []
            return [
                heatmaps.show_matrix(
                    W,
                    title="your W_O_e @ W_V_e (divided by its largest singular value)",
                    row_label="written dim",
                    col_label="read dim",
                ).svg
            ]
        if grade_id == "ex3_ind_ov":
            W = tools.normalised(_ov(sub, "ind"))
            if W is None:
                return []
            W_E = _variant(sub).W_E
            logits = W_E.T @ W @ W_E  # column j: logits when the head attends to token j
            return [
                heatmaps.show_matrix(
                    logits,
                    title="your induction head's logits per attended token",
                    row_label="logit of token",
                    col_label="attended token",
                    row_ticks=list(tools.VOCAB),
                    col_ticks=list(tools.VOCAB),
                ).svg
            ]
    except Mistake:
        return []  # the checks already explain what is missing or malformed
    return []
