"""Run one submission's cells in an isolated process, supervised from outside.

Isolation tiers, strongest first (`auto` takes the first that works here; every report names
the tier it got; docs/DEPLOYMENT.md says which hosts offer which):
  * "bubblewrap": new user, pid, net, ipc, uts and cgroup namespaces; read-only system and
    Python; nothing of the course visible but the driver and the public helper modules the
    release gives every student; private /tmp; scrubbed environment; `python -I`. Processes
    are capped by RLIMIT_NPROC set inside the new user namespace, where it counts only the
    sandbox's own processes.
  * "landlock", for hosts without user namespaces (Docker, Kubernetes pods): no namespaces,
    but the driver confines itself before any student code exists (sandbox_driver/confine.py):
    a Landlock ruleset (read-only Python, system libraries, driver and public helpers; writes
    only to a private scratch directory; no TCP; signals and abstract sockets scoped), a
    seccomp filter (no socket() of any family, ptrace, process_vm_*, mount, namespaces,
    keyrings, bpf, io_uring, ...), uid 65534 when the grader is root, and in the student half
    no new processes at all (threads only) and signals only to itself. That is its process cap,
    exact and independent of the user's other processes.
  * "unisolated": a plain process in a temporary directory with a scrubbed environment,
    `python -I` and the resource limits; student code has the grader user's rights. For
    self-checks anywhere (macOS included); instructor grading refuses it unless allowed.
All tiers: rlimits set by the driver itself (address space, file size, open files, CPU time, no
core dumps), and where this host lets us create one, a pids, memory and cpu cgroup (v1, or a
delegated v2 subtree) that is killed as a whole and gives each sandbox an equal CPU share.

Warm interpreters (warm.py; `warm_unavailable` says where not): in the bubblewrap and landlock
tiers each worker keeps a zygote with numpy and the driver imported, and each submission runs in
a child forked from it that confines itself as the landlock tier does (its own scratch folder,
cgroup, uid, Landlock, seccomp, one process) before it reads its job; docs/DEPLOYMENT.md says
what successive submissions then share. `AUTOGRADER_WARM=0`: a fresh sandbox for each.

The supervisor (this module, in the grader's process) owns every deadline: per-cell and
per-submission time is enforced by killing the whole process tree, which student code can
neither catch nor signal. Soft cell limits count CPU time (a slow host or a busy neighbour
does not push a correct cell over), with wall-clock backstops `Limits.wall_factor` times
longer. It reads only length-prefixed frames from a dedicated pipe, each capped in size on its
header before it is read; student stdout and stderr are drained, capped and kept for the
report, never interpreted. A sandbox that cannot start or be confined as its tier promises is
a grader error (`RunResult.grader_error`), never a student's score.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import pathlib
import selectors
import shlex
import shutil
import signal
import site
import subprocess
import sys
import tempfile
import time
import uuid

from autograder.sandbox import warm
from autograder.sandbox.driver import confine, wire

DRIVER_DIR = pathlib.Path(__file__).resolve().parent / "driver"
# Environment variables passed through: OpenBLAS needs these on some CPUs to compute correctly.
PASS_THROUGH_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


@dataclasses.dataclass(frozen=True)
class Limits:
    """Resource limits for one submission."""

    cell_seconds: float = 10.0  # soft limit: the driver interrupts the cell and goes on
    cell_grace_seconds: float = 5.0  # hard limit = soft + grace: the supervisor kills the run
    call_seconds: float = 5.0  # per call of a submitted function, and per value extracted
    total_seconds: float = 90.0  # the whole submission, hard
    memory_bytes: int = 2 << 30
    max_processes: int = 32
    file_bytes: int = 16 << 20
    kept_output_bytes: int = 64 << 10  # stdout/stderr kept for the report
    max_output_bytes: int = 64 << 20  # printing more than this ends the run
    # Cell and call limits count CPU time; wall-clock limits (for code that waits) are this
    # many times the CPU limits, so sandboxes graded side by side cannot push each other over.
    wall_factor: float = 2.0


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


# -- isolation -------------------------------------------------------------------------------
def _python_roots() -> list[str]:
    """Directories the sandbox needs read-only to run this Python with numpy."""
    roots = {os.path.realpath(sys.base_prefix), os.path.realpath(sys.prefix)}
    for path in site.getsitepackages():
        real = os.path.realpath(path)
        if not any(real.startswith(root + os.sep) for root in roots):
            roots.add(real)
    return sorted(roots)


def _sandbox_env() -> dict[str, str]:
    env = {
        "HOME": "/tmp/home",
        "PATH": "/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "MPLBACKEND": "Agg",
        "MPLCONFIGDIR": "/tmp/home/.matplotlib",
        "IPYTHONDIR": "/tmp/home/.ipython",
        "OPENBLAS_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }
    for name in PASS_THROUGH_ENV:
        if name in os.environ:
            env[name] = os.environ[name]
    return env


def bubblewrap_command(helpers_dir: str, limits: Limits) -> list[str]:
    command = [
        "bwrap",
        "--unshare-all",
        "--unshare-user",
        "--die-with-parent",
        "--new-session",
        "--uid",
        "65534",
        "--gid",
        "65534",
        "--hostname",
        "grader",
        "--disable-userns",
        "--ro-bind",
        "/usr",
        "/usr",
        "--symlink",
        "usr/bin",
        "/bin",
        "--symlink",
        "usr/lib",
        "/lib",
        "--symlink",
        "usr/lib64",
        "/lib64",
        "--symlink",
        "usr/sbin",
        "/sbin",
        "--ro-bind-try",
        "/etc/ld.so.cache",
        "/etc/ld.so.cache",
        "--ro-bind-try",
        "/etc/fonts",
        "/etc/fonts",
        "--ro-bind-try",
        "/etc/localtime",
        "/etc/localtime",
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "--size",
        str(64 << 20),
        "--tmpfs",
        "/tmp",
        "--dir",
        "/tmp/home",
        "--dir",
        "/tmp/work",
        "--chdir",
        "/tmp/work",
        "--ro-bind",
        str(DRIVER_DIR),
        "/grader",
        "--ro-bind",
        helpers_dir,
        "/course",
        "--clearenv",
    ]
    for root in _python_roots():
        command += ["--ro-bind", root, root]
    for name, value in _sandbox_env().items():
        command += ["--setenv", name, value]
    return command


TIERS = ("bubblewrap", "landlock", "unisolated")
SANDBOX_UID = SANDBOX_GID = 65534  # "nobody": the landlock tier's uid when the grader is root
FIXES = {
    "bubblewrap": "install bubblewrap (apt-get install bubblewrap) and allow unprivileged user "
    "namespaces (`python -m autograder docs deployment` prints Ubuntu's AppArmor rule and what containers need)",
    "landlock": "run on Linux 5.13 or later with Landlock enabled (the lsm= boot parameter must "
    "include landlock) and seccomp filters allowed",
    "unisolated": "",
}


class SandboxUnavailable(RuntimeError):
    """No acceptable tier can run here; the message says why each failed and what to do."""


def _tail(data: bytes, limit: int = 400) -> str:
    text = data.decode("utf-8", errors="replace").strip()
    return text[-limit:] if text else ""


@functools.cache
def probe_bubblewrap() -> str | None:
    """None when bubblewrap can create its namespaces here; else why not."""
    if not sys.platform.startswith("linux"):
        return f"bubblewrap needs Linux (this is {sys.platform})"
    if shutil.which("bwrap") is None:
        return "bwrap is not installed (not found on PATH)"
    probe = bubblewrap_command(str(DRIVER_DIR), Limits()) + [sys.executable, "-I", "-S", "-c", "pass"]
    try:
        done = subprocess.run(probe, capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"bwrap could not be run: {error}"
    if done.returncode != 0:
        return f"bwrap cannot create its namespaces here: {_tail(done.stderr) or f'exit {done.returncode}'}"
    return None


def bubblewrap_available() -> bool:
    return probe_bubblewrap() is None


_LANDLOCK_PROBE = """
import os, sys
sys.path.insert(0, sys.argv[1])
import confine, json
plan = json.loads(sys.argv[2])
try:
    confine.confine(plan)
    confine.apply_seccomp(no_new_processes=True)
    open(os.path.join(sys.argv[1], "confine.py"), "rb").close()
    open(os.path.join(sys.argv[3], "written"), "w").close()
    try:
        open(os.path.join(sys.argv[3], "..", "outside"), "w").close()
        raise confine.ConfinementError("a write outside the scratch directory was not refused")
    except PermissionError:
        pass
