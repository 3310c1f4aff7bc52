"""The sandbox as the tests start it: the limits of the threat tests, a broken driver, and
each test run twice.

Run a sandbox test twice: in a fresh sandbox per submission, and in a child forked from a
warm interpreter (autograder.sandbox.warm). A test module uses the `sandbox_start` fixture
(`pytestmark = pytest.mark.usefixtures("sandbox_start")`) and imports `parametrize_starts` as its
pytest_generate_tests: every test that takes a tier
(`isolation` or `tier`), or runs the grader as another user (`unprivileged_python`), then runs
once per way of starting, the others once, fresh."""

from __future__ import annotations

import shutil

import pytest

from autograder.sandbox import supervisor as sandbox
from autograder.sandbox import tiers, warm

STARTS = ("fresh", "warm")


def parametrize_starts(metafunc) -> None:
    if {"isolation", "tier", "unprivileged_python"} & set(metafunc.fixturenames):
        metafunc.parametrize("sandbox_start", STARTS, indirect=True)


def start_sandboxes(request, monkeypatch):
    """The `sandbox_start` fixture (tests/conftest.py): "fresh" or "warm" (AUTOGRADER_WARM); the
    pool of warm interpreters starts and ends empty."""
    start = getattr(request, "param", "fresh")
    params = getattr(getattr(request.node, "callspec", None), "params", {})
    if start == "warm" and "unisolated" in (params.get("isolation"), params.get("tier")):
        pytest.skip("the unisolated tier always starts a fresh process (supervisor.warm_unavailable)")
    monkeypatch.setenv(sandbox.WARM_SETTING, "1" if start == "warm" else "0")
    warm.POOL.close()
    yield start
    warm.POOL.close()


def is_warm(isolation: str) -> bool:
    """Whether a run of `isolation` now goes to a warm interpreter's child."""
    return sandbox.warm_unavailable(isolation) is None


# Short limits for the threat tests (and the warm tests that reuse them).
LIMITS = sandbox.Limits(
    cell_seconds=1,
    cell_grace_seconds=1,
    call_seconds=1,
    total_seconds=10,
    memory_bytes=512 << 20,
    max_processes=32,
    max_output_bytes=4 << 20,
)


def broken_driver(tmp_path, monkeypatch, confine_source=None, driver_prefix=""):
    """Grade with a copy of the driver changed by `confine_source` (appended to confine.py) or
    `driver_prefix` (put before driver.py): a grader fault, never the student's."""
    sandbox.tier_status()  # probed with the real driver, before it is replaced
    fake = tmp_path / "driver"
    shutil.copytree(sandbox.DRIVER_DIR, fake, ignore=shutil.ignore_patterns("__pycache__"))
    if confine_source is not None:
        (fake / "confine.py").write_text((fake / "confine.py").read_text() + confine_source)
    if driver_prefix:
        (fake / "driver.py").write_text(driver_prefix + (fake / "driver.py").read_text())
    monkeypatch.setattr(tiers, "DRIVER_DIR", fake)
