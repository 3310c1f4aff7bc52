"""The grading service's parts, in-process: its queue on SQLite (and, shared by workers, on PostgreSQL), its collection step, its policy and
its withholding of messages (the service itself, against a real exchange, is tests/service/test_service.py)."""

import os
import threading

import pytest

from autograder.core.collector import ExchangeTrust
from autograder.service import collect, feedback
from autograder.service import queue as jobqueue
from autograder.service.policy import GradingService, Policy


@pytest.fixture
def db_url(tmp_path):
    return f"sqlite:///{tmp_path / 'gradebook.db'}"


class Clock:
    """A clock the test moves by hand: leases and pauses expire when the test says so."""

    def __init__(self):
        self.now = 1_000_000.0

    def __call__(self):
        return self.now


def make_queue(db_url, worker, clock=None, **options):
    return jobqueue.Queue(jobqueue.connect(db_url), "course", worker=worker, clock=clock or Clock(), **options)


def test_a_submission_found_twice_is_enqueued_once(db_url):
    first, second = make_queue(db_url, "a"), make_queue(db_url, "b")
    assert first.enqueue("hw", "ada", "ada+hw+t1+x", 100.0) == jobqueue.QUEUED
    assert second.enqueue("hw", "ada", "ada+hw+t1+x", 100.0) is None
    assert len(first.rows()) == 1


def test_a_resubmission_supersedes_the_queued_one_and_an_older_one_found_late_is_superseded(db_url):
    queue = make_queue(db_url, "a")
    queue.enqueue("hw", "ada", "old", 100.0)
    queue.enqueue("hw", "ada", "new", 200.0)
    assert queue.enqueue("hw", "ada", "older", 50.0) == jobqueue.SUPERSEDED
    states = {row.origin: row.state for row in queue.rows()}
    assert states == {"old": jobqueue.SUPERSEDED, "new": jobqueue.QUEUED, "older": jobqueue.SUPERSEDED}
    (job,) = queue.claim(10)
    assert job.origin == "new"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)])
def any_db_url(request, tmp_path):
    """A fresh gradebook database on each engine the service supports: an SQLite file, and a
    database of the session's PostgreSQL server (claims by `SELECT ... FOR UPDATE SKIP LOCKED`)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'gradebook.db'}"
    server = request.getfixturevalue("postgres")
    return server.url(server.create_database())


def test_workers_sharing_a_queue_split_it_without_overlap(any_db_url):
    setup = make_queue(any_db_url, "setup")
    for number in range(60):
        setup.enqueue("hw", f"student{number}", f"origin{number}", 100.0)
    taken: dict[str, list[str]] = {name: [] for name in ("a", "b", "c", "d")}

    def drain(worker):
        queue = make_queue(any_db_url, worker)
        while jobs := queue.claim(4):
            taken[worker] += [job.origin for job in jobs]
            for job in jobs:
                assert queue.finish(job)

    threads = [threading.Thread(target=drain, args=(worker,)) for worker in taken]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    everything = sorted(origin for origins in taken.values() for origin in origins)
    assert everything == sorted(f"origin{number}" for number in range(60)), "each job claimed exactly once"
    assert {row.state for row in setup.rows()} == {jobqueue.DONE}


def test_a_student_is_never_graded_twice_at_once(db_url):
    queue = make_queue(db_url, "a")
    queue.enqueue("hw", "ada", "first", 100.0)
    (first,) = queue.claim(10)
    queue.enqueue("hw", "ada", "second", 200.0)  # arrives while the first is being graded
    assert queue.claim(10) == []
    queue.finish(first)
    (second,) = queue.claim(10)
    assert second.origin == "second"


def test_claims_take_one_submission_per_student_in_the_order_they_became_due(db_url):
    """A student with submissions of several assignments takes one lane, never two: the others'
    submissions, even found later, are claimed before the student's second."""
    queue = make_queue(db_url, "a")
    for assignment in ("hw1", "hw2", "hw3"):
        queue.enqueue(assignment, "flooder", f"flooder+{assignment}+t+x", 100.0)
    queue.enqueue("hw1", "ada", "ada+hw1+t+x", 101.0)
    queue.enqueue("hw1", "bob", "bob+hw1+t+x", 102.0)
    claimed = queue.claim(3)
    assert [(job.student, job.assignment) for job in claimed] == [("flooder", "hw1"), ("ada", "hw1"), ("bob", "hw1")]
    assert queue.claim(3) == []  # the flooder has one in flight: their others wait for it
    queue.finish(claimed[0])
    assert [(job.student, job.assignment) for job in queue.claim(3)] == [("flooder", "hw2")]


