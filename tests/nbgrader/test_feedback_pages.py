"""Feedback pages: written by the batch grader while it grades, where nbgrader's generate_feedback
writes them; released and fetched through a real exchange by nbgrader's own commands; complete
on their own once fetched; none for a student the grader failed on; and what they show (no
`Out[1]: 1.0` score outputs, heatmap titles that fit, in Chromium)."""

from __future__ import annotations

import html
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

from autograder.core.course import Course
from autograder.dev import classroom, students
from autograder.nbgrader import feedback, release
from autograder.nbgrader import settings as nbgrader_settings
from autograder.nbgrader.course_view import CourseView
from autograder.sandbox import tiers
from tests.builders import REPOSITORY, nbgrader
from tests.builders.classes import auto_scores, run_batch
from tests.builders.sandbox import broken_driver

WORKTREE = REPOSITORY.root
COURSE_ID = "transformer-circuits"


def _feedback_folder(root, student) -> pathlib.Path:
    return CourseView.load(Course(root)).feedback(student, "mini")


def _page(root, student) -> str:
    return (_feedback_folder(root, student) / "mini.html").read_text(encoding="utf-8")


def _text(page: str) -> str:
    """What a reader sees: tags removed."""
    return html.unescape(re.sub(r"<[^>]+>", "", re.sub(r"<(style|script)[^>]*>.*?</\1>", "", page, flags=re.S)))


@pytest.mark.slow
def test_the_batch_writes_each_students_pages_while_grading(mini_class):
    assert run_batch(mini_class) == 0
    for student in ("ada", "bob", "cy", "dee", "eve"):  # eve's notebook was renamed, dee's is not JSON
        page = _page(mini_class, student)
        assert "Autograder, part mini_matrix" in page, student
        # the score carrier nbgrader reads is in the autograded notebook, not on the page
        assert not re.search(r"Out\[\d*\]", _text(page)), student
        autograded = json.loads((mini_class / "autograded" / student / "mini" / "mini.ipynb").read_text())
        assert any(o["output_type"] == "execute_result" for c in autograded["cells"] for o in c.get("outputs", []))
        # the styles are in the page (release_feedback publishes only .html files), and short
        assert "Bootstrap v3" not in page and ".panel-heading{" in page
        assert sum(len(style) for style in re.findall(r"<style[^>]*>.*?</style>", page, flags=re.S)) < 20_000
    assert "differs from the identity" in _text(_page(mini_class, "bob"))
    # nbgrader's GetGrades and the renderer's one-query version read the same into a page
    import nbformat
    from nbgrader.preprocessors import GetGrades

    for student in ("ada", "bob", "dee"):
        read = []
        for step in (GetGrades, feedback._get_grades_class()):
            nb = nbformat.read(mini_class / "autograded" / student / "mini" / "mini.ipynb", as_version=4)
            info = {"student": student, "assignment": "mini", "notebook": "mini"}
            info["db_url"] = f"sqlite:///{mini_class / 'gradebook.db'}"
            nb, resources = step().preprocess(nb, {"nbgrader": info})
            read.append(([cell.metadata.get("nbgrader") for cell in nb.cells], resources["nbgrader"]))
        assert read[0] == read[1], student
    assert "could not be read" in _text(_page(mini_class, "dee"))
    # partial credit still reaches the gradebook from those execute_results
    assert auto_scores(mini_class)["ada"] == {"mini_matrix": 2, "mini_function": 2, "mini_why": 0}
    assert auto_scores(mini_class)["bob"]["mini_matrix"] == 0


@pytest.mark.slow
def test_a_student_the_grader_failed_on_gets_no_pages_and_loses_the_old_ones(tmp_path, monkeypatch, capsys, mini_class):
    assert run_batch(mini_class) == 0
    before = _page(mini_class, "ada")
    from autograder.sandbox import supervisor as sandbox

    real_driver = sandbox.DRIVER_DIR
    broken_driver(
        tmp_path,
        monkeypatch,
        confine_source="\ndef confine(plan):\n    raise ConfinementError('RLIMIT_CPU could not be set (test)')\n",
    )
    assert run_batch(mini_class, "--force") == 3
    for student in ("ada", "bob", "cy", "eve"):
        assert not _feedback_folder(mini_class, student).exists(), student
    assert _page(mini_class, "dee")  # her 0 is her file's (not JSON), graded without the sandbox
    # `autograder feedback` agrees: no pages for a student whose parts have no score
    assert subprocess.run(_feedback_command(mini_class), env=_env(), capture_output=True).returncode == 0
    assert not _feedback_folder(mini_class, "ada").exists()
    monkeypatch.setattr(tiers, "DRIVER_DIR", real_driver)
    assert run_batch(mini_class) == 0  # the rerun grades them, and their pages are back
    assert _text(_page(mini_class, "ada")) == _text(before)


def _env():
    return dict(os.environ, PYTHONPATH=str(WORKTREE), PYTHONDONTWRITEBYTECODE="1")


