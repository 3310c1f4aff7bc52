"""cgroup v2 limits proven on a real hierarchy with the pids and memory controllers (opt-in).

The issue's case, on a cgroup v2 host: a submission started 80 processes against a limit of
32 and took 2.5 GiB against 2 GiB. Here the same submissions run in the unisolated tier, whose
only process cap is the cgroup (it sets no RLIMIT_NPROC and, unlike the landlock tier, lets the
student half fork), so nothing but the supervisor's cgroup v2 group can bind them. Each test
also runs its submission once without any cgroup, to show that this machine would let it through.

These tests run only where the grader's own cgroup v2 subtree is delegated
(cgroups.cgroup_v2_parent; the skip reason names what is missing). A host whose pids and
memory controllers are bound to cgroup v1 hierarchies in use cannot offer that without
unmounting them for everyone: there, tests/uml/run.sh boots a throwaway User-Mode Linux kernel
over the host's files (read-only) and runs this file in it, as root of that kernel, with
TC_SCRATCH_CGROUP_KERNEL=1, which also enables the test of the systemd-scope path against an
emulated systemd (tests/uml/systemd-run) that nothing else may run: it writes at the root of
the cgroup hierarchy, as only systemd itself does.
"""

from __future__ import annotations

import os
import pathlib
import uuid

import pytest

from autograder.core.submission import decode_value
from autograder.sandbox import cgroups
from autograder.sandbox import supervisor as sandbox
from tests.builders import TESTS

PARENT, REASON = cgroups.cgroup_v2_parent()
pytestmark = [
    pytest.mark.sandbox,
    pytest.mark.skipif(PARENT is None, reason=f"no delegated cgroup v2 hierarchy with pids and memory: {REASON}"),
]
SCRATCH_KERNEL = os.environ.get("TC_SCRATCH_CGROUP_KERNEL") == "1"
EMULATED_SYSTEMD = TESTS / "uml"
LIMITS = sandbox.Limits(
    max_processes=32,
    memory_bytes=2 << 30,
    cell_seconds=60,
    call_seconds=10,
    total_seconds=120,
    wall_factor=2.0,
)

EIGHTY_PROCESSES = """
import os
release_r, release_w = os.pipe()
children, refused = [], 0
for _ in range(80):
    try:
        pid = os.fork()
    except OSError:
        refused += 1
        continue
    if pid == 0:
        os.close(release_w)
        os.read(release_r, 1)  # held until the parent lets go: all 80 would exist at once
        os._exit(0)
    children.append(pid)
os.close(release_w)
for pid in children:
    os.waitpid(pid, 0)
result = [len(children), refused]
"""

# Five processes of 512 MiB each, every page written; each stays under RLIMIT_AS on its own.
TWO_AND_A_HALF_GIB = """
import os, select, signal, time
ready_r, ready_w = os.pipe()
release_r, release_w = os.pipe()
children = []
for _ in range(5):
    pid = os.fork()
    if pid == 0:
        os.close(ready_r)
        os.close(release_w)
        block = b"\\x01" * (512 << 20)
        os.write(ready_w, b"+")
        os.read(release_r, 1)
        os._exit(0)
    children.append(pid)
os.close(ready_w)
os.close(release_r)
ready, ended, deadline = 0, {}, time.monotonic() + 60
while ready + len(ended) < 5 and time.monotonic() < deadline:
    if select.select([ready_r], [], [], 0.1)[0]:
        ready += len(os.read(ready_r, 5))
    for pid in children:
        if pid not in ended:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                ended[pid] = status
os.close(release_w)
for pid in children:
    if pid not in ended:
        ended[pid] = os.waitpid(pid, 0)[1]
killed = sum(os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL for status in ended.values())
result = [ready, killed]
"""


@pytest.fixture
def no_cgroup(monkeypatch):
    def disable():
        monkeypatch.setattr(cgroups.Cgroups, "__init__", lambda self, limits: setattr(self, "paths", []))

    return disable


def run(tmp_path, code, names=("result",)):
    result = sandbox.run_submission([(0, code)], list(names), str(tmp_path), lambda values: {}, LIMITS, "unisolated")
    assert result.grader_error is None, result.grader_error
    return result


def test_the_sandbox_runs_in_its_own_v2_group_with_the_limits(tmp_path):
    code = """
own = open("/proc/self/cgroup").read().split("0::", 1)[1].split()[0]
group = MOUNT + own
result = [own, open(group + "/pids.max").read().strip(), open(group + "/memory.max").read().strip()]
""".replace("MOUNT", repr(str(cgroups.cgroup2_mount())))
    result = run(tmp_path, code)
    own, pids, memory = decode_value(result.values["result"])
    assert (cgroups.cgroup2_mount() / own.lstrip("/")).parent == PARENT
    assert (pids, memory) == ("32", str(2 << 30))
    assert result.details["cgroup"] == f"cgroup v2, delegated ({PARENT})"


