"""The result of grading one notebook, and every way it is shown.

A `Report` holds what grading found: the notebook's score and error, each part's result
(`PartResult`), each check's (`CheckResult`, which says which name was missing when that is why
it failed) and whose variant graded it (`variants.Choice`). Every rendering of it is here, so the
terminal, the self-check, the autograded notebook and the feedback pages word it alike:

* `Report.to_json()`: the JSON report (`autograder grade --json`);
* `Report.as_text()`: the terminal report (`autograder grade NOTEBOOK`);
* `Report.as_self_check(solutions)`: the self-learner's per-part report (`autograder check`);
* `Report.part(grade_id)`: one part's result, shown by `PartResult.as_html()` and `as_text()`
  (the block written into the autograded test cell, which feedback pages and the formgrader
  show), and by `withheld_html()` and `withheld_text()` (the students' view before the due date:
  which checks passed, without their messages or pictures);
* `PartResult.to_json()` and `from_json()`: the part's result as plain JSON data, which the
  autograded notebook carries in its test cell's metadata (`PART_RESULT_KEY`), so that what
  reads a graded notebook back reads data, never rendered text.

Text that came from a submission or a check is quoted wherever it is shown (control characters
escaped, length capped; on a terminal, continuation lines indented so that no line of a message
can pass for a report line of its own).
"""

from __future__ import annotations

import dataclasses
import html
import os
import pathlib
from typing import TYPE_CHECKING

from autograder.core import specs
from autograder.core.notebook import quote
from autograder.core.variants import Choice

if TYPE_CHECKING:
    from autograder.core.submission import CellReport

# The cell metadata in which the autograded notebook keeps a part's result (PartResult.to_json).
PART_RESULT_KEY = "autograder_result"

MESSAGE_LIMIT = 4000  # characters of a message shown, whatever a check quoted

# Words, not emoji: feedback is often read where no emoji font is installed.
_PASSED = '<b style="color:#1a7f37">passed</b>'
_FAILED = '<b style="color:#cf222e">failed</b>'

WITHHELD = "The checks' messages are shown after the due date."
# What is left of a part's block when nothing of it can be shown before the due date.
WITHHELD_BLOCK = f'<div class="tc-grading"><p><i>{WITHHELD}</i></p></div>'


@dataclasses.dataclass(frozen=True)
class MissingName:
    """Why a check failed: the submission does not define `name`. `hint` says why when the
    grader knows (the cell that should define it stopped, the whole run failed...); None when
    no code cell assigns it at all, the usual case of a part not attempted yet."""

    name: str
    hint: str | None = None


@dataclasses.dataclass
class CheckResult:
    """One hidden check's verdict on one submission."""

    id: str
    part: str
    points: float
    max_points: float
    passed: bool
    message: str
    internal_error: str | None = None  # traceback for instructors; never shown to students
    missing: MissingName | None = None  # set when it failed because a name is not defined

    def to_json(self) -> dict:
        return {
            "id": self.id,
            "part": self.part,
            "points": self.points,
            "max_points": self.max_points,
            "passed": self.passed,
            "message": self.message,
        }

    @property
    def points_shown(self) -> str:
        """'(1/2)': the points it scored of those it is worth."""
        return f"({self.points:g}/{self.max_points:g})"


def points_text(points: float) -> str:
    """'1 point', '2 points', '0.5 points', as people write them."""
    return f"{points:g} point" + ("" if points == 1 else "s")


def shown(text, indent: str = "") -> str:
    """Text from a report made safe for a terminal: control characters escaped, length capped,
    and continuation lines indented under `indent` so that no line of a message can pass for a
    report line of its own (a PASS line, the score line)."""
    return quote(text, MESSAGE_LIMIT, keep_newlines=True).replace("\n", "\n" + indent + "    | ")


def _html_lines(text: str) -> str:
    """Escaped text whose line breaks and indentation survive HTML (a message listing its points)."""
    escaped = html.escape(text)
    return f'<span style="white-space:pre-wrap">{escaped}</span>' if "\n" in text else escaped


