"""Pages that show student content render inert: the HTML they contain, after Markdown and maths.

A notebook's answers are kept exactly as the student wrote them (autograded/ included); what
is made harmless is the HTML that the formgrader and feedback pages are made of, at the three
places student content becomes HTML:

* `clean_fragment` on what the Markdown renderer made of a cell (autograder.nbgrader.maths
  calls it on every cell it renders), so `[x](javascript:...)`, `&#106;avascript:`, event
  handlers and `<script>` are gone whatever Markdown made of them, while `<`, `>` and `&` in
  maths, code and prose show as typed;
* `InertOutputs`, a preprocessor of every HTML page nbgrader renders with the course's
  configuration, on outputs and raw cells (which nbconvert puts into a page as they are):
  HTML and SVG cleaned, scripts and widgets dropped, images only as embedded data, each output
  bounded in size;
* `inert_page` on a whole feedback page, which is ours from head to foot: the body cleaned
  again with the page's allowlist, and a Content-Security-Policy that forbids every script
  and every load from elsewhere (`FEEDBACK_POLICY`). Outputs already cleaned that the page's
  clean would leave exactly as they are (most of a page: the checks' pictures) wait in `Slots`
  while the rest is cleaned, and are set in after: the same page, with no output parsed twice.
  The formgrader's grading page is nbgrader's, with nbgrader's scripts: it gets
  `FORMGRADER_POLICY` (its own scripts and server only) from the course's
  templates/formgrade/mathjax.html.j2, placed after nbgrader's scripts and before any student
  content.

Links keep only http, https and mailto (and in-page `#` anchors); images only `data:image/...`;
styles only properties that cannot load anything. The cleaner is ammonia (nh3), which parses
as a browser does, so spellings (entities, case, whitespace, nesting) cannot hide a scheme.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import html
import re
import secrets

import nh3
from nbconvert.exporters import HTMLExporter
from nbconvert.preprocessors import Preprocessor
from traitlets import default

# nbgrader's own inline code in the body of its grading page, the only inline code the policy
# allows (by hash): the eye that shows or hides the student's name, and its tooltips. A test
# renders the page with the installed nbgrader and fails when these change.
FORMGRADER_INLINE_CODE = (
    "toggle_name(true);",
    "toggle_name(false);",
    '\n  $(\'span.glyphicon.name-hidden\').tooltip({title: "Show student name", placement: "bottom", trigger: "hover"});'
    '\n  $(\'span.glyphicon.name-shown\').tooltip({title: "Hide student name", placement: "bottom", trigger: "hover"});\n  ',
)


def csp_hash(code: str) -> str:
    """A Content-Security-Policy source that allows exactly this inline code."""
    return "'sha256-" + base64.b64encode(hashlib.sha256(code.encode()).digest()).decode() + "'"


# What the formgrader may load and run: its own scripts, styles, fonts and API (same origin);
# images embedded in the page or from its own server; nothing from anywhere else; no inline code
# but nbgrader's own. Written out in templates/formgrade/mathjax.html.j2 (a test compares them).
FORMGRADER_POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-hashes' "
    + " ".join(csp_hash(code) for code in FORMGRADER_INLINE_CODE)
    + "; style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; connect-src 'self'; "
    "object-src 'none'; frame-src 'none'; base-uri 'self'; form-action 'self'"
)
# A feedback page is read from the student's disk or a course server: nothing runs, nothing loads.
FEEDBACK_POLICY = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; font-src data:; base-uri 'none'; form-action 'none'"
)

MAX_OUTPUT_CHARS = 512 * 1024  # one output's HTML or SVG in a page; the rest is left out, said so
URL_SCHEMES = frozenset({"http", "https", "mailto"})

_MATHML = frozenset(
    "math mi mn mo ms mspace mtext menclose merror mfrac mpadded mphantom mroot mrow msqrt mstyle"
    " mmultiscripts mover mprescripts msub msubsup msup munder munderover mtable mtd mtr semantics"
    " annotation".split()
)
_MATHML_ATTRIBUTES = frozenset(
    "display displaystyle mathvariant scriptlevel stretchy fence separator symmetric largeop"
    " movablelimits accent accentunder form lspace rspace minsize maxsize width height depth"
    " linethickness columnalign columnlines columnspacing rowalign rowlines rowspacing frame"
    " framespacing equalrows equalcolumns notation mathcolor mathbackground mathsize".split()
)
# What the course's pictures (heatmaps.py) and matplotlib's SVG are drawn with; no <use>, <image>,
# <foreignObject>, <a> or <style>, which can reach out or hold HTML.
_SVG = frozenset("svg g rect text tspan title line path polyline polygon circle ellipse defs clipPath".split())
_SVG_ATTRIBUTES = frozenset(
    "width height viewBox x y x1 y1 x2 y2 cx cy r rx ry d points fill stroke stroke-width opacity"
    " fill-opacity stroke-opacity stroke-linecap stroke-linejoin stroke-dasharray transform font-size"
    " font-family font-weight text-anchor dominant-baseline clip-path preserveAspectRatio".split()
)
# Style properties that take no URL (no background, list-style, cursor, content, mask, filter).
_STYLE_PROPERTIES = frozenset(
    "color background-color white-space display margin margin-top margin-bottom margin-left margin-right"
    " padding padding-top padding-bottom padding-left padding-right font-weight font-style font-size"
    " font-family text-align vertical-align border border-top border-bottom border-left border-right"
    " border-color border-width border-style border-collapse width height max-width text-decoration"
    " overflow overflow-x overflow-y".split()
)
# Classes a fragment may carry: nbconvert's and pygments' (short token names), the page's own
# panels, the course's (tc-). No others, so an answer cannot pose as one of the formgrader's
# controls (`score`, `comment`, ...), which its scripts find by class.
_FRAGMENT_CLASS = re.compile(
    r"(?:tc-[\w-]+|highlight|hl-[\w+-]+|anchor-link|language-[\w+-]+|[a-z]{1,3}\d?|panel|panel-[a-z]+"
    r"|pull-right|nbgrader-label|rendered_html|output_[a-z]+|text_cell_render)"
)
_TOKEN = re.compile(r"[\w-]+")
_IMAGE_DATA = re.compile(r"data:image/(?:png|jpeg|gif|webp);base64,[A-Za-z0-9+/=\s]*", re.I)

_URL_ATTRIBUTES = frozenset({"href", "src", "cite", "action", "formaction", "xlink:href", "background", "poster"})
_IGNORED_IN_URL = re.compile(r"[\x00-\x20\x7f]+")
_HTML_TAGS = frozenset(nh3.ALLOWED_TAGS) - {"area", "map"}
_TAGS = _HTML_TAGS | _MATHML | _SVG
# Elements whose text an HTML serialiser writes unescaped: none may be in a page (see Slots).
RAW_TEXT = frozenset("style script xmp iframe noembed noframes plaintext noscript".split())


def _attributes(page: bool) -> dict[str, set[str]]:
    # role and aria-label carry no URL and run nothing: the course's pictures are labelled with them.
    common = {"class", "title", "style", "lang", "dir", "align", "role", "aria-label"} | ({"id"} if page else set())
    attributes: dict[str, set[str]] = {tag: set(names) for tag, names in nh3.ALLOWED_ATTRIBUTES.items()}
    attributes.pop("area", None)
    attributes["*"] = common
    attributes["div"] = {"data-grade-id"}
    for tag in _MATHML:
        attributes[tag] = set(_MATHML_ATTRIBUTES)
    for tag in _SVG:
        attributes[tag] = set(_SVG_ATTRIBUTES)
    return attributes


def _attribute_filter(page: bool):
    def keep(tag: str, attribute: str, value: str) -> str | None:
        if attribute == "class":
            tokens = [token for token in value.split() if (_TOKEN if page else _FRAGMENT_CLASS).fullmatch(token)]
            return " ".join(tokens) or None
        if attribute == "id":
            return value if _TOKEN.fullmatch(value) else None
        if tag == "img" and attribute == "src":
            return value if _IMAGE_DATA.fullmatch(value.strip()) else None  # no fetch from anywhere
        if attribute in _URL_ATTRIBUTES:
            # as a browser reads a URL: without the whitespace and controls it ignores, any case
            plain = _IGNORED_IN_URL.sub("", value).lower()
            if plain.startswith(("http:", "https:", "mailto:")) or (page and plain.startswith("#")):
                return value
            return None  # no other scheme, and no relative link into the server that serves the page
        return value

    return keep


@functools.cache
def _cleaner(page: bool) -> nh3.Cleaner:
    return nh3.Cleaner(
        tags=set(_TAGS),
        clean_content_tags={"script", "style"},
        attributes=_attributes(page),
        attribute_filter=_attribute_filter(page),
        url_schemes=set(URL_SCHEMES) | {"data"},  # data: only for images, see _attribute_filter
        link_rel="noopener noreferrer nofollow",
        filter_style_properties=set(_STYLE_PROPERTIES),
        strip_comments=True,
    )


def clean_fragment(fragment: str) -> str:
    """A piece of a page made from student content (a rendered cell, an output), made inert.
    Cleaning is a function of the text alone: a class's pages repeat the same pictures and
    messages (every correct answer draws the same), so what was cleaned is remembered."""
    cleaned = _CLEANED.get(fragment)
    if cleaned is None:
        cleaned = _cleaner(False).clean(fragment)
        _CLEANED.put(fragment, cleaned, len(fragment) + len(cleaned))
    return cleaned


class Remembered:
    """Values by key, kept while their sizes (characters, given with each) add up to no more
    than `max_chars`, the least recently used forgotten first; one value takes at most a
    sixteenth. What a class's pages repeat (cleaned pictures, the notebook's rendered text)."""

    def __init__(self, max_chars: int):
        import collections

        self.max_chars, self.chars = max_chars, 0
        self.items: collections.OrderedDict = collections.OrderedDict()  # key -> (value, chars)

    def get(self, key):
        found = self.items.get(key)
        if found is None:
            return None
        self.items.move_to_end(key)
        return found[0]

    def clear(self) -> None:
        self.items.clear()
        self.chars = 0

    def put(self, key, value, chars: int) -> None:
        if chars > self.max_chars // 16 or key in self.items:
            return
        self.items[key] = (value, chars)
        self.chars += chars
        while self.chars > self.max_chars:
            _, (_, old_chars) = self.items.popitem(last=False)
            self.chars -= old_chars


_CLEANED = Remembered(16 * 1024 * 1024)  # fragments and their cleaned forms
_KEPT_BY_PAGE = Remembered(16 * 1024 * 1024)  # cleaned fragments -> whether a page's clean leaves them as they are


def forget_cleaned() -> None:
    """Forget every fragment cleaned so far (what a page costs when none of its outputs was seen)."""
    _CLEANED.clear()
    _KEPT_BY_PAGE.clear()


def _kept_by_page(cleaned: str) -> bool:
    """Whether the page's cleaner, parsing `cleaned` where a fragment is parsed (in a <div>),
    writes it back unchanged: the page's allowlist keeps all of it, and it reads back as written."""
    kept = _KEPT_BY_PAGE.get(cleaned)
    if kept is None:
        kept = _cleaner(True).clean(cleaned) == cleaned
        _KEPT_BY_PAGE.put(cleaned, kept, len(cleaned))
    return kept


