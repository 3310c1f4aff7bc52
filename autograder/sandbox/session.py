"""One supervised run: the grader's side of the driver's protocol, with every deadline.

A `Session` sends the job, then reads length-prefixed frames from the result pipe (each capped
in size on its header before it is read), drains the student's stdout and stderr (capped and
kept for the report, never interpreted) and answers the values frame with the probe calls. It
owns the deadlines: soft cell limits count CPU time in the driver, and the session's wall-clock
backstops are `Limits.wall_factor` times longer; past one, the run is stopped by the caller
killing the whole process tree. Frames come from the sandbox, where student code may write
anything to that pipe: each frame type has one method that takes only what it expects, once.

The driver's side of the protocol, frame by frame, is in driver/driver.py.
"""

from __future__ import annotations

import dataclasses
import math
import os
import selectors
import signal
import subprocess
import time
from collections.abc import Callable

from autograder.sandbox.driver import wire
from autograder.sandbox.limits import Limits
from autograder.sandbox.tiers import FIXES


@dataclasses.dataclass
class RunResult:
    """Everything the supervisor learned from one run, as plain data."""

    isolation: str
    values: dict = dataclasses.field(default_factory=dict)
    defined_in: dict = dataclasses.field(default_factory=dict)
    calls: dict = dataclasses.field(default_factory=dict)
    cells: list = dataclasses.field(default_factory=list)  # [{"index", "status", "error"}]
    stdout: str = ""
    stderr: str = ""
    fatal: str | None = None  # why the run ended early, in the student's terms
    grader_error: str | None = None  # the grader's own fault: reason and fix, never the student's
    seconds: float = 0.0
    details: dict = dataclasses.field(default_factory=dict)  # how the tier was put together (cgroup mechanism)
    # Where the time went, for the benchmark's profile only (never in a report, never a verdict):
    # seconds of "start" (to the interpreter), "import", "confine" (to the first cell), "cells",
    # "probes" (values and calls), "teardown". The first two come from the driver before any
    # student code exists; they are clamped and decide nothing.
    timings: dict = dataclasses.field(default_factory=dict)


class _Output:
    """Drains one student stream; keeps the start, counts the rest."""

    def __init__(self, keep: int):
        self.keep = keep
        self.kept = bytearray()
        self.total = 0

    def add(self, data: bytes) -> None:
        self.total += len(data)
        room = self.keep - len(self.kept)
        if room > 0:
            self.kept.extend(data[:room])

    def text(self) -> str:
        text = self.kept.decode("utf-8", errors="replace")
        if self.total > len(self.kept):
            text += f"\n[... {self.total - len(self.kept)} more bytes not kept]"
        return text


class _Outbox:
    """Frames for the driver, written only when its pipe has room.

    The grader never blocks on a write: a submission that stops reading its request pipe (or
    makes the grader queue more than the pipe holds) must not stall the deadlines below.
    """

    def __init__(self, fd: int, selector: selectors.BaseSelector):
        self.fd, self.selector = fd, selector
        self.pending = bytearray()
        os.set_blocking(fd, False)

    def send(self, message: dict) -> None:
        if not self.pending:
            self.selector.register(self.fd, selectors.EVENT_WRITE, "request")
        self.pending.extend(wire.pack_frame(message))

    def flush(self) -> None:
        try:
            written = os.write(self.fd, self.pending)
        except BlockingIOError:
            return
        except OSError:  # the driver is gone; nobody will read the rest
            written = len(self.pending)
        del self.pending[:written]
        if not self.pending:
            self.selector.unregister(self.fd)


def _cell_frame(frame: dict, known: set) -> tuple | None:
    """(index, status, error) of a cell frame, or None when it names no cell the grader sent."""
    index = frame.get("index")
    if type(index) is not int or index not in known:
        return None
    status = frame.get("status")
    error = frame.get("error")
    return (
        index,
        status if status in ("ok", "error", "timeout") else "error",
        None if error is None else str(error)[:1000],
    )


def _timings(marks: dict, ended: float) -> dict:
    """Seconds per step of one run from the times its frames arrived (steps not reached: absent)."""
    steps = [
        ("start", "launched", "started"),
        ("import", "started", "imported"),
        ("confine", "imported", "first_cell"),
        ("cells", "first_cell", "values"),
        ("probes", "values", "done"),
    ]
    timings = {name: marks[end] - marks[begin] for name, begin, end in steps if begin in marks and end in marks}
    if "done" in marks:
        timings["teardown"] = ended - marks["done"]
    return timings


