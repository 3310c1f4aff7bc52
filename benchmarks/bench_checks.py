"""`make bench` (part): how fast students' public checks and the grader's hidden checks are.

Public checks must answer in well under a second in a student's kernel; hidden checks run once
per submission in the grader's process, so their cost adds to every notebook of a class. Both
are timed in-process on the reference solutions (warm, median of several runs) and printed with
their ratio to the target, so a regression shows as a ratio above 1.

    python benchmarks/bench_checks.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import pathlib
import statistics
import sys
import time

import numpy as np

from autograder.core import notebook as nbio
from autograder.core.course import Course
from autograder.core.testing import call_function, make_submission
from autograder.dev import classroom

PUBLIC_TARGET_S = 1.0  # per public-check cell, in a student's kernel
HIDDEN_TARGET_S = 0.5  # all hidden checks of one notebook, per submission


def _median_seconds(run, repeat: int) -> float:
    run()  # warm-up: imports and caches
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    course = Course(pathlib.Path(__file__).resolve().parent.parent)
    print(f"{'notebook':<34}{'what':<28}{'median s':>10}{'target s':>10}{'ratio':>8}")
    worst = 0.0
    for spec in course.specs:
        notebook = nbio.parse_notebook(json.dumps(classroom.filled_notebook(course, spec.assignment, spec.notebook)))
        sys.path.insert(0, str(spec.helpers_dir))
        namespace: dict = {"__name__": "__main__"}
        graded_cells = {}
        try:
            for cell_index, source in nbio.code_cells(notebook):
                meta = notebook["cells"][cell_index].get("metadata", {}).get("nbgrader", {})
                with contextlib.redirect_stdout(io.StringIO()):
                    exec(compile(source, f"<cell {cell_index + 1}>", "exec"), namespace)
                if meta.get("grade") and not meta.get("solution"):
                    graded_cells[meta["grade_id"]] = compile(source, meta["grade_id"], "exec")
            rows = []
            for grade_id, code in graded_cells.items():

                def public(code=code, namespace=namespace):
                    with contextlib.redirect_stdout(io.StringIO()):
                        exec(code, namespace)

                rows.append((f"public {grade_id}", _median_seconds(public, args.repeat), PUBLIC_TARGET_S))
            values = {name: namespace[name] for name in spec.extract if name in namespace}
            calls = {
                name: call_function(namespace[name], probes, np.random.default_rng(0))
                for name, probes in spec.probes.items()
                if callable(namespace.get(name))
            }
        finally:
            sys.path.remove(str(spec.helpers_dir))
        sub = make_submission(values, calls)
        checks = [getattr(spec.module, name) for name in vars(spec.module) if name.startswith("test_")]

        def hidden(checks=checks, sub=sub):
            for check in checks:
                check(sub)

        rows.append(("hidden checks, one submission", _median_seconds(hidden, args.repeat), HIDDEN_TARGET_S))
        for what, seconds, target in rows:
            worst = max(worst, seconds / target)
            print(f"{spec.key:<34}{what:<28}{seconds:>10.4f}{target:>10.2f}{seconds / target:>8.3f}")
    print(f"worst ratio to target: {worst:.3f} ({'within' if worst <= 1 else 'OVER'} every target)")
    return 0 if worst <= 1 else 1


if __name__ == "__main__":
    sys.exit(main())
