"""The cgroup of one sandbox run: pids, memory and cpu limits, killed as a whole.

Where this host lets us create one (tried in order): a group in a cgroup v2 subtree delegated to
this process; a transient systemd scope with Delegate=yes, through which the sandbox is started;
cgroup v1 controllers writable by us. Every report's isolation details name the mechanism used
and why the ones before it were not; without any, the run keeps its rlimits only.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import pathlib
import shlex
import shutil
import signal
import subprocess
import sys
import time
import uuid

from autograder.sandbox import processes
from autograder.sandbox.limits import Limits

CGROUP_V1_ROOT = pathlib.Path("/sys/fs/cgroup")  # a v1 host mounts one hierarchy per controller here
SYSTEMD_RUN_SECONDS = 15.0  # systemd-run waits for its manager over D-Bus; a stuck bus must not stall grading


def cgroup2_mount() -> pathlib.Path | None:
    try:
        for line in pathlib.Path("/proc/self/mountinfo").read_text().splitlines():
            fields = line.split(" - ")
            if len(fields) == 2 and fields[1].split()[0] == "cgroup2":
                return pathlib.Path(fields[0].split()[4])
    except OSError:
        pass
    return None


def _own_cgroup2() -> str | None:
    """This process's group in the cgroup v2 hierarchy (the "0::" line of /proc/self/cgroup)."""
    try:
        lines = pathlib.Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    return next((line[3:] for line in lines if line.startswith("0::")), None)


def delegated_v2_group(mount: pathlib.Path, own: str) -> tuple[pathlib.Path | None, str]:
    """(group under which sandbox cgroups may be created, "") or (None, why not), for a process
    in group `own` of the cgroup v2 hierarchy mounted at `mount`.

    Delegated means: that group (or its parent, where a service keeps itself in a leaf) has the
    pids and memory controllers enabled for its children and is writable by us. Reads only
    cgroup.subtree_control, so any directory laid out like a cgroupfs can stand in for one.
    """
    here = mount / own.lstrip("/")
    candidates = [here] if here == mount else [here, here.parent]
    found = []
    for candidate in candidates:
        try:
            enabled = set((candidate / "cgroup.subtree_control").read_text().split())
        except OSError as error:
            found.append(f"{candidate}: {error.strerror or error}")
            continue
        missing = {"pids", "memory"} - enabled
        if not missing and os.access(candidate, os.W_OK):
            return candidate, ""
        found.append(
            f"{candidate}: "
            + (f"{' and '.join(sorted(missing))} not in cgroup.subtree_control" if missing else "not writable by us")
        )
    return None, f"cgroup v2 is not delegated to this process ({'; '.join(found)})"


@functools.cache
def cgroup_v2_parent() -> tuple[pathlib.Path | None, str]:
    """(directory under which we may create sandbox cgroups, "") or (None, why not)."""
    mount = cgroup2_mount()
    if mount is None:
        return None, "no cgroup v2 hierarchy is mounted"
    own = _own_cgroup2()
    if own is None:
        return None, "this process is in no cgroup v2 group"
    return delegated_v2_group(mount, own)


def v2_settings(limits: Limits) -> list[tuple[str, str, bool]]:
    """(file, value, required) written into a sandbox's cgroup v2 group, in order. The optional
    ones exist only where the kernel accounts swap and where the cpu controller is enabled."""
    return [
        ("pids.max", str(limits.max_processes), True),
        ("memory.max", str(limits.memory_bytes), True),
        ("memory.swap.max", "0", False),
        ("cpu.weight", "100", False),  # an equal CPU share per sandbox, whatever it forks
    ]


@dataclasses.dataclass(frozen=True)
class SystemdScopes:
    """How this host delegates cgroup v2: transient systemd scopes with `Delegate=yes`.

    A process started by `command` runs in a new scope unit whose cgroup (under `slice_dir`)
    belongs to us; inside it the sandbox moves itself into a leaf `sandbox`, enables pids and
    memory for that leaf and sets its limits (see Cgroups.wrap). `env`: what systemd-run needs
    to reach its manager (the user's bus), removed again before the sandbox starts."""

    command: tuple[str, ...]  # systemd-run [--user] --scope ... (without --unit and the command)
    mount: pathlib.Path
    slice_dir: pathlib.Path
    env: tuple[tuple[str, str], ...] = ()

    def run(self, unit: str, command: list[str]) -> list[str]:
        return [*self.command, f"--unit={unit}", "--", *command]

    def describe(self) -> str:
        return " ".join(["systemd-run", *(arg for arg in self.command[1:] if arg in ("--user", "--scope"))])


