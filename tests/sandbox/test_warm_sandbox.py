"""Warm interpreters (autograder/sandbox/warm.py): what one submission leaves, the next never sees.

Each test runs submissions one after another in the same zygote (one worker), in every strong
tier this machine offers: files, processes, memory, open handles and environment of one child
are gone for the next; a child that attacks its parents, writes into inherited fds, exhausts its
scratch space or must be killed costs at most a new zygote, never another submission's result;
a zygote that dies mid-run gets the submission run again in a fresh sandbox, never judged on it.
And the reports of a class graded warm are those of the class graded fresh, byte for byte.
The attack suites themselves (tests/sandbox/test_threats.py, tests/sandbox/test_isolation.py) run warm as well.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from autograder.core import engine
from autograder.core.submission import decode_value
from autograder.dev import classroom
from autograder.sandbox import supervisor as sandbox
from autograder.sandbox import warm
from tests.builders import REPOSITORY
from tests.builders.sandbox import LIMITS

pytestmark = pytest.mark.sandbox

STRONG = [
    pytest.param(
        "bubblewrap", marks=pytest.mark.skipif("sandbox.warm_unavailable('bubblewrap') is not None", reason="no warm")
    ),
    pytest.param(
        "landlock", marks=pytest.mark.skipif("sandbox.warm_unavailable('landlock') is not None", reason="no warm")
    ),
]


@pytest.fixture(autouse=True)
def warm_pool(monkeypatch):
    monkeypatch.setenv(sandbox.WARM_SETTING, "1")
    warm.POOL.close()
    yield warm.POOL
    warm.POOL.close()


def run(mini_course, cells, isolation, names=("result",), limits=LIMITS):
    result = sandbox.run_submission(
        list(enumerate([cells] if isinstance(cells, str) else cells)),
        list(names),
        str(mini_course.release / "mini"),
        lambda values: {},
        limits,
        isolation,
    )
    return result, {name: decode_value(result.values.get(name, {"kind": "missing"})) for name in names}


def child_number(result) -> int:
    interpreter = result.details.get("interpreter", "")
    assert interpreter.startswith("warm"), result.details
    return int(interpreter.rsplit(" ", 1)[-1].rstrip(")"))


LEAVE_TRACES = """
import numpy, os, sys, threading, time, builtins
open("left.txt", "w").write("answer key")
open(os.path.join(os.environ["HOME"], "home.txt"), "w").write("answer key")
numpy.secret = 42
builtins.secret = 42
os.environ["LEFT_BEHIND"] = "1"
kept = open("left.txt")
threading.Thread(target=time.sleep, args=(60,), daemon=True).start()
big = bytearray(64 << 20)
cwd, pid = os.getcwd(), os.getpid()
"""

LOOK_FOR_TRACES = """
import numpy, os, sys, threading, builtins
before_cwd, before_pid = {before!r}
found = []
if hasattr(numpy, "secret") or hasattr(builtins, "secret"): found.append("module state")
if "LEFT_BEHIND" in os.environ: found.append("environment")
if os.listdir(".") != ["home"]: found.append("files here: " + ",".join(os.listdir(".")))
for path in (os.path.join(before_cwd, "left.txt"), os.path.join(before_cwd, "home", "home.txt")):
    try:
        open(path).read(); found.append("read " + path)
    except OSError:
        pass
if threading.active_count() != 1: found.append("threads")
if os.getpid() == before_pid and os.getcwd() == before_cwd: found.append("same process and folder")
handles = []
for fd in range(256):
    try:
        os.fstat(fd); handles.append(fd)
    except OSError:
        pass
