"""Work run in other processes, and the start-up lines of every grader process.

A `Worker` runs named tasks in a worker process, one task at a time in the order asked. The
process is a fresh interpreter, `python -m autograder.core.worker PARENT MODULE:NAME` (never a
fork of a process that runs threads; nothing of the parent's memory), and `NAME` is a `Tasks`
of `MODULE`: a set-up run once, then functions. Parent and worker exchange plain data only, one
JSON object a line on two pipes (the worker's stdin, and a copy of its stdout taken before
anything runs; what its code prints goes to stderr): nothing is ever unpickled, so a worker
cannot make its parent run anything.

    parent -> worker   {"setup": [...]}, then {"id": n, "task": name, "args": [...]} per task
    worker -> parent   {"ready": pid} (or {"failed": traceback}), then per task any number of
                       {"id": n, "report": data} and one {"id": n, "result": data} or
                       {"id": n, "error": {...}} (raised as TaskFailed)

Replaced when it has done its share: a long-lived process keeps what it ever needed (the
allocator's high-water marks, the caches of the libraries it runs: the service's grading crept
about 15 MiB per 1,000 submissions in one process), so past `work_per_child` units of work
(submissions, pages: the caller's unit) the next task goes to a new process, while the old one
finishes the tasks it has and exits. (Not ProcessPoolExecutor's max_tasks_per_child: on Python
3.11 to 3.13 it deadlocks once a worker retires with work queued, CPython issue 115634.)

Replaced when it dies: a process that ends with tasks in hand (killed, out of memory) fails each
of them with WorkerDied, a fault of the grader and never the student's; the next task starts a
new process.

Dying with its parent: on Linux the kernel kills a worker when the thread that started it ends
(PR_SET_PDEATHSIG; one long-lived thread starts every worker, so that is when the parent ends,
even by kill -9); everywhere (macOS too), a worker whose request pipe reaches its end (the
parent is gone, or done with it) stops: at once in the middle of a task, by an orderly exit
(its atexit handlers run) when idle. Workers ignore SIGINT and SIGTERM: a terminal's ^C or a
service manager's stop reaches the whole process group, and the parent decides what is finished.
"""

from __future__ import annotations

import concurrent.futures
import importlib
import itertools
import json
import logging
import os
import pathlib
import queue
import signal
import subprocess
import sys
import threading
import traceback
import warnings
from collections.abc import Callable, Sequence
from typing import IO, Any

log = logging.getLogger("autograder.processes")

CLOSE_SECONDS = 60.0  # an idle worker told to stop exits in far less; past this it is killed


def prepare_process() -> None:
    """The start-up lines of every grader process: the batch grader, the service, each worker.

    With the optional rfc3987_syntax installed, importing jsonschema (which nbgrader does)
    compiles an IRI grammar, seconds on every start; nbgrader's schemas use no IRI formats, so
    the grader goes without it. SQLAlchemy's warnings about nbgrader's own gradebook code, on
    every submission, are silenced."""
    sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]  # None: "not installed"
    warnings.filterwarnings("ignore", message=".*not in session.*")


class Tasks:
    """What a worker process can be asked. `setup(*args)` runs once when the process starts (its
    imports, its configuration; `args` are the Worker's `setup_args`) and returns the context
    every task is given first: `functions[name](context, *args)`. Arguments and results are
    plain data (JSON)."""

    def __init__(self, setup: Callable[..., Any], **functions: Callable[..., Any]):
        self.setup, self.functions = setup, functions


class WorkerDied(Exception):
    """The worker process ended with the task in hand (killed, out of memory), or could not be
    started: a fault of the grader. `why` says how ("stopped (exit status -9)")."""

    def __init__(self, pid: int | None, why: str, status: int | None = None):
        super().__init__(f"worker process {pid} {why}" if pid else f"worker process {why}")
        self.pid, self.why, self.status = pid, why, status


class TaskFailed(Exception):
    """A task raised in the worker. Its text and repr are those of the worker's exception,
    `kind` its class's dotted name; the worker's traceback is its cause (shown with it)."""

    def __init__(self, kind: str, message: str, shown: str):
        super().__init__(message)
        self.kind, self.shown = kind, shown

    def __repr__(self) -> str:
        return self.shown


