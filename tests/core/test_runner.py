"""The hidden-checks runner: a check that takes only `sub` runs as one pytest item for every
submission, one that asks for other fixtures as an item per submission, and both give the same
verdicts (passed, a student's Mistake, the check's own error, pytest.fail and pytest.skip)."""

from __future__ import annotations

import importlib.util
import logging
import types

import pytest

from autograder.core import runner
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


ONLY_SUB = """
from autograder.core.checks import Mistake, part


@part("p", points=2)
def test_alone(sub):
    print("a check that prints")
    k = sub.number("k")
    if k == 1:
        raise Mistake(f"k is {k:g}, not 0")
    if k == 2:
        raise ZeroDivisionError("the check's own bug")
    sub.note("k is 0")


@part("q", points=1)
def test_other(sub):
    if sub.number("k") > 0:
        raise Mistake("k is not 0")
"""


def loaded_spec(tmp_path, name: str, text: str):
    path = tmp_path / f"{name}.py"
    path.write_text(text)
    loader = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(module)
    return types.SimpleNamespace(checks_path=path, module=module)


@pytest.fixture
def sessions(monkeypatch) -> list:
    """The pytest sessions started from here on (the arguments of each)."""
    started, run = [], runner._pytest_main
    monkeypatch.setattr(runner, "_pytest_main", lambda *args: started.append(args) or run(*args))
    return started


def test_one_session_serves_batch_after_batch_with_the_verdicts_of_a_session_each(tmp_path, capsys, request):
    spec = loaded_spec(tmp_path, "lasting_checks", ONLY_SUB)
    batches = [[make_submission({"k": k}, submission_id=f"b{b}k{k}") for k in range(3)] for b in range(3)]
    alone = [run_checks([(spec, batch)]) for batch in batches]
    sessions = request.getfixturevalue("sessions")
    with runner.CheckSession([spec]) as session:
        served = [session.check([(spec, batch)]) for batch in batches]
        assert session.thread.is_alive()
    assert not session.thread.is_alive()
    assert len(sessions) == 1  # pytest set up and the module collected once for the three batches
    shown = [{key: [check.to_json() for check in checks] for key, checks in result.items()} for result in served]
    assert shown == [{key: [check.to_json() for check in checks] for key, checks in result.items()} for result in alone]
    assert capsys.readouterr().out == ""  # what checks print goes nowhere, as in a session each


def test_a_session_leaves_to_a_session_each_what_it_cannot_serve(spec, tmp_path, sessions):
    """Checks that ask for other fixtures are parametrised per submission when collected, so
    each batch of them gets its own session; so does a notebook the session was not made for."""
    lasting = loaded_spec(tmp_path, "lasting_checks_too", ONLY_SUB)
    submissions = [make_submission({"k": k}, submission_id=f"k{k}") for k in range(2)]
    for made_for, handed in (([spec], spec), ([lasting], spec)):
        before = len(sessions)
        with runner.CheckSession(made_for) as session:
            first, second = (session.check([(handed, submissions)]) for _ in range(2))
        assert len(sessions) - before == 2 and session.thread is None
        assert [check.passed for check in first["k0"]] == [True, True]
        assert [check.to_json() for check in first["k1"]] == [check.to_json() for check in second["k1"]]


def test_a_session_whose_checks_cannot_be_collected_says_so_at_every_batch(tmp_path):
    spec = loaded_spec(tmp_path, "broken_checks", ONLY_SUB)
    spec.checks_path = tmp_path / "missing_checks.py"  # pytest is told of a file that is not there
    with runner.CheckSession([spec]) as session:
        for _ in range(2):
            with pytest.raises(RuntimeError, match="the hidden checks could not run"):
                session.check([(spec, [make_submission({"k": 0}, submission_id="k0")])])
