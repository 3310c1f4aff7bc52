"""What the batch grader does once per run that nbgrader does once per notebook or per row.

nbgrader's CheckCellMetadata builds a metadata validator (reading three schema files) for every
notebook, and `jsonschema.validate` checks the schema against its meta-schema for every cell:
most of a notebook's sanitising time. Its gradebook API commits after every row it touches
(a student, a submission), and each commit of an SQLite gradebook waits for the disk. Here the
same checks run with a validator built once per run, a chunk's rows go in one transaction, and
a chunk's new submissions in one insert per table.
Verdicts, errors and rows are those of nbgrader's own code (the new submissions' rows: compared with
add_submission's in a test).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json

from nbgrader.nbgraderformat import MetadataValidator, SchemaTooNewError, SchemaTooOldError
from nbgrader.preprocessors import CheckCellMetadata

MAX_REMEMBERED = 10_000  # distinct valid cell metadata kept: a class of hostile metadata stays bounded


class _OnceCompiledValidator(MetadataValidator):
    """nbgrader's metadata validator, its cell schema checked and compiled once."""

    def __init__(self) -> None:
        from jsonschema.validators import validator_for

        super().__init__()
        kind = validator_for(self.schema)
        kind.check_schema(self.schema)  # what jsonschema.validate does on every call
        self.compiled = kind(self.schema)
        self.valid: set[str] = set()  # cell metadata (as sorted JSON) that validated

    def validate_cell(self, cell) -> None:
        """BaseMetadataValidator.validate_cell, with the compiled schema (jsonschema.validate's
        own steps: the best match among the errors is raised). Metadata found valid once is
        not checked again: after RestoreCourseMetadata every submission's cells carry the
        release's, so a class repeats the same few dozen."""
        from jsonschema.exceptions import best_match

        if "nbgrader" not in cell.metadata:
            return
        try:
            seen = json.dumps(cell.metadata["nbgrader"], sort_keys=True)
        except (TypeError, ValueError):
            seen = None
        if seen is not None and seen in self.valid:
            return
        schema = cell.metadata["nbgrader"].get("schema_version", 0)
        if schema < self.schema_version:
            raise SchemaTooOldError(
                f"Outdated schema version: {schema} (expected {self.schema_version})", schema, self.schema_version
            )
        if schema > self.schema_version:
            raise SchemaTooNewError(
                f"Schema version is too new: {schema} (expected {self.schema_version})", schema, self.schema_version
            )
        error = best_match(self.compiled.iter_errors(cell.metadata["nbgrader"]))
        if error is not None:
            raise error
        if seen is not None and len(self.valid) < MAX_REMEMBERED:
            self.valid.add(seen)


@functools.cache
def _validator() -> _OnceCompiledValidator:
    return _OnceCompiledValidator()


class CheckCellMetadataOnce(CheckCellMetadata):
    """nbgrader's CheckCellMetadata (same verdicts, same log and error) with one validator a run."""

    def preprocess(self, nb, resources):
        import traceback

        from nbgrader.nbgraderformat import ValidationError

        try:
            _validator().validate_nb(nb)
        except ValidationError:
            self.log.error(traceback.format_exc())
            msg = "Notebook failed to validate; the nbgrader metadata may be corrupted."
            self.log.error(msg)
            raise ValidationError(msg) from None
        return nb, resources


def run_once_equivalent(step: type) -> type:
    """The step to run in the batch for a configured step: the once-per-run equivalent of
    nbgrader's CheckCellMetadata (exactly that class, not a course's subclass), else the step."""
    return CheckCellMetadataOnce if step is CheckCellMetadata else step


@contextlib.contextmanager
def one_transaction(gradebook):
    """nbgrader's gradebook calls in the block commit once, at its end: each of their commits
    only flushes (so constraints are still checked where nbgrader checks them). An error leaves
    the block with the transaction rolled back, as nbgrader's own rollback would."""
    session = gradebook.db
    session.commit = session.flush  # an instance attribute: only this session, only in the block
    try:
        yield gradebook
    except BaseException:
        del session.commit
        session.rollback()
        raise
    del session.commit
    session.commit()


