"""`python -m autograder serve --course ROOT`: grade each submission as it arrives, and release its feedback.

A thread scans the exchange inbound (or, for a course without an exchange, submitted/) for
submissions not seen before and enqueues them in the gradebook's database with their arrival
time (held for the instructor instead when the policy holds late work); folders it refuses (a
name that is no acceptable student id, a folder not owned by the student it names, a student
not on the roster where identity cannot be verified) are flagged for `status`, once. The main
loop fills `--jobs` grading lanes, one student's claim per lane and never two of one student at
once, so a slow or numerous student holds up no one else; each lane collects its submission
into submitted/ by handle (core/collector.py) and has its own child process grade it with the
batch grader (the same sanitising, sandboxed grading and recording into the gradebook and
autograded/, manual grades never overwritten); each student's feedback, once their grades are
committed, goes to another child that generates and releases it, and the queue row is marked
done as that child reports the page out. The children are replaced now and then
(core/processes.py), so the service's memory stays flat. A thread renews this service's claims
until then; a service that dies stops renewing them, and another service (or this one
restarted) takes them over.
"""

from __future__ import annotations

import collections
import concurrent.futures
import datetime
import functools
import logging
import os
import pathlib
import queue as queue_module
import signal
import threading
import time

from autograder.core import collector, names, processes
from autograder.core.course import Course
from autograder.nbgrader import settings as nbgrader_settings
from autograder.nbgrader.course_view import CourseView, SubmissionKey
from autograder.nbgrader.lock import GraderBusy
from autograder.sandbox import supervisor as sandbox
from autograder.service import collect, engines, feedback, feedback_process, grading_process
from autograder.service import queue as jobqueue
from autograder.service.policy import GradingService

log = logging.getLogger("autograder.service")


