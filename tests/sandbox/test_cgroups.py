"""How the supervisor gets a cgroup for a sandbox, and what it says about it.

The mechanisms, in the order they are tried (cgroups.Cgroups): a group in a cgroup v2
subtree delegated to the grader's own cgroup; a transient systemd scope with Delegate=yes,
through which each sandbox is started; cgroup v1 controllers writable by the grader; none.
Here: the v2 logic against a directory laid out like a cgroupfs (which groups count as
delegated, what is written, how a sandbox joins, how its tree is killed); the systemd probe
falling back, with its reason, when systemd-run is missing, fails, hangs or misplaces its
scope, while the cgroup a run gets stays what it was without the probe; the real systemd-run
where this machine has one that works. tests/sandbox/test_cgroup_v2.py proves the v2 limits on a real
cgroup v2 hierarchy with controllers (opt-in, skipped where there is none).
"""

from __future__ import annotations

import os
import pathlib
import shlex
import signal
import stat
import subprocess
import sys

import pytest

from autograder.sandbox import cgroups
from autograder.sandbox import supervisor as sandbox

LIMITS = sandbox.Limits(max_processes=32, memory_bytes=2 << 30)


@pytest.fixture
def fresh_cgroup_probes():
    """The cgroup probes are cached per process; these tests change what the machine offers."""
    probes = (cgroups.cgroup_v2_parent, cgroups.probe_systemd_scope)
    for probe in probes:
        probe.cache_clear()
    yield
    for probe in probes:
        probe.cache_clear()


