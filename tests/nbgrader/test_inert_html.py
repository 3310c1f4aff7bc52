"""The cleaning that makes pages inert, part by part (the pages themselves, in Chromium, are
tests/nbgrader/test_inert_pages.py): links in every spelling, outputs and raw cells, whole feedback pages,
the formgrader's policy against the installed nbgrader's page, and the TeX budget."""

from __future__ import annotations

import json
import re
import time

import nbformat
import pytest

from autograder.nbgrader import inert, maths
from tests.builders import REPOSITORY

HOSTILE_HREFS = [
    "javascript:alert(1)",
    "JaVaScRiPt:alert(1)",
    "&#106;avascript:alert(1)",
    "&#x6A;&#x61;vascript:alert(1)",
    "java&#9;script:alert(1)",
    "java\nscript:alert(1)",
    "  javascript:alert(1)",
    "\x01javascript:alert(1)",
    "javascript&colon;alert(1)",
    "vbscript:msgbox(1)",
    "VBScript:msgbox(1)",
    "data:text/html,<script>alert(1)</script>",
    "DATA:text/html;base64,PHNjcmlwdD4=",
    "&#100;ata:text/html,x",
    "//evil.example/x",
    "/api/shutdown",
    "../../files/secret",
    "file:///etc/passwd",
]


@pytest.mark.parametrize("href", HOSTILE_HREFS)
def test_no_link_but_http_https_and_mailto_survives(href):
    for source in (f"<a href='{href}'>x</a>", f"<svg><a href='{href}'><text>x</text></a></svg>"):
        cleaned = inert.clean_fragment(source)
        assert "href" not in cleaned, cleaned
    assert "href" not in maths.markdown_to_html(f"[x]({href})")


def test_http_links_and_embedded_images_are_kept_remote_images_are_not():
    cleaned = inert.clean_fragment(
        "<a href='https://example.org/a'>a</a><a href='mailto:t@example.org'>m</a>"
        "<img src='data:image/png;base64,iVBORw0KGgo='><img src='https://evil.example/t.png'>"
        "<img src='data:image/svg+xml;base64,PHN2Zz4='><div style='color:red;background:url(https://evil.example/b)'>s</div>"
    )
    assert 'href="https://example.org/a"' in cleaned and 'href="mailto:t@example.org"' in cleaned
    assert 'src="data:image/png;base64,iVBORw0KGgo="' in cleaned
    assert "evil" not in cleaned and "svg+xml" not in cleaned and 'style="color:red"' in cleaned


def test_an_answer_cannot_pose_as_the_formgraders_controls():
    cleaned = inert.clean_fragment("<span class='score comment k tc-x' id='q1_transformer'>x</span>")
    assert cleaned == '<span class="k tc-x">x</span>'


def test_outputs_and_raw_cells_are_made_inert():
    nb = nbformat.v4.new_notebook()
    nb.metadata["widgets"] = {"text/javascript": "alert(1)"}
    nb.cells = [
        nbformat.v4.new_raw_cell("<script>alert(1)</script><img src=x onerror=alert(2)><b>raw</b>"),
        nbformat.v4.new_code_cell(
            "x",
            outputs=[
                nbformat.v4.new_output(
                    "display_data",
                    data={
                        "text/html": "<b onclick=alert(1)>html</b><script>alert(2)</script>",
                        "image/svg+xml": "<svg onload=alert(3)><rect width='1'/><image href='https://evil.example/i'/></svg>",
                        "application/javascript": "alert(4)",
                        "image/png": 'iVBORw0KGgo=" onerror="alert(5)',
                        "text/plain": "plain <kept>",
                    },
                    metadata={"filenames": {"image/png": "https://evil.example/p.png"}},
                ),
                nbformat.v4.new_output("display_data", data={"text/html": "x" * (inert.MAX_OUTPUT_CHARS + 1)}),
            ],
        ),
    ]
    nb, _ = inert.InertOutputs().preprocess(nb, {})
    assert "widgets" not in nb.metadata
    assert nb.cells[0].source == "<b>raw</b>" or nb.cells[0].source == "<img><b>raw</b>"
    data = nb.cells[1].outputs[0].data
    assert (
        data["text/html"] == "<b>html</b>"
        and "onload" not in data["image/svg+xml"]
        and "evil" not in data["image/svg+xml"]
    )
    assert set(data) == {"text/html", "image/svg+xml", "text/plain"} and not nb.cells[1].outputs[0].metadata
    assert "not shown" in nb.cells[1].outputs[1].data["text/html"]