@dataclasses.dataclass
class PartResult:
    """One autograded part's result, as the autograded notebook records it and students read it."""

    grade_id: str
    score: float
    max_score: float
    checks: list[CheckResult] = dataclasses.field(default_factory=list)
    error: str | None = None  # why the notebook as a whole was not graded (every part scores 0)
    note: str | None = None  # said first (a renamed notebook, someone else's variant)
    isolation: str | None = None
    figures: list[str] = dataclasses.field(default_factory=list)  # pictures of the student's values (not in to_json)

    @property
    def header(self) -> str:
        return f"Autograder, part {self.grade_id}: {self.score:g} / {self.max_score:g}"

    def _check_lines(self) -> list[str]:
        """'PASS id (p/m)' for each check: what every view says of it, message or not."""
        return [f"{'PASS' if check.passed else 'FAIL'} {check.id} {check.points_shown}" for check in self.checks]

    def as_html(self) -> str:
        """The block of the autograded test cell: every check, its message, the part's pictures."""
        rows = []
        if self.note:
            rows.append(f"<li>{html.escape(self.note)}</li>")
        if self.error:
            rows.append(f"<li>{_FAILED} {_html_lines(quote(self.error, MESSAGE_LIMIT, keep_newlines=True))}</li>")
        elif not self.checks:
            rows.append(f"<li>{_FAILED} this part could not be checked</li>")
        for check in self.checks:
            icon = _PASSED if check.passed else _FAILED
            message = quote(check.message, MESSAGE_LIMIT, keep_newlines=True)
            detail = f": {_html_lines(message)}" if message else ""
            name = html.escape(check.id.replace("_", " "))
            rows.append(f"<li>{icon} <b>{name}</b> {check.points_shown}{detail}</li>")
        figures = "".join(f'<div style="display:inline-block;margin:4px">{svg}</div>' for svg in self.figures)
        return (
            f'<div class="tc-grading"><p><b>{html.escape(self.header)}</b> '
            f'<span style="color:#666">(isolation: {html.escape(self.isolation or "none")})</span></p>'
            f"<ul>{''.join(rows)}</ul>{figures}</div>"
        )

    def as_text(self) -> str:
        """The plain-text form of the block (the display's text/plain)."""
        lines = [self.header]
        if self.note:
            lines.append(self.note)
        if self.error:
            lines.append(f"ERROR {quote(self.error, MESSAGE_LIMIT, keep_newlines=True)}")
        for check, line in zip(self.checks, self._check_lines()):
            message = quote(check.message, MESSAGE_LIMIT, keep_newlines=True)
            lines.append(line + (f": {message}" if message else ""))
        return "\n".join(lines)

    def withheld_html(self) -> str:
        """The students' view before the due date: which checks passed, their points, no messages."""
        items = "".join(f"<li>{html.escape(line)}</li>" for line in self._check_lines())
        return (
            f'<div class="tc-grading"><p><b>{html.escape(self.header)}</b></p><ul>{items}</ul>'
            f"<p><i>{WITHHELD}</i></p></div>"
        )

    def withheld_text(self) -> str:
        return "\n".join([self.header, *self._check_lines()])

    def to_json(self) -> dict:
        """Plain data (the messages as shown, no pictures), for the autograded notebook."""
        return {
            "grade_id": self.grade_id,
            "score": self.score,
            "max_score": self.max_score,
            "isolation": self.isolation,
            "error": self.error,
            "note": self.note,
            "checks": [
                {**check.to_json(), "message": quote(check.message, MESSAGE_LIMIT, keep_newlines=True)}
                for check in self.checks
            ],
        }

    @classmethod
    def from_json(cls, data) -> PartResult | None:
        """The result `to_json` wrote, or None when `data` is not one (the metadata was not the grader's)."""
        try:
            checks = [
                CheckResult(
                    str(check["id"]),
                    str(check["part"]),
                    float(check["points"]),
                    float(check["max_points"]),
                    bool(check["passed"]),
                    str(check["message"]),
                )
                for check in data["checks"]
            ]
            optional = {key: data.get(key) for key in ("error", "note", "isolation")}
            if not all(value is None or isinstance(value, str) for value in optional.values()):
                return None
            return cls(str(data["grade_id"]), float(data["score"]), float(data["max_score"]), checks, **optional)
        except (KeyError, TypeError, ValueError, AttributeError):
            return None