def flood_then_honest(queue, clock, lanes: int) -> list[str]:
    """A flooder submits 100 times to each of three assignments (one transaction per batch, as
    the service's discovery records them), then an honest student submits once; `lanes` grading
    lanes drain the queue, each finishing its claim before the next claim is made. Returns the
    order in which students were claimed."""
    flood = [
        jobqueue.Submission(assignment, "flooder", f"flooder+{assignment}+{number}", 100.0 + number)
        for assignment in ("hw1", "hw2", "hw3")
        for number in range(100)
    ]
    queue.enqueue_many(flood)
    waiting = [row.origin for row in queue.rows(states=(jobqueue.QUEUED,))]
    assert waiting == [f"flooder+{assignment}+99" for assignment in ("hw1", "hw2", "hw3")], "the rest superseded"
    order = []
    (first,) = queue.claim(lanes)  # the flooder's first claim is being graded when the honest student submits
    order.append(first.student)
    clock.now += 1
    assert queue.enqueue("hw1", "honest", "honest+hw1+t+x", clock.now) == jobqueue.QUEUED
    in_flight = [first]
    while in_flight:
        clock.now += 1
        queue.finish(in_flight.pop(0))
        for job in queue.claim(lanes - len(in_flight)):
            order.append(job.student)
            in_flight.append(job)
    return order


@pytest.mark.parametrize("lanes", [1, 2])
def test_a_flood_from_one_student_never_places_another_students_claim_behind_it(db_url, lanes):
    """Whoever submits while a flooder is being graded is claimed before the flooder's next
    submission: behind the one claim in flight (one lane), or at once (two)."""
    clock = Clock()
    queue = make_queue(db_url, "a", clock)
    order = flood_then_honest(queue, clock, lanes)
    assert order == ["flooder", "honest", "flooder", "flooder"]
    rows = {row.student: row for row in queue.rows(states=(jobqueue.DONE,)) if row.student == "honest"}
    if lanes == 2:  # the honest student was claimed as soon as they were queued, not after a flooder's claim
        assert rows["honest"].started_at == rows["honest"].enqueued_at + 1


def test_a_student_served_long_ago_is_served_in_arrival_order(db_url):
    """The claim order is arrival order whenever no student has a claim just done: a student's
    earlier grading long ago does not put them behind students who submitted after them."""
    clock = Clock()
    queue = make_queue(db_url, "a", clock)
    queue.enqueue("hw1", "ada", "ada+hw1+1+x", clock.now)
    (old,) = queue.claim(1)
    queue.finish(old)
    clock.now += 3600
    queue.enqueue("hw1", "ada", "ada+hw1+2+x", clock.now)
    clock.now += 1
    queue.enqueue("hw1", "bob", "bob+hw1+1+x", clock.now)
    assert [job.student for job in queue.claim(1)] == ["ada"]


def test_a_dead_workers_claim_expires_and_is_retried_then_failed(db_url):
    clock = Clock()
    dead = make_queue(db_url, "dead", clock, lease_seconds=10, max_attempts=2)
    alive = make_queue(db_url, "alive", clock, lease_seconds=10, max_attempts=2)
    dead.enqueue("hw", "ada", "work", 100.0)
    (job,) = dead.claim(1)
    clock.now += 9
    dead.beat([job.id])
    clock.now += 9
    assert alive.claim(1) == [], "a renewed lease is not taken over"
    clock.now += 2
    (retry,) = alive.claim(1)
    assert retry.origin == "work" and retry.attempts == 2
    assert not dead.finish(job), "the dead worker's claim is gone"
    clock.now += 11
    assert alive.claim(1) == []
    (row,) = alive.rows()
    assert row.state == jobqueue.FAILED and "too often" in row.message


def test_an_interrupted_grade_is_superseded_by_a_resubmission_that_arrived_meanwhile(db_url):
    clock = Clock()
    queue = make_queue(db_url, "a", clock, lease_seconds=10)
    queue.enqueue("hw", "ada", "first", 100.0)
    queue.claim(1)
    queue.enqueue("hw", "ada", "second", 200.0)
    clock.now += 11
    (job,) = queue.claim(5)
    assert job.origin == "second"
    assert {row.origin: row.state for row in queue.rows()}["first"] == jobqueue.SUPERSEDED


