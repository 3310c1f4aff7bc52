"""Feedback made in a worker process, so that the grading service's grading never waits for it.

Making one student's feedback page (nbgrader's GenerateFeedback, then ExchangeReleaseFeedback)
costs about as much CPU as checking and recording their submission. In the grading process it
would leave the sandboxes idle while each chunk's pages are made; in this worker it runs on the
other core while the next chunk is checked and recorded. The worker makes one student's feedback
at a time (the renderer keeps its compiled templates between students) and the service marks the
submission done when the worker reports back, so a claim stays the service's, renewed, until its
feedback is out.

The worker process (core/processes.py) is replaced after PAGES_PER_CHILD pages, and killed with
the service, whose claims on submissions whose page was not out then expire and are taken over
(their grades are committed, so only their feedback is made again).
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import pathlib

from autograder.core import processes
from autograder.service import feedback

PAGES_PER_CHILD = 1000


def _setup(root: str) -> tuple:
    """In the worker: the course's nbgrader configuration, and the renderer's modules imported."""
    logging.getLogger("traitlets").setLevel(logging.WARNING)
    import nbconvert.exporters  # noqa: F401  # before the first submission needs them
    import nbgrader.converters
    import nbgrader.exchange.default  # noqa: F401

    from autograder.core.course import Course
    from autograder.nbgrader import settings
    from autograder.service import engines

    engines.share_gradebook_engines()  # nbgrader's GetGrades opens a Gradebook for every page

    config = settings.load(Course(pathlib.Path(root))).config
    config.CourseDirectory.root = root
    return config, pathlib.Path(root)


def _make(context: tuple, assignment: str, student: str, withhold_messages: bool, release: bool) -> int:
    """Make (and release) one student's feedback; returns the pid of the process that made it."""
    config, root = context
    feedback.generate(config, root, assignment, student, withhold_messages)
    if release:
        feedback.release(config, root, assignment, student)
    return os.getpid()


TASKS = processes.Tasks(_setup, make=_make)


class FeedbackProcess:
    """A worker process that makes and releases feedback, one student at a time, in order
    (a retiring process and its successor may overlap, each with its own students)."""

    def __init__(self, root: pathlib.Path, pages_per_child: int = PAGES_PER_CHILD):
        self.root = pathlib.Path(root)
        self.worker = processes.Worker(
            "autograder.service.feedback_process:TASKS", [str(self.root)], work_per_child=pages_per_child
        )

    def start(self) -> concurrent.futures.Future:
        """Start the worker (its imports take seconds); the future gives its pid once it is ready."""
        return self.worker.start()

    def close(self) -> None:
        """Wait for the pages asked for, then stop the worker."""
        self.worker.close()

    def make(self, assignment: str, student: str, withhold_messages: bool, release: bool) -> concurrent.futures.Future:
        """Make (and with `release`, release) the student's feedback; the future raises what
        failed (TaskFailed, WorkerDied), or gives the pid of the process that made it."""
        return self.worker.submit("make", assignment, student, withhold_messages, release)
