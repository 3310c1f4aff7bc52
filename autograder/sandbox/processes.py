"""Processes of the sandbox seen from outside: stopping a whole tree, and what one said last."""

from __future__ import annotations

import os
import signal
import subprocess


def kill_tree(process: subprocess.Popen) -> None:
    """Kill `process` and its process group (it was started in a session of its own), reap it,
    and close the pipes we read from it. Student code can neither catch nor ignore this."""
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


def tail(data: bytes, limit: int = 400) -> str:
    """The last `limit` characters a process wrote (its stderr), for a reason shown to a person."""
    text = data.decode("utf-8", errors="replace").strip()
    return text[-limit:] if text else ""
