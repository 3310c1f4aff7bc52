"""Run the hidden pytest checks over extracted submissions, in the grader's own process.

One pytest session grades a whole batch: each check module is collected once and its tests are
parametrised over the submissions of its notebook. The modules are the course's own, already
loaded by `Course.grading_module` (pytest collects those module objects rather than importing
the files again), so checks see exactly the grading package the specs were read from. Verdicts are read from pytest's reports
as `core.report.CheckResult`s (a name the submission does not define is said as data, besides the
message); only `Mistake` messages reach students, any other exception is an internal error of the check.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import logging
import os
import pathlib
import traceback
from typing import TYPE_CHECKING

import pytest

from autograder.core.checks import Mistake, NotDefined
from autograder.core.report import CheckResult, MissingName
from autograder.core.submission import Submission

if TYPE_CHECKING:
    from autograder.core.specs import NotebookSpec


class _LoadedModule(pytest.Module):
    """A check module collected from the object the course loaded, not imported anew by path."""

    loaded: object = None

    def _getobj(self):
        return self.loaded


class _CheckPlugin:
    def __init__(self, batches: list[tuple[NotebookSpec, list[Submission]]]):
        self.by_path = {pathlib.Path(spec.checks_path): (spec, subs) for spec, subs in batches}
        self.results: dict[str, list[CheckResult]] = {}
        self.collection_errors: list[str] = []

    @pytest.hookimpl(tryfirst=True)
    def pytest_pycollect_makemodule(self, module_path, parent):
        entry = self.by_path.get(pathlib.Path(module_path))
        if entry is None:
            return None
        module = _LoadedModule.from_parent(parent, path=pathlib.Path(module_path))
        module.loaded = entry[0].module
        return module

    def pytest_configure(self, config):
        config.addinivalue_line("markers", "part(grade_id, points): the nbgrader part a check belongs to")

    def pytest_generate_tests(self, metafunc):
        if "sub" not in metafunc.fixturenames:
            return
        submissions = next((subs for spec, subs in self.by_path.values() if spec.module is metafunc.module), [])
        if list(metafunc.fixturenames) == ["sub"]:
            # A check that takes only `sub` is one item called for every submission in turn:
            # pytest's protocol per item (setup, call, teardown, their reports and hooks) cost
            # more than the checks themselves. A check that asks for other fixtures is an item
            # per submission, as pytest would make it.
            metafunc.parametrize("sub", [_EverySubmission(submissions)], ids=["every"])
        else:
            metafunc.parametrize("sub", submissions, ids=[s.id for s in submissions])

    def pytest_runtest_setup(self, item):
        submission = item.callspec.params.get("sub") if hasattr(item, "callspec") else None
        if isinstance(submission, Submission):
            submission.take_notes()  # notes belong to the check about to run

    @pytest.hookimpl(tryfirst=True)
    def pytest_pyfunc_call(self, pyfuncitem):
        every = pyfuncitem.funcargs.get("sub")
        if not isinstance(every, _EverySubmission):
            return None
        for submission in every.submissions:
            submission.take_notes()
            try:
                pyfuncitem.obj(sub=submission)
            except (KeyboardInterrupt, pytest.exit.Exception):
                raise
            except BaseException as error:  # noqa: BLE001 - pytest.fail and pytest.skip too, as pytest reports them
                self._verdict(pyfuncitem, submission, error, traceback.format_exc())
            else:
                self._verdict(pyfuncitem, submission, None, None)
        return True

    def pytest_collectreport(self, report):
        if report.failed:
            self.collection_errors.append(str(report.longrepr))

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item, call):
        outcome = yield
        report = outcome.get_result()
        if report.when == "setup" and report.passed:
            return
        if report.when == "teardown" and report.passed:
            return
        if report.when == "call" or report.failed:
            self._record(item, call, report)

    def _record(self, item, call, report):
        submission = item.callspec.params.get("sub") if hasattr(item, "callspec") else None
        if not isinstance(submission, Submission):
            return  # no submission, or every submission's verdict already taken in pytest_pyfunc_call
        if report.passed:
            self._verdict(item, submission, None, None)
        else:
            self._verdict(item, submission, call.excinfo.value if call.excinfo else None, str(report.longrepr))

    def _verdict(self, item, submission, error: BaseException | None, longrepr: str | None):
        """Record one check's verdict on one submission: passed when `error` and `longrepr` are
        None; a Mistake is the student's, anything else an internal error of the check."""
        marker = item.get_closest_marker("part")
        if marker is None:
            return
        passed = error is None and longrepr is None
        points = float(marker.kwargs["points"])
        check_id = item.originalname.removeprefix("test_")
        results = self.results.setdefault(submission.id, [])
        if any(r.id == check_id and r.part == marker.kwargs["grade_id"] for r in results):
            return  # a teardown failure after the call was already recorded
        internal, missing = None, None
        if passed:
            message = "; ".join(submission.take_notes())
        elif isinstance(error, Mistake):
            # every failed check says why: an empty Mistake is the check's fault, said as such
            message = str(error)
            if isinstance(error, NotDefined):
                missing = MissingName(error.name, error.hint)
            if not message.strip():
                message = "this check failed without saying why; that is the grader's fault, and your instructor has been told"
                internal = "the check raised a Mistake with no message"
        else:
            message = "internal grader error in this check; your instructor has been told"
            internal = longrepr or repr(error)
        results.append(
            CheckResult(
                id=check_id,
                part=marker.kwargs["grade_id"],
                points=points if passed else 0.0,
                max_points=points,
                passed=passed,
                message=message,
                internal_error=internal,
                missing=missing,
            )
        )


