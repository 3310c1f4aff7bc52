"""Pages render inert (issue 20.4) and answers are kept as written (issue 21.4), in Chromium.

One student of a copy of the course answers with everything a page could be made to run or
fetch: scripts, event handlers, javascript:/vbscript:/data: links in every spelling, remote
images, styles, frames and objects, mXSS nesting, odd Unicode, and a quarter of a megabyte of
TeX; another answer holds maths and prose with `<`, `>` and `&`. The class is graded by the
batch grader (which writes feedback pages) and `nbgrader generate_feedback` writes them again;
the formgrader's grading page and both feedback pages are opened in Chromium with every request
that leaves the local server aborted and counted. On each page every element of the hostile
answer that reads `click-...` is clicked: no dialog ever opens, no script runs, no request
leaves, and the maths shows `s > t`, `n < 1`, `n_ctx >= 1` and `a & b` as written.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import time
import urllib.parse

import pytest

from autograder.core.course import Course
from autograder.dev import classroom
from autograder.nbgrader import inert, release
from tests.builders import REPOSITORY, grading_pages, nbgrader

pytestmark = pytest.mark.slow

ASSIGNMENT, NOTEBOOK, STUDENT = "attention_heads", "questions", "mallory"
LOCAL_HOSTS = {"127.0.0.1", "localhost"}
EVIL = "https://evil.example"

LINKS = [
    "[click-md-js](javascript:alert('md-js'))",
    "[click-md-entity](&#106;avascript:alert('md-entity'))",
    "[click-md-case](JaVaScRiPt:alert('md-case'))",
    "[click-md-data](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
    "[click-md-vb](vbscript:msgbox('md-vb'))",
    "<a href='javascript:alert(\"html-js\")'>click-html-js</a>",
    "<a href='&#x6A;&#x61;vascript:alert(\"hex\")'>click-hex</a>",
    "<a href='java&#9;script:alert(\"tab\")'>click-tab</a>",
    "<a href='  javascript:alert(\"space\")'>click-space</a>",
    "<a href='javascript&colon;alert(\"colon\")'>click-colon</a>",
    "<a href='data:text/html,<script>alert(\"data\")</script>'>click-data</a>",
    "<a href='vbscript:msgbox(1)'>click-vbscript</a>",
    f"<a href='//{EVIL[8:]}/x'>click-protocol-relative</a>",
    "<a href='/api/shutdown'>click-relative</a>",
    "<a onclick='alert(\"onclick\")'>click-onclick</a>",
    "<svg width='90' height='20'><a href='javascript:alert(\"svg\")'><text y='15'>click-svg</text></a></svg>",
    "<math href='javascript:alert(\"mathml\")'><mi>click-mathml</mi></math>",
    "<form action='javascript:alert(\"form\")'><button>click-form</button></form>",
    "<details open ontoggle='alert(\"toggle\")'><summary>click-details</summary>x</details>",
]
ACTIVE = [
    "<script>alert('script')</script>",
    "<img src=x onerror=alert('onerror')>",
    f"<img src='{EVIL}/track.png'>",
    f"<iframe src='{EVIL}/frame'></iframe>",
    f"<link rel=stylesheet href='{EVIL}/x.css'>",
    f"<style>@import url({EVIL}/y.css); body {{ background: url({EVIL}/bg.png) }}</style>",
    f"<div style='background-image:url({EVIL}/z.png)'>styled</div>",
    f"<object data='{EVIL}/o'></object><embed src='{EVIL}/e'>",
    f"<video poster='{EVIL}/p.png' src='{EVIL}/v.mp4'></video>",
    "<svg onload=alert('svg-onload')><circle r=4 /></svg>",
    "<noscript><p title=\"</noscript><img src=x onerror=alert('mxss')>\"></p></noscript>",
    "<input autofocus onfocus=alert('focus')>",
    f"<base href='{EVIL}/'>",
    "<meta http-equiv='refresh' content='0;url=javascript:alert(1)'>",
]
ODD_UNICODE = "\u202eevil\u202c zero\u200bwidth \ufeff 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 e\u0301 \U0001f600 \u2028line \ud7ff"
HOSTILE_ANSWER = "\n\n".join(["Hostile answer.", " ".join(LINKS), "\n".join(ACTIVE), ODD_UNICODE])
# HTML output of a student's own cell, as an autograded notebook executed in a kernel keeps it (the
# course's grading clears a submission's outputs): held apart while the page is cleaned (inert.Slots)
HOSTILE_OUTPUT = "\n".join(ACTIVE + [link.replace("click-", "click-output-") for link in LINKS[5:]])
MATHS_ANSWER = "We need $s > t$ and $n<1$; in code `n_ctx >= 1`, and in prose a & b < c > d."
HUGE_TEX = " ".join(f"$x_{{{i}}}^2 + y$" for i in range(20_000))  # about 300 KB of TeX


def _build(folder: pathlib.Path) -> pathlib.Path:
    course = release.copy_course(REPOSITORY, folder / "course")
    root = course.root
    nbgrader(root, "generate_assignment", ASSIGNMENT, "--force")
    notebook = classroom.filled_notebook(
        course,
        ASSIGNMENT,
        NOTEBOOK,
        {"q1_transformer": HOSTILE_ANSWER, "q2_explain": MATHS_ANSWER, "q3_explain": HUGE_TEX},
    )
    notebook["cells"].append(  # a raw cell (nbconvert puts its HTML into a page as it is)
        {"cell_type": "raw", "id": "hostile-raw", "metadata": {}, "source": "\n".join(ACTIVE + LINKS[5:8])}
    )
    notebook["metadata"]["widgets"] = {"text/javascript": "alert('widgets')"}
    classroom.write_submission(root, STUDENT, ASSIGNMENT, {NOTEBOOK: notebook})
    subprocess.run(
        [sys.executable, "-m", "autograder", "grade", "--course", str(root), ASSIGNMENT],
        cwd=root,
        check=True,
        capture_output=True,
    )
    pages = root / "pages"
    pages.mkdir()
    shutil.copy(root / "feedback" / STUDENT / ASSIGNMENT / f"{NOTEBOOK}.html", pages / "batch.html")
    nbgrader(root, "generate_feedback", ASSIGNMENT, "--force")
    shutil.copy(root / "feedback" / STUDENT / ASSIGNMENT / f"{NOTEBOOK}.html", pages / "nbgrader.html")
    autograded = root / "autograded" / STUDENT / ASSIGNMENT / f"{NOTEBOOK}.ipynb"
    graded = json.loads(autograded.read_text())
    graded["cells"].append(
        {
            "cell_type": "code",
            "id": "hostile-output",
            "metadata": {},
            "execution_count": 1,
            "source": "display(HTML(answer))",
            "outputs": [{"output_type": "display_data", "metadata": {}, "data": {"text/html": HOSTILE_OUTPUT}}],
        }
    )
    autograded.write_text(json.dumps(graded))
    subprocess.run(
        [sys.executable, "-m", "autograder", "feedback", "--course", str(root), ASSIGNMENT],
        cwd=root,
        check=True,
        capture_output=True,
    )
    shutil.copy(root / "feedback" / STUDENT / ASSIGNMENT / f"{NOTEBOOK}.html", pages / "outputs.html")
    return root


@pytest.fixture(scope="module")
def hostile_class(tmp_path_factory):
    return _build(tmp_path_factory.mktemp("hostile_pages"))


@pytest.fixture(scope="module")
def server(hostile_class, tmp_path_factory):
    from tests.builders.browser import lab

    running = lab.LabServer(hostile_class, tmp_path_factory.mktemp("hostile_state"))
    running.start()
    yield running
    assert not running.stop(), "processes outlived the server"


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    playwright = pytest.importorskip("playwright.sync_api")
    from tests.builders.browser import notebook_page

    if not os.access(notebook_page.CHROMIUM, os.X_OK):
        pytest.skip(f"no chromium at {notebook_page.CHROMIUM}")
    driver = playwright.sync_playwright().start()
    context = driver.chromium.launch_persistent_context(
        str(tmp_path_factory.mktemp("chromium_profile")),
        executable_path=notebook_page.CHROMIUM,
        headless=True,
        args=notebook_page.CHROMIUM_ARGS,
    )
    yield context
    context.close()
    driver.stop()


class Watched:
    """A page whose dialogs, script errors and requests are recorded: requests that leave the
    local server are aborted and counted, and so are those to it, after the page's own."""

    def __init__(self, context, server):
        self.page = context.new_page()
        self.page.set_extra_http_headers({"Authorization": f"token {server.token}"})
        self.dialogs: list[str] = []
        self.outside: list[str] = []
        self.local: list[str] = []
        self.page.on("dialog", self._dialog)
        self.page.route("**/*", self._route)
        self.page.add_init_script(  # what the page's policy blocked, from the first line of the page on
            "window.tcViolations = []; document.addEventListener('securitypolicyviolation',"
            " e => window.tcViolations.push(e.violatedDirective + ' ' + e.blockedURI + ' ' + e.sample));"
        )

    def violations(self) -> list[str]:
        return self.page.evaluate("() => window.tcViolations")

    def _dialog(self, dialog) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def _route(self, route) -> None:
        url = route.request.url
        if urllib.parse.urlsplit(url).hostname in LOCAL_HOSTS:
            self.local.append(url)
            route.continue_()
        else:
            self.outside.append(url)
            route.abort()

    def click_every_hostile_element(self) -> int:
        """Click every element of the hostile answer that says `click-...`; the number clicked."""
        texts = sorted(set(re.findall(r"click-[a-z-]+", HOSTILE_ANSWER)))
        url = self.page.url  # as the page's own scripts left it (the formgrader's adds ?index=)
        clicked = 0
        for text in texts:
            targets = self.page.get_by_text(text, exact=True)
            for index in range(targets.count()):
                target = targets.nth(index)
                if not target.is_visible():
                    continue
                target.click(timeout=5000, no_wait_after=True)
                clicked += 1
                self.page.wait_for_timeout(50)
                if self.page.url != url:  # a link that navigated: what it reached is checked below
                    self.outside.append(f"navigated to {self.page.url}")
                    self.page.goto(url)
        self.page.wait_for_timeout(300)  # what a click might have started
        return clicked

    def assert_inert(self, name: str, clicked: int) -> None:
        assert clicked >= len(LINKS) - 3, f"{name}: only {clicked} hostile elements found to click"
        assert not self.dialogs, f"{name}: a script ran: {self.dialogs}"
        assert not self.outside, f"{name}: requests left the page: {self.outside}"
        active = self.page.evaluate(
            """() => [...document.querySelectorAll('.text_cell_render *, .output_subarea *, .cell *')]
                .filter(e => e.tagName === 'SCRIPT' ? !e.closest('head') :
                             ['IFRAME', 'OBJECT', 'EMBED', 'BASE', 'META', 'LINK', 'STYLE', 'FORM', 'INPUT']
                               .includes(e.tagName) && !e.closest('.panel-footer, .panel-heading'))
                .map(e => e.outerHTML.slice(0, 120))
                .concat([...document.querySelectorAll('#notebook *, body > *:not(nav)')].flatMap(e => [...e.attributes]
                    .filter(a => a.name.startsWith('on'))
                    .map(a => e.tagName + ' ' + a.name)))"""
        )
        assert not active, f"{name}: active elements left in the page: {active}"
        hrefs = self.page.evaluate("() => [...document.querySelectorAll('a[href]')].map(a => a.href)")
        bad = [href for href in hrefs if not href.startswith(("http://127.0.0.1", "https://", "mailto:"))]
        assert not [href for href in bad if not href.startswith("http://localhost")], f"{name}: live links: {bad}"

    def assert_maths_as_written(self, name: str) -> None:
        text = self.page.evaluate("() => document.body.innerText")
        assert "n_ctx >= 1" in text and "a & b < c > d" in text, f"{name}: prose or code not as written"
        formulas = self.page.evaluate("() => [...document.querySelectorAll('math')].map(m => m.textContent)")
        assert "s>t" in formulas and "n<1" in formulas, f"{name}: maths not as written: {formulas[:20]}"
        assert "&gt;" not in text and "&lt;" not in text and "&amp;" not in text, name


