"""Runs one submission's code cells inside the sandbox and reports what they defined.

Two processes: a relay that holds the channels to the grader (argv names the fd carrying frames
to the grader and the fd carrying frames from it) and never runs student code, and a forked
student half that runs the cells (fds 0-2 belong to the student). Protocol, as the grader sees it:
  driver -> {"type": "ready", "started": t, "imported": t}   (monotonic times, for the profile only)
  grader -> {"type": "job", "cells": [[index, source], ...], "names": [...],
             "cell_seconds": float, "call_seconds": float, "helpers": path,
             "environment": {name: str}}   (variables the set-up cells read: the student id)
  driver -> {"type": "cell", "index": i}              before each cell (the supervisor times it)
  driver -> {"type": "cell_done", "index": i, "status": "ok"|"error"|"timeout", "error": str}
  driver -> {"type": "values", "values": {name: tagged value}, "defined_in": {name: index}}
  grader -> {"type": "probes", "calls": {function_name: [[arg, ...], ...]}}   (args tagged)
  driver -> {"type": "calls", "calls": {function_name: [{"result"|"error": ...}, ...]}}
  driver -> {"type": "done"}
  driver -> {"type": "ended", "exit_code": int, "corrupted": bool}   when it ended without "done"

Started as `driver.py zygote ...` it is a warm interpreter instead (see zygote() below and
autograder/sandbox/warm.py): each child it forks speaks the same protocol on its own fds.

Everything the driver needs is bound before student code runs, so a submission that patches
numpy, builtins or this module's globals can only spoil its own report. Nothing it sends can
carry code: see wire.py.
"""

import builtins
import os
import signal
import sys
import time

_STARTED = time.monotonic()  # the interpreter is up; the supervisor's profile splits start from imports

if __name__ == "__main__":
    # Started with `python -I -S`: no site hooks (.pth files) ran; the grader names the
    # site-packages directories to use after the two channel fds (a zygote: after its control
    # fd and helpers folder).
    sys.path.extend(sys.argv[4:] if sys.argv[1] == "zygote" else sys.argv[3:])

import numpy  # noqa: E402 - after the start time, which the profile reads

if __package__:  # imported by the grader (for tests and tooling)
    from . import confine, wire
else:  # run as a script inside the sandbox, where `python -I` puts no script dir on sys.path
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import confine  # type: ignore[no-redef]
    import wire  # type: ignore[no-redef]

    del sys.path[0]

_write = os.write
_read = os.read
_setitimer = signal.setitimer
_signal = signal.signal
_pack = wire.pack_frame
_str = str
_IMPORTED = time.monotonic()
_channels = {"result": 3, "request": 4}  # replaced by the fds named on the command line
# Soft time limits: a CPU-time timer (ITIMER_PROF), so that a busy neighbour slowing this
# sandbox down costs it nothing, and a wall-clock backstop `wall_factor` times longer for code
# that waits instead of computing. The grader's kernel baseline keeps the plain wall timer.
_timers = {"cpu": False, "wall_factor": 1.0}


class CellTimeout(BaseException):
    """Raised inside student code when a cell or call runs past its soft time limit."""


def _on_alarm(signum, frame):
    raise CellTimeout()


def send(message):
    data = _pack(message)
    while data:
        written = _write(_channels["result"], data)
        data = data[written:]


def receive():
    reader = wire.FrameReader()
    while True:
        chunk = _read(_channels["request"], 1 << 16)
        if not chunk:
            raise SystemExit("grader closed the request channel")
        frames = reader.feed(chunk)
        if frames:
            return frames[0]


# The value encoding is the wire format's (the grader encodes probe arguments with it too).
describe_exception = wire.describe_exception
encode_value = wire.encode_value
decode_argument = wire.decode_argument


def run_with_alarm(seconds, function, *args):
    cpu = _timers["cpu"]
    _setitimer(signal.ITIMER_REAL, seconds * _timers["wall_factor"] if cpu else seconds)
    if cpu:
        _setitimer(signal.ITIMER_PROF, seconds)
    try:
        return function(*args)
    finally:
        _setitimer(signal.ITIMER_REAL, 0)
        if cpu:
            _setitimer(signal.ITIMER_PROF, 0)


