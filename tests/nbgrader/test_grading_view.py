"""The grading view (autograder/nbgrader/grading_view.py) on a class of 30, in Chromium.

A module fixture builds the course with 30 students graded by the batch grader (free-text
answers of their own; every seventh left blank, nbgrader's "No response"; every fifth the same
sentence spaced and cased differently; one hostile), and starts a Jupyter server at its root
with nbgrader's formgrader and the view. Chromium then grades all 11 hand-graded parts by
keyboard alone; the gradebook, the formgrader, `nbgrader export` and feedback pages are read
back after an item's worth changes.

Run it alone: `python -m pytest -q -s tests/nbgrader/test_grading_view.py` (-s prints keystrokes and times).
"""

from __future__ import annotations

import csv
import html.parser
import io
import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from autograder.nbgrader import grading_view, markscheme
from tests.builders import REPOSITORY, nbgrader
from tests.builders import grading_view_class as klass
from tests.builders.grading_view_class import api, browser_page, part_path, start_server

pytestmark = pytest.mark.slow
CLASS_SIZE = 30


def test_every_mark_scheme_seeds_its_rubric():
    """Each of the 11 parts' itemised scheme becomes rubric items adding up to its points."""
    found = {}
    for assignment, notebook, part in klass.manual_parts(REPOSITORY):
        source = json.loads((REPOSITORY.source / assignment / f"{notebook}.ipynb").read_text(encoding="utf-8"))
        cell = next(c for c in source["cells"] if c.get("metadata", {}).get("nbgrader", {}).get("grade_id") == part)
        items = grading_view.scheme_items(markscheme.scheme_of(cell).scheme)
        assert abs(sum(points for points, _ in items) - cell["metadata"]["nbgrader"]["points"]) < 1e-9, part
        assert all(text and not text.startswith("*") for _, text in items), items
        found[part] = items
    assert len(found) == 11 and sum(len(items) for items in found.values()) == 39
    assert grading_view.clamp(-0.5, 2) == 0 and grading_view.clamp(2.5, 2) == 2


def test_hostile_markdown_is_rendered_inert():
    """Inert by what the HTML can do, not by its text: the words of a hostile link may stay,
    shown as typed, but no element runs, loads or links anywhere but http(s) and mailto."""
    rendered = grading_view.render_inert(klass.HOSTILE[:700] + "\n\n$W_O W_V$")
    found: list[tuple[str, dict]] = []

    class Elements(html.parser.HTMLParser):
        def handle_starttag(self, tag, attrs):
            found.append((tag, dict(attrs)))

    Elements().feed(rendered)
    for tag, attributes in found:
        assert tag not in {"script", "iframe", "style", "object", "embed", "link", "base", "meta"}, tag
        assert not [name for name in attributes if name.startswith("on")], (tag, attributes)
        for name in ("href", "src", "xlink:href"):
            if name in attributes:
                assert attributes[name].split(":", 1)[0].lower() in {"http", "https", "mailto", "data"}, (
                    tag,
                    attributes,
                )
                assert not attributes[name].lower().startswith("data:") or tag == "img", (tag, attributes)
    assert "<msub><mi>W</mi><mi>O</mi></msub>" in rendered  # maths is still drawn


# -- a class of 30 in a server with the formgrader and the view -----------------------------------


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    """The class, built (or copied from TC_GRADING_VIEW_CLASS, a course built by
    `python -m tests.builders.grading_view_class FOLDER 30`, to try changes to the view quickly)."""
    folder = tmp_path_factory.mktemp("grading_view")
    if os.environ.get("TC_GRADING_VIEW_CLASS"):
        from autograder.core.course import Course

        shutil.copytree(os.environ["TC_GRADING_VIEW_CLASS"], folder / "course", symlinks=True)
        return Course(folder / "course")
    return klass.build(REPOSITORY, folder, CLASS_SIZE)


