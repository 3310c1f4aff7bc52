"""Per-student variants: which variant a submission is graded against, and whose it claims to be.

An assignment with variants has a locked set-up cell that calls its public module's
`my_variant(per_student=..., salt=...)`; nbgrader's generate_assignment writes the course's
settings into that call (`autograder.nbgrader.preprocessors.StudentVariants`). The release
notebook is therefore the one record of the settings the students got, and the grader reads
them from there, never from the submission. Its checks module names the drawing function
(`VARIANT = tc.variant_for`), which the grader runs in its own process from the course's copy.

The student a variant is drawn for is the submitter nbgrader knows (submitted/<student_id>/),
or, for a self-check, the id given on the command line, else the one the notebook recorded.
What the notebook recorded (output metadata of the set-up cell) is untrusted: it only words a
note for the instructor when it names someone else.
"""

from __future__ import annotations

import ast
import dataclasses
import re

from autograder.core import notebook as nbio

SETUP_CALL = "my_variant"
RECORD_KEY = "autograder_variant"
# Notebook metadata where nbgrader's first sanitising step keeps the record before it clears the
# outputs (autograder.nbgrader.preprocessors.RestoreCourseMetadata); only that step writes it.
KEPT_RECORD_KEY = "autograder_recorded_variant"
MAX_STUDENT_ID = 200  # characters of a recorded id kept (quoted when shown)


@dataclasses.dataclass(frozen=True)
class Settings:
    """The course's variant settings as the release's set-up cell carries them."""

    per_student: bool = False
    salt: str = ""


_STRING = r"""(?:"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')"""
# The set-up call as the course's source notebooks spell it (and as `setup_call` writes it).
SETUP_CALL_PATTERN = re.compile(
    rf"{SETUP_CALL}\(per_student=(?:True|False), salt={_STRING}(?:, student_id={_STRING})?\)"
)


def setup_call(settings: Settings, student_id: str | None = None) -> str:
    """The set-up call with these settings (and, for one student's solution, their id)."""
    student = f", student_id={student_id!r}" if student_id is not None else ""
    return f"{SETUP_CALL}(per_student={settings.per_student!r}, salt={settings.salt!r}{student})"


def with_settings(source: str, settings: Settings, student_id: str | None = None) -> str:
    """`source` with its set-up call carrying `settings` (unchanged when it has none)."""
    return SETUP_CALL_PATTERN.sub(lambda _: setup_call(settings, student_id), source)


def _literal_keywords(call: ast.Call) -> dict:
    values = {}
    for keyword in call.keywords:
        if keyword.arg is None:
            continue
        try:
            values[keyword.arg] = ast.literal_eval(keyword.value)
        except ValueError:
            continue
    return values


def settings_of(release: dict) -> Settings | None:
    """The settings in a (trusted) release notebook's `my_variant(...)` call, or None when the
    notebook draws no variant."""
    for cell in release.get("cells", ()):
        if cell.get("cell_type") != "code":
            continue
        try:
            tree = ast.parse(nbio.source_text(cell.get("source", "")))
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == SETUP_CALL:
                found = _literal_keywords(node)
                return Settings(bool(found.get("per_student", False)), str(found.get("salt", "")))
    return None


def recorded_student(notebook: dict) -> tuple[bool, str | None]:
    """(whether the notebook records a variant, the student id it was drawn for or None for
    the default), read from the set-up cell's output metadata (or where sanitising kept it).
    Untrusted and bounded."""
    kept = notebook.get("metadata", {}).get(KEPT_RECORD_KEY) if isinstance(notebook.get("metadata"), dict) else None
    if isinstance(kept, dict) and kept.get("recorded") is True:
        student = kept.get("student")
        return True, student[:MAX_STUDENT_ID] if isinstance(student, str) else None
    for cell in notebook.get("cells", ()):
        if not isinstance(cell, dict) or cell.get("cell_type") != "code":
            continue
        outputs = cell.get("outputs")
        for output in outputs if isinstance(outputs, list) else ():
            metadata = output.get("metadata") if isinstance(output, dict) else None
            record = metadata.get(RECORD_KEY) if isinstance(metadata, dict) else None
            if isinstance(record, dict):
                student = record.get("student")
                if student is None:
                    return True, None
                if isinstance(student, str):
                    return True, student[:MAX_STUDENT_ID]
    return False, None


@dataclasses.dataclass(frozen=True)
class Choice:
    """The variant one submission is graded against, and what to tell about it."""

    student_id: str | None  # whose variant (None: the exercise page's own set-up)
    note: str | None = None  # for the student and the instructor: the notebook was drawn for another
    drawn_for_other: bool = False
    table: dict | None = None  # the variant as the grader drew it ({mime type: text}), shown in feedback


def keep_record(nb) -> None:
    """Keep the notebook's variant record in its metadata before its outputs are cleared (a
    record the student put there is dropped first)."""
    metadata = nb["metadata"]
    metadata.pop(KEPT_RECORD_KEY, None)
    has_record, student = recorded_student(nb)
    if has_record:
        metadata[KEPT_RECORD_KEY] = {"recorded": True, "student": student}


def choose(settings: Settings | None, submitter: str | None, notebook: dict) -> Choice:
    """Whose variant grades this submission: the submitter's when the course draws per-student
    variants (the recorded id stands in only where no submitter is known: a self-check)."""
    if settings is None or not settings.per_student:
        return Choice(None)
    has_record, recorded = recorded_student(notebook)
    student = submitter if submitter is not None else recorded
    if student is None:
        return Choice(
            None,
            "no student id is known for this notebook, so it was graded against the exercise "
            "page's own set-up (give --student ID to grade it as that student's variant)",
        )
    if has_record and recorded != student:
        claimed = f"student '{nbio.quote(recorded, 80)}'" if recorded else "no student (the exercise page's own set-up)"
        whose = f"student '{nbio.quote(student, 80)}'"
        return Choice(
            student,
            f"this notebook's set-up cell shows the variant drawn for {claimed}, but it was "
            f"handed in as the work of {whose}: it was graded against the variant of {whose} "
            "(re-run the set-up cell to see it)",
            drawn_for_other=True,
        )
    return Choice(student)