def test_answers_are_kept_as_written_in_the_autograded_notebook(hostile_class):
    autograded = json.loads((hostile_class / "autograded" / STUDENT / ASSIGNMENT / f"{NOTEBOOK}.ipynb").read_text())
    sources = [
        "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"] for cell in autograded["cells"]
    ]
    assert MATHS_ANSWER in sources and HOSTILE_ANSWER in sources and HUGE_TEX in sources


def test_feedback_pages_are_inert_bounded_and_keep_maths(hostile_class, server, browser):
    for name in ("batch.html", "nbgrader.html", "outputs.html"):
        page_text = (hostile_class / "pages" / name).read_text(encoding="utf-8")
        assert inert.policy_meta(inert.FEEDBACK_POLICY) in page_text, name
        assert len(page_text.encode()) < 3 * len(HUGE_TEX), f"{name}: {len(page_text.encode()):,} bytes"
        assert "shown as typed" in page_text, f"{name}: no note on the TeX left as typed"
        if name == "outputs.html":
            assert "click-output-html-js" in page_text, "the output of the student's own cell is not shown"
        watched = Watched(browser, server)
        url = f"{server.base_url}/files/pages/{name}"
        started = time.monotonic()
        watched.page.goto(url)
        watched.page.wait_for_selector("math")
        print(f"\n{name}: {len(page_text.encode()):,} bytes, opened in {time.monotonic() - started:.1f} s")
        clicked = watched.click_every_hostile_element()
        watched.assert_inert(name, clicked)
        watched.assert_maths_as_written(name)
        assert watched.local == [url], f"{name} loaded more than itself: {watched.local}"
        # the policy is a second wall: what the cleaner might miss is neither loaded nor run
        violations = watched.page.evaluate(
            f"""() => new Promise(done => {{
                let seen = 0;
                document.addEventListener('securitypolicyviolation', () => seen++);
                document.body.insertAdjacentHTML('beforeend',
                    '<img src="{EVIL}/late.png"><img src="/files/pages/x.png">');
                const script = document.createElement('script');
                script.textContent = "alert('late')";
                document.body.appendChild(script);
                setTimeout(() => done(seen), 500);
            }})"""
        )
        assert violations >= 3 and not watched.dialogs and not watched.outside, (violations, watched.dialogs)
        assert watched.local == [url], watched.local
        watched.page.close()