@dataclasses.dataclass
class Report:
    """What grading one notebook found, and its views (see the module's docstring)."""

    notebook: str
    submission_id: str
    graded_as: str | None = None
    spec: specs.NotebookSpec | None = None
    checks: list[CheckResult] = dataclasses.field(default_factory=list)
    manual_parts: list[specs.Part] = dataclasses.field(default_factory=list)
    error: str | None = None
    grader_error: str | None = None  # the grader's own fault: no grade, flagged for the instructor
    isolation: str | None = None
    isolation_details: dict = dataclasses.field(default_factory=dict)  # e.g. which cgroup mechanism, and why not others
    cells: list[CellReport] = dataclasses.field(default_factory=list)  # how each code cell ran
    figures: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    attempted: list[str] = dataclasses.field(default_factory=list)  # parts whose answer cells the student changed
    answer_cells: dict[str, int] = dataclasses.field(default_factory=dict)  # part -> position of its answer cell
    variant: Choice = Choice(None)  # whose variant graded it, what to tell about that, its table as drawn
    seconds: float = 0.0

    @property
    def score(self) -> float:
        return float(sum(check.points for check in self.checks))

    @property
    def max_score(self) -> float:
        if self.spec is not None:
            return float(sum(part.points for part in self.spec.auto_parts))
        return float(sum(check.max_points for check in self.checks))

    def part_scores(self) -> dict[str, float]:
        """Autograded score per grade_id (every autograded part present, failed ones at 0)."""
        scores = {part.grade_id: 0.0 for part in (self.spec.auto_parts if self.spec else ())}
        for check in self.checks:
            scores[check.part] = scores.get(check.part, 0.0) + check.points
        return scores

    def part(self, grade_id: str, note: str | None = None) -> PartResult:
        """One autograded part's result (`note`: said first, e.g. that the notebook was renamed)."""
        checks = [check for check in self.checks if check.part == grade_id]
        maximum = (
            next((part.points for part in self.spec.auto_parts if part.grade_id == grade_id), 0) if self.spec else 0
        )
        return PartResult(
            grade_id,
            float(sum(check.points for check in checks)),
            float(maximum),
            checks,
            error=self.error,
            note=note,
            isolation=self.isolation,
            figures=list(self.figures.get(grade_id, [])),
        )

    # -- JSON ----------------------------------------------------------------------------------

    def to_json(self) -> dict:
        checks = [check.to_json() for check in self.checks]
        checks += [
            {
                "id": part.grade_id,
                "part": part.grade_id,
                "points": None,
                "max_points": part.points,
                "passed": None,
                "manual": True,
                "message": "graded by hand",
            }
            for part in self.manual_parts
        ]
        return {
            "notebook": self.notebook,
            "graded_as": self.graded_as,
            "score": self.score,
            "max_score": self.max_score,
            "checks": checks,
            "error": self.error,
            "grader_error": self.grader_error,
            "isolation": self.isolation,
            "isolation_details": self.isolation_details,
            "variant_of": self.variant.student_id,
            "variant_note": self.variant.note,
        }

    # -- the terminal --------------------------------------------------------------------------

    def as_text(self) -> str:
        """The plain-text report: one line per check, grouped by part."""
        if self.grader_error:
            return (
                f"{shown(self.notebook)}: NOT GRADED (grader error, isolation {self.isolation}): "
                f"{shown(self.grader_error, '  ')}"
            )
        lines = [
            f"{shown(self.notebook)}: {self.score:g} / {self.max_score:g}"
            + (f" (graded as {self.graded_as})" if self.graded_as else "")
            + (f" [isolation: {self.isolation}]" if self.isolation else "")
        ]
        if self.error:
            lines.append(f"  error: {shown(self.error, '  ')}")
        if self.variant.student_id is not None:
            lines.append(f"  variant: the one drawn for student {shown(self.variant.student_id)}")
        if self.variant.note:
            lines.append(f"  note: {shown(self.variant.note, '  ')}")
        for check in self.checks:
            mark = "PASS" if check.passed else "FAIL"
            lines.append(
                f"  {mark} {check.part} / {check.id} {check.points_shown}"
                + (f": {shown(check.message, '  ')}" if check.message else "")
            )
        for part in self.manual_parts:
            lines.append(f"  ---- {part.grade_id} ({points_text(part.points)}) is graded by hand")
        return "\n".join(lines)

    # -- the self-check ------------------------------------------------------------------------

    def as_self_check(self, solutions: pathlib.Path, color: bool = False) -> str:
        """The self-learner's report: per part, its score and why it is short of full marks,
        each undefined name said once (with the cell that should define it); then where the
        reference solutions of the attempted parts are (`solutions`: the course's folder)."""
        good, bad, dim, reset = ("\033[32m", "\033[31m", "\033[2m", "\033[0m") if color else ("", "", "", "")
        lines = [f"{shown(self.notebook)}: graded as {self.graded_as or '?'} (isolation: {self.isolation or 'none'})"]
        if self.error or self.spec is None:
            lines.append(f"{bad}error: {shown(self.error or 'not graded')}{reset}")
            return "\n".join(lines)
        if self.variant.student_id is not None:
            lines.append(f"{dim}variant: the one drawn for student {shown(self.variant.student_id)}{reset}")
        if self.variant.note:
            lines.append(f"{bad}note: {shown(self.variant.note)}{reset}")
        scores = self.part_scores()
        told: set[str] = set()
        for part in self.spec.parts:
            if part.manual:
                lines.append(f"{dim}  {part.grade_id:<24} {points_text(part.points)}, graded by hand{reset}")
                continue
            score = scores.get(part.grade_id, 0.0)
            full = score == part.points
            lines.append(
                f"{good if full else bad}{'✔' if full else '✘'} {part.grade_id:<24} {score:g}/{part.points:g}{reset}"
            )
            said_why = False  # a ✘ line of this part: every zero says why
            needed: list[str] = []  # names this part needs that an earlier part already said are missing
            for check in self.checks:
                if check.part != part.grade_id or (check.passed and not check.message):
                    continue
                missing = check.missing if not check.passed else None
                if missing is not None:  # each undefined name once, with the cell that should define it
                    if missing.name not in told:
                        told.add(missing.name)
                        why = f" {shown(missing.hint.strip(), '    ')}" if missing.hint else ""
                        lines.append(f"    ✘ {missing.name} is not defined yet{self._where(part.grade_id)}{why}")
                        said_why = True
                    elif missing.name not in needed:
                        needed.append(missing.name)
                    continue
                mark = "·" if check.passed else "✘"
                lines.append(f"    {mark} {check.id}: {shown(check.message, '    ')}")
                said_why = said_why or not check.passed
            if not full and not said_why:
                reason = f"needs {', '.join(needed)}, not defined yet (see above)" if needed else None
                lines.append(f"    ✘ {reason or self._no_reason(part.grade_id)}")
        lines.append(
            f"autograded total: {self.score:g}/{self.max_score:g} (the same checks run when your work is graded)"
        )
        if self.attempted:
            solution = pathlib.Path(solutions) / self.spec.assignment / f"{self.spec.notebook}.ipynb"
            lines.append(
                f"reference solutions for the parts you attempted ({', '.join(self.attempted)}): "
                f"{os.path.relpath(solution)}"
            )
        return "\n".join(lines)

    def _no_reason(self, part: str) -> str:
        """Why a part is short of full marks when none of its checks said so (a grader's fault)."""
        if not any(check.part == part for check in self.checks):
            return "this part could not be checked (its checks did not run); see the lines above"
        return "a check of this part failed without a message; this is the grader's fault, please report it"

    def _where(self, part: str) -> str:
        """Where the student should define a name of `part`: its answer cell, when it has one."""
        position = self.answer_cells.get(part)
        return (
            f": write it in cell {position + 1}, this part's answer cell, and run it." if position is not None else "."
        )
