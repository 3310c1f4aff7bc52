"""The grading service's durable queue: one table in the course's gradebook database.

Each row is one submission found in the exchange (or in submitted/): who, which assignment,
when it was submitted, and where it is in its life: queued -> running -> done, or failed after
too many attempts, or superseded by a newer submission of the same student; a submission the
policy holds for the instructor (after the due date) is held until released, then queued. The table lives
next to nbgrader's (same database, its own SQLAlchemy metadata, created on first use), so it is
as durable and as shared as the gradebook itself.

Nothing lost, nothing twice:
  * a submission is enqueued once: its origin (the exchange folder's name) is unique, so two
    services that find it at once insert one row;
  * claims are exclusive: `SELECT ... FOR UPDATE SKIP LOCKED` on PostgreSQL (services on several
    machines split the work), one immediate (write-locked) transaction on SQLite;
  * a claim is a lease kept alive by the claiming service's heartbeat; a service killed
    mid-grade stops beating, and once the lease runs out the row is queued again for anyone.
    The batch grader's marker (written after its gradebook commit) makes the retry record
    nothing twice: a submission already recorded is not graded again, only its feedback made;
  * a student has at most one queued (or held) row per assignment: enqueueing a newer submission
    supersedes the waiting older one, and a student's submissions are never graded concurrently.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import time
from collections.abc import Callable

import sqlalchemy as sa

TABLE = "autograder_grading_queue"

QUEUED, RUNNING, DONE, FAILED, SUPERSEDED = "queued", "running", "done", "failed", "superseded"
HELD = "held"  # kept for the instructor (submitted after the due date); never claimed until released
STATES = (QUEUED, HELD, RUNNING, DONE, FAILED, SUPERSEDED)
WAITING = (QUEUED, HELD)

metadata = sa.MetaData()
jobs = sa.Table(
    TABLE,
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("course_id", sa.String(128), nullable=False),
    sa.Column("assignment", sa.String(128), nullable=False),
    sa.Column("student", sa.String(128), nullable=False),
    # Where the submission is: the exchange inbound folder's name, or "submitted:<timestamp>".
    sa.Column("origin", sa.String(512), nullable=False),
    # When the submission arrived (epoch seconds): as the kernel dates its folder and files
    # (ctime), never what its name or timestamp.txt claim (core/collector.py).
    sa.Column("submitted_at", sa.Float, nullable=False),
    sa.Column("state", sa.String(16), nullable=False, default=QUEUED),
    sa.Column("not_before", sa.Float, nullable=False, default=0.0),  # policy: graded no earlier than this
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("claimed_by", sa.String(256)),
    sa.Column("heartbeat", sa.Float),
    sa.Column("enqueued_at", sa.Float, nullable=False),
    sa.Column("started_at", sa.Float),
    sa.Column("finished_at", sa.Float),
    sa.Column("message", sa.Text),  # why it failed, or why it waits
    sa.UniqueConstraint("course_id", "origin", name=f"{TABLE}_origin"),
    sa.Index(f"{TABLE}_pending", "course_id", "state", "not_before"),
    sa.Index(f"{TABLE}_student", "course_id", "assignment", "student"),
)
# A student's rows of any assignment (the claim order asks when their last claim was done); made
# on an existing table too (connect).
by_student = sa.Index(f"{TABLE}_by_student", jobs.c.course_id, jobs.c.student, jobs.c.state)


# What the instructor should know about a submission the service refused or doubts: a folder
# refused (a name that is no acceptable student id, a folder not owned by its student, a link),
# or a claimed timestamp in the future or far from the arrival. Shown by `status`.
flags = sa.Table(
    f"{TABLE}_flags",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("course_id", sa.String(128), nullable=False),
    sa.Column("origin", sa.String(512), nullable=False),  # escaped (names.shown): any name fits
    sa.Column("kind", sa.String(16), nullable=False),  # "refused" or "timestamp"
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("at", sa.Float, nullable=False),
    sa.UniqueConstraint("course_id", "origin", "kind", name=f"{TABLE}_flag_once"),
)
REFUSED, TIMESTAMP = "refused", "timestamp"


ENQUEUE_BATCH = 500  # submissions recorded per transaction


@dataclasses.dataclass(frozen=True)
class Submission:
    """A submission found, to be recorded (Queue.enqueue_many); `not_before_for` and `hold` as
    for Queue.enqueue."""

    assignment: str
    student: str
    origin: str
    submitted_at: float
    not_before_for: Callable[[list[float]], float] | None = None
    hold: str | None = None


@dataclasses.dataclass(frozen=True)
class Job:
    id: int
    assignment: str
    student: str
    origin: str
    submitted_at: float
    attempts: int


def worker_name() -> str:
    """Who holds a claim: host and process, as the status command shows it."""
    return f"{socket.gethostname()}:{os.getpid()}"


def connect(db_url: str) -> sa.Engine:
    """An engine on the gradebook's database, with the queue's table created if missing.

    On SQLite every transaction of this engine begins IMMEDIATE (takes the write lock at once),
    so a claim's read and its update are one atomic step between processes; the busy timeout
    makes a service wait for another's short transaction instead of failing.
    """
    if db_url.startswith("sqlite"):
        engine = sa.create_engine(db_url, connect_args={"timeout": 60}, poolclass=sa.pool.NullPool)

        @sa.event.listens_for(engine, "connect")
        def _driver_transactions_off(dbapi_connection, _record):
            dbapi_connection.isolation_level = None  # let SQLAlchemy's BEGIN below be the only one

        @sa.event.listens_for(engine, "begin")
        def _begin_immediate(connection):
            connection.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        engine = sa.create_engine(db_url, pool_pre_ping=True)
    metadata.create_all(engine, checkfirst=True)
    try:
        by_student.create(engine, checkfirst=True)
    except sa.exc.DatabaseError:  # another service made it between the check and the creation
        pass
    return engine


class Queue:
    """The queue of one course, as seen by one service (or by the status command)."""

    def __init__(
        self,
        engine: sa.Engine,
        course_id: str,
        lease_seconds: float = 60.0,
        max_attempts: int = 3,
        worker: str | None = None,
        clock=time.time,
    ):
        self.engine, self.course_id = engine, course_id
        self.lease_seconds, self.max_attempts = lease_seconds, max_attempts
        self.worker = worker or worker_name()
        self.postgres = engine.dialect.name == "postgresql"
        self.clock = clock  # seconds since the epoch; shared by all services through the database

    # -- enqueueing ----------------------------------------------------------------------------
    def known_origins(self) -> set[str]:
        with self.engine.connect() as connection:
            rows = connection.execute(sa.select(jobs.c.origin).where(jobs.c.course_id == self.course_id))
            return {row.origin for row in rows}

    def enqueue(
        self,
        assignment: str,
        student: str,
        origin: str,
        submitted_at: float,
        not_before_for=None,
        hold: str | None = None,
    ) -> str | None:
        """Record a submission found; returns its state (queued, held or superseded), or None
        when it was already known (found before, by this or another service).

        `not_before_for(graded_start_times) -> float` is the policy's rate limit: given when
        this student's graded submissions of the assignment started, when this one may start.
        `hold`: why the policy holds it for the instructor (held, not queued), or None.
        """
        (state, _), *_ = self.enqueue_many(
            [Submission(assignment, student, origin, submitted_at, not_before_for, hold)]
        )
        return state

    def enqueue_many(self, submissions: list[Submission]) -> list[tuple[str | None, float]]:
        """Record submissions found, in one transaction per ENQUEUE_BATCH (a flood of a hundred
        costs one commit, not a hundred, so whoever submitted after it is queued at once); for
        each, in order, its state as `enqueue` returns it and when it may be graded."""
        results: list[tuple[str | None, float]] = []
        for start in range(0, len(submissions), ENQUEUE_BATCH):
            batch = submissions[start : start + ENQUEUE_BATCH]
            try:
                with self.engine.begin() as connection:
                    results += [self._enqueue(connection, submission) for submission in batch]
            except sa.exc.IntegrityError:  # another service inserted one meanwhile: one at a time
                for submission in batch:
                    try:
                        with self.engine.begin() as connection:
                            results.append(self._enqueue(connection, submission))
                    except sa.exc.IntegrityError:
                        results.append((None, 0.0))
        return results

    def _enqueue(self, connection, submission: Submission) -> tuple[str | None, float]:
        assignment, student, origin, submitted_at = (
            submission.assignment,
            submission.student,
            submission.origin,
            submission.submitted_at,
        )
        now = self.clock()
        if (
            connection.execute(
                sa.select(jobs.c.id).where(jobs.c.course_id == self.course_id, jobs.c.origin == origin)
            ).first()
            is not None
        ):
            return None, 0.0
        same = (jobs.c.course_id == self.course_id) & (jobs.c.assignment == assignment) & (jobs.c.student == student)
        newer_exists = connection.execute(
            sa.select(sa.func.count()).where(
                same, jobs.c.state.in_((QUEUED, HELD, RUNNING, DONE)), jobs.c.submitted_at >= submitted_at
            )
        ).scalar()
        state = SUPERSEDED if newer_exists else HELD if submission.hold else QUEUED
        not_before = 0.0
        if state != SUPERSEDED:
            connection.execute(
                jobs.update()
                .where(same, jobs.c.state.in_(WAITING))
                .values(state=SUPERSEDED, finished_at=now, message=f"superseded by {origin}")
            )
            if submission.not_before_for is not None and state == QUEUED:
                started = [
                    row.started_at
                    for row in connection.execute(
                        sa.select(jobs.c.started_at).where(
                            same, jobs.c.state.in_((RUNNING, DONE)), jobs.c.started_at.is_not(None)
                        )
                    )
                ]
                not_before = submission.not_before_for(started)
        connection.execute(
            jobs.insert().values(
                course_id=self.course_id,
                assignment=assignment,
                student=student,
                origin=origin,
                submitted_at=submitted_at,
                state=state,
                not_before=not_before,
                attempts=0,
                enqueued_at=now,
                finished_at=now if state == SUPERSEDED else None,
                message="a newer submission exists"
                if state == SUPERSEDED
                else submission.hold
                if state == HELD
                else None,
            )
        )
        return state, not_before

    def release_held(
        self, assignment: str | None = None, students: list[str] | None = None, ids: list[int] | None = None
    ) -> int:
        """Queue held submissions for grading (all, or of one assignment, some students, some
        rows); returns how many. The next claim of any service grades them."""
        condition = (jobs.c.course_id == self.course_id) & (jobs.c.state == HELD)
        if assignment is not None:
            condition &= jobs.c.assignment == assignment
        if students:
            condition &= jobs.c.student.in_(students)
        if ids is not None:
            condition &= jobs.c.id.in_(ids)
        with self.engine.begin() as connection:
            result = connection.execute(
                jobs.update()
                .where(condition)
                .values(state=QUEUED, not_before=0.0, message="held after the due date; released for grading")
            )
            return result.rowcount

    # -- claiming ------------------------------------------------------------------------------
    def claim(self, limit: int) -> list[Job]:
        """Take up to `limit` due submissions for this worker, at most one per student and none
        of a student with a submission in flight (of any assignment): one student's submissions
        never take more than one grading lane. They are taken in the order they became due,
        where a student's next submission becomes due no earlier than their previous one was
        done (`_due`): whoever submitted while a flooder's claim was graded goes before the
        flooder's next, so a student's numerous submissions never place another student's
        behind more than the one being graded. Expired leases of dead workers are put back in
        the queue first."""
        now = self.clock()
        with self.engine.begin() as connection:
            self._requeue_expired(connection, now)
            running = jobs.alias("running")
            busy_student = sa.exists().where(
                running.c.course_id == jobs.c.course_id,
                running.c.student == jobs.c.student,
                running.c.state == RUNNING,
            )
            query = (
                sa.select(
                    jobs.c.id, jobs.c.assignment, jobs.c.student, jobs.c.origin, jobs.c.submitted_at, jobs.c.attempts
                )
                .where(
                    jobs.c.course_id == self.course_id, jobs.c.state == QUEUED, jobs.c.not_before <= now, ~busy_student
                )
                .order_by(self._due(), jobs.c.id)
                .limit(limit * 4)  # a student's rows of several assignments: the first of each student
            )
            if self.postgres:
                query = query.with_for_update(skip_locked=True, of=jobs)
            rows: list = []
            students: set[str] = set()
            for row in connection.execute(query).all():
                if row.student not in students and len(rows) < limit:
                    students.add(row.student)
                    rows.append(row)
            if not rows:
                return []
            connection.execute(
                jobs.update()
                .where(jobs.c.id.in_([row.id for row in rows]))
                .values(
                    state=RUNNING,
                    claimed_by=self.worker,
                    heartbeat=now,
                    started_at=now,
                    attempts=jobs.c.attempts + 1,
                    message=None,
                )
            )
        return [
            Job(row.id, row.assignment, row.student, row.origin, row.submitted_at, row.attempts + 1) for row in rows
        ]

    def _due(self) -> sa.ColumnElement:
        """When a queued row became due: when it was queued, or its pause ended (a rate limit, a
        retry), or its student's last claim was done, whichever is latest."""
        done = jobs.alias("done")
        last_done = (
            sa.select(sa.func.max(done.c.finished_at))
            .where(
                done.c.course_id == jobs.c.course_id,
                done.c.student == jobs.c.student,
                done.c.state.in_((DONE, FAILED)),
            )
            .scalar_subquery()
        )
        latest = sa.func.greatest if self.postgres else sa.func.max  # SQLite's max() of several values
        return latest(jobs.c.enqueued_at, jobs.c.not_before, sa.func.coalesce(last_done, 0.0))

    def _requeue_expired(self, connection, now: float) -> None:
        expired = (
            (jobs.c.course_id == self.course_id)
            & (jobs.c.state == RUNNING)
            & (jobs.c.heartbeat < now - self.lease_seconds)
        )
        newer = jobs.alias("newer")
        superseded = sa.exists().where(
            newer.c.course_id == jobs.c.course_id,
            newer.c.assignment == jobs.c.assignment,
            newer.c.student == jobs.c.student,
            newer.c.id != jobs.c.id,
            newer.c.state.in_((QUEUED, DONE)),
            newer.c.submitted_at >= jobs.c.submitted_at,
        )
        # A newer submission arrived while this one was being graded: it alone stays queued.
        connection.execute(
            jobs.update()
            .where(expired, superseded)
            .values(state=SUPERSEDED, finished_at=now, message="superseded while its grading was interrupted")
        )
        connection.execute(
            jobs.update()
            .where(expired, jobs.c.attempts >= self.max_attempts)
            .values(state=FAILED, finished_at=now, message="the grading service stopped while grading it, too often")
        )
        connection.execute(
            jobs.update()
            .where(expired)
            .values(state=QUEUED, claimed_by=None, message="requeued: the service grading it stopped")
        )

    def beat(self, job_ids: list[int]) -> None:
        """Keep this worker's claims alive."""
        if not job_ids:
            return
        with self.engine.begin() as connection:
            connection.execute(
                jobs.update()
                .where(
                    jobs.c.id.in_(job_ids),
                    jobs.c.claimed_by == self.worker,
                    jobs.c.state == RUNNING,
                )
                .values(heartbeat=self.clock())
            )

    # -- finishing -----------------------------------------------------------------------------
    def finish(self, job: Job, message: str | None = None) -> bool:
        """Mark a claimed job done; False if the claim was lost (it expired and was retaken)."""
        return self._close(job, DONE, message)

    def fail(self, job: Job, message: str, retry_after: float = 5.0) -> str:
        """A grader fault: queue the job again after `retry_after` seconds, or give up after
        `max_attempts`. Returns the new state."""
        if job.attempts >= self.max_attempts:
            self._close(job, FAILED, message)
            return FAILED
        with self.engine.begin() as connection:
            connection.execute(
                jobs.update()
                .where(jobs.c.id == job.id, jobs.c.claimed_by == self.worker)
                .values(state=QUEUED, claimed_by=None, not_before=self.clock() + retry_after, message=message)
            )
        return QUEUED

    def give_back(self, job: Job, message: str, retry_after: float = 5.0) -> None:
        """Put a claimed job back in the queue as if it had not been claimed (no attempt counted):
        it could not be graded for a reason that is no fault, e.g. a batch grader holds the assignment."""
        with self.engine.begin() as connection:
            connection.execute(
                jobs.update()
                .where(jobs.c.id == job.id, jobs.c.claimed_by == self.worker, jobs.c.state == RUNNING)
                .values(
                    state=QUEUED,
                    claimed_by=None,
                    attempts=jobs.c.attempts - 1,
                    not_before=self.clock() + retry_after,
                    message=message,
                )
            )

    def refuse(self, job: Job, message: str) -> bool:
        """A claimed submission the collector refused (no fault of the grader: never retried)."""
        return self._close(job, FAILED, message)

    def _close(self, job: Job, state: str, message: str | None) -> bool:
        with self.engine.begin() as connection:
            result = connection.execute(
                jobs.update()
                .where(
                    jobs.c.id == job.id,
                    jobs.c.claimed_by == self.worker,
                    jobs.c.state == RUNNING,
                )
                .values(state=state, finished_at=self.clock(), message=message)
            )
            return result.rowcount == 1

    # -- flags for the instructor --------------------------------------------------------------
    def flag(self, items: list[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
        """Record flags (origin, kind, message), each once per origin and kind, in one
        transaction; returns those not recorded before (origins and messages escaped)."""
        from autograder.core import names

        shown = {(names.shown(origin, 500), kind): names.shown(message, 2000) for origin, kind, message in items}
        if not shown:
            return []
        try:
            with self.engine.begin() as connection:
                existing = {
                    (row.origin, row.kind)
                    for row in connection.execute(
                        sa.select(flags.c.origin, flags.c.kind).where(flags.c.course_id == self.course_id)
                    )
                }
                new = [
                    (origin, kind, message)
                    for (origin, kind), message in shown.items()
                    if (origin, kind) not in existing
                ]
                if new:
                    now = self.clock()
                    connection.execute(
                        flags.insert(),
                        [
                            {"course_id": self.course_id, "origin": o, "kind": k, "message": m, "at": now}
                            for o, k, m in new
                        ],
                    )
        except sa.exc.IntegrityError:
            return []  # another service recorded them meanwhile
        return new

    def flags(self, limit: int = 50) -> list:
        """The newest flags, newest first."""
        with self.engine.connect() as connection:
            query = sa.select(flags).where(flags.c.course_id == self.course_id).order_by(flags.c.id.desc()).limit(limit)
            return list(connection.execute(query).all())

    def flag_count(self) -> int:
        with self.engine.connect() as connection:
            count = connection.execute(
                sa.select(sa.func.count()).select_from(flags).where(flags.c.course_id == self.course_id)
            ).scalar()
            return count or 0

    def retime(self, job: Job, arrival: float, hold: str | None) -> None:
        """The submission changed after it was first seen: it arrived at `arrival`; with `hold`,
        it is held for the instructor instead of graded now."""
        with self.engine.begin() as connection:
            values: dict = {"submitted_at": arrival}
            if hold:
                values.update(state=HELD, claimed_by=None, attempts=jobs.c.attempts - 1, message=hold)
            connection.execute(
                jobs.update().where(jobs.c.id == job.id, jobs.c.claimed_by == self.worker).values(**values)
            )

    # -- reporting -----------------------------------------------------------------------------
    def rows(self, since: float | None = None, states: tuple[str, ...] | None = None) -> list:
        with self.engine.connect() as connection:
            query = sa.select(jobs).where(jobs.c.course_id == self.course_id).order_by(jobs.c.id)
            if since is not None:
                query = query.where(jobs.c.enqueued_at >= since)
            if states is not None:
                query = query.where(jobs.c.state.in_(states))
            return list(connection.execute(query).all())
