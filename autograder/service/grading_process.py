"""The grading service's grading, done by the batch grader in a worker process replaced now and then.

The service's main process keeps the queue, the claims and the exchange; a worker process
(core/processes.py) runs the batch grader on each claim (sanitising, sandboxes, checks,
recording into the gradebook and autograded/) and reports each chunk of students as its grades
are committed, so that the service hands their feedback to the feedback process while the next
chunk is graded. Grading in one long-lived process crept about 15 MiB per 1,000 submissions (the
allocator's heap, not Python objects, by tracemalloc); the process is replaced after
SUBMISSIONS_PER_CHILD submissions, which bounds that by construction.

A chunk's report is sent (synchronously, before the next chunk starts) ahead of the task's
result, so once the result is in, every report of that task has been delivered.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pathlib
import queue
from collections.abc import Callable

from autograder.core import processes
from autograder.nbgrader.lock import GraderBusy
from autograder.sandbox import supervisor as sandbox

SUBMISSIONS_PER_CHILD = 500


def _setup(root: str, log_level: int, log_format: str | None) -> pathlib.Path:
    """In the worker: logging as the service's, shared gradebook engines, the grader imported."""
    logging.basicConfig(
        level=log_level, format=log_format or logging.BASIC_FORMAT
    )  # the grader's warnings read as the service's
    logging.getLogger("traitlets").setLevel(max(logging.WARNING, log_level))
    import nbformat  # noqa: F401  # the grader's imports, before the first submission needs them
    import nbgrader.api  # noqa: F401

    from autograder.nbgrader import batch  # noqa: F401
    from autograder.service import engines

    engines.share_gradebook_engines()  # a new engine per Gradebook opened creeps in a long run
    return pathlib.Path(root)


def _grade(root: pathlib.Path, assignment: str, students: list[str], jobs: int, limits: dict, isolation: str) -> dict:
    """Grade these students' submissions of `assignment`, reporting each committed chunk as
    [student, ...]; returns every student recorded, and those left ungraded by a fault of the
    grader (SubmissionKey text: "student/assignment/notebook"), or {"busy": why} when another grader holds the assignment."""
    from autograder.core.course import Course
    from autograder.nbgrader import batch

    recorded: list[str] = []

    def report(chunk) -> None:
        names = [work.student for work in chunk]
        recorded.extend(names)
        processes.report(names)

    grader = batch.BatchGrader(
        Course(root),
        assignment,
        jobs=jobs,
        limits=sandbox.Limits(**limits),
        isolation=isolation,
        students=students,
        quiet=True,
        on_recorded=report,
        shared_lock=True,
    )
    try:
        grader.run()
    except GraderBusy as error:
        return {"busy": str(error)}
    return {"recorded": recorded, "flagged": [str(key) for key in grader.flagged], "pid": os.getpid()}


TASKS = processes.Tasks(_setup, grade=_grade)


class GradingProcess:
    """Grade claims in a worker process, one claim at a time."""

    def __init__(self, root: pathlib.Path, submissions_per_child: int = SUBMISSIONS_PER_CHILD):
        self.root = pathlib.Path(root)
        root_logger = logging.getLogger()
        handler = root_logger.handlers[0] if root_logger.handlers else None
        log_format = getattr(handler.formatter, "_fmt", None) if handler and handler.formatter else None
        log_level = logging.getLogger("autograder.service").getEffectiveLevel()
        self.worker = processes.Worker(
            "autograder.service.grading_process:TASKS",
            [str(self.root), log_level, log_format],
            work_per_child=submissions_per_child,
        )

    def start(self):
        """Start the worker (its imports take seconds); the future gives its pid once it is ready."""
        return self.worker.start()

    def close(self) -> None:
        self.worker.close()

    def grade(
        self,
        assignment: str,
        students: list[str],
        on_recorded: Callable[[list[str]], None],
        jobs: int,
        limits: sandbox.Limits,
        isolation: str,
    ) -> dict:
        """Grade the students' submissions in the worker, calling `on_recorded(students)` here as
        each chunk's grades are committed there; returns the worker's summary (see `_grade`), or
        raises GraderBusy, what the grader raised (TaskFailed), or WorkerDied if it died."""
        reports: queue.SimpleQueue = queue.SimpleQueue()
        future = self.worker.submit(
            "grade",
            assignment,
            students,
            jobs,
            dataclasses.asdict(limits),
            isolation,
            work=len(students),
            on_report=reports.put,
        )
        future.add_done_callback(lambda _: reports.put(None))  # after every report of the task
        delivered: set[str] = set()

        def deliver(names: list[str]) -> None:
            new = [name for name in names if name not in delivered]
            delivered.update(new)
            if new:
                on_recorded(new)

        while (names := reports.get()) is not None:
            deliver(names)
        summary = future.result()
        if "busy" in summary:
            raise GraderBusy(summary["busy"])
        deliver(summary["recorded"])
        return summary
