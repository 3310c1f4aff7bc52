"""Mark schemes where graders grade, never where students look; maths drawn without a network.

* every manually graded cell of every source notebook has a model answer and a mark scheme in
  its solution region, and the reader finds them (docs/MARKING.md);
* the formgrader's grading page (real nbgrader formgrader in a real Jupyter server, on a course
  graded by the course's own commands) shows each manually graded cell's model answer and mark
  scheme in a panel right after that cell;
* not one fingerprint of a model answer or mark scheme is in anything students receive: the
  release, the feedback pages, the autograded notebooks; the same fingerprints are found in the
  formgrader's page, so the search can find what it looks for;
* maths in feedback and formgrader pages is MathML made on the server: no MathJax, no raw TeX,
  and student TeX cannot put markup into the page.

The browser tests (tests/course/test_browser.py) look at the same pages in Chromium with the network
blocked.
"""

from __future__ import annotations

import functools
import html.parser
import json
import re

import pytest

from autograder.nbgrader import markscheme, maths
from tests.builders import REPOSITORY, grading_pages

RAW_TEX = re.compile(r"\$[^$\s][^$]*\$")
PANEL = markscheme.PANEL_CLASS


def _source(assignment: str, notebook: str) -> dict:
    return json.loads((REPOSITORY.source / assignment / f"{notebook}.ipynb").read_text(encoding="utf-8"))


# -- the single source ---------------------------------------------------------------------------


@pytest.mark.parametrize("assignment, notebook", grading_pages.notebooks(REPOSITORY))
def test_every_manually_graded_cell_has_a_model_answer_and_a_mark_scheme(assignment, notebook):
    source = _source(assignment, notebook)
    manual = [cell for cell in source["cells"] if markscheme.manually_graded(cell)]
    schemes = markscheme.mark_schemes(source)
    assert sorted(schemes) == sorted(cell["metadata"]["nbgrader"]["grade_id"] for cell in manual)
    for grade_id, scheme in schemes.items():
        assert len(scheme.model_answer.split()) >= 20, (
            f"{grade_id}: no model answer before '{markscheme.SCHEME_HEADING}'"
        )
        items = re.findall(r"^\* (\d+(?:\.\d+)?):", scheme.scheme, re.M)
        assert len(items) >= 2, f"{grade_id}: the mark scheme has no items '* points: ...'"
        assert markscheme.SCHEME_HEADING not in scheme.model_answer + scheme.scheme
        assert "SOLUTION" not in scheme.model_answer + scheme.scheme
    prints = grading_pages.fingerprints(REPOSITORY, assignment, notebook)
    thin = [grade_id for grade_id, found in prints.items() if len(found) < 3]
    assert not thin, f"too few fingerprints to find a leak of {thin}"


def test_a_cell_without_a_scheme_gets_a_panel_that_says_what_is_missing():
    panel = maths.markdown_to_html(markscheme.panel_markdown(None, "q9<x>", "source/a/n.ipynb"))
    assert "No model answer for" in panel and "q9&lt;x&gt;" in panel and "<x>" not in panel
    scheme = markscheme.MarkScheme("q1", "Heads move $W_O W_V x$.", "", code=False)
    panel = maths.markdown_to_html(markscheme.panel_markdown(scheme, "q1", "source/a/n.ipynb"))
    assert "<math" in panel and "add a <code>Mark scheme:</code> line" in panel


@functools.cache
def _course_config():
    """The course's nbgrader_config.py, as nbgrader's apps load it (the formgrader's included)."""
    from traitlets.config.loader import PyFileConfigLoader

    return PyFileConfigLoader("nbgrader_config.py", path=str(REPOSITORY.root)).load_config()


def _render(template: str, resources: dict) -> str:
    """The release notebook of `questions` rendered by an HTMLExporter with the course's
    nbgrader configuration (as nbgrader's formgrader and feedback build theirs) and `template`."""
    from nbconvert.exporters import HTMLExporter
    from traitlets.config import Config

    config = Config()
    config.merge(_course_config())
    config.HTMLExporter.template_name = template
    exporter = HTMLExporter(config=config)
    path = REPOSITORY.release / "attention_heads" / "questions.ipynb"
    page, _ = exporter.from_filename(str(path), resources=dict(resources))
    return page


FORMGRADER_RESOURCES = {
    "assignment_id": "attention_heads",
    "notebook_id": "questions",
    "submission_id": "x",
    "base_url": "",
}


def test_only_the_formgraders_grading_page_gets_the_panels():
    manual = list(markscheme.mark_schemes(_source("attention_heads", "questions")))
    grading = _render("formgrade", {**FORMGRADER_RESOURCES, "index": 0, "total": 1})
    assert re.findall(r'data-grade-id="([^"]+)"', grading) == manual
    # any other page of the same exporter class (feedback is one: tests below) shows none, even
    # with resources that look like the formgrader's
    other = _render("classic", FORMGRADER_RESOURCES)
    assert PANEL not in other and "Mark scheme" not in other
    assert "<math" in other and "<math" in grading


# -- maths ----------------------------------------------------------------------------------------


def test_tex_becomes_mathml_and_unreadable_tex_stays_as_typed():
    rendered = maths.markdown_to_html("reads $W_V^2 W_O^1$; scores $$\\frac{q \\cdot k}{\\sqrt{d}}$$; broken $x^$")
    assert rendered.count("<math") == 2
    assert '<math display="block"' in rendered and "<mfrac>" in rendered and "<msqrt>" in rendered
    assert "<msubsup><mi>W</mi><mi>V</mi><mn>2</mn></msubsup>" in rendered
    assert '<code class="tc-tex">$x^$</code>' in rendered
    assert not RAW_TEX.search(re.sub(r"<code.*?</code>", "", rendered))


