"""The student experience in a real browser: JupyterLab 4 with nbgrader's extensions, in Chromium.

A JupyterLab server (isolated configuration, nbgrader's lab and server extensions as installed)
serves a temporary copy of release/attention_heads. Playwright drives Debian's chromium: it
opens the virtual-head notebook, types answers into the answer cells through the page, runs
Run > Run All Cells and reads what the student sees. With the reference answers every public
check passes, the heatmaps render as SVG and no cell shows an error; with one wrong answer the
public check's message appears under that part's test cell. Screenshots go to
tests/artifacts/browser/.

The instructor's side, with the network blocked (every request that is not to the local server
is aborted, and the test fails if one was made): the formgrader's page for grading a graded
submission shows each free-text answer with its model answer and mark scheme in a panel right
after it, and the maths of the notebook and of the student's answers drawn as MathML; a feedback
page, opened through the Jupyter server as a student opens it, draws its maths the same way.

Run it alone with `python -m pytest -q tests/course/test_browser.py` (add `-s` to see the timings).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pathlib
import re
import shutil
import time
import urllib.parse

import numpy as np
import pytest

from autograder.dev import classroom
from tests.builders import REPOSITORY, TESTS, grading_pages

pytestmark = pytest.mark.slow

ASSIGNMENT = "attention_heads"
NOTEBOOK = "virtual_head"
ARTIFACTS = TESTS / "artifacts" / "browser"
PASSED = "public checks passed"
MIN_HEATMAPS = 4

# A wrong answer a student could write: head 1 copies with gain 2 instead of 1.
WRONG_HEAD1 = """\
W_V1 = np.zeros((4, 16))
W_O1 = np.zeros((16, 4))
for i in range(4):
    W_V1[i, i] = 1.0
    W_O1[8 + i, i] = 2.0  # gain 2: not a copy
