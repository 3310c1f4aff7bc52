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
from typing import Iterable

MAX_NOTEBOOK_BYTES = 100 << 20
# Real notebooks nest a few levels (outputs, widget state); far deeper JSON is built to overflow
# the recursion of json, nbformat or the validator somewhere in the grader.
MAX_NESTING = 100


class UnreadableNotebook(Exception):
    """The file is not a notebook we can grade; the message says why, for the student."""


def read_notebook(path: str) -> dict:
    """Parse and validate a notebook file, or raise UnreadableNotebook with the reason."""
    try:
        size = os.path.getsize(path)
    except OSError as error:
        raise UnreadableNotebook(f"the file cannot be read ({error.strerror})") from None
    if size > MAX_NOTEBOOK_BYTES:
        raise UnreadableNotebook(
            f"the notebook is {size / 2**20:.0f} MiB, over the {MAX_NOTEBOOK_BYTES >> 20} MiB limit; "
            "clear its outputs (Edit > Clear Outputs of All Cells) and submit again"
        )
    try:
        with open(path, "rb") as handle:
            text = handle.read().decode("utf-8")
    except UnicodeDecodeError:
        raise UnreadableNotebook("the file is not UTF-8 text, so it is not a notebook") from None
    return parse_notebook(text)


@functools.lru_cache(maxsize=None)
def _validator(minor: int):
    """A compiled validator for nbformat 4.<minor>, from the schema files nbformat ships.

    Compiled with fastjsonschema directly: importing nbformat's own validator pulls in
    jsonschema's format checkers, which cost seconds at start-up on every grading run.
    """
    import fastjsonschema

    schema_dir = pathlib.Path(importlib.util.find_spec("nbformat").submodule_search_locations[0]) / "v4"
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
    try:
        notebook = json.loads(text)
    except json.JSONDecodeError as error:
        raise UnreadableNotebook(
            f"the file is not valid notebook JSON (line {error.lineno}, column {error.colno}: {error.msg})"
        ) from None
    except RecursionError:
        notebook = None
    if notebook is None or _nesting_exceeds(notebook, MAX_NESTING):
        raise UnreadableNotebook(f"the file's JSON is nested more than {MAX_NESTING} levels deep, so it is not a notebook")
    if not isinstance(notebook, dict) or not isinstance(notebook.get("cells"), list):
        raise UnreadableNotebook("the file is JSON but not a notebook (it has no list of cells)")
    if notebook.get("nbformat") != 4:
        raise UnreadableNotebook(
            f"the notebook is in format version {notebook.get('nbformat')!r}; open and save it in "
            "a current Jupyter to convert it to version 4"
        )
    minor = notebook.get("nbformat_minor")
    try:
        _validator(minor if isinstance(minor, int) else 5)(notebook)
    except Exception as error:  # fastjsonschema's JsonSchemaException, and anything odd in it
        raise UnreadableNotebook(f"the notebook does not follow the notebook format ({str(error)[:200]})") from None
    for cell in notebook["cells"]:
        cell["source"] = _text(cell.get("source", ""))
    return notebook


def cell_label(index: int, source: str) -> str:
    """How messages name a cell: its position and the start of its first non-blank line."""
    first = next((line.strip() for line in source.splitlines() if line.strip()), "")
    if len(first) > 40:
        first = first[:37] + "..."
    return f"cell {index + 1}" + (f" (`{first}`)" if first else "")


@functools.lru_cache(maxsize=1)
def _transformer():
    from IPython.core.inputtransformer2 import TransformerManager

    return TransformerManager()


def to_python(source: str) -> str:
    """Rewrite IPython syntax (magics, `!cmd`, `x?`) into plain Python calls on get_ipython().

    This is string processing only; the sandbox's stand-in shell decides what those calls do.
    """
    if not any(marker in source for marker in ("%", "!", "?")):
        return source
    try:
        return _transformer().transform_cell(source)
    except Exception:  # leave it; compiling it in the sandbox reports the syntax error
        return source


def code_cells(notebook) -> list[tuple[int, str]]:
    """(position, python source) of every code cell, in notebook order, whatever its metadata."""
    return [
        (index, to_python(cell["source"]))
        for index, cell in enumerate(notebook["cells"])
        if cell["cell_type"] == "code" and cell["source"].strip()
    ]


def _assigns(source: str, name: str) -> bool:
    source = re.sub(r"^\s*#.*$", "", source, flags=re.MULTILINE)  # commented-out code assigns nothing
    pattern = rf"(^|[\s,(;])({re.escape(name)})\s*(=(?!=)|\+=|:)|\bdef\s+{re.escape(name)}\s*\("
    return re.search(pattern, source, flags=re.MULTILINE) is not None


def assignment_sites(notebook, name: str) -> list[tuple[int, str]]:
    """(position, cell type) of cells whose text appears to assign `name`."""
    return [
        (index, cell["cell_type"])
        for index, cell in enumerate(notebook["cells"])
        if _assigns(cell["source"], name)
    ]


def count_defined(notebook, names: Iterable[str]) -> int:
    """How many of `names` some code cell appears to assign: used to recognise renamed notebooks."""
    code = "\n".join(cell["source"] for cell in notebook["cells"] if cell["cell_type"] == "code")
    return sum(1 for name in names if _assigns(code, name))
