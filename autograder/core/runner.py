"""Run the hidden pytest checks over extracted submissions, in the grader's own process.

One pytest session grades a whole batch: each check module is collected once and its tests are
parametrised over the submissions of its notebook; in a batch run, one session (CheckSession)
serves every chunk in turn. The modules are the course's own, already
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
import queue
import threading
import traceback
from concurrent.futures import Future
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
        self.every: dict[int, _EverySubmission] = {}  # id(module) -> the `sub` its checks are given
        self.serve = None  # set by a CheckSession: runs the session's checks on each batch it is handed

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
            every = self.every.setdefault(id(metafunc.module), _EverySubmission(submissions))
            metafunc.parametrize("sub", [every], ids=["every"])
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

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtestloop(self, session):
        if self.serve is None:
            return None  # pytest's own loop: one batch, collected for it
        self.serve(session)
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


def _pytest_args(specs, every_check_takes_only_sub: bool) -> list[str]:
    unused: tuple[str, ...] = UNUSED_PLUGINS
    if every_check_takes_only_sub:
        unused += FIXTURE_PLUGINS
    return [
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
        *(str(spec.checks_path) for spec in specs),
    ]


def _pytest_main(args, plugin) -> int:
    # The checks need no third-party plugins; loading every installed one costs seconds.
    previous = os.environ.get("PYTEST_DISABLE_PLUGIN_AUTOLOAD")
    os.environ["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    try:
        return pytest.main(args, plugins=[plugin])
    finally:
        if previous is None:
            del os.environ["PYTEST_DISABLE_PLUGIN_AUTOLOAD"]
        else:
            os.environ["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = previous


def _verdicts(plugin, batches) -> dict[str, list[CheckResult]]:
    """The verdicts of one batch. The instructor's side of "internal grader error": the traceback
    goes to the grader's log (stderr), never into a report."""
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


def _could_not_run(exit_code, plugin, quiet: io.StringIO) -> RuntimeError:
    return RuntimeError(
        f"the hidden checks could not run (pytest exit {exit_code}):\n"
        + "\n".join(plugin.collection_errors)
        + quiet.getvalue()[-4000:]
    )


def run_checks(batches: list[tuple[NotebookSpec, list[Submission]]]) -> dict[str, list[CheckResult]]:
    """Grade every submission with the checks of its notebook's spec, in a pytest session of its
    own; results by submission id."""
    batches = [(spec, subs) for spec, subs in batches if subs]
    if not batches:
        return {}
    plugin = _CheckPlugin(batches)
    args = _pytest_args([spec for spec, _ in batches], all(takes_only_sub(spec.module) for spec, _ in batches))
    quiet = io.StringIO()
    with contextlib.redirect_stdout(quiet):
        exit_code = _pytest_main(args, plugin)
    if plugin.collection_errors or exit_code not in (0, 1):
        raise _could_not_run(exit_code, plugin, quiet)
    return _verdicts(plugin, batches)


class CheckSession:
    """The hidden checks of many batches (the batch grader's chunks) in one pytest session:
    pytest's set-up and the collection of each check module, which cost a session more than the
    checks of a chunk take, are paid once; each batch is then handed to the collected checks.

    pytest.main runs in a thread of the session's own that runs checks only while `check` waits
    for them, so the two threads never run at once, and stdout is redirected while they run, as
    in run_checks. Only checks that take `sub` alone can serve batch after batch (one item per
    check, whatever the submissions); with any other, or a notebook not among `specs`, a batch
    gets a session of its own (run_checks)."""

    def __init__(self, specs):
        self.specs = {pathlib.Path(spec.checks_path): spec for spec in specs}
        self.lasting = bool(self.specs) and all(takes_only_sub(spec.module) for spec in self.specs.values())
        self.plugin = _CheckPlugin([(spec, []) for spec in self.specs.values()])
        self.plugin.serve = self._serve
        self.quiet = io.StringIO()
        self.requests: queue.Queue = queue.Queue()
        self.thread: threading.Thread | None = None
        self.exit_code: int | str | None = None  # set when pytest.main has returned (or raised)
        self.ending = threading.Lock()  # a batch is handed over only while the session lasts

    def check(self, batches: list[tuple[NotebookSpec, list[Submission]]]) -> dict[str, list[CheckResult]]:
        """What run_checks(batches) gives, from the lasting session where it can serve them."""
        batches = [(spec, subs) for spec, subs in batches if subs]
        if not batches:
            return {}
        if not self.lasting or any(self.specs.get(pathlib.Path(spec.checks_path)) is not spec for spec, _ in batches):
            return run_checks(batches)
        answer: Future = Future()
        with contextlib.redirect_stdout(self.quiet):
            if self.thread is None:
                # Started while stdout is redirected: pytest's terminal writer takes sys.stdout
                # as it is when the session is configured, and writes there until the end.
                self.thread = threading.Thread(target=self._main, name="hidden-checks", daemon=True)
                self.thread.start()
            with self.ending:
                if self.exit_code is not None:
                    raise _could_not_run(self.exit_code, self.plugin, self.quiet)
                self.requests.put((batches, answer))
            return answer.result()

    def close(self) -> None:
        """End the session (its summary goes where its output went: nowhere)."""
        if self.thread is not None:
            self.requests.put(None)
            with contextlib.redirect_stdout(self.quiet):
                self.thread.join()

    def __enter__(self) -> CheckSession:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _main(self) -> None:
        args = _pytest_args(list(self.specs.values()), True)
        try:
            self.exit_code = _pytest_main(args, self.plugin)
        except BaseException as error:  # noqa: BLE001 - said to whoever waits, below
            self.exit_code = f"{type(error).__name__}: {error}"
        finally:
            with self.ending:
                if self.exit_code is None:
                    self.exit_code = "the session ended"
                while True:  # anyone still waiting is told why no check runs
                    try:
                        request = self.requests.get_nowait()
                    except queue.Empty:
                        break
                    if request is not None:
                        request[1].set_exception(_could_not_run(self.exit_code, self.plugin, self.quiet))

    def _serve(self, session) -> None:
        """pytest's run-test loop for this session: each batch handed over runs on the items of
        its notebooks' checks, until `close`."""
        by_module: dict[int, list] = {}
        for item in session.items:
            by_module.setdefault(id(item.module), []).append(item)
        while (request := self.requests.get()) is not None:
            batches, answer = request
            if self.plugin.collection_errors:
                answer.set_exception(_could_not_run("collection failed", self.plugin, self.quiet))
                continue
            try:
                self.plugin.results = {}
                items = []
                for every in self.plugin.every.values():
                    every.submissions = []
                for spec, subs in batches:
                    if id(spec.module) in self.plugin.every:
                        self.plugin.every[id(spec.module)].submissions = subs
                        items += by_module.get(id(spec.module), [])
                for index, item in enumerate(items):
                    following = items[index + 1] if index + 1 < len(items) else None
                    item.config.hook.pytest_runtest_protocol(item=item, nextitem=following)
                answer.set_result(_verdicts(self.plugin, batches))
            except BaseException as error:  # the caller's, to raise where it waits
                answer.set_exception(error)
                if not isinstance(error, Exception):
                    raise