if len(handles) > 5: found.append("handles " + repr(handles))  # 0-2 and its two pipes to the relay
result = found or ["nothing"]
"""


@pytest.mark.parametrize("isolation", STRONG)
def test_nothing_of_one_submission_is_visible_to_the_next(mini_course, isolation):
    first, values = run(mini_course, LEAVE_TRACES, isolation, names=("cwd", "pid"))
    assert first.fatal is None and first.grader_error is None, (first.fatal, first.grader_error, first.stderr)
    assert [cell["status"] for cell in first.cells] == ["ok"], first.cells
    cwd, pid = values["cwd"], values["pid"]
    second, seen = run(mini_course, LOOK_FOR_TRACES.format(before=(cwd, pid)), isolation)
    assert second.fatal is None, (second.fatal, second.stderr)
    assert child_number(second) == child_number(first) + 1  # the same zygote served both
    assert seen["result"] == ["nothing"], (seen, second.cells)
    if isolation == "landlock":
        assert not os.path.exists(cwd)  # its scratch folder is removed


DRAW = """
import sys
preloaded = "numpy.random" in sys.modules  # before anything here imports it
from draws import draw
result = [preloaded, *draw()]
"""


@pytest.mark.parametrize("isolation", STRONG)
def test_generators_loaded_by_the_zygote_are_seeded_afresh_in_every_child(tmp_path_factory, isolation):
    """The zygote loads numpy.random when the helpers use it (each child would, at 10 ms), and
    Python's random module with it: each child draws from fresh seeds, as a fresh interpreter
    would, never from the generator state in the zygote's memory image that every child shares."""
    helpers = tmp_path_factory.mktemp("helpers")
    (helpers / "draws.py").write_text(
        "import random\n\nimport numpy as np\n\n\n"
        "def draw():\n    return [random.random(), float(np.random.random())]\n"
    )
    draws = []
    for _ in range(2):
        result = sandbox.run_submission([(0, DRAW)], ["result"], str(helpers), lambda values: {}, LIMITS, isolation)
        assert result.fatal is None and result.grader_error is None, (result.fatal, result.grader_error, result.stderr)
        draws.append(decode_value(result.values["result"]))
    assert [preloaded for preloaded, *_ in draws] == [True, True]
    (_, python_first, numpy_first), (_, python_second, numpy_second) = draws
    assert python_first != python_second and numpy_first != numpy_second, draws


ATTACK_PARENTS = """
import os, signal
refused = []
for target in (os.getppid(), 1, os.getpgid(0) or 1, -1):
    try:
        os.kill(target, signal.SIGKILL)
    except OSError:
        refused.append(target)
for fd in range(3, 256):
    try:
        os.write(fd, b"\\x00\\x00\\x10\\x00" + b"{\\"type\\": \\"done\\"}" * 100)
    except OSError:
        pass
try:
    os.closerange(3, 256)
except OSError:
    pass
result = len(refused)
"""


@pytest.mark.parametrize("isolation", STRONG)
def test_attacking_the_parents_or_inherited_fds_costs_nothing_to_the_next_submission(mini_course, isolation):
    attack, _ = run(mini_course, ATTACK_PARENTS, isolation)
    assert attack.grader_error is None, attack.grader_error
    # It spoiled only its own run (the relay saw its pipe corrupted, or it closed its channels).
    assert attack.fatal is not None or attack.values.get("result", {}).get("value") == 4.0, attack
    after, values = run(mini_course, "result = 6 * 7", isolation)
    assert (after.fatal, after.grader_error, values["result"]) == (None, None, 42), (after.fatal, after.stderr)
    assert child_number(after) == child_number(attack) + 1  # its zygote lived on, unharmed


EXHAUST = """
import os, threading, time
for number in range(1000):
    try:
        with open(f"fill{number}", "wb") as stream:
            stream.write(b"x" * (8 << 20))
    except OSError:
        break
hog = []
try:
    while True:
        hog.append(bytearray(64 << 20))
except MemoryError:
    pass
result = len(hog)
"""


@pytest.mark.parametrize("isolation", STRONG)
def test_a_child_that_exhausts_space_and_memory_or_must_be_killed_leaves_the_next_unharmed(mini_course, isolation):
    exhausted, values = run(mini_course, EXHAUST, isolation)
    assert exhausted.grader_error is None
    stuck, _ = run(
        mini_course,
        "import signal\nsignal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGALRM, signal.SIGPROF])\nwhile True:\n    pass\n",
        isolation,
    )
    assert stuck.fatal and "could not be interrupted" in stuck.fatal, stuck.fatal
    after, values = run(
        mini_course, "import os\nresult = 42 if os.listdir('.') == ['home'] else os.listdir('.')", isolation
    )
    assert (after.fatal, after.grader_error, values["result"]) == (None, None, 42), (after.fatal, after.stderr)


