"""Grade by question: one hand-graded part across all students, with rubric items.

A Jupyter server extension beside nbgrader's formgrader, behind the same authentication, at
`<base_url>/grading-view/`. The page (static/grading_view.html and .js, no build step) shows one
student's answer to one part, rendered inert, with the part's question, model answer and rubric;
the keyboard applies rubric items (digits), saves and moves to the next ungraded answer.

nbgrader stays the record: a grade is written as nbgrader's manual score and comment of that
cell (the comment lists the items given), so the formgrader, `nbgrader export` and feedback
show it. The rubric and the items each answer got are kept in tables of our own (`tc_rubric_*`)
in the gradebook's database, through SQLAlchemy on the same database URL (SQLite, PostgreSQL):

* an answer row stores the score and comment last written to nbgrader: when nbgrader's differ,
  someone changed them by hand in the formgrader, and the view says *overridden* and never
  replaces them without being asked to;
* an answer row has a version: a save names the version it started from, and a save from an
  older version is refused (409), never a lost update;
* a claim row per ungraded answer being graded: two graders never get the same answer next.

Rubric items start as the items of the part's itemised mark scheme in source/
(docs/MARKING.md); changing an item's points or text, or deleting it, re-scores and rewrites
every answer that had it. A part's score is the sum of its items (negative ones deduct),
within 0 and the part's points.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import hashlib
import io
import json
import os
import pathlib
import re
import time
from typing import Any

import sqlalchemy as sa
from tornado import web

STATIC = pathlib.Path(__file__).resolve().parent / "static"
URL = "grading-view"
CLAIM_SECONDS = 20 * 60  # a claim left by a grader who walked away expires
NO_RESPONSE = "No response."  # nbgrader's auto comment for an answer cell left as released

# -- our tables ---------------------------------------------------------------------------------

metadata = sa.MetaData()
_KEY = ("assignment", "notebook", "part")


def _key_columns(*more: str) -> list[sa.Column]:
    return [sa.Column(name, sa.String(255), primary_key=True) for name in (*_KEY, *more)]


rubric_parts = sa.Table("tc_rubric_part", metadata, *_key_columns(), sa.Column("seeded", sa.Float, nullable=False))
rubric_items = sa.Table(
    "tc_rubric_item",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    *[sa.Column(name, sa.String(255), nullable=False, index=True) for name in _KEY],
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("points", sa.Float, nullable=False),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("note", sa.Text, nullable=False, default=""),
)
rubric_answers = sa.Table(
    "tc_rubric_answer",
    metadata,
    *_key_columns("student"),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("items", sa.Text, nullable=False),  # JSON list of item ids given
    sa.Column("comment", sa.Text, nullable=False),  # the grader's free comment
    sa.Column("score", sa.Float, nullable=False),  # as last written to nbgrader
    sa.Column("written_comment", sa.Text, nullable=False),  # as last written to nbgrader
    sa.Column("grader", sa.String(255), nullable=False),
    sa.Column("updated", sa.Float, nullable=False),
)
rubric_claims = sa.Table(
    "tc_rubric_claim",
    metadata,
    *_key_columns("student"),
    sa.Column("grader", sa.String(255), nullable=False),
    sa.Column("at", sa.Float, nullable=False),
)


def _match(table: sa.Table, part, student: str | None = None):
    """The WHERE clause of one part's rows in one of our tables (one student's, if given)."""
    clauses = [table.c.assignment == part[0], table.c.notebook == part[1], table.c.part == part[2]]
    return sa.and_(*clauses, *([table.c.student == student] if student is not None else []))


# -- the mark scheme as rubric items ------------------------------------------------------------

_ITEM = re.compile(r"^[ \t]*[*-][ \t]+([+-]?\d+(?:\.\d+)?)[ \t]*:[ \t]*(.*)$")


def scheme_items(scheme: str) -> list[tuple[float, str]]:
    """(points, text) of each `* 0.5: what earns it` item of a mark scheme; an item's indented
    continuation lines belong to it."""
    items: list[tuple[float, str]] = []
    for line in scheme.splitlines():
        if match := _ITEM.match(line):
            items.append((float(match.group(1)), match.group(2).strip()))
        elif items and line[:1] in (" ", "\t") and line.strip():
            points, text = items[-1]
            items[-1] = (points, f"{text} {line.strip()}")
    return items


def clamp(total: float, maximum: float) -> float:
    return round(min(max(total, 0.0), maximum), 6)


def nbgrader_comment(items: list[dict], comment: str) -> str:
    """The comment written to nbgrader (what the student reads): the items given, then the free comment."""
    lines = [f"[{item['points']:+g}] {item['text']}" for item in items]
    if comment.strip():
        lines += ["", comment.strip()] if lines else [comment.strip()]
    return "\n".join(lines)


def normalised(text: str) -> str:
    """An answer as compared for identical answers: spaces collapsed, case folded."""
    return " ".join(text.split()).casefold()


def order_key(grader: str, part: tuple[str, str, str], student: str) -> str:
    """A grader's stable pseudo-random order of a part's answers."""
    return hashlib.sha256("\0".join((grader, *part, student)).encode()).hexdigest()


def in_share(student: str, share: str | None) -> bool:
    """Whether `student` is in the share `k/n` of a part's answers (all when no share)."""
    if not share:
        return True
    k, n = (int(x) for x in share.split("/"))
    return int(hashlib.sha256(student.encode()).hexdigest(), 16) % n == k - 1


