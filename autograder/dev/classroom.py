"""Make student submissions the way students do: by filling in the release notebooks.

Used by the demo, the tests and the benchmark, so all of them grade realistic notebooks built
from the one source of truth (the instructor notebooks and the variant libraries) rather than
from committed copies that could go stale.
"""

from __future__ import annotations

import json
import pathlib
import shutil

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
