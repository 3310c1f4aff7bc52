"""What a submission defined, as plain data, with staged accessors for the checks.

A `Submission` is built in the grader's process from the frames the sandboxed driver sent. The
accessors check in stages (present, type, shape, finite) and raise `Mistake` with a message in
the student's terms, so every check starts from a value it can trust to be well-formed. The
stages after "present" are those of the student library (`autograder.student.tclib`, shipped to
students as tclib.py), so a public check and the grader word the same problem alike.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from autograder.core.checks import Mistake, NotDefined
from autograder.core.notebook import quote
from autograder.sandbox.driver import wire
from autograder.student import tclib


def _staged(stage, *args, **kwargs):
    """Run a stage of the student library; its InputProblem becomes the student's Mistake."""
    try:
        return stage(*args, **kwargs)
    except tclib.InputProblem as problem:  # only the library's verdicts: a bug stays a bug
        raise Mistake(str(problem)) from None


@dataclasses.dataclass(frozen=True)
class Call:
    """One call of a submitted function on inputs the grader drew."""

    args: tuple
    result: Any = None  # decoded value (ndarray, float, ...) when the call returned
    error: str | None = None  # "ExceptionType: message" when it raised or timed out


@dataclasses.dataclass
class CellReport:
    """What happened when the driver ran one code cell (by position in the submitted notebook)."""

    index: int
    status: str  # "ok", "error", "timeout", "not_run"
    error: str | None = None


def decode_value(encoded: dict) -> Any:
    """Turn a tagged wire value into a Python value the checks can use (never student objects)."""
    kind = encoded.get("kind")
    if kind == "array":
        return wire.decode_array(encoded, np)
    if kind in ("number", "bool"):
        return encoded["value"]
    if kind == "str":
        return str(encoded["value"])
    if kind == "strs":
        return [str(item) for item in encoded["items"]]
    return None


_KIND_WORDS = {
    "none": "None",
    "callable": "a function",
    "object": "an object that is not a number or an array",
    "str": "a string",
    "strs": "a collection of strings",
    "too_large": "an array that is far too large",
    "complex_number": "a complex number",
}


def _describe(encoded: dict) -> str:
    kind = encoded.get("kind")
    if kind == "object":
        dtype = encoded.get("dtype")
        if dtype is not None:
            return tclib.describe_dtype(quote(dtype, 40))
        reason = encoded.get("reason")
        # Type names and exception texts are the student's: quoted capped and without control characters.
        return f"an object of type {quote(encoded.get('type', '?'), 80)}" + (
            f" (converting it raised {quote(reason)})" if reason else ""
        )
    if kind == "array":
        return f"an array of shape {tuple(encoded['shape'])}"
    if kind == "number":
        return f"the number {tclib.fmt(float(encoded['value']))}"
    return _KIND_WORDS.get(str(kind), quote(kind, 40) if kind else "something unknown")


def not_written(name: str) -> str:
    """Why a name is missing when no cell of the notebook assigns it (the usual, unattempted case)."""
    return f"No code cell that ran defines it: write `{name} = ...` in the answer cell for this part and run it."