def refuse_input(prompt=""):
    raise RuntimeError("input() cannot be answered during grading; remove the call")


class GradingShell:
    """Stands in for IPython's shell: magics and shell escapes do nothing during grading."""

    user_ns = None

    def run_line_magic(self, name, line, _stack_depth=1):
        return None

    def run_cell_magic(self, name, line, cell):
        if name in ("time", "capture", "timeit"):
            exec(compile(cell, "<cell magic>", "exec"), self.user_ns)
        return None

    def system(self, command):
        print(f"[grading] shell command not run: !{command}", file=sys.stderr)

    getoutput = system

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


def _flush_student_streams():
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            stream.flush()
        except BaseException:  # noqa: BLE001 - a replaced stream may be anything
            pass


def run_cells(job, namespace):
    names = job["names"]
    defined_in = {}
    before = {name: id(namespace.get(name)) for name in names}
    for index, source in job["cells"]:
        send({"type": "cell", "index": index})
        status, error = "ok", None
        try:
            code = compile(source, f"<cell {index}>", "exec")
            run_with_alarm(job["cell_seconds"], exec, code, namespace)
        except CellTimeout:
            status, error = "timeout", f"the cell ran longer than {job['cell_seconds']:g} s"
        except SystemExit:
            status, error = "error", "the cell called exit(); grading continued with the next cell"
        except BaseException as exception:  # noqa: BLE001
            status, error = "error", describe_exception(exception)
        for name in names:
            if id(namespace.get(name)) != before[name]:
                before[name] = id(namespace.get(name))
                defined_in[name] = index
        _flush_student_streams()
        send({"type": "cell_done", "index": index, "status": status, "error": error})
    return defined_in


def extract(names, namespace, seconds):
    values = {}
    for name in names:
        if name not in namespace:
            values[name] = {"kind": "missing"}
            continue
        try:
            values[name] = run_with_alarm(seconds, encode_value, namespace[name])
        except BaseException as error:  # noqa: BLE001
            values[name] = {"kind": "object", "type": "?", "reason": describe_exception(error)}
    return values


def call_probes(request, namespace, seconds):
    results = {}
    for name, arg_lists in request["calls"].items():
        function = namespace.get(name)
        records = []
        for encoded_args in arg_lists:
            args = [decode_argument(arg) for arg in encoded_args]
            try:
                value = run_with_alarm(seconds, function, *args)
                records.append({"result": run_with_alarm(seconds, encode_value, value)})
            except CellTimeout:
                records.append({"error": f"TimeoutError: the call ran longer than {seconds:g} s"})
            except BaseException as error:  # noqa: BLE001
                records.append({"error": describe_exception(error)})
        results[name] = records
    return results


def serve(job):
    """The student half: runs the cells, then answers the grader's requests. Runs in a child
    process that holds no channel to the supervisor, only pipes to the relay."""
    _signal(signal.SIGALRM, _on_alarm)
    _signal(signal.SIGPROF, _on_alarm)
    _timers.update(cpu=True, wall_factor=float(job.get("wall_factor", 1.0)))
    sys.path.insert(0, job["helpers"])
    environment = job.get("environment") or {}
    os.environ.update({str(k): str(v) for k, v in environment.items() if isinstance(k, str) and isinstance(v, str)})
    builtins.input = refuse_input
    shell = GradingShell()
    namespace = {"__name__": "__main__", "__builtins__": builtins, "get_ipython": lambda: shell}
    shell.user_ns = namespace
    defined_in = run_cells(job, namespace)
    _signal(signal.SIGALRM, _on_alarm)
    _signal(signal.SIGPROF, _on_alarm)
    send(
        {
            "type": "values",
            "values": extract(job["names"], namespace, job["call_seconds"]),
            "defined_in": defined_in,
        }
    )
    request = receive()
    _signal(signal.SIGALRM, _on_alarm)
    _signal(signal.SIGPROF, _on_alarm)
    send({"type": "calls", "calls": call_probes(request, namespace, job["call_seconds"])})
    send({"type": "done"})


