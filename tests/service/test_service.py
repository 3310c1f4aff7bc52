"""The grading service for real: `python -m autograder serve` on the mini course, with a real
nbgrader exchange (a temporary `c.Exchange.root`), students who fetch, submit and fetch feedback
with nbgrader (its command line, and its exchange classes in-process for speed), a SQLite
gradebook, kill -9 in the middle of a grade, and two services at once."""

import datetime
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

from autograder.cli.main import main
from autograder.core import names
from autograder.core.course import Course
from autograder.dev import classroom
from autograder.dev.students import make_students
from autograder.nbgrader import release
from autograder.nbgrader import settings as nbgrader_settings
from autograder.service import queue as jobqueue
from tests.builders import REPOSITORY
from tests.builders.classes import auto_scores

pytestmark = pytest.mark.slow

COURSE_ID = "transformer-circuits"
WORKTREE = REPOSITORY.root
WAIT_SECONDS = 150  # generous: the machine is shared; nothing asserts on time


def _nbgrader_in_process(root: pathlib.Path, exchange: pathlib.Path, action: str) -> None:
    """nbgrader's generate_assignment / release_assignment for `mini`, in-process (the classes
    the command line runs; a process start costs seconds)."""
    from nbgrader.auth import Authenticator
    from nbgrader.converters import GenerateAssignment
    from nbgrader.coursedir import CourseDirectory
    from nbgrader.exchange.default import ExchangeReleaseAssignment

    config = nbgrader_settings.load(Course(root)).config
    config.CourseDirectory.root = str(root)
    config.CourseDirectory.assignment_id = "mini"
    config.Exchange.root = str(exchange)
    coursedir = CourseDirectory(config=config)
    if action == "generate":
        converter = GenerateAssignment(coursedir=coursedir, config=config)
        converter.force = True
        converter.start()
    else:
        ExchangeReleaseAssignment(
            coursedir=coursedir, authenticator=Authenticator(config=config), config=config
        ).start()


@pytest.fixture(scope="module")
def released_course(mini_course, tmp_path_factory):
    """The mini course, generated into its gradebook and released to an exchange (built once)."""
    base = tmp_path_factory.mktemp("service")
    root = release.copy_course(mini_course, base / "course", with_release=True).root
    exchange = base / "exchange"
    exchange.mkdir()
    os.chmod(exchange, 0o777)  # nbgrader requires a world-writable exchange root
    cwd = os.getcwd()
    try:
        _nbgrader_in_process(root, exchange, "generate")
        _nbgrader_in_process(root, exchange, "release")
    finally:
        os.chdir(cwd)
    return base


@pytest.fixture
def classroom_setup(released_course, tmp_path):
    """A private copy of the released course and its exchange, configured for the service."""
    base = tmp_path / "class"
    shutil.copytree(released_course, base, symlinks=True)
    root, exchange = base / "course", base / "exchange"
    with open(root / "nbgrader_config.py", "a", encoding="utf-8") as config:
        config.write(
            f"\nc.Exchange.root = {str(exchange)!r}\n"
            "c.GradingService.lease_seconds = 6\nc.GradingService.poll_seconds = 0.2\n"
            # The simulated students share the tests' uid and are on no roster (tests of the
            # exchange's trust rules set their own: tests/nbgrader/test_exchange_trust.py).
            "c.ExchangeTrust.allow_new_students = True\n"
        )
    return root, exchange, base


class ServiceProcess:
    def __init__(self, root: pathlib.Path, log_path: pathlib.Path):
        self.log_path = log_path
        env = dict(os.environ, PYTHONPATH=str(WORKTREE), PYTHONDONTWRITEBYTECODE="1")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "autograder",
                "serve",
                "--course",
                str(root),
                "--jobs",
                "2",
                "--cell-timeout",
                "20",
                "--timeout",
                "60",
            ],
            stdout=subprocess.DEVNULL,
            stderr=open(log_path, "w"),
            env=env,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def graded(self) -> list[str]:
        """student/assignment of every submission this service reports it graded."""
        return re.findall(r" graded (\S+/\S+) \(", self.log())

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def services(tmp_path):
    started = []

    def start(root, name="service"):
        service = ServiceProcess(root, tmp_path / f"{name}.log")
        started.append(service)
        return service

    yield start
    for service in started:
        service.stop()