class _EverySubmission:
    """The `sub` of a check run once for every submission of its notebook (pytest_pyfunc_call)."""

    def __init__(self, submissions: list[Submission]):
        self.submissions = submissions


UNUSED_PLUGINS = (
    *("faulthandler", "junitxml", "doctest", "stepwise", "pastebin", "setuponly", "setupplan"),
    *("debugging", "threadexception"),
)
# What these give checks: tmpdir/tmp_path, monkeypatch, recwarn, caplog, subtests fixtures and
# unittest.TestCase classes. Left out, as the plugins above, when every check takes `sub` alone.
FIXTURE_PLUGINS = ("legacypath", "tmpdir", "monkeypatch", "recwarn", "logging", "subtests", "unittest")


def takes_only_sub(module) -> bool:
    """Every check of `module` (a `test*` function or class) is a function of `sub` alone: it
    asks pytest for nothing else."""
    for name, value in vars(module).items():
        if not name.startswith(("test", "Test")) or not callable(value):
            continue
        if inspect.isclass(value) or list(inspect.signature(value).parameters) != ["sub"]:
            return False
    return True


def run_checks(batches: list[tuple[NotebookSpec, list[Submission]]]) -> dict[str, list[CheckResult]]:
    """Grade every submission with the checks of its notebook's spec; results by submission id."""
    batches = [(spec, subs) for spec, subs in batches if subs]
    if not batches:
        return {}
    plugin = _CheckPlugin(batches)
    unused: tuple[str, ...] = UNUSED_PLUGINS
    if all(takes_only_sub(spec.module) for spec, _ in batches):
        unused += FIXTURE_PLUGINS
    args = [
        "-q",
        "-p",
        "no:cacheprovider",
        "-p",
        "no:warnings",
        "-p",
        "no:unraisableexception",
        # Nor pytest's own plugins that checks (which take only `sub`) never use: each costs
        # hooks on every test.
        *(part for plugin in unused for part in ("-p", f"no:{plugin}")),
        "-c",
        "/dev/null",
        "--rootdir",
        "/",
        "--import-mode=importlib",
        "--tb=native",
        "-s",
        *(str(spec.checks_path) for spec, _ in batches),
    ]
    quiet = io.StringIO()
    # The checks need no third-party plugins; loading every installed one costs seconds.
    previous = os.environ.get("PYTEST_DISABLE_PLUGIN_AUTOLOAD")
    os.environ["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    try:
        with contextlib.redirect_stdout(quiet):
            exit_code = pytest.main(args, plugins=[plugin])
    finally:
        if previous is None:
            del os.environ["PYTEST_DISABLE_PLUGIN_AUTOLOAD"]
        else:
            os.environ["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = previous
    if plugin.collection_errors or exit_code not in (0, 1):
        raise RuntimeError(
            f"the hidden checks could not run (pytest exit {exit_code}):\n"
            + "\n".join(plugin.collection_errors)
            + quiet.getvalue()[-4000:]
        )
    # The instructor's side of "internal grader error": the traceback goes to the grader's log
    # (stderr), never into a report.
    for submission_id, results in plugin.results.items():
        for result in results:
            if result.internal_error:
                logging.getLogger("autograder").error(
                    "check %s/%s raised on %s:\n%s", result.part, result.id, submission_id, result.internal_error
                )
    unchecked = [sub.id for _, subs in batches for sub in subs if sub.id not in plugin.results]
    if unchecked:
        raise RuntimeError(f"the hidden checks did not run for {len(unchecked)} submissions, e.g. {unchecked[0]}")
    return plugin.results