# -- rendering, made inert ----------------------------------------------------------------------


@functools.lru_cache(maxsize=512)  # the page asks for the same question and model answer with every answer
def render_inert(markdown: str) -> str:
    """An answer's Markdown and maths as HTML with nothing active, exactly as the formgrader and
    feedback pages show it: the course's Markdown and MathML renderer, whose output is cleaned by
    the course's one allowlist (`inert.clean_fragment`: links of http(s)/mailto only, no remote
    loads) within the same TeX budget."""
    from autograder.nbgrader import maths

    return maths.markdown_to_html(markdown)


# -- the course: parts, answers, questions ------------------------------------------------------


@dataclasses.dataclass
class Answer:
    """One student's answer to one part, as nbgrader has it."""

    student: str
    grade: Any  # nbgrader.api.Grade
    comment: Any  # nbgrader.api.Comment
    text: str = ""

    @property
    def no_response(self) -> bool:
        return self.comment.auto_comment == NO_RESPONSE and self.grade.manual_score is None


class Course:
    """The course the formgrader serves: nbgrader's course directory and gradebook."""

    def __init__(self, coursedir, log):
        from autograder.nbgrader.course_view import CourseView

        self.coursedir, self.log = coursedir, log
        self.course_view = CourseView(coursedir)
        self.gradebook = self.course_view.gradebook()
        self.engine = self.gradebook.engine
        metadata.create_all(self.engine)
        self._texts: dict[str, tuple[tuple, dict]] = {}
        self._questions: dict[tuple, tuple[tuple, dict]] = {}

    def session(self):
        from sqlalchemy.orm import Session

        return Session(self.engine, future=True)

    # parts

    def parts(self, session) -> list[dict]:
        """Every hand-graded part of every assignment: (assignment, notebook, part, points)."""
        from nbgrader.api import Assignment

        found = []
        query = session.query(Assignment).filter(Assignment.course_id == self.coursedir.course_id)
        for assignment in query.order_by(Assignment.name):
            for notebook in sorted(assignment.notebooks, key=lambda nb: nb.name):
                solutions = {cell.name for cell in notebook.solution_cells}
                for cell in notebook.grade_cells:
                    if cell.name in solutions:
                        found.append(
                            {
                                "assignment": assignment.name,
                                "notebook": notebook.name,
                                "part": cell.name,
                                "points": cell.max_score,
                            }
                        )
        return found

    def max_score(self, session, part) -> float:
        from nbgrader.api import Assignment, GradeCell, Notebook

        cell = (
            session.query(GradeCell)
            .join(Notebook, GradeCell.notebook_id == Notebook.id)
            .join(Assignment, Notebook.assignment_id == Assignment.id)
            .filter(Assignment.name == part[0], Notebook.name == part[1], GradeCell.name == part[2])
            .filter(Assignment.course_id == self.coursedir.course_id)
            .one_or_none()
        )
        if cell is None:
            raise web.HTTPError(404, "no such hand-graded part")
        return cell.max_score

    def answers(self, session, part, with_text=True) -> list[Answer]:
        """Every submitted answer to the part, by student."""
        from nbgrader.api import (
            Assignment,
            Comment,
            Grade,
            GradeCell,
            Notebook,
            SolutionCell,
            SubmittedAssignment,
            SubmittedNotebook,
        )
        from sqlalchemy.orm import aliased

        # Grade.name and Comment.name are association proxies: the cells' names are compared instead
        graded, answered = aliased(GradeCell), aliased(SolutionCell)
        rows = (
            session.query(Grade, Comment, SubmittedAssignment.student_id)
            .join(graded, Grade.cell_id == graded.id)
            .join(SubmittedNotebook, Grade.notebook_id == SubmittedNotebook.id)
            .join(Notebook, SubmittedNotebook.notebook_id == Notebook.id)
            .join(SubmittedAssignment, SubmittedNotebook.assignment_id == SubmittedAssignment.id)
            .join(Assignment, SubmittedAssignment.assignment_id == Assignment.id)
            .join(Comment, Comment.notebook_id == SubmittedNotebook.id)
            .join(answered, sa.and_(Comment.cell_id == answered.id, answered.name == graded.name))
            .filter(Assignment.name == part[0], Notebook.name == part[1], graded.name == part[2])
            .filter(Assignment.course_id == self.coursedir.course_id)
            .all()
        )
        found = [Answer(student, grade, comment) for grade, comment, student in rows]
        if with_text:
            for answer in found:
                answer.text = self.answer_text(part, answer.student)
        return sorted(found, key=lambda answer: answer.student)

    def answer_text(self, part, student: str) -> str:
        """The student's cell, from their autograded notebook (as the formgrader shows it)."""
        from autograder.core.notebook import read_notebook, source_text

        folder = self.course_view.autograded(student, part[0])
        path = os.path.join(folder, f"{part[1]}.ipynb")
        try:
            stat = os.lstat(path)
        except OSError:
            return ""
        stamp = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        cached = self._texts.get(path)
        if cached is None or cached[0] != stamp:
            try:
                notebook = read_notebook(path, root=self.coursedir.root)
            except Exception as error:  # noqa: BLE001 - shown as an empty answer; the formgrader says more
                self.log.warning("grading view: cannot read %s: %s", path, error)
                notebook = {"cells": []}
            texts = {}
            for cell in notebook.get("cells", []):
                found = cell.get("metadata", {}).get("nbgrader", {})
                if isinstance(found, dict) and isinstance(found.get("grade_id"), str):
                    texts[found["grade_id"]] = source_text(cell.get("source", ""))
            self._texts[path] = cached = (stamp, texts)
        return cached[1].get(part[2], "")

    def question(self, part) -> dict:
        """The part's question (the markdown cells before it), model answer and mark scheme, from source/."""
        from autograder.core.notebook import read_notebook

        folder = self.course_view.source(part[0])
        path = os.path.join(folder, f"{part[1]}.ipynb")
        try:
            stat = os.stat(path)
            stamp = (stat.st_mtime_ns, stat.st_size)
            if (cached := self._questions.get(part)) is not None and cached[0] == stamp:
                return cached[1]
            notebook = read_notebook(path, root=self.coursedir.root)
        except Exception:  # noqa: BLE001 - an assignment without a source notebook: nothing to show
            return {"question": "", "model_answer": "", "scheme": None}
        self._questions[part] = (stamp, found := self._question(notebook, part))
        return found

    @staticmethod
    def _question(notebook: dict, part) -> dict:
        from autograder.core.notebook import grade_id, source_text
        from autograder.nbgrader import markscheme

        cells = notebook.get("cells", [])
        for index, cell in enumerate(cells):
            if grade_id(cell) == part[2]:
                before: list[str] = []
                for earlier in reversed(cells[max(0, index - 3) : index]):
                    if earlier.get("cell_type") != "markdown" or grade_id(earlier):
                        break
                    before.insert(0, source_text(earlier.get("source", "")))
                scheme = markscheme.scheme_of(cell)
                return {
                    "question": "\n\n".join(before),
                    "model_answer": scheme.model_answer if scheme else "",
                    "scheme": scheme.scheme if scheme else None,
                }
        return {"question": "", "model_answer": "", "scheme": None}

    # rubric

    def rubric(self, session, part) -> list[dict]:
        """The part's rubric items in order; seeded from the mark scheme the first time."""
        if session.execute(sa.select(rubric_parts).where(_match(rubric_parts, part))).first() is None:
            scheme = self.question(part)["scheme"] or ""
            try:
                session.execute(rubric_parts.insert().values(**dict(zip(_KEY, part)), seeded=time.time()))
                for position, (points, text) in enumerate(scheme_items(scheme)):
                    session.execute(
                        rubric_items.insert().values(
                            **dict(zip(_KEY, part)), position=position, points=points, text=text, note=""
                        )
                    )
                session.commit()
            except sa.exc.IntegrityError:
                session.rollback()  # another request seeded it first
        rows = session.execute(
            sa.select(rubric_items).where(_match(rubric_items, part)).order_by(rubric_items.c.position)
        )
        return [{"id": r.id, "points": r.points, "text": r.text, "note": r.note} for r in rows]

    def answer_rows(self, session, part) -> dict[str, sa.Row]:
        rows = session.execute(sa.select(rubric_answers).where(_match(rubric_answers, part)))
        return {row.student: row for row in rows}

    # the state of one answer, for the page

    def state(self, answer: Answer, row, rubric_by_id: dict) -> dict:
        grade, comment = answer.grade, answer.comment
        overridden = (
            grade.manual_score != row.score or (comment.manual_comment or "") != row.written_comment
            if row is not None
            else grade.manual_score is not None
        )
        return {
            "student": answer.student,
            "version": row.version if row is not None else 0,
            "items": [i for i in json.loads(row.items) if i in rubric_by_id] if row is not None else [],
            "comment": row.comment if row is not None else "",
            "graded": row is not None or grade.manual_score is not None,
            "no_response": answer.no_response and row is None,
            "score": grade.manual_score if grade.manual_score is not None else grade.auto_score,
            "overridden": overridden,
            "nbgrader_comment": comment.manual_comment or "",
            "grader": row.grader if row is not None else "",
        }

    # writing a grade

    def write(self, session, part, answer: Answer, items: list[dict], comment: str, maximum: float, version, grader):
        """Record one answer's items and write its score and comment to nbgrader, in the same
        transaction as the version check (the caller commits); False on a version conflict."""
        score = clamp(sum(item["points"] for item in items), maximum)
        text = nbgrader_comment(items, comment)
        values = {
            "items": json.dumps([item["id"] for item in items]),
            "comment": comment,
            "score": score,
            "written_comment": text,
            "grader": grader,
            "updated": time.time(),
        }
        key = dict(zip((*_KEY, "student"), (*part, answer.student)))
        if version == 0:  # a first grade; a concurrent first grade fails at commit (the caller's 409)
            where = _match(rubric_answers, part, answer.student)
            if session.execute(sa.select(rubric_answers.c.version).where(where)).first() is not None:
                return False
            session.execute(rubric_answers.insert().values(**key, version=1, **values))
        else:
            where = _match(rubric_answers, part, answer.student)
            done = session.execute(
                rubric_answers.update()
                .where(where, rubric_answers.c.version == version)
                .values(version=version + 1, **values)
            )
            if done.rowcount != 1:
                return False
        answer.grade.manual_score = score
        answer.grade.needs_manual_grade = False
        answer.comment.manual_comment = text
        session.execute(rubric_claims.delete().where(_match(rubric_claims, part, answer.student)))
        return True

    def rescore(self, session, part) -> dict:
        """Write again every answer whose items changed worth or text; answers overridden by
        hand in the formgrader keep nbgrader's score and comment (and stay overridden)."""
        rubric = self.rubric(session, part)
        by_id = {item["id"]: item for item in rubric}
        maximum = self.max_score(session, part)
        rows = self.answer_rows(session, part)
        changed = kept = 0
        for answer in self.answers(session, part, with_text=False):
            row = rows.get(answer.student)
            if row is None:
                continue
            items = [by_id[i] for i in json.loads(row.items) if i in by_id]
            score = clamp(sum(item["points"] for item in items), maximum)
            if score == row.score and nbgrader_comment(items, row.comment) == row.written_comment:
                continue
            if self.state(answer, row, by_id)["overridden"]:
                kept += 1
                where = _match(rubric_answers, part, row.student)
                session.execute(
                    rubric_answers.update()
                    .where(where)
                    .values(items=json.dumps([i["id"] for i in items]), version=row.version + 1)
                )
                continue
            self.write(session, part, answer, items, row.comment, maximum, row.version, row.grader)
            changed += 1
        return {"rescored": changed, "kept_overridden": kept}

    # claims: two graders never get the same ungraded answer

    def claim(self, session, part, student: str, grader: str) -> bool:
        """Take the answer for `grader` (committed at once), unless another grader holds it."""
        key = dict(zip((*_KEY, "student"), (*part, student)))
        now = time.time()
        where = _match(rubric_claims, part, student)
        taken = session.execute(
            rubric_claims.update()
            .where(where, sa.or_(rubric_claims.c.grader == grader, rubric_claims.c.at < now - CLAIM_SECONDS))
            .values(grader=grader, at=now)
        )
        if taken.rowcount == 1:
            session.commit()
            return True
        try:
            session.execute(rubric_claims.insert().values(**key, grader=grader, at=now))
            session.commit()
            return True
        except sa.exc.IntegrityError:
            session.rollback()  # another grader claimed it first
            return False

    def release_claims(self, session, part, grader: str, keep: str | None) -> None:
        """A grader holds one answer of a part at a time: the ones skipped go back to the others."""
        session.execute(
            rubric_claims.delete().where(
                _match(rubric_claims, part), rubric_claims.c.grader == grader, rubric_claims.c.student != (keep or "")
            )
        )

    def claims(self, session, part) -> dict[str, str]:
        where = _match(rubric_claims, part)
        now = time.time()
        rows = session.execute(sa.select(rubric_claims).where(where, rubric_claims.c.at >= now - CLAIM_SECONDS))
        return {row.student: row.grader for row in rows}


