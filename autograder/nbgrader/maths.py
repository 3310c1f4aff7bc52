"""Maths in nbgrader's pages (formgrader and feedback) rendered on the server, as MathML.

nbconvert leaves `$...$` in the HTML for MathJax, and nbgrader's formgrade and feedback
templates load MathJax from a CDN: offline, graders and students read raw `$W_V^2 W_O^1$`.
Here the TeX of every markdown cell is turned into MathML while the page is rendered
(latex2mathml), which browsers draw natively: a page needs no script and no network, also when
a student opens their feedback file from disk. Two of nbconvert's extension points do it, both
set in nbgrader_config.py, so every nbgrader path that renders a page (the formgrader,
`nbgrader generate_feedback`, the formgrader's feedback button, the batch grader and the
grading service) picks it up:

* `c.HTMLExporter.filters = {"markdown2html": "autograder.nbgrader.maths.MarkdownWithMathML"}`
  replaces nbconvert's markdown filter by the same mistune renderer with MathML for maths;
* `c.HTMLExporter.extra_template_basedirs = maths.template_basedirs()` puts this package's
  templates/ in front of nbgrader's. They hold only a `mathjax.html.j2`, found before nbconvert's
  own (in `base/`): in `classic/` for every classic-based page (nbgrader's feedback template
  included), in `formgrade/` for the formgrader's grading page. Their `mathjax` macro loads no
  MathJax (whatever URL it is given, `HTMLExporter.mathjax_url` included) and styles the MathML;
  the formgrader's also answers formgrade.js's one question to MathJax (when typesetting ends).

TeX that latex2mathml cannot read stays as it was written, escaped, in a `<code>` element, so
a grader sees exactly what the student typed. So does TeX past a budget: one formula of more
than MAX_TEX_PER_FORMULA characters, and whatever comes after MAX_TEX_PER_ANSWER characters in
one cell or MAX_TEX_PER_PAGE in one page (a note says so): MathML is some twenty times the size
of its TeX, and one answer's megabyte of TeX must not make a huge page nor a slow one for the
next student. Every rendered cell is then made inert (autograder.nbgrader.inert.clean_fragment). Student TeX is untrusted: the MathML is rebuilt
from latex2mathml's element tree with MathML elements and presentational attributes only, and
every text escaped (latex2mathml's own serialisation passes `\\text{<script>}` through).
"""

from __future__ import annotations

import functools
import html
import pathlib
import xml.etree.ElementTree as ElementTree

import jinja2
from nbconvert.filters.markdown_mistune import IPythonRenderer, MarkdownWithMath
from traitlets.config import LoggingConfigurable

TEMPLATES = pathlib.Path(__file__).resolve().parent / "templates"

# MathML Core's elements (what latex2mathml emits is a subset) and its presentational attributes.
_ELEMENTS = frozenset(
    "math mi mn mo ms mspace mtext menclose merror mfrac mpadded mphantom mroot mrow msqrt mstyle"
    " mmultiscripts mover mprescripts msub msubsup msup munder munderover mtable mtd mtr semantics"
    " annotation".split()
)
_ATTRIBUTES = frozenset(
    "display displaystyle mathvariant scriptlevel stretchy fence separator symmetric largeop"
    " movablelimits accent accentunder form lspace rspace minsize maxsize width height depth"
    " linethickness columnalign columnlines columnspacing rowalign rowlines rowspacing frame"
    " framespacing equalrows equalcolumns notation mathcolor mathbackground mathsize".split()
)


def _clean(element: ElementTree.Element) -> ElementTree.Element | None:
    """A copy of latex2mathml's tree with only allowed elements and attributes, texts decoded
    from the character references latex2mathml writes into them (serialising escapes them)."""
    tag = element.tag.rpartition("}")[2]
    if tag not in _ELEMENTS:
        return None
    copy = ElementTree.Element(tag, {k: v for k, v in element.attrib.items() if k in _ATTRIBUTES})
    copy.text = html.unescape(element.text) if element.text else None
    for child in element:
        cleaned = _clean(child)
        if cleaned is None:
            continue
        cleaned.tail = html.unescape(child.tail) if child.tail else None
        copy.append(cleaned)
    return copy


