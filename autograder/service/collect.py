"""Finding submissions in nbgrader's exchange, and collecting one as `nbgrader collect` would.

`nbgrader submit` leaves `<root>/<course>/inbound/<student>+<assignment>+<timestamp>+<random>/`;
`nbgrader collect --update` copies a student's newest such folder to
`submitted/<student>/<assignment>/`. The service does the same for one submission at a time
with the collector `nbgrader collect` uses here too (autograder.core.collector): by handle,
following no link, copying regular singly-linked files of the submitter only, refusing
student ids that are not acceptable (autograder.core.names) and folders not owned by the
student they name, and timing each submission by its arrival, not by its name.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pathlib
import stat
import time

from autograder.core import collector, names
from autograder.nbgrader.course_view import CourseView

log = logging.getLogger("autograder.service")

parse_timestamp = collector.parse_timestamp


@dataclasses.dataclass(frozen=True)
class Found:
    """One submission folder in the exchange inbound (or one submitted/ folder)."""

    student: str
    assignment: str
    timestamp: str  # what the submission claims (its name's timestamp), shown to the instructor only
    submitted_at: float  # when it arrived (epoch seconds): the folder's ctime, never later than first seen
    origin: str  # the inbound folder's name; "submitted:<student>/<assignment>@<timestamp>" for submitted/
    path: pathlib.Path
    owner: int | None = None


class Scanner:
    """The inbound's submissions not seen before, each looked at once: names refused (with the
    reason, logged once) and names of no assignment are remembered, so that an idle service's
    scan of an inbound full of junk is a directory listing."""

    def __init__(self, inbound: pathlib.Path, trust: collector.ExchangeTrust):
        self.inbound, self.trust = inbound, trust
        self.remembered: dict[str, str | None] = {}
        self._assignments: frozenset[str] = frozenset()
        self._roster: frozenset[str] = frozenset()

    def scan(self, assignments, known, roster) -> tuple[list[Found], dict[str, str]]:
        """(new submissions, newly refused names -> reason); `known`: origins already queued."""
        if frozenset(assignments) != self._assignments:  # names of another assignment may be new ones
            self._assignments = frozenset(assignments)
            self.remembered = {name: reason for name, reason in self.remembered.items() if reason is not None}
        if frozenset(roster) != self._roster:  # a student put on the roster: their folders are looked at again
            self._roster = frozenset(roster)
            self.remembered = {name: reason for name, reason in self.remembered.items() if reason is None}
        entries, refused = collector.scan(self.inbound, self._assignments, self.remembered)
        found = []
        now = time.time()
        for entry in entries:
            if entry.name in known:
                self.remembered[entry.name] = None
                continue
            try:
                info = collector.inspect(self.inbound, entry.name)
            except collector.Refused as error:
                # Not remembered: nbgrader submit may still be making it (or it is gone for good).
                if entry.name not in refused:
                    refused[entry.name] = f"not a submission folder: {error}"
                self.remembered[entry.name] = refused[entry.name]
                continue
            reason = self.trust.refusal(entry.student, info.st_uid, roster)
            if reason:
                self.remembered[entry.name] = refused[entry.name] = reason
                continue
            self.remembered[entry.name] = None  # queued now; the queue knows it from here on
            arrival = min(info.st_ctime, now)
            found.append(
                Found(
                    entry.student,
                    entry.assignment,
                    entry.claimed,
                    arrival,
                    entry.name,
                    self.inbound / entry.name,
                    info.st_uid,
                )
            )
        return found, refused


def scan_submitted(view: CourseView, assignments: set[str]) -> list[Found]:
    """For courses without an exchange: every submitted/<student>/<assignment>/ of the course
    (the instructor put it there), identified by its timestamp.txt (or, without one, by its
    newest modification time). Student ids that are not acceptable are skipped, with a warning."""
    found = []
    for assignment in assignments:
        for student, folder in view.students_in(view.coursedir.submitted_directory, assignment):
            if folder.is_symlink() or not folder.is_dir():
                continue
            reason = names.refusal(student)
            if reason:
                log.warning("%s is not graded: %s", names.shown(folder), reason)
                continue
            stamp = folder / "timestamp.txt"
            text = ""
            if stamp.is_file() and not stamp.is_symlink():
                text = stamp.read_text(errors="replace")[:100].strip()
            submitted_at = parse_timestamp(text) if text else None
            if submitted_at is None:
                submitted_at = max(
                    (entry.stat(follow_symlinks=False).st_mtime for entry in os.scandir(folder)),
                    default=folder.stat().st_mtime,
                )
                text = repr(submitted_at)
            text = names.shown(text, 60)
            found.append(
                Found(student, assignment, text, submitted_at, f"submitted:{student}/{assignment}@{text}", folder)
            )
    return found


class Collector:
    """Copies one exchange submission into submitted/, as nbgrader collect --update does."""

    def __init__(self, coursedir, trust: collector.ExchangeTrust | None = None):
        self.coursedir = coursedir  # nbgrader's CourseDirectory of the course (root, ignore, sizes)
        self.trust = trust or collector.ExchangeTrust()
        self.collector = collector.Collector(collector.Rules(coursedir), self.trust)

    def collect(self, found: Found, roster=None) -> collector.Collected:
        """Replace submitted/<student>/<assignment>/ with the submission (collector.Refused when
        it is refused); what was left out is logged and returned."""
        destination = CourseView(self.coursedir).submitted(found.student, found.assignment)
        entry = collector.Entry(found.origin, found.student, found.assignment, found.timestamp)
        collected = self.collector.collect(
            found.path.parent, entry, destination, roster if roster is not None else {found.student}
        )
        for item in collected.left_out:
            log.warning("collect %s/%s: left out %s", found.student, found.assignment, item)
        return collected


def notice_facts(found: Found, notebook_ids: set[str]) -> tuple[str | None, list[str]]:
    """The submission's secret (nbgrader submit's submission_secret.txt, which names the
    student's feedback folder) and which of the assignment's notebooks it holds, read by handle
    from its folder in inbound; (None, []) when the folder is no longer a real one."""
    from autograder.service import feedback

    try:
        parent = os.open(found.path.parent, collector.FOLDER_FLAGS)
    except OSError:
        return None, []
    try:
        handle, info = collector.open_folder(parent, found.path.name)
    except collector.Refused:
        return None, []
    finally:
        os.close(parent)
    try:
        notebooks = sorted(name[: -len(".ipynb")] for name in os.listdir(handle) if name.endswith(".ipynb"))
        notebooks = [notebook for notebook in notebooks if notebook in notebook_ids]
        try:
            secret_handle = os.open("submission_secret.txt", collector.FILE_FLAGS, dir_fd=handle)
        except OSError:
            return None, notebooks
        with os.fdopen(secret_handle, "rb") as stream:
            details = os.fstat(stream.fileno())
            if not stat.S_ISREG(details.st_mode) or details.st_uid != info.st_uid:
                return None, notebooks
            secret = stream.read(feedback.SECRET_LIMIT).decode("ascii", errors="replace")
        return secret or None, notebooks
    finally:
        os.close(handle)
