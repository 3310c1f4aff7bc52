"""What a submission defined, as plain data, with staged accessors for the checks.

A `Submission` is built in the grader's process from the frames the sandboxed driver sent. The
accessors check in stages (present, type, shape, finite) and raise `Mistake` with a message in
the student's terms, so every check starts from a value it can trust to be well-formed.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any, Sequence

import numpy as np

from autograder.checks import Mistake
from autograder.notebook import quote
from autograder.sandbox_driver import wire


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
        if dtype == "object":
            return "an array of dtype object (some entries are not numbers, e.g. None, strings or lists)"
        if dtype is not None:
            return f"an array of dtype {quote(dtype, 40)}, not of numbers"
        reason = encoded.get("reason")
        # Type names and exception texts are the student's: quoted capped and without control characters.
        return f"an object of type {quote(encoded.get('type', '?'), 80)}" + (f" (converting it raised {quote(reason)})" if reason else "")
    if kind == "array":
        return f"an array of shape {tuple(encoded['shape'])}"
    if kind == "number":
        return f"the number {quote(repr(encoded['value']), 40)}"
    return _KIND_WORDS.get(kind, quote(kind, 40) if kind else "something unknown")


def _format_shape(shape: Sequence[int], labels: Sequence[str] | None) -> str:
    text = str(tuple(shape))
    if labels:
        text += " (" + " x ".join(labels) + ")"
    return text


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
    ):
        self.id = submission_id
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
            raise Mistake(self._why_missing(name))
        return encoded

    def has(self, name: str) -> bool:
        return self._values.get(name, {"kind": "missing"}).get("kind") != "missing"

    def _why_missing(self, name: str) -> str:
        message = f"{name} is not defined."
        if self.fatal:
            return f"{message} {self.fatal}"
        hint = self._static_hints.get(name)
        if hint:
            return f"{message} {hint}"
        return (
            f"{message} No code cell that ran defines it: write `{name} = ...` in the answer "
            "cell for this part and run it."
        )

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
        if kind in ("number", "bool"):
            array = np.asarray(float(encoded["value"]))
        elif kind == "array":
            array = wire.decode_array(encoded, np)
        else:
            raise Mistake(
                f"{name} should be an array of real numbers, but it is {_describe(encoded)}."
            )
        if array.dtype.kind == "c":
            if np.all(array.imag == 0):
                array = array.real.copy()
            else:
                raise Mistake(
                    f"{name} has complex entries (for example {array.flat[np.flatnonzero(array.imag)[0]]}); "
                    "every entry should be a real number."
                )
        if shape is not None and tuple(array.shape) != tuple(shape):
            message = (
                f"{name} should have shape {_format_shape(shape, labels)}, "
                f"but it has shape {tuple(array.shape)}."
            )
            if len(shape) == 2 and tuple(array.shape) == tuple(shape)[::-1] and shape[0] != shape[1]:
                message += (
                    f" That is the transpose: this course uses column vectors, so {name} is "
                    f"{_format_shape(shape, labels)}, not the row-vector (x @ W) layout."
                )
            raise Mistake(message)
        bad = ~np.isfinite(array)
        if bad.any():
            where = tuple(int(i) for i in np.argwhere(bad)[0])
            raise Mistake(
                f"{name} has {int(bad.sum())} entries that are NaN or infinite "
                f"(the first at index {where}); every entry should be a finite number."
            )
        return array

    def number(self, name: str) -> float:
        """`name` as a finite float (a Python or numpy scalar, or a 1-element array)."""
        encoded = self.encoded(name)
        if encoded.get("kind") == "number":
            value = float(encoded["value"])
        elif encoded.get("kind") == "array" and int(np.prod(encoded["shape"])) == 1:
            value = float(self.array(name).reshape(-1)[0])
        else:
            raise Mistake(f"{name} should be a single number, but it is {_describe(encoded)}.")
        if not np.isfinite(value):
            raise Mistake(f"{name} is {value}; it should be a finite number.")
        return value

    def integer(self, name: str) -> int:
        """`name` as an int; accepts 4, 4.0 and numpy integers, rejects 4.5."""
        value = self.number(name)
        if value != round(value):
            raise Mistake(f"{name} is {value!r}, which is not a whole number.")
        return int(round(value))

    def text(self, name: str) -> str:
        encoded = self.encoded(name)
        if encoded.get("kind") != "str":
            raise Mistake(f"{name} should be a string, but it is {_describe(encoded)}.")
        return str(encoded["value"])

    def matrix_names(
        self, name: str, allowed: Sequence[str] = ("W_Q", "W_K", "W_V", "W_O")
    ) -> frozenset[str]:
        """A choice of matrix names, given as a string or a collection of strings.

        Spelling is normalised ("w_q", "WQ", "W_Q^T" all mean W_Q), so only the choice counts.
        """
        encoded = self.encoded(name)
        if encoded.get("kind") == "str":
            items = [item for item in re.split(r"[,\s;&+]+|\band\b", encoded["value"]) if item]
        elif encoded.get("kind") == "strs":
            items = list(encoded["items"])
        else:
            raise Mistake(
                f"{name} should be a set of matrix names such as {{'W_Q', 'W_K'}}, "
                f"but it is {_describe(encoded)}."
            )
        canonical = {re.sub(r"[^A-Z]", "", option.upper()): option for option in allowed}
        chosen = set()
        for item in items:
            key = re.sub(r"[^A-Z]", "", str(item).upper().replace("^T", "").replace("OUT", "O"))
            if key not in canonical:
                raise Mistake(
                    f"{name} contains {quote(repr(item), 60)}, which is not one of {', '.join(allowed)}."
                )
            chosen.add(canonical[key])
        return frozenset(chosen)

    def calls(self, name: str) -> list[Call]:
        """The grader's calls of the submitted function `name`, with results or errors."""
        encoded = self.encoded(name)
        if encoded.get("kind") != "callable":
            raise Mistake(f"{name} should be a function, but it is {_describe(encoded)}.")
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
        results = []
        for number, call in enumerate(self.calls(name), start=1):
            described = f"{name}(...) on the grader's input #{number}"
            if call.error is not None:
                raise Mistake(f"{described} raised {call.error}")
            value = call.result
            if isinstance(value, (int, float)):
                value = np.asarray(float(value))
            if not isinstance(value, np.ndarray):
                raise Mistake(f"{described} returned something that is not an array of numbers.")
            if value.dtype.kind == "c":
                if np.any(value.imag != 0):
                    raise Mistake(f"{described} returned complex numbers; it should return real ones.")
                value = value.real.copy()
            if shape_of is not None:
                expected = tuple(shape_of(call.args))
                if tuple(value.shape) != expected:
                    raise Mistake(
                        f"{described} returned shape {tuple(value.shape)}; "
                        f"it should be {_format_shape(expected, labels)}."
                    )
            if not np.all(np.isfinite(value)):
                raise Mistake(f"{described} returned NaN or infinite entries.")
            results.append(value.astype(np.float64))
        return results