SLOTS = "tc_inert_slots"  # the resources key of a page's Slots (set by the feedback exporter)
_SLOT_OPENING = re.compile(r'<div(?: class="[\w -]*")?>')  # the template's <div> around an HTML output, cleaned


class Slots:
    """Outputs a feedback page sets in after its own clean, instead of parsing them twice.

    InertOutputs cleans an output once (as a fragment); `inert_page` then cleans the whole body.
    An output that the page's cleaner leaves exactly as it is (`_kept_by_page`, decided once per
    distinct output) is held here, and the page is rendered with a slot in its place: a token
    that carries a nonce drawn for this page, which nothing in a notebook can know. The body is
    cleaned with the tokens, and each output goes back into its slot. The template makes each
    slot the whole text of a <div>; where the clean leaves it so, the output is parsed in the page
    as it was checked, in a <div>, and the page is the one a whole clean makes (tests compare
    them). A slot found anywhere else, or not once, and the whole body, outputs included, is
    cleaned as before.

    Either way the page holds only what an allowlist kept: every text in it is escaped (no element
    whose text is written raw is allowed: `RAW_TEXT`), attributes are quoted, comments are gone,
    so a browser reads the same tags wherever an output lands."""

    def __init__(self):
        self.prefix = f"tc-slot-{secrets.token_hex(16)}-"
        self.token = re.compile(re.escape(self.prefix) + r"\d+")
        self.held: dict[str, str] = {}

    def hold(self, cleaned: str) -> str:
        """What the page shows for an output cleaned as a fragment: a slot, or the output itself."""
        if not _kept_by_page(cleaned):
            return cleaned
        slot = f"{self.prefix}{len(self.held)}"
        self.held[slot] = cleaned
        return slot

    def set_in(self, body: str, cleaned_body: str) -> str | None:
        """`cleaned_body` (the clean of `body`, as rendered with slots) with each held output in its
        slot; None if a slot is not once in each, as the whole text of a <div>."""
        rendered = self.token.findall(body)
        if len(set(rendered)) != len(rendered):
            return None
        pieces, at, found = [], 0, []
        for match in self.token.finditer(cleaned_body):
            slot, start, end = match.group(), match.start(), match.end()
            opening = cleaned_body.rfind("<", 0, start)
            if (
                slot not in self.held
                or not _SLOT_OPENING.fullmatch(cleaned_body, opening, start)
                or not cleaned_body.startswith("</div>", end)
            ):
                return None
            pieces += [cleaned_body[at:start], self.held[slot]]
            at = end
            found.append(slot)
        if sorted(found) != sorted(rendered):
            return None
        return "".join(pieces) + cleaned_body[at:]

    def restore(self, body: str) -> str:
        """`body` with each held output back in its slot, to be cleaned whole."""
        return self.token.sub(lambda match: self.held.get(match.group(), ""), body)


