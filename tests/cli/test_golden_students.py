"""What a student reads, for a wrong, a blank and a left-out answer in each notebook, compared
with committed golden files (tests/golden/students/; `pytest --update-golden` rewrites them).

Each case is a notebook as a student would hand it in (the release with the model answers, and
one library entry's cells, or nothing filled in). Two things are recorded:
  * in the notebook: what each public-check cell shows (its printed line, or the failure as
    `CheckFailed` renders it in JupyterLab and `nbgrader validate`), run in-process in a copy
    of the release folder;
  * `autograder check`: the self-check report, graded for real (locked cells restored, the
    sandbox, the hidden checks), the same messages feedback and the formgrader show.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import sys

import pytest

from autograder.cli import selfcheck
from autograder.core import engine
from autograder.core.notebook import source_text
from autograder.dev import classroom
from tests.builders import REPOSITORY

# notebook -> {case: library entry (a mistake) or None (blank)}
CASES = {
    ("attention_heads", "virtual_head"): {"wrong": "head1_gain_two", "left_out": "head1_leaves_a_dim_out"},
    ("attention_heads", "questions"): {
        "wrong": "pattern_mask_hides_diagonal",
        "left_out": "head_writes_nothing_for_a_token",
    },
    ("induction_heads", "induction_heads"): {"wrong": "d_penalty_too_strong", "left_out": "ind_qk_tokens_left_out"},
}
PARAMS = [
    (assignment, notebook, case)
    for (assignment, notebook), cases in CASES.items()
    for case in ("wrong", "blank", "left_out")
    if case == "blank" or case in cases
]
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _handed_in(assignment: str, notebook: str, case: str) -> dict:
    if case == "blank":
        return classroom.filled_notebook(REPOSITORY, assignment, notebook, blank=True)
    entry = REPOSITORY.library("mistakes", assignment)[CASES[(assignment, notebook)][case]]
    assert entry["notebook"] == notebook
    return classroom.filled_notebook(REPOSITORY, assignment, notebook, entry["cells"])


def _public_checks(folder, notebook: dict, monkeypatch) -> str:
    """What each public-check cell shows, running the set-up, answer and check cells in order."""
    shown, namespace = [], {"__name__": "__main__"}
    sys.path.insert(0, str(folder))
    monkeypatch.chdir(folder)
    try:
        if True:
            for cell in notebook["cells"]:
                meta = cell.get("metadata", {}).get("nbgrader", {})
                if cell["cell_type"] != "code" or not meta:
                    continue  # pictures and the student's own cells: not what is recorded here
                printed = io.StringIO()
                with contextlib.redirect_stdout(printed):
                    try:
                        exec(compile(source_text(cell["source"]), "<cell>", "exec"), namespace)
                        outcome = ""
                    except Exception as error:  # noqa: BLE001 - every failure is what a student reads
                        if hasattr(error, "_render_traceback_"):
                            outcome = ANSI.sub("", "\n".join(error._render_traceback_()))
                        else:
                            outcome = f"{type(error).__name__}: {error}"
                if meta.get("grade") and not meta.get("solution"):
                    text = (printed.getvalue().strip() + "\n" + outcome).strip()
                    shown.append(f"[{meta['grade_id']}]\n{text}")
    finally:
        sys.path.remove(str(folder))
        for name in [
            name for name, module in sys.modules.items() if str(folder) in str(getattr(module, "__file__", ""))
        ]:
            del sys.modules[name]
    return "\n\n".join(shown)


@pytest.mark.sandbox
@pytest.mark.parametrize(("assignment", "notebook", "case"), PARAMS, ids=[f"{n}-{c}" for _, n, c in PARAMS])
def test_what_a_student_reads(assignment, notebook, case, golden, tmp_path, monkeypatch):
    handed_in = _handed_in(assignment, notebook, case)
    folder = tmp_path / assignment
    shutil.copytree(REPOSITORY.release / assignment, folder)
    path = folder / f"{notebook}.ipynb"
    path.write_text(json.dumps(handed_in))
    in_notebook = _public_checks(folder, handed_in, monkeypatch)

    monkeypatch.chdir(REPOSITORY.root)  # the report names solutions/ relative to here
    restored = selfcheck.as_grading_sees_it(REPOSITORY, str(path), None)
    request = engine.GradeRequest(str(path), "self-check", notebook=restored)
    (report,) = engine.grade(REPOSITORY, [request], jobs=1, allow_unisolated=True)
    assert report.grader_error is None, report.grader_error
    report.notebook, report.isolation = f"{notebook}.ipynb", "(the sandbox)"  # the same on every machine
    checked = report.as_self_check(REPOSITORY.solutions)
    text = f"== in the notebook: the public checks ==\n{in_notebook}\n\n== autograder check ==\n{checked}\n"
    golden(os.path.join("students", f"{notebook}-{case}.txt"), text)