def test_grader_faults_are_retried_after_a_pause(db_url):
    clock = Clock()
    queue = make_queue(db_url, "a", clock, max_attempts=2)
    queue.enqueue("hw", "ada", "work", 100.0)
    (job,) = queue.claim(1)
    assert queue.fail(job, "boom", retry_after=5) == jobqueue.QUEUED
    assert queue.claim(1) == []
    clock.now += 6
    (job,) = queue.claim(1)
    assert queue.fail(job, "boom again") == jobqueue.FAILED


def test_rate_limit_waits_for_the_oldest_graded_submission_to_leave_the_window():
    policy = Policy(graded_per_window=2, window_minutes=10)
    now = 10_000.0
    assert policy.not_before([now - 700, now - 100], now) == 0.0, "one of them is outside the window"
    assert policy.not_before([now - 300, now - 100], now) == now - 300 + 600
    assert Policy().not_before([now] * 50, now) == 0.0


def test_policy_overrides_per_assignment_and_rejects_unknown_options():
    from traitlets.config import Config

    config = Config()
    config.GradingService.graded_per_window = 3
    config.GradingService.assignments = {"hw2": {"instant_feedback": False, "graded_per_window": 1}}
    settings = GradingService(config=config)
    assert settings.policy("hw1") == Policy(graded_per_window=3)
    assert settings.policy("hw2") == Policy(instant_feedback=False, graded_per_window=1)
    settings.assignments = {"hw3": {"instant_feedbak": False}}
    with pytest.raises(ValueError, match="instant_feedbak"):
        settings.policy("hw3")


def test_held_submissions_are_never_claimed_until_released_and_a_resubmission_supersedes_them(db_url):
    queue = make_queue(db_url, "a")
    assert queue.enqueue("hw", "ada", "ada-late", 100.0, hold="held: late") == jobqueue.HELD
    assert queue.enqueue("hw", "bob", "bob-late", 100.0, hold="held: late") == jobqueue.HELD
    assert queue.claim(10) == []
    assert queue.enqueue("hw", "ada", "ada-later", 200.0, hold="held: late") == jobqueue.HELD
    assert queue.enqueue("hw", "ada", "ada-old", 50.0, hold="held: late") == jobqueue.SUPERSEDED
    states = {row.origin: row.state for row in queue.rows()}
    assert states == {
        "ada-late": jobqueue.SUPERSEDED,
        "bob-late": jobqueue.HELD,
        "ada-later": jobqueue.HELD,
        "ada-old": jobqueue.SUPERSEDED,
    }
    assert [row.origin for row in queue.rows(states=(jobqueue.HELD,))] == ["bob-late", "ada-later"]
    assert queue.release_held("hw", ["ada"]) == 1
    (job,) = queue.claim(10)
    assert job.origin == "ada-later"
    assert queue.release_held() == 1
    (job,) = queue.claim(10)
    assert job.origin == "bob-late" and queue.release_held() == 0


def test_after_deadline_policy_holds_only_late_work_and_only_when_asked():
    hold = Policy(after_deadline="hold")
    assert hold.holds(submitted_at=1001.0, deadline=1000.0)
    assert not hold.holds(submitted_at=999.0, deadline=1000.0)
    assert not hold.holds(submitted_at=1001.0, deadline=None), "no due date: nothing is late"
    assert not Policy().holds(submitted_at=1001.0, deadline=1000.0), "the default grades late work"
    with pytest.raises(ValueError, match="after_deadline"):
        Policy(after_deadline="keep")
    settings = GradingService()
    settings.assignments = {"hw": {"after_deadline": "hold"}}
    assert settings.policy("hw").after_deadline == "hold" and settings.policy("other").after_deadline == "grade"


class _CourseDirectory:
    """What the collector reads of nbgrader's CourseDirectory."""

    def __init__(self, root):
        self.root, self.submitted_directory = str(root), "submitted"
        self.ignore, self.include = [".ipynb_checkpoints", "*.pyc"], ["*"]
        self.max_file_size, self.max_dir_size = 100, 1000  # kB

    def format_path(self, step, student, assignment):
        return os.path.join(self.root, step, student, assignment)