def wait_for(condition, what: str, services=()):
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        for service in services:
            assert service.process.poll() is None, f"the service died:\n{service.log()[-3000:]}"
        time.sleep(0.2)
    logs = "\n".join(service.log()[-3000:] for service in services)
    raise AssertionError(f"timed out waiting for {what}\n{logs}")


def queue_rows(root):
    loaded = nbgrader_settings.load(Course(root))
    db_url, course_id = loaded.db_url, loaded.course_id
    return jobqueue.Queue(jobqueue.connect(db_url), course_id).rows()


def finish(processes):
    for process in processes:
        output, _ = process.communicate(timeout=WAIT_SECONDS)
        assert process.returncode == 0, output


def test_students_fetch_their_own_feedback_seconds_after_submitting(classroom_setup, services, capsys):
    """bob uses nbgrader's command line throughout; ada and cy the same exchange classes in-process."""
    root, exchange, base = classroom_setup
    course = Course(root)
    service = services(root)
    ada, bob, cy = make_students(["ada", "bob", "cy"], base / "homes", exchange, COURSE_ID)
    ada.fetch_assignment("mini")
    cy.fetch_assignment("mini")
    finish([bob.cli("fetch_assignment", "mini")])
    ada.write_notebook("mini", "mini", classroom.filled_notebook(course, "mini", "mini"))
    bob.write_notebook(
        "mini",
        "mini",
        classroom.filled_notebook(course, "mini", "mini", {"mini_matrix_answer": "W = [[2, 0], [0, 2]]"}),
    )
    submitting = bob.cli("submit", "mini")
    ada.submit("mini")
    cy.submit("mini")  # the blank release
    finish([submitting])

    wait_for(lambda: all(s.feedback_in_exchange("mini", "mini") for s in (ada, bob, cy)), "feedback", [service])
    fetching = bob.cli("fetch_feedback", "mini")
    ada.fetch_feedback("mini")
    cy.fetch_feedback("mini")
    finish([fetching])
    pages = {student.name: student.fetched_feedback("mini") for student in (ada, bob, cy)}
    for name, by_time in pages.items():
        assert len(by_time) == 1 and set(next(iter(by_time.values()))) == {"mini"}, (name, by_time)
    ada_page, bob_page, cy_page = (next(iter(pages[name].values()))["mini"] for name in ("ada", "bob", "cy"))
    assert "differs from the identity" in bob_page and "differs from the identity" not in ada_page
    assert len(list((exchange / COURSE_ID / "feedback").glob("*.html"))) == 3, "one page per submission"
    assert auto_scores(root) == {
        "ada": {"mini_matrix": 2, "mini_function": 2, "mini_why": 0},
        "bob": {"mini_matrix": 0, "mini_function": 2, "mini_why": 0},
        "cy": {"mini_matrix": 0, "mini_function": 0, "mini_why": 0},
    }
    assert cy_page != bob_page
    # The page is nbgrader's own generate_feedback page (up to how BeautifulSoup re-serialises it)
    # with the renderer's template (nbgrader's feedback template, a compact stylesheet).
    from bs4 import BeautifulSoup
    from nbgrader.converters import GenerateFeedback
    from nbgrader.coursedir import CourseDirectory

    from autograder.nbgrader import feedback

    config = feedback.converter_config(nbgrader_settings.load(Course(root)).config, root, "mini", "bob")
    stock = GenerateFeedback(coursedir=CourseDirectory(config=config), config=config)
    stock.force = True
    cwd = os.getcwd()
    try:
        stock.start()
    finally:
        os.chdir(cwd)
    stock_page = (root / "feedback" / "bob" / "mini" / "mini.html").read_text()
    assert str(BeautifulSoup(stock_page, "html.parser")) == str(BeautifulSoup(bob_page, "html.parser"))

    # A manual grade, then a worse resubmission: the manual grade stays, the feedback is new.
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{root / 'gradebook.db'}", COURSE_ID) as gradebook:
        gradebook.find_grade("mini_why", "mini", "mini", "ada").manual_score = 1
        gradebook.db.commit()
    first_submission = ada.last_submission("mini")
    time.sleep(0.01)  # a later nbgrader timestamp
    ada.write_notebook(
        "mini",
        "mini",
        classroom.filled_notebook(course, "mini", "mini", {"mini_matrix_answer": "W = [[0, 1], [1, 0]]"}),
    )
    ada.submit("mini")
    assert ada.last_submission("mini") != first_submission
    wait_for(lambda: ada.feedback_in_exchange("mini", "mini"), "ada's new feedback", [service])
    ada.fetch_feedback("mini")
    newest = ada.fetched_feedback("mini")[max(ada.fetched_feedback("mini"))]["mini"]
    assert "differs from the identity" in newest
    assert auto_scores(root)["ada"] == {"mini_matrix": 0, "mini_function": 2, "mini_why": 1}

    def status():
        capsys.readouterr()
        assert main(["status", "--course", str(root), "--json"]) == 0
        return json.loads(capsys.readouterr().out)

    # a submission counts as done once its feedback process has said the page is out, a moment
    # after the page reaches the exchange
    data = wait_for(lambda: (found := status())["states"]["done"] == 4 and found, "4 done", [service])
    assert data["states"]["failed"] == 0 and data["graded_last_hour"] == 4
    assert data["latency_median_seconds"] > 0


