"""The one contract every assignment's answer libraries are held to, and an in-process runner.

A library entry is {"notebook", "description", "cells": {answer grade_id: replacement source}}
and, for a mistake, "fails": {check name: regex its message must match} and "passes": [grade_id,
...]. The contract:
  * an alternative (another correct answer) earns every point of its notebook;
  * a mistake fails every check it lists under "fails", each with a message matching its regex
    (the checks that name the mistake; checks that fail only as a consequence need not be
    listed), and "passes" lists exactly the parts that keep their full marks: the blast radius
    of the mistake, part by part.
`tests/test_content.py` applies it in-process (seconds); `tests/test_course.py` applies the same
function to what the real sandbox and checks runner report.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import sys

import numpy as np

from autograder.core import notebook as nbio
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


def assert_meets_the_contract(entry: dict, failures: dict[str, str], spec: NotebookSpec) -> None:
    """`failures`: check name (with or without test_) -> message, for the checks that failed."""
    failures = {name.removeprefix("test_"): message for name, message in failures.items()}
    if "fails" not in entry:  # an alternative
        assert failures == {}, f"a correct answer lost points: {failures}"
        return
    expected = {name.removeprefix("test_"): pattern for name, pattern in entry["fails"].items()}
    for name, pattern in expected.items():
        assert name in failures, f"{name} should fail; failures: {failures}"
        assert re.search(pattern, failures[name], re.S), f"{name}: {failures[name]!r} does not match {pattern!r}"
    marks = check_marks(spec)
    kept = {part.grade_id for part in spec.auto_parts} - {marks[name][0] for name in failures}
    assert set(entry["passes"]) == kept, (
        f"'passes' must list exactly the parts that keep full marks ({sorted(kept)}), not {sorted(entry['passes'])}; "
        f"failing checks: {sorted(failures)}"
    )


def run_in_process(
    course: Course, spec: NotebookSpec, replacements: dict | None, blank: bool = False, seed: int = 0
) -> dict[str, str]:
    """Fill the release notebook as a student would, run its code cells in this process (as the
    sandbox driver runs them, one namespace, a failing cell does not stop the run), call the
    hidden checks on what it defined; returns check name -> message of each failed check."""
    notebook = nbio.parse_notebook(
        json.dumps(classroom.filled_notebook(course, spec.assignment, spec.notebook, replacements, blank=blank))
    )
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
    sub = make_submission(values, calls)
    failures = {}
    for name in check_marks(spec):
        try:
            getattr(spec.module, f"test_{name}")(sub)
        except Mistake as mistake:
            failures[name] = str(mistake)
        # any other exception propagates: it would be an internal grader error
    return failures