def test_collection_follows_no_link_and_copies_only_regular_files(tmp_path):
    secret = tmp_path / "instructor_only.txt"
    secret.write_text("answers")
    inbound = tmp_path / "inbound" / "ada+hw+2026-12-01 10:00:00.000000 UTC+abc"
    (inbound / "data").mkdir(parents=True)
    (inbound / "hw.ipynb").write_text("{}")
    (inbound / "data" / "table.csv").write_text("1,2")
    (inbound / "timestamp.txt").write_text("2026-12-01 10:00:00.000000 UTC")
    (inbound / "answers.txt").symlink_to(secret)
    (inbound / "linked_dir").symlink_to(tmp_path, target_is_directory=True)
    os.mkfifo(inbound / "pipe")
    (inbound / ".ipynb_checkpoints").mkdir()
    (inbound / "big.bin").write_bytes(b"x" * 200_000)
    (found,), refused = collect.Scanner(inbound.parent, ExchangeTrust()).scan({"hw"}, set(), {"ada"})
    assert (found.student, found.assignment, refused) == ("ada", "hw", {})
    course = tmp_path / "course"
    skipped = collect.Collector(_CourseDirectory(course)).collect(found).left_out
    copied = course / "submitted" / "ada" / "hw"
    assert sorted(str(p.relative_to(copied)) for p in copied.rglob("*")) == [
        "data",
        "data/table.csv",
        "hw.ipynb",
        "timestamp.txt",
    ]
    assert not any(p.is_symlink() for p in copied.rglob("*"))
    assert sorted(skipped) == [
        "answers.txt: it is a symbolic link, not a regular file",
        "big.bin: larger than 100 kB",
        "linked_dir: it is a symbolic link, not a regular file",
        "pipe: it is a named pipe, not a regular file",
    ]
    # The timestamp nbgrader reads is the arrival (the folder's change time), not the claim.
    stamp = collect.parse_timestamp((copied / "timestamp.txt").read_text())
    assert abs(stamp - os.stat(inbound).st_ctime) < 1 < abs(stamp - collect.parse_timestamp(found.timestamp))


def test_scanning_ignores_what_nbgrader_submit_does_not_make(tmp_path):
    inbound = tmp_path / "inbound"
    inbound.mkdir()
    (inbound / "ada+hw+2026-12-01 10:00:00.000000 UTC+abc").mkdir()
    (inbound / "bob+hw+not a time+abc").mkdir()  # a claim that is not a date: graded by its arrival
    (inbound / "cy+other+2026-12-01 10:00:00.000000 UTC+abc").mkdir()
    (inbound / "dee+hw+2026-12-01 10:00:00.000000 UTC+abc").symlink_to(tmp_path, target_is_directory=True)
    (inbound / "stray").mkdir()
    (inbound / "..+hw+2026-12-01 10:00:00.000000 UTC+abc").mkdir()  # submitted/../hw is the course's hw/
    (inbound / ".+hw+2026-12-01 10:00:00.000000 UTC+abc").mkdir()
    scanner = collect.Scanner(inbound, ExchangeTrust(allow_new_students=True))
    found, refused = scanner.scan({"hw"}, set(), set())
    assert sorted(item.student for item in found) == ["ada", "bob"]
    assert sorted(name.split("+")[0] for name in refused) == [".", "..", "dee"]
    assert scanner.scan({"hw"}, set(), set()) == ([], {})  # each name looked at once
    fresh = collect.Scanner(inbound, ExchangeTrust(allow_new_students=True))
    found, _ = fresh.scan({"hw"}, {"ada+hw+2026-12-01 10:00:00.000000 UTC+abc"}, set())
    assert [item.student for item in found] == ["bob"]


def test_withheld_feedback_keeps_which_checks_passed_but_not_their_messages():
    from nbformat.v4 import new_code_cell, new_notebook, new_output

    from autograder.core.report import PART_RESULT_KEY, CheckResult, PartResult

    part = PartResult(
        "p1",
        1.0,
        3.0,
        [
            CheckResult("shape_is_right", "p1", 1.0, 1.0, True, ""),
            CheckResult("copies_dims", "p1", 0.0, 2.0, False, "head 1 copies dim 0 into dim 8 with gain -1.0"),
        ],
        figures=["<svg></svg>"],
    )
    cell = new_code_cell(
        "check()",
        metadata={"nbgrader": {"grade": True, "solution": False, "grade_id": "p1"}, PART_RESULT_KEY: part.to_json()},
        outputs=[new_output("display_data", data={"text/html": part.as_html(), "text/plain": part.as_text()})],
    )
    nb, _ = feedback.WithholdCheckMessages().preprocess(new_notebook(cells=[cell]), {})
    data = nb.cells[0].outputs[0]["data"]
    assert "dim 8" not in data["text/html"] and "svg" not in data["text/html"] and "dim 8" not in data["text/plain"]
    assert "FAIL copies_dims (0/2)" in data["text/html"] and "PASS shape_is_right (1/1)" in data["text/plain"]
    assert PART_RESULT_KEY not in nb.cells[0].metadata  # the messages do not reach the page as data either


