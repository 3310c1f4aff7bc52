"""An isolated JupyterLab 4 server for browser tests.

The server runs `python -m jupyterlab` (the `jupyter lab` command) on a free localhost port
with a random token. Its user configuration, data, runtime, IPython, settings and workspace
directories are fresh temporary folders, so nothing of the machine's own Jupyter setup (or of
another run) leaks in; the environment's installed extensions (nbgrader's lab and server
extensions live in sys.prefix) stay on the search paths, exactly as a student installs them.

`stop()` shuts every kernel down through the REST API, asks the server to exit, and then
makes sure that no process it started is left: the server (its own process group) and any
kernel whose connection file is in the server's private runtime folder.
"""

from __future__ import annotations

import json
import os
import pathlib
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

# Settings a fresh JupyterLab would otherwise ask about or fetch from the internet, and the
# notebook windowing mode that keeps every cell in the DOM (so the test can read all outputs).
USER_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false",
        "checkForUpdates": False,
    },
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is dead for our purposes
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def processes_mentioning(text: str) -> list[int]:
    """Pids of live processes whose command line contains `text` (a unique temporary path)."""
    found = []
    for entry in pathlib.Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline and int(entry.name) != os.getpid() and _process_alive(int(entry.name)):
            found.append(int(entry.name))
    return found


class LabServer:
    """`jupyter lab` serving `root_dir`, with all per-user state under `state_dir`."""

    def __init__(self, root_dir: pathlib.Path, state_dir: pathlib.Path, startup_timeout: float = 60):
        self.root_dir = pathlib.Path(root_dir)
        self.state_dir = pathlib.Path(state_dir)
        self.startup_timeout = startup_timeout
        self.token = secrets.token_hex(16)
        self.port = 0
        self.process: subprocess.Popen | None = None
        self.log_path = self.state_dir / "jupyterlab.log"
        self.runtime_dir = self.state_dir / "runtime"

    # -- addresses ------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def notebook_url(self, path: str, workspace: str) -> str:
        """The lab page with the notebook `path` (relative to root_dir) open in a fresh workspace."""
        return f"{self.base_url}/lab/workspaces/{workspace}/tree/{path}?reset&token={self.token}"

    # -- REST API -------------------------------------------------------------------------------

    def api(self, method: str, path: str, body=None, timeout: float = 10):
        request = urllib.request.Request(
            f"{self.base_url}{path}",
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=timeout) as response:
            text = response.read().decode()
        return json.loads(text) if text.strip() else None

    def page(self, path: str, timeout: float = 60) -> str:
        """The text of one of the server's pages (the formgrader's, say), fetched with the token."""
        request = urllib.request.Request(f"{self.base_url}{path}", headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.read().decode()

    def kernels(self) -> list[dict]:
        return self.api("GET", "/api/kernels")

    def shutdown_kernels(self) -> None:
        for session in self.api("GET", "/api/sessions"):
            self.api("DELETE", f"/api/sessions/{session['id']}", timeout=30)
        for kernel in self.kernels():
            self.api("DELETE", f"/api/kernels/{kernel['id']}", timeout=30)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    # -- lifecycle ------------------------------------------------------------------------------

    def environment(self) -> dict:
        env = dict(os.environ)
        folders = {
            "JUPYTER_CONFIG_DIR": "config",
            "JUPYTER_DATA_DIR": "data",
            "JUPYTER_RUNTIME_DIR": "runtime",
            "IPYTHONDIR": "ipython",
        }
        for variable, name in folders.items():
            (self.state_dir / name).mkdir(parents=True, exist_ok=True)
            env[variable] = str(self.state_dir / name)
        # Installed extensions stay visible: sys.prefix/share/jupyter and sys.prefix/etc/jupyter
        # are always on Jupyter's paths; drop only extra user-chosen paths.
        for variable in (
            "JUPYTER_PATH",
            "JUPYTER_CONFIG_PATH",
            "JUPYTERLAB_SETTINGS_DIR",
            "JUPYTERLAB_WORKSPACES_DIR",
            "JUPYTERLAB_DIR",
        ):
            env.pop(variable, None)
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        return env

    def command(self) -> list[str]:
        settings = self.state_dir / "lab-settings"
        for name, values in USER_SETTINGS.items():
            target = settings / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(json.dumps(values, indent=2))
        (self.state_dir / "lab-workspaces").mkdir(parents=True, exist_ok=True)
        return [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={self.port}",
            "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={self.token}",
            f"--ServerApp.root_dir={self.root_dir}",
            "--ServerApp.allow_root=True",
            f"--LabApp.user_settings_dir={settings}",
            f"--LabApp.workspaces_dir={self.state_dir / 'lab-workspaces'}",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            "--ServerApp.shutdown_no_activity_timeout=600",  # a safety net if teardown never runs
        ]

    def start(self) -> LabServer:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        for attempt in range(3):  # the free port may be taken between choosing and binding it
            self.port = free_port()
            with open(self.log_path, "ab") as log:
                self.process = subprocess.Popen(
                    self.command(),
                    cwd=self.root_dir,
                    env=self.environment(),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            if self._wait_until_ready():
                return self
            self._kill_server()
            if "already in use" not in self.log() or attempt == 2:
                break
        raise RuntimeError(f"JupyterLab did not start within {self.startup_timeout} s; its log:\n{self.log()[-6000:]}")

    def _wait_until_ready(self) -> bool:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            try:
                self.api("GET", "/api/status", timeout=2)
                return True
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.1)  # polling a port, not waiting for the page: nothing to observe yet
        return False

    def _kill_server(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            for sig, grace in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
                try:
                    os.killpg(self.process.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    self.process.wait(grace)
                    break
                except subprocess.TimeoutExpired:
                    continue
        else:
            self.process.wait()

    def stop(self) -> list[int]:
        """Stop kernels and server; returns the pids that had to be killed (normally none)."""
        if self.process is None:
            return []
        if self.process.poll() is None:
            try:
                self.shutdown_kernels()
                self.api("POST", "/api/shutdown", timeout=30)
                self.process.wait(15)
            except (urllib.error.URLError, OSError, subprocess.TimeoutExpired, ValueError):
                pass
        self._kill_server()
        # Kernels run in their own sessions; any left over would name our private runtime dir.
        leftovers = processes_mentioning(str(self.runtime_dir))
        for pid in leftovers:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return leftovers

    def __enter__(self) -> LabServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
