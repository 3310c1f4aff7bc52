"""Work run in worker processes (autograder/core/processes.py), with real processes: spawned,
speaking plain data, replaced after their share and when they die, dying with their parent."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from autograder.core import processes

TASKS_MODULE = """
import os
import time

from autograder.core import processes


def _setup(greeting):
    if greeting == "fail":
        raise RuntimeError("no set-up today")
    return {"greeting": greeting}


def _echo(context, value):
    return [context["greeting"], value, os.getpid()]


def _sleep(context, seconds):
    time.sleep(seconds)
    return os.getpid()


def _count(context, n):
    for number in range(n):
        processes.report(number)
    return n


def _fail(context, text):
    raise ValueError(text)


def _noisy(context):
    print("printed by the task")
    os.write(1, b"written to fd 1 by the task\\n")
    return "clean"


TASKS = processes.Tasks(_setup, echo=_echo, sleep=_sleep, count=_count, fail=_fail, noisy=_noisy)
"""


@pytest.fixture
def tasks(tmp_path, monkeypatch):
    """A tasks module of this test's own, importable in the workers (they inherit PYTHONPATH)."""
    (tmp_path / "worker_tasks_for_test.py").write_text(TASKS_MODULE)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])))
    return "worker_tasks_for_test:TASKS"


def _alive(pid: int) -> bool:
    """Whether the process runs (a zombie nobody reaped yet does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    shown = subprocess.run(["ps", "-o", "stat=", "-p", str(pid)], capture_output=True, text=True).stdout.strip()
    return bool(shown) and not shown.startswith("Z")


def _gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return False


def test_tasks_run_in_a_fresh_process_with_plain_data_and_reports_in_order(tasks):
    worker = processes.Worker(tasks, ["hello"])
    reports: list = []
    try:
        pid = worker.start().result(timeout=60)
        assert pid != os.getpid()
        assert worker.submit("echo", {"a": [1, 2.5, None]}).result(timeout=60) == ["hello", {"a": [1, 2.5, None]}, pid]
        # reports reach the caller in order, all of them before the result
        counted = worker.submit("count", 5, on_report=reports.append)
        assert counted.result(timeout=60) == 5 and reports == [0, 1, 2, 3, 4]
        # what a task prints goes to stderr, never among the replies
        assert worker.submit("noisy").result(timeout=60) == "clean"
        with pytest.raises(TypeError):  # only plain data crosses
            worker.submit("echo", object())
        assert worker.in_hand() == 0
    finally:
        worker.close()
    assert _gone_within(pid, 10), "a closed worker's process exits"


def test_a_task_that_raises_fails_its_future_with_the_workers_exception_and_traceback(tasks):
    worker = processes.Worker(tasks, ["hello"])
    try:
        failed = worker.submit("fail", "a bad day")
        with pytest.raises(processes.TaskFailed) as caught:
            failed.result(timeout=60)
        assert str(caught.value) == "a bad day" and repr(caught.value) == "ValueError('a bad day')"
        assert caught.value.kind == "builtins.ValueError"
        assert "in _fail" in str(caught.value.__cause__), "the worker's traceback is the cause"
        assert worker.submit("echo", 1).result(timeout=60)[1] == 1, "the worker goes on"
    finally:
        worker.close()


def test_a_worker_is_replaced_after_its_share_of_work_and_none_is_lost(tasks):
    worker = processes.Worker(tasks, ["hello"], work_per_child=2)
    try:
        futures = [worker.submit("echo", number) for number in range(5)]
        pids = [future.result(timeout=60)[2] for future in futures]
        heavy = worker.submit("echo", "heavy", work=10).result(timeout=60)[2]
        after = worker.submit("echo", "after").result(timeout=60)[2]
    finally:
        worker.close()
    assert [future.result()[1] for future in futures] == [0, 1, 2, 3, 4]
    assert pids[0] == pids[1] != pids[2] == pids[3] != pids[4], f"two units a process: {pids}"
    assert heavy == pids[4] and after != heavy, "a task is counted against the process it went to"
    assert all(_gone_within(pid, 10) for pid in set(pids)), "retired processes exit once their work is done"


def test_a_worker_killed_mid_task_fails_it_as_died_and_the_next_task_gets_a_new_process(tasks):
    worker = processes.Worker(tasks, ["hello"])
    try:
        pid = worker.start().result(timeout=60)
        sleeping = worker.submit("sleep", 60)
        queued = worker.submit("echo", "queued")
        time.sleep(0.5)
        os.kill(pid, signal.SIGKILL)
        for future in (sleeping, queued):
            with pytest.raises(processes.WorkerDied) as caught:
                future.result(timeout=30)
            assert caught.value.status == -signal.SIGKILL and caught.value.why == "stopped (exit status -9)"
        assert str(caught.value) == f"worker process {pid} stopped (exit status -9)"
        assert worker.submit("echo", "next").result(timeout=60)[2] != pid
    finally:
        worker.close()


def test_a_worker_whose_set_up_fails_fails_what_it_is_asked_saying_why(tasks):
    worker = processes.Worker(tasks, ["fail"])
    try:
        with pytest.raises(processes.WorkerDied, match=r"could not be started \(RuntimeError: no set-up today\)"):
            worker.start().result(timeout=60)
        with pytest.raises(processes.WorkerDied, match="no set-up today"):
            worker.submit("echo", 1).result(timeout=60)
    finally:
        worker.close()


def test_the_end_of_its_request_pipe_stops_a_worker_mid_task(tasks):
    """What tells a worker its parent died where the kernel does not (macOS): its requests end."""
    worker = processes.Worker(tasks, ["hello"])
    try:
        pid = worker.start().result(timeout=60)
        sleeping = worker.submit("sleep", 60)
        time.sleep(0.5)
        worker._current.process.stdin.close()  # as a parent's death closes it
        with pytest.raises(processes.WorkerDied):
            sleeping.result(timeout=15)
        assert _gone_within(pid, 5)
    finally:
        worker.close()


def test_close_waits_for_the_tasks_in_hand_but_not_for_a_worker_never_asked_anything_to_start(tasks):
    busy, idle = processes.Worker(tasks, ["hello"]), processes.Worker(tasks, ["hello"])
    sleeping = busy.submit("sleep", 1)
    ready = idle.start()
    busy.close()
    assert sleeping.done() and sleeping.exception() is None
    started = time.monotonic()
    idle.close()
    assert time.monotonic() - started < 5 and ready.done()


PARENT = """
import sys, time
from autograder.core import processes

worker = processes.Worker(sys.argv[1], ["hello"])
print(worker.start().result(timeout=60), flush=True)
if sys.argv[2] == "busy":
    worker.submit("sleep", 120)
print("ready", flush=True)
time.sleep(300)
"""


@pytest.mark.parametrize("state", ["busy", "idle"])
def test_a_worker_dies_with_its_parent_killed_with_sigkill(tasks, state):
    parent = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(PARENT), tasks, state], stdout=subprocess.PIPE, text=True
    )
    try:
        assert parent.stdout is not None
        pid = int(parent.stdout.readline())
        assert parent.stdout.readline() == "ready\n"
        time.sleep(0.5)
        assert _alive(pid)
        parent.kill()
        parent.wait()
        assert _gone_within(pid, 10), f"the {state} worker outlived its parent"
    finally:
        parent.kill()
        parent.wait()
