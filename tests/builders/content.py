"""The one contract every assignment's answer libraries are held to, and an in-process runner.

A library entry is {"notebook", "description", "cells": {answer grade_id: replacement source}}
and, for a mistake, "fails": {check name: regex its message must match} and "passes": [grade_id,
...]. The contract:
  * an alternative (another correct answer) earns every point of its notebook;
  * a mistake fails every check it lists under "fails", each with a message matching its regex
    (the checks that name the mistake; checks that fail only as a consequence need not be
    listed), and "passes" lists exactly the parts that keep their full marks: the blast radius
    of the mistake, part by part.
`tests/course/test_content.py` applies it in-process (seconds); `tests/course/test_course.py` applies the same
function to what the real sandbox and checks runner report. The libraries are written for the
exercise page's own set-up; `run_in_process(..., student=ID)` carries an entry into that
student's variant (see IN_VARIANT), where the same contract holds, messages aside (they name
that student's own dims).
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import sys

import numpy as np

from autograder.core import notebook as nbio
from autograder.core import variants
from autograder.core.checks import Mistake
from autograder.core.course import Course
from autograder.core.specs import NotebookSpec
from autograder.core.testing import call_function, make_submission
from autograder.dev import classroom


def check_marks(spec: NotebookSpec) -> dict[str, tuple[str, float]]:
    """check name (without test_) -> (grade_id, points), for every hidden check of the notebook."""
    marks = {}
    for name, function in vars(spec.module).items():
        for mark in getattr(function, "pytestmark", []):
            if name.startswith("test_") and mark.name == "part":
                marks[name.removeprefix("test_")] = (mark.kwargs["grade_id"], mark.kwargs["points"])
    return marks


def assert_meets_the_contract(entry: dict, failures: dict[str, str], spec: NotebookSpec, messages: bool = True) -> None:
    """`failures`: check name (with or without test_) -> message, for the checks that failed;
    `messages=False`: the messages are not compared (in another variant they name other dims)."""
    failures = {name.removeprefix("test_"): message for name, message in failures.items()}
    if "fails" not in entry:  # an alternative
        assert failures == {}, f"a correct answer lost points: {failures}"
        return
    expected = {name.removeprefix("test_"): pattern for name, pattern in entry["fails"].items()}
    for name, pattern in expected.items():
        assert name in failures, f"{name} should fail; failures: {failures}"
        assert not messages or re.search(pattern, failures[name], re.S), (
            f"{name}: {failures[name]!r} does not match {pattern!r}"
        )
    marks = check_marks(spec)
    kept = {part.grade_id for part in spec.auto_parts} - {marks[name][0] for name in failures}
    assert set(entry["passes"]) == kept, (
        f"'passes' must list exactly the parts that keep full marks ({sorted(kept)}), not {sorted(entry['passes'])}; "
        f"failing checks: {sorted(failures)}"
    )


# How a library entry, written for the exercise page's set-up, is carried into a student's
# variant. "run": the notebook draws the variant itself (its answers are computed from the data
# the notebook gives, as Q6's are). A table name -> how it moves: the answers are typed in the
# page's residual-stream layout and are moved into the variant's by its permutation P (what
# reads the stream W P^T, what writes into it P W, a map of the stream P W P^T).
IN_VARIANT: dict[str, str | dict[str, str]] = {
    "attention_heads/virtual_head": {
        **{name: "read" for name in ("W_V1", "W_V2")},
        **{name: "write" for name in ("W_O1", "W_O2")},
        **{name: "map" for name in ("W_net1", "W_net2", "two_token_copy", "one_token_copy")},
    },
}


def _moved(values: dict, how: dict[str, str], P: np.ndarray) -> dict:
    moves = {"read": lambda W: W @ P.T, "write": lambda W: P @ W, "map": lambda W: P @ W @ P.T}
    moved = {}
    for name, value in values.items():
        array = np.asarray(value) if how.get(name) else None
        ok = array is not None and array.dtype.kind in "biuf" and array.ndim == 2
        try:
            moved[name] = moves[how[name]](array.astype(float)) if ok else value
        except ValueError:  # a wrong shape stays as it is, wrong
            moved[name] = value
    return moved


def run_in_process(
    course: Course,
    spec: NotebookSpec,
    replacements: dict | None,
    blank: bool = False,
    seed: int = 0,
    student: str | None = None,
    salt: str = "",
) -> dict[str, str]:
    """Fill the release notebook as a student would, run its code cells in this process (as the
    sandbox driver runs them, one namespace, a failing cell does not stop the run), call the
    hidden checks on what it defined; returns check name -> message of each failed check.
    `student`: judged in that student's variant (with `salt`), the entry carried there."""
    filled = classroom.filled_notebook(course, spec.assignment, spec.notebook, replacements, blank=blank)
    variant = spec.variant(student, salt) if spec.variant is not None else None
    how = IN_VARIANT.get(spec.key, "run") if student is not None else None
    if how == "run":
        for cell in filled["cells"]:
            if cell["cell_type"] == "code":
                cell["source"] = variants.with_settings(
                    nbio.source_text(cell["source"]), variants.Settings(True, salt), student
                )
    notebook = nbio.parse_notebook(json.dumps(filled))
    helpers = str(spec.helpers_dir)
    before = set(sys.modules)
    sys.path.insert(0, helpers)
    namespace: dict = {"__name__": "__main__"}
    try:
        for index, source in nbio.code_cells(notebook):
            with contextlib.redirect_stdout(io.StringIO()):
                try:
                    exec(compile(source, f"<cell {index + 1}>", "exec"), namespace)
                except Exception:  # noqa: BLE001 - as in the sandbox, the next cell still runs
                    pass
        values = {name: namespace[name] for name in spec.extract if name in namespace}
        rng = np.random.default_rng(seed)
        calls = {
            name: call_function(namespace[name], probes, rng)
            for name, probes in spec.probes.items()
            if callable(namespace.get(name))
        }
    finally:
        sys.path.remove(helpers)
        for name in set(sys.modules) - before:  # the helpers of one assignment never serve another
            if getattr(sys.modules[name], "__file__", "") and str(sys.modules[name].__file__).startswith(helpers):
                del sys.modules[name]
    if isinstance(how, dict):
        values = _moved(values, how, variant.layout.permutation())
    sub = make_submission(values, calls)
    sub.variant = variant
    failures = {}
    for name in check_marks(spec):
        try:
            getattr(spec.module, f"test_{name}")(sub)
        except Mistake as mistake:
            failures[name] = str(mistake)
        # any other exception propagates: it would be an internal grader error
    return failures
