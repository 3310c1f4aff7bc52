"""One grader per course and assignment at a time.

Two graders of the same class at once (a cron job and an instructor) would both regrade
everything, or collide in the gradebook. The lock lives where the gradebook lives, so it holds
across machines whenever the gradebook is shared:
  * PostgreSQL: a session-level advisory lock, held by a connection open for the whole run; the
    holder is named in that connection's application_name, so a second grader can say who;
  * SQLite: an exclusive `flock` on a file beside the database, holding the holder's name.
Either is released by the operating system or the server when the holder dies, even by kill -9.

The grading service takes the lock shared: its instances (on one machine or several) each grade
the students the queue gave them, so they may grade one assignment at once, but none of them
while a batch grader holds it exclusively, nor a batch grader while any of them holds it.
"""

from __future__ import annotations

import datetime
import fcntl
import hashlib
import os
import pathlib
import socket

from autograder.core.errors import UsageError


class GraderBusy(UsageError):
    """Another grader holds the lock; the message says which and since when."""


def _holder() -> str:
    since = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"pid {os.getpid()} on {socket.gethostname()} since {since}"


class GraderLock:
    """`with GraderLock(db_url, course_id, assignment): ...` or raise GraderBusy (`shared`: with
    other shared holders, excluding exclusive ones)."""

    def __init__(self, db_url: str, course_id: str, assignment: str, shared: bool = False):
        self.db_url, self.course_id, self.assignment = db_url, course_id, assignment
        self.shared = shared
        self._release = None

    def __enter__(self) -> GraderLock:
        if self.db_url.startswith("postgresql"):
            self._release = self._lock_postgres()
        elif self.db_url.startswith("sqlite:///"):
            self._release = self._lock_file(pathlib.Path(self.db_url.removeprefix("sqlite:///")))
        return self

    def __exit__(self, *exc) -> None:
        if self._release is not None:
            self._release()
            self._release = None

    def _busy(self, holder: str | None) -> GraderBusy:
        who = holder or "another process"
        return GraderBusy(
            f"another grader is running for {self.assignment!r} of course {self.course_id!r} "
            f"({who}); wait for it to finish, then run again (a rerun grades only what is left)"
        )

    def _key(self) -> int:
        digest = hashlib.sha256(f"autograder {self.course_id} {self.assignment}".encode()).digest()
        return int.from_bytes(digest[:8], "big", signed=True)

    def _lock_postgres(self):
        import sqlalchemy

        name = f"autograder {self.assignment}: {_holder()}"[:63]  # application_name's limit
        engine = sqlalchemy.create_engine(
            self.db_url, poolclass=sqlalchemy.pool.NullPool, connect_args={"application_name": name}
        )
        connection = engine.connect()
        key = self._key()
        take = "pg_try_advisory_lock_shared" if self.shared else "pg_try_advisory_lock"
        if not connection.execute(sqlalchemy.text(f"SELECT {take}(:key)"), {"key": key}).scalar():
            # A bigint advisory key shows in pg_locks as classid (high half) and objid (low half).
            holder = connection.execute(
                sqlalchemy.text(
                    "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                    "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
                    "AND l.classid = :high AND l.objid = :low"
                ),
                {"high": (key >> 32) & 0xFFFFFFFF, "low": key & 0xFFFFFFFF},
            ).scalar()
            connection.close()
            engine.dispose()
            raise self._busy(holder)
        connection.commit()  # leave no transaction open for the whole run; the lock is the session's

        def release():
            connection.close()  # ends the session, which releases the advisory lock
            engine.dispose()

        return release

    def _lock_file(self, database: pathlib.Path):
        path = database.with_name(f"{database.name}.{self.assignment}.grading.lock")
        handle = open(path, "a+", encoding="utf-8")
        try:
            fcntl.flock(handle, (fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read(200).strip() or None
            handle.close()
            raise self._busy(holder) from None
        if self.shared:  # the file names the exclusive holder; shared ones leave it alone
            return handle.close
        handle.seek(0)
        handle.truncate()
        handle.write(_holder() + "\n")
        handle.flush()

        def release():
            handle.seek(0)
            handle.truncate()
            handle.close()  # closing drops the flock

        return release
