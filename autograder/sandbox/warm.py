"""Warm interpreters: one zygote per worker, one freshly forked, freshly confined child per submission.

A zygote is the sandbox driver started as `driver.py zygote FD` (inside one long-lived bwrap in
the bubblewrap tier, as a plain process in the landlock tier): it imports numpy and the driver
once, never runs student code and is never confined itself. For each submission the supervisor
hands it four fds (result and request channels, stdout, stderr) over a unix socket that no child
holds; it forks a child that keeps only those fds, joins its own cgroup, moves into its own
scratch folder, and then confines itself (rlimits, its uid, Landlock to that folder, seccomp, a
single process) before it reads its job: from there on it is the same driver as in a fresh
sandbox. After the run the zygote kills and reaps every process of that child (it is their
subreaper), and removes the scratch folder it made. A zygote that does not answer in time is
discarded: killed with its process group (and its cgroup), and the next submission gets a new one.

This module only starts, talks to and stops zygotes; which tier may use them, and the
confinement each child applies, are the supervisor's (supervisor.warm_unavailable).
"""

from __future__ import annotations

import atexit
import concurrent.futures
import json
import os
import socket
import subprocess
import tempfile
import threading
from collections.abc import Callable

from autograder.sandbox import processes

START_SECONDS = 30.0  # a zygote imports numpy inside its sandbox: seconds on a loaded machine
ANSWER_SECONDS = 10.0  # fork and reap answers; longer means the zygote is stuck: discarded
IDLE_LIMIT = max(4, 2 * (os.cpu_count() or 1))  # idle zygotes kept, over all tiers, assignments and limits


class ZygoteFailed(RuntimeError):
    """The zygote could not start or stopped answering; the message says why."""


# bwrap's --die-with-parent ties the sandbox to the *thread* that started it: zygotes outlive
# the worker threads that ask for them, so one long-lived thread starts them all.
_SPAWNER = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="zygote-spawner")
# Zygotes started ahead of need (WarmPool.prestart) wait for their "ready" here, a few at once.
_PRESTARTER = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="zygote-prestart")


class Zygote:
    """One warm interpreter: `command` (python and the driver), then "zygote", its control fd and
    `arguments` (helpers folder, bytecode folder, site directories), with `env`; `on_close`
    runs when it is stopped (its cgroup, its bytecode folder)."""

    def __init__(
        self,
        key,
        command: list[str],
        arguments: list[str],
        env: dict,
        on_close: Callable | None = None,
    ):
        self.key = key
        self.on_close = on_close
        self.served = 0
        self.released = 0  # when it was last given back to the pool (a count of releases)
        self.cgroup_details: dict = {}  # the cgroup the zygote's children share, when it has one
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.control = ours
        self.control.settimeout(START_SECONDS)
        self.log = tempfile.TemporaryFile()
        argv = [*command, "zygote", str(theirs.fileno()), *arguments]
        try:
            self.process = _SPAWNER.submit(
                subprocess.Popen,
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=self.log,
                pass_fds=(theirs.fileno(),),
                env=env,
                start_new_session=True,
            ).result()
        except OSError as error:
            self.close()
            raise ZygoteFailed(f"could not be started: {error}") from None
        finally:
            theirs.close()
        ready = self._answer("ready")
        self.started, self.imported = ready.get("started"), ready.get("imported")
        self.control.settimeout(ANSWER_SECONDS)

    def _answer(self, kind: str) -> dict:
        try:
            data = self.control.recv(1 << 16)
        except OSError as error:
            data, reason = b"", str(error)
        else:
            reason = "it closed its channel"
        try:
            message = json.loads(data) if data else None
        except ValueError:
            message = None
        if not isinstance(message, dict) or message.get("type") != kind:
            tail = self._log_tail()
            self.close()
            raise ZygoteFailed(f"no {kind!r} answer ({reason}){tail}")
        return message

    def _log_tail(self) -> str:
        try:
            self.log.seek(0)
            text = self.log.read()[-600:].decode("utf-8", errors="replace").strip()
        except (OSError, ValueError):
            return ""
        return f": {text}" if text else ""

    def fork(self, fds: list[int], scratch: str, make_scratch: bool, env: dict, cgroups: list[str]) -> int:
        """Start one submission's child on `fds` (result, request, stdout, stderr); its pid as the
        zygote sees it (in bubblewrap, inside the sandbox's pid namespace)."""
        request = {"type": "fork", "scratch": scratch, "make_scratch": make_scratch, "env": env, "cgroups": cgroups}
        try:
            socket.send_fds(self.control, [json.dumps(request).encode()], fds)
        except OSError as error:
            self.close()
            raise ZygoteFailed(f"could not be asked to fork: {error}") from None
        pid = self._answer("forked").get("pid")
        if type(pid) is not int:
            self.close()
            raise ZygoteFailed("answered a fork without a pid")
        self.served += 1
        return pid

    def reap(self, remove_scratch: bool) -> bool:
        """Kill and reap every process of the last child; False (and the zygote stopped) when it
        does not answer in time."""
        try:
            self.control.send(json.dumps({"type": "reap", "remove_scratch": remove_scratch}).encode())
            self._answer("reaped")
        except (OSError, ZygoteFailed):
            self.close()
            return False
        return True

    def alive(self) -> bool:
        return self.control.fileno() >= 0 and getattr(self, "process", None) is not None and self.process.poll() is None

    def close(self) -> None:
        """Stop the zygote and everything it started (its process group; in bubblewrap the whole
        pid namespace goes with it)."""
        try:
            self.control.close()
        except OSError:
            pass
        process = getattr(self, "process", None)
        if process is not None:
            processes.kill_tree(process)
        if self.on_close is not None:
            on_close, self.on_close = self.on_close, None
            on_close()
        self.log.close()