MAX_TEX_PER_FORMULA = 2_000  # characters of TeX; a longer formula is shown as typed
MAX_TEX_PER_ANSWER = 10_000  # drawn as MathML in one cell; the course's longest cell has about 1,000
MAX_TEX_PER_PAGE = 50_000  # drawn as MathML in one page; the course's longest notebook has about 2,000
MAX_MARKDOWN_CHARS = 512 * 1024  # a longer cell is shown as typed, not rendered
PAGE_BUDGET = "tc_tex_budget"  # the key of a page's TexBudget in its rendering resources
_CACHED_TEX = 512  # formulas up to this long are remembered (the notebook's own, repeated in every page)
_REMEMBERED_CELL_CHARS = 8 * 1024  # Markdown cells up to this long are remembered rendered (the course's text)
_REMEMBERED_TOTAL_CHARS = 8 * 1024 * 1024  # of rendered HTML kept, over all remembered cells


class TexBudget:
    """How much TeX one page may still draw as MathML, and one cell of it."""

    def __init__(self, page_left: int = MAX_TEX_PER_PAGE):
        self.page_left = page_left
        self.cell_left = MAX_TEX_PER_ANSWER
        self.skipped = 0

    def take(self, tex: str) -> bool:
        """Whether this formula may be drawn (and its length counted), or is shown as typed."""
        size = len(tex)
        if size > MAX_TEX_PER_FORMULA or size > self.cell_left or size > self.page_left:
            self.skipped += 1
            return False
        self.cell_left -= size
        self.page_left -= size
        return True

    def note(self) -> str:
        if not self.skipped:
            return ""
        return (
            f'<p class="tc-note"><i>{self.skipped} formula(s) shown as typed: pages draw at most '
            f"{MAX_TEX_PER_FORMULA:,} characters of TeX per formula, {MAX_TEX_PER_ANSWER:,} per cell "
            f"and {MAX_TEX_PER_PAGE:,} per page.</i></p>"
        )


def tex_to_mathml(tex: str, display: bool = False) -> str | None:
    """MathML for one TeX formula (safe to put into a page), or None if it cannot be read.

    Short formulas are remembered: a class's pages repeat the notebook's own in every page."""
    if len(tex) <= _CACHED_TEX:
        return _cached_tex_to_mathml(tex, display)
    return _tex_to_mathml(tex, display)


@functools.lru_cache(maxsize=4096)
def _cached_tex_to_mathml(tex: str, display: bool) -> str | None:
    return _tex_to_mathml(tex, display)


def _tex_to_mathml(tex: str, display: bool) -> str | None:
    import latex2mathml.converter

    try:
        tree = latex2mathml.converter.convert_to_element(tex, display="block" if display else "inline")
    except Exception:  # noqa: BLE001 - any failure to read the student's TeX means: show it as typed
        return None
    cleaned = _clean(tree)
    if cleaned is None:
        return None
    # in HTML, <math> is MathML without a namespace attribute, and inline unless said otherwise
    cleaned.attrib.pop("display", None)
    if display:
        cleaned.set("display", "block")
    return ElementTree.tostring(cleaned, encoding="unicode", method="xml", short_empty_elements=False)


def _as_typed(tex: str, left: str, right: str) -> str:
    return f'<code class="tc-tex">{html.escape(left + tex + right, quote=False)}</code>'