# -- HTTP ---------------------------------------------------------------------------------------


def _version(target: dict) -> int:
    try:
        return int(target.get("version", 0))
    except (TypeError, ValueError):
        raise web.HTTPError(400, "version: a number") from None


def _handler_base():
    from jupyter_server.base.handlers import JupyterHandler

    class Handler(JupyterHandler):
        """Behind the server's authentication; answers are rendered inert, and the page may run
        its own script only (no inline script, no handler attributes, no other origin)."""

        @property
        def content_security_policy(self) -> str:
            return (
                "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'self'"
            )

        @property
        def course(self) -> Course:
            if self.settings.get("tc_grading_course") is None:
                formgrader = self.settings.get("nbgrader_formgrader")
                coursedir = formgrader.coursedir if formgrader is not None else _own_coursedir(self.settings)
                self.settings["tc_grading_course"] = Course(coursedir, self.log)
            return self.settings["tc_grading_course"]

        def part(self, assignment: str, notebook: str, part: str) -> tuple[str, str, str]:
            return (assignment, notebook, part)

        def grader(self, given: str | None) -> str:
            given = (given or "").strip()[:100]
            if given:
                return given
            user = self.current_user
            return getattr(user, "username", None) or getattr(user, "name", None) or str(user or "grader")

        def reply(self, value, status: int = 200) -> None:
            self.set_status(status)
            self.set_header("Content-Type", "application/json; charset=utf-8")
            self.set_header("Cache-Control", "no-store")
            self.finish(json.dumps(value))

        def write_error(self, status_code: int, **kwargs) -> None:
            """Errors as JSON with the reason, which the page shows."""
            error = kwargs.get("exc_info", (None, None))[1]
            message = getattr(error, "log_message", None) or self._reason
            self.set_header("Content-Type", "application/json; charset=utf-8")
            self.finish(json.dumps({"message": message}))

        def body(self) -> dict:
            try:
                value = json.loads(self.request.body or b"{}")
            except ValueError:
                raise web.HTTPError(400, "not JSON") from None
            if not isinstance(value, dict):
                raise web.HTTPError(400, "not a JSON object")
            return value

    return Handler