"""


def _requirements():
    """Skip (with the reason) when the browser or its driver is missing; else the modules."""
    playwright = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed (pip install playwright)"
    )
    from tests.builders.browser import lab, notebook_page

    if not os.access(notebook_page.CHROMIUM, os.X_OK):
        pytest.skip(f"Debian's chromium is not installed at {notebook_page.CHROMIUM} (apt-get install chromium)")
    return playwright, lab, notebook_page


class Clock:
    def __init__(self):
        self.start = time.monotonic()
        self.marks: list[tuple[str, float]] = []

    def mark(self, what: str) -> None:
        self.marks.append((what, time.monotonic() - self.start))

    def report(self, title: str) -> str:
        steps, previous = [], 0.0
        for what, at in self.marks:
            steps.append(f"{what} {at - previous:.1f} s")
            previous = at
        return f"{title}: " + ", ".join(steps) + f" (total {previous:.1f} s)"


# -- fixtures -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lab_server(tmp_path_factory):
    _, lab, _ = _requirements()
    release = REPOSITORY.release / ASSIGNMENT
    assert (release / f"{NOTEBOOK}.ipynb").exists(), f"no release at {release}: run `python -m autograder release`"
    root = tmp_path_factory.mktemp("lab_root")
    server = lab.LabServer(root, tmp_path_factory.mktemp("lab_state"))
    clock = Clock()
    server.start()
    clock.mark("server start")
    print("\n" + clock.report("JupyterLab"))
    yield server
    leftovers = server.stop()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(server.log_path, ARTIFACTS / "jupyterlab.log")
    assert server.process.poll() is not None, "the JupyterLab server is still running"
    assert not leftovers, f"kernels outlived the server and had to be killed: {leftovers}"


@pytest.fixture(scope="module")
def browser_context(tmp_path_factory):
    playwright, _, notebook_page = _requirements()
    driver = playwright.sync_playwright().start()
    try:
        context = driver.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium_profile")),
            executable_path=notebook_page.CHROMIUM,
            headless=True,
            args=notebook_page.CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 1000},
        )
        try:
            yield context
        finally:
            context.close()
    finally:
        driver.stop()


@pytest.fixture
def student(lab_server, browser_context, request):
    """A fresh copy of the release in the server's root, and a page to work on it with.

    Yields (NotebookPage, path of the notebook on disk, lab path of the notebook).
    """
    _, _, notebook_page = _requirements()
    name = request.node.name.replace("[", "_").replace("]", "")
    folder = lab_server.root_dir / name / ASSIGNMENT
    shutil.copytree(
        REPOSITORY.release / ASSIGNMENT, folder, ignore=shutil.ignore_patterns("__pycache__", ".ipynb_checkpoints")
    )
    page = browser_context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    failed_before = request.session.testsfailed
    try:
        yield notebook_page.NotebookPage(page), folder / f"{NOTEBOOK}.ipynb", f"{name}/{ASSIGNMENT}/{NOTEBOOK}.ipynb"
        if request.session.testsfailed > failed_before:  # the call's report is in by teardown
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(Exception):  # what the page showed when the test failed
                page.screenshot(path=str(ARTIFACTS / f"{name}_failure.png"))
    finally:
        page.close()
        lab_server.shutdown_kernels()
        if errors:
            print("uncaught errors in the page:\n" + "\n".join(errors))


# -- helpers -------------------------------------------------------------------------------------


def _load_module(path: pathlib.Path):
    spec = importlib.util.spec_from_file_location(f"_browser_test_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _cells_by_kind(release: dict) -> tuple[dict[str, int], dict[str, int]]:
    """(grade_id -> index of answer cells, grade_id -> index of code test cells) of the release."""
    answers, tests = {}, {}
    for index, cell in enumerate(release["cells"]):
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if meta.get("solution"):
            answers[meta["grade_id"]] = index
        elif meta.get("grade") and cell["cell_type"] == "code":
            tests[meta["grade_id"]] = index
    return answers, tests


def _answer_cell_holding(answers: dict[str, str], name: str) -> str:
    """The grade_id of the reference answer cell that assigns `name`."""
    holding = [grade_id for grade_id, text in answers.items() if f"{name} =" in text]
    assert len(holding) == 1, f"expected one answer cell defining {name}, found {holding}"
    return holding[0]


def _open_and_answer(nb, lab_server, lab_path: str, n_cells: int, typed: dict[int, str], clock: Clock):
    nb.open(lab_server.notebook_url(lab_path, workspace=lab_path.split("/")[0]), n_cells)
    clock.mark("open notebook")
    state = nb.extension_state()
    assert "@jupyter/nbgrader" in state["federated"], f"nbgrader's lab extension is not loaded: {state}"
    assert not any("nbgrader" in name for name in state["disabled"]), f"nbgrader's lab extension is disabled: {state}"
    assert "Nbgrader" in state["menus"], f"no Nbgrader menu in the menu bar: {state['menus']}"
    assert "Validate" in state["toolbar"], f"no Validate button in the notebook toolbar: {state['toolbar']}"
    for index, text in typed.items():
        nb.type_into_cell(index, text)
        shown = nb.editor_text(index)
        assert shown.rstrip() == text.rstrip(), f"cell {index} shows\n{shown}\ninstead of the typed\n{text}"
    nb.save()
    clock.mark(f"type {len(typed)} answers and save")


def _assert_saved(notebook_path: pathlib.Path, typed: dict[int, str], notebook_page) -> None:
    saved = notebook_page.read_notebook(notebook_path)
    for index, text in typed.items():
        got = notebook_page.cell_text(saved["cells"][index])
        assert got.rstrip() == text.rstrip(), f"saved cell {index} is\n{got}\ninstead of the typed\n{text}"


# -- the tests -----------------------------------------------------------------------------------


def test_correct_answers_pass_public_checks_and_draw_heatmaps(lab_server, student):
    _, _, notebook_page = _requirements()
    nb, notebook_path, lab_path = student
    clock = Clock()
    release = notebook_page.read_notebook(notebook_path)
    answer_cells, test_cells = _cells_by_kind(release)
    answers = classroom.model_answers(REPOSITORY, ASSIGNMENT, NOTEBOOK)
    assert set(answers) == set(answer_cells), "the release and the source disagree on the answer cells"
    typed = {answer_cells[grade_id]: text for grade_id, text in answers.items()}

    _open_and_answer(nb, lab_server, lab_path, len(release["cells"]), typed, clock)
    _assert_saved(notebook_path, typed, notebook_page)
    nb.run_all()
    clock.mark("run all cells")
    nb.screenshot_notebook(ARTIFACTS / f"{NOTEBOOK}_correct.png")
    clock.mark("screenshot")
    print("\n" + clock.report("correct answers"))

    cells = nb.snapshot()
    everything = "\n".join(cell.describe() for cell in cells)
    not_run = [cell.index for cell in cells if cell.kind == "code" and not cell.executed]
    assert not not_run, f"code cells {not_run} did not run:\n{everything}"
    with_errors = [cell for cell in cells if cell.errors]
    assert not with_errors, "cells show errors:\n" + "\n".join(cell.describe() for cell in with_errors)
    for grade_id, index in test_cells.items():
        assert PASSED in cells[index].text, f"public check {grade_id} did not pass:\n{cells[index].describe()}"
    heatmaps = sum(output.svg for cell in cells for output in cell.outputs)
    assert heatmaps >= MIN_HEATMAPS, (
        f"{heatmaps} SVG heatmaps rendered, expected at least {MIN_HEATMAPS}:\n{everything}"
    )
    rendered_answers = [
        cells[i] for grade_id, i in answer_cells.items() if release["cells"][i]["cell_type"] == "markdown"
    ]
    assert all("YOUR ANSWER HERE" not in nb.cell(cell.index).inner_text() for cell in rendered_answers)


def test_wrong_answer_shows_the_public_check_message(lab_server, student):
    _, _, notebook_page = _requirements()
    nb, notebook_path, lab_path = student
    clock = Clock()
    release = notebook_page.read_notebook(notebook_path)
    answer_cells, test_cells = _cells_by_kind(release)
    answers = classroom.model_answers(REPOSITORY, ASSIGNMENT, NOTEBOOK)
    head1 = _answer_cell_holding(answers, "W_O1")
    typed = {answer_cells[grade_id]: text for grade_id, text in answers.items()}
    typed[answer_cells[head1]] = WRONG_HEAD1
    # The message the shipped public check (the copy the page imports) gives for these matrices.
    namespace = {"np": np}
    exec(WRONG_HEAD1, namespace)
    tc_checks = _load_module(notebook_path.parent / "tc_checks.py")
    with pytest.raises(AssertionError) as expected:
        tc_checks.check_head1(namespace["W_V1"], namespace["W_O1"])
    message = str(expected.value)
    assert "gain 2" in message, f"the public check no longer names the gain: {message}"
    failing = next(
        index
        for index in sorted(test_cells.values())
        if "check_head1" in notebook_page.cell_text(release["cells"][index])
    )

    _open_and_answer(nb, lab_server, lab_path, len(release["cells"]), typed, clock)
    nb.run_all()
    clock.mark("run all cells")
    nb.screenshot_notebook(ARTIFACTS / f"{NOTEBOOK}_wrong_head1.png")
    nb.screenshot_cell(failing, ARTIFACTS / f"{NOTEBOOK}_wrong_head1_failing_cell.png")
    clock.mark("screenshots")
    print("\n" + clock.report("wrong head 1"))

    cells = nb.snapshot()
    shown = cells[failing]
    # The failure shows as its message alone (tclib.CheckFailed), wrapped, with none of our frames.
    assert "Check failed:" in shown.text, f"no failed check under the head 1 check:\n{shown.describe()}"
    assert " ".join(message.split()) in " ".join(shown.text.split()), f"the message is not shown:\n{shown.describe()}"
    for frame in ("Traceback", "tclib", "tc_checks", "public_check"):
        assert frame not in shown.text, f"the student sees our code ({frame}):\n{shown.describe()}"
    assert PASSED not in shown.text
    with_errors = [cell.index for cell in cells if cell.errors]
    assert with_errors[:1] == [failing], "only the head 1 check should fail:\n" + "\n".join(
        cells[i].describe() for i in with_errors
    )
    # Everything before the failing check ran cleanly, the head 1 heatmap included. Run All
    # stops at the first error: ipykernel aborts the cells queued when the check raised. On a
    # loaded machine a later cell's request can reach the kernel after that; it then runs
    # without the names the aborted cells define (a NameError), never to another check's verdict.
    before = [cell for cell in cells[:failing] if cell.kind == "code"]
    assert all(cell.executed for cell in before), "\n".join(cell.describe() for cell in before)
    assert any(output.svg for cell in before for output in cell.outputs), "head 1's heatmap is missing"
    ran_after = [cell for cell in cells[failing + 1 :] if cell.executed]
    assert all("NameError" in cell.text and "Check failed" not in cell.text for cell in ran_after), (
        "Run All went on after the error:\n" + "\n".join(cell.describe() for cell in ran_after)
    )


# -- the instructor's pages, offline ---------------------------------------------------------------

LOCAL_HOSTS = {"127.0.0.1", "localhost"}

# Per MathML element: laid out as MathML (Chromium's `display: math`), and its size.
_MATHS = """() => [...document.querySelectorAll('math')].map(m => ({
  display: getComputedStyle(m).display,
  width: m.getBoundingClientRect().width,
  inPanel: !!m.closest('.tc-markscheme'),
  inAnswer: !!m.closest('.nbgrader_cell'),
}))"""

# The text of every rendered markdown cell (what would show raw TeX if maths were not drawn).
_MARKDOWN_TEXT = "() => [...document.querySelectorAll('.text_cell_render')].map(e => e.innerText).join('\\n')"

# grade_id -> the grade_id of the mark-scheme panel in the cell right after that answer's cell.
_PANEL_AFTER = """(ids) => Object.fromEntries(ids.map(id => {
  const answer = document.getElementById(id + '-comment')?.closest('.cell');
  const panel = answer?.nextElementSibling?.querySelector('.tc-markscheme');
  return [id, panel ? {id: panel.dataset.gradeId, height: panel.getBoundingClientRect().height,
                      inputs: panel.querySelectorAll('input, textarea, [contenteditable]').length,
                      text: panel.innerText} : null];
}))"""


def _offline_page(context, server):
    """A new page, logged in to `server` (its token with every request, the formgrader's API
    calls included), whose requests to anything but the local server are aborted and recorded."""
    page = context.new_page()
    page.set_extra_http_headers({"Authorization": f"token {server.token}"})
    outside: list[str] = []
    errors: list[str] = []

    def only_local(route):
        url = route.request.url
        if urllib.parse.urlsplit(url).hostname in LOCAL_HOSTS:
            route.continue_()
        else:
            outside.append(url)
            route.abort()

    page.route("**/*", only_local)
    page.on("pageerror", lambda error: errors.append(str(error)))
    return page, outside, errors


def _assert_maths_drawn(page, name: str) -> list[dict]:
    found = page.evaluate(_MATHS)
    assert found, f"{name}: no MathML in the page"
    not_drawn = [m for m in found if "math" not in m["display"] or m["width"] <= 0]
    assert not not_drawn, f"{name}: MathML not laid out as maths: {not_drawn[:3]}"
    text = page.evaluate(_MARKDOWN_TEXT)
    raw = re.findall(r"\$[^$\s][^$]*\$", text)
    assert not raw, f"{name} shows raw TeX: {raw[:5]}"
    return found


def test_formgrader_shows_mark_schemes_and_draws_maths_with_the_network_blocked(
    graded_course, formgrader, browser_context
):
    clock = Clock()
    page, outside, errors = _offline_page(browser_context, formgrader)
    try:
        assignment, notebook = "attention_heads", "questions"
        manual = list(grading_pages.fingerprints(graded_course, assignment, notebook))
        submission = grading_pages.submission_id(graded_course, assignment, notebook)
        page.goto(f"{formgrader.base_url}/formgrader/submissions/{submission}/")
        page.wait_for_selector(".tc-markscheme")
        # the formgrader's own scripts (served locally) ran: its score boxes show the gradebook's
        # autograded scores, and the free-text ones ask for a manual grade
        page.wait_for_function(
            "(n) => [...document.querySelectorAll('input.score')].some(i => i.placeholder !== '')"
            " && document.querySelectorAll('input.score.needs_manual_grade').length >= n",
            arg=len(manual),
        )
        # and ran to its end (it asks MathJax when typesetting ends, and stops if it cannot)
        page.wait_for_function("() => window.formgrader && window.formgrader.loaded === true")
        clock.mark("open the grading page")
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "formgrader_mark_scheme.png"), full_page=True)
        print("\n" + clock.report("formgrader"))

        panels = page.evaluate(_PANEL_AFTER, manual)
        assert set(panels) == set(manual) and manual, panels
        for grade_id, panel in panels.items():
            assert panel is not None, f"no mark-scheme panel right after the answer cell of {grade_id}"
            assert panel["id"] == grade_id and panel["height"] > 0, panel
            assert panel["inputs"] == 0, f"the panel of {grade_id} is not read-only"
            assert "Mark scheme:" in panel["text"] and "Model answer" in panel["text"], panel["text"]
        assert page.locator(".tc-markscheme").count() == len(manual)
        found = _assert_maths_drawn(page, "the formgrader's page")
        assert sum(m["inAnswer"] for m in found) >= len(manual), "the students' own maths is not drawn"
        assert not outside, f"the formgrader's page requested outside the local server: {outside}"
        assert not errors, f"uncaught errors in the page: {errors}"
    finally:
        page.close()


def test_feedback_page_draws_maths_with_the_network_blocked(graded_course, formgrader, browser_context):
    page, outside, errors = _offline_page(browser_context, formgrader)
    try:
        relative = f"feedback/{grading_pages.STUDENT}/attention_heads/questions.html"
        assert (graded_course.root / relative).exists()
        page.goto(f"{formgrader.base_url}/files/{relative}")
        page.wait_for_selector("math")
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "feedback_maths.png"), full_page=True)
        found = _assert_maths_drawn(page, "the feedback page")
        assert len(found) >= 3
        assert page.locator(".tc-markscheme").count() == 0
        assert not outside, f"the feedback page requested outside the local server: {outside}"
        assert not errors, f"uncaught errors in the page: {errors}"
    finally:
        page.close()