def test_kill_9_mid_grade_and_two_services_lose_nothing_and_grade_nothing_twice(classroom_setup, services):
    root, exchange, base = classroom_setup
    course = Course(root)
    answers = classroom.model_answers(course, "mini", "mini")
    slow = classroom.filled_notebook(
        course, "mini", "mini", {"mini_matrix_answer": "import time\ntime.sleep(6)\n" + answers["mini_matrix_answer"]}
    )
    names = ["sam", "s1", "s2", "s3", "s4", "s5"]
    people = make_students(names, base / "homes", exchange, COURSE_ID)
    for student in people:
        student.fetch_assignment("mini")
        student.write_notebook(
            "mini", "mini", slow if student.name == "sam" else classroom.filled_notebook(course, "mini", "mini")
        )

    doomed = services(root, "doomed")
    people[0].submit("mini")
    wait_for(
        lambda: any(row.state == jobqueue.RUNNING for row in queue_rows(root)), "the slow grade to start", [doomed]
    )
    time.sleep(1.5)  # well inside the six-second cell
    doomed.process.kill()  # SIGKILL: no clean-up of any kind
    doomed.process.wait()
    (row,) = queue_rows(root)
    assert row.state == jobqueue.RUNNING and row.student == "sam"

    for student in people[1:]:
        student.submit("mini")
    first, second = services(root, "first"), services(root, "second")
    wait_for(
        lambda: len(queue_rows(root)) == len(names) and all(row.state == jobqueue.DONE for row in queue_rows(root)),
        "every submission graded",
        [first, second],
    )

    rows = {row.student: row for row in queue_rows(root)}
    assert rows["sam"].attempts == 2, "the interrupted grade was taken over"
    assert all(rows[name].attempts == 1 for name in names[1:])
    graded = first.graded() + second.graded()
    assert sorted(graded) == sorted(f"{name}/mini" for name in names), "each submission graded once"
    assert all(score == {"mini_matrix": 2, "mini_function": 2, "mini_why": 0} for score in auto_scores(root).values())
    assert set(auto_scores(root)) == set(names)
    assert all(student.feedback_in_exchange("mini", "mini") for student in people)