# Run once inside a probe scope: the same steps as a sandbox's (leaf, controllers, a limit), then
# the scope's group on stdout. The supervisor removes the empty leaf; systemd removes the scope.
_SCOPE_PROBE = r"""
group="$1$(sed -n 's/^0:://p' /proc/self/cgroup)"
fail() { echo "$1" >&2; exit 1; }
mkdir "$group/probe" || fail "could not create a group in the scope $group"
echo $$ > "$group/probe/cgroup.procs" || fail "could not move into $group/probe"
echo "+pids +memory" > "$group/cgroup.subtree_control" || fail "pids and memory cannot be enabled in $group (controllers: $(cat "$group/cgroup.controllers"))"
echo 32 > "$group/probe/pids.max" || fail "could not write $group/probe/pids.max"
echo "$group"
"""


def _scope_command(user: bool) -> tuple[str, ...]:
    program = shutil.which("systemd-run") or "systemd-run"
    return (program, *(("--user",) if user else ()), "--scope", "--quiet", "--collect", "-p", "Delegate=yes")


@functools.cache
def probe_systemd_scope() -> tuple[SystemdScopes | None, str]:
    """(how to start sandboxes in delegated systemd scopes, "") or (None, why not). Runs
    systemd-run once (the user's manager with --user when we are not root, else the system's)
    and checks inside the scope that the pids and memory controllers can be used."""
    if not sys.platform.startswith("linux"):
        return None, f"systemd is Linux-only (this is {sys.platform})"
    mount = cgroup2_mount()
    if mount is None:
        return None, "no cgroup v2 hierarchy is mounted"
    if shutil.which("systemd-run") is None:
        return None, "systemd-run is not installed (not found on PATH)"
    env = tuple(
        (name, os.environ[name]) for name in ("XDG_RUNTIME_DIR", "DBUS_SESSION_BUS_ADDRESS") if name in os.environ
    )
    scopes = SystemdScopes(_scope_command(os.geteuid() != 0), mount, mount, env)
    unit = f"tc-grader-probe-{uuid.uuid4().hex[:12]}"
    try:
        done = subprocess.run(
            scopes.run(unit, ["sh", "-c", _SCOPE_PROBE, "sh", str(mount)]),
            capture_output=True,
            timeout=SYSTEMD_RUN_SECONDS,
            env={"PATH": "/usr/bin:/bin", **dict(env)},
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return None, f"`{scopes.describe()}` could not be run: {error}"
    lines = done.stdout.decode("utf-8", errors="replace").split()
    group = pathlib.Path(lines[-1]) if lines else None
    if group is not None and group.is_absolute():
        Cgroups.remove(group / "probe")
    if done.returncode != 0 or group is None:
        return None, f"`{scopes.describe()}` failed: {processes.tail(done.stderr) or f'exit {done.returncode}'}"
    if group.name != f"{unit}.scope" or mount not in group.parents:
        return None, f"`{scopes.describe()}` put its scope at {group}, not at {unit}.scope under {mount}"
    return dataclasses.replace(scopes, slice_dir=group.parent), ""


class Cgroups:
    """A pids+memory+cpu cgroup for one run, when this machine lets us have one (else inert).

    Tried in order: a group in a cgroup v2 subtree delegated to this process; a transient
    systemd scope with Delegate=yes, through which the sandbox is started (`wrap`); cgroup v1
    controllers writable by us. `mechanism` says which one is used, `why_not` why the ones
    before it were not (both go into the report's isolation details)."""

    v2 = False  # one cgroup v2 group (all controllers) rather than one per v1 controller
    paths: list[pathlib.Path] = []
    scope: tuple[SystemdScopes, str] | None = None  # (how, unit name) when started through systemd-run
    mechanism = "none"
    why_not: tuple[str, ...] = ()

    def __init__(self, limits: Limits):
        self.limits = limits
        self.paths = []
        reasons = []
        name = f"tc_grader_{uuid.uuid4().hex[:12]}"
        parent, reason = cgroup_v2_parent()
        if parent is not None:
            path = parent / name
            try:
                path.mkdir()
                for filename, value, required in v2_settings(limits):
                    if required or (path / filename).exists():
                        (path / filename).write_text(value)
                self.paths, self.v2 = [path], True
                self.mechanism = f"cgroup v2, delegated ({parent})"
                return
            except OSError as error:
                self.remove(path)
                reason = f"cgroup v2 at {parent}: {error}"
        reasons.append(reason)
        scopes, reason = probe_systemd_scope()
        if scopes is not None:
            unit = name.replace("_", "-")
            self.scope = (scopes, unit)
            self.paths, self.v2 = [scopes.slice_dir / f"{unit}.scope" / "sandbox"], True
            self.mechanism = f"cgroup v2 in a systemd scope ({scopes.describe()} -p Delegate=yes)"
            self.why_not = tuple(reasons)
            return
        reasons.append(f"systemd scope: {reason}")
        settings = {
            "pids": {"pids.max": str(limits.max_processes)},
            "memory": {"memory.limit_in_bytes": str(limits.memory_bytes)},
            "cpu": {"cpu.shares": "1024"},  # an equal CPU share per sandbox, whatever it forks
        }
        refused = []
        for controller, files in settings.items():
            path = CGROUP_V1_ROOT / controller / name
            try:
                path.mkdir()
                for filename, value in files.items():
                    (path / filename).write_text(value)
            except OSError as error:
                self.remove(path)
                refused.append(f"{controller}: {error.strerror or error}")
                continue
            self.paths.append(path)
        if self.paths:
            self.mechanism = f"cgroup v1 ({', '.join(self.controllers())})"
        if refused:
            reasons.append(f"cgroup v1 under {CGROUP_V1_ROOT}: {'; '.join(refused)}")
        self.why_not = tuple(reasons)

    @staticmethod
    def remove(path):
        for _ in range(20):  # a group whose last process just exited can be busy for a moment
            try:
                path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.01)

    def controllers(self) -> list[str]:
        return ["v2"] if self.v2 else [path.parent.name for path in self.paths]

    def caps(self, controller: str) -> bool:
        """Whether this run's cgroup caps `controller` ("pids" or "memory")."""
        return self.v2 or controller in self.controllers()

    def details(self) -> dict:
        return {"cgroup": self.mechanism, "cgroup_not_used": list(self.why_not)}

    def env(self) -> dict[str, str]:
        """What the wrapped command needs in its environment beyond the sandbox's own."""
        return dict(self.scope[0].env) if self.scope else {}

    def wrap(self, command: list[str]) -> list[str]:
        """`command`, started inside this run's cgroup (unchanged when there is none)."""
        if not self.paths:
            return command
        if self.scope is None:
            join = "".join(f"echo $$ > {shlex.quote(str(path / 'cgroup.procs'))} && " for path in self.paths)
            return ["sh", "-c", join + 'exec "$@"', "sh", *command]
        scopes, unit = self.scope
        return scopes.run(unit, ["sh", "-c", self._scope_setup(scopes), "sh", *command])

    def _scope_setup(self, scopes: SystemdScopes) -> str:
        """Shell steps run inside the new scope before `exec`: check that systemd put us where
        expected, move into the leaf, enable its controllers, set its limits."""
        leaf = self.paths[0]
        group, quoted = shlex.quote(str(leaf.parent)), shlex.quote(str(leaf))
        expected = shlex.quote(f"0::/{leaf.parent.relative_to(scopes.mount)}")
        lines = [
            'fail() { echo "cgroup v2 in a systemd scope: $1" >&2; exit 1; }',
            f'grep -qx {expected} /proc/self/cgroup || fail "systemd did not start this sandbox in {leaf.parent}"',
            f'mkdir {quoted} || fail "could not create {leaf}"',
            f'echo $$ > {quoted}/cgroup.procs || fail "could not move into {leaf}"',
            f'echo "+pids +memory" > {group}/cgroup.subtree_control || fail "could not enable pids and memory"',
            f"{{ echo +cpu > {group}/cgroup.subtree_control; }} 2>/dev/null",
        ]
        for filename, value, required in v2_settings(self.limits):
            target = f"{quoted}/{filename}"
            write = f'echo {value} > {target} || fail "could not write {filename}"'
            lines.append(write if required else f"if [ -e {target} ]; then {write}; fi")
        names = " ".join(name for name, _ in scopes.env)
        lines.append((f"unset {names}; " if names else "") + 'exec "$@"')
        return "\n".join(lines)

    def kill_and_remove(self) -> None:
        for path in self.paths:
            if self.v2 and (path / "cgroup.kill").exists():
                try:
                    (path / "cgroup.kill").write_text("1")
                except OSError:
                    pass
            for _ in range(50):
                try:
                    pids = [int(pid) for pid in (path / "cgroup.procs").read_text().split()]
                except OSError:
                    pids = []
                if not pids:
                    break
                for pid in pids:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                time.sleep(0.01)
            self.remove(path)


def cgroup_status(limits: Limits = Limits()) -> dict:
    """The cgroup a sandbox gets here: {"cgroup": mechanism, "cgroup_not_used": [why not each
    one tried before it]}, as every report's isolation details say. Makes one group and removes
    it at once (through systemd, only the cached probe runs)."""
    groups = Cgroups(limits)
    groups.kill_and_remove()
    return groups.details()
