"""`python -m autograder serve --course ROOT`: grade each submission as it arrives, and release its feedback.

One loop: scan the exchange inbound (or, for a course without an exchange, submitted/) for
submissions not seen before and enqueue them in the gradebook's database; claim what is due
(several students at once under a burst, one at a time when idle); collect each claimed
submission into submitted/ as `nbgrader collect --update` would; grade the claimed students
with the batch grader (the same sanitising, sandboxed grading and recording into the gradebook
and autograded/, manual grades never overwritten); generate and release each student's
feedback; mark the queue rows done. A thread renews this service's claims; a service that dies
stops renewing them, and another service (or this one restarted) takes them over.
"""

from __future__ import annotations

import collections
import datetime
import logging
import os
import pathlib
import signal
import threading
import time

from autograder.core.course import Course
from autograder.nbgrader import batch
from autograder.nbgrader import settings as nbgrader_settings
from autograder.sandbox import supervisor as sandbox
from autograder.service import collect, feedback
from autograder.service import queue as jobqueue
from autograder.service.policy import GradingService

log = logging.getLogger("autograder.service")

ASSIGNMENTS_REFRESH_SECONDS = 30
SUMMARY_SECONDS = 60
CLAIM_CHUNKS = 4


def exchange_inbound(config, course_id: str) -> pathlib.Path:
    """Where `nbgrader submit` puts this course's submissions (the exchange's root as configured)."""
    from nbgrader.exchange.default import Exchange

    return pathlib.Path(Exchange(config=config).root) / course_id / "inbound"