def test_a_grading_child_killed_mid_grade_is_the_graders_fault_retried_and_graded_in_full(classroom_setup, services):
    """The service grades in a child process; one killed (say, by the out-of-memory killer) is a
    fault of the grader: the submission is graded again by a new child, not scored as broken."""
    root, exchange, base = classroom_setup
    course = Course(root)
    answers = classroom.model_answers(course, "mini", "mini")
    slow = classroom.filled_notebook(
        course, "mini", "mini", {"mini_matrix_answer": "import time\ntime.sleep(4)\n" + answers["mini_matrix_answer"]}
    )
    (sam,) = make_students(["sam"], base / "homes", exchange, COURSE_ID)
    sam.fetch_assignment("mini")
    sam.write_notebook("mini", "mini", slow)
    service = services(root)
    found = wait_for(
        lambda: re.search(r"grading lane 1 process ready \(pid (\d+)\)", service.log()), "the grading child", [service]
    )
    sam.submit("mini")
    wait_for(lambda: any(row.state == jobqueue.RUNNING for row in queue_rows(root)), "the grade to start", [service])
    time.sleep(1.5)  # inside the slow cell
    os.kill(int(found.group(1)), signal.SIGKILL)  # lane 1's child: the first lane takes the first claim
    wait_for(lambda: sam.feedback_in_exchange("mini", "mini"), "sam's feedback", [service])
    wait_for(lambda: queue_rows(root)[0].state == jobqueue.DONE, "sam's submission done", [service])
    (row,) = queue_rows(root)
    assert row.attempts == 2, "graded again after the fault"
    assert "grader fault: the grading process died" in service.log()
    assert auto_scores(root) == {"sam": {"mini_matrix": 2, "mini_function": 2, "mini_why": 0}}
    assert service.graded() == ["sam/mini"]