class _RemoteTraceback(Exception):
    def __str__(self) -> str:
        return self.args[0]


# PR_SET_PDEATHSIG ties a worker to the *thread* that started it: workers outlive the threads
# that ask for them (a feeder, a service's grading lane), so one long-lived thread starts them all.
_SPAWNER = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="worker-spawner")


def _command(tasks: str) -> list[str]:
    # -P (Python 3.11+): the working directory (a course root, another checkout) is not on the
    # worker's path; the package comes first on it (_environment)
    safe_path = ["-P"] if sys.version_info >= (3, 11) else []
    return [sys.executable, *safe_path, "-m", "autograder.core.worker", str(os.getpid()), tasks]


def _environment() -> dict[str, str]:
    """The worker's environment: this one, with this copy of the package first on its path."""
    # this file's own package, never `autograder.__file__`: run from a course root, whose
    # autograder/assignments/ folder is a namespace package of that name, it is None
    package_parent = str(pathlib.Path(__file__).resolve().parents[2])
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_parent, os.environ.get("PYTHONPATH")]))}


class _Process:
    """One worker process, its pending tasks and the thread that reads its replies."""

    def __init__(self, tasks: str, setup_args: Sequence, on_exit: Callable[[_Process], None]):
        self.on_exit = on_exit
        self.ready: concurrent.futures.Future = concurrent.futures.Future()
        self.ready.set_running_or_notify_cancel()
        self.lock = threading.Lock()  # pending, ended
        self.pending: dict[int, tuple[concurrent.futures.Future, Callable[[Any], None] | None]] = {}
        self.ended = False  # its replies have ended: it exited or died
        self.retiring = False  # it finishes what it has, then exits
        self.given = 0  # units of work asked of it
        self.asked = False
        self.failure: str | None = None  # why its set-up failed, as it said
        self.writing = threading.Lock()
        setup = _line({"setup": list(setup_args)})  # TypeError, before a process is started, for what is no plain data
        self.process = _SPAWNER.submit(
            subprocess.Popen, _command(tasks), stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=_environment()
        ).result()
        self.pid = self.process.pid
        self._write(setup)
        self.reader = threading.Thread(target=self._read, name=f"worker-{self.pid}-replies", daemon=True)
        self.reader.start()

    def _write(self, line: bytes) -> None:
        assert self.process.stdin is not None
        try:
            with self.writing:
                self.process.stdin.write(line)
                self.process.stdin.flush()
        except (OSError, ValueError):  # it died (its replies' end fails what it had), or was told to stop
            pass

    def ask(self, number: int, task: str, args: Sequence, work: int, on_report) -> concurrent.futures.Future | None:
        """Send it a task; None if it has ended already."""
        request = _line({"id": number, "task": task, "args": list(args)})  # TypeError for what is no plain data
        future: concurrent.futures.Future = concurrent.futures.Future()
        future.set_running_or_notify_cancel()  # cannot be cancelled: the worker may have started it
        with self.lock:
            if self.ended:
                return None
            self.pending[number] = (future, on_report)
            self.given += work
            self.asked = True
        self._write(request)
        return future

    def in_hand(self) -> int:
        with self.lock:
            return len(self.pending)

    def retire(self) -> None:
        """It takes no more tasks: it exits once those in hand are done."""
        with self.lock:
            self.retiring = True
            idle = not self.pending
        if idle:
            self._end_requests()

    def _end_requests(self) -> None:
        with self.writing:
            try:
                assert self.process.stdin is not None
                self.process.stdin.close()  # an idle worker exits at the end of its requests
            except OSError:
                pass

    def _read(self) -> None:
        assert self.process.stdout is not None
        try:
            for line in self.process.stdout:
                self._handle(json.loads(line))
        except (OSError, ValueError, KeyError, TypeError):  # a garbled channel: the worker is not trusted on
            self.process.kill()
        self._reap()

    def _handle(self, message: dict) -> None:
        if "ready" in message:
            self.ready.set_result(message["ready"])
            return
        if "failed" in message:
            self.failure = str(message["failed"])
            log.error("worker process %s could not set up:\n%s", self.pid, self.failure)
            return
        with self.lock:
            future, on_report = self.pending[message["id"]]
        if "report" in message:
            if on_report is not None:
                try:
                    on_report(message["report"])
                except Exception:  # the caller's bug must not stop the replies of other tasks
                    log.exception("a report of worker process %s could not be handled", self.pid)
            return
        with self.lock:
            del self.pending[message["id"]]
            finished = self.retiring and not self.pending
        if "error" in message:
            error = message["error"]
            failed = TaskFailed(str(error["type"]), str(error["message"]), str(error["repr"]))
            failed.__cause__ = _RemoteTraceback(str(error["traceback"]))
            future.set_exception(failed)
        else:
            future.set_result(message["result"])
        if finished:
            self._end_requests()

    def _reap(self) -> None:
        """Its replies ended: it exited (or died); every task it had fails with WorkerDied."""
        try:
            status = self.process.wait(timeout=CLOSE_SECONDS)
        except subprocess.TimeoutExpired:  # its reply channel closed, yet it lives on: it is done
            self.process.kill()
            status = self.process.wait()
        self._end_requests()
        assert self.process.stdout is not None
        self.process.stdout.close()
        with self.lock:
            self.ended = True
            pending, self.pending = self.pending, {}
        if self.failure is not None:
            why = f"could not be started ({self.failure.strip().splitlines()[-1]})"
        else:
            why = f"stopped (exit status {status})"
        died = WorkerDied(self.pid, why, status)
        if not self.ready.done():
            self.ready.set_exception(died)
        for future, _ in pending.values():
            future.set_exception(died)
        self.on_exit(self)

    def close(self) -> None:
        """Wait for the tasks in hand, then stop it (a worker never asked anything is killed at once)."""
        with self.lock:
            asked, futures = self.asked, [future for future, _ in self.pending.values()]
        if not asked:
            self.process.kill()  # not worth waiting for its start
        concurrent.futures.wait(futures)
        self._end_requests()
        self.reader.join(CLOSE_SECONDS)
        if self.reader.is_alive():
            self.process.kill()
            self.reader.join()


