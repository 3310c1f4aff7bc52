"""The vocabulary of hidden checks: `part` gives a check its points, `Mistake` fails it with a message.

A check is a pytest test taking the `sub` fixture (an `autograder.submission.Submission`).
Its message is shown to the student exactly as written, so it names what is wrong in the
student's terms and never includes the expected value of a hidden check.
"""

import pytest


class Mistake(AssertionError):
    """A check failed because of the submission; the message is shown to the student."""


class NotDefined(Mistake):
    """A check failed because the submission does not define `name` (raised by the `sub`
    accessors, so that reports can say each missing name once); `hint` says why when the grader
    knows, None when no code cell assigns it."""

    def __init__(self, message: str, name: str, hint: str | None = None):
        super().__init__(message)
        self.name, self.hint = name, hint


def part(grade_id: str, points: float):
    """Mark a check as worth `points` of the nbgrader part (test cell) `grade_id`."""
    if points <= 0:
        raise ValueError("a check must be worth a positive number of points")
    return pytest.mark.part(grade_id=grade_id, points=float(points))
