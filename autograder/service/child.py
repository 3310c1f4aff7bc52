"""A child process of the grading service that is replaced after so much work.

The service grades in one child and makes feedback in another. A long-lived process keeps what
it ever needed (the allocator's high-water marks, caches of the libraries it runs: about 15 MiB
per 1,000 submissions graded in-process, measured); a child is retired after `work_per_child`
units of work (submissions graded, pages made), so the service's memory stays flat over a term.
The next task goes to a fresh child while the retiring one finishes the tasks already asked of
it and exits. (Not ProcessPoolExecutor's max_tasks_per_child: on Python 3.11 to 3.13 it
deadlocks once a worker retires with work queued, CPython issue 115634.)

Every child dies with the service (PR_SET_PDEATHSIG): after a kill -9 nothing is left running,
and the claims of submissions it had in hand expire and are taken over.

Children are started with multiprocessing's "spawn" (never a fork of a process with running
threads), which imports the parent's main module again: a program that runs the service
in-process must guard its entry point with `if __name__ == "__main__":` (`python -m autograder`
does).
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable
from typing import Any


def _die_with_parent(parent: int) -> None:
    """Ask Linux to SIGKILL this process when the service that started it dies (however it dies)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the child exits when its pipe to the service closes
        pass
    if os.getppid() != parent:  # the service died before the line above took effect
        os._exit(1)


def _start(parent: int, initializer: Callable[..., None], args: tuple) -> None:
    _die_with_parent(parent)
    for signum in (signal.SIGINT, signal.SIGTERM):  # a terminal's ^C, systemd's stop: the service
        signal.signal(signum, signal.SIG_IGN)  # finishes what it has in hand, then closes its children
    sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]  # as the batch grader: a slow import nothing uses
    initializer(*args)


class RecycledChild:
    """One child process that runs tasks in order, replaced after `work_per_child` units of work.

    Subclasses give the child's `initializer` and `warm` (module-level functions, run in the
    child: set-up, and the imports done before the first task needs them) and `initargs()`,
    called in the parent for each new child."""

    initializer: Callable[..., None]
    warm: Callable[[], int]  # returns the child's pid

    def __init__(self, work_per_child: int):
        self.work_per_child = work_per_child
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None
        self._warm: concurrent.futures.Future | None = None
        self._done_here = 0  # work asked of the current child
        self._unfinished: list[concurrent.futures.Future] = []  # tasks not done yet, of any child

    def initargs(self) -> tuple:
        return ()

    def _executor(self) -> concurrent.futures.ProcessPoolExecutor:
        if self._pool is None:
            self._pool = concurrent.futures.ProcessPoolExecutor(
                max_workers=1,
                # spawn: the child starts clean, not as a fork of a process with running threads
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_start,
                initargs=(os.getpid(), type(self).initializer, self.initargs()),
            )
            self._warm = self._pool.submit(type(self).warm)
        return self._pool

    def start(self) -> concurrent.futures.Future:
        """Start the child (its imports take seconds); the future gives its pid once it is ready."""
        self._executor()
        assert self._warm is not None
        return self._warm

    def submit(self, work: int, function: Callable[..., Any], *args: Any) -> concurrent.futures.Future:
        """Run `function(*args)` in the child, counting `work` units against its allowance."""
        if self._done_here >= self.work_per_child:
            self._retire()
        try:
            future = self._executor().submit(function, *args)
        except concurrent.futures.process.BrokenProcessPool:
            self.restart()
            future = self._executor().submit(function, *args)
        self._done_here += work
        # only what is not done yet is kept: a future held for each task ever run would creep
        self._unfinished = [pending for pending in self._unfinished if not pending.done()] + [future]
        return future

    def _retire(self) -> None:
        """The next tasks go to a new child; the current one runs those it was given, then exits."""
        if self._pool is not None:
            self._pool.shutdown(wait=False)  # what is queued still runs
        self._pool, self._done_here = None, 0

    def restart(self) -> None:
        """After the child died (killed, out of memory): the next submit starts a new one."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        self._done_here = 0

    def close(self) -> None:
        """Wait for the tasks in hand (of retired children too), then stop the child."""
        concurrent.futures.wait(self._unfinished)
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        self._unfinished, self._pool, self._done_here = [], None, 0