def test_withheld_feedback_shows_no_line_a_message_forged():
    """The list is drawn from the checks themselves: a message that contains a check's line
    adds none (it did when the list was read back from the rendered text)."""
    from nbformat.v4 import new_code_cell, new_notebook, new_output

    from autograder.core.report import PART_RESULT_KEY, CheckResult, PartResult

    forged = "wrong\nPASS everything_is_fine (9/9)"
    part = PartResult("p1", 0.0, 1.0, [CheckResult("c", "p1", 0.0, 1.0, False, forged)])
    cell = new_code_cell(
        "check()",
        metadata={"nbgrader": {"grade": True, "solution": False, "grade_id": "p1"}, PART_RESULT_KEY: part.to_json()},
        outputs=[new_output("display_data", data={"text/html": part.as_html(), "text/plain": part.as_text()})],
    )
    nb, _ = feedback.WithholdCheckMessages().preprocess(new_notebook(cells=[cell]), {})
    data = nb.cells[0].outputs[0]["data"]
    assert data["text/plain"] == "Autograder, part p1: 0 / 1\nFAIL c (0/1)"
    assert "everything_is_fine" not in data["text/html"]


def test_withheld_feedback_of_a_cell_graded_before_results_were_kept_withholds_all_of_it():
    from nbformat.v4 import new_code_cell, new_notebook, new_output

    plain = "Autograder, part p1: 0 / 2\nFAIL copies_dims (0/2): head 1 copies dim 0 into dim 8"
    cell = new_code_cell(
        "check()",
        metadata={"nbgrader": {"grade": True, "solution": False, "grade_id": "p1"}},
        outputs=[new_output("display_data", data={"text/html": "<div>dim 8</div>", "text/plain": plain})],
    )
    nb, _ = feedback.WithholdCheckMessages().preprocess(new_notebook(cells=[cell]), {})
    (output,) = nb.cells[0].outputs
    assert "dim 8" not in str(output) and "shown after the due date" in output["data"]["text/html"]


def test_services_share_the_assignment_lock_that_a_batch_grader_takes_alone(tmp_path):
    from autograder.nbgrader.lock import GraderBusy, GraderLock

    url = f"sqlite:///{tmp_path / 'gradebook.db'}"
    with GraderLock(url, "course", "hw", shared=True), GraderLock(url, "course", "hw", shared=True):
        with pytest.raises(GraderBusy):
            GraderLock(url, "course", "hw").__enter__()
        with GraderLock(url, "course", "other"):  # another assignment is free
            pass
    with GraderLock(url, "course", "hw"):
        with pytest.raises(GraderBusy, match="pid"):
            GraderLock(url, "course", "hw", shared=True).__enter__()
    with GraderLock(url, "course", "hw"):  # all released
        pass


def test_a_claim_given_back_counts_no_attempt_and_waits(db_url):
    clock = Clock()
    queue = make_queue(db_url, "a", clock=clock)
    queue.enqueue("hw", "ada", "ada+hw", 100.0)
    (job,) = queue.claim(1)
    queue.give_back(job, "waiting: a batch grader holds hw", retry_after=10)
    (row,) = queue.rows()
    assert (row.state, row.attempts, row.claimed_by) == (jobqueue.QUEUED, 0, None)
    assert queue.claim(1) == [], "not before the pause is over"
    clock.now += 11
    (job,) = queue.claim(1)
    assert job.attempts == 1


def test_gradebooks_opened_on_one_url_share_an_engine_and_keep_working(tmp_path):
    """The service's processes open nbgrader Gradebooks all the time: one engine per URL, not one each."""
    from nbgrader.api import Gradebook

    from autograder.service import engines

    engines.share_gradebook_engines()
    url = f"sqlite:///{tmp_path / 'gradebook.db'}"
    with Gradebook(url, "course") as first:
        first.add_student("ada")
        first.db.commit()
        engine = first.engine
    with Gradebook(url, "course") as second:  # after the first one disposed the shared engine
        assert second.engine is engine
        assert [student.id for student in second.students] == ["ada"]
    with Gradebook(f"sqlite:///{tmp_path / 'other.db'}", "course") as other:
        assert other.engine is not engine


