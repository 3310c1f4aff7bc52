"""Make student submissions the way students do: by filling in the release notebooks.

Used by the demo, the tests and the benchmark, so all of them grade realistic notebooks built
from the one source of truth (the instructor notebooks and the variant libraries) rather than
from committed copies that could go stale.
"""

from __future__ import annotations

import contextlib
import io
import json
import pathlib
import shutil
import sys

import numpy as np

from autograder.core import notebook as nbio
from autograder.core import variants
from autograder.core.course import Course
from autograder.nbgrader.release import solution_notebook


def _text(source) -> str:
    return "".join(source) if isinstance(source, list) else source


def model_answers(course: Course, assignment: str, notebook: str) -> dict[str, str]:
    """grade_id -> the full reference text of every answer (solution) cell, markers removed."""
    source = json.loads((course.source / assignment / f"{notebook}.ipynb").read_text(encoding="utf-8"))
    answers = {}
    for original, plain in zip(source["cells"], solution_notebook(source)["cells"]):
        meta = original.get("metadata", {}).get("nbgrader", {})
        if meta.get("solution"):
            answers[meta["grade_id"]] = _text(plain["source"])
    return answers


def release_notebook(course: Course, assignment: str, notebook: str) -> dict:
    return json.loads((course.release / assignment / f"{notebook}.ipynb").read_text(encoding="utf-8"))


def filled_notebook(
    course: Course,
    assignment: str,
    notebook: str,
    replacements: dict[str, str] | None = None,
    blank: bool = False,
) -> dict:
    """The release notebook with every answer cell filled in as a student would.

    Answer cells get the model answer, or `replacements[grade_id]` when given; `blank=True`
    leaves the release untouched except for the replacements.
    """
    replacements = replacements or {}
    answers = {} if blank else model_answers(course, assignment, notebook)
    result = json.loads(json.dumps(release_notebook(course, assignment, notebook)))
    for cell in result["cells"]:
        grade_id = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
        if grade_id in replacements:
            cell["source"] = replacements[grade_id]
        elif grade_id in answers:
            cell["source"] = answers[grade_id]
    return result


def write_submission(
    course_root: pathlib.Path,
    student: str,
    assignment: str,
    notebooks: dict[str, dict],
    timestamp: str = "2026-11-28 09:00:00.000000 UTC",
) -> pathlib.Path:
    """Put one student's notebooks where `nbgrader collect` would: submitted/<student>/<assignment>/."""
    folder = pathlib.Path(course_root) / "submitted" / student / assignment
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for name, notebook in notebooks.items():
        (folder / f"{name}.ipynb").write_text(json.dumps(notebook, indent=1), encoding="utf-8")
    (folder / "timestamp.txt").write_text(timestamp)
    return folder


def typed_answers(course: Course, assignment: str, notebook: str, student_id: str, salt: str = "") -> dict[str, str]:
    """The model answers as one student types them for their own variant: the notebook is run
    (in this process: the model answers are the course's own code) with that student's set-up,
    and each answer cell becomes literal values of the names the grader reads (arrays, numbers,
    sets); a cell that defines a function keeps its code. What a copier pastes is such values."""
    spec = course.find_spec(assignment, notebook)
    wanted = set(spec.extract) if spec else set()
    answers = model_answers(course, assignment, notebook)
    settings = variants.Settings(True, salt)
    helpers = str(course.release / assignment)
    before = set(sys.modules)
    sys.path.insert(0, helpers)
    namespace: dict = {"__name__": "__main__"}
    typed = {}
    try:
        for cell in release_notebook(course, assignment, notebook)["cells"]:
            if cell["cell_type"] != "code":
                continue
            grade_id = nbio.grade_id(cell)
            source = variants.with_settings(answers.get(grade_id, _text(cell["source"])), settings, student_id)
            with contextlib.redirect_stdout(io.StringIO()):
                exec(compile(nbio.to_python(source), f"<{grade_id or 'cell'}>", "exec"), namespace)
            if grade_id not in answers:
                continue
            names = sorted(nbio.assigned_names(source) & wanted)
            if any(callable(namespace.get(name)) for name in names):
                typed[grade_id] = source
                continue
            typed[grade_id] = "\n".join(f"{name} = {_literal(namespace[name])}" for name in names) + "\n"
    finally:
        sys.path.remove(helpers)
        for name in set(sys.modules) - before:
            if str(getattr(sys.modules[name], "__file__", "") or "").startswith(helpers):
                del sys.modules[name]
    return typed


def _literal(value) -> str:
    if isinstance(value, np.ndarray):
        return f"np.array({value.tolist()!r})"
    if isinstance(value, np.generic):
        return repr(value.item())
    return repr(value)


def as_run_by(notebook: dict, assignment: str, student_id: str | None) -> dict:
    """`notebook` as it is saved after its student ran it: the set-up cell's output records whose
    variant it showed (as the public module's Variant display does in Jupyter)."""
    result = json.loads(json.dumps(notebook))
    for cell in result["cells"]:
        if cell["cell_type"] == "code" and variants.SETUP_CALL in _text(cell["source"]):
            cell["outputs"] = [
                {
                    "output_type": "execute_result",
                    "execution_count": 1,
                    "data": {"text/plain": f"variant drawn for {student_id}"},
                    "metadata": {variants.RECORD_KEY: {"assignment": assignment, "student": student_id}},
                }
            ]
            cell["execution_count"] = 1
    return result
