"""Reading submitted notebooks defensively, and preparing their code for the sandbox.

Only cell *sources* are taken from a submission: outputs, cell metadata and the kernelspec are
never trusted. Reading happens in the grader's process and never executes anything.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import pathlib
import re
from collections.abc import Iterable

from autograder.core import safe_files

MAX_NOTEBOOK_BYTES = 100 << 20
# Real notebooks nest a few levels (outputs, widget state); far deeper JSON is built to overflow
# the recursion of json, nbformat or the validator somewhere in the grader.
MAX_NESTING = 100
# Lists and objects in the JSON: a real notebook has a handful per cell; 15 MB of "{}" would be
# millions of dicts (gigabytes of the grader's memory) before any check could look at them.
MAX_JSON_CONTAINERS = 500_000
# IPython syntax is rewritten in the grader's process, by IPython's transformer, whose cost grows
# with (lines to rewrite) x (lines in the cell): cells beyond these bounds are not rewritten but
# run as one statement that raises a SyntaxError telling the student why.
MAX_IPYTHON_LINES = 32
MAX_REWRITE_COST = 20_000  # rewritten lines x lines of the cell: about 0.4 s
MAX_NOTEBOOK_REWRITE_COST = 200_000
MAX_TRANSFORM_CHARS = 100_000
# Every string quoted from a submission in a message is cut to this many characters.
MAX_QUOTED_CHARS = 200


class UnreadableNotebook(Exception):
    """The file is not a notebook we can grade; the message says why, for the student."""


def read_notebook(path: str, root: str | None = None) -> dict:
    """Parse and validate a notebook file, or raise UnreadableNotebook with the reason.

    The file is opened without following links and must be a regular file with one name (see
    safe_files); with `root`, it must lie below `root` through real folders only.
    """

    def too_large(size):
        return (
            f"the notebook is {size / 2**20:.0f} MiB, over the {MAX_NOTEBOOK_BYTES >> 20} MiB limit; "
            "clear its outputs (Edit > Clear Outputs of All Cells) and submit again"
        )

    try:
        data = safe_files.read_regular(path, MAX_NOTEBOOK_BYTES, root=root, too_large=too_large)
    except safe_files.UnsafeFile as error:
        raise UnreadableNotebook(f"{os.path.basename(str(path))} is not graded: {error}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise UnreadableNotebook("the file is not UTF-8 text, so it is not a notebook") from None
    return parse_notebook(text)


def read_course_notebook(path: str | os.PathLike) -> dict:
    """Parse one of the course's own notebooks (source/, release/): trusted as the instructor's,
    so its number of names and links never matter (safe_files.read_course_file); still parsed and
    validated as any notebook is."""
    try:
        data = safe_files.read_course_file(path, MAX_NOTEBOOK_BYTES)
        return parse_notebook(data.decode("utf-8"))
    except (safe_files.UnsafeFile, UnicodeDecodeError) as error:
        raise UnreadableNotebook(f"the course notebook {path} cannot be read: {error}") from None


_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*+"')


def _too_many_containers(text: str, limit: int) -> bool:
    """Whether the JSON text opens more than `limit` lists and objects (linear; strings skipped)."""
    if text.count("{") + text.count("[") <= limit:  # the usual case, at C speed
        return False
    outside_strings = _JSON_STRING.sub("", text)
    return outside_strings.count("{") + outside_strings.count("[") > limit


@functools.cache
def _validator(minor: int):
    """A compiled validator for nbformat 4.<minor>, from the schema files nbformat ships.

    Compiled with fastjsonschema directly: importing nbformat's own validator pulls in
    jsonschema's format checkers, which cost seconds at start-up on every grading run.
    """
    import fastjsonschema

    nbformat_spec = importlib.util.find_spec("nbformat")
    assert nbformat_spec is not None and nbformat_spec.submodule_search_locations, "nbformat is installed"
    schema_dir = pathlib.Path(list(nbformat_spec.submodule_search_locations)[0]) / "v4"
    path = schema_dir / f"nbformat.v4.{minor}.schema.json"
    if not path.exists():
        path = schema_dir / "nbformat.v4.schema.json"
    return fastjsonschema.compile(json.loads(path.read_text()))


def source_text(source) -> str:
    """A cell's source as one string (nbformat allows a list of lines)."""
    return "".join(source) if isinstance(source, list) else source