class Worker:
    """Tasks run in a worker process (see the module's docstring), replaced after
    `work_per_child` units of work (None: never) and whenever it dies.

    `tasks` is "module:NAME" of a `Tasks`, `setup_args` the plain data its set-up is called with
    in each new process."""

    def __init__(self, tasks: str, setup_args: Sequence = (), work_per_child: int | None = None):
        self.tasks, self.setup_args, self.work_per_child = tasks, list(setup_args), work_per_child
        self._lock = threading.Lock()
        self._current: _Process | None = None
        self._live: set[_Process] = set()  # the current process and those retiring
        self._numbers = itertools.count()

    def _process(self) -> _Process:
        """The current process (a new one if there is none, or it ended); with the lock held."""
        if self._current is None or self._current.ended:
            self._current = _Process(self.tasks, self.setup_args, self._exited)
            self._live.add(self._current)
        return self._current

    def _exited(self, process: _Process) -> None:
        with self._lock:
            self._live.discard(process)
            if self._current is process:
                self._current = None

    def start(self) -> concurrent.futures.Future:
        """Start a process now (its imports take seconds); the future gives its pid once it is
        ready, or raises WorkerDied."""
        with self._lock:
            try:
                return self._process().ready
            except OSError as error:
                return _failed(WorkerDied(None, f"could not be started ({error!r})"))

    def submit(
        self, task: str, *args: Any, work: int = 1, on_report: Callable[[Any], None] | None = None
    ) -> concurrent.futures.Future:
        """Run the task on `args` in the worker, counting `work` units against its process's
        allowance. The future gives the task's result, or raises TaskFailed (the task raised) or
        WorkerDied. `on_report(data)` is called, in a thread of this Worker, for each report the
        task sends (`report`), in order and before its result is set."""
        number = next(self._numbers)
        with self._lock:
            current = self._current
            if current is not None and self.work_per_child is not None and current.given >= self.work_per_child:
                current.retire()
                self._current = None
            for _ in range(2):  # a process that ended meanwhile is replaced, once
                try:
                    future = self._process().ask(number, task, args, work, on_report)
                except OSError as error:
                    return _failed(WorkerDied(None, f"could not be started ({error!r})"))
                if future is not None:
                    return future
        return _failed(WorkerDied(None, "stopped as it started, twice"))

    def in_hand(self) -> int:
        """Tasks asked and not finished, over its processes."""
        with self._lock:
            live = list(self._live)
        return sum(process.in_hand() for process in live)

    def close(self) -> None:
        """Wait for the tasks in hand (of retiring processes too), then stop every process."""
        with self._lock:
            live, self._current = list(self._live), None
        for process in live:
            process.close()