@pytest.mark.parametrize("isolation", STRONG)
def test_a_zygote_that_dies_mid_run_costs_a_restart_never_a_result(mini_course, isolation, monkeypatch):
    used = []
    fork = warm.Zygote.fork

    def remembered(self, *args, **kwargs):
        used.append(self)
        return fork(self, *args, **kwargs)

    monkeypatch.setattr(warm.Zygote, "fork", remembered)
    warmed, _ = run(mini_course, "result = 1", isolation)
    assert child_number(warmed) == 1

    def kill_zygote():
        time.sleep(0.5)
        os.killpg(used[-1].process.pid, signal.SIGKILL)

    killer = threading.Thread(target=kill_zygote)
    killer.start()
    result, values = run(mini_course, "import time\ntime.sleep(1.5)\nresult = 6 * 7", isolation)
    killer.join()
    assert (result.fatal, result.grader_error, values["result"]) == (None, None, 42), (result.fatal, result.details)
    # Run to its end by its child, or, where the zygote's death took the child with it
    # (bubblewrap's pid namespace), run again in a fresh sandbox: never a score from a grader fault.
    if isolation == "bubblewrap":
        assert result.details["interpreter"] == "fresh", result.details
        assert result.details["interpreter_not_warm"] == "its zygote died during the run"
    after, values = run(mini_course, "result = 6 * 7", isolation)
    assert values["result"] == 42 and child_number(after) == 1  # a new zygote


@pytest.mark.parametrize("isolation", STRONG)
def test_zygotes_started_ahead_serve_the_first_submissions_and_end_with_the_pool(
    mini_course, isolation, warm_pool, monkeypatch
):
    """The batch grader starts its zygotes before its own imports (sandbox.warm_up): the first
    submission takes one of them, no zygote is started on demand, and those never taken are
    stopped with the pool."""
    helpers = str(mini_course.release / "mini")
    sandbox.warm_up(helpers, LIMITS, isolation, 2)
    ahead = list(warm_pool.starting[sandbox._warm_key(isolation, helpers, LIMITS)])
    assert len(ahead) == 2
    zygotes = [future.result() for future in ahead]  # up (each imported numpy), none serving yet
    on_demand = []
    monkeypatch.setattr(sandbox, "_start_zygote", lambda *args: on_demand.append(args))
    result, values = run(mini_course, "result = 6 * 7", isolation)
    assert values["result"] == 42 and child_number(result) == 1 and on_demand == []
    assert sum(zygote.served for zygote in zygotes) == 1
    assert all(zygote.alive() for zygote in zygotes)
    warm_pool.close()
    assert not any(zygote.alive() for zygote in zygotes)


def test_a_zygote_keeps_no_fd_or_process_of_the_submissions_it_served(mini_course, warm_pool):
    if sandbox.warm_unavailable("landlock") is not None:
        pytest.skip("no warm landlock tier here")
    counts = []
    for number in range(3):
        run(mini_course, f"import os\nkept = open('f{number}', 'w')\nresult = {number}", "landlock")
        (zygote,) = [z for idle in warm_pool.idle.values() for z in idle]
        counts.append(len(os.listdir(f"/proc/{zygote.process.pid}/fd")))
        assert children_of(zygote.process.pid) == []
    assert counts[0] == counts[1] == counts[2] <= 6, counts  # stdin/out/err, its control socket


def children_of(pid: int) -> list[int]:
    found = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as stream:
            found += [int(child) for child in stream.read().split()]
    return found


GRADER = """
import json, os, sys
from autograder.sandbox import supervisor as sandbox, warm
for tier in sys.argv[2:]:
    r = sandbox.run_submission([(0, "x = 1")], ["x"], sys.argv[1], lambda v: {}, sandbox.Limits(), tier)
    assert r.details["interpreter"].startswith("warm"), r.details
print(json.dumps([z.process.pid for idle in warm.POOL.idle.values() for z in idle]), flush=True)
os._exit(0)  # no clean-up at exit: as if killed
"""


def test_the_zygotes_end_with_their_grader(mini_course):
    """A grader process that ends without stopping its zygotes (killed) takes them with it: they
    stop on their closed control socket (and bubblewrap's die-with-parent)."""
    tiers = [tier for tier in ("bubblewrap", "landlock") if sandbox.warm_unavailable(tier) is None]
    if not tiers:
        pytest.skip("no warm tier here")
    done = subprocess.run(
        [sys.executable, "-c", GRADER, str(mini_course.release / "mini"), *tiers],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, sandbox.WARM_SETTING: "1"},
    )
    assert done.returncode == 0, done.stderr
    pids = json.loads(done.stdout.splitlines()[-1])
    assert len(pids) == len(tiers)
    deadline = time.monotonic() + 5
    while any(os.path.exists(f"/proc/{pid}/cmdline") and open(f"/proc/{pid}/cmdline").read() for pid in pids):
        assert time.monotonic() < deadline, pids
        time.sleep(0.1)