def _own_coursedir(settings):
    """nbgrader's course directory as the formgrader loads it, when the formgrader is not loaded."""
    from nbgrader.apps.baseapp import NbGrader

    app = NbGrader()
    app.initialize([])
    return app.coursedir


def _handlers():
    Handler = _handler_base()
    part_path = r"/api/part/([^/]+)/([^/]+)/([^/]+)"

    class Page(Handler):
        @web.authenticated
        def get(self, name: str = ""):
            if not name and not self.request.path.endswith("/"):  # the page's links are relative to the folder
                query = self.request.query
                return self.redirect(self.request.path + "/" + (f"?{query}" if query else ""))
            self.xsrf_token  # noqa: B018 - sets the _xsrf cookie the page's requests send back
            files = {
                "": ("grading_view.html", "text/html"),
                "grading_view.js": ("grading_view.js", "text/javascript"),
                "grading_view.css": ("grading_view.css", "text/css"),
            }
            if name not in files:
                raise web.HTTPError(404)
            filename, kind = files[name]
            self.set_header("Content-Type", f"{kind}; charset=utf-8")
            self.finish((STATIC / filename).read_bytes())

    class Parts(Handler):
        @web.authenticated
        def get(self):
            course = self.course
            with course.session() as session:
                found = course.parts(session)
                for part in found:
                    key = (part["assignment"], part["notebook"], part["part"])
                    answers = course.answers(session, key, with_text=False)
                    rows = course.answer_rows(session, key)
                    part["answers"] = sum(not a.no_response or a.student in rows for a in answers)
                    part["graded"] = sum(
                        a.student in rows or a.grade.manual_score is not None
                        for a in answers
                        if not a.no_response or a.student in rows
                    )
                    part["no_response"] = len(answers) - part["answers"]
            self.reply({"parts": found, "grader": self.grader(None)})

    class Part(Handler):
        """The part: question, model answer, rubric, progress, and one answer (the next
        ungraded of the grader's queue, claimed, or the student asked for)."""

        @web.authenticated
        def get(self, *where):
            self.reply(
                self.view(self.part(*where), self.get_argument("grader", None), self.get_argument("student", None))
            )

        @web.authenticated
        def post(self, *where):  # next ungraded: claims it, so POST
            body = self.body()
            skip = body.get("skip", [])
            skip = {str(student) for student in skip} if isinstance(skip, list) else set()
            self.reply(self.view(self.part(*where), body.get("grader"), None, body.get("share"), skip))

        def view(self, part, grader, student, share=None, skip=()):
            course, grader = self.course, self.grader(grader)
            if share and not (
                re.fullmatch(r"[1-9]\d*/[1-9]\d*", share) and int(share.split("/")[0]) <= int(share.split("/")[1])
            ):
                raise web.HTTPError(400, "a share is k/n, 1 <= k <= n")
            with course.session() as session:
                maximum = course.max_score(session, part)
                rubric = course.rubric(session, part)
                by_id = {item["id"]: item for item in rubric}
                answers = course.answers(session, part)
                rows = course.answer_rows(session, part)
                states = {a.student: course.state(a, rows.get(a.student), by_id) for a in answers}
                gradable = [a for a in answers if not states[a.student]["no_response"]]
                claims = course.claims(session, part)
                queue = sorted(
                    (a for a in gradable if in_share(a.student, share)),
                    key=lambda a: order_key(grader, part, a.student),
                )
                chosen = None
                if student is not None:
                    chosen = next((a for a in answers if a.student == student), None)
                    if chosen is None:
                        raise web.HTTPError(404, "no answer of that student to this part")
                else:
                    for answer in queue:
                        if states[answer.student]["graded"] or answer.student in skip:
                            continue
                        if claims.get(answer.student, grader) != grader:
                            continue
                        if course.claim(session, part, answer.student, grader):
                            chosen = answer
                            break
                    course.release_claims(session, part, grader, keep=chosen.student if chosen else None)
                    session.commit()
                groups: dict[str, list[str]] = {}
                for a in gradable:
                    if a.text.strip():
                        groups.setdefault(normalised(a.text), []).append(a.student)
                current = None
                if chosen is not None:
                    same = [s for s in groups.get(normalised(chosen.text), []) if s != chosen.student]
                    current = {
                        **states[chosen.student],
                        "html": render_inert(chosen.text),
                        "identical": [
                            {"student": s, "version": states[s]["version"], "graded": states[s]["graded"]} for s in same
                        ],
                    }
                info = course.question(part)
                mine = [a for a in queue if claims.get(a.student, grader) == grader]
                return {
                    "part": dict(zip(_KEY, part)),
                    "points": maximum,
                    "grader": grader,
                    "question_html": render_inert(info["question"]),
                    "model_answer_html": render_inert(info["model_answer"]),
                    "scheme_html": render_inert(info["scheme"] or ""),
                    "rubric": rubric,
                    "answer": current,
                    "progress": {
                        "answers": len(gradable),
                        "graded": sum(states[a.student]["graded"] for a in gradable),
                        "no_response": len(answers) - len(gradable),
                        "queue": len(queue),
                        "left_in_queue": sum(not states[a.student]["graded"] for a in mine),
                        "claimed_by_others": sum(
                            1 for s, g in claims.items() if g != grader and not states.get(s, {}).get("graded")
                        ),
                    },
                }

    class Grade(Handler):
        """Save one answer's items and comment (and, asked, those of identical answers)."""

        @web.authenticated
        def post(self, *where):
            part, body, course = self.part(*where), self.body(), self.course
            grader = self.grader(body.get("grader"))
            targets = body.get("answers")  # [{"student", "version"}]
            if not isinstance(targets, list) or not targets or not all(isinstance(t, dict) for t in targets):
                raise web.HTTPError(400, "answers: [{student, version}]")
            comment = str(body.get("comment", ""))[:20000]
            replace = bool(body.get("replace_override"))
            with course.session() as session:
                maximum = course.max_score(session, part)
                by_id = {item["id"]: item for item in course.rubric(session, part)}
                try:
                    items = [by_id[int(i)] for i in body.get("items", [])]
                except (KeyError, ValueError, TypeError):
                    return self.reply({"conflict": "rubric", "why": "the rubric changed: reload it"}, 409)
                answers = {a.student: a for a in course.answers(session, part, with_text=False)}
                rows = course.answer_rows(session, part)
                conflicts = []
                try:
                    for target in targets:
                        answer = answers.get(str(target.get("student")))
                        if answer is None:
                            raise web.HTTPError(404, "no such answer")
                        state = course.state(answer, rows.get(answer.student), by_id)
                        if state["overridden"] and not replace:
                            conflicts.append({"student": answer.student, "why": "overridden", "state": state})
                        elif not course.write(session, part, answer, items, comment, maximum, _version(target), grader):
                            state = course.state(answer, course.answer_rows(session, part).get(answer.student), by_id)
                            conflicts.append({"student": answer.student, "why": "changed", "state": state})
                    if not conflicts:
                        session.commit()
                except sa.exc.IntegrityError:  # another grader's first grade of the same answer came first
                    conflicts.append({"student": targets[0].get("student"), "why": "changed", "state": None})
                if conflicts:
                    session.rollback()
                    return self.reply({"conflict": conflicts}, 409)
                rows = course.answer_rows(session, part)
                saved = {t["student"]: course.state(answers[t["student"]], rows[t["student"]], by_id) for t in targets}
            self.reply({"saved": saved})

    class Rubric(Handler):
        """Add, edit, move, delete an item; edits and deletions re-score the answers that had it."""

        @web.authenticated
        def post(self, *where):
            part, body, course = self.part(*where), self.body(), self.course
            action = body.get("action")
            where_part = _match(rubric_items, part)
            with course.session() as session:
                rubric = course.rubric(session, part)
                ids = [item["id"] for item in rubric]

                def fields():
                    try:
                        points = float(body.get("points", 0))
                    except (TypeError, ValueError):
                        raise web.HTTPError(400, "points: a number") from None
                    return {
                        "points": points,
                        "text": str(body.get("text", ""))[:2000],
                        "note": str(body.get("note", ""))[:2000],
                    }

                item_id = body.get("id")
                if action != "add" and item_id not in ids:
                    return self.reply({"conflict": "rubric", "why": "no such item: reload the rubric"}, 409)
                if action == "add":
                    session.execute(
                        rubric_items.insert().values(**dict(zip(_KEY, part)), position=len(ids), **fields())
                    )
                elif action == "edit":
                    session.execute(
                        rubric_items.update().where(where_part, rubric_items.c.id == item_id).values(**fields())
                    )
                elif action == "delete":
                    session.execute(rubric_items.delete().where(where_part, rubric_items.c.id == item_id))
                elif action == "move":
                    ids.remove(item_id)
                    ids.insert(max(0, min(int(body.get("to", 0)), len(ids))), item_id)
                    for position, moved in enumerate(ids):
                        session.execute(
                            rubric_items.update().where(rubric_items.c.id == moved).values(position=position)
                        )
                else:
                    raise web.HTTPError(400, "action: add, edit, move or delete")
                result = course.rescore(session, part) if action in ("edit", "delete") else {}
                session.commit()
                self.reply({"rubric": course.rubric(session, part), **result})

    class Stats(Handler):
        """Per item, how many answers got it; the score distribution; identical answers."""

        @web.authenticated
        def get(self, *where):
            part, course = self.part(*where), self.course
            with course.session() as session:
                rubric = course.rubric(session, part)
                rows = course.answer_rows(session, part)
                answers = course.answers(session, part)
                counts = {item["id"]: 0 for item in rubric}
                for row in rows.values():
                    for i in json.loads(row.items):
                        if i in counts:
                            counts[i] += 1
                distribution: dict[str, int] = {}
                for a in answers:
                    if a.grade.manual_score is not None and not a.no_response:
                        distribution[f"{a.grade.manual_score:g}"] = distribution.get(f"{a.grade.manual_score:g}", 0) + 1
                groups: dict[str, list[str]] = {}
                for a in answers:
                    if a.text.strip() and not a.no_response:
                        groups.setdefault(normalised(a.text), []).append(a.student)
            self.reply(
                {
                    "items": [{**item, "count": counts[item["id"]]} for item in rubric],
                    "distribution": dict(sorted(distribution.items(), key=lambda kv: float(kv[0]))),
                    "identical": [students for students in groups.values() if len(students) > 1],
                }
            )

    class Export(Handler):
        """CSV: one row per student and hand-graded part, with the items given."""

        @web.authenticated
        def get(self):
            from autograder.nbgrader.export import spreadsheet_safe

            course, out = self.course, io.StringIO()
            writer = csv.writer(out)
            writer.writerow("student assignment notebook part score max_score overridden items comment grader".split())
            with course.session() as session:
                for info in course.parts(session):
                    part = (info["assignment"], info["notebook"], info["part"])
                    by_id = {item["id"]: item for item in course.rubric(session, part)}
                    rows = course.answer_rows(session, part)
                    for a in course.answers(session, part, with_text=False):
                        state = course.state(a, rows.get(a.student), by_id)
                        given = " | ".join(f"{by_id[i]['points']:+g} {by_id[i]['text']}" for i in state["items"])
                        cells = [
                            a.student,
                            *part,
                            state["score"],
                            info["points"],
                            state["overridden"] and rows.get(a.student) is not None,
                        ]
                        writer.writerow(
                            [spreadsheet_safe(c) for c in [*cells, given, state["comment"], state["grader"]]]
                        )
            self.set_header("Content-Type", "text/csv; charset=utf-8")
            self.set_header("Content-Disposition", 'attachment; filename="rubric_items.csv"')
            self.finish(out.getvalue())

    return [
        (r"/api/parts", Parts),
        (part_path, Part),
        (part_path + r"/grade", Grade),
        (part_path + r"/rubric", Rubric),
        (part_path + r"/stats", Stats),
        (r"/api/export\.csv", Export),
        (r"/(grading_view\.(?:js|css))", Page),
        (r"/?()", Page),
    ]