class _OneTerminalLine(logging.Filter):
    """Every line the service logs is one line of printable text: a folder name or a message
    holding terminal control codes (a cleared screen, forged lines) is shown escaped."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = names.shown(record.getMessage(), 4000), None
        return True


log.addFilter(_OneTerminalLine())

ASSIGNMENTS_REFRESH_SECONDS = 30
SUMMARY_SECONDS = 60
NOTICES_PER_STUDENT = 10  # notice pages a student gets per NOTICE_WINDOW_SECONDS (a flood writes no more)
NOTICE_WINDOW_SECONDS = 3600
BUSY_RETRY_SECONDS = 10  # how often claims wait on a batch grader that holds the assignment
RETIME_SLACK_SECONDS = 60  # files changed this long after the folder was first dated: the submission is re-dated
LOGGED_REFUSALS_PER_SCAN = 20  # an inbound of junk logs a few lines and a count, not a line per name


def exchange_inbound(config, course_id: str) -> pathlib.Path:
    """Where `nbgrader submit` puts this course's submissions (the exchange's root as configured)."""
    from nbgrader.exchange.default import Exchange

    return pathlib.Path(Exchange(config=config).root) / course_id / "inbound"


def _utc(epoch: float) -> str:
    return datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _duration(seconds: float) -> str:
    """A lateness as a student reads it: "40 seconds", "3 minutes", "2.5 hours", "4.0 days"."""
    if seconds < 90:
        return f"{max(1, round(seconds))} seconds"
    if seconds < 90 * 60:
        return f"{round(seconds / 60)} minutes"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} hours"
    return f"{seconds / 86400:.1f} days"


class Service:
    def __init__(
        self,
        course: Course,
        limits: sandbox.Limits | None = None,
        isolation: str = "auto",
        jobs: int | None = None,
        settings: GradingService | None = None,
    ):
        self.course, self.limits, self.isolation = course, limits or sandbox.Limits(), isolation
        self.view = CourseView.load(course)  # the whole configuration chain, as nbgrader reads it
        self.config = self.view.config
        self.config.CourseDirectory.root = str(course.root)
        self.fixed_settings = settings is not None  # else re-read with the due dates, so a policy change applies
        self.settings = settings or GradingService(config=self.config)
        self.jobs = jobs or self.settings.jobs or os.cpu_count() or 1
        self.coursedir = self.view.coursedir
        self.inbound = exchange_inbound(self.config, self.view.course_id)
        self.uses_exchange = self.inbound.is_dir()
        self.outbound_feedback = self.inbound.parent / "feedback"
        self.trust = collector.ExchangeTrust(config=self.config)
        self.collector = collect.Collector(self.coursedir, self.trust)
        self.scanner = collect.Scanner(self.inbound, self.trust)
        self.roster: set[str] = set()  # nbgrader's students table, refreshed with the due dates
        self.notebook_ids: dict[str, set[str]] = {}
        self.queue = jobqueue.Queue(
            jobqueue.connect(self.view.db_url),
            self.view.course_id,
            lease_seconds=self.settings.lease_seconds,
            max_attempts=self.settings.max_attempts,
        )
        self.known = self.queue.known_origins()
        self.duedates: dict[str, datetime.datetime | None] = {}
        self._assignments_at = 0.0
        # Claims this service holds: being graded, or graded and waiting for their feedback.
        self.claimed: set[int] = set()
        self.claimed_lock = threading.Lock()  # the heartbeat thread reads the claims
        # Lanes: a grading child each, grading one student's claim at a time, so that a slow
        # submission holds up its own lane only, never the feedback of students on the others.
        self.lanes: queue_module.Queue[grading_process.GradingProcess] = queue_module.Queue()
        self.gradings = [grading_process.GradingProcess(course.root) for _ in range(self.jobs)]
        for grading in self.gradings:
            self.lanes.put(grading)
        self.in_flight: set[concurrent.futures.Future] = set()
        self.feedback = feedback_process.FeedbackProcess(course.root)
        self.feedback_lock = threading.Lock()  # lanes hand feedback over; the main loop collects it
        self.awaiting: list[tuple] = []  # (future, job, grading started, note) per feedback in the making
        self.notices: dict[str, collections.deque[float]] = collections.defaultdict(collections.deque)
        self.stopping = threading.Event()
        # Set when there may be work for the main loop (a submission queued, a lane or a page
        # done), so that it claims at once instead of at its next poll.
        self.wake = threading.Event()
        self.discovering = threading.Lock()  # the discovery thread, and run(until_idle) itself
        self.refreshing = threading.Lock()  # due dates and policy, read by both threads
        self.stats: collections.Counter[str] = collections.Counter()
        self.latencies: collections.deque[float] = collections.deque(maxlen=1000)

    # -- the loop ------------------------------------------------------------------------------
    def run(self, until_idle: bool = False) -> None:
        """Serve until stopped (SIGTERM, SIGINT), or with `until_idle` until nothing is left to do."""
        processes.prepare_process()
        engines.share_gradebook_engines()  # a new engine per Gradebook opened creeps in a long run
        # nbgrader's converters and exchange log every file they copy at INFO; the service logs
        # one line per submission instead (their warnings and errors still show).
        logging.getLogger("traitlets").setLevel(max(logging.WARNING, log.getEffectiveLevel()))
        where = self.inbound if self.uses_exchange else self.view.step_root(self.coursedir.submitted_directory)
        log.info(
            "serving course %s (%s) from %s as %s; gradebook %s",
            self.view.course_id,
            self.course.root,
            where,
            self.queue.worker,
            self.view.db_url,
        )
        self.assignments()  # the roster, for what follows
        if self.uses_exchange:
            described = self.trust.describe(self.roster)
            (log.warning if "cannot be verified" in described else log.info)("%s", described)
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                signal.signal(signum, self._stop)
        # Claims are renewed until this run has finished with them, through a stop's last grades
        # and feedback too (`finished`, not `stopping`).
        finished = threading.Event()
        threading.Thread(target=self._keep_claims, args=(finished,), daemon=True).start()
        # Submissions are found and queued while others are graded: a burst is in the queue (for
        # status, and for other services) at once, and the first claim need not wait for the last
        # of its enqueue transactions.
        threading.Thread(target=self._keep_discovering, args=(finished,), daemon=True).start()
        for index, process in enumerate(self.gradings):
            process.start().add_done_callback(functools.partial(self._log_ready, f"grading lane {index + 1}"))
        self.feedback.start().add_done_callback(functools.partial(self._log_ready, "feedback"))
        summary_at = time.monotonic() + SUMMARY_SECONDS
        lanes = concurrent.futures.ThreadPoolExecutor(self.jobs, thread_name_prefix="grading-lane")
        try:
            while not self.stopping.is_set():
                self.wake.clear()  # whatever happens from here on wakes the wait below
                if until_idle:
                    self.discover()  # what is in the exchange now is queued before "idle" is judged
                self.collect_feedback()
                self._reap_lanes()
                free = self.jobs - len(self.in_flight)
                # One student per claim, at most one claim per student in flight, a student's
                # next claim due only once their last is done (Queue.claim): a student's slow or
                # numerous submissions wait in their own lane, and everyone else's are graded on
                # the others, in the order they arrived.
                claimed = self.queue.claim(free) if free > 0 else []
                for job in claimed:
                    future = lanes.submit(self._grade_on_lane, job)
                    future.add_done_callback(lambda _: self.wake.set())
                    self.in_flight.add(future)
                if claimed:
                    continue
                if until_idle and not self.in_flight and not self._pending():
                    break
                self.wake.wait(self.settings.poll_seconds)
                if time.monotonic() > summary_at:
                    self.log_summary()
                    summary_at = time.monotonic() + SUMMARY_SECONDS
        finally:
            lanes.shutdown(wait=True)  # what is being graded is graded
            self._reap_lanes()
            self.collect_feedback(wait=True)  # what is graded gets its feedback before the service stops
            self.feedback.close()
            for grading in self.gradings:
                grading.close()
            finished.set()
        self.log_summary()

    def _stop(self, *_) -> None:
        self.stopping.set()
        self.wake.set()

    def _grade_on_lane(self, job: jobqueue.Job) -> None:
        grading = self.lanes.get()
        try:
            self.grade([job], grading)
        finally:
            self.lanes.put(grading)

    def _reap_lanes(self) -> None:
        for future in [future for future in self.in_flight if future.done()]:
            self.in_flight.discard(future)
            if future.exception() is not None:  # grade() handles the grader's faults; this is a bug
                log.error("a grading lane failed", exc_info=future.exception())

    @staticmethod
    def _log_ready(name: str, ready) -> None:
        if not ready.exception():
            log.info("%s process ready (pid %s)", name, ready.result())

    def _pending(self) -> bool:
        now = time.time()
        return any(
            row.state == jobqueue.RUNNING or (row.state == jobqueue.QUEUED and row.not_before <= now)
            for row in self.queue.rows()
        )

    def _keep_discovering(self, finished: threading.Event) -> None:
        while not (self.stopping.is_set() or finished.is_set()):
            try:
                self.discover()
            except Exception:
                log.exception("scanning for submissions failed")
            finished.wait(self.settings.poll_seconds)

    def _keep_claims(self, finished: threading.Event) -> None:
        while not finished.wait(max(0.2, self.settings.lease_seconds / 4)):
            try:
                with self.claimed_lock:
                    claims = sorted(self.claimed)
                self.queue.beat(claims)
            except Exception:
                log.exception("renewing claims failed")

    # -- discovery -----------------------------------------------------------------------------
    def assignments(self) -> dict[str, datetime.datetime | None]:
        """assignment -> due date (naive UTC or None), as the gradebook lists them; refreshed now
        and then, with the policy (the course's nbgrader_config.py read again), and then held
        submissions the policy no longer holds are queued."""
        with self.refreshing:
            return self._assignments()

    def _assignments(self) -> dict[str, datetime.datetime | None]:
        if time.monotonic() - self._assignments_at > ASSIGNMENTS_REFRESH_SECONDS or not self.duedates:
            first = self._assignments_at == 0.0  # the policy was just read, by __init__
            with self.view.gradebook() as gradebook:
                self.duedates = {a.name: a.duedate for a in gradebook.assignments if a.notebooks}
                self.notebook_ids = {a.name: {nb.name for nb in a.notebooks} for a in gradebook.assignments}
                self.roster = {student.id for student in gradebook.students}
            self._assignments_at = time.monotonic()
            if not first and not self.fixed_settings:
                self._reload_policy()
            self.release_unheld()
        return self.duedates

    def _reload_policy(self) -> None:
        try:
            config = nbgrader_settings.load(self.course).config
            settings = GradingService(config=config)
            for assignment in self.duedates:
                settings.policy(assignment)  # an invalid override is refused before it applies
        except Exception as error:  # noqa: BLE001 - a configuration being edited must not stop the service
            log.warning("keeping the previous policy: the configuration does not load (%s)", error)
            return
        self.settings = settings

    def deadline(self, assignment: str, student: str) -> float | None:
        """When a submission of `student` becomes late (epoch seconds): the gradebook's due date
        plus the student's extension, as nbgrader computes lateness; None without a due date."""
        due = self.duedates.get(assignment)  # as last read by assignments()
        if due is None:
            return None
        from nbgrader.api import MissingEntry

        with self.view.gradebook() as gradebook:
            try:
                extension = gradebook.find_submission(assignment, student).extension
            except MissingEntry:
                extension = None
        moment = due + (extension or datetime.timedelta(0))
        return moment.replace(tzinfo=datetime.timezone.utc).timestamp()

    def _hold_reason(
        self, policy, assignment: str, student: str, submitted_at: float, deadlines: dict | None = None
    ) -> str | None:
        """Why the policy holds this submission for the instructor, or None; `deadlines` caches
        the students' deadlines over one pass."""
        if policy.after_deadline != "hold":
            return None
        if deadlines is None:
            deadlines = {}
        if (assignment, student) not in deadlines:
            deadlines[(assignment, student)] = self.deadline(assignment, student)
        deadline = deadlines[(assignment, student)]
        if deadline is None or not policy.holds(submitted_at, deadline):
            return None
        return (
            f"held for the instructor: submitted {_duration(submitted_at - deadline)} after the due date "
            f"({_utc(deadline)}); `python -m autograder grade-held` releases it"
        )

    def release_unheld(self) -> int:
        """Queue the held submissions that the policy in force no longer holds (it changed to
        "grade", or the due date or the student's extension moved past them)."""
        due_now = [
            row.id
            for row in self.queue.rows(states=(jobqueue.HELD,))
            if not self._hold_reason(
                self.settings.policy(row.assignment), row.assignment, row.student, row.submitted_at
            )
        ]
        released = self.queue.release_held(ids=due_now) if due_now else 0
        if released:
            log.info("%d held submissions queued for grading: the policy no longer holds them", released)
        return released

    def discover(self) -> int:
        """Enqueue submissions not seen before; returns how many were new."""
        with self.discovering:
            return self._discover()

    def _discover(self) -> int:
        assignments = set(self.assignments())
        if self.uses_exchange:
            found, refused = self.scanner.scan(assignments, self.known, self.roster)
            self._flag([(name, jobqueue.REFUSED, reason) for name, reason in refused.items()], "is not collected")
            self._flag(
                [
                    (item.origin, jobqueue.TIMESTAMP, flag)
                    for item in found
                    if (flag := self.trust.claim_flag(item.timestamp, item.submitted_at))
                ],
                "is graded by its arrival time:",
            )
        else:
            found = collect.scan_submitted(self.view, assignments)
        # Oldest first, so that a burst is graded in the order it arrived (a student's older
        # submission found together with a newer one is superseded as the newer is enqueued),
        # all in one transaction: a flood costs one commit, and whoever submitted after it is
        # queued (and the main loop woken) without waiting for a commit per flood submission.
        new = sorted((item for item in found if item.origin not in self.known), key=lambda item: item.submitted_at)
        newest = {(item.student, item.assignment): item for item in new}  # the others are superseded
        deadlines: dict[tuple[str, str], float | None] = {}  # one gradebook look-up per student, not per folder
        submissions, policies = [], []
        for item in new:
            policy = self.settings.policy(item.assignment)
            hold = None
            if newest[(item.student, item.assignment)] is item:
                hold = self._hold_reason(policy, item.assignment, item.student, item.submitted_at, deadlines)
            policies.append(policy)
            submissions.append(
                jobqueue.Submission(
                    item.assignment,
                    item.student,
                    item.origin,
                    item.submitted_at,
                    functools.partial(self._not_before, policy),
                    hold,
                )
            )
        results = self.queue.enqueue_many(submissions)
        self.known.update(item.origin for item in new)
        if any(state == jobqueue.QUEUED for state, _ in results):
            self.wake.set()
        for item, policy, (state, not_before) in zip(new, policies, results):
            if state is None:
                continue
            self.stats[f"found {state}"] += 1
            log.info("found %s/%s submitted %s: %s", item.student, item.assignment, item.timestamp, state)
            if newest[(item.student, item.assignment)] is not item:
                continue  # superseded in the same transaction: no notice for it
            if state == jobqueue.QUEUED:
                self._notice_if_deferred(item, policy, not_before)
            elif state == jobqueue.HELD:
                self._notice_held(item, policy)
        return len(new)

    @staticmethod
    def _not_before(policy, graded_start_times: list[float]) -> float:
        return policy.not_before(graded_start_times, time.time())

    def _flag(self, items: list[tuple[str, str, str]], verb: str) -> None:
        """Record flags for the instructor (status shows them) and log the new ones, escaped."""
        new = self.queue.flag(items) if items else []
        for origin, _, message in new[:LOGGED_REFUSALS_PER_SCAN]:
            log.warning("%s %s %s", origin, verb, message)
        if len(new) > LOGGED_REFUSALS_PER_SCAN:
            log.warning("... and %d more (python -m autograder status lists them)", len(new) - LOGGED_REFUSALS_PER_SCAN)
        self.stats["flagged"] += len(new)

    def _notice_held(self, item: collect.Found, policy) -> None:
        log.info("%s/%s: submitted after the due date, held for the instructor", item.student, item.assignment)
        deadline = self.deadline(item.assignment, item.student)
        if deadline is None or not self.uses_exchange or not policy.instant_feedback:
            return
        self._notice(
            item,
            f"{item.assignment}: submission received after the due date",
            f"This submission arrived {_duration(item.submitted_at - deadline)} after the due date "
            f"({_utc(deadline)}). It is kept, ungraded, for your instructor, who decides whether "
            "work handed in late is graded; if it is, your feedback will replace this page.",
        )

    def _notice(self, item: collect.Found, title: str, text: str) -> None:
        # Read by handle (the folder may have been swapped for a link to another student's), and
        # a page per notebook of the assignment only: not one per file a student can make.
        sent = self.notices[item.student]
        while sent and sent[0] < time.time() - NOTICE_WINDOW_SECONDS:
            sent.popleft()
        if len(sent) >= NOTICES_PER_STUDENT:
            return
        secret, notebooks = collect.notice_facts(item, self.notebook_ids.get(item.assignment, set()))
        if secret and notebooks:
            sent.append(time.time())
            feedback.release_notice(self.outbound_feedback, secret, notebooks, title, text)

    def _notice_if_deferred(self, item: collect.Found, policy, wait_until: float) -> None:
        if wait_until <= time.time() or not self.uses_exchange or not policy.instant_feedback:
            return
        when = time.strftime("%Y-%m-%d %H:%M %Z", time.localtime(wait_until))
        self._notice(
            item,
            f"{item.assignment}: submission received",
            f"You have used the {policy.graded_per_window} graded submissions of this "
            f"{policy.window_minutes:g}-minute window. This submission is kept and will be graded at {when}; "
            f"fetch your feedback again after that.",
        )
        log.info("%s/%s: rate limit reached, graded at %s", item.student, item.assignment, wait_until)

    # -- grading -------------------------------------------------------------------------------
    def grade(self, claimed: list[jobqueue.Job], grading: grading_process.GradingProcess | None = None) -> None:
        """Grade claimed jobs in `grading` (a lane's child; the first lane's by default)."""
        grading = grading or self.gradings[0]
        by_assignment = collections.defaultdict(list)
        for job in claimed:
            by_assignment[job.assignment].append(job)
        with self.claimed_lock:
            self.claimed.update(job.id for job in claimed)
        try:
            for assignment, jobs in by_assignment.items():
                self._grade_assignment(assignment, jobs, grading)
        finally:
            # Every claimed job was failed, or handed to the feedback process (claimed until it reports).
            with self.feedback_lock:
                waiting = {job.id for _, job, _, _ in self.awaiting}
            with self.claimed_lock:
                self.claimed.difference_update(job.id for job in claimed if job.id not in waiting)

    def _grade_assignment(self, assignment: str, jobs: list[jobqueue.Job], grading) -> None:
        started = time.monotonic()
        ready = []
        for job in jobs:
            try:
                if self.uses_exchange and not self._collect(job):
                    continue  # held: it changed after the due date
                ready.append(job)
            except collector.Refused as error:  # no fault of the grader: refused with the reason, never retried
                self.queue.refuse(job, f"not collected: {error}")
                self._flag([(job.origin, jobqueue.REFUSED, str(error))], "is not collected")
            except Exception as error:  # noqa: BLE001 - one unreadable submission must not stop the others
                self._failed(job, f"could not collect the submission: {error}")
        if not ready:
            return
        policy = self.settings.policy(assignment)
        withhold = not policy.messages_before_deadline and self._before_deadline(assignment)
        by_student = {job.student: job for job in ready}
        released: set[str] = set()

        def release(students: list[str]) -> None:
            for student in students:
                self._release(by_student[student], policy, withhold, started, graded=True)
                released.add(student)

        try:
            # One sandbox per lane: the lanes together run `jobs` at once.
            graded = grading.grade(
                assignment, list(by_student), release, jobs=1, limits=self.limits, isolation=self.isolation
            )
        except GraderBusy as error:  # a batch grader holds the assignment: no fault, wait for it
            log.warning("%s: %s; its submissions wait", assignment, error)
            for student in set(by_student) - released:
                self.queue.give_back(by_student[student], f"waiting: {error}", retry_after=BUSY_RETRY_SECONDS)
            return
        except Exception as error:  # WorkerDied too: the grading child died (the next claim starts another)
            log.error(
                "grading %s for %s failed: %r",
                assignment,
                ", ".join(sorted(set(by_student) - released)),
                error,
                exc_info=error,
            )
            reason = (
                f"the grading process died, killed or out of memory ({error})"
                if isinstance(error, processes.WorkerDied)
                else repr(error)
            )
            for student in set(by_student) - released:
                self._failed(by_student[student], f"grader fault: {reason}")
            return
        # left ungraded by a fault of the grader
        faulty = {SubmissionKey.parse(entry).student for entry in graded["flagged"]}
        for student in sorted(faulty - released):
            self._failed(by_student[student], "grader fault: the submission was not graded (see the grader's log)")
        for student in set(by_student) - released - faulty:  # recorded before a restart: feedback only
            self._release(by_student[student], policy, withhold, started, graded=False)

    def _release(self, job: jobqueue.Job, policy, withhold: bool, started: float, graded: bool) -> None:
        """Have the feedback process generate the job's feedback and release it (as the policy
        says); the job is marked done when it reports back (collect_feedback)."""
        note = None if graded else "already graded (recorded before a restart); feedback only"
        release = policy.instant_feedback and self.uses_exchange
        with self.feedback_lock:
            future = self.feedback.make(job.assignment, job.student, withhold, release)
            future.add_done_callback(lambda _: self.wake.set())  # the claim is done: the student's next is due
            self.awaiting.append((future, job, started, note))

    def collect_feedback(self, wait: bool = False) -> None:
        """Mark done the jobs whose feedback is out (with `wait`, once all of it is)."""
        with self.feedback_lock:  # lanes add to it meanwhile (without `wait`, nothing here blocks)
            still = []
            for future, job, started, note in self.awaiting:
                if not (wait or future.done()):
                    still.append((future, job, started, note))
                    continue
                try:
                    future.result()
                except processes.WorkerDied as error:  # the next submit starts a new child
                    self._failed(job, f"feedback failed: the feedback process died ({error})")
                except Exception as error:  # whatever the renderer raised: retried, then failed
                    log.error("feedback for %s/%s failed: %r", job.student, job.assignment, error, exc_info=error)
                    self._failed(job, f"feedback failed: {error!r}")
                else:
                    self._finish(job, started, note)
                with self.claimed_lock:
                    self.claimed.discard(job.id)
            self.awaiting = still

    def _finish(self, job: jobqueue.Job, started: float, note: str | None) -> None:
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

    def _collect(self, job: jobqueue.Job) -> bool:
        """Collect the job's submission into submitted/ (collector.Refused when it is refused);
        False when it changed after it was first dated and is now held for the instructor."""
        stamp = job.origin.rsplit("+", 3)[2]
        found = collect.Found(
            job.student, job.assignment, stamp, job.submitted_at, job.origin, self.inbound / job.origin
        )
        collected = self.collector.collect(found, self.roster | {job.student})  # on the roster when it was queued
        flag = self.trust.claim_flag(collected.claimed, collected.arrival)
        if flag:
            self._flag([(job.origin, jobqueue.TIMESTAMP, flag)], "is graded by its arrival time:")
        if collected.arrival <= job.submitted_at + RETIME_SLACK_SECONDS:
            return True
        # Changed after it was first seen (a file written since): it arrived when it last changed.
        policy = self.settings.policy(job.assignment)
        hold = self._hold_reason(policy, job.assignment, job.student, collected.arrival)
        self.queue.retime(job, collected.arrival, hold)
        log.warning(
            "%s/%s changed after it was first seen: dated %s%s",
            job.student,
            job.assignment,
            _utc(collected.arrival),
            ", held for the instructor" if hold else "",
        )
        return not hold

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