def test_a_feedback_page_is_cleaned_whole_under_its_policy():
    page = (
        "<!DOCTYPE html><html><head><title>t</title><script src='https://cdn.example/x.js'></script>"
        "<link rel=stylesheet href='https://cdn.example/x.css'><style>p{color:red}</style></head>"
        "<body><div id='top' class='panel'><a href='#top'>top</a><script>alert(1)</script>"
        "<a href='javascript:alert(2)'>j</a></div></body></html>"
        "<script type='text/javascript'>alert(3)</script>"
    )
    cleaned = inert.inert_page(page)
    assert cleaned.startswith("<!DOCTYPE html><html><head>" + inert.policy_meta(inert.FEEDBACK_POLICY))
    assert "<script" not in cleaned and "<link" not in cleaned and "javascript" not in cleaned
    assert "<style>p{color:red}</style>" in cleaned and 'id="top"' in cleaned and 'href="#top"' in cleaned


def test_the_formgraders_policy_allows_exactly_nbgraders_own_inline_code():
    """Rendered as the formgrader renders it (the course's configuration, nbgrader's template as
    installed): the policy comes after nbgrader's scripts, and every inline script or handler after
    it is one the policy allows by hash (else nbgrader changed its page: update FORMGRADER_INLINE_CODE)."""
    import nbgrader.server_extensions.formgrader.handlers as handlers
    from nbconvert.exporters import HTMLExporter
    from traitlets.config import Config

    from autograder.nbgrader import settings

    config = Config()
    config.HTMLExporter.template_name = "formgrade"
    config.HTMLExporter.extra_template_basedirs = [handlers.template_path]
    config.merge(settings.load(REPOSITORY).config)
    resources = {
        "assignment_id": "attention_heads",
        "notebook_id": "questions",
        "submission_id": "s",
        "index": 0,
        "total": 1,
        "base_url": "",
        "student": "s",
        "last_name": None,
        "first_name": None,
        "notebook_path": "/n",
    }
    page, _ = HTMLExporter(config=config).from_filename(
        str(REPOSITORY.release / "attention_heads" / "questions.ipynb"), resources=resources
    )
    meta = page.index(f'content="{inert.FORMGRADER_POLICY}"')
    assert "formgrade.js" in page[:meta], "nbgrader's own scripts must come before the policy"
    after = page[meta:]
    inline = re.findall(r"<script[^>]*>(.*?)</script>", after, re.S)
    inline += [value for value in re.findall(r"\son\w+=\"([^\"]*)\"", after)]
    assert inline, "nbgrader's page has no inline code any more: drop FORMGRADER_INLINE_CODE"
    for code in inline:
        assert inert.csp_hash(code) in inert.FORMGRADER_POLICY, f"inline code the policy blocks: {code!r}"


@pytest.mark.parametrize("formulas", [12_000, 40_000])  # about 330 KB and 1.1 MB of TeX in one cell
def test_much_tex_makes_a_bounded_page_quickly(formulas):
    tex = " ".join(f"$\\sum_{{k={i}}} W_O^{{{i}}} W_V^{{{i}}}$" for i in range(formulas))
    started = time.monotonic()
    page = maths.markdown_to_html(tex)
    took = time.monotonic() - started
    print(f"\n{len(tex):,} characters of TeX: {len(page):,} characters of HTML in {took:.2f} s")
    assert len(page) < 2 * len(tex) and ("shown as typed" in page)
    drawn = page.count("<math")
    assert drawn * 20 <= maths.MAX_TEX_PER_ANSWER, drawn  # within the cell's budget, the rest plain text
    assert drawn > 0 or len(tex) > maths.MAX_MARKDOWN_CHARS