except (confine.ConfinementError, OSError) as error:
    print(error, file=sys.stderr)
    sys.exit(1)
"""


@functools.cache
def probe_landlock() -> str | None:
    """None when the no-namespace tier can confine a process here as it promises; else why not."""
    if not sys.platform.startswith("linux"):
        return f"Landlock and seccomp are Linux-only (this is {sys.platform})"
    probe_dir = tempfile.mkdtemp(prefix="tc_probe_")
    scratch = os.path.join(probe_dir, "scratch")
    os.mkdir(scratch)
    try:
        if os.geteuid() == 0:
            # The probe drops to the sandbox's uid, which must reach its scratch directory even
            # where it keeps no capability (a Python anyone can read, as a venv of the system's).
            os.chown(probe_dir, SANDBOX_UID, SANDBOX_GID)
            os.chown(scratch, SANDBOX_UID, SANDBOX_GID)
        plan = _confinement_plan("landlock", Limits(), str(DRIVER_DIR), scratch)
        done = subprocess.run(
            [
                sys.executable,
                "-I",
                "-S",
                "-c",
                _LANDLOCK_PROBE,
                str(DRIVER_DIR),
                __import__("json").dumps(plan),
                scratch,
            ],
            capture_output=True,
            timeout=30,
            env=_sandbox_env(),
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"the confinement probe could not run: {error}"
    finally:
        shutil.rmtree(probe_dir, ignore_errors=True)
    if done.returncode != 0:
        return f"the process could not be confined: {_tail(done.stderr) or f'exit {done.returncode}'}"
    return None


def cgroup_status(limits: Limits = Limits()) -> dict:
    """The cgroup a sandbox gets here: {"cgroup": mechanism, "cgroup_not_used": [why not each
    one tried before it]}, as every report's isolation details say. Makes one group and removes
    it at once (through systemd, only the cached probe runs)."""
    groups = _Cgroups(limits)
    groups.kill_and_remove()
    return groups.details()


def tier_status() -> dict[str, str | None]:
    """{tier: None when it works here, else the reason it does not}."""
    return {"bubblewrap": probe_bubblewrap(), "landlock": probe_landlock(), "unisolated": None}


def choose_isolation(requested: str = "auto", allow_unisolated: bool = False) -> str:
    """The tier to use. `auto`: the strongest that works here; the plain-process tier only when
    `allow_unisolated` (self-checks; instructors who say so). Raises SandboxUnavailable."""
    if requested == "fallback":  # the plain-process tier's former name, in older configurations
        requested = "unisolated"
    if requested not in ("auto", *TIERS):
        raise SandboxUnavailable(f"unknown isolation {requested!r} (choose from auto, {', '.join(TIERS)})")
    candidates = TIERS if requested == "auto" else (requested,)
    reasons = []
    for tier in candidates:
        if tier == "unisolated" and not allow_unisolated:
            reasons.append(
                "unisolated: refused for grading others' work (student code would run with "
                "your rights); pass --allow-unisolated (nbgrader: c.SandboxedGrading.allow_unisolated "
                "= True) to accept that"
            )
            continue
        reason = {"bubblewrap": probe_bubblewrap, "landlock": probe_landlock}.get(tier, lambda: None)()
        if reason is None:
            return tier
        reasons.append(f"{tier}: {reason}; to enable it, {FIXES[tier]}")
    raise SandboxUnavailable("no sandbox can run here: " + " | ".join(reasons))


def _readable_by_anyone(path: str) -> bool:
    """Whether an unrelated uid can reach and read `path` (mode bits of it and its parents)."""
    real = pathlib.Path(os.path.realpath(path))
    try:
        for parent in [*reversed(real.parents)]:
            if not parent.stat().st_mode & 0o001:
                return False
        mode = real.stat().st_mode
    except OSError:
        return False
    return bool(mode & 0o004) and (not real.is_dir() or bool(mode & 0o001))


_SYSTEM_READ = (
    "/usr",
    "/bin",
    "/lib",
    "/lib64",
    "/sbin",
    "/etc/ld.so.cache",
    "/etc/localtime",
    "/etc/fonts",
    "/dev/urandom",
)


def _rlimits(tier: str, limits: Limits) -> dict:
    cpu = math.ceil(limits.total_seconds)
    rlimits = {
        "fsize": (limits.file_bytes, limits.file_bytes),
        "core": (0, 0),
        "nofile": (256, 256),
        "as": (limits.memory_bytes + (1 << 30),) * 2,  # headroom: numpy and OpenBLAS reserve address space
        "cpu": (cpu, cpu + math.ceil(limits.cell_grace_seconds)),
    }
    if tier == "bubblewrap" and nproc_counts_per_namespace():
        # Counted per user namespace: inside bubblewrap's, only the sandbox's own processes.
        rlimits["nproc"] = (limits.max_processes, limits.max_processes)
    return rlimits


@functools.cache
def nproc_counts_per_namespace() -> bool:
    """Linux 5.14+ counts RLIMIT_NPROC per user namespace (ucounts); older kernels count every
    process of the real user, which would make the limit depend on the user's other processes."""
    import platform

    try:
        major, minor = (int(part) for part in platform.release().split(".")[:2])
    except ValueError:
        return False
    return sys.platform.startswith("linux") and (major, minor) >= (5, 14)