# Frames only the student half's cells can have caused: after the first, the sandbox has started
# and a grader_error frame is no longer believed.
_STUDENT_FRAMES = ("cell", "cell_done", "values", "calls", "done")


class Session:
    """The grader's side of one run of the driver: `run()` fills `result` (a RunResult).

    `process` is what the caller started (a Popen, or a zygote's child with the same `stdout`,
    `stderr` and `wait`); `result_r` and `request_w` are our ends of the driver's channels;
    `started` is the monotonic time the run began, from which the total deadline counts."""

    def __init__(
        self,
        process,
        result_r: int,
        request_w: int,
        job: dict,
        make_probes: Callable[[dict], dict],
        limits: Limits,
        result: RunResult,
        started: float,
    ):
        self.process, self.result_r, self.job = process, result_r, job
        self.make_probes, self.limits, self.result, self.started = make_probes, limits, result, started
        self.outputs = {"stdout": _Output(limits.kept_output_bytes), "stderr": _Output(limits.kept_output_bytes)}
        self.selector = selectors.DefaultSelector()
        self.selector.register(result_r, selectors.EVENT_READ, "result")
        self.selector.register(process.stdout, selectors.EVENT_READ, "stdout")
        self.selector.register(process.stderr, selectors.EVENT_READ, "stderr")
        self.outbox = _Outbox(request_w, self.selector)
        # The length cap of the next frame depends on where the protocol is: a values frame may
        # hold one capped value per name, a calls frame one per requested call, anything else is small.
        self.values_cap = wire.MAX_SMALL_FRAME_BYTES + wire.MAX_VALUE_BYTES * len(job["names"])
        self.calls_cap = 0
        self.reader = wire.FrameReader(self._next_frame_cap)
        self.received = 0  # bytes on the result channel; the sum of the caps bounds the whole run
        self.budget = wire.MAX_SMALL_FRAME_BYTES * (2 * len(job["cells"]) + 8) + self.values_cap
        wall = limits.wall_factor
        self.total_deadline = started + limits.total_seconds * wall
        self.cell_deadline: float | None = None
        self.sandbox_started = False  # set by the first frame that student code could have caused
        self.current_cell: int | None = None
        self.cell_status: dict = {}
        # Only cells the grader sent are recorded, and values and calls are taken once, as dicts.
        self.known_cells = {index for index, _ in job["cells"]}
        self.got_values = self.got_calls = False
        self.ended_code: int | None = None
        self.done = False
        self.marks = {"launched": started}  # monotonic times of the protocol's steps, for result.timings
        self.handlers: dict[str, Callable[[dict], bool]] = {
            "ready": self.on_ready,
            "grader_error": self.on_grader_error,
            "cell": self.on_cell,
            "cell_done": self.on_cell_done,
            "values": self.on_values,
            "calls": self.on_calls,
            "ended": self.on_ended,
            "done": self.on_done,
        }

    # -- the loop -------------------------------------------------------------------------------
    def run(self) -> RunResult:
        """Send the job, read until the driver is done, gone or past a deadline; then conclude."""
        self.outbox.send(self.job)
        while self.selector.get_map() and not self._stopped():
            now = time.monotonic()
            deadline = min(self.total_deadline, self.cell_deadline or self.total_deadline)
            if now >= deadline:
                self._past_deadline(now)
                break
            for key, _ in self.selector.select(timeout=max(0.0, deadline - now)):
                if key.data == "request":
                    self.outbox.flush()
                    continue
                try:
                    data = os.read(key.fileobj if isinstance(key.fileobj, int) else key.fileobj.fileno(), 1 << 16)
                except OSError:
                    data = b""
                if not data:
                    self.selector.unregister(key.fileobj)
                    continue
                if key.data == "result":
                    self.on_result_bytes(data)
                else:
                    self.on_output(key.data, data)
                if self._stopped():
                    break
        self.selector.close()
        self.result.timings = _timings(self.marks, time.monotonic())
        self._conclude()
        return self.result

    def _stopped(self) -> bool:
        """Whether nothing more is read: the run ended with a verdict (the student's or ours)."""
        return self.done and bool(self.result.fatal or self.result.grader_error)

    def _fail(self, message: str) -> None:
        self.result.fatal = message

    def _next_frame_cap(self) -> int:
        return max(self.values_cap, self.calls_cap, wire.MAX_SMALL_FRAME_BYTES)

    def _past_deadline(self, now: float) -> None:
        if self.done:
            return  # finished; stopped waiting for the last of stdout/stderr
        wall = self.limits.wall_factor
        if self.cell_deadline is not None and now >= self.cell_deadline and self.current_cell is not None:
            self._fail(
                f"cell {self.current_cell + 1} was still running after "
                f"{self.limits.cell_seconds * wall + self.limits.cell_grace_seconds:g} s and could not be "
                "interrupted, so grading stopped there"
            )
            self.cell_status[self.current_cell] = {
                "index": self.current_cell,
                "status": "timeout",
                "error": "killed by the grader",
            }
        elif not self.sandbox_started:
            self.result.grader_error = (
                f"the {self.result.isolation} sandbox did not start within "
                f"{self.limits.total_seconds * wall:g} s; the machine may be overloaded"
            )
        else:
            self._fail(
                f"the notebook ran longer than {self.limits.total_seconds * wall:g} s in total, so grading stopped"
            )

    # -- what arrives -----------------------------------------------------------------------------
    def on_output(self, stream: str, data: bytes) -> None:
        """Student stdout or stderr: kept up to its cap; past the total limit the run ends."""
        self.outputs[stream].add(data)
        if sum(output.total for output in self.outputs.values()) > self.limits.max_output_bytes:
            self._fail(f"the notebook printed more than {self.limits.max_output_bytes >> 20} MiB, so grading stopped")
            self.done = True

    def on_result_bytes(self, data: bytes) -> None:
        """Bytes of the result channel: split into frames, each handled by its type's method."""
        self.received += len(data)
        try:
            if self.received > self.budget:
                raise ValueError(f"more than {self.budget} bytes of frames")
            frames = self.reader.feed(data)
        except (ValueError, RecursionError) as error:  # RecursionError: JSON nested too deeply
            self._fail(f"the grading channel was corrupted ({str(error)[:200]})")
            self.done = True
            return
        for frame in frames:
            if self.on_frame(frame):
                break

    def on_frame(self, frame) -> bool:
        """Handle one decoded frame; True when the frames after it in the same read are ignored."""
        kind = frame.get("type") if isinstance(frame, dict) else None
        if kind in _STUDENT_FRAMES:
            self.sandbox_started = True
            self.marks.setdefault("first_cell", time.monotonic())
        if kind in ("values", "done"):
            self.marks.setdefault(kind, time.monotonic())
        handler = self.handlers.get(kind) if isinstance(kind, str) else None
        return handler(frame) if handler is not None else False

    # -- one method per frame type (each returns whether to stop reading the frames at hand) --------
    def on_ready(self, frame: dict) -> bool:
        """The driver is up: its start and import times (its clock is CLOCK_MONOTONIC, as ours),
        clamped between our launch and this frame's arrival; for the profile only."""
        if not self.sandbox_started and "ready" not in self.marks:
            self.marks["ready"] = time.monotonic()
            for name in ("started", "imported"):
                value = frame.get(name)
                if isinstance(value, float) and math.isfinite(value):
                    self.marks[name] = min(max(value, self.started), self.marks["ready"])
        return False

    def on_grader_error(self, frame: dict) -> bool:
        """The sandbox could not be set up as promised: believed only before student code ran."""
        if self.sandbox_started:
            return False
        self.result.grader_error = str(frame.get("reason"))[:2000]
        self.done = True
        return True

    def on_cell(self, frame: dict) -> bool:
        """A cell starts: its wall-clock backstop runs from now."""
        cell = _cell_frame(frame, self.known_cells)
        if cell is not None:
            self.current_cell = cell[0]
            limits = self.limits
            self.cell_deadline = time.monotonic() + limits.cell_seconds * limits.wall_factor + limits.cell_grace_seconds
        return False

    def on_cell_done(self, frame: dict) -> bool:
        cell = _cell_frame(frame, self.known_cells)
        if cell is not None:
            index, status, cell_error = cell
            self.cell_status[index] = {"index": index, "status": status, "error": cell_error}
            self.current_cell, self.cell_deadline = None, None
        return False

    def on_values(self, frame: dict) -> bool:
        """The values of the names asked for, once: answered with the probe calls they allow."""
        if self.got_values or not isinstance(frame.get("values"), dict):
            return False
        self.got_values = True
        self.result.values = frame["values"]
        defined_in = frame.get("defined_in")
        self.result.defined_in = defined_in if isinstance(defined_in, dict) else {}
        probes = self.make_probes(self.result.values)
        self.outbox.send({"type": "probes", "calls": probes})
        self.values_cap = 0
        calls = sum(len(args) for args in probes.values()) if isinstance(probes, dict) else 0
        self.calls_cap = wire.MAX_SMALL_FRAME_BYTES + wire.MAX_VALUE_BYTES * max(1, calls)
        self.budget += self.calls_cap
        return False

    def on_calls(self, frame: dict) -> bool:
        if self.got_calls or not isinstance(frame.get("calls"), dict):
            return False
        self.got_calls = True
        self.result.calls = frame["calls"]
        self.calls_cap = 0
        return False

    def on_ended(self, frame: dict) -> bool:
        """The relay's word on how the student half ended (it did not say done)."""
        if not isinstance(frame.get("exit_code"), int):
            return False
        self.ended_code = frame["exit_code"]
        if frame.get("corrupted"):
            self._fail(
                "the notebook wrote into the grader's internal pipe, so nothing more it "
                "defined could be read"
                + (f" (in cell {self.current_cell + 1})" if self.current_cell is not None else "")
            )
        return False

    def on_done(self, frame: dict) -> bool:
        """Finished: drain what is left of stdout/stderr for a moment, then stop."""
        self.done = True
        self.selector.unregister(self.result_r)
        self.total_deadline = min(self.total_deadline, time.monotonic() + 1.0)
        self.cell_deadline = None
        return True

    # -- the verdict --------------------------------------------------------------------------------
    def _conclude(self) -> None:
        """Why a run that did not finish ended, in the student's terms (or the grader's, when the
        sandbox never started); then the cells and the kept output."""
        result, limits = self.result, self.limits
        if not self.done and result.fatal is None and result.grader_error is None and not self.sandbox_started:
            try:
                code = self.process.wait(timeout=2.0)
            except subprocess.TimeoutExpired:
                code = None
            stderr = self.outputs["stderr"].text().strip()
            result.grader_error = (
                f"the {result.isolation} sandbox ended before running the notebook "
                f"(exit status {code})"
                + (f": {stderr[-600:]}" if stderr else "")
                + (f"; {FIXES[result.isolation]}" if FIXES[result.isolation] else "")
            )
        elif not self.done and result.fatal is None and result.grader_error is None:
            # The pipes close a moment before the process can be reaped: wait for its status briefly.
            try:
                code = self.process.wait(timeout=max(0.0, min(2.0, self.total_deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                code = None
            died_from = -code if code is not None and code < 0 else None
            if result.isolation == "bubblewrap" and code is not None and code > 128:
                died_from = code - 128  # bubblewrap exits with 128 + the signal that ended its child
            if self.ended_code is not None and self.ended_code < 0:
                died_from = -self.ended_code  # the student half died; the relay reported it
            where = f" in cell {self.current_cell + 1}" if self.current_cell is not None else ""
            if died_from is not None:
                reason = {
                    signal.SIGSEGV: "crashed (segmentation fault)",
                    signal.SIGKILL: "was killed (out of memory, or past its CPU time limit?)",
                    signal.SIGXCPU: f"used more than {math.ceil(limits.total_seconds)} s of CPU time",
                }
                self._fail(f"the Python process {reason.get(died_from, f'died from signal {died_from}')}{where}")
            else:
                self._fail(
                    f"the Python process ended early{where} (did the notebook call os._exit or close the grader's pipes?)"
                )
        cell_status = self.cell_status
        result.cells = [cell_status[index] for index in sorted(cell_status, key=lambda i: (i is None, i))]
        result.stdout = self.outputs["stdout"].text()
        result.stderr = self.outputs["stderr"].text()