def fake_group(path: pathlib.Path, subtree_control: str = "", controllers: str = "cpu memory pids") -> pathlib.Path:
    """A directory with the files of a cgroup v2 group that the supervisor reads."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "cgroup.controllers").write_text(controllers + "\n")
    (path / "cgroup.subtree_control").write_text(subtree_control + "\n")
    (path / "cgroup.procs").write_text("")
    return path


# -- which cgroup v2 group counts as delegated --------------------------------------------------
def test_own_group_with_pids_and_memory_enabled_for_its_children_is_delegated(tmp_path):
    mount = fake_group(tmp_path / "cgroup", "cpu memory pids")
    fake_group(mount / "user.slice", "memory pids")
    own = fake_group(mount / "user.slice" / "grader.scope", "memory pids cpu")
    assert cgroups.delegated_v2_group(mount, "/user.slice/grader.scope") == (own, "")


def test_a_service_in_a_leaf_uses_its_parent(tmp_path):
    mount = fake_group(tmp_path / "cgroup", "cpu memory pids")
    service = fake_group(mount / "grader.service", "memory pids")
    fake_group(mount / "grader.service" / "main")  # where the service keeps its own process
    assert cgroups.delegated_v2_group(mount, "/grader.service/main") == (service, "")


def test_undelegated_groups_are_refused_naming_what_is_missing(tmp_path):
    mount = fake_group(tmp_path / "cgroup", "cpu memory pids")
    fake_group(mount / "user.slice", "pids")
    fake_group(mount / "user.slice" / "session.scope", "")
    parent, reason = cgroups.delegated_v2_group(mount, "/user.slice/session.scope")
    assert parent is None
    assert f"{mount}/user.slice/session.scope: memory and pids not in cgroup.subtree_control" in reason
    assert f"{mount}/user.slice: memory not in cgroup.subtree_control" in reason


def test_the_root_group_has_no_parent_to_fall_back_to(tmp_path):
    mount = fake_group(tmp_path / "cgroup", "")  # a v2 hierarchy whose controllers are all bound to v1
    parent, reason = cgroups.delegated_v2_group(mount, "/")
    assert parent is None and reason.count("not in cgroup.subtree_control") == 1, reason


def test_a_group_we_cannot_write_is_not_delegated(tmp_path, monkeypatch):
    mount = fake_group(tmp_path / "cgroup", "memory pids")
    own = fake_group(mount / "grader.scope", "memory pids")
    writable = os.access
    monkeypatch.setattr(cgroups.os, "access", lambda path, mode: writable(path, mode) and path != own)
    parent, reason = cgroups.delegated_v2_group(mount, "/grader.scope")
    assert parent == mount  # the root group of the fake is still writable
    monkeypatch.setattr(cgroups.os, "access", lambda path, mode: False)
    parent, reason = cgroups.delegated_v2_group(mount, "/grader.scope")
    assert parent is None and "not writable by us" in reason


# -- a sandbox's group in a delegated subtree ------------------------------------------------
@pytest.fixture
def delegated(tmp_path, monkeypatch, fresh_cgroup_probes):
    """A delegated group (in a path with a space, as a shell must quote it) and no systemd."""
    parent = fake_group(tmp_path / "cgroup fs" / "grader.scope", "memory pids cpu")
    monkeypatch.setattr(cgroups, "cgroup_v2_parent", lambda: (parent, ""))
    monkeypatch.setattr(cgroups, "probe_systemd_scope", lambda: pytest.fail("systemd probed despite delegation"))
    return parent


def test_the_v2_group_gets_the_limits(delegated):
    groups = cgroups.Cgroups(LIMITS)
    (path,) = groups.paths
    assert path.parent == delegated and path.name.startswith("tc_grader_") and groups.v2
    assert (path / "pids.max").read_text() == "32"
    assert (path / "memory.max").read_text() == str(2 << 30)
    # written only where the kernel has them (swap accounting, an enabled cpu controller)
    assert not (path / "memory.swap.max").exists() and not (path / "cpu.weight").exists()
    assert groups.caps("pids") and groups.caps("memory")
    assert groups.details()["cgroup"] == f"cgroup v2, delegated ({delegated})"
    assert [name for name, _, required in cgroups.v2_settings(LIMITS) if required] == ["pids.max", "memory.max"]


def test_the_sandbox_joins_its_group_before_it_runs(delegated):
    groups = cgroups.Cgroups(LIMITS)
    (path,) = groups.paths
    command = groups.wrap(["sh", "-c", 'echo "$$"'])
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    # the wrapper wrote its own pid, then exec'd the command in the same process
    assert (path / "cgroup.procs").read_text().split() == [done.stdout.strip()]


def test_killing_the_group_ends_every_process_in_it_even_a_detached_one(delegated):
    groups = cgroups.Cgroups(LIMITS)
    (path,) = groups.paths
    (path / "cgroup.kill").write_text("0")
    daemon = subprocess.Popen(
        [sys.executable, "-c", "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\ntime.sleep(60)"],
        start_new_session=True,
    )
    (path / "cgroup.procs").write_text(f"{daemon.pid}\n")
    try:
        groups.kill_and_remove()
        assert (path / "cgroup.kill").read_text() == "1"  # the kernel's whole-tree kill, asked first
        assert daemon.wait(timeout=5) == -signal.SIGKILL  # and every listed process killed besides
    finally:
        daemon.kill()
        daemon.wait()


def test_without_any_cgroup_the_command_is_unchanged(monkeypatch, fresh_cgroup_probes, tmp_path):
    monkeypatch.setattr(cgroups, "cgroup_v2_parent", lambda: (None, "no cgroup v2 hierarchy is mounted"))
    monkeypatch.setattr(cgroups, "probe_systemd_scope", lambda: (None, "systemd-run is not installed"))
    monkeypatch.setattr(cgroups, "CGROUP_V1_ROOT", tmp_path / "absent")
    groups = cgroups.Cgroups(LIMITS)
    assert groups.paths == [] and groups.wrap(["true"]) == ["true"] and not groups.caps("pids")
    details = groups.details()
    assert details["cgroup"] == "none"
    assert details["cgroup_not_used"][:2] == [
        "no cgroup v2 hierarchy is mounted",
        "systemd scope: systemd-run is not installed",
    ]
    assert details["cgroup_not_used"][2].startswith(f"cgroup v1 under {tmp_path / 'absent'}: pids: ")


# -- systemd scopes: the probe and its fallback ---------------------------------------------
def needs_cgroup2_mount():
    if cgroups.cgroup2_mount() is None:
        pytest.skip("no cgroup v2 hierarchy is mounted here: the systemd probe stops before systemd-run")


def fake_systemd_run(bin_dir: pathlib.Path, script: str) -> pathlib.Path:
    bin_dir.mkdir(exist_ok=True)
    program = bin_dir / "systemd-run"
    program.write_text("#!/bin/sh\n" + script)
    program.chmod(program.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return program


def cgroups_without_systemd(monkeypatch) -> list[str]:
    """The controllers a run gets here when the systemd probe is skipped: today's fallback."""
    with monkeypatch.context() as patch:
        patch.setattr(cgroups, "probe_systemd_scope", lambda: (None, "skipped"))
        groups = cgroups.Cgroups(LIMITS)
        groups.kill_and_remove()
    return groups.controllers()