def _bounded(text: str, what: str) -> str:
    if len(text) <= MAX_OUTPUT_CHARS:
        return text
    return (
        f'<p class="tc-note"><i>This {what} is {len(text):,} characters long; it is not shown '
        f"(pages show at most {MAX_OUTPUT_CHARS:,}).</i></p>"
    )


_KEPT_DATA = ("text/plain", "text/markdown", "text/latex")  # escaped or rendered by the page itself


class InertOutputs(Preprocessor):
    """Outputs and raw cells as a page may show them (see the module's docstring); registered for
    nbgrader's HTML exporters in nbgrader_config.py (`c.HTMLExporter.preprocessors`)."""

    @default("enabled")
    def _enabled_default(self):
        return True

    def preprocess(self, nb, resources):
        nb.metadata.pop("widgets", None)  # its keys become <script type=...> in nbconvert's footer
        return super().preprocess(nb, resources)

    def preprocess_cell(self, cell, resources, index):
        if cell.get("cell_type") == "raw":
            source = cell.get("source", "")
            source = "".join(source) if isinstance(source, list) else str(source)
            cell.source = clean_fragment(_bounded(source, "raw cell"))
        for output in cell.get("outputs", []):
            data = output.get("data")
            if not isinstance(data, dict):
                continue
            kept = {key: value for key, value in data.items() if key in _KEPT_DATA}
            if isinstance(data.get("text/html"), str | list):
                kept["text/html"] = clean_fragment(_bounded(_text(data["text/html"]), "output"))
                if resources.get(SLOTS) is not None:
                    kept["text/html"] = resources[SLOTS].hold(kept["text/html"])
            if isinstance(data.get("image/svg+xml"), str | list):
                kept["image/svg+xml"] = clean_fragment(_bounded(_text(data["image/svg+xml"]), "picture"))
            for image in ("image/png", "image/jpeg"):
                value = data.get(image)
                if (
                    isinstance(value, str)
                    and len(value) <= MAX_OUTPUT_CHARS
                    and _IMAGE_DATA.fullmatch(f"data:{image};base64,{value}")
                ):
                    kept[image] = value
            output["data"] = kept
            output["metadata"] = {}  # filenames, isolation...: nothing a page should take from a notebook
        return cell, resources


