"""What a student sees when a public check fails: the message, none of our code's frames.

A failing public check raises `tclib.CheckFailed`, whose `_render_traceback_` IPython uses in
place of a traceback. Run for real: a wrong answer in the released notebook on a fresh
ipykernel (nbclient: the error output JupyterLab draws), and `nbgrader validate` on the same
notebook, both as text (what the command prints) and as the Validate button's result (the
failed cells it counts).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import nbformat
import pytest
from nbclient import NotebookClient

from autograder.dev import classroom
from autograder.student import tclib
from tests.builders import REPOSITORY

WRONG_GAIN = ("W_O1[dest, i] = 1.0", "W_O1[dest, i] = 2.0")  # head 1 copies with gain 2
OUR_CODE = re.compile(r"tclib|tc_checks|induction_tools|Traceback|File \"|line \d+|public_check|\bdef \b")


def test_a_check_failure_renders_as_its_message_wrapped_for_nbgrader():
    failure = tclib.CheckFailed("first line " + "word " * 40 + "\n  - a bullet " + "long " * 30 + "\nlast")
    lines = failure._render_traceback_()
    plain = [re.sub(r"\x1b\[[0-9;]*m", "", line) for line in lines]
    assert plain[0].startswith("Check failed: first line")
    assert all(len(line) <= tclib.CheckFailed.WIDTH for line in plain), plain
    assert " ".join(part.strip() for part in plain).count("word") == 40
    bullet = next(i for i, line in enumerate(plain) if line.startswith("  - a bullet"))
    assert plain[bullet + 1].startswith("    long"), "a bullet's continuation aligns after the bullet"
    assert plain[-1] == "last"
    assert isinstance(failure, AssertionError), "still an error to pytest-style callers and to nbgrader"


@pytest.fixture
def wrong_notebook(tmp_path):
    """The released virtual_head notebook with every answer right but head 1's gain, in a copy of
    its release folder (helper modules included)."""
    folder = tmp_path / "attention_heads"
    shutil.copytree(REPOSITORY.release / "attention_heads", folder)
    answers = classroom.model_answers(REPOSITORY, "attention_heads", "virtual_head")
    assert WRONG_GAIN[0] in answers["ex1_head1_answer"]
    answers["ex1_head1_answer"] = answers["ex1_head1_answer"].replace(*WRONG_GAIN)
    notebook = classroom.filled_notebook(REPOSITORY, "attention_heads", "virtual_head", answers)
    path = folder / "virtual_head.ipynb"
    path.write_text(json.dumps(notebook))
    return path


@pytest.mark.slow
def test_a_failing_check_in_a_kernel_shows_the_message_and_no_frames(wrong_notebook, tmp_path, monkeypatch):
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    notebook = nbformat.read(wrong_notebook, as_version=4)
    NotebookClient(
        notebook,
        timeout=120,
        kernel_name="python3",
        allow_errors=True,
        resources={"metadata": {"path": str(wrong_notebook.parent)}},
    ).execute()
    errors = {
        cell.source.split("(")[0]: output
        for cell in notebook.cells
        for output in cell.get("outputs", [])
        if output.output_type == "error"
    }
    assert set(errors) == {"check_head1", "check_simulation"}, errors  # the failed cells, and only they
    shown = "\n".join(re.sub(r"\x1b\[[0-9;]*m", "", line) for line in errors["check_head1"].traceback)
    assert errors["check_head1"].ename == "CheckFailed"
    assert shown.startswith("Check failed: head 1 (W_O1 @ W_V1) is not yet a copy"), shown
    assert "with gain 2; a copy has gain 1" in " ".join(shown.split())
    assert not OUR_CODE.search(shown), f"the student sees our code:\n{shown}"


@pytest.mark.slow
def test_nbgrader_validate_counts_the_failed_checks_and_prints_only_their_messages(wrong_notebook, tmp_path):
    environment = {"IPYTHONDIR": str(tmp_path / "ipython"), "PATH": "/usr/bin:/bin"}
    printed = subprocess.run(
        [sys.executable, "-m", "nbgrader", "validate", wrong_notebook.name],
        cwd=wrong_notebook.parent,
        capture_output=True,
        text=True,
        timeout=300,
        env=environment,
    ).stdout
    assert "VALIDATION FAILED ON 2 CELL(S)" in printed, printed
    errors = [block.split("The error was:", 1)[1] for block in printed.split("=" * 90)[1:]]
    assert len(errors) == 2
    assert "Check failed: head 1 (W_O1 @ W_V1) is not yet a copy" in errors[0]
    assert "gain 1" in errors[0]
    assert not any(OUR_CODE.search(error) for error in errors), printed
    assert not any(line.endswith("...") for line in printed.splitlines()), "nbgrader cut a line of a message"

    # The Validate button of the Assignment List: the same validator, its failed cells counted.
    script = (
        "import json, sys\nfrom nbgrader.validator import Validator\n"
        "print(json.dumps(Validator().validate(sys.argv[1])))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(wrong_notebook)],
        cwd=wrong_notebook.parent,
        capture_output=True,
        text=True,
        timeout=300,
        env=environment,
        check=True,
    )
    failed = json.loads(result.stdout.strip().splitlines()[-1])["failed"]
    assert [cell["source"].split("(")[0] for cell in failed] == ["check_head1", "check_simulation"]
    assert all("Check failed:" in cell["error"] and not OUR_CODE.search(cell["error"]) for cell in failed)
