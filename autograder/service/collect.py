"""Finding submissions in nbgrader's exchange, and collecting one as `nbgrader collect` would.

`nbgrader submit` leaves `<root>/<course>/inbound/<student>+<assignment>+<timestamp>+<random>/`;
`nbgrader collect --update` copies a student's newest such folder to
`submitted/<student>/<assignment>/`. The service does the same for one submission at a time,
with the course's `CourseDirectory.ignore`, `include`, `max_file_size` and `max_dir_size`, but
treats the folder as hostile: it follows no link (a symlink to the instructor's files would
otherwise be copied into the course), copies regular files only (a FIFO would block the copy,
a device would be read), and bounds depth and entry count, reporting everything it left out.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import logging
import os
import pathlib
import shutil
import stat

log = logging.getLogger("autograder.service")

MAX_DEPTH = 16
MAX_ENTRIES = 5000
CHUNK = 1 << 20
_refused: set[str] = set()  # inbound folders already reported as ignored (once each, not every scan)


@dataclasses.dataclass(frozen=True)
class Found:
    """One submission folder in the exchange inbound (or one submitted/ folder)."""

    student: str
    assignment: str
    timestamp: str  # as nbgrader wrote it
    submitted_at: float  # epoch seconds
    origin: str  # the inbound folder's name; "submitted:<student>/<assignment>@<timestamp>" for submitted/
    path: pathlib.Path


def parse_timestamp(text: str) -> float | None:
    import datetime

    from nbgrader.utils import parse_utc

    try:
        moment = parse_utc(text.strip())
    except (ValueError, OverflowError):
        return None
    if moment.tzinfo is None:  # parse_utc gives naive UTC
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return moment.timestamp()


def scan_inbound(inbound: pathlib.Path, assignments: set[str], known=frozenset()) -> list[Found]:
    """Every submission folder in `inbound` of one of `assignments` (named as nbgrader submit
    names them; anything else, and anything that is not a real directory, is ignored), except
    the `known` ones: a scan every fraction of a second costs a directory listing, not a date
    parse per submission ever made."""
    found = []
    try:
        entries = list(os.scandir(inbound))
    except FileNotFoundError:
        return []
    for entry in entries:
        if entry.name in known:
            continue
        parts = entry.name.rsplit("+", 3)  # as nbgrader collect splits it: usernames may hold '+'
        if len(parts) < 3 or parts[1] not in assignments or not entry.is_dir(follow_symlinks=False):
            continue
        if parts[0] in ("", ".", "..") or parts[0].startswith("."):
            # submitted/<student>/ must be a folder of submitted/: "..+hw+..." would name the course root
            if entry.path not in _refused:
                _refused.add(entry.path)
                log.warning("%s is ignored: %r is not a student name", entry.path, parts[0])
            continue
        submitted_at = parse_timestamp(parts[2])
        if submitted_at is None:
            continue
        found.append(Found(parts[0], parts[1], parts[2], submitted_at, entry.name, pathlib.Path(entry.path)))
    return found


def scan_submitted(submitted: pathlib.Path, assignments: set[str]) -> list[Found]:
    """For courses without an exchange: every submitted/<student>/<assignment>/, identified by
    its timestamp.txt (or, without one, by its newest modification time)."""
    found = []
    for assignment in assignments:
        for folder in submitted.glob(f"*/{assignment}"):
            if folder.is_symlink() or not folder.is_dir():
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
            student = folder.parent.name
            found.append(
                Found(student, assignment, text, submitted_at, f"submitted:{student}/{assignment}@{text}", folder)
            )
    return found


class Collector:
    """Copies one exchange submission into submitted/, as nbgrader collect --update does."""

    def __init__(self, coursedir):
        self.coursedir = coursedir  # nbgrader's CourseDirectory of the course (root, ignore, sizes)

    def collect(self, found: Found) -> list[str]:
        """Replace submitted/<student>/<assignment>/ with the submission; returns what was left out."""
        destination = pathlib.Path(
            self.coursedir.format_path(self.coursedir.submitted_directory, found.student, found.assignment)
        )
        destination.parent.mkdir(parents=True, exist_ok=True)
        staging = destination.parent / f".{destination.name}.collecting-{os.getpid()}"
        if staging.exists():
            shutil.rmtree(staging)
        skipped: list[str] = []
        budget = [1000 * self.coursedir.max_dir_size, MAX_ENTRIES]  # bytes, entries
        try:
            staging.mkdir()
            self._copy_tree(found.path, staging, "", 0, skipped, budget)
            if destination.exists() or destination.is_symlink():
                if destination.is_symlink() or not destination.is_dir():
                    destination.unlink()
                else:
                    shutil.rmtree(destination)
            staging.rename(destination)
        finally:
            if staging.exists():
                shutil.rmtree(staging)
        self._warn_owner(found)
        for item in skipped:
            log.warning("collect %s/%s: left out %s", found.student, found.assignment, item)
        return skipped

    def _ignored(self, name: str, is_file: bool) -> bool:
        if any(fnmatch.fnmatch(name, pattern) for pattern in self.coursedir.ignore):
            return True
        return is_file and not any(fnmatch.fnmatch(name, pattern) for pattern in self.coursedir.include)

    def _copy_tree(self, source: pathlib.Path, target: pathlib.Path, relative: str, depth: int, skipped, budget):
        if depth > MAX_DEPTH:
            skipped.append(f"{relative or '.'} (nested too deep)")
            return
        with os.scandir(source) as entries:
            for entry in sorted(entries, key=lambda e: e.name):
                name = f"{relative}{entry.name}"
                budget[1] -= 1
                if budget[1] < 0:
                    skipped.append(f"{name} (too many files)")
                    continue
                if entry.is_symlink():
                    skipped.append(f"{name} (a symbolic link)")
                elif entry.is_dir(follow_symlinks=False):
                    if self._ignored(entry.name, is_file=False):
                        continue
                    (target / entry.name).mkdir()
                    self._copy_tree(
                        pathlib.Path(entry.path), target / entry.name, f"{name}/", depth + 1, skipped, budget
                    )
                elif entry.is_file(follow_symlinks=False):
                    if not self._ignored(entry.name, is_file=True):
                        self._copy_file(pathlib.Path(entry.path), target / entry.name, name, skipped, budget)
                else:
                    skipped.append(f"{name} (not a regular file)")

    def _copy_file(self, source: pathlib.Path, target: pathlib.Path, name: str, skipped, budget) -> None:
        # O_NOFOLLOW and fstat on the opened file: a file swapped for a link or a FIFO after the
        # directory was listed is refused too; O_NONBLOCK so opening a FIFO cannot hang.
        try:
            descriptor = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError as error:
            skipped.append(f"{name} (unreadable: {error.strerror})")
            return
        with os.fdopen(descriptor, "rb") as stream:
            info = os.fstat(stream.fileno())
            if not stat.S_ISREG(info.st_mode):
                skipped.append(f"{name} (not a regular file)")
                return
            if info.st_size > 1000 * self.coursedir.max_file_size:
                skipped.append(f"{name} (larger than {self.coursedir.max_file_size} kB)")
                return
            if info.st_size > budget[0]:
                skipped.append(f"{name} (the submission exceeds {self.coursedir.max_dir_size} kB)")
                return
            budget[0] -= info.st_size
            with open(target, "xb") as out:
                shutil.copyfileobj(stream, out, CHUNK)

    def _warn_owner(self, found: Found) -> None:
        import pwd

        try:
            owner = pwd.getpwuid(os.stat(found.path, follow_symlinks=False).st_uid).pw_name
        except (KeyError, OSError):
            owner = "unknown id"
        if owner != found.student:  # nbgrader collect's check_owner warning
            log.warning("%s claims to be submitted by %s but is owned by %s", found.path, found.student, owner)