def _confinement_plan(tier: str, limits: Limits, helpers_dir: str, scratch: str | None) -> dict:
    """What the driver applies to itself before the student half exists (see confine.py)."""
    plan = {"rlimits": _rlimits(tier, limits), "undumpable": True}
    if sys.platform == "darwin":
        plan["optional_rlimits"] = ["as"]  # macOS accepts no address-space limit: self-checks only
    if tier == "landlock":
        readable = [*_python_roots(), *_SYSTEM_READ, str(DRIVER_DIR), helpers_dir]
        if os.geteuid() == 0:
            keep = not all(_readable_by_anyone(path) for path in [*_python_roots(), str(DRIVER_DIR), helpers_dir])
            plan["drop_to"] = [SANDBOX_UID, SANDBOX_GID, keep]
        plan["landlock"] = {"read": readable, "write": [scratch], "read_write_files": ["/dev/null"]}
        plan["seccomp"] = True
    return plan


CGROUP_V1_ROOT = pathlib.Path("/sys/fs/cgroup")  # a v1 host mounts one hierarchy per controller here
SYSTEMD_RUN_SECONDS = 15.0  # systemd-run waits for its manager over D-Bus; a stuck bus must not stall grading


def _cgroup2_mount() -> pathlib.Path | None:
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
    mount = _cgroup2_mount()
    if mount is None:
        return None, "no cgroup v2 hierarchy is mounted"
    own = _own_cgroup2()
    if own is None:
        return None, "this process is in no cgroup v2 group"
    return delegated_v2_group(mount, own)