_FORMGRADER_BASE = (
    '{% extends "nbgrader:base.tpl" %}{% block body %}<p class="tc-grading-view-link">'
    '<a href="{{ base_url }}/grading-view/">Grade by question: one free-text part across all students, '
    "with rubric items</a></p>{{ super() }}{% endblock %}"
)


def _link_from_formgrader(webapp) -> None:
    """A link to the view on every page of the formgrader: its pages extend base.tpl, which is
    served here as nbgrader's own base.tpl with the link above its body (a block no page of the
    formgrader replaces)."""
    import jinja2

    env = webapp.settings.get("nbgrader_jinja2_env")
    if env is None or getattr(env, "tc_grading_view", False):
        return
    original = env.loader
    env.loader = jinja2.ChoiceLoader(
        [
            jinja2.DictLoader({"base.tpl": _FORMGRADER_BASE}),
            jinja2.PrefixLoader({"nbgrader": original}, delimiter=":"),
            original,
        ]
    )
    env.tc_grading_view = True


def _jupyter_server_extension_points():
    return [{"module": "autograder.nbgrader.grading_view"}]


def _load_jupyter_server_extension(serverapp):
    """Register the grading view's handlers (enabled by the instructor extra's server config)."""
    try:
        import nbgrader  # noqa: F401 - the view is for the instructor's install only
    except ImportError:
        serverapp.log.info("grading view not loaded: nbgrader is not installed")
        return
    from jupyter_server.utils import url_path_join
    from tornado.ioloop import IOLoop

    webapp = serverapp.web_app
    base = url_path_join(webapp.settings["base_url"], URL)
    webapp.add_handlers(".*$", [(base + pattern, handler) for pattern, handler in _handlers()])
    IOLoop.current().add_callback(_link_from_formgrader, webapp)  # after the formgrader has loaded
    serverapp.log.info("grading view at %s/", base)


load_jupyter_server_extension = _load_jupyter_server_extension