class WarmPool:
    """Idle zygotes by key (tier, helpers folder, limits): a worker takes one for a submission and
    gives it back, so there are never more than the concurrent submissions. Zygotes belong to
    the process that started them: a forked grader process starts its own."""

    def __init__(self):
        self.lock = threading.Lock()
        self.idle: dict = {}
        self.starting: dict = {}  # key -> futures of zygotes started ahead of need (prestart)
        self.owner = os.getpid()
        self.failures: dict = {}  # key -> why its zygote could not start (then: fresh sandboxes)
        self.releases = 0

    def _mine(self) -> None:
        if self.owner != os.getpid():  # inherited through fork: those zygotes answer our parent
            self.idle, self.starting, self.failures, self.owner = {}, {}, {}, os.getpid()

    def prestart(self, key, start: Callable[[], Zygote], count: int) -> None:
        """Start zygotes for `key` in the background until `count` are idle or starting: a grader
        about to spend a second on its own imports and reads has them ready for its first
        submissions (each imports numpy on a core the grader leaves idle meanwhile)."""
        with self.lock:
            self._mine()
            if key in self.failures:
                return
            pending = self.starting.setdefault(key, [])
            for _ in range(count - len(pending) - len(self.idle.get(key, []))):
                pending.append(_PRESTARTER.submit(start))

    def acquire(self, key, start: Callable[[], Zygote]) -> Zygote | None:
        """An idle zygote for `key`, else one started ahead (waiting for it), else a new one from
        `start()`; None when none can start here (the reason is kept in `failures`; the caller
        uses a fresh sandbox)."""
        with self.lock:
            self._mine()
            if key in self.failures:
                return None
            idle = self.idle.get(key, [])
            while idle:
                zygote = idle.pop()
                if zygote.alive():
                    return zygote
                zygote.close()
            pending = self.starting.get(key)
            ahead = pending.pop() if pending else None
        try:
            return ahead.result() if ahead is not None else start()
        except ZygoteFailed as error:
            with self.lock:
                self.failures[key] = str(error)
            return None

    def release(self, zygote: Zygote) -> None:
        """Keep `zygote` for the next submission of its key; beyond IDLE_LIMIT idle ones in all,
        the one idle longest is stopped (a grader that moves on to other assignments or courses
        does not keep an interpreter for each)."""
        with self.lock:
            self._mine()
            self.releases += 1
            zygote.released = self.releases
            self.idle.setdefault(zygote.key, []).append(zygote)
            idle = [z for zygotes in self.idle.values() for z in zygotes]
            surplus = sorted(idle, key=lambda z: z.released)[: max(0, len(idle) - IDLE_LIMIT)]
            for old in surplus:
                self.idle[old.key].remove(old)
        for old in surplus:
            old.close()

    def close(self) -> None:
        """Stop every idle zygote and every one started ahead (at exit, and between tests)."""
        with self.lock:
            if self.owner != os.getpid():
                self.idle, self.starting = {}, {}
            zygotes = [zygote for idle in self.idle.values() for zygote in idle]
            ahead = [future for pending in self.starting.values() for future in pending]
            self.idle, self.starting, self.failures = {}, {}, {}
        for future in ahead:
            try:
                zygotes.append(future.result())
            except ZygoteFailed:
                pass
        for zygote in zygotes:
            zygote.close()


POOL = WarmPool()
atexit.register(POOL.close)