def assert_falls_back_as_before(monkeypatch, reason_part):
    # As on a host whose cgroup v2 is not delegated to the grader, where the probe is asked.
    monkeypatch.setattr(cgroups, "cgroup_v2_parent", lambda: (None, "not delegated"))
    expected = cgroups_without_systemd(monkeypatch)
    cgroups.probe_systemd_scope.cache_clear()
    groups = cgroups.Cgroups(LIMITS)
    try:
        assert groups.scope is None and groups.controllers() == expected
        assert any(line.startswith("systemd scope: ") and reason_part in line for line in groups.why_not), (
            groups.why_not
        )
    finally:
        groups.kill_and_remove()


def test_without_systemd_run_on_path_the_probe_says_so_and_runs_fall_back(tmp_path, monkeypatch, fresh_cgroup_probes):
    needs_cgroup2_mount()
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    scopes, reason = cgroups.probe_systemd_scope()
    assert scopes is None and reason == "systemd-run is not installed (not found on PATH)"
    assert_falls_back_as_before(monkeypatch, "not found on PATH")


def test_a_failing_systemd_run_gives_its_own_error_and_runs_fall_back(tmp_path, monkeypatch, fresh_cgroup_probes):
    needs_cgroup2_mount()
    calls = tmp_path / "calls"
    fake_systemd_run(
        tmp_path / "bin",
        f'printf "%s\\n" "$@" > {calls}\necho "Failed to connect to bus: No medium found" >&2\nexit 1\n',
    )
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    scopes, reason = cgroups.probe_systemd_scope()
    assert scopes is None and reason.endswith("failed: Failed to connect to bus: No medium found"), reason
    args = calls.read_text().splitlines()
    assert ("--user" in args) == (os.geteuid() != 0)  # the user's manager, or the system's as root
    assert {"--scope", "--collect", "Delegate=yes"} <= set(args) and args[args.index("Delegate=yes") - 1] == "-p"
    assert args[args.index("--") - 1].startswith("--unit=tc-grader-probe-")
    assert_falls_back_as_before(monkeypatch, "No medium found")


def test_a_hanging_systemd_run_is_given_up(tmp_path, monkeypatch, fresh_cgroup_probes):
    needs_cgroup2_mount()
    fake_systemd_run(tmp_path / "bin", "exec sleep 30\n")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    monkeypatch.setattr(cgroups, "SYSTEMD_RUN_SECONDS", 0.5)
    scopes, reason = cgroups.probe_systemd_scope()
    assert scopes is None and "could not be run" in reason and "timed out" in reason, reason


def test_a_scope_somewhere_unexpected_is_refused(tmp_path, monkeypatch, fresh_cgroup_probes):
    needs_cgroup2_mount()
    elsewhere = tmp_path / "elsewhere.scope"
    fake_systemd_run(tmp_path / "bin", f"echo {elsewhere}\n")  # exit 0 without starting a scope
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    scopes, reason = cgroups.probe_systemd_scope()
    assert scopes is None and f"put its scope at {elsewhere}, not at tc-grader-probe-" in reason, reason