def test_the_course_own_maths_is_all_drawn():
    for path in sorted(REPOSITORY.release.glob("*/*.ipynb")):
        budget = maths.TexBudget()
        for cell in json.loads(path.read_text())["cells"]:
            if cell["cell_type"] == "markdown":
                maths.markdown_to_html("".join(cell["source"]), budget)
                assert not budget.skipped, f"{path.name}: the course's own maths is over the budget"


def test_a_cell_rendered_before_is_drawn_as_new_where_the_page_has_no_room_left():
    source = "Two formulas: $a^2 + b^2 = c^2$ and $$\\sum_i W_O^i W_V^i$$"
    drawn = len("a^2 + b^2 = c^2") + len("\\sum_i W_O^i W_V^i")
    first = maths.markdown_to_html(source)  # rendered, and remembered
    again = maths.TexBudget()
    assert maths.markdown_to_html(source, again) == first
    assert again.page_left == maths.MAX_TEX_PER_PAGE - drawn, "a remembered cell still counts its TeX"
    squeezed = maths.markdown_to_html(source, maths.TexBudget(page_left=drawn - 1))
    assert "shown as typed" in squeezed and squeezed.count("<math") == 1
    maths._rendered().items.clear()  # what a page with as little room gets when nothing is remembered
    assert squeezed == maths.markdown_to_html(source, maths.TexBudget(page_left=drawn - 1))


def test_remembered_values_stay_within_their_characters():
    remembered = inert.Remembered(max_chars=160)
    for number in range(40):
        remembered.put(number, str(number), 10)
        remembered.get(0)  # used again and again: kept
    assert remembered.chars <= 160 and remembered.get(0) == "0" and remembered.get(1) is None
    remembered.put("large", "x" * 11, 11)  # more than a sixteenth: not kept
    assert remembered.get("large") is None
    remembered.clear()
    assert remembered.get(0) is None and remembered.chars == 0
    remembered.put(0, "0", 10)
    assert remembered.get(0) == "0" and remembered.chars == 10


# -- outputs set in after a feedback page's clean (inert.Slots) --------------------------------

KEPT_OUTPUT = '<div class="tc-grading"><p><b>passed</b></p><svg width="20" height="10"><rect x="1" y="1" width="5" height="5" fill="#fff"><title>0.5</title></rect></svg></div>'


def _page(body: str) -> str:
    return f"<!DOCTYPE html><html><head><title>t</title></head><body>{body}</body></html>"


@pytest.mark.parametrize(
    "placed, set_in",
    [
        ('<div class="output_html rendered_html output_subarea ">{}</div>', True),  # as nbconvert's template puts it
        ("<div>{}</div><div>{}</div>", False),  # twice
        ('<div><p title="{}">x</p></div>', False),  # in an attribute
        ("<div><b>x</b>{}</div>", False),  # not the whole text of its <div>
        ("<p>{}</p>", False),  # not in a <div>
        ("<table><tr><td>x</td></tr>{}</table>", False),  # moved out of the table by the parse
        ("<div><script>{}</script></div>", False),  # cleaned away with the script
        ("<div>{}", True),  # the clean closes the <div>
    ],
)
def test_outputs_set_in_after_the_clean_give_the_page_a_whole_clean_gives(monkeypatch, placed, set_in):
    """A held output goes back into its slot only where the clean left the slot as the whole text
    of a <div>; anywhere else the page is cleaned whole. Either way the page is the one cleaning
    it whole with the output in place makes."""
    slots = inert.Slots()
    slot = slots.hold(inert.clean_fragment(KEPT_OUTPUT))
    assert slot != KEPT_OUTPUT and slots.held == {slot: KEPT_OUTPUT}
    cleaned_texts: list[str] = []
    cleaner = inert._cleaner
    monkeypatch.setattr(inert, "_cleaner", lambda page: _Recorded(cleaner(page), cleaned_texts))
    page = inert.inert_page(_page(placed.replace("{}", slot)), slots)
    # set in: one clean, which never parsed the output; else a second, of the page with it in place
    assert [KEPT_OUTPUT in text for text in cleaned_texts] == ([False] if set_in else [False, True])
    assert page == inert.inert_page(_page(placed.replace("{}", KEPT_OUTPUT)))
    assert slot not in page