_text = source_text


def _nesting_exceeds(value, limit: int) -> bool:
    """Whether lists and dicts in `value` nest deeper than `limit` (iterative: no recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth > limit:
                return True
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


def parse_notebook(text: str) -> dict:
    """A validated nbformat-4 notebook as plain dicts, every cell's source joined into one string."""
    if _too_many_containers(text, MAX_JSON_CONTAINERS):
        raise UnreadableNotebook(
            f"the file's JSON holds more than {MAX_JSON_CONTAINERS} lists and objects, far more "
            "than any notebook; clear its outputs and metadata and submit again"
        )
    try:
        notebook = json.loads(text)
    except json.JSONDecodeError as error:
        raise UnreadableNotebook(
            f"the file is not valid notebook JSON (line {error.lineno}, column {error.colno}: {error.msg})"
        ) from None
    except RecursionError:
        notebook = None
    except ValueError as error:  # e.g. an integer of thousands of digits (Python's int limit)
        raise UnreadableNotebook(f"the file is not valid notebook JSON ({quote(str(error), 100)})") from None
    if notebook is None or _nesting_exceeds(notebook, MAX_NESTING):
        raise UnreadableNotebook(
            f"the file's JSON is nested more than {MAX_NESTING} levels deep, so it is not a notebook"
        )
    if not isinstance(notebook, dict) or not isinstance(notebook.get("cells"), list):
        raise UnreadableNotebook("the file is JSON but not a notebook (it has no list of cells)")
    if notebook.get("nbformat") != 4:
        raise UnreadableNotebook(
            f"the notebook is in format version {notebook.get('nbformat')!r}; open and save it in "
            "a current Jupyter to convert it to version 4"
        )
    minor = notebook.get("nbformat_minor")
    validate = _validator(minor if isinstance(minor, int) else 5)
    try:
        validate(notebook)  # the fast path: almost every notebook is valid as saved
    except Exception:  # noqa: BLE001 - fastjsonschema's JsonSchemaException, and anything odd in it
        notebook = _as_jupyter_opens_it(notebook, minor if isinstance(minor, int) else 5, validate)
    for cell in notebook["cells"]:
        cell["source"] = _text(cell.get("source", ""))
    return notebook


def _as_jupyter_opens_it(notebook: dict, minor: int, validate) -> dict:
    """A notebook that fails the schema, read as Jupyter reads it.

    nbformat repairs what tools commonly leave out (a cell without an `id` in format 4.5 and
    later, duplicate ids, a code cell without `outputs` or `execution_count`, a cell without
    `metadata`) and opens the rest with a logged warning; only what it cannot show as cells is
    refused. So does this: the repaired notebook if it then validates, else the notebook as it
    is when every cell has a cell type and a source, else the schema's reason.
    """
    cells = notebook["cells"]
    seen: set[str] = set()
    for index, cell in enumerate(cells):
        if not isinstance(cell, dict):
            continue
        cell.setdefault("metadata", {})
        if cell.get("cell_type") == "code":
            cell.setdefault("outputs", [])
            cell.setdefault("execution_count", None)
        if minor >= 5:
            cell_id = cell.get("id")
            if not isinstance(cell_id, str) or not _CELL_ID.fullmatch(cell_id) or cell_id in seen:
                cell["id"] = _fresh_id(index, seen)
            seen.add(cell["id"])
    try:
        validate(notebook)
        return notebook
    except Exception as error:  # noqa: BLE001 - the schema's reason, shown if Jupyter would refuse too
        reason = quote(str(error))
    for index, cell in enumerate(cells):
        source = cell.get("source") if isinstance(cell, dict) else None
        readable_source = isinstance(source, str) or (
            isinstance(source, list) and all(isinstance(line, str) for line in source)
        )
        if not (isinstance(cell, dict) and cell.get("cell_type") in ("code", "markdown", "raw") and readable_source):
            raise UnreadableNotebook(
                f"cell {index + 1} is not a notebook cell Jupyter can show (it needs a cell_type of code, "
                f"markdown or raw and a text source); the notebook does not follow the notebook format ({reason})"
            )
    return notebook