def test_warm_and_fresh_grading_give_identical_reports(tmp_path, monkeypatch):
    """The benchmark's class (correct, alternative, wrong, blank and broken work), graded fresh and
    warm: every report (scores, checks, messages, cells) is the same, byte for byte."""
    course = REPOSITORY
    notebooks = [classroom.filled_notebook(course, "attention_heads", "virtual_head")]
    for kind in ("alternatives", "mistakes"):
        for entry in course.library(kind, "attention_heads").values():
            if entry["notebook"] == "virtual_head":
                notebooks.append(classroom.filled_notebook(course, "attention_heads", "virtual_head", entry["cells"]))
    notebooks.append(classroom.filled_notebook(course, "attention_heads", "virtual_head", blank=True))
    requests = []
    for number, nb in enumerate(notebooks):
        path = tmp_path / f"student{number}" / "virtual_head.ipynb"
        path.parent.mkdir()
        path.write_text(json.dumps(nb))
        key = engine.NotebookKey("attention_heads", "virtual_head")
        requests.append(engine.GradeRequest(str(path), f"student{number}", expected=key, student_id=f"s{number}"))
    reports = {}
    for start in ("0", "1"):
        monkeypatch.setenv(sandbox.WARM_SETTING, start)
        graded = engine.grade(course, requests, jobs=2, with_figures=True)
        for report in graded:
            assert report.grader_error is None, report.grader_error
            assert report.isolation_details["interpreter"].startswith("warm" if start == "1" else "fresh")
        reports[start] = [
            json.dumps(
                {**{k: v for k, v in report.to_json().items() if k != "isolation_details"}, "figures": report.figures},
                sort_keys=True,
            )
            + json.dumps([cell.__dict__ for cell in report.cells])
            for report in graded
        ]
    assert len(reports["1"]) == len(notebooks) > 5
    assert reports["0"] == reports["1"]


LOCK_SPACE = """
import os
os.mkdir("locked")
for number in range(3):
    with open(f"locked/fill{number}", "wb") as stream:
        stream.write(b"x" * (15 << 20))
os.chmod("locked", 0)
result = 1
"""

USE_SPACE = """
for number in range(3):
    with open(f"fill{number}", "wb") as stream:
        stream.write(b"x" * (15 << 20))
result = 1
"""


@pytest.mark.parametrize("isolation", STRONG)
def test_a_folder_made_unremovable_is_removed_all_the_same(mini_course, isolation):
    """In bubblewrap the children share the sandbox's 64 MiB /tmp: 45 MiB left behind in a
    folder its owner locked would leave the next child no room."""
    locked, values = run(mini_course, LOCK_SPACE, isolation)
    assert (locked.fatal, values["result"]) == (None, 1), (locked.fatal, locked.cells, locked.stderr)
    after, values = run(mini_course, USE_SPACE, isolation)
    assert (after.fatal, values["result"]) == (None, 1), (after.fatal, after.cells)
    assert child_number(after) == child_number(locked) + 1


def test_the_pool_keeps_a_bounded_number_of_idle_zygotes(tmp_path, mini_course, warm_pool, monkeypatch):
    """A grader moving from course to course (a test session, a service over a term) keeps at
    most IDLE_LIMIT idle interpreters, stopping those idle longest."""
    tier = next((tier for tier in ("landlock", "bubblewrap") if sandbox.warm_unavailable(tier) is None), None)
    if tier is None:
        pytest.skip("no warm tier here")
    monkeypatch.setattr(warm, "IDLE_LIMIT", 2)
    started = []
    start = warm.Zygote.__init__

    def remembered(self, *args, **kwargs):
        start(self, *args, **kwargs)
        started.append(self)

    monkeypatch.setattr(warm.Zygote, "__init__", remembered)
    for number in range(4):
        helpers = tmp_path / f"helpers{number}"
        helpers.mkdir()
        result = sandbox.run_submission([(0, "x = 1")], ["x"], str(helpers), lambda values: {}, LIMITS, tier)
        assert child_number(result) == 1
        idle = [zygote for zygotes in warm_pool.idle.values() for zygote in zygotes]
        assert len(idle) == min(number + 1, 2), idle
    kept = {zygote.key[1] for zygotes in warm_pool.idle.values() for zygote in zygotes}
    assert kept == {str(tmp_path / "helpers2"), str(tmp_path / "helpers3")}
    assert [zygote.alive() for zygote in started] == [False, False, True, True]  # the others stopped