class _Recorded:
    """A cleaner that records each text it cleans."""

    def __init__(self, cleaner, texts: list):
        self.cleaner, self.texts = cleaner, texts

    def clean(self, text: str) -> str:
        self.texts.append(text)
        return self.cleaner.clean(text)


def test_no_element_whose_text_is_written_raw_is_allowed():
    """What makes a page safe wherever an output lands: every text a cleaner writes is escaped."""
    assert inert._TAGS.isdisjoint(inert.RAW_TEXT)
    for raw in sorted(inert.RAW_TEXT):
        for page in (False, True):
            cleaned = inert._cleaner(page).clean(f"<{raw}>&lt;b&gt;x</{raw}>")
            assert "<b>" not in cleaned and f"<{raw}" not in cleaned, (raw, cleaned)


def test_an_output_the_pages_clean_would_change_is_not_held_and_slots_cannot_be_guessed():
    slots = inert.Slots()
    pygments_only = inert.clean_fragment('<span class="hl-c++">x</span>')  # a class fragments keep, pages do not
    assert pygments_only == '<span class="hl-c++">x</span>' and slots.hold(pygments_only) == pygments_only
    held = slots.hold(inert.clean_fragment(KEPT_OUTPUT))
    # an answer that shows another page's slot (or this one's, were it known) is text like any other
    other = inert.Slots().hold(inert.clean_fragment(KEPT_OUTPUT))
    page = inert.inert_page(_page(f"<div>{held}</div><div>{other}</div>"), slots)
    assert KEPT_OUTPUT in page and other in page and held not in page
    assert inert.Slots().prefix != slots.prefix


def test_a_feedback_page_with_its_outputs_set_in_is_the_page_cleaned_whole(monkeypatch):
    """The feedback exporter, on a notebook whose outputs are the course's pictures, hostile HTML
    and HTML the page's allowlist changes: the same page as with every output cleaned in place."""
    import numpy as np
    from traitlets.config import Config

    from autograder.core.course import Course
    from autograder.nbgrader import feedback, settings

    course = Course(REPOSITORY.root)
    heatmaps = course.public_module("attention_heads", "heatmaps")
    outputs = [
        heatmaps.show_head(np.eye(4, 16), np.eye(16, 4, k=-8), "your head 1").svg,
        heatmaps.side_by_side(heatmaps.show_matrix(np.eye(3), "a"), heatmaps.show_matrix(np.ones((2, 2)), "b")).svg,
        "<a href='javascript:alert(1)' onclick='alert(2)'>x</a><script>alert(3)</script><img src=x onerror=alert(4)>",
        "<noscript><p title=\"</noscript><img src=x onerror=alert('mxss')>\"></p></noscript>",
        "<table><div>fostered</div><tr><td>cell</td></tr></table><p><div>split</div></p>",
        "<svg><p>breaks out</p><title>t</title></svg><math><mi>x</mi><style>s</style></math>",
        '<span class="hl-c++ tc-x">changed by the page</span>',
        "<b>unclosed <i>tags",
    ]
    nb = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell(
                f"x{n}", outputs=[nbformat.v4.new_output("display_data", data={"text/html": html, "text/plain": "x"})]
            )
            for n, html in enumerate(outputs)
        ]
    )
    config = Config(settings.load(course).config)
    config.HTMLExporter.template_name = feedback.TEMPLATE_NAME
    config.HTMLExporter.extra_template_basedirs = maths.template_basedirs()
    info = {"notebook": "n", "score": 1.0, "max_score": 2.0, "late_penalty": 0}
    exporter = feedback._feedback_exporter_class()(config=config)
    held = []
    hold = inert.Slots.hold
    monkeypatch.setattr(inert.Slots, "hold", lambda self, cleaned: held.append(cleaned) or hold(self, cleaned))
    set_in, _ = exporter.from_notebook_node(nb, {"nbgrader": dict(info)})
    monkeypatch.setattr(inert.Slots, "hold", lambda self, cleaned: cleaned)
    whole, _ = exporter.from_notebook_node(nb, {"nbgrader": dict(info)})
    assert set_in == whole
    assert len(held) == len(outputs) and "tc-slot" not in set_in
    assert "alert" not in whole and "onerror" not in whole and "fostered" in whole