def _line(message: dict) -> bytes:
    return json.dumps(message).encode() + b"\n"


def _failed(error: Exception) -> concurrent.futures.Future:
    future: concurrent.futures.Future = concurrent.futures.Future()
    future.set_running_or_notify_cancel()
    future.set_exception(error)
    return future


# -- inside a worker process -----------------------------------------------------------------------

_replies: IO[bytes] | None = None
_replying = threading.Lock()
_task: int | None = None  # the id of the task running


def _send(message: dict) -> None:
    _reply(json.dumps(message))


def _reply(line: str) -> None:
    assert _replies is not None, "not in a worker process"
    with _replying:
        _replies.write(line.encode() + b"\n")
        _replies.flush()


def report(data: Any) -> None:
    """In a worker process, during a task: hand `data` (plain data) to the task's `on_report`
    in the parent now."""
    _send({"id": _task, "report": data})


def _die_with_parent(parent: int) -> None:
    """Ask Linux to SIGKILL this process when its parent dies (however it dies)."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            PR_SET_PDEATHSIG = 1
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):  # no prctl: the end of the request pipe tells it
            pass
    if os.getppid() != parent:  # the parent died before the line above took effect
        os._exit(1)


def _take_channels() -> tuple[IO[bytes], IO[bytes]]:
    """The request and reply pipes, on descriptors of their own that no child inherits; stdin
    becomes /dev/null and stdout a copy of stderr, so nothing printed lands among the replies."""
    requests = os.fdopen(os.dup(0), "rb")
    replies = os.fdopen(os.dup(1), "wb")
    nothing = os.open(os.devnull, os.O_RDONLY)
    os.dup2(nothing, 0)
    os.close(nothing)
    os.dup2(2, 1)
    return requests, replies


class _State:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running = True  # setting up, or running a task
        self.ended = False  # the requests ended


def _read_requests(requests: IO[bytes], inbox: queue.SimpleQueue, state: _State) -> None:
    try:
        for line in requests:
            inbox.put(json.loads(line))
    except ValueError:  # never from a parent of this package: taken as its end
        pass
    with state.lock:  # the parent is done with this worker, or gone
        state.ended = True
        if state.running:  # gone: nobody wants what the task in hand would give
            os._exit(1)
    inbox.put(None)


def serve(parent: int, tasks_name: str) -> None:
    """The main loop of a worker process (autograder/core/worker.py)."""
    global _replies, _task
    _die_with_parent(parent)
    for signum in (signal.SIGINT, signal.SIGTERM):  # the parent decides (see the module's docstring)
        signal.signal(signum, signal.SIG_IGN)
    requests, _replies = _take_channels()
    prepare_process()
    first = requests.readline()
    if not first:  # the parent is gone already
        os._exit(1)
    state, inbox = _State(), queue.SimpleQueue[dict | None]()
    threading.Thread(target=_read_requests, args=(requests, inbox, state), name="requests", daemon=True).start()
    try:
        module, _, name = tasks_name.partition(":")
        tasks = getattr(importlib.import_module(module), name)
        context = tasks.setup(*json.loads(first)["setup"])
    except Exception:  # noqa: BLE001 - said to the parent, which fails what it asks of this process
        _send({"failed": traceback.format_exc()})
        sys.exit(1)
    _send({"ready": os.getpid()})
    while True:
        with state.lock:
            state.running = False
        request = inbox.get()
        with state.lock:
            if request is None or state.ended:
                return
            state.running = True
        _task = request["id"]
        try:
            result = tasks.functions[request["task"]](context, *request["args"])
            reply = json.dumps({"id": _task, "result": result})
        except Exception as error:  # noqa: BLE001 - the parent raises it as TaskFailed
            kind = f"{type(error).__module__}.{type(error).__qualname__}"
            described = {"type": kind, "message": str(error), "repr": repr(error), "traceback": traceback.format_exc()}
            reply = json.dumps({"id": _task, "error": described})
        _reply(reply)
