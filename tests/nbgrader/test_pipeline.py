"""One autograde pipeline, declared once: a step a course adds to nbgrader's configured lists runs
under `nbgrader autograde` and under the batch grader alike."""

import json
import os
import subprocess
import sys

import pytest

from autograder.cli.main import main

pytestmark = pytest.mark.slow

STEPS = """
from nbgrader.preprocessors import NbGraderPreprocessor as Preprocessor  # enabled, as nbgrader registers it


class MarkSanitized(Preprocessor):
    def preprocess(self, nb, resources):
        nb.metadata["course_marks"] = [*nb.metadata.get("course_marks", []), "sanitized"]
        return nb, resources


class MarkGraded(Preprocessor):
    def preprocess(self, nb, resources):
        graded = [cell.outputs[-1]["data"]["text/plain"] for cell in nb.cells if cell.get("outputs")]
        nb.metadata["course_marks"] = [*nb.metadata.get("course_marks", []), f"graded {resources['nbgrader']['student']}"]
        nb.metadata["course_scores_seen"] = graded
        return nb, resources
"""


def _marks(root, student="ada"):
    nb = json.loads((root / "autograded" / student / "mini" / "mini.ipynb").read_text())
    return nb["metadata"].get("course_marks"), nb["metadata"].get("course_scores_seen")


def test_a_step_the_course_adds_runs_on_both_paths(mini_class, tmp_path, monkeypatch):
    steps = tmp_path / "steps"
    steps.mkdir()
    (steps / "course_steps.py").write_text(STEPS)
    monkeypatch.syspath_prepend(str(steps))
    with open(mini_class / "nbgrader_config.py", "a", encoding="utf-8") as config:
        config.write(
            "\nc.Autograde.sanitize_preprocessors.append('course_steps.MarkSanitized')\n"
            "c.Autograde.autograde_preprocessors.append('course_steps.MarkGraded')\n"
        )
    assert main(["grade", "--course", str(mini_class), "mini", "--jobs", "2", "--quiet", "--no-feedback"]) == 0
    batch_marks, batch_seen = _marks(mini_class)
    assert batch_marks == ["sanitized", "graded ada"]
    assert batch_seen  # it ran after grading: the scores were in the test cells
    subprocess.run(
        [sys.executable, "-m", "nbgrader", "autograde", "mini", "--force", "--student=ada", "--log-level=ERROR"],
        cwd=mini_class,
        env={**os.environ, "PYTHONPATH": str(steps)},
        check=True,
        capture_output=True,
    )
    assert _marks(mini_class) == (batch_marks, batch_seen)