class Service:
    def __init__(
        self,
        course: Course,
        limits: sandbox.Limits | None = None,
        isolation: str = "auto",
        jobs: int | None = None,
        settings: GradingService | None = None,
    ):
        from nbgrader.coursedir import CourseDirectory

        self.course, self.limits, self.isolation = course, limits or sandbox.Limits(), isolation
        loaded = nbgrader_settings.load(course)  # the whole configuration chain, as nbgrader reads it
        self.config = loaded.config
        self.config.CourseDirectory.root = str(course.root)
        self.settings = settings or GradingService(config=self.config)
        self.jobs = jobs or self.settings.jobs or os.cpu_count() or 1
        self.db_url, self.course_id = loaded.db_url, loaded.course_id
        self.coursedir = CourseDirectory(config=self.config)
        self.inbound = exchange_inbound(self.config, self.course_id)
        self.uses_exchange = self.inbound.is_dir()
        self.outbound_feedback = self.inbound.parent / "feedback"
        self.collector = collect.Collector(self.coursedir)
        self.queue = jobqueue.Queue(
            jobqueue.connect(self.db_url),
            self.course_id,
            lease_seconds=self.settings.lease_seconds,
            max_attempts=self.settings.max_attempts,
        )
        self.known = self.queue.known_origins()
        self.duedates: dict[str, datetime.datetime | None] = {}
        self._assignments_at = 0.0
        self.claimed: list[int] = []
        self.stopping = threading.Event()
        self.stats: collections.Counter[str] = collections.Counter()
        self.latencies: collections.deque[float] = collections.deque(maxlen=1000)

    # -- the loop ------------------------------------------------------------------------------
    def run(self, until_idle: bool = False) -> None:
        """Serve until stopped (SIGTERM, SIGINT), or with `until_idle` until nothing is left to do."""
        batch._lighten_imports()
        # nbgrader's converters and exchange log every file they copy at INFO; the service logs
        # one line per submission instead (their warnings and errors still show).
        logging.getLogger("traitlets").setLevel(max(logging.WARNING, log.getEffectiveLevel()))
        where = self.inbound if self.uses_exchange else self.course.root / "submitted"
        log.info(
            "serving course %s (%s) from %s as %s; gradebook %s",
            self.course_id,
            self.course.root,
            where,
            self.queue.worker,
            self.db_url,
        )
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                signal.signal(signum, lambda *_: self.stopping.set())
        beating = threading.Thread(target=self._keep_claims, daemon=True)
        beating.start()
        summary_at = time.monotonic() + SUMMARY_SECONDS
        while not self.stopping.is_set():
            self.discover()
            claimed = self.queue.claim(self._claim_size())
            if claimed:
                self.grade(claimed)
            elif until_idle and not self._pending():
                break
            else:
                self.stopping.wait(self.settings.poll_seconds)
            if time.monotonic() > summary_at:
                self.log_summary()
                summary_at = time.monotonic() + SUMMARY_SECONDS
        self.log_summary()

    def _claim_size(self) -> int:
        # Idle, whoever submitted; under a burst, several of the batch grader's chunks, so that
        # its pipeline runs one chunk's sandboxes while the previous chunk is checked, recorded
        # and its feedback released.
        return CLAIM_CHUNKS * batch.CHUNK_NOTEBOOKS_PER_JOB * self.jobs

    def _pending(self) -> bool:
        now = time.time()
        return any(
            row.state == jobqueue.RUNNING or (row.state == jobqueue.QUEUED and row.not_before <= now)
            for row in self.queue.rows()
        )

    def _keep_claims(self) -> None:
        while not self.stopping.wait(max(0.2, self.settings.lease_seconds / 4)):
            try:
                self.queue.beat(list(self.claimed))
            except Exception:
                log.exception("renewing claims failed")

    # -- discovery -----------------------------------------------------------------------------
    def assignments(self) -> dict[str, datetime.datetime | None]:
        """assignment -> due date (naive UTC or None), as the gradebook lists them (refreshed now and then)."""
        if time.monotonic() - self._assignments_at > ASSIGNMENTS_REFRESH_SECONDS or not self.duedates:
            from nbgrader.api import Gradebook

            with Gradebook(self.db_url, self.course_id) as gradebook:
                self.duedates = {a.name: a.duedate for a in gradebook.assignments if a.notebooks}
            self._assignments_at = time.monotonic()
        return self.duedates

    def discover(self) -> int:
        """Enqueue submissions not seen before; returns how many were new."""
        names = set(self.assignments())
        if self.uses_exchange:
            found = collect.scan_inbound(self.inbound, names)
        else:
            found = collect.scan_submitted(self.course.root / "submitted", names)
        # Oldest first, so that a burst is graded in the order it arrived (a student's older
        # submission found together with a newer one is superseded as the newer is enqueued).
        new = sorted((item for item in found if item.origin not in self.known), key=lambda item: item.submitted_at)
        for item in new:
            policy = self.settings.policy(item.assignment)
            state = self.queue.enqueue(
                item.assignment,
                item.student,
                item.origin,
                item.submitted_at,
                lambda started, p=policy: p.not_before(started, time.time()),
            )
            self.known.add(item.origin)
            if state is None:
                continue
            self.stats[f"found {state}"] += 1
            log.info("found %s/%s submitted %s: %s", item.student, item.assignment, item.timestamp, state)
            if state == jobqueue.QUEUED:
                self._notice_if_deferred(item, policy)
        return len(new)

    def _notice_if_deferred(self, item: collect.Found, policy) -> None:
        wait_until = self.queue.not_before(item.origin)
        if wait_until <= time.time() or not self.uses_exchange or not policy.instant_feedback:
            return
        secret = feedback.read_secret(item.path)
        notebooks = sorted(path.stem for path in item.path.glob("*.ipynb") if not path.is_symlink())
        if secret and notebooks:
            when = time.strftime("%Y-%m-%d %H:%M %Z", time.localtime(wait_until))
            feedback.release_notice(
                self.outbound_feedback,
                secret,
                notebooks,
                f"{item.assignment}: submission received",
                f"You have used the {policy.graded_per_window} graded submissions of this "
                f"{policy.window_minutes:g}-minute window. This submission is kept and will be graded at {when}; "
                f"fetch your feedback again after that.",
            )
        log.info("%s/%s: rate limit reached, graded at %s", item.student, item.assignment, wait_until)

    # -- grading -------------------------------------------------------------------------------
    def grade(self, claimed: list[jobqueue.Job]) -> None:
        by_assignment = collections.defaultdict(list)
        for job in claimed:
            by_assignment[job.assignment].append(job)
        self.claimed = [job.id for job in claimed]
        try:
            for assignment, jobs in by_assignment.items():
                self._grade_assignment(assignment, jobs)
        finally:
            self.claimed = []

    def _grade_assignment(self, assignment: str, jobs: list[jobqueue.Job]) -> None:
        started = time.monotonic()
        ready = []
        for job in jobs:
            try:
                if self.uses_exchange:
                    self._collect(job)
                ready.append(job)
            except Exception as error:  # noqa: BLE001 - one unreadable submission must not stop the others
                self._failed(job, f"could not collect the submission: {error}")
        if not ready:
            return
        policy = self.settings.policy(assignment)
        withhold = not policy.messages_before_deadline and self._before_deadline(assignment)
        by_student = {job.student: job for job in ready}
        released: set[str] = set()

        def release(chunk) -> None:
            for work in chunk:
                self._release(by_student[work.student], policy, withhold, started, graded=True)
                released.add(work.student)

        grader = batch.BatchGrader(
            self.course,
            assignment,
            jobs=self.jobs,
            limits=self.limits,
            isolation=self.isolation,
            students=list(by_student),
            quiet=True,
            on_recorded=release,
        )
        try:
            grader.run()
        except Exception as error:
            log.exception("grading %s for %s failed", assignment, ", ".join(sorted(set(by_student) - released)))
            for student in set(by_student) - released:
                self._failed(by_student[student], f"grader fault: {error!r}")
            return
        faulty = {entry.split("/", 1)[0] for entry in grader.flagged}  # left ungraded by a fault of the grader
        for student in sorted(faulty - released):
            self._failed(by_student[student], "grader fault: the submission was not graded (see the grader's log)")
        for student in set(by_student) - released - faulty:  # recorded before a restart: feedback only
            self._release(by_student[student], policy, withhold, started, graded=False)

    def _release(self, job: jobqueue.Job, policy, withhold: bool, started: float, graded: bool) -> None:
        """Generate the job's feedback, release it (as the policy says) and mark the job done."""
        try:
            feedback.generate(self.config, self.course.root, job.assignment, job.student, withhold)
            if policy.instant_feedback and self.uses_exchange:
                feedback.release(self.config, self.course.root, job.assignment, job.student)
        except Exception as error:
            log.exception("feedback for %s/%s failed", job.student, job.assignment)
            self._failed(job, f"feedback failed: {error!r}")
            return
        note = None if graded else "already graded (recorded before a restart); feedback only"
        if self.queue.finish(job, note):
            latency = time.time() - job.submitted_at
            self.latencies.append(latency)
            self.stats["graded"] += 1
            log.info(
                "graded %s/%s (%s) in %.2f s; %.2f s after submission%s",
                job.student,
                job.assignment,
                job.origin,
                time.monotonic() - started,
                latency,
                f"; {note}" if note else "",
            )
        else:
            log.warning(
                "%s/%s: the claim expired while grading (another service took it over)", job.student, job.assignment
            )

    def _collect(self, job: jobqueue.Job) -> None:
        folder = self.inbound / job.origin
        if folder.is_symlink() or not folder.is_dir():
            raise FileNotFoundError(f"{folder} is gone or not a directory")
        stamp = job.origin.rsplit("+", 3)[2]
        found = collect.Found(job.student, job.assignment, stamp, job.submitted_at, job.origin, folder)
        self.collector.collect(found)

    def _before_deadline(self, assignment: str) -> bool:
        due = self.assignments().get(assignment)
        return due is None or datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None) < due

    def _failed(self, job: jobqueue.Job, message: str) -> None:
        state = self.queue.fail(job, message)
        self.stats["faults"] += 1
        log.error(
            "%s/%s: %s (%s)",
            job.student,
            job.assignment,
            message,
            "will retry" if state == jobqueue.QUEUED else "gave up",
        )

    def log_summary(self) -> None:
        counts = collections.Counter(row.state for row in self.queue.rows())
        latencies = sorted(self.latencies)
        median = f"{latencies[len(latencies) // 2]:.2f} s" if latencies else "-"
        log.info(
            "queue: %d queued, %d running, %d done, %d failed; this service graded %d (median %s after "
            "submission), %d faults",
            counts[jobqueue.QUEUED],
            counts[jobqueue.RUNNING],
            counts[jobqueue.DONE],
            counts[jobqueue.FAILED],
            self.stats["graded"],
            median,
            self.stats["faults"],
        )
