"""What every assignment of the course shares: reading answers, writing messages, one tolerance.

The public checks in your notebook and the hidden checks that grade it build their messages
with the functions below, so a message you see here is the message the grader gives.

* Staging (``stage_array``, ``stage_number``, ``stage_whole_number``, ``stage_matrix_names``,
  and ``stage_result`` for what a function returned): an answer is checked in stages
  (present, type, shape, finite) and the first stage it fails is explained in your terms; the
  result is a float64 array (or number) that later checks can trust.
* Formatting (``fmt``, ``dims_text``, ``shape_text``, ``bullet_list``): numbers, dims and
  lists of problems as a person writes them.
* Differences (``difference_report``): in the style of ``numpy.testing``: what was compared,
  in how many entries it differs, and where and by how much it differs most.
* The tolerance rule (``tolerance``), below.
* ``public_check``: a failing public check raises ``CheckFailed``, which shows its message
  and not a traceback.
* Variants (``find_student_id``, ``variant_rng``, ``VariantTable``): in a course that gives
  every student an exercise of their own, the set-up cell draws yours from your student id.

Judges, the functions that decide whether an answer has a property, all follow one
convention: they return a list of problems (sentences in your terms), empty when all is well.

THE TOLERANCE RULE. A computed value v counts as equal to an intended value e when

    |v - e| <= atol + rtol * max(1, scale)

where ``scale`` is the size of the numbers that were summed to make e (for a plain comparison,
the largest |e|), ``rtol`` is ``RTOL`` = 1e-6 and ``atol`` is 0 unless a check says otherwise.
Rounding errors grow with the size of the terms, not of the result, so an answer that is
right up to floating point (a re-based head, a product computed in another order) passes,
while a real mistake, which is far larger than 1e-6 of anything involved, does not.
"""

from __future__ import annotations

import functools
import hashlib
import html
import os
import re
import textwrap
from typing import NamedTuple

import numpy as np

RTOL = 1e-6  # the relative part of the tolerance rule

# What the grader uses of this module (tested: the grader uses these names and no others); the
# rest serves the public checks.
GRADER_API = (
    "InputProblem",
    "RTOL",
    "tolerance",
    "fmt",
    "dims_text",
    "bullet_list",
    "difference_report",
    "describe_dtype",
    "type_problem",
    "result_type_problem",
    "stage_array",
    "stage_result",
    "stage_number",
    "stage_whole_number",
    "stage_matrix_names",
)


class InputProblem(AssertionError):
    """An answer failed a stage (present, type, shape, finite); the message says why."""


class CheckFailed(AssertionError):
    """A public check failed: shown as its message alone, with none of the checks' frames.

    It is still an error (a failed cell to nbgrader's Validate and to `nbgrader validate`), but
    IPython asks an exception for its own traceback (`_render_traceback_`) before printing one,
    so JupyterLab and `nbgrader validate` show the lines below instead of the call stack.
    """

    WIDTH = 83  # `nbgrader validate` cuts lines longer than this (its width 90, less its indent)

    def _render_traceback_(self) -> list[str]:
        lines: list[str] = []
        for number, line in enumerate(str(self).splitlines() or ["(no message)"]):
            text = f"{self.HEADING} {line}" if number == 0 else line
            bare = text.lstrip()
            lead = len(text) - len(bare) + (2 if bare.startswith("- ") else 0)  # align after a bullet
            wrapped = textwrap.wrap(text, self.WIDTH, subsequent_indent=" " * (lead or 2), break_on_hyphens=False)
            lines += wrapped or [""]
        lines[0] = lines[0].replace(self.HEADING, f"\x1b[1;31m{self.HEADING}\x1b[0m", 1)
        return lines

    HEADING = "Check failed:"


def public_check(function):
    """Show a failing public check as its message alone (a CheckFailed), not a traceback."""

    @functools.wraps(function)
    def run(*args, **kwargs):
        __tracebackhide__ = True
        try:
            return function(*args, **kwargs)
        except AssertionError as failure:
            raise CheckFailed(str(failure)) from None

    return run


# -- the tolerance rule -------------------------------------------------------------------------


def tolerance(scale: float = 1.0, rtol: float = RTOL, atol: float = 0.0) -> float:
    """How far from an intended value a computed one may be (the rule in the module docstring)."""
    return atol + rtol * max(1.0, float(scale))


# -- formatting ---------------------------------------------------------------------------------


