"""Feedback made in a child process, so that the grading service's grading never waits for it.

Making one student's feedback page (nbgrader's GenerateFeedback, then ExchangeReleaseFeedback)
costs about as much CPU as checking and recording their submission. In the grading process it
would leave the sandboxes idle while each chunk's pages are made; in this child it runs on the
other core while the next chunk is checked and recorded. The child makes one student's feedback
at a time (the renderer keeps its compiled templates between students) and the service marks the
submission done when the child reports back, so a claim stays the service's, renewed, until its
feedback is out.

The child is a RecycledChild (service/child.py): retired after PAGES_PER_CHILD pages, and
killed with the service, whose claims on submissions whose page was not out then expire and are
taken over (their grades are committed, so only their feedback is made again).
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import pathlib

from autograder.service import child, feedback

_child: dict = {}


def _start(root: str) -> None:
    logging.getLogger("traitlets").setLevel(logging.WARNING)
    from autograder.core.course import Course
    from autograder.nbgrader import settings
    from autograder.service import engines

    engines.share_gradebook_engines()  # nbgrader's GetGrades opens a Gradebook for every page

    config = settings.load(Course(pathlib.Path(root))).config
    config.CourseDirectory.root = root
    _child["config"], _child["root"] = config, pathlib.Path(root)


def _make(assignment: str, student: str, withhold_messages: bool, release: bool) -> int:
    """Make (and release) one student's feedback; returns the pid of the child that made it."""
    config, root = _child["config"], _child["root"]
    feedback.generate(config, root, assignment, student, withhold_messages)
    if release:
        feedback.release(config, root, assignment, student)
    return os.getpid()


def _warm() -> int:
    """Import the renderer's modules before the first submission needs them."""
    import nbconvert.exporters  # noqa: F401
    import nbgrader.converters
    import nbgrader.exchange.default  # noqa: F401

    return os.getpid()


PAGES_PER_CHILD = 1000


class FeedbackProcess(child.RecycledChild):
    """One child process that makes and releases feedback, one student at a time, in order
    (a retiring child and its successor may overlap, each with its own students)."""

    initializer, warm = _start, _warm

    def __init__(self, root: pathlib.Path, pages_per_child: int = PAGES_PER_CHILD):
        super().__init__(work_per_child=pages_per_child)
        self.root = pathlib.Path(root)

    def initargs(self) -> tuple:
        return (str(self.root),)

    def make(self, assignment: str, student: str, withhold_messages: bool, release: bool) -> concurrent.futures.Future:
        """Make (and with `release`, release) the student's feedback; the future raises what
        failed, or gives the pid of the child that made it."""
        return self.submit(1, _make, assignment, student, withhold_messages, release)