def _v2_settings(limits: Limits) -> list[tuple[str, str, bool]]:
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
    memory for that leaf and sets its limits (see _Cgroups.wrap). `env`: what systemd-run needs
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
    mount = _cgroup2_mount()
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
        _Cgroups.remove(group / "probe")
    if done.returncode != 0 or group is None:
        return None, f"`{scopes.describe()}` failed: {_tail(done.stderr) or f'exit {done.returncode}'}"
    if group.name != f"{unit}.scope" or mount not in group.parents:
        return None, f"`{scopes.describe()}` put its scope at {group}, not at {unit}.scope under {mount}"
    return dataclasses.replace(scopes, slice_dir=group.parent), ""


class _Cgroups:
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
                for filename, value, required in _v2_settings(limits):
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

    _remove = remove  # its former name

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
        for filename, value, required in _v2_settings(self.limits):
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


# -- supervision -----------------------------------------------------------------------------
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


def run_submission(
    cells: list[tuple[int, str]],
    names: list[str],
    helpers_dir: str,
    make_probes,
    limits: Limits = Limits(),
    isolation: str = "auto",
    environment: dict[str, str] | None = None,
) -> RunResult:
    """Run `cells` ((index, source) pairs) and return the values of `names` and probe calls.

    `environment`: variables set for the cells (the student id a set-up cell draws a variant from).

    `make_probes(values)` is called in the grader's process after the cells ran; it returns
    {function name: [[tagged argument, ...], ...]} for the functions the submission defined.
    """
    isolation = choose_isolation(isolation, allow_unisolated=True)  # policy is the callers' (engine, batch)
    make_probes = _first_answer(make_probes)  # a run repeated in a fresh sandbox gets the same inputs
    not_warm = warm_unavailable(isolation)
    if not_warm is None:
        warm_result = _run_warm(cells, names, helpers_dir, make_probes, limits, isolation, environment)
        if warm_result is not None:
            return warm_result
        not_warm = warm.POOL.failures.get(_warm_key(isolation, helpers_dir, limits), "its zygote died during the run")
    result = RunResult(isolation=isolation)
    started = time.monotonic()
    result_r, result_w = os.pipe()
    request_r, request_w = os.pipe()
    cgroups = _Cgroups(limits)
    result.details = {**cgroups.details(), "interpreter": "fresh", "interpreter_not_warm": not_warm}
    workdir = None
    # `python -I -S`: isolated mode, and no site hooks (.pth code) run inside the sandbox;
    # the driver puts the site-packages directories on sys.path itself.
    driver_args = [str(result_w), str(request_r), *site.getsitepackages()]
    if isolation == "bubblewrap":
        sandbox_helpers = "/course"
        inner = bubblewrap_command(helpers_dir, limits) + [sys.executable, "-I", "-S", "/grader/driver.py"]
        env = {}
        plan = _confinement_plan(isolation, limits, sandbox_helpers, None)
    else:
        sandbox_helpers = helpers_dir
        workdir = tempfile.mkdtemp(prefix="tc_submission_")
        home = os.path.join(workdir, "home")
        os.makedirs(home)
        plan = _confinement_plan(isolation, limits, helpers_dir, workdir)
        if plan.get("drop_to"):
            for path in (workdir, home):
                os.chown(path, SANDBOX_UID, SANDBOX_GID)
        inner = [sys.executable, "-I", "-S", str(DRIVER_DIR / "driver.py")]
        env = {**_sandbox_env(), "HOME": home, "TMPDIR": workdir, "MPLCONFIGDIR": home, "IPYTHONDIR": home}
    command = cgroups.wrap(inner + driver_args)
    env = {**env, **cgroups.env()}
    try:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            pass_fds=(result_w, request_r),
            cwd=workdir,
            env=env,
            start_new_session=True,
        )
    except OSError as error:
        for fd in (result_r, result_w, request_r, request_w):
            os.close(fd)
        cgroups.kill_and_remove()
        if workdir:
            confine.remove_tree(workdir)
        fix = FIXES[isolation] or "check the Python installation"
        result.grader_error = f"the {isolation} sandbox could not be started ({error}); {fix}"
        return result
    os.close(result_w)
    os.close(request_r)
    try:
        job = _job(cells, names, limits, sandbox_helpers, environment, plan, _single_process(isolation, cgroups))
        _supervise(process, result_r, request_w, job, make_probes, limits, result, started)
    finally:
        _kill_tree(process)
        cgroups.kill_and_remove()
        for fd in (result_r, request_w):
            try:
                os.close(fd)
            except OSError:
                pass
        if workdir:
            confine.remove_tree(workdir)
        result.seconds = time.monotonic() - started
        if "teardown" in result.timings:  # to the sandbox's removal, not only to the last frame
            others = sum(seconds for step, seconds in result.timings.items() if step != "teardown")
            result.timings["teardown"] = max(0.0, result.seconds - others)
    return result