class MathMLRenderer(IPythonRenderer):
    """nbconvert's markdown renderer with maths as MathML (the rest is nbconvert's), within a budget."""

    def __init__(self, *args, budget: TexBudget | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.budget = budget or TexBudget()

    def _maths(self, tex: str, display: bool, left: str, right: str) -> str:
        if not self.budget.take(tex):  # past the budget: the plain text, no larger than the TeX
            return html.escape(left + tex + right, quote=False)
        return tex_to_mathml(tex, display=display) or _as_typed(tex, left, right)

    def inline_math(self, body: str) -> str:
        return self._maths(body, False, "$", "$")

    def block_math(self, body: str) -> str:
        return self._maths(body, True, "$$", "$$")

    def latex_environment(self, name: str, body: str) -> str:
        return self._maths(f"\\begin{{{name}}}{body}\\end{{{name}}}", True, "", "")


def markdown_to_html(source: str, budget: TexBudget | None = None, **renderer_options) -> str:
    """Markdown (nbconvert's dialect: tables, maths...) to inert HTML with MathML maths; TeX past
    the budget (a fresh page's by default) shown as typed, with a note."""
    from autograder.nbgrader import inert

    budget = budget or TexBudget()
    budget.cell_left, budget.skipped = MAX_TEX_PER_ANSWER, 0
    if len(source) > MAX_MARKDOWN_CHARS:
        return (
            f'<pre class="tc-tex">{html.escape(source[:MAX_MARKDOWN_CHARS], quote=False)}</pre>'
            f'<p class="tc-note"><i>This cell is {len(source):,} characters long: shown as typed, '
            f"and only its first {MAX_MARKDOWN_CHARS:,}.</i></p>"
        )
    # Every page of a class repeats the notebook's own text: a cell rendered before is taken as
    # it was made when the page's TeX budget has room for all its formulas (then counted against
    # the page as when they were drawn), so a page is as if every cell were rendered anew.
    key = _remembered_key(source, renderer_options)
    remembered = _rendered().get(key) if key is not None else None
    if remembered is not None and remembered[1] <= budget.page_left:
        budget.page_left -= remembered[1]
        budget.cell_left -= remembered[1]
        return remembered[0]
    page_left = budget.page_left
    renderer = MathMLRenderer(escape=False, budget=budget, **renderer_options)
    rendered = MarkdownWithMath(renderer=renderer).render(source)
    made = inert.clean_fragment(rendered + budget.note())
    if key is not None and not budget.skipped:  # every formula drawn: the same on any page with room for it
        _rendered().put(key, (made, page_left - budget.page_left), len(source) + len(made))
    return made


_NOT_KEYS = ("attachments", "embed_images", "path")


def _remembered_key(source: str, options: dict):
    """What a rendered cell is remembered by, or None for one that is not: a long cell, one with
    attachments or embedded images (read from the page's folder). Without those, the page's
    folder (`path`, each student's own) changes nothing."""
    if len(source) > _REMEMBERED_CELL_CHARS or options.get("attachments") or options.get("embed_images"):
        return None
    key = (source, tuple(sorted((name, value) for name, value in options.items() if name not in _NOT_KEYS)))
    try:
        hash(key)
    except TypeError:
        return None
    return key


@functools.cache
def _rendered():
    """Rendered cells (inert.Remembered; imported when first rendering: it loads nbconvert's exporters)."""
    from autograder.nbgrader import inert

    return inert.Remembered(_REMEMBERED_TOTAL_CHARS)


# jinja passes a filter the template context when the filter carries this mark (what
# jinja2.pass_context sets on a function); read from the decorator so no private name is used.
_PASS_CONTEXT = jinja2.pass_context(lambda: None).jinja_pass_arg  # type: ignore[attr-defined]


class MarkdownWithMathML(LoggingConfigurable):
    """The `markdown2html` filter of an HTMLExporter, with MathML maths. nbconvert builds it with
    the exporter as parent; it honours the exporter's options as nbconvert's own filter does
    (cell attachments, embedded images, heading anchors, lexer options)."""

    jinja_pass_arg = _PASS_CONTEXT

    def __call__(self, context, source: str) -> str:
        exporter = self.parent
        cell = context.get("cell", {})
        resources = context.get("resources")
        budget = None
        if isinstance(resources, dict):  # one budget per page: the page's resources carry it
            budget = resources.setdefault(PAGE_BUDGET, TexBudget())
        return markdown_to_html(
            source,
            budget,
            attachments=cell.get("attachments", {}),
            embed_images=getattr(exporter, "embed_images", False),
            path=context.get("resources", {}).get("metadata", {}).get("path", ""),
            anchor_link_text=getattr(exporter, "anchor_link_text", "¶"),
            exclude_anchor_links=getattr(exporter, "exclude_anchor_links", False),
            **getattr(exporter, "lexer_options", {}),
        )


def template_basedirs() -> list[str]:
    """`HTMLExporter.extra_template_basedirs` for nbgrader: this package's templates first (only
    the offline mathjax macros), then nbgrader's own (formgrade, feedback)."""
    import nbgrader

    # where nbgrader's converters and formgrader find them (importing the server extension for
    # its path would cost every nbgrader command that reads the configuration a second)
    nbgrader_templates = pathlib.Path(nbgrader.__file__).parent / "server_extensions" / "formgrader" / "templates"
    return [str(TEMPLATES), str(nbgrader_templates)]