def fmt(value: float) -> str:
    """A number as a person would write it: 2, -1, 0.5, 0.333, 1.2e-07."""
    value = float(value)
    if not np.isfinite(value):
        return str(value)
    if value == round(value) and abs(value) < 1e6:
        return str(int(round(value)))
    if 1e-3 <= abs(value) < 1e4:
        return f"{value:.4g}"
    return f"{value:.3g}"


def dims_text(dims) -> str:
    """'dim 3', 'dims 8-11', 'dims 4, 6-7'."""
    dims = sorted({int(d) for d in dims})
    if not dims:
        return "no dims"
    runs, start = [], dims[0]
    for previous, current in zip(dims, dims[1:] + [None]):
        if current != previous + 1:
            runs.append(str(start) if start == previous else f"{start}-{previous}")
            start = current
    return ("dim " if len(dims) == 1 else "dims ") + ", ".join(runs)


def shape_text(shape, labels=None) -> str:
    """'(4, 16)', or '(4, 16) (d_head x d_model)' with labels."""
    text = str(tuple(shape))
    return text + (" (" + " x ".join(labels) + ")" if labels else "")


def bullet_list(problems, limit: int = 6) -> str:
    """Problems as an indented list, at most `limit` of them."""
    shown = [f"  - {problem}" for problem in problems[:limit]]
    if len(problems) > limit:
        shown.append(f"  - ... and {len(problems) - limit} more")
    return "\n".join(shown)


def difference_report(
    actual, expected, actual_name: str, expected_name: str, rtol: float = RTOL, atol: float = 1e-8, reveal: bool = True
) -> str | None:
    """None when the arrays agree by the tolerance rule; otherwise where and by how much they differ.

    The scale of the rule is the largest |expected|. With reveal=False the expected entry is not
    printed (only where and by how much), so a hidden value stays hidden.
    """
    actual, expected = np.asarray(actual, float), np.asarray(expected, float)
    if actual.shape != expected.shape:
        return f"{actual_name} has shape {actual.shape}, but {expected_name} has shape {expected.shape}"
    allowed = tolerance(float(np.abs(expected).max(initial=0.0)), rtol=rtol, atol=atol)
    wrong = np.abs(actual - expected) > allowed
    if not wrong.any():
        return None
    gap = np.where(wrong, np.abs(actual - expected), 0)
    where = tuple(int(i) for i in np.unravel_index(np.argmax(gap), gap.shape))
    text = (
        f"{actual_name} differs from {expected_name} in {int(wrong.sum())} of {wrong.size} "
        f"entries; the largest difference is {fmt(gap[where])} at index {list(where)}"
    )
    if reveal:
        text += f" ({actual_name} has {fmt(actual[where])}, {expected_name} has {fmt(expected[where])})"
    return text


# -- staging ------------------------------------------------------------------------------------


def shown(value, limit: int = 60) -> str:
    """A value of the student's quoted in a message: its repr, at most `limit` characters, with
    control characters escaped (a message must stay readable, whatever the value)."""
    text = repr(value)
    if len(text) > limit:
        text = text[:limit] + f"... ({len(text) - limit} more characters)"
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)


def describe_dtype(dtype) -> str:
    """What an array whose entries are not real numbers is, in a student's terms."""
    if str(dtype) == "object":
        return "an array of dtype object (some entries are not numbers, e.g. None, strings or lists)"
    return f"an array of dtype {dtype}, not of numbers"


def type_problem(name: str, description: str, wanted: str = "an array of real numbers") -> str:
    """'W should be an array of real numbers, but it is a function.'"""
    return f"{name} should be {wanted}, but it is {description}."


def _placeholder_problem(name: str, value, wanted: str = "an array") -> str | None:
    if value is None:
        return f"{name} is None; assign it {wanted} (did the cell end with a print instead?)."
    if value is Ellipsis:
        return f"{name} is ... (a placeholder); assign it your answer."
    return None


def _describe(value) -> str:
    """A Python value the student gave, described for a type_problem message."""
    if isinstance(value, (bool, np.bool_)):
        return f"the bool {bool(value)}"
    if isinstance(value, (int, float, np.integer, np.floating)):
        return f"the number {fmt(float(value))}"
    if isinstance(value, (complex, np.complexfloating)):
        return "a complex number"
    if callable(value):
        return "a function"
    if isinstance(value, str):
        return "a string"
    return f"an object of type {type(value).__name__}"


def _fail(message: str):
    raise InputProblem(message)