def _clean_cell(frame, with_result):
    index = frame.get("index")
    if type(index) is not int:
        return None
    cleaned = {"type": "cell_done" if with_result else "cell", "index": index}
    if with_result:
        status, error = frame.get("status"), frame.get("error")
        cleaned["status"] = status if status in ("ok", "error", "timeout") else "error"
        cleaned["error"] = error[:1000] if isinstance(error, str) else None
    return cleaned


def relay(child, from_child, to_child, supervisor, requests, names):
    """The trusted half: never runs student code. Rebuilds each frame of the student half from
    the known fields of the known types (capped in size before parsing, values only for the
    names asked for, call results only as many as requested) and sends only that to the
    supervisor; passes the grader's probe request down; reports how the student half ended.
    Student code cannot write the supervisor's channel: its process closed that fd before
    running anything, and this process is not dumpable (no ptrace, no /proc/<pid>/fd; set in
    main before the fork)."""
    _channels["result"] = supervisor
    caps = {"next": wire.MAX_SMALL_FRAME_BYTES}
    reader = wire.FrameReader(lambda: caps["next"] if caps["next"] else wire.MAX_SMALL_FRAME_BYTES)
    caps["next"] = wire.MAX_SMALL_FRAME_BYTES + wire.MAX_VALUE_BYTES * len(names)
    corrupted = False
    started = False  # a grader error is believed only before student code could have run
    requested = None
    while True:
        try:
            chunk = _read(from_child, 1 << 16)
            frames = reader.feed(chunk) if chunk else None
        except (OSError, ValueError, RecursionError):
            corrupted, frames = True, None
            os.kill(child, signal.SIGKILL)  # it wrote into the relay's pipe: nothing it says can be read
        if not frames:
            if frames is None:
                break
            continue
        for frame in frames:
            kind = frame.get("type") if isinstance(frame, dict) else None
            if kind == "grader_error" and not started:
                send({"type": "grader_error", "reason": _str(frame.get("reason"))[:2000]})
                continue
            if kind in ("cell", "cell_done"):
                started = True
                cleaned = _clean_cell(frame, kind == "cell_done")
                if cleaned:
                    send(cleaned)
            elif kind == "values" and requested is None:
                started = True
                defined_in = frame.get("defined_in")
                send(
                    {
                        "type": "values",
                        "values": wire.clean_values(frame.get("values"), names),
                        "defined_in": {
                            name: index for name, index in defined_in.items() if name in names and type(index) is int
                        }
                        if isinstance(defined_in, dict)
                        else {},
                    }
                )
                _channels["request"] = requests
                request = receive()
                calls = request.get("calls") if isinstance(request, dict) else None
                requested = {name: len(args) for name, args in calls.items()} if isinstance(calls, dict) else {}
                caps["next"] = wire.MAX_SMALL_FRAME_BYTES + wire.MAX_VALUE_BYTES * max(1, sum(requested.values()))
                data = _pack(request)
                while data:
                    data = data[_write(to_child, data) :]
            elif kind == "calls" and requested is not None:
                send({"type": "calls", "calls": wire.clean_calls(frame.get("calls"), requested)})
                caps["next"] = wire.MAX_SMALL_FRAME_BYTES
            elif kind == "done":
                send({"type": "done"})
    _, status = os.waitpid(child, 0)
    send({"type": "ended", "exit_code": os.waitstatus_to_exitcode(status), "corrupted": corrupted})


def _grader_error(reason):
    """Tell the supervisor the sandbox could not be set up as promised, and stop."""
    send({"type": "grader_error", "reason": _str(reason)[:2000]})
    _flush_student_streams()
    os._exit(70)


def run_job(supervisor, requests, job):
    """Confine this process as `job` says, fork the student half and relay for it."""
    # Confined, and not dumpable, before the student half exists: done after the fork, the
    # first cell could open /proc/<relay>/fd/<supervisor fd> while the relay was still
    # starting. The child inherits all of it.
    try:
        confine.confine(job.get("confine") or {})
    except (confine.ConfinementError, OSError) as error:
        _grader_error(f"the sandbox could not be confined: {error}")
    up_read, up_write = os.pipe()
    down_read, down_write = os.pipe()
    child = os.fork()
    if child == 0:
        for fd in (supervisor, requests, up_read, down_write):
            os.close(fd)
        _channels["result"], _channels["request"] = up_write, down_read
        if job.get("no_new_processes"):
            try:
                confine.apply_seccomp(no_new_processes=True)
            except (confine.ConfinementError, OSError) as error:
                _grader_error(f"the process limit could not be set: {error}")
        try:
            serve(job)
            _flush_student_streams()
        finally:
            os._exit(0)  # skip teardown: student atexit hooks and finalizers decide nothing
    os.close(up_write)
    os.close(down_read)
    relay(child, up_read, down_write, supervisor, requests, list(job.get("names", ())))


