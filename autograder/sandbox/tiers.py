"""The isolation tiers: which of them works here, and what each promises the sandbox.

Strongest first (`auto` takes the first that works here; every report names the tier it got;
docs/DEPLOYMENT.md says which hosts offer which):
  * "bubblewrap": new user, pid, net, ipc, uts and cgroup namespaces; read-only system and
    Python; nothing of the course visible but the driver and the public helper modules the
    release gives every student; private /tmp; scrubbed environment; `python -I`. Processes
    are capped by RLIMIT_NPROC set inside the new user namespace, where it counts only the
    sandbox's own processes.
  * "landlock", for hosts without user namespaces (Docker, Kubernetes pods): no namespaces,
    but the driver confines itself before any student code exists (driver/confine.py):
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
core dumps); the cgroup each run gets is cgroups.py's.

The probes here run once per process (cached): a small sandbox of each kind is started and must
do what its tier promises, or the tier is not used and its reason is reported.
"""

from __future__ import annotations

import functools
import json
import math
import os
import pathlib
import shutil
import site
import subprocess
import sys
import tempfile

from autograder.sandbox import processes
from autograder.sandbox.cgroups import Cgroups
from autograder.sandbox.driver import confine
from autograder.sandbox.limits import Limits

DRIVER_DIR = pathlib.Path(__file__).resolve().parent / "driver"
# Environment variables passed through: OpenBLAS needs these on some CPUs to compute correctly.
PASS_THROUGH_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def python_roots() -> list[str]:
    """Directories the sandbox needs read-only to run this Python with numpy."""
    roots = {os.path.realpath(sys.base_prefix), os.path.realpath(sys.prefix)}
    for path in site.getsitepackages():
        real = os.path.realpath(path)
        if not any(real.startswith(root + os.sep) for root in roots):
            roots.add(real)
    return sorted(roots)


def sandbox_env() -> dict[str, str]:
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
    for root in python_roots():
        command += ["--ro-bind", root, root]
    for name, value in sandbox_env().items():
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
        return f"bwrap cannot create its namespaces here: {processes.tail(done.stderr) or f'exit {done.returncode}'}"
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
        plan = confinement_plan("landlock", Limits(), str(DRIVER_DIR), scratch)
        done = subprocess.run(
            [
                sys.executable,
                "-I",
                "-S",
                "-c",
                _LANDLOCK_PROBE,
                str(DRIVER_DIR),
                json.dumps(plan),
                scratch,
            ],
            capture_output=True,
            timeout=30,
            env=sandbox_env(),
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"the confinement probe could not run: {error}"
    finally:
        shutil.rmtree(probe_dir, ignore_errors=True)
    if done.returncode != 0:
        return f"the process could not be confined: {processes.tail(done.stderr) or f'exit {done.returncode}'}"
    return None


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


def confinement_plan(tier: str, limits: Limits, helpers_dir: str, scratch: str | None) -> dict:
    """What the driver applies to itself before the student half exists (see confine.py)."""
    plan = {"rlimits": _rlimits(tier, limits), "undumpable": True}
    if sys.platform == "darwin":
        plan["optional_rlimits"] = ["as"]  # macOS accepts no address-space limit: self-checks only
    if tier == "landlock":
        readable = [*python_roots(), *_SYSTEM_READ, str(DRIVER_DIR), helpers_dir]
        if os.geteuid() == 0:
            keep = not all(_readable_by_anyone(path) for path in [*python_roots(), str(DRIVER_DIR), helpers_dir])
            plan["drop_to"] = [SANDBOX_UID, SANDBOX_GID, keep]
        plan["landlock"] = {"read": readable, "write": [scratch], "read_write_files": ["/dev/null"]}
        plan["seccomp"] = True
    return plan


def single_process(isolation: str, cgroups: Cgroups) -> bool:
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