def _real_array(value, name: str) -> np.ndarray:
    """Stages present and type: `value` as a float64 array (any shape, entries not yet checked)."""
    placeholder = _placeholder_problem(name, value)
    if placeholder:
        _fail(placeholder)
    if callable(value) or isinstance(value, str):
        _fail(type_problem(name, _describe(value)))
    try:
        array = np.asarray(value)
    except Exception as error:  # noqa: BLE001 - any odd object: explain, do not crash
        _fail(
            type_problem(
                name, f"an object of type {type(value).__name__} (converting it raised {type(error).__name__}: {error})"
            )
        )
    if array.dtype.kind == "c":
        imaginary = np.flatnonzero(array.imag)
        if imaginary.size:
            _fail(
                f"{name} has complex entries (for example {array.flat[imaginary[0]]}); every "
                "entry should be a real number."
            )
        array = array.real
    if array.dtype.kind not in "biuf":
        _fail(type_problem(name, describe_dtype(array.dtype)))
    return array.astype(np.float64)


def stage_array(value, name: str, shape=None, labels=None) -> np.ndarray:
    """`value` as a finite float64 array of `shape`; InputProblem says what is wrong.

    `labels` name the axes in messages, e.g. ("d_head", "d_model").
    """
    array = _real_array(value, name)
    if shape is not None and array.shape != tuple(shape):
        message = f"{name} should have shape {shape_text(shape, labels)}, but it has shape {array.shape}."
        if len(shape) == 2 and array.shape == tuple(shape)[::-1] and shape[0] != shape[1]:
            message += (
                f" That is the transpose: this course uses column vectors, so {name} is "
                f"{shape_text(shape, labels)}, not the row-vector (x @ W) layout."
            )
        _fail(message)
    bad = ~np.isfinite(array)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        _fail(
            f"{name} has {int(bad.sum())} entries that are NaN or infinite (the first at "
            f"index {where}); every entry should be a finite number."
        )
    return array


def result_type_problem(what: str, description: str) -> str:
    """'f(...) on input #2 returned a string; it should return an array of numbers.'"""
    hint = " (is a `return` missing?)" if description == "None" else ""
    return f"{what} returned {description}; it should return an array of numbers{hint}."


def stage_result(value, what: str, shape=None, labels=None) -> np.ndarray:
    """What a function returned, as a finite float64 array of `shape`; InputProblem says what is wrong.

    `what` names the call in the student's terms, e.g. "attention_pattern(...) on the grader's
    input #2"; the stages are those of stage_array, worded for a result.
    """
    if value is None or isinstance(value, str) or callable(value):
        _fail(result_type_problem(what, "None" if value is None else _describe(value)))
    try:
        array = np.asarray(value)
    except Exception as error:  # noqa: BLE001 - any odd object: explain, do not crash
        _fail(
            result_type_problem(
                what, f"an object of type {type(value).__name__} (converting it raised {type(error).__name__}: {error})"
            )
        )
    if array.dtype.kind == "c":
        if np.any(array.imag != 0):
            _fail(f"{what} returned complex numbers; it should return real ones.")
        array = array.real
    if array.dtype.kind not in "biuf":
        _fail(result_type_problem(what, describe_dtype(array.dtype)))
    array = array.astype(np.float64)
    if shape is not None and array.shape != tuple(shape):
        message = f"{what} returned shape {array.shape}; it should be {shape_text(shape, labels)}."
        if len(shape) == 2 and array.shape == tuple(shape)[::-1] and shape[0] != shape[1]:
            message += (
                " That is the transpose: this course uses column vectors, so the result "
                f"is {shape_text(shape, labels)}, not the row-vector (x @ W) layout."
            )
        _fail(message)
    bad = ~np.isfinite(array)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        _fail(f"{what} returned {int(bad.sum())} entries that are NaN or infinite (the first at index {where}).")
    return array


def stage_number(value, name: str) -> float:
    """`value` as a finite float (a Python or numpy number, or an array of one entry)."""
    placeholder = _placeholder_problem(name, value, "a number")
    if placeholder:
        _fail(placeholder)
    if isinstance(value, (bool, np.bool_, str)) or callable(value):
        _fail(type_problem(name, _describe(value), "a single number"))
    array = _real_array(value, name)
    if array.size != 1:
        _fail(type_problem(name, f"an array of shape {array.shape}", "a single number"))
    number = float(array.reshape(-1)[0])
    if not np.isfinite(number):
        _fail(f"{name} is {number}; it should be a finite number.")
    return number


