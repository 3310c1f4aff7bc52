"""The grading service on a PostgreSQL gradebook (the server test_gradebook_postgres.py starts):
claims through `SELECT ... FOR UPDATE SKIP LOCKED` shared by concurrent workers, and the
service end to end with students on a real exchange."""

import os
import threading

import pytest
from test_gradebook_postgres import postgres  # noqa: F401 - the session's PostgreSQL server

from autograder.core.course import Course
from autograder.dev import classroom
from autograder.dev.students import make_students
from autograder.service import queue as jobqueue
from autograder.service.service import Service

pytestmark = pytest.mark.slow


def test_workers_sharing_a_postgres_queue_split_it_without_overlap(postgres):
    url = postgres.url(postgres.create_database())
    setup = jobqueue.Queue(jobqueue.connect(url), "course", worker="setup")
    for number in range(60):
        setup.enqueue("hw", f"student{number}", f"origin{number}", 100.0)
    taken: dict[str, list[str]] = {name: [] for name in ("a", "b", "c", "d")}

    def drain(worker):
        queue = jobqueue.Queue(jobqueue.connect(url), "course", worker=worker)
        while jobs := queue.claim(4):
            taken[worker] += [job.origin for job in jobs]
            for job in jobs:
                assert queue.finish(job)

    threads = [threading.Thread(target=drain, args=(name,)) for name in taken]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    everything = sorted(origin for origins in taken.values() for origin in origins)
    assert everything == sorted(f"origin{number}" for number in range(60)), "each job claimed exactly once"
    assert {row.state for row in setup.rows()} == {jobqueue.DONE}


def test_a_flood_never_places_another_students_claim_behind_it_on_postgres(postgres):
    """The fair claim order (a student's next claim due once their last is done) on PostgreSQL."""
    from test_service_parts import Clock, flood_then_honest

    clock = Clock()
    queue = jobqueue.Queue(jobqueue.connect(postgres.url(postgres.create_database())), "course", clock=clock)
    assert flood_then_honest(queue, clock, 1) == ["flooder", "honest", "flooder", "flooder"]


def test_the_service_grades_exchange_submissions_into_a_postgres_gradebook(
    postgres,
    mini_course,
    tmp_path,
):
    from nbgrader.api import Gradebook
    from nbgrader.auth import Authenticator
    from nbgrader.converters import GenerateAssignment
    from nbgrader.coursedir import CourseDirectory
    from nbgrader.exchange.default import ExchangeReleaseAssignment

    from autograder.nbgrader import release
    from autograder.nbgrader import settings as nbgrader_settings

    url = postgres.url(postgres.create_database())
    root = release.copy_course(mini_course, tmp_path / "course", with_release=True).root
    exchange = tmp_path / "exchange"
    exchange.mkdir()
    os.chmod(exchange, 0o777)
    with open(root / "nbgrader_config.py", "a", encoding="utf-8") as config:
        config.write(f"\nc.CourseDirectory.db_url = {url!r}\nc.Exchange.root = {str(exchange)!r}\n")
        config.write("c.ExchangeTrust.allow_new_students = True\n")  # ada and bob share the tests' uid, on no roster
    config = nbgrader_settings.load(Course(root)).config
    config.CourseDirectory.root, config.CourseDirectory.assignment_id = str(root), "mini"
    cwd = os.getcwd()
    try:  # nbgrader generate_assignment and release_assignment, in-process
        generate = GenerateAssignment(coursedir=CourseDirectory(config=config), config=config)
        generate.force = True
        generate.start()
    finally:
        os.chdir(cwd)
    ExchangeReleaseAssignment(
        coursedir=CourseDirectory(config=config), authenticator=Authenticator(config=config), config=config
    ).start()
    course = Course(root)
    ada, bob = make_students(["ada", "bob"], tmp_path / "homes", exchange, "transformer-circuits")
    for student, notebook in (
        (ada, classroom.filled_notebook(course, "mini", "mini")),
        (bob, classroom.filled_notebook(course, "mini", "mini", blank=True)),
    ):
        student.fetch_assignment("mini")
        student.write_notebook("mini", "mini", notebook)
        student.submit("mini")
    Service(course, jobs=2).run(until_idle=True)
    for student in (ada, bob):
        student.fetch_feedback("mini")
        assert student.fetched_feedback("mini"), f"{student.name} got no feedback"
    with Gradebook(url, "transformer-circuits") as gradebook:
        assert gradebook.find_submission("mini", "ada").score == 4
        assert gradebook.find_submission("mini", "bob").score == 0
    rows = jobqueue.Queue(jobqueue.connect(url), "transformer-circuits").rows()
    assert sorted((row.student, row.state) for row in rows) == [("ada", jobqueue.DONE), ("bob", jobqueue.DONE)]
