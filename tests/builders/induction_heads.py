"""The induction-heads notebook run in this process: namespaces built by exec'ing the instructor
notebook's setup cell and solution code (with each alternative's or mistake's replacement cells),
graded by calling the hidden checks on `make_submission` of the extracted names. Shared by the
tests of the checks and of the per-student variants."""

import json
import sys

from autograder.core.checks import Mistake
from autograder.core.testing import make_submission
from tests.builders import REPOSITORY

SOURCE_DIR = REPOSITORY.source / "induction_heads"
NOTEBOOK = json.loads((SOURCE_DIR / "induction_heads.ipynb").read_text(encoding="utf-8"))
reference = REPOSITORY.grading_module("induction_heads", "reference")
hidden = REPOSITORY.grading_module("induction_heads", "test_induction_heads")
ALTERNATIVES = REPOSITORY.library("alternatives", "induction_heads")
MISTAKES = REPOSITORY.library("mistakes", "induction_heads")

CHECKS = {name: function for name, function in vars(hidden).items() if name.startswith("test_") and callable(function)}


def meta(cell):
    return cell["metadata"].get("nbgrader", {})


def source(cell):
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def part_of(check):
    (mark,) = [mark for mark in check.pytestmark if mark.name == "part"]
    return mark.kwargs["grade_id"], mark.kwargs["points"]


def solution_code(cell):
    text = source(cell)
    return text.split("### BEGIN SOLUTION\n", 1)[1].split("### END SOLUTION", 1)[0]


ANSWER_CELLS = [cell for cell in NOTEBOOK["cells"] if cell["cell_type"] == "code" and meta(cell).get("solution")]
SETUP = next(source(cell) for cell in NOTEBOOK["cells"] if meta(cell).get("grade_id") == "setup")
TEST_CELLS = [cell for cell in NOTEBOOK["cells"] if meta(cell).get("grade") and not meta(cell).get("solution")]


SETUP_CALL = 'my_variant(per_student=False, salt="")'  # nbgrader writes the course's settings here


def namespace(replacements=None, student_id=None, variant=None):
    """Run the setup cell and every answer cell (or its replacement), in notebook order; with a
    `student_id`, the setup cell draws that student's variant (as in a per-student course), with
    a `variant` (a Variant's fields) it sets up that one."""
    replacements = replacements or {}
    setup = SETUP
    assert SETUP.count(SETUP_CALL) == 1
    if student_id is not None:
        setup = SETUP.replace(SETUP_CALL, f'my_variant(per_student=True, salt="", student_id={student_id!r})')
    elif variant is not None:
        setup = SETUP.replace(SETUP_CALL, f"Variant(*{tuple(variant)!r})")
    sys.path.insert(0, str(SOURCE_DIR))
    try:
        ns = {"__name__": "__main__"}
        exec(compile(setup, "<setup>", "exec"), ns)
        for cell in ANSWER_CELLS:
            grade_id = meta(cell)["grade_id"]
            code = replacements.get(grade_id, solution_code(cell))
            exec(compile(code, f"<{grade_id}>", "exec"), ns)
    finally:
        sys.path.remove(str(SOURCE_DIR))
    return ns


def grade(ns, variant=None):
    """check name -> None (passed) or the Mistake message, graded against `variant` (the
    grader's own draw; None: the exercise page's set-up)."""
    sub = make_submission({name: ns[name] for name in hidden.EXTRACT if name in ns})
    sub.variant = variant
    verdicts = {}
    for name, check in CHECKS.items():
        try:
            check(sub)
            verdicts[name] = None
        except Mistake as mistake:
            verdicts[name] = str(mistake)
    return verdicts


def failed(verdicts):
    return {name: message for name, message in verdicts.items() if message is not None}


def run_public(ns, cell):
    code = compile(source(cell), f"<{meta(cell)['grade_id']}>", "exec")
    exec(code, ns)