def test_the_scope_setup_runs_the_same_steps_as_the_probe(tmp_path, monkeypatch, fresh_cgroup_probes):
    """What a sandbox runs inside its scope, against a fake: quoted paths, the check that
    systemd put it where expected, the leaf, the controllers, the limits, the bus variables
    removed before the driver starts. (The kernel side: tests/sandbox/test_cgroup_v2.py.)"""
    mount = tmp_path / "cgroup fs"
    scopes = cgroups.SystemdScopes(
        ("/usr/bin/systemd-run", "--user", "--scope"), mount, mount / "app.slice", (("XDG_RUNTIME_DIR", "/run/user/1"),)
    )
    monkeypatch.setattr(cgroups, "cgroup_v2_parent", lambda: (None, "not delegated"))
    monkeypatch.setattr(cgroups, "probe_systemd_scope", lambda: (scopes, ""))
    groups = cgroups.Cgroups(LIMITS)
    scope = groups.paths[0].parent
    assert groups.paths[0].name == "sandbox" and scope.parent == mount / "app.slice" and groups.v2
    assert groups.details()["cgroup"] == "cgroup v2 in a systemd scope (systemd-run --user --scope -p Delegate=yes)"
    assert groups.details()["cgroup_not_used"] == ["not delegated"]
    command = groups.wrap(["sh", "-c", 'echo "$$ ${XDG_RUNTIME_DIR:-unset}"'])
    assert command[:4] == ["/usr/bin/systemd-run", "--user", "--scope", f"--unit={scope.name[: -len('.scope')]}"]
    assert groups.env() == {"XDG_RUNTIME_DIR": "/run/user/1"}
    setup, inner = command[command.index("--") + 3], command[command.index("--") + 5 :]
    fake_group(scope)
    # Stand-in for /proc/self/cgroup: the check greps the file it is given.
    rel = f"0::/{scope.relative_to(mount)}"
    assert f"grep -qx {shlex.quote(rel)} /proc/self/cgroup" in setup
    for own, works in (("0::/elsewhere", False), (rel, True)):
        (tmp_path / "self_cgroup").write_text(own + "\n")
        done = subprocess.run(
            ["sh", "-c", setup.replace("/proc/self/cgroup", str(tmp_path / "self_cgroup")), "sh", *inner],
            capture_output=True,
            text=True,
            env={"PATH": os.environ["PATH"], **groups.env()},
        )
        if not works:
            assert done.returncode == 1 and f"systemd did not start this sandbox in {scope}" in done.stderr
            continue
        assert done.returncode == 0, done.stderr
        pid, runtime_dir = done.stdout.split()
        assert runtime_dir == "unset"
        leaf = groups.paths[0]
        assert (leaf / "cgroup.procs").read_text().split() == [pid]
        assert (scope / "cgroup.subtree_control").read_text().split() == ["+cpu"]  # the last write: +cpu
        assert (leaf / "pids.max").read_text().strip() == "32"
        assert (leaf / "memory.max").read_text().strip() == str(2 << 30)


def test_the_real_systemd_run_delegates_a_scope_where_it_works(fresh_cgroup_probes):
    scopes, reason = cgroups.probe_systemd_scope()
    if scopes is None:
        pytest.skip(f"systemd-run cannot delegate a scope here: {reason}")
    assert scopes.slice_dir.is_dir() and scopes.mount in scopes.slice_dir.parents
    groups = cgroups.Cgroups(LIMITS)
    try:
        done = subprocess.run(
            groups.wrap(["sh", "-c", 'cat /proc/self/cgroup; cat "$0"/pids.max', str(groups.paths[0])]),
            capture_output=True,
            text=True,
            env={"PATH": "/usr/bin:/bin", **groups.env()},
            timeout=30,
        )
        assert done.returncode == 0, done.stderr
        assert f"0::/{groups.paths[0].relative_to(scopes.mount)}" in done.stdout.splitlines()
        assert done.stdout.split()[-1] == "32"
    finally:
        groups.kill_and_remove()


def test_a_run_reports_its_cgroup_mechanism(tmp_path):
    result = sandbox.run_submission([(0, "x = 1")], ["x"], str(tmp_path), lambda values: {}, isolation="unisolated")
    assert result.grader_error is None, result.grader_error
    probe = cgroups.Cgroups(LIMITS)
    probe.kill_and_remove()
    assert result.details["cgroup"] == probe.mechanism and result.details["cgroup_not_used"] == list(probe.why_not)
