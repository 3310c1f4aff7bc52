"""Two graders at once on a PostgreSQL gradebook, each with a Jupyter server of their own (as
JupyterHub gives each user one) and a Chromium of their own, grading the same part by keyboard:
every answer is graded once, by one of them; two saves of the same answer meet a conflict.

Run it alone: `python -m pytest -q -s tests/nbgrader/test_grading_view_postgres.py`.
"""

from __future__ import annotations

import pytest

from tests.builders import REPOSITORY
from tests.builders import grading_view_class as klass
from tests.builders.grading_view_class import api, browser_page, part_path, start_server

pytestmark = pytest.mark.slow
CLASS_SIZE = 12


@pytest.fixture(scope="module")
def pg_class(postgres, tmp_path_factory):
    database = postgres.create_database()
    course = klass.build(REPOSITORY, tmp_path_factory.mktemp("grading_view_pg"), CLASS_SIZE, postgres.url(database))
    servers = [start_server(course.root, tmp_path_factory.mktemp(f"server_{name}")) for name in ("ann", "bob")]
    yield course, servers, postgres.url(database)
    for server in servers:
        assert not server.stop()


def test_two_graders_at_once_on_postgresql(pg_class, tmp_path_factory):
    sync_api = pytest.importorskip("playwright.sync_api")
    from nbgrader.api import Gradebook
    from playwright.sync_api import expect

    course, servers, url = pg_class
    part = klass.manual_parts(course)[3]
    driver = sync_api.sync_playwright().start()
    try:
        pages = {}
        for name, server in zip(("ann", "bob"), servers):
            context, page = browser_page(driver, tmp_path_factory.mktemp(f"chromium_{name}"))
            page.goto(f"{server.base_url}/grading-view/?token={server.token}")
            page.goto(f"{server.base_url}/grading-view/?part={part_path(part)}&grader={name}")
            pages[name] = page
        graded: dict[str, list[str]] = {"ann": [], "bob": []}
        done = set()
        while len(done) < 2:
            shown = {}
            for name, page in pages.items():  # both hold an answer at the same time
                if name in done:
                    continue
                expect(page.locator("#student:not(:empty), #done:not([hidden])").first).to_be_visible()
                if page.locator("#done").is_visible():
                    done.add(name)
                else:
                    shown[name] = page.text_content("#student")
            assert len(set(shown.values())) == len(shown), f"both graders got {shown}"
            for name, student in shown.items():
                pages[name].keyboard.press("1")
                pages[name].keyboard.press("Enter")
                expect(pages[name].locator("#student")).not_to_have_text(student)
                graded[name].append(student)
        everyone = graded["ann"] + graded["bob"]
        assert graded["ann"] and graded["bob"] and len(everyone) == len(set(everyone))

        # the same answer opened by both, saved by both: the second sees a conflict
        student = graded["ann"][0]
        for name, server in zip(pages, servers):
            pages[name].goto(f"{server.base_url}/grading-view/?part={part_path(part)}&grader={name}&student={student}")
            expect(pages[name].locator("#student")).to_have_text(student)
        pages["ann"].keyboard.press("2")
        pages["ann"].keyboard.press("Enter")
        expect(pages["ann"].locator("#student")).not_to_have_text(student)
        pages["bob"].keyboard.press("3")
        pages["bob"].keyboard.press("Enter")
        expect(pages["bob"].locator("#message")).to_contain_text("Another grader saved this answer")
    finally:
        driver.stop()

    rubric = api(servers[0], "GET", f"part/{part_path(part)}?grader=ann")[1]["rubric"]
    with Gradebook(url, "transformer-circuits") as gradebook:
        for who in graded.values():
            for name in who:
                score = gradebook.find_grade(part[2], part[1], part[0], name).manual_score
                expected = rubric[0]["points"] + (rubric[1]["points"] if name == student else 0)
                assert score == pytest.approx(expected), name
