"""`nbgrader collect` with the grading service's collector (autograder.core.collector).

The exchange's inbound folder is writable by every student: anyone can plant a submission that
is a symbolic link (to solutions/, to another student's work), swap their folder for one while
it is collected, or name it for another student, with any date. nbgrader's own collect copies
by path with shutil.copytree (following links), believes the name's student and timestamp, and
stops at the first odd entry (a dangling link, a name that is not a date). This one (configured
in nbgrader_config.py through nbgrader's ExchangeFactory) collects by handle with the same rules
as the service: acceptable student ids only, each folder owned by its student where the
exchange can tell, the arrival time (not the name's) deciding which submission is newest and
written as the timestamp.txt that `nbgrader autograde` reads; every refusal is logged with the
reason, and the students after it are collected all the same.
"""

from __future__ import annotations

import datetime
import os
import pathlib

from nbgrader.exchange.default.collect import ExchangeCollect

from autograder.core import collector, names
from autograder.nbgrader.course_view import CourseView


class SafeExchangeCollect(ExchangeCollect):
    """ExchangeCollect by handle, with verified owners and arrival times."""

    def _trust(self) -> collector.ExchangeTrust:
        return collector.ExchangeTrust(parent=self)

    def init_src(self):
        if self.coursedir.course_id == "":
            self.fail("No course id specified. Re-run with --course flag.")
        self.course_path = os.path.join(self.root, self.coursedir.course_id)
        self.inbound_path = os.path.join(self.course_path, "inbound")
        if not os.path.isdir(self.inbound_path):
            self.fail(f"Course not found: {self.inbound_path}")
        inbound = pathlib.Path(self.inbound_path)
        trust = self._trust()
        self.roster, self.duedate = self._gradebook()
        described = trust.describe(self.roster)
        (self.log.warning if "cannot be verified" in described else self.log.info)(described)
        only = self.coursedir.student_id or None  # an exact id, never a pattern
        entries, refused = collector.scan(inbound, {self.coursedir.assignment_id}, {})
        for name, reason in sorted(refused.items()):
            self.log.warning("Not collecting %s: %s", names.shown(name), reason)
        newest: dict[str, list] = {}
        for entry in entries:
            if only not in (None, "*") and entry.student != only:
                continue
            try:
                info = collector.inspect(inbound, entry.name)
            except collector.Refused as error:  # a dangling link, a link, a file: this one only
                self.log.warning("Not collecting %s: %s", names.shown(entry.name), error)
                continue
            reason = trust.refusal(entry.student, info.st_uid, self.roster)
            if reason:
                self.log.warning("Not collecting %s: %s", names.shown(entry.name), reason)
                continue
            newest.setdefault(entry.student, []).append((info.st_ctime, entry))
        duedate = self.duedate.replace(tzinfo=datetime.timezone.utc).timestamp() if self.duedate is not None else None
        self.src_records = []
        for student, found in sorted(newest.items()):
            found.sort(key=lambda item: item[0], reverse=True)
            if duedate is not None and self.before_duedate:
                found = [item for item in found if item[0] <= duedate] or found
            arrival, entry = found[0]
            self.src_records.append(
                {
                    "username": student,
                    "filename": entry.name,
                    "entry": entry,
                    "timestamp": datetime.datetime.fromtimestamp(arrival, datetime.timezone.utc).replace(tzinfo=None),
                }
            )

    def _gradebook(self):
        from nbgrader.api import MissingEntry

        with CourseView(self.coursedir).gradebook() as gradebook:
            roster = {student.id for student in gradebook.students}
            try:
                duedate = gradebook.find_assignment(self.coursedir.assignment_id).duedate
            except MissingEntry:
                duedate = None
        return roster, duedate

    def copy_files(self):
        if not self.src_records:
            self.log.warning(
                "No submissions of '%s' for course '%s' to collect",
                self.coursedir.assignment_id,
                self.coursedir.course_id,
            )
        trust = self._trust()
        grader = collector.Collector(collector.Rules(self.coursedir), trust)
        for record in self.src_records:
            student = record["username"]
            destination = CourseView(self.coursedir).submitted(student, self.coursedir.assignment_id)
            if destination.is_dir():
                existing = self.coursedir.get_existing_timestamp(str(destination))
                newer = existing is None or record["timestamp"] > existing
                if not ((self.update and newer) or (self.before_duedate and existing != record["timestamp"])):
                    self.log.info("No newer submission to collect: %s %s", student, self.coursedir.assignment_id)
                    continue
            try:
                collected = grader.collect(pathlib.Path(self.inbound_path), record["entry"], destination, self.roster)
            except (collector.Refused, OSError) as error:
                self.log.warning("Not collecting %s: %s", names.shown(record["filename"]), names.shown(error))
                continue
            self.log.info("Collected submission: %s %s", student, self.coursedir.assignment_id)
            for line in collected.left_out:
                self.log.warning("%s %s: not collected: %s", student, self.coursedir.assignment_id, line)
            flag = trust.claim_flag(collected.claimed, collected.arrival)
            if flag:
                self.log.warning(
                    "%s %s: %s (the arrival time is recorded)", student, self.coursedir.assignment_id, flag
                )
            self._groupshare(destination)

    def do_copy(self, src, dest, log=None):
        """Collect the folder `src` (in an inbound folder) into `dest`, by handle; nbgrader's own
        do_copy would follow links. Any student id passes the roster here: callers of do_copy
        chose the folder themselves."""
        source = pathlib.Path(src)
        student = source.name.rsplit("+", 3)[0]
        entry = collector.Entry(source.name, student, self.coursedir.assignment_id, "")
        trust = self._trust()
        trust.allow_new_students = True
        try:
            collected = collector.Collector(collector.Rules(self.coursedir), trust).collect(
                source.parent, entry, pathlib.Path(dest), set()
            )
        except collector.Refused as error:
            self.log.error("Not collecting %s: %s", names.shown(src), error)
            return
        for line in collected.left_out:
            self.log.warning("Not collecting %s", line)
        self._groupshare(pathlib.Path(dest))

    def _groupshare(self, destination: pathlib.Path) -> None:
        if not self.coursedir.groupshared:
            return
        for dirname, _, _ in os.walk(destination):
            mode = os.stat(dirname).st_mode
            if mode & 0o2770 != 0o2770:
                try:
                    os.chmod(dirname, (mode | 0o2770) & 0o2777)
                except PermissionError:
                    self.log.warning("Could not make %s groupshared", dirname)
