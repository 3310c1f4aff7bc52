"""The grading service's grading, done by the batch grader in a child process replaced now and then.

The service's main process keeps the queue, the claims and the exchange; a child runs the batch
grader on each claim (sanitising, sandboxes, checks, recording into the gradebook and
autograded/) and reports each chunk of students as its grades are committed, so that the
service hands their feedback to the feedback process while the next chunk is graded. Grading in
one long-lived process crept about 15 MiB per 1,000 submissions (the allocator's heap, not
Python objects, by tracemalloc); the child is a RecycledChild (service/child.py), retired after
SUBMISSIONS_PER_CHILD submissions, which bounds that by construction.

The chunk reports travel on a pipe of the child's own, as JSON: the parent reads them while the
child works. A report is written (synchronously, before the next chunk starts) ahead of the
task's result, so once the result is in, every report of that task can be read.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import json
import logging
import multiprocessing
import os
import pathlib
from collections.abc import Callable
from multiprocessing.connection import Connection

from autograder.sandbox import supervisor as sandbox
from autograder.service import child

SUBMISSIONS_PER_CHILD = 500

_child: dict = {}


def _start(root: str, reports, log_level: int, log_format: str | None) -> None:
    import warnings

    logging.basicConfig(
        level=log_level, format=log_format or logging.BASIC_FORMAT
    )  # the grader's warnings read as the service's
    logging.getLogger("traitlets").setLevel(max(logging.WARNING, log_level))
    warnings.filterwarnings("ignore", message=".*not in session.*")
    from autograder.service import engines

    engines.share_gradebook_engines()  # a new engine per Gradebook opened creeps in a long run
    _child["root"], _child["reports"] = pathlib.Path(root), reports


def _warm() -> int:
    """Import the grader before the first submission needs it."""
    import nbformat  # noqa: F401
    import nbgrader.api  # noqa: F401

    from autograder.nbgrader import batch  # noqa: F401

    return os.getpid()


def _grade(task: int, assignment: str, students: list[str], jobs: int, limits: sandbox.Limits, isolation: str) -> dict:
    """Grade these students' submissions of `assignment`, reporting each committed chunk on the
    pipe as [task, [student, ...]]; returns every student recorded, and those left ungraded by a
    fault of the grader (SubmissionKey text: "student/assignment/notebook")."""
    from autograder.core.course import Course
    from autograder.nbgrader import batch

    recorded: list[str] = []

    def report(chunk) -> None:
        names = [work.student for work in chunk]
        recorded.extend(names)
        _child["reports"].send_bytes(json.dumps([task, names]).encode())

    grader = batch.BatchGrader(
        Course(_child["root"]),
        assignment,
        jobs=jobs,
        limits=limits,
        isolation=isolation,
        students=students,
        quiet=True,
        on_recorded=report,
        shared_lock=True,
    )
    grader.run()
    return {"recorded": recorded, "flagged": [str(key) for key in grader.flagged], "pid": os.getpid()}


class GradingProcess(child.RecycledChild):
    """Grade claims in a child process, one claim at a time."""

    initializer, warm = _start, _warm

    def __init__(self, root: pathlib.Path, submissions_per_child: int = SUBMISSIONS_PER_CHILD):
        super().__init__(work_per_child=submissions_per_child)
        self.root = pathlib.Path(root)
        self._tasks = itertools.count()
        self._reports: Connection | None = None  # the parent's end of the current child's report pipe

    def initargs(self) -> tuple:
        # a pipe per child: one that died mid-report leaves nothing half-written for the next
        self._reports, sending = multiprocessing.get_context("spawn").Pipe(duplex=False)
        root_logger = logging.getLogger()
        handler = root_logger.handlers[0] if root_logger.handlers else None
        log_format = getattr(handler.formatter, "_fmt", None) if handler and handler.formatter else None
        return (str(self.root), sending, logging.getLogger("autograder.service").getEffectiveLevel(), log_format)

    def grade(
        self,
        assignment: str,
        students: list[str],
        on_recorded: Callable[[list[str]], None],
        jobs: int,
        limits: sandbox.Limits,
        isolation: str,
    ) -> dict:
        """Grade the students' submissions in the child, calling `on_recorded(students)` here as
        each chunk's grades are committed there; returns the child's summary (see `_grade`), or
        raises what the grader raised (BrokenProcessPool if the child died)."""
        task = next(self._tasks)
        future = self.submit(len(students), _grade, task, assignment, students, jobs, limits, isolation)
        reports = self._reports
        assert reports is not None
        delivered: set[str] = set()

        def deliver(names: list[str]) -> None:
            new = [name for name in names if name not in delivered]
            delivered.update(new)
            if new:
                on_recorded(new)

        while True:
            finished = future.done()
            try:
                while reports.poll(0 if finished else 0.05):
                    reported_task, names = json.loads(reports.recv_bytes())
                    if reported_task == task:
                        deliver(names)
            except (EOFError, OSError, ValueError):  # the child died mid-report: its result says so
                concurrent.futures.wait([future])
                finished = True
            if finished:
                break
        if future.exception() is None:
            deliver(future.result()["recorded"])
        return future.result()
