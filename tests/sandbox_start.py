"""Run a sandbox test twice: in a fresh sandbox per submission, and in a child forked from a
warm interpreter (autograder.sandbox.warm). A test module imports `sandbox_start` (an autouse
fixture) and `parametrize_starts` (its pytest_generate_tests): every test that takes a tier
(`isolation` or `tier`), or runs the grader as another user (`unprivileged_python`), then runs
once per way of starting, the others once, fresh."""

from __future__ import annotations

import pytest

from autograder.sandbox import supervisor as sandbox
from autograder.sandbox import warm

STARTS = ("fresh", "warm")


def parametrize_starts(metafunc) -> None:
    if {"isolation", "tier", "unprivileged_python"} & set(metafunc.fixturenames):
        metafunc.parametrize("sandbox_start", STARTS, indirect=True)


@pytest.fixture(autouse=True)
def sandbox_start(request, monkeypatch):
    """ "fresh" or "warm" (AUTOGRADER_WARM); the pool of warm interpreters starts and ends empty."""
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