def test_the_feedback_child_is_replaced_after_its_pages_and_none_is_lost(mini_course):
    from autograder.service import feedback_process

    children = feedback_process.FeedbackProcess(mini_course.root, pages_per_child=3)
    try:
        # nobody here has autograded work: each page is made (as nothing) at once
        futures = [children.make("attention_heads", f"nobody{number}", False, False) for number in range(8)]
        makers = [future.result(timeout=120) for future in futures]
        children.make("attention_heads", "nobody8", False, False).result(timeout=120)
        # a page made is not remembered (a future held per page ever made crept ~1 KB a page)
        assert children.worker.in_hand() == 0
    finally:
        children.close()
    assert [len(set(makers[start : start + 3])) for start in (0, 3, 6)] == [1, 1, 1]  # three pages a child
    assert len(set(makers)) == 3, f"8 pages at 3 a child should take 3 children, took {len(set(makers))}"
    assert all(future.done() and future.exception() is None for future in futures)


def _class_of(root, count: int) -> list[str]:
    """`count` more students, each with the full model answer, in the generated class at root."""
    from autograder.core.course import Course
    from autograder.dev import classroom

    full = classroom.filled_notebook(Course(root), "mini", "mini")
    names = [f"s{number:02}" for number in range(count)]
    for name in names:
        classroom.write_submission(root, name, "mini", {"mini": full})
    return names


def _grade_in(children, students, on_recorded, jobs=1):
    from autograder.sandbox import supervisor as sandbox

    return children.grade(
        "mini",
        students,
        on_recorded,
        jobs=jobs,
        limits=sandbox.Limits(cell_seconds=5, total_seconds=30),
        isolation="auto",
    )


def _full_marks(root, students) -> bool:
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{root / 'gradebook.db'}", "transformer-circuits") as gradebook:
        return all(
            {grade.name: grade.score for grade in gradebook.find_submission_notebook("mini", "mini", name).grades}
            == {"mini_matrix": 2, "mini_function": 2, "mini_why": 0}
            for name in students
        )


def test_the_grading_child_reports_each_chunk_as_committed_and_is_replaced_after_its_submissions(mini_class):
    from autograder.nbgrader import batch
    from autograder.service import grading_process

    chunk = batch.CHUNK_NOTEBOOKS_PER_JOB
    many = _class_of(mini_class, 2 * chunk)
    children = grading_process.GradingProcess(mini_class, submissions_per_child=2 * chunk)
    reports: list[tuple[list[str], bool]] = []  # (students, whether the child was still grading)

    def on_recorded(students):
        reports.append((students, children.worker.in_hand() > 0))

    try:
        first = _grade_in(children, many, on_recorded)
        second = _grade_in(children, ["ada"], lambda students: reports.append((students, True)))
        third = _grade_in(children, ["bob"], lambda students: reports.append((students, True)))
    finally:
        children.close()
    # one report per chunk of the batch grader, the first while the second chunk was still being graded
    assert [students for students, _ in reports] == [many[:chunk], many[chunk:], ["ada"], ["bob"]]
    assert reports[0][1], "the first chunk was reported only once the whole claim was graded"
    assert first["recorded"] == many and first["flagged"] == []
    assert second["pid"] != first["pid"], f"the child was not replaced after its {2 * chunk} submissions"
    assert third["pid"] == second["pid"], "the new child was replaced before its allowance"
    assert _full_marks(mini_class, many + ["ada"])


def test_a_grading_child_that_dies_mid_claim_raises_there_and_the_next_claim_gets_a_new_child(mini_class):
    from autograder.core import processes
    from autograder.nbgrader import batch
    from autograder.service import grading_process

    chunk = batch.CHUNK_NOTEBOOKS_PER_JOB
    many = _class_of(mini_class, 2 * chunk)
    children = grading_process.GradingProcess(mini_class)
    pid = children.start().result(timeout=120)
    reported: list[str] = []

    def killed_after_the_first_chunk(students):
        reported.extend(students)
        os.kill(pid, 9)

    try:
        with pytest.raises(processes.WorkerDied):
            _grade_in(children, many, killed_after_the_first_chunk)
        assert reported == many[:chunk], "what was committed before the child died is reported, and no more"
        after = _grade_in(children, many[chunk:], reported.extend)
    finally:
        children.close()
    assert after["pid"] != pid and after["recorded"] == many[chunk:]
    assert _full_marks(mini_class, many)
