"""Run one submission's cells in an isolated process, supervised from outside.

This module is the sandbox's entry: `run_submission` picks the isolation tier (tiers.py), gives
the run its cgroup (cgroups.py), starts the sandbox (a fresh one, or a child of a warm
interpreter) and hands it to a Session (session.py), which speaks the driver's protocol and
owns every deadline; the process tree is killed as a whole afterwards (processes.py).

Warm interpreters (warm.py; `warm_unavailable` says where not): in the bubblewrap and landlock
tiers each worker keeps a zygote with numpy and the driver imported, and each submission runs in
a child forked from it that confines itself as the landlock tier does (its own scratch folder,
cgroup, uid, Landlock, seccomp, one process) before it reads its job; docs/DEPLOYMENT.md says
what successive submissions then share. `AUTOGRADER_WARM=0`: a fresh sandbox for each.

The supervisor (in the grader's process) owns every deadline: per-cell and per-submission time
is enforced by killing the whole process tree, which student code can neither catch nor signal.
Soft cell limits count CPU time (a slow host or a busy neighbour does not push a correct cell
over), with wall-clock backstops `Limits.wall_factor` times longer. It reads only
length-prefixed frames from a dedicated pipe, each capped in size on its header before it is
read; student stdout and stderr are drained, capped and kept for the report, never interpreted.
A sandbox that cannot start or be confined as its tier promises is a grader error
(`RunResult.grader_error`), never a student's score.
"""

from __future__ import annotations

import functools
import os
import signal
import site
import subprocess
import sys
import tempfile
import time

from autograder.sandbox import cgroups, processes, tiers, warm
from autograder.sandbox.cgroups import Cgroups, cgroup_status
from autograder.sandbox.driver import confine
from autograder.sandbox.limits import Limits
from autograder.sandbox.session import RunResult, Session
from autograder.sandbox.tiers import (
    DRIVER_DIR,
    FIXES,
    PASS_THROUGH_ENV,
    SANDBOX_GID,
    SANDBOX_UID,
    TIERS,
    SandboxUnavailable,
    bubblewrap_available,
    bubblewrap_command,
    choose_isolation,
    probe_bubblewrap,
    probe_landlock,
    tier_status,
)

__all__ = [  # the sandbox as the grader uses it (tests and tools reach into tiers and cgroups)
    "DRIVER_DIR",
    "FIXES",
    "PASS_THROUGH_ENV",
    "SANDBOX_GID",
    "SANDBOX_UID",
    "TIERS",
    "WARM_SETTING",
    "Limits",
    "RunResult",
    "SandboxUnavailable",
    "bubblewrap_available",
    "bubblewrap_command",
    "cgroup_status",
    "choose_isolation",
    "probe_bubblewrap",
    "probe_landlock",
    "run_submission",
    "tier_status",
    "warm_unavailable",
]


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
    isolation = tiers.choose_isolation(isolation, allow_unisolated=True)  # policy is the callers' (engine, batch)
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
    groups = Cgroups(limits)
    result.details = {**groups.details(), "interpreter": "fresh", "interpreter_not_warm": not_warm}
    workdir = None
    # `python -I -S`: isolated mode, and no site hooks (.pth code) run inside the sandbox;
    # the driver puts the site-packages directories on sys.path itself.
    driver_args = [str(result_w), str(request_r), *site.getsitepackages()]
    if isolation == "bubblewrap":
        sandbox_helpers = "/course"
        inner = tiers.bubblewrap_command(helpers_dir, limits) + [sys.executable, "-I", "-S", "/grader/driver.py"]
        env = {}
        plan = tiers.confinement_plan(isolation, limits, sandbox_helpers, None)
    else:
        sandbox_helpers = helpers_dir
        workdir = tempfile.mkdtemp(prefix="tc_submission_")
        home = os.path.join(workdir, "home")
        os.makedirs(home)
        plan = tiers.confinement_plan(isolation, limits, helpers_dir, workdir)
        if plan.get("drop_to"):
            for path in (workdir, home):
                os.chown(path, tiers.SANDBOX_UID, tiers.SANDBOX_GID)
        inner = [sys.executable, "-I", "-S", str(tiers.DRIVER_DIR / "driver.py")]
        env = {**tiers.sandbox_env(), "HOME": home, "TMPDIR": workdir, "MPLCONFIGDIR": home, "IPYTHONDIR": home}
    command = groups.wrap(inner + driver_args)
    env = {**env, **groups.env()}
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
        groups.kill_and_remove()
        if workdir:
            confine.remove_tree(workdir)
        fix = tiers.FIXES[isolation] or "check the Python installation"
        result.grader_error = f"the {isolation} sandbox could not be started ({error}); {fix}"
        return result
    os.close(result_w)
    os.close(request_r)
    try:
        job = _job(cells, names, limits, sandbox_helpers, environment, plan, tiers.single_process(isolation, groups))
        Session(process, result_r, request_w, job, make_probes, limits, result, started).run()
    finally:
        processes.kill_tree(process)
        groups.kill_and_remove()
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
    reason = tiers.probe_landlock()
    if reason is not None:
        return f"a forked child is confined by Landlock and seccomp, which cannot run here ({reason})"
    if (
        isolation == "landlock"
        and cgroups.cgroup_v2_parent()[0] is None
        and cgroups.probe_systemd_scope()[0] is not None
    ):
        return "cgroups here come from a systemd scope started with each sandbox, which a forked child cannot join"
    return None


