"""The grader's side of the driver's protocol (sandbox.session.Session), frame by frame.

Frames are written by the test into a real pipe, as a driver (or student code that reached the
pipe) would; the process beside them is a real one, whose stdout, stderr and exit status the
session reads. No sandbox is started: what is checked is what the session makes of each frame.
"""

import os
import struct
import subprocess
import sys
import time

import pytest

from autograder.sandbox.driver import wire
from autograder.sandbox.limits import Limits
from autograder.sandbox.session import RunResult, Session


class Channels:
    """The two pipes of one run, and a real process whose output and exit the session reads."""

    def __init__(self, script: str = "", isolation: str = "landlock"):
        self.result_r, self.result_w = os.pipe()
        self.request_r, self.request_w = os.pipe()
        self.process = subprocess.Popen(
            [sys.executable, "-c", script or "pass"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        self.result = RunResult(isolation=isolation)
        self.probe_calls: list = []

    def write(self, *frames) -> None:
        for frame in frames:
            os.write(self.result_w, frame if isinstance(frame, bytes) else wire.pack_frame(frame))

    def close_result(self) -> None:
        if self.result_w is not None:
            os.close(self.result_w)
            self.result_w = None

    def session(self, cells=((0, "x = 1"), (1, "y = 2")), names=("x",), limits=Limits(), probes=None):
        def make_probes(values):
            self.probe_calls.append(values)
            return probes if probes is not None else {}

        job = {"type": "job", "cells": [list(cell) for cell in cells], "names": list(names)}
        started = time.monotonic()
        return Session(self.process, self.result_r, self.request_w, job, make_probes, limits, self.result, started)

    def run(self, **options) -> RunResult:
        return self.session(**options).run()

    def sent(self) -> list:
        """Frames the session sent to the driver."""
        os.set_blocking(self.request_r, False)
        data = b""
        try:
            while chunk := os.read(self.request_r, 1 << 16):
                data += chunk
        except BlockingIOError:
            pass
        return wire.FrameReader().feed(data)

    def close(self) -> None:
        self.close_result()
        for stream in (self.process.stdout, self.process.stderr):
            stream.close()  # first: a process still writing then stops on a broken pipe
        self.process.wait()
        for fd in (self.result_r, self.request_r, self.request_w):
            try:
                os.close(fd)
            except OSError:
                pass


@pytest.fixture
def channels():
    made = []

    def make(script="", isolation="landlock"):
        made.append(Channels(script, isolation))
        return made[-1]

    yield make
    for each in made:
        each.close()


X = {"kind": "number", "value": 1.0, "integer": True}


def test_a_whole_run_records_cells_values_and_calls_and_answers_values_with_probes(channels):
    run = channels()
    calls = {"double": [{"result": X}]}
    run.write(
        {"type": "ready", "started": 1.0, "imported": 2.0},
        {"type": "cell", "index": 0},
        {"type": "cell_done", "index": 0, "status": "ok", "error": None},
        {"type": "cell", "index": 1},
        {"type": "cell_done", "index": 1, "status": "error", "error": "NameError: z"},
        {"type": "values", "values": {"x": X}, "defined_in": {"x": 0}},
        {"type": "calls", "calls": calls},
        {"type": "done"},
    )
    run.close_result()
    result = run.run(probes={"double": [[X]]})
    assert result.fatal is None and result.grader_error is None
    assert result.cells == [
        {"index": 0, "status": "ok", "error": None},
        {"index": 1, "status": "error", "error": "NameError: z"},
    ]
    assert result.values == {"x": X} and result.defined_in == {"x": 0} and result.calls == calls
    assert run.probe_calls == [{"x": X}]
    job, probes = run.sent()
    assert job["type"] == "job" and probes == {"type": "probes", "calls": {"double": [[X]]}}
    # the driver's clock before our launch is clamped to it: the profile's first step is 0
    assert result.timings["start"] == 0.0 and set(result.timings) >= {"cells", "probes", "teardown"}


def test_cell_frames_count_only_for_cells_the_grader_sent_and_statuses_are_normalised(channels):
    run = channels()
    session = run.session()
    for frame in (
        {"type": "cell_done", "index": 7, "status": "ok"},  # not sent
        {"type": "cell_done", "index": "0", "status": "ok"},  # not an int
        {"type": "cell_done", "index": True, "status": "ok"},  # a bool is no index
        {"type": "cell_done", "index": 0, "status": "passed", "error": "e" * 5000},
    ):
        assert session.on_frame(frame) is False
    assert session.cell_status == {0: {"index": 0, "status": "error", "error": "e" * 1000}}


def test_values_and_calls_are_taken_once_and_only_as_dicts(channels):
    run = channels()
    session = run.session()
    session.on_frame({"type": "values", "values": ["x"]})
    assert not session.got_values and run.probe_calls == []
    session.on_frame({"type": "values", "values": {"x": X}, "defined_in": "cell 0"})
    session.on_frame({"type": "values", "values": {"x": {"kind": "none"}}})
    assert run.result.values == {"x": X} and run.result.defined_in == {} and len(run.probe_calls) == 1
    session.on_frame({"type": "calls", "calls": {"f": []}})
    session.on_frame({"type": "calls", "calls": {"g": []}})
    assert run.result.calls == {"f": []}


def test_frames_of_no_known_type_are_ignored(channels):
    session = channels().session()
    for frame in (["cell"], None, {"type": ["cell"]}, {"type": "__init__"}, {"type": "job"}, {}):
        assert session.on_frame(frame) is False
    assert not session.sandbox_started and session.cell_status == {}


def test_a_grader_error_is_believed_before_student_code_only(channels):
    early = channels()
    early.write({"type": "grader_error", "reason": "Landlock refused"}, {"type": "cell", "index": 0})
    result = early.run()
    assert result.grader_error == "Landlock refused" and result.fatal is None and result.cells == []

    late = channels()
    late.write({"type": "cell", "index": 0}, {"type": "grader_error", "reason": "claimed by the student"})
    late.close_result()
    result = late.run()
    assert result.grader_error is None
    assert result.fatal.startswith("the Python process ended early in cell 1")


def test_the_relays_word_on_how_the_student_half_ended(channels):
    crashed = channels()
    crashed.write({"type": "cell", "index": 1}, {"type": "ended", "exit_code": -11, "corrupted": False})
    crashed.close_result()
    assert crashed.run().fatal == "the Python process crashed (segmentation fault) in cell 2"

    corrupted = channels()
    corrupted.write({"type": "cell", "index": 0}, {"type": "ended", "exit_code": -9, "corrupted": True})
    corrupted.close_result()
    assert corrupted.run().fatal == (
        "the notebook wrote into the grader's internal pipe, so nothing more it defined could be read (in cell 1)"
    )


def test_a_frame_longer_than_its_cap_is_refused_on_its_header(channels):
    run = channels()
    run.write({"type": "cell", "index": 0}, struct.pack(">I", wire.MAX_SMALL_FRAME_BYTES + 1))
    result = run.run(names=())
    assert result.fatal.startswith("the grading channel was corrupted (frame of ")
    assert "exceeds the" in result.fatal


def test_a_cell_past_its_wall_clock_backstop_is_stopped(channels):
    run = channels()
    run.write({"type": "cell", "index": 0})  # and never done: the result pipe stays open
    limits = Limits(cell_seconds=0.05, cell_grace_seconds=0.05, wall_factor=1.0, total_seconds=30)
    result = run.run(limits=limits)
    assert result.fatal == "cell 1 was still running after 0.1 s and could not be interrupted, so grading stopped there"
    assert result.cells == [{"index": 0, "status": "timeout", "error": "killed by the grader"}]


def test_a_sandbox_that_ends_before_any_cell_is_the_graders_fault(channels):
    run = channels("import sys; sys.stderr.write('bwrap: no namespaces'); sys.exit(1)", isolation="bubblewrap")
    run.close_result()
    result = run.run()
    assert result.fatal is None
    assert result.grader_error.startswith(
        "the bubblewrap sandbox ended before running the notebook (exit status 1): bwrap: no namespaces; install bubblewrap"
    )


def test_output_beyond_the_limit_ends_the_run_and_only_the_start_is_kept(channels):
    run = channels("import sys; sys.stdout.write('a' * (3 << 20)); sys.stdout.flush()")
    run.write({"type": "cell", "index": 0})
    result = run.run(limits=Limits(max_output_bytes=1 << 20, kept_output_bytes=10))
    assert result.fatal == "the notebook printed more than 1 MiB, so grading stopped"
    assert result.stdout.startswith("a" * 10 + "\n[... ") and result.stdout.endswith(" more bytes not kept]")