class Submission:
    """The plain data extracted from one notebook, and the accessors hidden checks use."""

    def __init__(
        self,
        submission_id: str,
        values: dict[str, dict],
        calls: dict[str, list[dict]] | None = None,
        cells: list[CellReport] | None = None,
        static_hints: dict[str, str] | None = None,
        fatal: str | None = None,
        variant=None,
    ):
        self.id = submission_id
        # the assignment's variant this submission is graded against (its public module's
        # Variant; None for assignments without variants)
        self.variant = variant
        self._values = values
        self._calls = calls or {}
        self.cells = cells or []
        # name -> sentence explaining where the name appears without being defined (raw cell...)
        self._static_hints = static_hints or {}
        # set when the run as a whole failed (timeout, crash): explains every missing name
        self.fatal = fatal
        self._notes: list[str] = []

    def note(self, text: str) -> None:
        """Attach an informative line (e.g. a composition score) to the check that is running."""
        self._notes.append(text)

    def take_notes(self) -> list[str]:
        notes, self._notes = self._notes, []
        return notes

    def __repr__(self) -> str:  # shown in pytest ids and internal logs, never to students
        return f"Submission({self.id!r})"

    # -- stage 1: present -------------------------------------------------------------------
    def encoded(self, name: str) -> dict:
        """The tagged wire value of `name`; raises Mistake explaining why when it is missing."""
        encoded = self._values.get(name, {"kind": "missing"})
        if encoded.get("kind") == "missing":
            hint = self.fatal or self._static_hints.get(name) or None  # the run's failure explains every name
            raise NotDefined(f"{name} is not defined. {hint or not_written(name)}", name, hint)
        return encoded

    def has(self, name: str) -> bool:
        return self._values.get(name, {"kind": "missing"}).get("kind") != "missing"

    # -- stage 2-4: type, shape, finite ------------------------------------------------------
    def array(
        self,
        name: str,
        shape: Sequence[int] | None = None,
        labels: Sequence[str] | None = None,
    ) -> np.ndarray:
        """`name` as a float64 array of the given shape, with only finite entries."""
        encoded = self.encoded(name)
        kind = encoded.get("kind")
        value: Any
        if kind in ("number", "bool"):
            value = np.asarray(float(encoded["value"]))
        elif kind == "array":
            value = wire.decode_array(encoded, np)
        elif kind == "complex_number":
            value = complex(encoded["real"], encoded["imag"])
        elif kind == "none":
            value = None  # the library explains a None like the public checks do
        else:
            raise Mistake(tclib.type_problem(name, _describe(encoded)))
        return _staged(tclib.stage_array, value, name, shape, labels)

    def number(self, name: str) -> float:
        """`name` as a finite float (a Python or numpy scalar, or a 1-element array)."""
        encoded = self.encoded(name)
        kind = encoded.get("kind")
        value: Any
        if kind == "number":
            value = float(encoded["value"])
        elif kind in ("bool", "str", "none"):  # refused in the library's words
            value = decode_value(encoded)
        elif kind == "complex_number":
            value = complex(encoded["real"], encoded["imag"])
        elif kind == "array":
            value = wire.decode_array(encoded, np)
        else:
            raise Mistake(tclib.type_problem(name, _describe(encoded), "a single number"))
        return _staged(tclib.stage_number, value, name)

    def integer(self, name: str) -> int:
        """`name` as an int; accepts 4, 4.0 and numpy integers, rejects 4.5."""
        value = self.number(name)
        return _staged(tclib.stage_whole_number, value, name)

    def text(self, name: str) -> str:
        encoded = self.encoded(name)
        if encoded.get("kind") != "str":
            raise Mistake(tclib.type_problem(name, _describe(encoded), "a string"))
        return str(encoded["value"])

    def matrix_names(self, name: str, allowed: Sequence[str] = ("W_Q", "W_K", "W_V", "W_O")) -> frozenset[str]:
        """A choice of matrix names, given as a string or a collection of strings.

        Spelling is normalised ("w_q", "WQ", "W_Q^T" all mean W_Q), so only the choice counts.
        """
        encoded = self.encoded(name)
        value: Any
        if encoded.get("kind") == "str":
            value = str(encoded["value"])
        elif encoded.get("kind") == "strs":
            value = [str(item) for item in encoded["items"]]
        else:
            raise Mistake(tclib.type_problem(name, _describe(encoded), "a set of matrix names such as {'W_Q', 'W_K'}"))
        return _staged(tclib.stage_matrix_names, value, name, tuple(allowed))

    def calls(self, name: str) -> list[Call]:
        """The grader's calls of the submitted function `name`, with results or errors."""
        encoded = self.encoded(name)
        if encoded.get("kind") != "callable":
            raise Mistake(tclib.type_problem(name, _describe(encoded), "a function"))
        records = self._calls.get(name)
        if not records:
            raise Mistake(f"{name} could not be called during grading." + (f" {self.fatal}" if self.fatal else ""))
        return [
            Call(
                args=tuple(record.get("args", ())),
                result=decode_value(record["result"]) if "result" in record else None,
                error=quote(record["error"]) if record.get("error") is not None else None,
            )
            for record in records
        ]

    def call_results(
        self,
        name: str,
        shape_of=None,
        labels: Sequence[str] | None = None,
    ) -> list[np.ndarray]:
        """Results of every call as float64 arrays; raises on the first call that failed.

        `shape_of(args)` may give the expected shape of the result for those arguments.
        """
        calls = self.calls(name)  # raises when `name` is no function or was never called
        results = []
        for number, (call, record) in enumerate(zip(calls, self._calls[name]), start=1):
            described = f"{name}(...) on the grader's input #{number}"
            if call.error is not None:
                raise Mistake(f"{described} raised {call.error}")
            encoded = record.get("result", {"kind": "none"})
            if encoded.get("kind") in ("array", "number", "bool", "none"):
                value = call.result
            elif encoded.get("kind") == "complex_number":
                value = complex(encoded["real"], encoded["imag"])
            else:
                raise Mistake(tclib.result_type_problem(described, _describe(encoded)))
            expected = None if shape_of is None else tuple(shape_of(call.args))
            results.append(_staged(tclib.stage_result, value, described, expected, labels))
        return results
