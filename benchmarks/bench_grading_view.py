"""Grading one free-text part of a class by question: the grading view against nbgrader's
formgrader's `Ctrl+.` path, in Chromium, in the same run, on the same class.

It builds a class of N students of `attention_heads` (graded by the batch grader, as
tests/builders/grading_view_class.py builds the tests' class: every seventh answer blank, every fifth
the same sentence, one hostile), or reuses one (--course), starts a Jupyter server with the
formgrader and the view, and grades the part PART:

* in the grading view, every answer by keyboard (a digit or two per answer for its items, Enter
  for save and next ungraded, which skips "No response" answers);
* in the formgrader, the first --formgrader-answers submissions as a grader does it there: the
  page of a submission with the part's score box focused (`?index=`), the score typed, `Ctrl+.`
  to save and load the next submission's page (blank answers too: it does not skip them). Its
  comment is not typed (the view writes the items given as the comment, for no keystroke).

It prints, for each, the answers graded, keystrokes per answer, page loads, and milliseconds per
answer (from the keystroke that saves to the next answer ready for keys), and their ratios.

    python benchmarks/bench_grading_view.py [--students 300] [--course ROOT] [--formgrader-answers 40]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the tests' builders: tests.builders

from autograder.core.course import Course  # noqa: E402
from tests.builders import grading_view_class as klass  # noqa: E402 - the checkout put on the path above
from tests.builders.browser import lab, notebook_page  # noqa: E402

PART = ("attention_heads", "questions", "q1_transformer")
EXTENSION = {"ServerApp": {"jpserver_extensions": {"autograder.nbgrader.grading_view": True}}}


def grading_view(page, server) -> dict:
    """Grade every answer of PART in the view by keyboard; keystrokes, loads and time per answer."""
    from playwright.sync_api import expect

    loads = []
    page.on("load", lambda _: loads.append(1))
    page.goto(f"{server.base_url}/grading-view/?part={'/'.join(PART)}&grader=bench")
    keys, times, answers = 0, [], 0
    while True:
        expect(page.locator("#student:not(:empty), #done:not([hidden])").first).to_be_visible(timeout=60000)
        if page.locator("#done").is_visible():
            break
        student = page.text_content("#student")
        number = int(student[1:])
        for key in sorted({str(number % 5 + 1), str(number // 3 % 5 + 1)}):
            page.keyboard.press(key)
            keys += 1
        start = time.perf_counter()
        page.keyboard.press("Enter")
        keys += 1
        expect(page.locator("#student")).not_to_have_text(student, timeout=60000)
        times.append(time.perf_counter() - start)
        answers += 1
    return {"answers": answers, "keys": keys, "loads": len(loads), "ms": 1000 * sum(times) / max(1, len(times))}


def formgrader(page, server, course: Course, count: int) -> dict:
    """Grade the first `count` submissions of PART in the formgrader with `Ctrl+.`."""
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course.root / 'gradebook.db'}", "transformer-circuits") as gradebook:
        ids = sorted(n.id for n in gradebook.notebook_submissions(PART[1], PART[0]))
    loads = []
    page.on("load", lambda _: loads.append(1))
    page.goto(f"{server.base_url}/formgrader/submissions/{ids[0]}")
    index = page.evaluate(f"() => [...document.querySelectorAll('.tabbable')].findIndex(e => e.id === '{PART[2]}')")
    page.goto(f"{server.base_url}/formgrader/submissions/{ids[0]}?index={index}")
    ready = f"() => document.activeElement && document.activeElement.id === '{PART[2]}'"
    page.wait_for_load_state("networkidle")
    page.wait_for_function(ready, timeout=60000)
    keys, times = 0, []
    for number in range(count):
        score = f"{0.25 * (number % 9):g}"
        page.keyboard.type(score)
        keys += len(score)
        start = time.perf_counter()
        # ready for keys when the next page has loaded its scores and comments and focused the box
        with page.expect_response(lambda r: "/formgrader/api/grades?" in r.url, timeout=60000):
            with page.expect_response(lambda r: "/formgrader/api/comments?" in r.url, timeout=60000):
                page.keyboard.press("Control+Period")
                keys += 1
        page.wait_for_function(ready, timeout=60000)
        times.append(time.perf_counter() - start)
    return {"answers": count, "keys": keys, "loads": len(loads), "ms": 1000 * sum(times) / max(1, len(times))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", type=int, default=300)
    parser.add_argument(
        "--course", type=pathlib.Path, help="a class built by tests/builders/grading_view_class.py (copied)"
    )
    parser.add_argument("--formgrader-answers", type=int, default=40)
    args = parser.parse_args()
    import shutil

    from playwright.sync_api import sync_playwright

    work = pathlib.Path(tempfile.mkdtemp(prefix="bench_grading_view_"))
    try:
        if args.course:
            shutil.copytree(args.course, work / "course", symlinks=True)
            course = Course(work / "course")
        else:
            start = time.monotonic()
            course = klass.build(Course(ROOT), work, args.students, only=PART[0])
            print(f"class of {args.students} built and graded in {time.monotonic() - start:.0f} s", file=sys.stderr)
        state = work / "server"
        (state / "config" / "jupyter_server_config.d").mkdir(parents=True)
        (state / "config" / "jupyter_server_config.d" / "grading-view.json").write_text(json.dumps(EXTENSION))
        server = lab.LabServer(course.root, state).start()
        try:
            with sync_playwright() as driver:
                browser = driver.chromium.launch(
                    executable_path=notebook_page.CHROMIUM, headless=True, args=notebook_page.CHROMIUM_ARGS
                )
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.goto(f"{server.base_url}/grading-view/?token={server.token}")
                view = grading_view(page, server)
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.goto(f"{server.base_url}/formgrader/?token={server.token}")
                stock = formgrader(page, server, course, min(args.formgrader_answers, view["answers"]))
                browser.close()
        finally:
            server.stop()
        students = len(list((course.root / "autograded").iterdir()))
        print(f"\none part ({'/'.join(PART)}) of a class of {students}, in Chromium")
        print(f"{'':22}{'answers':>8}{'keys/answer':>13}{'page loads':>12}{'ms/answer':>11}")
        for name, row in (("grading view", view), ("formgrader Ctrl+.", stock)):
            print(
                f"{name:22}{row['answers']:>8}{row['keys'] / row['answers']:>13.2f}{row['loads']:>12}{row['ms']:>11.0f}"
            )
        print(
            f"per answer, the formgrader takes {stock['ms'] / view['ms']:.1f}x the time, "
            f"{stock['keys'] / stock['answers'] / (view['keys'] / view['answers']):.1f}x the keystrokes "
            f"(no comment typed) and {stock['loads'] / stock['answers']:.0f} page load against "
            f"{view['loads'] / view['answers']:.3f}"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