def main():
    supervisor, requests = int(sys.argv[1]), int(sys.argv[2])
    _channels["result"], _channels["request"] = supervisor, requests
    send({"type": "ready", "started": _STARTED, "imported": _IMPORTED})
    run_job(supervisor, requests, receive())


# -- the warm interpreter ----------------------------------------------------------------------
# `driver.py zygote FD`: numpy and this module imported once, then one freshly forked process per
# submission. The zygote never runs student code and is never confined; each child is, before
# it reads its job. Control messages (one JSON datagram each, on the unix socket FD, from the
# supervisor only: no child holds it):
#   supervisor -> {"type": "fork", "scratch": path, "make_scratch": bool, "env": {...},
#                  "cgroups": [cgroup.procs path, ...]}   with 4 fds: result, request, stdout, stderr
#   zygote -> {"type": "forked", "pid": int}
#   supervisor -> {"type": "reap"}   zygote -> {"type": "reaped"}   (every process of the child gone)
# Its argv after the control fd: the public helpers' folder (see _preload_helpers) and the site
# directories.
CHILD_FDS = 4


def _send_control(control, message):
    import json

    control.send(json.dumps(message).encode())


def _descendants():
    """Pids of this process's children (with the subreaper flag: orphans of a child come back here)."""
    pids = set()
    try:
        for task in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{task}/children") as stream:
                pids.update(int(pid) for pid in stream.read().split())
    except OSError:
        pass
    return pids


def _reap_all():
    """Kill and reap every process descended from this one, orphans included."""
    while True:
        for pid in _descendants():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            if not _descendants():
                return


def _become_child(control, fds, request):
    """In the forked child, before anything else: only the four fds of this submission remain
    (stdin /dev/null, stdout, stderr, result 3, request 4), its own session, its cgroups, its
    scratch folder and environment; then the same path as a fresh sandbox's driver."""
    import fcntl  # imported by the zygote already, like every module named here

    control.close()
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in fds]
    null = os.open("/dev/null", os.O_RDONLY)
    for target, fd in zip((0, 1, 2, 3, 4), (null, *high[2:], *high[:2])):
        os.dup2(fd, target)
    os.closerange(5, os.sysconf("SC_OPEN_MAX") if hasattr(os, "sysconf") else 1 << 16)
    os.setsid()
    for path in request.get("cgroups") or ():
        with open(path, "w") as stream:  # before the uid switch and Landlock, which would refuse it
            stream.write(str(os.getpid()))
    scratch = request["scratch"]
    os.chdir(scratch)
    os.environ.clear()
    os.environ.update({str(k): str(v) for k, v in (request.get("env") or {}).items()})
    # The zygote's generator state would otherwise be every submission's: seeded afresh, as a
    # fresh interpreter seeds it on import (Python's random module reseeds itself after a fork).
    if "numpy.random" in sys.modules:
        numpy.random.seed()
    now = time.monotonic()
    _channels["result"], _channels["request"] = 3, 4
    send({"type": "ready", "started": now, "imported": now})
    run_job(3, 4, receive())