def stage_whole_number(value, name: str) -> int:
    """`value` as an int; accepts 4, 4.0 and numpy integers, rejects 4.5."""
    number = stage_number(value, name)
    if number != round(number):
        _fail(f"{name} is {fmt(number)}, which is not a whole number.")
    return int(round(number))


def stage_matrix_names(value, name: str, allowed=("W_Q", "W_K", "W_V", "W_O")) -> frozenset:
    """A choice of matrix names, as a string ('W_Q, W_K') or a collection of strings.

    Spelling is forgiven ('w_q', 'WQ', 'W_Q^T' all mean W_Q), so only the choice counts.
    """
    if isinstance(value, str):
        items = [item for item in re.split(r"[,\s;&+]+|\band\b", value) if item]
    elif isinstance(value, (set, frozenset, list, tuple)):
        items = list(value)
    else:
        _fail(
            type_problem(
                name, "None" if value is None else _describe(value), "a set of matrix names such as {'W_Q', 'W_K'}"
            )
        )
    canonical = {re.sub(r"[^A-Z]", "", option.upper()): option for option in allowed}
    chosen = set()
    for item in items:
        if not isinstance(item, str):
            _fail(f"{name} contains {shown(item)}; write the names as strings, e.g. 'W_Q'.")
        key = re.sub(r"[^A-Z]", "", item.upper().replace("^T", "").replace("OUT", "O"))
        if key not in canonical:
            _fail(f"{name} contains {shown(item)}, which is not one of {', '.join(allowed)}.")
        chosen.add(canonical[key])
    return frozenset(chosen)


# -- per-student variants -----------------------------------------------------------------------

# Set it where your course's student ids are not your account names (the id nbgrader files your
# submission under: `nbgrader list --inbound`, or ask your instructor).
STUDENT_ID_VARIABLE = "AUTOGRADER_STUDENT_ID"


def find_student_id() -> str | None:
    """Your student id as nbgrader knows it: $AUTOGRADER_STUDENT_ID when set, else the JupyterHub
    user ($JUPYTERHUB_USER, nbgrader's id on a hub), else this account's name (nbgrader's id on a
    shared machine), else None."""
    for variable in (STUDENT_ID_VARIABLE, "JUPYTERHUB_USER"):
        value = os.environ.get(variable, "").strip()
        if value:
            return value
    try:
        import getpass

        return getpass.getuser() or None
    except Exception:  # noqa: BLE001 - no account name (a container without /etc/passwd entry)
        return None


def variant_rng(assignment: str, student_id: str | None, salt: str = "") -> np.random.Generator | None:
    """The random generator a student's variant is drawn with, or None for the exercise page's
    own set-up (no student id). The same (assignment, salt, student id) gives the same variant
    everywhere: in the notebook, in the public checks and in the grader."""
    if student_id is None:
        return None
    digest = hashlib.sha256(f"variant\0{assignment}\0{salt}\0{student_id}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:16], "big"))


class VariantTable(NamedTuple):
    """What the set-up cell shows: whose variant it is, a table of its parameters and a picture.

    Its output also records, as output metadata, the student it was drawn for, which the
    grader reads to tell a notebook worked for someone else's variant."""

    assignment: str
    student_id: str | None  # None: the exercise page's own set-up
    rows: tuple  # (parameter, value) pairs, in words
    svg: str = ""

    def heading(self) -> str:
        if self.student_id is None:
            return "The exercise page's own set-up (this course draws no per-student variants)"
        return f"Your variant of {self.assignment}, drawn for student {self.student_id!r}"

    def __str__(self) -> str:
        width = max((len(name) for name, _ in self.rows), default=0)
        lines = [self.heading()] + [f"  {name.ljust(width)}  {value}" for name, value in self.rows]
        return "\n".join(lines)

    def _repr_mimebundle_(self, include=None, exclude=None):
        rows = "".join(
            f'<tr><th style="text-align:left;padding-right:1em">{html.escape(name)}</th>'
            f'<td style="text-align:left">{html.escape(value)}</td></tr>'
            for name, value in self.rows
        )
        page = f"<p><b>{html.escape(self.heading())}</b></p><table>{rows}</table>{self.svg}"
        record = {"autograder_variant": {"assignment": self.assignment, "student": self.student_id}}
        return {"text/plain": str(self), "text/html": page}, record