@pytest.fixture(scope="module")
def server(course, tmp_path_factory):
    server = start_server(course.root, tmp_path_factory.mktemp("grading_view_server"))
    yield server
    assert not server.stop()


@pytest.fixture(scope="module")
def chromium(server, tmp_path_factory):
    sync_api = pytest.importorskip("playwright.sync_api")
    driver = sync_api.sync_playwright().start()
    context, page = browser_page(driver, tmp_path_factory.mktemp("chromium"))
    # The suite runs test files side by side on two cores: waits are for the page, not a speed test.
    sync_api.expect.set_options(timeout=30_000)
    page.set_default_timeout(30_000)
    offsite = []
    page.on("request", lambda r: offsite.append(r.url) if not r.url.startswith(server.base_url) else None)
    page.goto(f"{server.base_url}/grading-view/?token={server.token}")  # logs in (cookie)
    yield page
    context.close()
    driver.stop()
    assert not offsite, f"the page asked for other sites: {offsite[:5]}"


def gradebook_answers(course) -> dict:
    """(assignment, notebook, part, student) -> (manual score, auto score, manual comment), from nbgrader."""
    from nbgrader.api import Gradebook

    found = {}
    with Gradebook(f"sqlite:///{course.root / 'gradebook.db'}", "transformer-circuits") as gradebook:
        for part in klass.manual_parts(course):
            for student in klass.students(CLASS_SIZE):
                grade = gradebook.find_grade(part[2], part[1], part[0], student)
                comment = gradebook.find_comment(part[2], part[1], part[0], student)
                found[(*part, student)] = (grade.manual_score, grade.auto_score, comment.manual_comment)
    return found