def _preload_helpers(helpers):
    """Compile the course's public helpers once, and import the standard-library modules they
    import and the numpy submodules they reach as attributes (`np.random`, which numpy loads on
    first use: 10 ms in every child that simulates a head): every child imports them (the first
    cell does), and in the sandbox their folder is read-only, so each would compile them anew. A
    child still imports the helpers itself, from their folder first on its path as in a fresh
    sandbox; only compiling is skipped, while the file is unchanged. Nothing of the helpers runs
    in the zygote, and a child reseeds the generators these modules hold (_become_child)."""
    import ast
    import importlib
    import importlib.machinery as machinery
    import importlib.util
    import sysconfig

    compiled = {}
    imported = set()
    numpy_submodules = set()
    try:
        names = sorted(os.listdir(helpers))
    except OSError:
        names = []
    for name in names:
        path = os.path.join(helpers, name)
        if not name.endswith(".py"):
            continue
        try:
            stat = os.stat(path)
            with open(path, "rb") as stream:
                source = stream.read()
            compiled[path] = (stat.st_mtime_ns, stat.st_size, compile(source, path, "exec", dont_inherit=True))
            tree = ast.parse(source)
        except (OSError, SyntaxError, ValueError):
            continue  # it fails in the cell that imports it, as always
        numpy_names = {"numpy"}  # what the helper calls numpy (`import numpy as np`)
        attributes = []
        for node in ast.walk(tree):  # in functions too: they run in every child all the same
            if isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
                numpy_names.update(alias.asname for alias in node.names if alias.name == "numpy" and alias.asname)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                imported.add(node.module)
            elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                attributes.append((node.value.id, node.attr))
        numpy_submodules.update(attr for name, attr in attributes if name in numpy_names)
    stdlib = os.path.realpath(sysconfig.get_paths()["stdlib"]) + os.sep
    for module in sorted(imported):
        if module == "__future__" or module in sys.modules:
            continue
        try:
            spec = importlib.util.find_spec(module)
        except (ImportError, ValueError):
            continue
        origin = getattr(spec, "origin", None) or ""
        if spec is not None and os.path.realpath(origin).startswith(stdlib):
            importlib.import_module(module)
    for attribute in sorted(numpy_submodules):
        if attribute.startswith("_") or f"numpy.{attribute}" in sys.modules:
            continue
        try:
            if importlib.util.find_spec(f"numpy.{attribute}") is not None:  # a submodule, not a function
                importlib.import_module(f"numpy.{attribute}")
        except Exception:  # noqa: BLE001 - then the child imports it, as a fresh sandbox does
            continue

    class CompiledOnce(machinery.SourceFileLoader):
        def get_code(self, fullname):
            path = self.get_filename(fullname)
            known = compiled.get(path)
            try:
                stat = os.stat(path)
            except OSError:
                known = None
            if known is not None and (stat.st_mtime_ns, stat.st_size) == known[:2]:
                return known[2]
            return super().get_code(fullname)

    finder = machinery.FileFinder.path_hook(
        (machinery.ExtensionFileLoader, machinery.EXTENSION_SUFFIXES),
        (CompiledOnce, machinery.SOURCE_SUFFIXES),
        (machinery.SourcelessFileLoader, machinery.BYTECODE_SUFFIXES),
    )

    def helpers_only(path):
        if path != helpers:
            raise ImportError("not the helpers folder")
        return finder(path)

    sys.path_hooks.insert(0, helpers_only)


def zygote(control_fd):
    import fcntl  # noqa: F401 - for the children, which must not import after forking
    import json
    import socket

    confine.set_child_subreaper()
    _preload_helpers(sys.argv[3])
    control = socket.socket(fileno=control_fd)
    _send_control(control, {"type": "ready", "started": _STARTED, "imported": _IMPORTED})
    scratch = None
    while True:
        try:
            data, fds, _, _ = socket.recv_fds(control, 1 << 16, CHILD_FDS)
        except OSError:
            break
        if not data:
            break
        request = json.loads(data)
        if request.get("type") == "fork" and len(fds) == CHILD_FDS:
            scratch = request["scratch"]
            if request.get("make_scratch"):
                os.makedirs(os.path.join(scratch, "home"), mode=0o700)
            child = os.fork()
            if child == 0:
                try:
                    _become_child(control, fds, request)
                finally:
                    os._exit(0)
            for fd in fds:
                os.close(fd)
            _send_control(control, {"type": "forked", "pid": child})
        elif request.get("type") == "reap":
            for fd in fds:
                os.close(fd)
            _reap_all()
            if scratch is not None and request.get("remove_scratch"):
                confine.remove_tree(scratch)
            _send_control(control, {"type": "reaped"})
        else:
            for fd in fds:
                os.close(fd)
            break
    _reap_all()


if __name__ == "__main__":
    if sys.argv[1] == "zygote":
        zygote(int(sys.argv[2]))
    else:
        main()
    os._exit(0)
