"""The instructor's nbgrader workflow on the real course, with real nbgrader and a real gradebook.

* release/ and solutions/ are exactly what `make release` regenerates from source/;
* source notebooks carry valid nbgrader metadata and no hidden code in test cells;
* `nbgrader autograde` (configured to use the sandboxed grader) and the batch grader record the
  same scores for the same class, and feedback reveals neither hidden checks nor answers.
"""

import functools
import html
import json
import os
import pathlib
import re
import subprocess
import sys

import pytest

from autograder.core.course import Course
from autograder.dev import classroom
from autograder.nbgrader import release
from tests.builders import REPOSITORY, nbgrader

pytestmark = pytest.mark.slow


def _tree(root: pathlib.Path) -> dict[str, str]:
    """relative path -> content description (bytes digest or symlink target)."""
    tree = {}
    for path in sorted(root.rglob("*")):
        relative = str(path.relative_to(root))
        if "__pycache__" in relative or ".ipynb_checkpoints" in relative:
            continue
        if path.is_symlink():
            tree[relative] = f"-> {os.readlink(path)}"
        elif path.is_file():
            tree[relative] = path.read_bytes()
    return tree


def test_release_and_solutions_are_fresh(tmp_path):
    """Regenerating from source/ reproduces the committed release/ and solutions/ exactly."""
    copy = release.build_copy(REPOSITORY, tmp_path / "course")
    for folder in ("release", "solutions"):
        committed = _tree(REPOSITORY.root / folder)
        regenerated = _tree(copy.root / folder)
        stale = sorted(k for k in committed.keys() | regenerated.keys() if committed.get(k) != regenerated.get(k))
        assert not stale, f"{folder}/ is stale; run `make release` and commit. Differs: {stale}"


def test_source_notebooks_have_valid_nbgrader_metadata():
    from nbgrader.nbgraderformat import MetadataValidator

    validator = MetadataValidator()
    for path in sorted(REPOSITORY.source.glob("*/*.ipynb")):
        notebook = json.loads(path.read_text())
        ids = []
        for cell in notebook["cells"]:
            meta = cell.get("metadata", {}).get("nbgrader")
            if not meta:
                continue
            validator.validate_cell(type("Cell", (dict,), {"__getattr__": dict.__getitem__})(cell))
            ids.append(meta["grade_id"])
            source = "".join(cell["source"])
            if meta.get("grade") and not meta.get("solution"):
                assert "HIDDEN TESTS" not in source, f"{path.name}:{meta['grade_id']} has hidden code in a test cell"
                assert meta.get("locked"), f"{path.name}:{meta['grade_id']} test cell must be locked"
        assert len(ids) == len(set(ids)), f"duplicate grade_ids in {path.name}"


def _course_copy(tmp_path: pathlib.Path) -> Course:
    """The course copied as an instructor copies it into a course of their own (no release yet)."""
    return release.copy_course(REPOSITORY, tmp_path / "course")


def _gradebook_state(root, assignment):
    """Everything autograding records: per graded cell its scores, review flag and comment, and
    per notebook its late penalty."""
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{root / 'gradebook.db'}", "transformer-circuits") as gradebook:
        state = {}
        for submission in gradebook.assignment_submissions(assignment):
            for notebook in submission.notebooks:
                comments = {comment.name: comment.auto_comment for comment in notebook.comments}
                for grade in notebook.grades:
                    state[(submission.student.id, notebook.name, grade.name)] = {
                        "auto_score": grade.auto_score,
                        "manual_score": grade.manual_score,
                        "needs_manual_grade": grade.needs_manual_grade,
                        "comment": comments.get(grade.name),
                    }
                state[(submission.student.id, notebook.name, "late penalty")] = notebook.late_submission_penalty
        return state