def _feedback_command(root, *extra):
    return [sys.executable, "-m", "autograder", "feedback", "--course", str(root), "mini", "--jobs", "2", *extra]


@pytest.mark.slow
def test_feedback_command_rewrites_pages_after_manual_grading(mini_class):
    assert run_batch(mini_class, "--no-feedback") == 0
    assert not (mini_class / "feedback").exists()
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{mini_class / 'gradebook.db'}", COURSE_ID) as gradebook:
        grade = gradebook.find_grade("mini_why", "mini", "mini", "ada")
        grade.manual_score = 1
        comment = gradebook.find_comment("mini_why", "mini", "mini", "ada")
        comment.manual_comment = "Good point about the basis."
        gradebook.db.commit()
    done = subprocess.run(_feedback_command(mini_class), env=_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    page = _text(_page(mini_class, "ada"))
    assert "Good point about the basis." in page and "Score: 5.0 / 5.0" in page
    assert {path.parent.parent.name for path in (mini_class / "feedback").glob("*/mini/mini.html")} == {
        "ada",
        "bob",
        "cy",
        "dee",
        "eve",
    }


# -- through the exchange: release_feedback and fetch_feedback, nbgrader's own -------------------


def _in_process(root: pathlib.Path, exchange: pathlib.Path, action: str) -> None:
    from nbgrader.auth import Authenticator
    from nbgrader.converters import GenerateAssignment
    from nbgrader.coursedir import CourseDirectory
    from nbgrader.exchange.default import ExchangeReleaseAssignment

    config = nbgrader_settings.load(Course(root)).config
    config.CourseDirectory.root = str(root)
    config.CourseDirectory.assignment_id = "mini"
    coursedir = CourseDirectory(config=config)
    if action == "generate":
        converter = GenerateAssignment(coursedir=coursedir, config=config)
        converter.force = True
        converter.start()
    else:
        ExchangeReleaseAssignment(
            coursedir=coursedir, authenticator=Authenticator(config=config), config=config
        ).start()


@pytest.mark.slow
def test_students_fetch_pages_that_open_on_their_own(mini_course, tmp_path):
    """submit -> collect -> `autograder grade` -> `nbgrader release_feedback` -> fetch_feedback:
    each student fetches their own page, and it refers to nothing beside it."""
    root = release.copy_course(mini_course, tmp_path / "course", with_release=True).root
    exchange = tmp_path / "exchange"
    exchange.mkdir()
    os.chmod(exchange, 0o777)
    with open(root / "nbgrader_config.py", "a", encoding="utf-8") as config:
        config.write(f"\nc.Exchange.root = {str(exchange)!r}\n")
        config.write("c.ExchangeTrust.allow_new_students = True\n")  # one uid for all, no roster: collect them
    cwd = os.getcwd()
    try:
        _in_process(root, exchange, "generate")
        _in_process(root, exchange, "release")
    finally:
        os.chdir(cwd)
    course = Course(root)
    answers = {"ada": {}, "bob": {"mini_matrix_answer": "W = [[2, 0], [0, 2]]"}}
    people = students.make_students(answers, tmp_path / "homes", exchange, COURSE_ID)
    for person in people:
        person.fetch_assignment("mini")
        person.write_notebook("mini", "mini", classroom.filled_notebook(course, "mini", "mini", answers[person.name]))
        person.submit("mini")
    nbgrader(root, "collect", "mini", env=_env())
    done = subprocess.run(
        [sys.executable, "-m", "autograder", "grade", "--course", str(root), "mini", "--jobs", "2"],
        env=_env(),
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    nbgrader(root, "release_feedback", "mini", env=_env())
    for person in people:
        person.fetch_feedback("mini")
        (fetched,) = person.fetched_feedback("mini").values()  # one submission, one timestamp
        page = fetched["mini"]
        assert ("differs from the identity" in _text(page)) == (person.name == "bob")
        assert not re.search(r"Out\[\d*\]", _text(page))
        # nothing but the page is fetched: it may refer to no file of its own
        references = re.findall(r"""(?:href|src)\s*=\s*["']([^"'#][^"']*)["']""", page)
        local = [ref for ref in references if not re.match(r"(https?:|data:|mailto:)", ref)]
        assert not local, local
        folder = next((person.home / "mini" / "feedback").iterdir())
        assert sorted(path.name for path in folder.iterdir()) == ["mini.html"]


# -- what the pictures show ------------------------------------------------------------------


def test_heatmap_titles_and_labels_fit_their_figure_in_chromium(tmp_path):
    """Every text of a figure (long titles over narrow matrices, captions, axis labels) lies
    inside the SVG it belongs to, as Chromium lays it out."""
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    from tests.builders.browser import notebook_page

    if not os.access(notebook_page.CHROMIUM, os.X_OK):
        pytest.skip(f"Debian's chromium is not installed at {notebook_page.CHROMIUM}")
    import numpy as np

    heatmaps = Course(WORKTREE).public_module("attention_heads", "heatmaps")
    rng = np.random.default_rng(0)
    figures = [
        heatmaps.show_head(np.eye(4, 16), np.eye(16, 4, k=-8), "your head 1"),
        heatmaps.show_matrix(rng.normal(size=(1, 3)), "a long title over a matrix of one row", "dest", "src"),
        heatmaps.show_matrix(rng.normal(size=(16, 1)), "your W_O2 @ W_V2, one column", "written dim", "read dim"),
        heatmaps.show_attention(np.eye(2), ["a", "b"], title="your previous-token head's attention pattern"),
        heatmaps.side_by_side(
            heatmaps.show_matrix(rng.normal(size=(16, 2)), "example residual stream before layer 1"),
            heatmaps.show_matrix(rng.normal(size=(16, 2)), "after your two heads"),
            caption="the two heads together move each token's dims 0-3 two positions on, into dims 12-15",
        ),
    ]
    page = tmp_path / "figures.html"
    page.write_text("<html><body>" + "".join(f"<div>{figure.svg}</div>" for figure in figures) + "</body></html>")
    with playwright.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=notebook_page.CHROMIUM, args=["--no-sandbox"])
        try:
            tab = browser.new_page()
            tab.goto(page.as_uri())
            outside = tab.evaluate(
                """() => [...document.querySelectorAll('svg')].flatMap((svg, figure) => {
                    const box = svg.getBoundingClientRect();
                    return [...svg.querySelectorAll('text')].map(text => [figure, text.textContent,
                        text.getBoundingClientRect()]).filter(([, , r]) => r.left < box.left - 0.5 ||
                        r.right > box.right + 0.5 || r.top < box.top - 0.5 || r.bottom > box.bottom + 0.5)
                        .map(([f, t, r]) => `figure ${f}: "${t}" at ${r.left}-${r.right} x ${r.top}-${r.bottom}`
                            + ` outside ${box.left}-${box.right} x ${box.top}-${box.bottom}`);
                })"""
            )
        finally:
            browser.close()
    assert not outside, "\n".join(outside)


def test_hiding_score_outputs_keeps_everything_else():
    from nbformat.v4 import new_code_cell, new_notebook, new_output

    graded = new_code_cell(
        "check_w(W)",
        metadata={"nbgrader": {"grade": True, "solution": False, "grade_id": "w", "points": 2}},
        execution_count=1,
        outputs=[
            new_output("display_data", data={"text/html": "<b>Autograder, part w</b>", "text/plain": "x"}),
            new_output("execute_result", data={"text/plain": "1.0"}, execution_count=1),
        ],
    )
    answer = new_code_cell(
        "W = 1",
        metadata={"nbgrader": {"grade": False, "solution": True, "grade_id": "a"}},
        execution_count=3,
        outputs=[new_output("execute_result", data={"text/plain": "1"}, execution_count=3)],
    )
    nb, _ = feedback.HideScoreOutputs().preprocess(new_notebook(cells=[graded, answer]), {})
    assert [o["output_type"] for o in nb.cells[0].outputs] == ["display_data"]
    assert nb.cells[0].execution_count is None
    assert [o["output_type"] for o in nb.cells[1].outputs] == ["execute_result"]  # not a test cell: kept


def test_configured_preprocessors_are_kept_once(monkeypatch):
    configured = [
        "autograder.nbgrader.feedback.HideScoreOutputs",
        "nbgrader.preprocessors.GetGrades",
        "nbconvert.preprocessors.CSSHTMLHeaderPreprocessor",
    ]
    from nbconvert.preprocessors import CSSHTMLHeaderPreprocessor
    from nbgrader.preprocessors import GetGrades

    chosen = feedback._preprocessors(configured, False)
    assert chosen == [feedback.HideScoreOutputs, feedback._get_grades_class(), CSSHTMLHeaderPreprocessor]
    assert issubclass(chosen[1], GetGrades)
    assert feedback._preprocessors(configured, True)[:2] == [feedback.HideScoreOutputs, feedback.WithholdCheckMessages]


def test_a_worker_that_fails_costs_only_its_page(tmp_path):
    """A page that cannot be made (its autograded notebook is not a notebook) is an error for
    that student alone; a student who handed in no notebook gets no page and no error."""
    course = release.copy_course(Course(WORKTREE), tmp_path / "course")
    shutil.rmtree(course.root / "autograded", ignore_errors=True)
    for student in ("broken", "broken_too"):
        folder = course.root / "autograded" / student / "attention_heads"
        folder.mkdir(parents=True)
        (folder / "questions.ipynb").write_text("{ not json")
    renderer = feedback.ParallelFeedback(course.root, "attention_heads", jobs=2)
    renderer.render(["broken", "nothing_handed_in", "broken_too"])
    errors = renderer.finish()
    assert set(errors) == {"broken", "broken_too"}
    assert not (course.root / "feedback" / "nothing_handed_in").exists()
