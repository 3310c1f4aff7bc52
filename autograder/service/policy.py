"""The grading service's settings and per-assignment policy, read from the course's nbgrader_config.py.

    c.GradingService.instant_feedback = True          # release feedback as soon as graded
    c.GradingService.graded_per_window = 3            # at most 3 graded submissions per student...
    c.GradingService.window_minutes = 60              # ...in any 60 minutes (0: no limit)
    c.GradingService.messages_before_deadline = True  # feedback shows the checks' messages before the due date
    c.GradingService.after_deadline = "grade"         # or "hold": late submissions wait for the instructor
    c.GradingService.assignments = {"induction_heads": {"graded_per_window": 1}}   # per-assignment overrides

After the due date (the gradebook's, plus the student's extension), `after_deadline = "grade"`
grades a submission like any other, with nbgrader's late penalty (the course's
`LateSubmissionPlugin`, applied by the same recording step the batch grader uses); "hold" keeps it
in the queue as held, with a notice to the student, until the instructor releases it
(`python -m autograder grade-held`) or the policy no longer holds it.
"""

from __future__ import annotations

import dataclasses

from traitlets import Bool, Dict, Enum, Float, Int
from traitlets.config import Configurable

POLICY_OPTIONS = (
    "instant_feedback",
    "graded_per_window",
    "window_minutes",
    "messages_before_deadline",
    "after_deadline",
)
AFTER_DEADLINE = ("grade", "hold")


@dataclasses.dataclass(frozen=True)
class Policy:
    """What the service does with one assignment's submissions."""

    instant_feedback: bool = True
    graded_per_window: int = 0
    window_minutes: float = 60.0
    messages_before_deadline: bool = True
    after_deadline: str = "grade"  # "grade" (with nbgrader's late penalty) or "hold" (for the instructor)

    def __post_init__(self) -> None:
        if self.after_deadline not in AFTER_DEADLINE:
            raise ValueError(f"after_deadline must be one of {AFTER_DEADLINE}, not {self.after_deadline!r}")

    def holds(self, submitted_at: float, deadline: float | None) -> bool:
        """Whether a submission made at `submitted_at` is held for the instructor (epoch seconds;
        `deadline`: the due date plus the student's extension, None when there is no due date)."""
        return self.after_deadline == "hold" and deadline is not None and submitted_at > deadline

    def not_before(self, graded_start_times: list[float], now: float) -> float:
        """When a new submission may be graded, given when this student's graded ones started:
        at once while fewer than `graded_per_window` started in the last window, else as soon as
        the oldest of those leaves the window."""
        if self.graded_per_window <= 0:
            return 0.0
        window = self.window_minutes * 60
        recent = sorted(start for start in graded_start_times if start > now - window)
        if len(recent) < self.graded_per_window:
            return 0.0
        return recent[-self.graded_per_window] + window


class GradingService(Configurable):
    """`python -m autograder serve`: instant grading and feedback of nbgrader exchange submissions."""

    instant_feedback = Bool(
        True,
        help="Release each submission's feedback to its student as soon as it is "
        "graded (else grade only; release with nbgrader release_feedback)",
    ).tag(config=True)
    graded_per_window = Int(
        0,
        help="Graded submissions a student gets per window and assignment; later ones "
        "are kept and graded when the window allows (0: no limit)",
    ).tag(config=True)
    window_minutes = Float(60.0, help="Length of the sliding window of graded_per_window, in minutes").tag(config=True)
    messages_before_deadline = Bool(
        True,
        help="Before the assignment's due date, show the checks' messages and "
        "pictures in feedback (else only which checks passed)",
    ).tag(config=True)
    after_deadline = Enum(
        AFTER_DEADLINE,
        "grade",
        help="After the due date (plus the student's extension): 'grade' (with nbgrader's late "
        "penalty) or 'hold' (kept for the instructor; python -m autograder grade-held releases them)",
    ).tag(config=True)
    assignments = Dict(help="Per-assignment overrides of the options above: {assignment: {option: value}}").tag(
        config=True
    )

    poll_seconds = Float(0.5, help="How often the exchange is scanned for new submissions").tag(config=True)
    lease_seconds = Float(
        60.0, help="A claimed submission whose service has not reported for this long is given to another service"
    ).tag(config=True)
    max_attempts = Int(3, help="Grader faults tolerated on one submission before it is marked failed").tag(config=True)
    jobs = Int(0, help="Notebooks graded at once (0: all cores)").tag(config=True)

    def policy(self, assignment: str) -> Policy:
        options = {name: getattr(self, name) for name in POLICY_OPTIONS}
        override = self.assignments.get(assignment, {})
        unknown = set(override) - set(POLICY_OPTIONS)
        if unknown:
            raise ValueError(
                f"GradingService.assignments[{assignment!r}]: unknown options {sorted(unknown)} "
                f"(known: {', '.join(POLICY_OPTIONS)})"
            )
        options.update(override)
        return Policy(**options)
