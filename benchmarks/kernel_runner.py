"""The kernel-per-notebook baseline: what stock nbgrader autograding does, for benchmarks only.

It runs a notebook's cells in a fresh Jupyter kernel (no sandbox: the kernel has the grader's
rights), then extracts the same plain data with the same driver functions, so the checks reach
identical verdicts and only the cost of running student code differs. Never use it to grade
untrusted work; `make bench` compares it with the sandboxed runner.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time

from autograder.sandbox import supervisor as sandbox

_PREAMBLE = """
import sys as _tc_sys
_tc_sys.path.insert(0, {driver_dir!r})
_tc_sys.path.insert(0, {helpers!r})
from autograder_driver_module import driver as _tc_driver
import signal as _tc_signal
_tc_signal.signal(_tc_signal.SIGALRM, _tc_driver._on_alarm)
"""


def _execute(client, code: str, timeout: float) -> tuple[str, str | None, list]:
    """Run code in the kernel; returns (status, error, display payloads)."""
    payloads, error = [], None

    def hook(message):
        nonlocal error
        kind, content = message["msg_type"], message["content"]
        if kind == "error":
            error = f"{content['ename']}: {content['evalue']}"
        elif kind in ("display_data", "execute_result") and "application/json" in content.get("data", {}):
            payloads.append(content["data"]["application/json"])

    try:
        reply = client.execute_interactive(code, timeout=timeout, output_hook=hook, allow_stdin=False)
    except TimeoutError:
        return "timeout", f"the cell ran longer than {timeout:g} s", payloads
    status = reply["content"]["status"]
    return ("ok" if status == "ok" else "error"), error, payloads


def run_in_kernel(
    cells,
    names,
    helpers_dir,
    make_probes,
    limits: sandbox.Limits = sandbox.Limits(),
    isolation: str = "kernel",
    environment: dict[str, str] | None = None,
) -> sandbox.RunResult:
    """Same contract as sandbox.run_submission, executed in a Jupyter kernel."""
    from jupyter_client.manager import start_new_kernel

    result = sandbox.RunResult(isolation="none (jupyter kernel, benchmark baseline)")
    started = time.monotonic()
    workdir = tempfile.mkdtemp(prefix="tc_kernel_")
    # the driver package, importable under a name student code would not shadow by accident
    shutil.copytree(sandbox.DRIVER_DIR, f"{workdir}/autograder_driver_module")
    manager, client = start_new_kernel(kernel_name="python3", cwd=workdir)
    try:
        _execute(client, _PREAMBLE.format(driver_dir=workdir, helpers=helpers_dir), limits.total_seconds)
        if environment:
            _execute(client, f"import os as _tc_os; _tc_os.environ.update({dict(environment)!r})", limits.total_seconds)
        cells_done = []
        for index, source in cells:
            status, error, _ = _execute(client, source, limits.cell_seconds)
            cells_done.append({"index": index, "status": status, "error": error})
            if status == "timeout":
                manager.interrupt_kernel()
        result.cells = cells_done
        _, _, payloads = _execute(
            client,
            f"from IPython.display import display as _tc_display\n"
            f"_tc_display({{'application/json': {{'values': _tc_driver.extract({list(names)!r}, globals(), "
            f"{limits.call_seconds})}}}}, raw=True)",
            limits.total_seconds,
        )
        result.values = payloads[0]["values"] if payloads else {}
        request = make_probes(result.values)
        encoded = json.dumps({"calls": request})
        _, _, payloads = _execute(
            client,
            f"import json as _tc_json\n_tc_display({{'application/json': {{'calls': _tc_driver.call_probes("
            f"_tc_json.loads({encoded!r}), globals(), {limits.call_seconds})}}}}, raw=True)",
            limits.total_seconds,
        )
        result.calls = payloads[0]["calls"] if payloads else {}
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
        shutil.rmtree(workdir, ignore_errors=True)
        result.seconds = time.monotonic() - started
    return result