def update_or_create_submissions(gradebook, assignment: str, timestamps: dict) -> None:
    """nbgrader's `update_or_create_submission` for many students (`timestamps`: student id ->
    the submission's time, or None), in the caller's transaction. A submission that exists is
    updated by nbgrader's own call; new ones get the rows `Gradebook.add_submission` makes (the
    submission, a submitted notebook per notebook, a grade per grade cell, a comment per
    solution cell, both for a task cell) in one insert per table, where add_submission builds
    fifty ORM objects a student (most of a new class's recording time). The rows are compared
    with add_submission's in a test."""
    from nbgrader import utils
    from nbgrader.api import Comment, Grade, SubmittedAssignment, SubmittedNotebook, new_uuid

    found = gradebook.find_assignment(assignment)
    existing = {
        student_id
        for (student_id,) in gradebook.db.query(SubmittedAssignment.student_id).filter(
            SubmittedAssignment.assignment_id == found.id,
            SubmittedAssignment.student_id.in_(list(timestamps)),
        )
    }
    submissions, notebooks, grades, comments = [], [], [], []
    for student, timestamp in timestamps.items():
        if student in existing:
            gradebook.update_or_create_submission(
                assignment, student, **({"timestamp": timestamp} if timestamp else {})
            )
            continue
        gradebook.find_student(student)  # as add_submission: MissingEntry for a student not in the gradebook
        submission_id = new_uuid()
        submissions.append(
            {
                "id": submission_id,
                "assignment_id": found.id,
                "student_id": student,
                "timestamp": utils.parse_utc(timestamp) if timestamp else None,  # add_submission: NULL unless given
            }
        )
        for notebook in found.notebooks:
            notebook_id = new_uuid()
            notebooks.append({"id": notebook_id, "assignment_id": submission_id, "notebook_id": notebook.id})
            for cell in notebook.grade_cells:
                grades.append({"id": new_uuid(), "notebook_id": notebook_id, "cell_id": cell.id})
            for cell in [*notebook.solution_cells, *notebook.task_cells]:
                comments.append({"id": new_uuid(), "notebook_id": notebook_id, "cell_id": cell.id})
            for cell in notebook.task_cells:
                grades.append({"id": new_uuid(), "notebook_id": notebook_id, "cell_id": cell.id})
    for model, rows in (
        (SubmittedAssignment, submissions),
        (SubmittedNotebook, notebooks),
        (Grade, grades),
        (Comment, comments),
    ):
        if rows:
            gradebook.db.execute(model.__table__.insert(), rows)


def submitted_notebooks(gradebook, assignment: str, students) -> dict:
    """The gradebook's submitted notebooks of `assignment` of these students, by (student,
    notebook name), each with its grades, comments and their cells, its submission and the
    assignment, in four queries: recording then makes no query per row. (Looked up one by one, a
    grade's cell is fetched again for every student: the session keeps rows only while something
    refers to them.)"""
    from nbgrader.api import Assignment, Comment, Grade, Student, SubmittedAssignment, SubmittedNotebook
    from sqlalchemy.orm import joinedload, selectinload

    query = (
        gradebook.db.query(SubmittedNotebook)
        .join(SubmittedAssignment, SubmittedNotebook.assignment_id == SubmittedAssignment.id)
        .join(Assignment, SubmittedAssignment.assignment_id == Assignment.id)
        .join(Student, SubmittedAssignment.student_id == Student.id)
        .filter(Assignment.name == assignment, Student.id.in_(list(students)))
    )
    rows = query.options(
        joinedload(SubmittedNotebook.notebook),
        joinedload(SubmittedNotebook.assignment).joinedload(SubmittedAssignment.assignment),
        joinedload(SubmittedNotebook.assignment).joinedload(SubmittedAssignment.student),
        selectinload(SubmittedNotebook.grades).joinedload(Grade.cell),
        selectinload(SubmittedNotebook.comments).joinedload(Comment.cell),
    ).all()
    return {(row.assignment.student.id, row.notebook.name): row for row in rows}


@dataclasses.dataclass
class NotebookScores:
    """What a feedback page shows of one submitted notebook (what nbgrader's GetGrades reads)."""

    score: float  # before the late penalty
    max_score: float
    late_penalty: float | None
    grades: dict[str, tuple[float | None, float]]  # grade id -> (score, points)
    comments: dict[str, str | None]  # grade id -> comment


def notebook_scores(gradebook, assignment: str, student: str, notebook: str) -> NotebookScores | None:
    """One submitted notebook's scores and comments as plain rows, or None if it was not submitted:
    nbgrader's own SQL expressions (SubmittedNotebook.score, Grade.max_score, Comment.comment, ...)
    selected in four small queries, with no row loaded as an object (a page needs no objects,
    and loading them cost more than the rest of its gradebook reads)."""
    from nbgrader.api import Assignment, BaseCell, Comment, Grade, Notebook, SubmittedAssignment, SubmittedNotebook
    from sqlalchemy import select

    db = gradebook.db
    found = db.execute(
        select(
            SubmittedNotebook.id,
            SubmittedNotebook.notebook_id,
            SubmittedNotebook.score,
            SubmittedNotebook.max_score,
            SubmittedNotebook.late_submission_penalty,
        )
        .join(SubmittedAssignment, SubmittedNotebook.assignment_id == SubmittedAssignment.id)
        .join(Assignment, SubmittedAssignment.assignment_id == Assignment.id)
        .join(Notebook, SubmittedNotebook.notebook_id == Notebook.id)
        .where(Assignment.name == assignment, SubmittedAssignment.student_id == student, Notebook.name == notebook)
    ).one_or_none()
    if found is None:
        return None
    names = dict(db.execute(select(BaseCell.id, BaseCell.name).where(BaseCell.notebook_id == found.notebook_id)).all())
    grades = db.execute(select(Grade.cell_id, Grade.score, Grade.max_score).where(Grade.notebook_id == found.id))
    comments = db.execute(select(Comment.cell_id, Comment.comment).where(Comment.notebook_id == found.id))
    return NotebookScores(
        score=found.score,
        max_score=found.max_score,
        late_penalty=found.late_submission_penalty,
        grades={names[cell]: (score, points) for cell, score, points in grades},
        comments={names[cell]: comment for cell, comment in comments},
    )
