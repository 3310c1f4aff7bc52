"""Feedback made in a child process, so that the grading service's grading never waits for it.

Making one student's feedback page (nbgrader's GenerateFeedback, then ExchangeReleaseFeedback)
costs about as much CPU as checking and recording their submission. In the grading thread it
would leave the sandboxes idle while each chunk's pages are made; in this child it runs on the
other core while the next chunk is checked and recorded. The child makes one student's feedback
at a time (the renderer keeps its compiled templates between students) and the service marks the
submission done when the child reports back, so a claim stays the service's, renewed, until its
feedback is out.

A child is retired after PAGES_PER_CHILD pages: the next pages go to a fresh child, while the old
one makes those already asked of it and exits. What a long-lived child accumulates (the
allocator's high-water marks, caches of the libraries it runs) is returned every thousand
pages, so the feedback process's memory stays flat over a term. (Not ProcessPoolExecutor's
max_tasks_per_child: on Python 3.11 to 3.13 it deadlocks once a worker retires with work queued,
CPython issue 115634.)

The child dies with the service (PR_SET_PDEATHSIG): after a kill -9 nothing is left running,
and the claims of submissions whose feedback was not out expire and are taken over (their grades
are committed, so only their feedback is made again).

The child is started with multiprocessing's "spawn" (never a fork of a process with running
threads), which imports the parent's main module again: a program that runs the service
in-process must guard its entry point with `if __name__ == "__main__":` (`python -m autograder`
does).
"""

from __future__ import annotations

import concurrent.futures
import logging
import multiprocessing
import os
import pathlib
import signal
import sys

from autograder.service import feedback

_child: dict = {}


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when the service that started it dies (however it dies)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the child exits when its pipe to the service closes
        pass


def _start(root: str, parent: int) -> None:
    _die_with_parent()
    if os.getppid() != parent:  # the service died before the line above took effect
        os._exit(1)
    for signum in (signal.SIGINT, signal.SIGTERM):  # a terminal's ^C, systemd's stop: the service
        signal.signal(signum, signal.SIG_IGN)  # finishes what it has in hand, then closes its child
    sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]  # as the batch grader: a slow import nothing uses
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


class FeedbackProcess:
    """One child process that makes and releases feedback, one student at a time, in order
    (a retiring child and its successor may overlap, each with its own students)."""

    def __init__(self, root: pathlib.Path, pages_per_child: int = PAGES_PER_CHILD):
        self.root = pathlib.Path(root)
        self.pages_per_child = pages_per_child
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None
        self._asked = 0  # pages asked of the current child
        self._unfinished: list[concurrent.futures.Future] = []  # pages not made yet, of any child

    def _executor(self) -> concurrent.futures.ProcessPoolExecutor:
        if self._pool is None:
            self._pool = concurrent.futures.ProcessPoolExecutor(
                max_workers=1,
                # spawn: the child starts clean, not as a fork of a process with running threads
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_start,
                initargs=(str(self.root), os.getpid()),
            )
            self._warm = self._pool.submit(_warm)
        return self._pool

    def start(self) -> concurrent.futures.Future:
        """Start the child (its imports take seconds); the future gives its pid once it is ready."""
        self._executor()
        return self._warm

    def submit(
        self, assignment: str, student: str, withhold_messages: bool, release: bool
    ) -> concurrent.futures.Future:
        """Make (and with `release`, release) the student's feedback; the future raises what
        failed, or gives the pid of the child that made it."""
        if self._asked >= self.pages_per_child:
            self._retire()
        try:
            future = self._executor().submit(_make, assignment, student, withhold_messages, release)
        except concurrent.futures.process.BrokenProcessPool:
            self.restart()
            future = self._executor().submit(_make, assignment, student, withhold_messages, release)
        self._asked += 1
        # only what is not made yet is kept: a future held for each page ever made would creep
        self._unfinished = [pending for pending in self._unfinished if not pending.done()] + [future]
        return future

    def _retire(self) -> None:
        """The next pages go to a new child; the current one makes those it was asked for, then exits."""
        if self._pool is not None:
            self._pool.shutdown(wait=False)  # what is queued is still made
        self._pool, self._asked = None, 0

    def restart(self) -> None:
        """After the child died (killed, out of memory): the next submit starts a new one."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        self._asked = 0

    def close(self) -> None:
        """Wait for the feedback in hand (of retired children too), then stop the child."""
        concurrent.futures.wait(self._unfinished)
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        self._unfinished, self._pool, self._asked = [], None, 0