# -- warm interpreters ----------------------------------------------------------------------------
WARM_SETTING = "AUTOGRADER_WARM"  # "0": every submission in a fresh sandbox, as before warm interpreters


def warm_unavailable(isolation: str) -> str | None:
    """None when submissions of this tier may run in children forked from a warm interpreter
    (each confined as the landlock tier confines its sandbox, before it reads its job); else why
    each keeps a fresh sandbox. docs/DEPLOYMENT.md states what the submissions then share."""
    if os.environ.get(WARM_SETTING, "1").strip().lower() in ("0", "no", "off", "false"):
        return f"turned off ({WARM_SETTING}=0)"
    if isolation not in ("bubblewrap", "landlock"):
        return "the unisolated tier has no confinement to give a forked child"
    reason = probe_landlock()
    if reason is not None:
        return f"a forked child is confined by Landlock and seccomp, which cannot run here ({reason})"
    if isolation == "landlock" and cgroup_v2_parent()[0] is None and probe_systemd_scope()[0] is not None:
        return "cgroups here come from a systemd scope started with each sandbox, which a forked child cannot join"
    return None


def _job(cells, names, limits: Limits, helpers, environment, plan, no_new_processes: bool) -> dict:
    """The job frame the driver reads before it runs any cell, fresh or warm alike."""
    return {
        "type": "job",
        "cells": [[index, source] for index, source in cells],
        "names": list(names),
        "cell_seconds": limits.cell_seconds,
        "call_seconds": limits.call_seconds,
        "wall_factor": limits.wall_factor,
        "helpers": helpers,
        "environment": dict(environment or {}),
        "confine": plan,
        "no_new_processes": no_new_processes,
    }


def _warm_key(isolation: str, helpers_dir: str, limits: Limits) -> tuple:
    # The driver's folder too: a zygote runs the driver it started with, so another driver (an
    # upgrade in place, a test's broken one) must start zygotes of its own.
    return (isolation, os.path.realpath(helpers_dir), limits, str(DRIVER_DIR))


def _first_answer(make_probes):
    """`make_probes`, answering every call after the first with the first call's request: a run
    repeated after a grader fault draws nothing new (the engine keeps what was drawn)."""
    memo: list = []

    def once(values):
        if not memo:
            memo.append(make_probes(values))
        return memo[0]

    return once


def _start_zygote(isolation: str, helpers_dir: str, limits: Limits) -> warm.Zygote:
    key = _warm_key(isolation, helpers_dir, limits)
    python = [sys.executable, "-I", "-S"]
    if isolation == "bubblewrap":
        # One cgroup for the zygote's life: it holds one child at a time, so this is the group
        # of each submission in turn (the child cannot reach /sys from inside the namespaces).
        cgroups = _Cgroups(limits)
        command = cgroups.wrap(bubblewrap_command(helpers_dir, limits) + [*python, "/grader/driver.py"])
        arguments = ["/course", *site.getsitepackages()]
        zygote = warm.Zygote(key, command, arguments, cgroups.env(), on_close=cgroups.kill_and_remove)
        zygote.cgroup_details = cgroups.details()
        return zygote
    arguments = [helpers_dir, *site.getsitepackages()]
    return warm.Zygote(key, [*python, str(DRIVER_DIR / "driver.py")], arguments, _sandbox_env())


