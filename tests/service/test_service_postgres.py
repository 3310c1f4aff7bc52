"""The grading service on a PostgreSQL gradebook (the session's server, tests/builders/postgres.py),
end to end with students on a real exchange (the queue shared by concurrent workers, on SQLite
and PostgreSQL alike, is tests/service/test_service_parts.py)."""

import os

import pytest

from autograder.core.course import Course
from autograder.dev import classroom
from autograder.dev.students import make_students
from autograder.service import queue as jobqueue
from autograder.service.service import Service

pytestmark = pytest.mark.slow


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