def test_formgrader_page_is_inert_keeps_maths_and_still_grades(hostile_class, server, browser):
    watched = Watched(browser, server)
    submission = grading_pages.submission_id(Course(hostile_class), ASSIGNMENT, NOTEBOOK, STUDENT)
    url = f"{server.base_url}/formgrader/submissions/{submission}/"
    watched.page.goto(url)
    watched.page.wait_for_function("() => window.formgrader && window.formgrader.loaded === true")
    policy = watched.page.evaluate(
        "() => document.querySelector('meta[http-equiv=\"Content-Security-Policy\"]').content"
    )
    assert policy == inert.FORMGRADER_POLICY
    clicked = watched.click_every_hostile_element()
    watched.assert_inert("the formgrader's page", clicked)
    watched.assert_maths_as_written("the formgrader's page")
    assert watched.page.evaluate("() => document.querySelectorAll('input.score').length") > 5
    # nbgrader's own page still works under the policy: its scripts ran (above) and its inline
    # handlers, the eye that hides the student's name, are the two the policy allows by hash
    shown, hidden = ".name-shown.glyphicon", ".name-hidden.glyphicon"
    first, second = (shown, hidden) if watched.page.locator(shown).is_visible() else (hidden, shown)
    for click, then in ((first, second), (second, first)):
        watched.page.locator(click).click()
        watched.page.wait_for_selector(then, state="visible", timeout=5000)
    assert not watched.violations(), f"the policy blocked some of the formgrader's own page: {watched.violations()}"
    watched.page.close()