def warm_up(helpers_dir: str, limits: Limits, isolation: str, count: int) -> None:
    """Start `count` warm interpreters for submissions with these helpers, limits and tier in the
    background, where warm children may run; each run_submission with the same three takes one."""
    if warm_unavailable(isolation) is None and os.path.isdir(helpers_dir):
        start = functools.partial(_start_zygote, isolation, helpers_dir, limits)
        warm.POOL.prestart(_warm_key(isolation, helpers_dir, limits), start, count)


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
    return (isolation, os.path.realpath(helpers_dir), limits, str(tiers.DRIVER_DIR))


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
        groups = Cgroups(limits)
        command = groups.wrap(tiers.bubblewrap_command(helpers_dir, limits) + [*python, "/grader/driver.py"])
        arguments = ["/course", *site.getsitepackages()]
        zygote = warm.Zygote(key, command, arguments, groups.env(), on_close=groups.kill_and_remove)
        zygote.cgroup_details = groups.details()
        return zygote
    arguments = [helpers_dir, *site.getsitepackages()]
    return warm.Zygote(key, [*python, str(tiers.DRIVER_DIR / "driver.py")], arguments, tiers.sandbox_env())


class _WarmProcess:
    """What a Session reads of a sandbox process, for a child of a zygote: its output streams
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
    groups = None
    if in_bubblewrap:
        scratch, workdir = f"/tmp/submission-{zygote.served}", None
        sandbox_helpers, driver_dir = "/course", "/grader"
        result.details = dict(zygote.cgroup_details)
    else:
        workdir = scratch = tempfile.mkdtemp(prefix="tc_submission_")
        os.makedirs(os.path.join(workdir, "home"))
        sandbox_helpers, driver_dir = helpers_dir, str(tiers.DRIVER_DIR)
        groups = Cgroups(limits)
        result.details = groups.details()
    result.details["interpreter"] = f"warm (forked from a zygote, child {zygote.served + 1})"
    home = os.path.join(scratch, "home")
    plan = tiers.confinement_plan("landlock", limits, sandbox_helpers, scratch)
    readable = [path if path != str(tiers.DRIVER_DIR) else driver_dir for path in plan["landlock"]["read"]]
    plan["landlock"]["read"] = readable
    if in_bubblewrap:
        plan.pop("drop_to", None)  # already uid 65534 of the sandbox's user namespace
    elif plan.get("drop_to"):
        for path in (scratch, home):
            os.chown(path, tiers.SANDBOX_UID, tiers.SANDBOX_GID)
    env = {**tiers.sandbox_env(), "HOME": home, "TMPDIR": scratch, "MPLCONFIGDIR": home, "IPYTHONDIR": home}
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
                [str(path / "cgroup.procs") for path in groups.paths] if groups else [],
            )
        except warm.ZygoteFailed:
            zygote_ok = False
            return None
        finally:
            for fd in child_fds:
                os.close(fd)
        # a forked child is one process: RLIMIT_AS is its memory cap
        job = _job(cells, names, limits, sandbox_helpers, environment, plan, no_new_processes=True)
        Session(process, result_r, request_w, job, make_probes, limits, result, started).run()
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
        if groups is not None:
            groups.kill_and_remove()
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
