"""Run one submission's cells in an isolated process, supervised from outside.

Isolation, strongest available first:
  * "bubblewrap": new user, pid, net, ipc, uts and cgroup namespaces; read-only system and
    Python; nothing of the course visible but the driver and the public helper modules the
    release gives every student; private /tmp; scrubbed environment; `python -I`.
  * "fallback": a temporary working directory, scrubbed environment, `python -I`, resource
    limits and its own session. Weaker: student code runs as the grader's user, so it can read
    and write what that user can, reach the network, and signal (as root, ptrace) the grader's
    processes, the driver's relay included; without a writable cgroup, a child that leaves the
    session survives the run. For machines without bubblewrap only; every report says which
    isolation it got.
Both run under resource limits (address space, file size, open files, no core dumps) and, where
the cgroup v1/v2 controllers are writable, a pids and memory cgroup that is killed as a whole.

The supervisor (this module, in the grader's process) owns every deadline: per-cell and
per-submission wall time are enforced by killing the whole process tree, which student code can
neither catch nor signal. It reads only length-prefixed frames from a dedicated pipe; student
stdout and stderr are drained, capped and kept for the report, never interpreted.
"""
from __future__ import annotations

import dataclasses
import functools
import os
import pathlib
import selectors
import shutil
import signal
import site
import subprocess
import sys
import tempfile
import time
import uuid

from autograder.sandbox.driver import wire

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
    seconds: float = 0.0


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
        "bwrap", "--unshare-all", "--unshare-user", "--die-with-parent", "--new-session",
        "--uid", "65534", "--gid", "65534", "--hostname", "grader", "--disable-userns",
        "--ro-bind", "/usr", "/usr",
        "--symlink", "usr/bin", "/bin", "--symlink", "usr/lib", "/lib",
        "--symlink", "usr/lib64", "/lib64", "--symlink", "usr/sbin", "/sbin",
        "--ro-bind-try", "/etc/ld.so.cache", "/etc/ld.so.cache",
        "--ro-bind-try", "/etc/fonts", "/etc/fonts",
        "--ro-bind-try", "/etc/localtime", "/etc/localtime",
        "--proc", "/proc", "--dev", "/dev",
        "--size", str(64 << 20), "--tmpfs", "/tmp",
        "--dir", "/tmp/home", "--dir", "/tmp/work", "--chdir", "/tmp/work",
        "--ro-bind", str(DRIVER_DIR), "/grader",
        "--ro-bind", helpers_dir, "/course",
        "--clearenv",
    ]
    for root in _python_roots():
        command += ["--ro-bind", root, root]
    for name, value in _sandbox_env().items():
        command += ["--setenv", name, value]
    return command


@functools.lru_cache(maxsize=None)
def bubblewrap_available() -> bool:
    """True when bubblewrap is installed and can create its namespaces on this machine."""
    if shutil.which("bwrap") is None:
        return False
    probe = bubblewrap_command(str(DRIVER_DIR), Limits()) + [sys.executable, "-I", "-S", "-c", "pass"]
    try:
        return subprocess.run(probe, capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def choose_isolation(requested: str = "auto") -> str:
    if requested == "auto":
        return "bubblewrap" if bubblewrap_available() else "fallback"
    if requested == "bubblewrap" and not bubblewrap_available():
        raise RuntimeError("bubblewrap was requested but cannot run here (apt-get install bubblewrap)")
    return requested


class _Cgroups:
    """A pids+memory cgroup for one run, when this machine lets us create one (else inert)."""

    def __init__(self, limits: Limits):
        self.paths: list[pathlib.Path] = []
        name = f"tc_grader_{uuid.uuid4().hex[:12]}"
        settings = {
            "pids": {"pids.max": str(limits.max_processes)},
            "memory": {"memory.limit_in_bytes": str(limits.memory_bytes)},
        }
        for controller, files in settings.items():
            path = pathlib.Path("/sys/fs/cgroup") / controller / name
            try:
                path.mkdir()
                for filename, value in files.items():
                    (path / filename).write_text(value)
            except OSError:
                try:
                    path.rmdir()
                except OSError:
                    pass
                continue
            self.paths.append(path)

    def join_command(self) -> str:
        return "".join(f'echo $$ > {path}/cgroup.procs && ' for path in self.paths)

    def kill_and_remove(self) -> None:
        for path in self.paths:
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
            try:
                path.rmdir()
            except OSError:
                pass


def _rlimit_command(limits: Limits, with_nproc: bool) -> list[str]:
    command = [
        "prlimit",
        f"--fsize={limits.file_bytes}",
        "--core=0",
        "--nofile=256",
        f"--as={limits.memory_bytes + (1 << 30)}",  # headroom: numpy and OpenBLAS reserve address space
    ]
    if with_nproc:
        command.append(f"--nproc={limits.max_processes}")
    return command + ["--"]


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
) -> RunResult:
    """Run `cells` ((index, source) pairs) and return the values of `names` and probe calls.

    `make_probes(values)` is called in the grader's process after the cells ran; it returns
    {function name: [[tagged argument, ...], ...]} for the functions the submission defined.
    """
    isolation = choose_isolation(isolation)
    result = RunResult(isolation=isolation)
    started = time.monotonic()
    result_r, result_w = os.pipe()
    request_r, request_w = os.pipe()
    cgroups = _Cgroups(limits)
    workdir = None
    # `python -I -S`: isolated mode, and no site hooks (.pth code) run inside the sandbox;
    # the driver puts the site-packages directories on sys.path itself.
    driver_args = [str(result_w), str(request_r), *site.getsitepackages()]
    if isolation == "bubblewrap":
        sandbox_helpers = "/course"
        inner = bubblewrap_command(helpers_dir, limits) + [sys.executable, "-I", "-S", "/grader/driver.py"]
        env = {}
    else:
        sandbox_helpers = helpers_dir
        workdir = tempfile.mkdtemp(prefix="tc_submission_")
        os.makedirs(os.path.join(workdir, "home"))
        inner = [sys.executable, "-I", "-S", str(DRIVER_DIR / "driver.py")]
        env = {**_sandbox_env(), "HOME": os.path.join(workdir, "home"),
               "MPLCONFIGDIR": os.path.join(workdir, "home"), "IPYTHONDIR": os.path.join(workdir, "home")}
    # nproc counts every process of the user; only meaningful where the run is not root outside.
    command = _rlimit_command(limits, with_nproc=os.geteuid() != 0) + inner + driver_args
    if cgroups.paths:
        command = ["sh", "-c", cgroups.join_command() + 'exec "$@"', "sh"] + command
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
        result.fatal = f"the grader could not start the sandbox ({error})"
        return result
    os.close(result_w)
    os.close(request_r)
    try:
        _supervise(process, result_r, request_w, cells, names, sandbox_helpers, make_probes, limits, result, started)
    finally:
        _kill_tree(process)
        cgroups.kill_and_remove()
        for fd in (result_r, request_w):
            try:
                os.close(fd)
            except OSError:
                pass
        if workdir:
            shutil.rmtree(workdir, ignore_errors=True)
        result.seconds = time.monotonic() - started
    return result


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
    return (index, status if status in ("ok", "error", "timeout") else "error",
            None if error is None else str(error)[:1000])


