"""The hidden-checks runner: a check that takes only `sub` runs as one pytest item for every
submission, one that asks for other fixtures as an item per submission, and both give the same
verdicts (passed, a student's Mistake, the check's own error, pytest.fail and pytest.skip)."""

from __future__ import annotations

import importlib.util
import logging
import types

import pytest

from autograder.core.runner import run_checks, takes_only_sub
from autograder.core.testing import make_submission

CHECKS = """
import pytest

from autograder.core.checks import Mistake, part


def verdict(sub):
    k = sub.number("k")
    if k == 1:
        raise Mistake(f"k is {k:g}, not 0")
    if k == 2:
        raise ZeroDivisionError("the check's own bug")
    if k == 3:
        pytest.fail("failed by pytest.fail")
    if k == 4:
        pytest.skip("skipped")
    sub.note("k is 0")


@part("p", points=2)
def test_alone(sub):
    verdict(sub)


@part("p", points=1)
def test_with_a_fixture(sub, tmp_path):
    assert tmp_path.is_dir()
    verdict(sub)
"""


@pytest.fixture
def spec(tmp_path):
    path = tmp_path / "test_runner_checks.py"
    path.write_text(CHECKS)
    loader = importlib.util.spec_from_file_location("runner_checks_under_test", path)
    module = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(module)
    return types.SimpleNamespace(checks_path=path, module=module)


def test_checks_with_and_without_other_fixtures_give_the_same_verdicts(spec, caplog):
    submissions = [make_submission({"k": k}, submission_id=f"k{k}") for k in range(5)]
    with caplog.at_level(logging.ERROR, logger="autograder"):
        results = run_checks([(spec, submissions)])
    assert list(results) == [f"k{k}" for k in range(5)]
    for submission_id, checks in results.items():
        assert [check.id for check in checks] == ["alone", "with_a_fixture"], submission_id
        alone, with_fixture = checks
        assert (alone.passed, alone.message, alone.missing) == (
            with_fixture.passed,
            with_fixture.message,
            with_fixture.missing,
        )
        assert (alone.points, alone.max_points) == (2.0 if alone.passed else 0.0, 2.0)
        assert bool(alone.internal_error) == bool(with_fixture.internal_error)
    by_id = {submission_id: checks[0] for submission_id, checks in results.items()}
    assert by_id["k0"].passed and by_id["k0"].message == "k is 0"  # its notes, and only its own
    assert by_id["k1"].message == "k is 1, not 0" and not by_id["k1"].internal_error
    for internal in ("k2", "k3", "k4"):  # the check's fault, said as such; the traceback only in the log
        assert by_id[internal].message == "internal grader error in this check; your instructor has been told"
        assert by_id[internal].internal_error
    assert "ZeroDivisionError" in by_id["k2"].internal_error
    assert "the check's own bug" in caplog.text


def test_pytest_plugins_that_give_fixtures_are_kept_when_a_check_asks_for_one():
    import types

    alone = types.ModuleType("alone")
    exec("def test_a(sub): pass\ndef helper(x, y): pass\nclass Helper: pass", alone.__dict__)
    assert takes_only_sub(alone)
    for check in (
        "def test_b(sub, monkeypatch): pass",
        "def test_c(): pass",
        "class TestD:\n    def test_e(self): pass",
    ):
        asking = types.ModuleType("asking")
        exec(f"def test_a(sub): pass\n{check}", asking.__dict__)
        assert not takes_only_sub(asking), check