@pytest.mark.parametrize(
    "tex",
    [
        r"\text{<script>alert(1)</script>}",
        r"\text{<img src=x onerror=alert(1)>}",
        r"\href{javascript:alert(1)}{x}",
        r"\style{background:url(http://example.org/x)}{x}",
        r"x \lt y </math><script>alert(1)</script>",
    ],
)
def test_student_tex_cannot_put_markup_or_links_into_a_page(tex):
    rendered = maths.markdown_to_html(f"my answer: ${tex}$")
    elements = _Elements()
    elements.feed(rendered)
    allowed_tags = {"p", "code"} | set(maths._ELEMENTS)
    allowed_attributes = {"xmlns", "class"} | set(maths._ATTRIBUTES)
    assert elements.tags <= allowed_tags, rendered
    assert elements.attributes <= allowed_attributes, rendered
    assert not any("javascript" in value or "url(" in value for value in elements.values), rendered


class _Elements(html.parser.HTMLParser):
    """The tags, attribute names and attribute values of a page."""

    def __init__(self):
        super().__init__()
        self.tags, self.attributes, self.values = set(), set(), []

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        self.attributes |= {name for name, _ in attrs}
        self.values += [value or "" for _, value in attrs]


# -- the formgrader and what students receive ------------------------------------------------------


@pytest.mark.slow
def test_the_formgrader_shows_each_manual_cell_its_model_answer_and_scheme(graded_course, formgrader):
    for assignment, notebook in grading_pages.notebooks(graded_course):
        page = formgrader.page(
            f"/formgrader/submissions/{grading_pages.submission_id(graded_course, assignment, notebook)}/"
        )
        panels = re.findall(r'<div class="panel panel-info tc-markscheme" data-grade-id="([^"]+)">', page)
        prints = grading_pages.fingerprints(graded_course, assignment, notebook)
        assert panels == list(prints), f"{notebook}: panels for {panels}, manually graded cells {list(prints)}"
        for grade_id, found in prints.items():
            answer = page.index(f'id="{grade_id}-comment"')  # the comment box closes the answer's panel
            panel = page.index(f'data-grade-id="{grade_id}"')
            after = page.find("nbgrader_cell", answer)
            assert answer < panel < (after if after > 0 else len(page)), (
                f"{grade_id}: the panel is not right after its cell"
            )
            shown = grading_pages.page_words(page[panel : page.find("</div>\n</div>", panel)])
            missing = [text for text in found if text not in shown]
            assert not missing, f"{notebook}:{grade_id}: the panel lacks {missing}"
        assert "<math" in page
        remote = re.findall(r'<(?:script|link)[^>]*(?:src|href)="((?:https?:)?//[^"]*)"', page)
        assert not remote, f"{notebook}: the grading page loads {remote}"


@pytest.mark.slow
def test_no_model_answer_or_mark_scheme_reaches_what_students_receive(graded_course, formgrader):
    files = grading_pages.student_facing_files(graded_course)
    kinds = {path.relative_to(graded_course.root).parts[0] + path.suffix for path in files}
    assert {"release.ipynb", "feedback.html", "autograded.ipynb"} <= kinds, kinds
    all_prints = {
        (assignment, notebook, grade_id, text)
        for assignment, notebook in grading_pages.notebooks(graded_course)
        for grade_id, found in grading_pages.fingerprints(graded_course, assignment, notebook).items()
        for text in found
    }
    assert len(all_prints) > 50
    leaks = []
    for path in files:
        shown = grading_pages.visible_text(path)
        leaks += [
            (str(path.relative_to(graded_course.root)), grade_id, text)
            for _, _, grade_id, text in all_prints
            if text in shown
        ]
    assert not leaks, f"model answers or mark schemes in what students receive: {leaks[:10]}"
    # the search finds what it looks for: in the grader's page, every fingerprint is there
    for assignment, notebook in grading_pages.notebooks(graded_course):
        page = grading_pages.page_words(
            formgrader.page(
                f"/formgrader/submissions/{grading_pages.submission_id(graded_course, assignment, notebook)}/"
            )
        )
        unseen = [text for a, n, _, text in all_prints if (a, n) == (assignment, notebook) and text not in page]
        assert not unseen, f"{notebook}: fingerprints the formgrader does not show: {unseen[:5]}"


@pytest.mark.slow
def test_feedback_pages_draw_maths_as_mathml_and_load_no_mathjax(graded_course):
    pages = sorted((graded_course.root / "feedback").rglob("*.html"))
    assert len(pages) == len(grading_pages.notebooks(graded_course))
    for path in pages:
        page = path.read_text(encoding="utf-8")
        assert page.count("<math") >= 3, f"{path.name}: no MathML"
        assert not re.search(r"<script[^>]*\bsrc=", page), f"{path.name} loads a script"
        assert "mathjax" not in page.lower().replace("loading mathjax macro", ""), (
            f"{path.name} still configures MathJax"
        )
        text = re.sub(r"<(style|script)\b.*?</\1>|<pre.*?</pre>|<code.*?</code>", " ", page, flags=re.S)
        raw = RAW_TEX.findall(re.sub(r"<[^>]*>", " ", text))
        assert not raw, f"{path.name} shows raw TeX: {raw[:5]}"
        # the student's own free-text maths too
        assert "<msubsup><mi>W</mi><mi>V</mi><mn>2</mn></msubsup>" in page