def chosen_items(student: str, count: int) -> list[int]:
    """The rubric positions (0-based) the test gives a student's answer: one or two of them."""
    number = int(student[1:])
    return sorted({number % count, (number // 3) % count})


# -- splitting the work ---------------------------------------------------------------------------


def test_two_graders_never_get_the_same_answer_and_shares_split_a_part(course, server):
    part = klass.manual_parts(course)[5]
    path = f"part/{part_path(part)}"
    first = {g: api(server, "POST", path, {"grader": g})[1] for g in ("xena", "yuri")}
    held = {g: view["answer"]["student"] for g, view in first.items()}
    assert held["xena"] != held["yuri"]
    assert api(server, "POST", path, {"grader": "xena"})[1]["answer"]["student"] == held["xena"]  # kept
    assert api(server, "POST", path, {"grader": "yuri"})[1]["progress"]["claimed_by_others"] == 1
    skipped = api(server, "POST", path, {"grader": "xena", "skip": [held["xena"]]})[1]["answer"]["student"]
    assert skipped not in held.values()
    # the skipped answer went back: it is in nobody's hands now
    assert api(server, "POST", path, {"grader": "yuri"})[1]["progress"]["claimed_by_others"] == 1
    halves = [
        api(server, "POST", path, {"grader": "zoe", "share": f"{k}/2", "skip": klass.students(CLASS_SIZE)})[1]
        for k in (1, 2)
    ]
    assert halves[0]["progress"]["queue"] + halves[1]["progress"]["queue"] == halves[0]["progress"]["answers"] == 26
    assert all(0 < half["progress"]["queue"] < 26 for half in halves)
    assert api(server, "POST", path, {"grader": "zoe", "share": "3/2"})[0] == 400
    for grader in ("xena", "yuri"):  # skipping everything hands every claim back
        assert api(server, "POST", path, {"grader": grader, "skip": klass.students(CLASS_SIZE)})[1]["answer"] is None
    assert api(server, "POST", path, {"grader": "ann"})[1]["progress"]["claimed_by_others"] == 0
    assert "/grading-view/" in server.page("/formgrader/manage_assignments")  # linked from the formgrader


# -- grading by keyboard alone -------------------------------------------------------------------


def test_keyboard_grades_every_part_of_a_class_of_30(course, server, chromium):
    from playwright.sync_api import expect

    page, parts = chromium, klass.manual_parts(course)
    expect(page.locator("#part-rows tr")).to_have_count(11)
    expected, keystrokes, shown = {}, 0, {}
    started = time.monotonic()
    for part in parts:
        page.goto(f"{server.base_url}/grading-view/?part={part_path(part)}&grader=ann")
        rubric = api(server, "GET", f"part/{part_path(part)}?grader=ann")[1]["rubric"]
        seen = shown.setdefault(part, [])
        while True:
            expect(page.locator("#student:not(:empty), #done:not([hidden])").first).to_be_visible()
            if page.locator("#done").is_visible():
                break
            student = page.text_content("#student")
            assert student not in seen, f"{student} shown twice for {part}"
            seen.append(student)
            items = chosen_items(student, len(rubric))
            for index in items:
                page.keyboard.press(str(index + 1))
            keystrokes += len(items)
            score = grading_view.clamp(sum(rubric[i]["points"] for i in items), sum(r["points"] for r in rubric))
            expected[(*part, student)] = (score, [rubric[i] for i in items])
            same = [s.strip() for s in page.text_content("#identical-names").partition(":")[2].split(",") if s.strip()]
            if (
                part == parts[0]
                and page.locator("#identical").is_visible()
                and page.text_content("#identical-count") != "0"
            ):
                page.keyboard.press("i")  # the identical answers, graded at once
                keystrokes += 1
                for other in same:
                    if (*part, other) not in expected:
                        expected[(*part, other)] = expected[(*part, student)]
            page.keyboard.press("Enter")
            keystrokes += 1
            expect(page.locator("#student")).not_to_have_text(student)
        assert page.evaluate("() => window.tcPwned") is None
    elapsed = time.monotonic() - started
    print(
        f"\nkeyboard grading: {len(expected)} answers, {keystrokes} keystrokes, {elapsed / len(expected) * 1000:.0f} ms per answer"
    )

    book = gradebook_answers(course)
    blank = {s for s in klass.students(CLASS_SIZE) if int(s[1:]) % 7 == 0 and s != klass.HOSTILE_STUDENT}
    for (assignment, notebook, part, student), (manual, auto, comment) in book.items():
        key = (assignment, notebook, part, student)
        if student in blank:
            assert manual is None and auto == 0 and key not in expected, key  # "No response": skipped
            assert student not in shown[(assignment, notebook, part)]
            continue
        score, items = expected[key]
        assert manual == score, (key, manual, score)
        for item in items:
            assert item["text"] in comment  # the student reads the items given
    progress = api(server, "POST", f"part/{part_path(parts[0])}", {"grader": "ann"})[1]
    assert progress["answer"] is None and progress["progress"]["graded"] == progress["progress"]["answers"] == 26


def test_identical_answers_counts_distribution_and_csv(course, server):
    part = klass.manual_parts(course)[0]
    status, stats = api(server, "GET", f"part/{part_path(part)}/stats")
    assert status == 200
    same = sorted(
        s for s in klass.students(CLASS_SIZE) if int(s[1:]) % 5 == 1 and int(s[1:]) % 7 and s != klass.HOSTILE_STUDENT
    )
    assert sorted(map(sorted, stats["identical"])) == [same]  # flagged as identical across students
    book = gradebook_answers(course)
    scores = [v[0] for k, v in book.items() if k[:3] == part and v[0] is not None]
    assert sum(stats["distribution"].values()) == len(scores) == 26
    assert sum(item["count"] for item in stats["items"]) == sum(
        sum(item["text"] in (book[(*part, s)][2] or "") for s in klass.students(CLASS_SIZE)) for item in stats["items"]
    )
    text = server.page("/grading-view/api/export.csv")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == CLASS_SIZE * 11
    row = next(r for r in rows if r["student"] == "s002" and r["part"] == part[2])
    assert float(row["score"]) == book[(*part, "s002")][0] and row["items"]


# -- one item changed: every affected score, everywhere ------------------------------------------


def nbgrader_export(root) -> dict[tuple[str, str], float]:
    done = subprocess.run(
        [sys.executable, "-m", "nbgrader", "export", "--log-level=WARN"], cwd=root, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    rows = csv.DictReader(io.StringIO((root / "grades.csv").read_text(encoding="utf-8")))
    return {(row["assignment"], row["student_id"]): float(row["score"]) for row in rows}


def test_changing_an_items_points_rescores_everywhere(course, server, chromium):
    from playwright.sync_api import expect

    page = chromium
    part = klass.manual_parts(course)[0]  # attention_heads/questions/q1_transformer
    before, exported_before = gradebook_answers(course), nbgrader_export(course.root)
    rubric = api(server, "GET", f"part/{part_path(part)}?grader=ann")[1]["rubric"]
    first = rubric[0]
    had = {k[3] for k, v in before.items() if k[:3] == part and v[2] and first["text"] in v[2]}
    assert len(had) >= 5
    page.goto(f"{server.base_url}/grading-view/?part={part_path(part)}&grader=ann&student=s002")
    answers = iter(["0.75", first["text"] + " (worth more)", "now 0.75"])
    page.on("dialog", lambda dialog: dialog.accept(next(answers)))
    page.locator("#rubric li").first.locator("button", has_text="edit").click()
    expect(page.locator("#message")).to_contain_text(f"re-scored {len(had)} answer")

    after, maximum = gradebook_answers(course), sum(item["points"] for item in rubric)
    for key, (manual, _, comment) in after.items():
        if key[:3] == part and key[3] in had:
            assert manual == grading_view.clamp(before[key][0] + 0.5, maximum), key
            assert "(worth more)" in comment
        else:
            assert after[key] == before[key], key
    exported = nbgrader_export(course.root)
    for student in had:
        delta = after[(*part, student)][0] - before[(*part, student)][0]
        assert (
            abs(exported[("attention_heads", student)] - exported_before[("attention_heads", student)] - delta) < 1e-9
        )
    student = sorted(s for s in had if after[(*part, s)][0] != before[(*part, s)][0])[0]
    # the formgrader's grading page for that submission shows the new score
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course.root / 'gradebook.db'}", "transformer-circuits") as gradebook:
        submission = gradebook.find_submission_notebook(part[1], part[0], student).id
    page.goto(f"{server.base_url}/formgrader/submissions/{submission}")
    expect(page.locator(f"input.score#{part[2]}")).to_have_value(f"{after[(*part, student)][0]:g}")
    # feedback pages, generated by nbgrader, show it too
    nbgrader(course.root, "generate_feedback", part[0], "--student", student, "--force")
    feedback = (course.root / "feedback" / student / part[0] / f"{part[1]}.html").read_text(encoding="utf-8")
    assert "(worth more)" in feedback


def test_score_changed_in_the_formgrader_is_overridden_never_replaced(course, server, chromium):
    from nbgrader.api import Gradebook
    from playwright.sync_api import expect

    part, student = klass.manual_parts(course)[1], "s003"
    with Gradebook(f"sqlite:///{course.root / 'gradebook.db'}", "transformer-circuits") as gradebook:
        grade_id = gradebook.find_grade(part[2], part[1], part[0], student).id
    server.api("PUT", f"/formgrader/api/grade/{grade_id}", {"manual_score": 0.1, "extra_credit": None})
    view = api(server, "GET", f"part/{part_path(part)}?grader=ann&student={student}")[1]
    assert view["answer"]["overridden"] and view["answer"]["score"] == 0.1
    chromium.goto(f"{server.base_url}/grading-view/?part={part_path(part)}&grader=ann&student={student}")
    expect(chromium.locator("#answer-status")).to_contain_text("overridden in the formgrader")
    save = {
        "grader": "ann",
        "answers": [{"student": student, "version": view["answer"]["version"]}],
        "items": [],
        "comment": "",
    }
    status, reply = api(server, "POST", f"part/{part_path(part)}/grade", save)
    assert status == 409 and reply["conflict"][0]["why"] == "overridden"
    item = view["rubric"][0]
    status, reply = api(
        server, "POST", f"part/{part_path(part)}/rubric", {"action": "edit", **item, "points": item["points"] + 0.25}
    )
    assert gradebook_answers(course)[(*part, student)][0] == 0.1
    replaced = api(server, "POST", f"part/{part_path(part)}/grade", {**save, "replace_override": True})
    assert replaced[0] == 200 and gradebook_answers(course)[(*part, student)][0] == 0


def test_two_graders_saving_one_answer_see_a_conflict_and_deductions_clamp(course, server):
    part, student = klass.manual_parts(course)[2], "s004"
    views = [api(server, "GET", f"part/{part_path(part)}?grader={g}&student={student}")[1] for g in ("ann", "bob")]
    status, added = api(
        server,
        "POST",
        f"part/{part_path(part)}/rubric",
        {"action": "add", "points": -5, "text": "off topic", "note": ""},
    )
    deduct = added["rubric"][-1]["id"]
    first = {
        "grader": "ann",
        "answers": [{"student": student, "version": views[0]["answer"]["version"]}],
        "items": [deduct],
        "comment": "",
    }
    assert api(server, "POST", f"part/{part_path(part)}/grade", first)[0] == 200
    assert gradebook_answers(course)[(*part, student)][0] == 0  # within 0 and the maximum
    second = {**first, "grader": "bob", "items": [views[1]["rubric"][0]["id"]]}
    status, reply = api(server, "POST", f"part/{part_path(part)}/grade", second)
    assert status == 409 and reply["conflict"][0]["why"] == "changed"
    assert reply["conflict"][0]["state"]["grader"] == "ann"


def test_hostile_answer_is_inert_in_the_page(course, server, chromium):
    from playwright.sync_api import expect

    part = klass.manual_parts(course)[0]
    chromium.goto(f"{server.base_url}/grading-view/?part={part_path(part)}&grader=ann&student={klass.HOSTILE_STUDENT}")
    expect(chromium.locator("#student")).to_have_text(klass.HOSTILE_STUDENT)
    answer = chromium.locator("#answer")
    assert answer.locator("script, iframe, style, object, embed").count() == 0
    assert answer.locator("[onerror], [onload], [href^='javascript']").count() == 0
    links = answer.locator("a[href]")
    for index in range(links.count()):  # the hostile links are shown as typed, or link only to the web
        href = links.nth(index).get_attribute("href") or ""
        assert href.split(":", 1)[0].lower() in {"http", "https", "mailto"}, href
    answer.get_by_text("click me").first.click()
    assert chromium.evaluate("() => window.tcPwned") is None
    box = answer.bounding_box()
    assert box is not None and box["height"] < 1000  # huge text scrolls inside its box


def test_moving_and_deleting_items(course, server):
    part = klass.manual_parts(course)[4]
    path = f"part/{part_path(part)}"
    rubric = api(server, "GET", f"{path}?grader=ann")[1]["rubric"]
    moved = api(server, "POST", f"{path}/rubric", {"action": "move", "id": rubric[-1]["id"], "to": 0})[1]["rubric"]
    assert [item["id"] for item in moved] == [rubric[-1]["id"]] + [item["id"] for item in rubric[:-1]]
    before, gone = gradebook_answers(course), rubric[0]
    had = {k for k, v in before.items() if k[:3] == part and v[2] and gone["text"] in v[2]}
    status, reply = api(server, "POST", f"{path}/rubric", {"action": "delete", "id": gone["id"]})
    assert status == 200 and reply["rescored"] == len(had) > 0
    after = gradebook_answers(course)
    for key in had:
        assert after[key][0] == pytest.approx(max(0, before[key][0] - gone["points"]))
        assert gone["text"] not in after[key][2]
    assert all(after[k] == before[k] for k in before if k not in had)