_CELL_ID = re.compile(r"[a-zA-Z0-9-_]{1,64}")


def _fresh_id(index: int, taken: set[str]) -> str:
    """An id no other cell has, as nbformat gives a cell that lacks one."""
    candidate, extra = f"cell-{index}", 0
    while candidate in taken:
        extra += 1
        candidate = f"cell-{index}-{extra}"
    return candidate


# Control characters (terminal escapes, carriage returns, bidirectional overrides), newlines included
# or not: a quoted name or value must not end the line it is quoted in.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_CONTROL_OR_NEWLINE = re.compile(_CONTROL.pattern[:-1] + "\\n\\t]")


def quote(text, limit: int = MAX_QUOTED_CHARS, keep_newlines: bool = False) -> str:
    """A string from a submission, fit to be quoted in a message: control characters shown as
    escapes (newlines too, unless `keep_newlines`), and at most `limit` characters."""
    text = str(text)
    if len(text) > limit:
        text = text[:limit] + f"... ({len(text) - limit} more characters)"
    pattern = _CONTROL if keep_newlines else _CONTROL_OR_NEWLINE
    return pattern.sub(lambda match: match.group().encode("unicode_escape").decode("ascii"), text)


def grade_id(cell) -> str | None:
    """A cell's nbgrader grade_id, or None (also when the metadata is malformed: it may be the
    student's, and a list or a dict there is no id)."""
    meta = cell.get("metadata")
    nbgrader = meta.get("nbgrader") if isinstance(meta, dict) else None
    found = nbgrader.get("grade_id") if isinstance(nbgrader, dict) else None
    return found if isinstance(found, str) else None


def grade_id_positions(notebook) -> dict[str, int]:
    """grade_id -> position of the first cell that carries it."""
    positions: dict[str, int] = {}
    for index, cell in enumerate(notebook["cells"]):
        found = grade_id(cell)
        if found is not None:
            positions.setdefault(found, index)
    return positions


def cell_label(index: int, source: str) -> str:
    """How messages name a cell: its position and the start of its first non-blank line."""
    first = ""
    for line in _lines(source[:MAX_TRANSFORM_CHARS]):
        if line.strip():
            first = line.strip()
            break
    if len(first) > 40:
        first = first[:37] + "..."
    first = quote(first)
    return f"cell {index + 1}" + (f" (`{first}`)" if first else "")


def _lines(source: str):
    """The lines of `source`, lazily (a cell of a million blank lines is not split at once)."""
    start = 0
    while start <= len(source):
        end = source.find("\n", start)
        if end < 0:
            yield source[start:]
            return
        yield source[start:end]
        start = end + 1


@functools.lru_cache(maxsize=1)
def _transformer():
    from IPython.core.inputtransformer2 import TransformerManager

    return TransformerManager()


# A line IPython would rewrite: `!cmd`, `%magic`, `x = !cmd`, `x = %magic`, `name?`, `?name`.
_IPYTHON_LINE = re.compile(r"^[ \t]*+(?:[!%?]|[\w.]++[ \t]*+=[ \t]*+[!%])|\?[ \t]*+$", re.MULTILINE)