@pytest.fixture(scope="module")
def graded_class(tmp_path_factory):
    """One class graded twice: by `nbgrader autograde` and by the batch grader."""
    assignment = "attention_heads"
    roots = {}
    for how in ("nbgrader", "batch"):
        course = _course_copy(tmp_path_factory.mktemp(how))
        root = course.root
        nbgrader(root, "generate_assignment", assignment, "--force")
        notebooks = [spec.notebook for spec in course.specs if spec.assignment == assignment]
        mistakes = course.library("mistakes", assignment)
        mistake = {nb: next((e["cells"] for e in mistakes.values() if e["notebook"] == nb), {}) for nb in notebooks}

        filled = functools.partial(classroom.filled_notebook, course, assignment)
        classroom.write_submission(root, "ref", assignment, {nb: filled(nb) for nb in notebooks})
        classroom.write_submission(root, "wrong", assignment, {nb: filled(nb, mistake[nb]) for nb in notebooks})
        classroom.write_submission(root, "blank", assignment, {nb: filled(nb, None, blank=True) for nb in notebooks})
        # cut off while saving, and saved under Jupyter's copy name: both graded alike on both paths
        cut = classroom.write_submission(root, "cut", assignment, {nb: filled(nb) for nb in notebooks})
        text = (cut / "questions.ipynb").read_text()
        (cut / "questions.ipynb").write_text(text[: len(text) // 2])
        copied = classroom.write_submission(root, "copied", assignment, {nb: filled(nb) for nb in notebooks})
        (copied / "questions.ipynb").rename(copied / "questions-Copy1.ipynb")
        if how == "nbgrader":
            nbgrader(root, "autograde", assignment, "--force")
        else:  # from elsewhere, so only --course says which course
            subprocess.run(
                [sys.executable, "-m", "autograder", "grade", "--course", str(root), assignment],
                cwd=tmp_path_factory.getbasetemp(),
                check=True,
                capture_output=True,
            )
        nbgrader(root, "generate_feedback", assignment, "--force")
        roots[how] = root
    return assignment, roots


def test_nbgrader_autograde_and_batch_grader_record_the_same_gradebook_state(graded_class):
    assignment, roots = graded_class
    by_batch = _gradebook_state(roots["batch"], assignment)
    assert _gradebook_state(roots["nbgrader"], assignment) == by_batch
    parts = {
        (spec.notebook, part.grade_id): part
        for spec in REPOSITORY.specs
        if spec.assignment == assignment
        for part in spec.parts
    }
    wrong_lost_points = False
    for (student, notebook, grade_id), record in by_batch.items():
        part = parts.get((notebook, grade_id))
        if part is None or part.manual:
            continue
        if student == "ref":
            assert record["auto_score"] == part.points, (notebook, grade_id)
        if student == "blank":
            assert record["auto_score"] == 0, (notebook, grade_id)
        wrong_lost_points |= student == "wrong" and record["auto_score"] < part.points
    assert wrong_lost_points


def test_unreadable_and_renamed_notebooks_are_graded_alike_with_feedback_that_says_why(graded_class):
    """A cut-off notebook scores 0 on both paths, with the reason in the autograded notebook (what
    the formgrader shows) and in feedback; a renamed one is graded by its content on both paths."""
    assignment, roots = graded_class
    states = {how: _gradebook_state(root, assignment) for how, root in roots.items()}
    parts = {
        part.grade_id: part
        for spec in REPOSITORY.specs
        if spec.assignment == assignment and spec.notebook == "questions"
        for part in spec.auto_parts
    }
    for how, state in states.items():
        for grade_id, part in parts.items():
            assert state[("cut", "questions", grade_id)]["auto_score"] == 0, (how, grade_id)
            assert state[("copied", "questions", grade_id)]["auto_score"] == part.points, (how, grade_id)
        root = roots[how]
        autograded = (root / "autograded" / "cut" / assignment / "questions.ipynb").read_text()
        assert "unreadable notebook: questions.ipynb could not be read" in autograded, how
        page = _page_text(root / "feedback" / "cut" / assignment / "questions.html")
        assert "could not be read" in page and "not valid notebook JSON" in page, how
        page = _page_text(root / "feedback" / "copied" / assignment / "questions.html")
        assert "questions-Copy1.ipynb was graded as questions.ipynb" in page, how


def _page_text(page: pathlib.Path) -> str:
    """What a student reads on a feedback page: tags (incl. syntax-highlighting spans) removed."""
    return html.unescape(re.sub(r"<[^>]+>", "", page.read_text()))


def test_feedback_reveals_no_hidden_checks_or_answers(graded_class):
    assignment, roots = graded_class
    hidden_lines = {
        line.strip()
        for path in REPOSITORY.grading_dir(assignment).glob("*.py")
        for line in path.read_text().splitlines()
        if len(line.strip()) > 25 and not line.strip().startswith(("#", '"', "import", "from"))
    }
    for how, root in roots.items():
        pages = list((root / "feedback").rglob("*.html"))
        assert pages, f"no feedback generated by {how}"
        for page in pages:
            text = _page_text(page)
            assert "BEGIN HIDDEN TESTS" not in text and "def test_" not in text
            student, _, notebook = page.relative_to(root / "feedback").with_suffix("").parts
            # under any name: a renamed notebook is graded by its content
            submitted = "".join(
                path.read_text() for path in (root / "submitted" / student / assignment).glob("*.ipynb")
            )
            # a line the student wrote themselves may coincide with the hidden reference code
            leaked = [line for line in hidden_lines if line in text and json.dumps(line)[1:-1] not in submitted]
            assert not leaked, f"{page} shows hidden check code: {leaked[:3]}"
        for page in (root / "feedback" / "blank").rglob("*.html"):
            text = _page_text(page)
            released = classroom.release_notebook(REPOSITORY, assignment, page.stem)["cells"]
            release_text = "\n".join("".join(c["source"]) for c in released)
            for answer in classroom.model_answers(REPOSITORY, assignment, page.stem).values():
                for line in answer.splitlines():
                    if len(line.strip()) > 20 and line.strip() not in release_text:
                        assert line.strip() not in text, f"{page} reveals the answer line {line.strip()!r}"


def test_feedback_shows_scores_messages_and_pictures(graded_class):
    assignment, roots = graded_class
    page = "".join(p.read_text() for p in (roots["batch"] / "feedback" / "wrong").rglob("*.html"))
    assert "Autograder, part" in page and ">failed</b>" in page
    assert "<svg" in page