class _WarmProcess:
    """What _supervise reads of a sandbox process, for a child of a zygote: its output streams
    (the exit status is the relay's report)."""

    def __init__(self, stdout_fd: int, stderr_fd: int):
        self.stdout = os.fdopen(stdout_fd, "rb", buffering=0)
        self.stderr = os.fdopen(stderr_fd, "rb", buffering=0)

    def wait(self, timeout=None):
        return None

    def close(self):
        self.stdout.close()
        self.stderr.close()


def _run_warm(cells, names, helpers_dir, make_probes, limits, isolation, environment) -> RunResult | None:
    """One submission in a child of a warm zygote; None when it must run in a fresh sandbox
    instead (no zygote could start, or the zygote failed before the run could finish: the
    student's work is then run again, never judged on a grader's fault)."""
    key = _warm_key(isolation, helpers_dir, limits)
    zygote = warm.POOL.acquire(key, lambda: _start_zygote(isolation, helpers_dir, limits))
    if zygote is None:
        return None
    result = RunResult(isolation=isolation)
    started = time.monotonic()
    in_bubblewrap = isolation == "bubblewrap"
    cgroups = None
    if in_bubblewrap:
        scratch, workdir = f"/tmp/submission-{zygote.served}", None
        sandbox_helpers, driver_dir = "/course", "/grader"
        result.details = dict(zygote.cgroup_details)
    else:
        workdir = scratch = tempfile.mkdtemp(prefix="tc_submission_")
        os.makedirs(os.path.join(workdir, "home"))
        sandbox_helpers, driver_dir = helpers_dir, str(DRIVER_DIR)
        cgroups = _Cgroups(limits)
        result.details = cgroups.details()
    result.details["interpreter"] = f"warm (forked from a zygote, child {zygote.served + 1})"
    home = os.path.join(scratch, "home")
    plan = _confinement_plan("landlock", limits, sandbox_helpers, scratch)
    readable = [path if path != str(DRIVER_DIR) else driver_dir for path in plan["landlock"]["read"]]
    plan["landlock"]["read"] = readable
    if in_bubblewrap:
        plan.pop("drop_to", None)  # already uid 65534 of the sandbox's user namespace
    elif plan.get("drop_to"):
        for path in (scratch, home):
            os.chown(path, SANDBOX_UID, SANDBOX_GID)
    env = {**_sandbox_env(), "HOME": home, "TMPDIR": scratch, "MPLCONFIGDIR": home, "IPYTHONDIR": home}
    pipes = [os.pipe() for _ in range(4)]  # result, request, stdout, stderr
    (result_r, result_w), (request_r, request_w), (out_r, out_w), (err_r, err_w) = pipes
    child_fds = [result_w, request_r, out_w, err_w]
    process = _WarmProcess(out_r, err_r)
    zygote_ok = True
    try:
        try:
            pid = zygote.fork(
                child_fds,
                scratch,
                in_bubblewrap,
                env,
                [str(path / "cgroup.procs") for path in cgroups.paths] if cgroups else [],
            )
        except warm.ZygoteFailed:
            zygote_ok = False
            return None
        finally:
            for fd in child_fds:
                os.close(fd)
        # a forked child is one process: RLIMIT_AS is its memory cap
        job = _job(cells, names, limits, sandbox_helpers, environment, plan, no_new_processes=True)
        _supervise(process, result_r, request_w, job, make_probes, limits, result, started)
    finally:
        if zygote_ok:
            if not in_bubblewrap:  # its own session, and its pid not reused before the zygote reaps it
                try:
                    os.killpg(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            zygote_ok = zygote.reap(remove_scratch=in_bubblewrap)  # waits for them: no polling below
            if zygote_ok:
                warm.POOL.release(zygote)
        if cgroups is not None:
            cgroups.kill_and_remove()
        process.close()
        for fd in (result_r, request_w):
            try:
                os.close(fd)
            except OSError:
                pass
        if workdir:
            confine.remove_tree(workdir)
        result.seconds = time.monotonic() - started
        if "teardown" in result.timings:
            others = sum(seconds for step, seconds in result.timings.items() if step != "teardown")
            result.timings["teardown"] = max(0.0, result.seconds - others)
    if not zygote_ok and "teardown" not in result.timings:
        return None  # the zygote failed before the run finished: the run is repeated afresh
    return result


def _single_process(isolation: str, cgroups: _Cgroups) -> bool:
    """Whether the student half may start no process at all (threads only), by seccomp.

    Always in the landlock tier (its process cap). In bubblewrap without a memory cgroup too:
    RLIMIT_AS binds each process, so only a single process makes it the submission's memory
    cap (else 32 processes could each take the limit); and on kernels where RLIMIT_NPROC is
    not counted per user namespace, since it then cannot be the process cap."""
    if isolation == "landlock":
        return True
    if isolation != "bubblewrap":
        return False
    if nproc_counts_per_namespace() and cgroups.caps("memory"):
        return False
    try:
        confine.seccomp_machine()
    except confine.ConfinementError:
        return False  # no filter for this architecture: processes stay capped by RLIMIT_NPROC
    return True


def _kill_tree(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    for stream in (process.stdout, process.stderr):
        if stream:
            stream.close()


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


def _supervise(process, result_r, request_w, job, make_probes, limits, result, started):
    outputs = {"stdout": _Output(limits.kept_output_bytes), "stderr": _Output(limits.kept_output_bytes)}
    selector = selectors.DefaultSelector()
    selector.register(result_r, selectors.EVENT_READ, "result")
    selector.register(process.stdout, selectors.EVENT_READ, "stdout")
    selector.register(process.stderr, selectors.EVENT_READ, "stderr")
    outbox = _Outbox(request_w, selector)
    # The length cap of the next frame depends on where the protocol is: a values frame may hold
    # one capped value per name, a calls frame one per requested call, anything else is small.
    caps = {"values": wire.MAX_SMALL_FRAME_BYTES + wire.MAX_VALUE_BYTES * len(job["names"]), "calls": 0}
    reader = wire.FrameReader(lambda: max(caps["values"], caps["calls"], wire.MAX_SMALL_FRAME_BYTES))
    received = [0]  # bytes on the result channel; the sum of the caps bounds the whole run
    budget = wire.MAX_SMALL_FRAME_BYTES * (2 * len(job["cells"]) + 8) + caps["values"]
    wall = limits.wall_factor
    total_deadline = started + limits.total_seconds * wall
    cell_deadline = None
    sandbox_started = False  # set by the first frame that student code could have caused
    current_cell = None
    cell_status = {}
    # Frames come from the sandbox, where student code can write anything to this pipe: only
    # cells the grader sent are recorded, and values and calls are taken once, as dicts.
    known_cells = {index for index, _ in job["cells"]}
    got_values = got_calls = False
    ended_code = None
    done = False
    marks = {"launched": started}  # monotonic times of the protocol's steps, for result.timings
    outbox.send(job)

    def fail(message):
        result.fatal = message

    while selector.get_map():
        now = time.monotonic()
        deadline = min(total_deadline, cell_deadline or total_deadline)
        if now >= deadline:
            if done:
                break  # finished; stopped waiting for the last of stdout/stderr
            if cell_deadline is not None and now >= cell_deadline and current_cell is not None:
                fail(
                    f"cell {current_cell + 1} was still running after "
                    f"{limits.cell_seconds * wall + limits.cell_grace_seconds:g} s and could not be "
                    "interrupted, so grading stopped there"
                )
                cell_status[current_cell] = {
                    "index": current_cell,
                    "status": "timeout",
                    "error": "killed by the grader",
                }
            elif not sandbox_started:
                result.grader_error = (
                    f"the {result.isolation} sandbox did not start within "
                    f"{limits.total_seconds * wall:g} s; the machine may be overloaded"
                )
            else:
                fail(f"the notebook ran longer than {limits.total_seconds * wall:g} s in total, so grading stopped")
            break
        for key, _ in selector.select(timeout=max(0.0, deadline - now)):
            if key.data == "request":
                outbox.flush()
                continue
            try:
                data = os.read(key.fileobj if isinstance(key.fileobj, int) else key.fileobj.fileno(), 1 << 16)
            except OSError:
                data = b""
            if not data:
                selector.unregister(key.fileobj)
                continue
            if key.data != "result":
                outputs[key.data].add(data)
                if sum(output.total for output in outputs.values()) > limits.max_output_bytes:
                    fail(f"the notebook printed more than {limits.max_output_bytes >> 20} MiB, so grading stopped")
                    done = True
                    break
                continue
            received[0] += len(data)
            try:
                if received[0] > budget:
                    raise ValueError(f"more than {budget} bytes of frames")
                frames = reader.feed(data)
            except (ValueError, RecursionError) as error:  # RecursionError: JSON nested too deeply
                fail(f"the grading channel was corrupted ({str(error)[:200]})")
                done = True
                break
            for frame in frames:
                kind = frame.get("type") if isinstance(frame, dict) else None
                if kind == "ready" and not sandbox_started and "ready" not in marks:
                    marks["ready"] = time.monotonic()
                    for name in ("started", "imported"):  # the driver's clock: CLOCK_MONOTONIC, as ours
                        value = frame.get(name)
                        if isinstance(value, float) and math.isfinite(value):
                            marks[name] = min(max(value, started), marks["ready"])
                if kind == "grader_error" and not sandbox_started:
                    result.grader_error = str(frame.get("reason"))[:2000]
                    done = True
                    break
                if kind in ("cell", "cell_done", "values", "calls", "done"):
                    sandbox_started = True
                    marks.setdefault("first_cell", time.monotonic())
                if kind in ("values", "done"):
                    marks.setdefault(kind, time.monotonic())
                if kind == "cell":
                    cell = _cell_frame(frame, known_cells)
                    if cell is not None:
                        current_cell = cell[0]
                        cell_deadline = time.monotonic() + limits.cell_seconds * wall + limits.cell_grace_seconds
                elif kind == "cell_done":
                    cell = _cell_frame(frame, known_cells)
                    if cell is not None:
                        index, status, cell_error = cell
                        cell_status[index] = {"index": index, "status": status, "error": cell_error}
                        current_cell, cell_deadline = None, None
                elif kind == "values" and not got_values and isinstance(frame.get("values"), dict):
                    got_values = True
                    result.values = frame["values"]
                    defined_in = frame.get("defined_in")
                    result.defined_in = defined_in if isinstance(defined_in, dict) else {}
                    probes = make_probes(result.values)
                    outbox.send({"type": "probes", "calls": probes})
                    caps["values"] = 0
                    calls = sum(len(args) for args in probes.values()) if isinstance(probes, dict) else 0
                    caps["calls"] = wire.MAX_SMALL_FRAME_BYTES + wire.MAX_VALUE_BYTES * max(1, calls)
                    budget += caps["calls"]
                elif kind == "calls" and not got_calls and isinstance(frame.get("calls"), dict):
                    got_calls = True
                    result.calls = frame["calls"]
                    caps["calls"] = 0
                elif kind == "ended" and isinstance(frame.get("exit_code"), int):
                    ended_code = frame["exit_code"]  # the relay's word on how the student half ended
                    if frame.get("corrupted"):
                        fail(
                            "the notebook wrote into the grader's internal pipe, so nothing more it "
                            "defined could be read"
                            + (f" (in cell {current_cell + 1})" if current_cell is not None else "")
                        )
                elif kind == "done":
                    done = True
                    # drain what is left of stdout/stderr for a moment, then stop
                    selector.unregister(result_r)
                    total_deadline = min(total_deadline, time.monotonic() + 1.0)
                    cell_deadline = None
                    break
            if done and (result.fatal or result.grader_error):
                break
        if done and (result.fatal or result.grader_error):
            break
    selector.close()
    result.timings = _timings(marks, time.monotonic())
    if not done and result.fatal is None and result.grader_error is None and not sandbox_started:
        try:
            code = process.wait(timeout=2.0)
        except subprocess.TimeoutExpired:
            code = None
        stderr = outputs["stderr"].text().strip()
        result.grader_error = (
            f"the {result.isolation} sandbox ended before running the notebook "
            f"(exit status {code})"
            + (f": {stderr[-600:]}" if stderr else "")
            + (f"; {FIXES[result.isolation]}" if FIXES[result.isolation] else "")
        )
    elif not done and result.fatal is None and result.grader_error is None:
        # The pipes close a moment before the process can be reaped: wait for its status briefly.
        try:
            code = process.wait(timeout=max(0.0, min(2.0, total_deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            code = None
        died_from = -code if code is not None and code < 0 else None
        if result.isolation == "bubblewrap" and code is not None and code > 128:
            died_from = code - 128  # bubblewrap exits with 128 + the signal that ended its child
        if ended_code is not None and ended_code < 0:
            died_from = -ended_code  # the student half died; the relay reported it
        where = f" in cell {current_cell + 1}" if current_cell is not None else ""
        if died_from is not None:
            reason = {
                signal.SIGSEGV: "crashed (segmentation fault)",
                signal.SIGKILL: "was killed (out of memory, or past its CPU time limit?)",
                signal.SIGXCPU: f"used more than {math.ceil(limits.total_seconds)} s of CPU time",
            }
            fail(f"the Python process {reason.get(died_from, f'died from signal {died_from}')}{where}")
        else:
            fail(f"the Python process ended early{where} (did the notebook call os._exit or close the grader's pipes?)")
    result.cells = [cell_status[index] for index in sorted(cell_status, key=lambda i: (i is None, i))]
    result.stdout = outputs["stdout"].text()
    result.stderr = outputs["stderr"].text()