def started_and_refused(result):
    return [int(number) for number in decode_value(result.values["result"])]


def test_80_processes_against_a_limit_of_32(tmp_path, no_cgroup):
    capped = run(tmp_path, EIGHTY_PROCESSES)
    started, refused = started_and_refused(capped)
    print(f"with the v2 group: {started} started, {refused} refused")
    # The relay and the student half are in the group too: at most 30 more processes.
    assert started + refused == 80 and started <= LIMITS.max_processes - 2 and refused >= 50, (started, refused)
    no_cgroup()
    started, refused = started_and_refused(run(tmp_path, EIGHTY_PROCESSES))
    print(f"without a group: {started} started, {refused} refused")
    assert (started, refused) == (80, 0)  # without the group nothing here would have stopped them


def test_two_and_a_half_gib_against_a_limit_of_two(tmp_path, no_cgroup):
    capped = run(tmp_path, TWO_AND_A_HALF_GIB)
    print("with the v2 group:", capped.fatal or f"[blocks held, processes killed] = {started_and_refused(capped)}")
    if capped.fatal is None:
        ready, killed = started_and_refused(capped)
        # 2 GiB holds at most three blocks of 512 MiB beside the driver; the kernel's OOM killer
        # ends the others in the group, never anything outside it.
        assert ready <= 3 and killed >= 2, (ready, killed)
    else:  # the OOM killer chose the student half itself: the run ends, blamed on the notebook
        assert "was killed (out of memory" in capped.fatal, capped.fatal
    no_cgroup()
    free = run(tmp_path, TWO_AND_A_HALF_GIB)
    print("without a group:", free.fatal or f"[blocks held, processes killed] = {started_and_refused(free)}")
    assert free.fatal is None and started_and_refused(free) == [5, 0]


def _processes_with(marker: str) -> list[int]:
    found = []
    for entry in pathlib.Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and marker.encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            pass
    return found


DAEMON = """
import os, signal, sys, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        os.execv(sys.executable, [sys.executable, "-c", "import time\\nwhile True: time.sleep(1)", "MARKER"])
    os._exit(0)
time.sleep(0.5)
result = "left a daemon"
"""


def test_the_group_is_killed_as_a_whole_daemons_included(tmp_path, no_cgroup):
    marker = f"tc_v2_daemon_{uuid.uuid4().hex}"
    try:
        run(tmp_path, DAEMON.replace("MARKER", marker))
        assert _processes_with(marker) == []  # cgroup.kill: the session-leaving daemon went too
        assert not any(PARENT.glob("tc_grader_*")), "the sandbox's group was not removed"
        no_cgroup()
        run(tmp_path, DAEMON.replace("MARKER", marker))
        assert _processes_with(marker) != []  # without the group, the unisolated tier cannot find it
    finally:
        for pid in _processes_with(marker):
            os.kill(pid, 9)


@pytest.mark.skipif(not SCRATCH_KERNEL, reason="emulates systemd at the cgroup root: only in a throwaway kernel")
def test_the_systemd_scope_path_binds_too(tmp_path, monkeypatch):
    """The systemd mechanism end to end against the kernel: the probe, the scope's leaf, its
    limits, the kill. systemd's own part (creating a scope whose group is ours) is emulated by
    tests/uml/systemd-run; the real systemd-run is tested in tests/sandbox/test_cgroups.py where it works."""
    monkeypatch.setattr(cgroups, "cgroup_v2_parent", lambda: (None, "emulating a host that delegates through systemd"))
    monkeypatch.setenv("PATH", f"{EMULATED_SYSTEMD}:{os.environ['PATH']}")
    cgroups.probe_systemd_scope.cache_clear()
    try:
        scopes, reason = cgroups.probe_systemd_scope()
        assert scopes is not None, reason
        capped = run(tmp_path, EIGHTY_PROCESSES)
        assert capped.details["cgroup"].startswith("cgroup v2 in a systemd scope"), capped.details
        started, refused = started_and_refused(capped)
        print(f"in a systemd scope: {started} started, {refused} refused")
        assert started + refused == 80 and started <= LIMITS.max_processes - 2, (started, refused)
        memory = run(tmp_path, TWO_AND_A_HALF_GIB)
        print("in a systemd scope:", memory.fatal or f"[blocks held, processes killed] = {started_and_refused(memory)}")
        assert memory.fatal is not None or started_and_refused(memory)[1] >= 2
        marker = f"tc_v2_scope_daemon_{uuid.uuid4().hex}"
        run(tmp_path, DAEMON.replace("MARKER", marker))
        assert _processes_with(marker) == []
        assert not any(scopes.slice_dir.glob("*.scope/sandbox")), "a sandbox leaf was left behind"
    finally:
        cgroups.probe_systemd_scope.cache_clear()