def _text(value) -> str:
    return "".join(value) if isinstance(value, list) else value


_HEAD = re.compile(r"<head(?:\s[^>]*)?>", re.I)
_BODY = re.compile(r"(<body(?:\s[^>]*)?>)(.*)(</body>)", re.I | re.S)
_ACTIVE = re.compile(r"<script\b.*?</script>|<link\b[^>]*>|<base\b[^>]*>", re.I | re.S)


def policy_meta(policy: str) -> str:
    """The <meta> that puts a Content-Security-Policy on a page (the first thing in its head)."""
    return f'<meta http-equiv="Content-Security-Policy" content="{html.escape(policy)}">'


def inert_page(page: str, slots: Slots | None = None) -> str:
    """A whole feedback page made inert: its policy first in the head, nbconvert's scripts and
    stylesheet links out of the template's parts (a page carries its styles inline), the body
    cleaned with the page's allowlist (the template's ids, classes and anchors kept). `slots`:
    the outputs the page was rendered without (see Slots)."""
    body = _BODY.search(page)
    if body is None:
        return policy_meta(FEEDBACK_POLICY) + _clean_body(page, slots)
    before, after = _ACTIVE.sub("", page[: body.start()]), _ACTIVE.sub("", page[body.end() :])
    head = _HEAD.search(before)
    at = head.end() if head else 0
    before = before[:at] + policy_meta(FEEDBACK_POLICY) + before[at:]
    return f"{before}{body.group(1)}{_clean_body(body.group(2), slots)}{body.group(3)}{after}"


def _clean_body(body: str, slots: Slots | None) -> str:
    if slots is not None and slots.held:
        placed = slots.set_in(body, _cleaner(True).clean(body))
        if placed is not None:
            return placed
        body = slots.restore(body)
    return _cleaner(True).clean(body)


class InertHTMLExporter(HTMLExporter):
    """nbconvert's HTML exporter whose pages are made inert (`inert_page`): the exporter of
    `nbgrader generate_feedback` and the formgrader's feedback button, set as
    `c.GenerateFeedback.exporter_class` in nbgrader_config.py."""

    def from_notebook_node(self, nb, resources=None, **kw):
        page, resources = super().from_notebook_node(nb, resources, **kw)
        return inert_page(page), resources