def _supervise(process, result_r, request_w, cells, names, helpers, make_probes, limits, result, started):
    job = {
        "type": "job",
        "cells": [[index, source] for index, source in cells],
        "names": list(names),
        "cell_seconds": limits.cell_seconds,
        "call_seconds": limits.call_seconds,
        "helpers": helpers,
    }
    outputs = {"stdout": _Output(limits.kept_output_bytes), "stderr": _Output(limits.kept_output_bytes)}
    selector = selectors.DefaultSelector()
    selector.register(result_r, selectors.EVENT_READ, "result")
    selector.register(process.stdout, selectors.EVENT_READ, "stdout")
    selector.register(process.stderr, selectors.EVENT_READ, "stderr")
    outbox = _Outbox(request_w, selector)
    reader = wire.FrameReader()
    total_deadline = started + limits.total_seconds
    cell_deadline = None
    current_cell = None
    cell_status = {}
    # Frames come from the sandbox, where student code can write anything to this pipe: only
    # cells the grader sent are recorded, and values and calls are taken once, as dicts.
    known_cells = {index for index, _ in cells}
    got_values = got_calls = False
    ended_code = None
    done = False
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
                fail(f"cell {current_cell + 1} was still running after "
                     f"{limits.cell_seconds + limits.cell_grace_seconds:g} s and could not be "
                     "interrupted, so grading stopped there")
                cell_status[current_cell] = {"index": current_cell, "status": "timeout",
                                             "error": "killed by the grader"}
            else:
                fail(f"the notebook ran longer than {limits.total_seconds:g} s in total, so grading stopped")
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
            try:
                frames = reader.feed(data)
            except (ValueError, RecursionError) as error:  # RecursionError: JSON nested too deeply
                fail(f"the grading channel was corrupted ({str(error)[:200]})")
                done = True
                break
            for frame in frames:
                kind = frame.get("type") if isinstance(frame, dict) else None
                if kind == "cell":
                    cell = _cell_frame(frame, known_cells)
                    if cell is not None:
                        current_cell = cell[0]
                        cell_deadline = time.monotonic() + limits.cell_seconds + limits.cell_grace_seconds
                elif kind == "cell_done":
                    cell = _cell_frame(frame, known_cells)
                    if cell is not None:
                        index, status, error = cell
                        cell_status[index] = {"index": index, "status": status, "error": error}
                        current_cell, cell_deadline = None, None
                elif kind == "values" and not got_values and isinstance(frame.get("values"), dict):
                    got_values = True
                    result.values = frame["values"]
                    defined_in = frame.get("defined_in")
                    result.defined_in = defined_in if isinstance(defined_in, dict) else {}
                    outbox.send({"type": "probes", "calls": make_probes(result.values)})
                elif kind == "calls" and not got_calls and isinstance(frame.get("calls"), dict):
                    got_calls = True
                    result.calls = frame["calls"]
                elif kind == "ended" and isinstance(frame.get("exit_code"), int):
                    ended_code = frame["exit_code"]  # the relay's word on how the student half ended
                    if frame.get("corrupted"):
                        fail("the notebook wrote into the grader's internal pipe, so nothing more it "
                             "defined could be read" + (f" (in cell {current_cell + 1})" if current_cell is not None else ""))
                elif kind == "done":
                    done = True
                    # drain what is left of stdout/stderr for a moment, then stop
                    selector.unregister(result_r)
                    total_deadline = min(total_deadline, time.monotonic() + 1.0)
                    cell_deadline = None
                    break
            if done and result.fatal:
                break
        if done and result.fatal:
            break
    selector.close()
    if not done and result.fatal is None:
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
            reason = {signal.SIGSEGV: "crashed (segmentation fault)", signal.SIGKILL: "was killed (out of memory?)"}
            fail(f"the Python process {reason.get(died_from, f'died from signal {died_from}')}{where}")
        else:
            fail(f"the Python process ended early{where} (did the notebook call os._exit or close the grader's pipes?)")
    result.cells = [cell_status[index] for index in sorted(cell_status, key=lambda i: (i is None, i))]
    result.stdout = outputs["stdout"].text()
    result.stderr = outputs["stderr"].text()