def test_policy_rate_limit_and_withheld_messages(classroom_setup, capsys):
    """In-process: one graded submission per hour, and no messages before the deadline (none is set)."""
    from autograder.service.service import Service

    root, exchange, base = classroom_setup
    with open(root / "nbgrader_config.py", "a", encoding="utf-8") as config:
        config.write(
            "c.GradingService.assignments = {'mini': {'graded_per_window': 1, 'window_minutes': 60, "
            "'messages_before_deadline': False}}\n"
        )
    course = Course(root)
    (bob,) = make_students(["bob"], base / "homes", exchange, COURSE_ID)
    bob.fetch_assignment("mini")
    bob.write_notebook(
        "mini",
        "mini",
        classroom.filled_notebook(course, "mini", "mini", {"mini_matrix_answer": "W = [[2, 0], [0, 2]]"}),
    )
    bob.submit("mini")
    Service(course, jobs=2).run(until_idle=True)
    bob.fetch_feedback("mini")
    (first,) = bob.fetched_feedback("mini").values()
    assert "FAIL" in first["mini"] and "differs from the identity" not in first["mini"]
    assert "shown after the due date" in first["mini"]

    time.sleep(0.01)
    bob.submit("mini")
    Service(course, jobs=2).run(until_idle=True)  # returns: the new submission is not due for an hour
    bob.fetch_feedback("mini")
    second = bob.fetched_feedback("mini")[max(bob.fetched_feedback("mini"))]["mini"]
    assert "will be graded at" in second
    capsys.readouterr()
    assert main(["status", "--course", str(root), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["states"]["queued"] == 1 and data["waiting_for_policy"] == 1 and data["states"]["done"] == 1


def _set_due_date(root, when) -> None:
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{root / 'gradebook.db'}", COURSE_ID) as gradebook:
        gradebook.update_or_create_assignment("mini", duedate=when)


def test_after_deadline_hold_keeps_late_work_for_the_instructor_until_released(classroom_setup, capsys):
    """In-process: with after_deadline = "hold", late submissions wait, held, with a notice to the
    student; `grade-held` releases one (graded with nbgrader's late penalty, which its feedback
    shows), and a policy change to "grade" releases the rest."""
    from nbgrader.api import Gradebook

    from autograder.service.service import Service

    root, exchange, base = classroom_setup
    config_file = root / "nbgrader_config.py"
    with open(config_file, "a", encoding="utf-8") as config:
        config.write(
            "c.LateSubmissionPlugin.penalty_method = 'zero'\n"
            "c.GradingService.assignments = {'mini': {'after_deadline': 'hold'}}\n"
        )
    _set_due_date(root, datetime.datetime(2020, 1, 1, 12, 0))
    course = Course(root)
    ada, bob = make_students(["ada", "bob"], base / "homes", exchange, COURSE_ID)
    for student in (ada, bob):
        student.fetch_assignment("mini")
        student.write_notebook("mini", "mini", classroom.filled_notebook(course, "mini", "mini"))
        student.submit("mini")
    first = ada.last_submission("mini")
    time.sleep(0.01)
    ada.submit("mini")  # a resubmission supersedes the held one
    assert ada.last_submission("mini") != first
    Service(course, jobs=2).run(until_idle=True)  # returns: nothing is due

    states = {(row.student, row.state) for row in queue_rows(root)}
    assert states == {("ada", jobqueue.SUPERSEDED), ("ada", jobqueue.HELD), ("bob", jobqueue.HELD)}
    assert not (root / "autograded").exists() or not any((root / "autograded").iterdir()), "nothing graded"
    for student in (ada, bob):
        student.fetch_feedback("mini")
        pages = student.fetched_feedback("mini")  # by submission time (ada's superseded one has a notice too)
        notice = pages[max(pages)]
        assert "after the due date (2020-01-01 12:00 UTC)" in notice["mini"], notice["mini"]
        assert "kept, ungraded, for your instructor" in notice["mini"]
    capsys.readouterr()
    assert main(["status", "--course", str(root)]) == 0
    shown = capsys.readouterr().out
    assert "2 held for the instructor" in shown and "HELD ada/mini" in shown and "HELD bob/mini" in shown

    assert main(["grade-held", "--course", str(root), "mini", "--student", "ada"]) == 0
    assert "1 held submission of mini by ada queued" in capsys.readouterr().out
    Service(course, jobs=2).run(until_idle=True)
    with Gradebook(f"sqlite:///{root / 'gradebook.db'}", COURSE_ID) as gradebook:
        graded = gradebook.find_submission_notebook("mini", "mini", "ada")
        assert graded.score == 4 and graded.late_submission_penalty == 4, "penalty_method 'zero' after the due date"
        assert {s.student.id for s in gradebook.assignment_submissions("mini")} == {"ada"}, "bob is still held"
    ada.fetch_feedback("mini")
    page = ada.fetched_feedback("mini")[max(ada.fetched_feedback("mini"))]["mini"]
    assert "Late submission penalty (Score: -4.0)" in page
    assert {row.student: row.state for row in queue_rows(root) if row.state != jobqueue.SUPERSEDED} == {
        "ada": jobqueue.DONE,
        "bob": jobqueue.HELD,
    }

    with open(config_file, "a", encoding="utf-8") as config:
        config.write("c.GradingService.assignments = {'mini': {'after_deadline': 'grade'}}\n")
    Service(course, jobs=2).run(until_idle=True)  # the policy no longer holds bob's: it is graded
    assert {row.student: row.state for row in queue_rows(root) if row.state != jobqueue.SUPERSEDED} == {
        "ada": jobqueue.DONE,
        "bob": jobqueue.DONE,
    }
    bob.fetch_feedback("mini")
    page = bob.fetched_feedback("mini")[max(bob.fetched_feedback("mini"))]["mini"]
    assert "Late submission penalty (Score: -4.0)" in page and "kept, ungraded" not in page


def _forge(exchange: pathlib.Path, course: Course, name: bytes, stamp: str) -> pathlib.Path:
    """A submission folder made by hand in inbound, as a dishonest student can (any name, any date)."""
    folder = os.fsencode(exchange / COURSE_ID / "inbound") + b"/" + name
    os.mkdir(folder)
    with open(folder + b"/mini.ipynb", "w", encoding="utf-8") as notebook:
        json.dump(classroom.filled_notebook(course, "mini", "mini"), notebook)
    with open(folder + b"/timestamp.txt", "w", encoding="utf-8") as claim:
        claim.write(stamp)
    return pathlib.Path(os.fsdecode(folder))


def test_who_and_when_come_from_the_exchange_not_from_names(classroom_setup, capsys, caplog):
    """In-process discovery on a real exchange, where all students share the tests' uid (as in
    containers): the roster decides who is graded, the arrival decides lateness and which
    submission is newest, and names that are globs, markup, control codes or not UTF-8 are
    refused with the reason, shown escaped, without stopping discovery."""
    from nbgrader.api import Gradebook

    from autograder.service.service import Service

    root, exchange, base = classroom_setup
    with open(root / "nbgrader_config.py", "a", encoding="utf-8") as config:
        config.write(
            "c.ExchangeTrust.allow_new_students = False\n"
            "c.GradingService.assignments = {'mini': {'after_deadline': 'hold'}}\n"
        )
    now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
    with Gradebook(f"sqlite:///{root / 'gradebook.db'}", COURSE_ID) as gradebook:
        gradebook.update_or_create_assignment("mini", duedate=now - datetime.timedelta(hours=1))
        for student in ("ada", "bob", "daemon"):
            gradebook.update_or_create_student(student)
    course = Course(root)
    yesterday = (now - datetime.timedelta(days=1)).strftime("%Y-%m-%d %H:%M:%S.%f UTC")
    # An hour after the due date, dated the day before in its name and timestamp.txt.
    backdated = _forge(exchange, course, f"ada+mini+{yesterday}+1".encode(), yesterday)
    # Dated 2099, then an honest resubmission (nbgrader submit) that must not be superseded by it.
    future = _forge(exchange, course, b"bob+mini+2099-01-01 00:00:00.000000 UTC+2", "2099-01-01 00:00:00.000000 UTC")
    time.sleep(0.05)
    (bob,) = make_students(["bob"], base / "homes", exchange, COURSE_ID)
    bob.fetch_assignment("mini")
    bob.write_notebook("mini", "mini", classroom.filled_notebook(course, "mini", "mini"))
    bob.submit("mini")
    (honest,) = [p for p in (exchange / COURSE_ID / "inbound").iterdir() if p.name.startswith("bob+") and p != future]
    # Names a dishonest student can use; the exchange's folder of the account "daemon" (uid 1)
    # that belongs to uid 65534 is someone else's.
    refused = {
        b"mallory+mini+2026-12-01 10:00:00.000000 UTC+3": "not on the course roster",
        b"*+mini+2026-12-01 10:00:00.000000 UTC+4": "globs, shells, HTML or CSV",
        b"<img src=x onerror=alert(1)>+mini+2026-12-01 10:00:00.000000 UTC+5": "globs, shells, HTML or CSV",
        b"\xff\xfe+mini+2026-12-01 10:00:00.000000 UTC+6": "not UTF-8",
        b"ada+mini+2026-12-01 10:00:00.000000 UTC\x1b[2J\x1b[H+7": "control characters",
    }
    for name in refused:
        _forge(exchange, course, name, "2026-12-01 10:00:00.000000 UTC")
    if os.geteuid() == 0:
        daemon = _forge(exchange, course, b"daemon+mini+2026-12-01 10:00:00.000000 UTC+8", "")
        os.chown(daemon, 65534, 65534)
        refused[os.fsencode(daemon.name)] = "not by daemon, the account of the student it names"
    late_honest = _forge(exchange, course, f"ada+mini+{yesterday}+9".encode(), yesterday)  # after the junk

    service = Service(course, jobs=1)
    with caplog.at_level("INFO", logger="autograder.service"):
        service.assignments()
        service.discover()
        service.discover()  # the refused names are remembered: nothing new, nothing logged again
    states = {row.origin: row.state for row in queue_rows(root)}
    assert states == {
        backdated.name: jobqueue.SUPERSEDED,  # by ada's later one: both arrived after the due date
        late_honest.name: jobqueue.HELD,
        future.name: jobqueue.SUPERSEDED,
        honest.name: jobqueue.HELD,
    }, states
    logged = caplog.text
    assert "\x1b" not in logged and "\\x1b[2J" in logged and "\\xff\\xfe+mini" in logged
    assert logged.count("is not collected") == len(refused)
    capsys.readouterr()
    assert main(["status", "--course", str(root)]) == 0
    shown = capsys.readouterr().out
    assert shown.startswith("identity: "), shown  # "daemon" has an account, the others not
    assert "for the others identity cannot be verified, and only students on the roster are graded" in shown
    flags = [line for line in shown.splitlines() if line.startswith("  FLAG ")]
    for name, reason in refused.items():
        (line,) = [line for line in flags if names.shown(os.fsdecode(name)) in line]
        assert reason in line
    assert "\x1b" not in shown
    assert sum("minutes before its arrival" in line for line in flags) == 2  # ada's two backdated claims
    assert sum("in the future of its arrival" in line for line in flags) == 1


def test_a_submission_changed_after_it_was_first_seen_is_dated_by_the_change(classroom_setup, monkeypatch):
    """Queued before the due date and rewritten after it (while it waited, say for the rate
    limit), a submission is dated by its last change when collected, and held under "hold"."""
    from nbgrader.api import Gradebook

    from autograder.service import service as service_module

    root, exchange, base = classroom_setup
    with open(root / "nbgrader_config.py", "a", encoding="utf-8") as config:
        config.write("c.GradingService.assignments = {'mini': {'after_deadline': 'hold'}}\n")
    due = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None) + datetime.timedelta(seconds=3)
    with Gradebook(f"sqlite:///{root / 'gradebook.db'}", COURSE_ID) as gradebook:
        gradebook.update_or_create_assignment("mini", duedate=due)
    course = Course(root)
    folder = _forge(exchange, course, b"ada+mini+2026-12-01 10:00:00.000000 UTC+1", "2026-12-01 10:00:00.000000 UTC")
    service = service_module.Service(course, jobs=1)
    service.discover()
    (row,) = queue_rows(root)
    assert row.state == jobqueue.QUEUED  # on time when it was first seen
    time.sleep(4)
    (folder / "mini.ipynb").write_text((folder / "mini.ipynb").read_text())  # rewritten after the due date
    monkeypatch.setattr(service_module, "RETIME_SLACK_SECONDS", 1.0)  # not a minute: the test cannot wait
    (job,) = service.queue.claim(1)
    assert service._collect(job) is False
    (row,) = queue_rows(root)
    assert row.state == jobqueue.HELD and row.submitted_at > due.replace(tzinfo=datetime.timezone.utc).timestamp()
    assert "after the due date" in row.message


def test_a_flood_is_queued_in_one_pass_and_takes_one_lane(classroom_setup):
    """A hundred submissions of one student and a hundred under invented names, then an honest
    student's: one discovery pass queues the flooder's newest (the rest superseded) and the
    honest one, refuses the invented names without queueing them, and wakes the main loop; two
    lanes take the flooder and the honest student, never two of the flooder's."""
    from nbgrader.api import Gradebook

    from autograder.service.service import Service

    root, exchange, _ = classroom_setup
    with open(root / "nbgrader_config.py", "a", encoding="utf-8") as config:
        config.write("c.ExchangeTrust.allow_new_students = False\n")
    with Gradebook(f"sqlite:///{root / 'gradebook.db'}", COURSE_ID) as gradebook:
        for student in ("flooder", "honest"):
            gradebook.update_or_create_student(student)
    course = Course(root)
    stamp = "2026-12-01 10:00:00.000000 UTC"
    flood = [_forge(exchange, course, f"flooder+mini+{stamp}+{n:03d}".encode(), stamp) for n in range(100)]
    for n in range(100):
        _forge(exchange, course, f"invented{n:03d}+mini+{stamp}+x".encode(), stamp)
    honest = _forge(exchange, course, f"honest+mini+{stamp}+h".encode(), stamp)

    service = Service(course, jobs=2)
    service.assignments()
    assert service.discover() == 101
    assert service.wake.is_set(), "the main loop is woken to claim at once"
    states = {row.origin: row.state for row in queue_rows(root)}
    newest = max(flood, key=lambda folder: (folder.stat().st_ctime, folder.name))
    assert states.pop(honest.name) == jobqueue.QUEUED
    assert states.pop(newest.name) == jobqueue.QUEUED
    assert set(states.values()) == {jobqueue.SUPERSEDED} and len(states) == 99, "the invented names are not queued"
    refused = [flag for flag in service.queue.flags(500) if flag.kind == jobqueue.REFUSED]
    assert sorted(flag.origin for flag in refused) == [f"invented{n:03d}+mini+{stamp}+x" for n in range(100)]
    assert service.discover() == 0, "nothing is looked at twice"
    assert sorted(job.student for job in service.queue.claim(2)) == ["flooder", "honest"]