def rewrite_cost(source: str) -> int:
    """(lines IPython would rewrite) x (lines of the cell): what IPython's transformer spends,
    since it tokenizes the whole cell again after each rewrite. Counted in linear time, stopping
    early once over the per-cell bound."""
    lines = source.count("\n") + 1
    count = 0
    for _ in _IPYTHON_LINE.finditer(source):
        count += 1
        if count > MAX_IPYTHON_LINES:
            return MAX_REWRITE_COST + 1
        if count * lines > MAX_REWRITE_COST:
            break
    return count * lines


def _too_costly_to_rewrite(source: str, cost: int) -> str | None:
    if len(source) > MAX_TRANSFORM_CHARS:
        return f"it is {len(source)} characters long, over the {MAX_TRANSFORM_CHARS} the grader rewrites"
    if cost > MAX_REWRITE_COST:
        return (
            f"it has too many lines of IPython syntax (lines starting with ! or %, or ending with ?) "
            f"for its length (at most {MAX_IPYTHON_LINES}, fewer in a long cell)"
        )
    return None


def to_python(source: str, budget: list[int] | None = None) -> str:
    """Rewrite IPython syntax (magics, `!cmd`, `x?`) into plain Python calls on get_ipython().

    This is string processing only; the sandbox's stand-in shell decides what those calls do.
    Cells too costly to rewrite (see rewrite_cost; `budget`, a one-item list, is what is left
    for the whole notebook) become a statement raising a SyntaxError that says why.
    """
    if not any(marker in source for marker in ("%", "!", "?")):
        return source
    cost = rewrite_cost(source)
    reason = _too_costly_to_rewrite(source, cost)
    if reason is None and budget is not None:
        if cost > budget[0]:
            reason = "the notebook has used up the IPython syntax the grader rewrites for one notebook"
        else:
            budget[0] -= cost
    if reason is not None:
        message = f"this cell uses IPython syntax, but {reason}; split it into smaller cells or use plain Python"
        return f"raise SyntaxError({message!r})\n"
    try:
        return _transformer().transform_cell(source)
    except Exception:  # noqa: BLE001 - leave it; compiling it in the sandbox reports the syntax error
        return source


def code_cells(notebook) -> list[tuple[int, str]]:
    """(position, python source) of every code cell, in notebook order, whatever its metadata."""
    budget = [MAX_NOTEBOOK_REWRITE_COST]
    return [
        (index, to_python(cell["source"], budget))
        for index, cell in enumerate(notebook["cells"])
        if cell["cell_type"] == "code" and cell["source"].strip()
    ]


# `name =`, `name +=`, `name:` (annotated) after a line start or a separator, and `def name(`.
# Possessive quantifiers and no newline in any repeated class: each position is tried once,
# so the scan is linear in the text however the student lays out blank lines and spaces.
_ASSIGNED = re.compile(
    r"(?:^|(?<=[\s,(;]))([A-Za-z_]\w*+)[ \t]*+(?:=(?!=)|\+=|:)|\bdef[ \t]++([A-Za-z_]\w*+)[ \t]*+\(",
    re.MULTILINE,
)


_COMMENT_LINE = re.compile(r"^[ \t]*+#[^\n]*+", re.MULTILINE)


def assigned_names(source: str) -> set[str]:
    """Names that `source` appears to assign or define, ignoring lines that are comments."""
    code = _COMMENT_LINE.sub("", source)  # commented-out code assigns nothing
    return {match.group(1) or match.group(2) for match in _ASSIGNED.finditer(code)}


def defined_names(notebook) -> set[str]:
    """Every name some code cell appears to assign (one linear pass over the notebook)."""
    names = set()
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code":
            names |= assigned_names(cell["source"])
    return names


def count_defined(notebook, names: Iterable[str], defined: set[str] | None = None) -> int:
    """How many of `names` some code cell appears to assign: used to recognise renamed notebooks.

    `defined` (from defined_names) spares rescanning the notebook for every candidate."""
    defined = defined_names(notebook) if defined is None else defined
    return sum(1 for name in names if name in defined)
