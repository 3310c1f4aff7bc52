"""Collecting a submission from nbgrader's filesystem exchange by handle: the one collector of
the grading service and of `nbgrader collect` (SafeExchangeCollect).

Everything under the exchange's `inbound/` is the students' (the folder is writable by all of
them), and a student can swap any name there at any moment, e.g. rename a link to the
instructor's `source/` over their own submission folder between a check and a copy. So nothing
is opened by path below the inbound folder: the inbound folder is opened once, each submission
folder is opened relative to it and each file relative to its folder's handle, always with
O_NOFOLLOW (a link is refused, never followed), O_NONBLOCK and O_NOCTTY (a FIFO or a terminal
cannot hang or adopt the grader), and the checks (type, owner, link count, size) are made with
fstat on the very handle that is then read. A swap yields the student's own files, or a refusal
with the reason; never a file from outside their folder.

Who and when come from what the kernel says, not from what the student wrote:
  * who: the folder's owner. Where every student has an account of their own (a shared server,
    The Littlest JupyterHub), a folder not owned by the account of the student it names is
    refused (`ExchangeTrust.account_name` maps an id to its account, "jupyter-{student}" on
    TLJH). Where all submissions share one uid (containers, Kubernetes), the owner proves
    nothing: identity cannot be verified there, and only students on the course roster (the
    gradebook's students) are collected, unless `ExchangeTrust.allow_new_students`.
  * when: the arrival time is the latest change time (ctime) of the folder and of every file
    read from it. The kernel sets ctime to "now" on every change, and no one but root can set
    it back (utime sets only the access and modification times), so a student can make their
    submission later, never earlier. The name's timestamp and timestamp.txt are only a claim:
    kept for the instructor, flagged when in the future or far from the arrival, and replaced
    in submitted/ by a timestamp.txt of the arrival time, which is what nbgrader's lateness and
    the batch grader read.
"""

from __future__ import annotations

import dataclasses
import datetime
import fnmatch
import os
import pathlib
import shutil
import stat

from traitlets import Bool, Enum, Float, Unicode
from traitlets.config import Configurable

from autograder.core import names, safe_files

MAX_DEPTH = 16
MAX_ENTRIES = 5000
CHUNK = 1 << 20
CLAIM_BYTES = 200  # a timestamp.txt longer than this is no timestamp
_COMMON = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
FOLDER_FLAGS = _COMMON | os.O_DIRECTORY
FILE_FLAGS = _COMMON


class Refused(Exception):
    """A submission (or a folder in inbound) that is not collected; the message says why."""


class ExchangeTrust(Configurable):
    """What the exchange can tell about who submitted (read by the grading service and collect)."""

    identity = Enum(
        ("auto", "accounts", "shared"),
        "auto",
        help="How a submission's student is verified. 'accounts': every student has a Unix account "
        "(account_name), and a folder not owned by it is refused. 'shared': all submissions have one "
        "uid (containers), so ownership proves nothing and only roster students are collected. "
        "'auto': 'accounts' for a student whose account exists, 'shared' for one without.",
    ).tag(config=True)
    account_name = Unicode(
        "{student}", help="The Unix account of a student id; 'jupyter-{student}' on The Littlest JupyterHub"
    ).tag(config=True)
    allow_new_students = Bool(
        False,
        help="Where identity cannot be verified, also collect students who are not on the course's "
        "roster (nbgrader's students table); each becomes a new gradebook student",
    ).tag(config=True)
    clock_skew_minutes = Float(
        10.0, help="A claimed timestamp further than this from the arrival time is flagged to the instructor"
    ).tag(config=True)

    def uid_of(self, student: str) -> int | None:
        """The uid of `student`'s own account, or None when they have none (or identity is shared)."""
        if self.identity == "shared":
            return None
        import pwd

        try:
            return pwd.getpwnam(self.account_name.format(student=student)).pw_uid
        except (KeyError, ValueError, IndexError):
            return None

    def refusal(self, student: str, owner: int, roster) -> str | None:
        """Why a folder owned by uid `owner` is not accepted as `student`'s (None if it is).

        `roster`: the student ids of the course (nbgrader's students table)."""
        expected = self.uid_of(student)
        if expected is not None:
            if owner != expected:
                return (
                    f"the folder is owned by {_account(owner)}, not by {self.account_name.format(student=student)}, "
                    "the account of the student it names"
                )
            return None
        if self.identity == "accounts":
            return f"no account {self.account_name.format(student=student)} exists for this student id"
        if student not in roster and not self.allow_new_students:
            return (
                "the student is not on the course roster, and on this exchange identity cannot be verified "
                "(ExchangeTrust.allow_new_students collects new students)"
            )
        return None

    def describe(self, roster) -> str:
        """One line for the start of the service and status: what this exchange can verify."""
        if self.identity == "accounts":
            return f"identity: each submission must be owned by its student's account ({self.account_name})"
        with_account = sum(1 for student in roster if self.uid_of(student) is not None)
        new = "new students are graded too" if self.allow_new_students else "only students on the roster are graded"
        if self.identity == "shared" or not with_account:
            return (
                "identity cannot be verified on this exchange: submissions are not owned by accounts of their "
                f"students (one uid for all, as in containers); {new}"
            )
        return (
            f"identity: {with_account} of {len(roster)} roster students have an account ({self.account_name}); "
            f"their submissions must be owned by it; for the others identity cannot be verified, and {new}"
        )

    def claim_flag(self, claimed: str | None, arrival: float) -> str | None:
        """The note for the instructor when a submission's own timestamp is in the future or far
        from its arrival (None when it is not)."""
        if not claimed:
            return None
        moment = parse_timestamp(claimed)
        if moment is None:
            return f"its timestamp {names.shown(claimed, 60)!r} is not a date; arrived {format_utc(arrival)}"
        if moment > arrival + 60 * self.clock_skew_minutes:
            return f"its timestamp {format_utc(moment)} is in the future of its arrival {format_utc(arrival)}"
        if moment < arrival - 60 * self.clock_skew_minutes:
            return f"its timestamp {format_utc(moment)} is {(arrival - moment) / 60:.0f} minutes before its arrival {format_utc(arrival)}"
        return None


def _account(uid: int) -> str:
    import pwd

    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def parse_timestamp(text: str) -> float | None:
    """A timestamp as nbgrader writes it, in epoch seconds (None when it is not one)."""
    from nbgrader.utils import parse_utc

    try:
        moment = parse_utc(str(text).strip())
    except (ValueError, OverflowError, TypeError):
        return None
    if moment.tzinfo is None:  # parse_utc gives naive UTC
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return moment.timestamp()


def format_utc(epoch: float) -> str:
    """A time as nbgrader writes timestamp.txt (and reads it back)."""
    return datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f %Z")


@dataclasses.dataclass(frozen=True)
class Entry:
    """One submission folder of the inbound: its name (as listed) and what it claims."""

    name: str
    student: str
    assignment: str
    claimed: str  # the timestamp field of the name, as the student wrote it


def parse_name(name: str, assignments) -> Entry | None:
    """The submission a folder name of inbound stands for; None when it is not one of
    `assignments` (another assignment, or no exchange name at all); Refused when it names a
    student id that is not acceptable, or is not printable text."""
    parts = name.rsplit("+", 3)  # as nbgrader collect splits it
    if len(parts) < 3 or parts[1] not in assignments:
        return None
    reason = names.refusal(parts[0])
    if reason is None and names.shown(name) != name:
        reason = "the folder name holds control characters or bytes that are not UTF-8"
    if reason is not None:
        raise Refused(reason)
    return Entry(name, parts[0], parts[1], parts[2])


def scan(inbound: pathlib.Path, assignments, remembered: dict[str, str | None]) -> tuple[list[Entry], dict[str, str]]:
    """The submissions in `inbound` of `assignments` not listed in `remembered`, and the names
    refused (name -> reason). Every name looked at is added to `remembered` (None for one that
    is not a submission of these assignments), so that a scan of an inbound full of junk costs
    a listing, not a parse per name: the caller clears it when the assignments change."""
    found, refused = [], {}
    try:
        listed = os.listdir(inbound)
    except FileNotFoundError:
        return [], {}
    for name in listed:
        if name in remembered:
            continue
        try:
            entry = parse_name(name, assignments)
        except Refused as error:
            remembered[name] = refused[name] = str(error)
            continue
        if entry is None:
            remembered[name] = None
        else:
            found.append(entry)
    return found, refused


@dataclasses.dataclass
class Collected:
    owner: int
    arrival: float  # the latest ctime of the folder and the files collected (epoch seconds)
    claimed: str | None  # the student's timestamp.txt (or, without one, the name's timestamp)
    left_out: list[str]


class Rules:
    """What of a submission is copied: the course's CourseDirectory ignore, include,
    max_file_size and max_dir_size (kB), as nbgrader collect applies them."""

    def __init__(self, coursedir):
        self.ignore = list(coursedir.ignore)
        self.include = list(coursedir.include)
        self.max_file_bytes = 1000 * coursedir.max_file_size
        self.max_dir_bytes = 1000 * coursedir.max_dir_size

    def ignored(self, name: str, is_file: bool) -> bool:
        if any(fnmatch.fnmatch(name, pattern) for pattern in self.ignore):
            return True
        return is_file and not any(fnmatch.fnmatch(name, pattern) for pattern in self.include)


def open_folder(parent: int, name: str) -> tuple[int, os.stat_result]:
    """A handle on the real folder `name` of the folder open as `parent`, and its fstat; Refused
    when it is a link (or was swapped for one), not a folder, or cannot be opened."""
    try:
        handle = os.open(name, FOLDER_FLAGS, dir_fd=parent)
    except OSError as error:
        try:
            info = os.stat(name, dir_fd=parent, follow_symlinks=False)
        except OSError:
            raise Refused(f"it cannot be opened ({error.strerror})") from None
        kind = safe_files.refusal(info) if not stat.S_ISDIR(info.st_mode) else None
        raise Refused(kind.replace("a regular file", "a folder") if kind else error.strerror) from None
    info = os.fstat(handle)
    if not stat.S_ISDIR(info.st_mode):  # O_DIRECTORY makes this impossible; kept as the rule
        os.close(handle)
        raise Refused("it is not a folder")
    return handle, info


def inspect(inbound: pathlib.Path, name: str) -> os.stat_result:
    """The fstat of submission folder `name` of `inbound`, opened by handle (Refused if it is no
    real folder): its owner and its ctime, the earliest the submission can have arrived."""
    parent = os.open(inbound, FOLDER_FLAGS)
    try:
        handle, info = open_folder(parent, name)
        os.close(handle)
        return info
    finally:
        os.close(parent)


class Collector:
    """Copies one submission folder of an inbound into submitted/<student>/<assignment>/."""

    def __init__(self, rules: Rules, trust: ExchangeTrust):
        self.rules, self.trust = rules, trust

    def collect(self, inbound: pathlib.Path, entry: Entry, destination: pathlib.Path, roster) -> Collected:
        """Replace `destination` with the submission `entry` of `inbound` (Refused, with the
        destination untouched, when the folder is refused); returns what was left out, the
        folder's owner, its arrival time and the student's claimed timestamp."""
        parent = os.open(inbound, FOLDER_FLAGS)  # the instructor's: the course's exchange folder
        try:
            handle, info = open_folder(parent, entry.name)
        finally:
            os.close(parent)
        try:
            reason = self.trust.refusal(entry.student, info.st_uid, roster)
            if reason:
                raise Refused(reason)
            destination.parent.mkdir(parents=True, exist_ok=True)
            staging = destination.parent / f".{destination.name}.collecting-{os.getpid()}"
            if staging.exists():
                shutil.rmtree(staging)
            result = Collected(info.st_uid, info.st_ctime, None, [])
            budget = [self.rules.max_dir_bytes, MAX_ENTRIES]
            try:
                staging.mkdir()
                self._copy_folder(handle, staging, "", 0, result, budget)
                claimed = result.claimed if result.claimed else entry.claimed
                result.claimed = claimed
                # What nbgrader's lateness and the batch grader read: the arrival, not the claim.
                (staging / "timestamp.txt").write_text(format_utc(result.arrival))
                if destination.is_symlink() or (destination.exists() and not destination.is_dir()):
                    destination.unlink()
                elif destination.exists():
                    shutil.rmtree(destination)
                staging.rename(destination)
            finally:
                if staging.exists():
                    shutil.rmtree(staging)
            return result
        finally:
            os.close(handle)

    def _copy_folder(self, folder: int, target: pathlib.Path, relative: str, depth: int, result, budget) -> None:
        if depth > MAX_DEPTH:
            result.left_out.append(f"{relative or '.'}: nested too deep")
            return
        for name in sorted(os.listdir(folder)):
            shown = f"{relative}{names.shown(name)}"
            budget[1] -= 1
            if budget[1] < 0:
                result.left_out.append(f"{shown}: too many files")
                continue
            try:
                listed = os.stat(name, dir_fd=folder, follow_symlinks=False)
            except OSError as error:
                result.left_out.append(f"{shown}: {error.strerror}")
                continue
            if stat.S_ISDIR(listed.st_mode):
                if self.rules.ignored(name, is_file=False):
                    continue
                try:
                    handle, info = open_folder(folder, name)
                except Refused as error:
                    result.left_out.append(f"{shown}: {error}")
                    continue
                try:
                    if info.st_uid != result.owner:
                        result.left_out.append(f"{shown}: owned by {_account(info.st_uid)}, not by the submitter")
                        continue
                    result.arrival = max(result.arrival, info.st_ctime)
                    (target / name).mkdir()
                    self._copy_folder(handle, target / name, f"{shown}/", depth + 1, result, budget)
                finally:
                    os.close(handle)
            elif stat.S_ISREG(listed.st_mode):
                if relative == "" and name == "timestamp.txt":
                    result.claimed = self._claim(folder)
                elif not self.rules.ignored(name, is_file=True):
                    self._copy_file(folder, name, target / name, shown, result, budget)
            else:  # a link, a device, a pipe, a socket: never opened
                result.left_out.append(f"{shown}: {safe_files.refusal(listed)}")

    def _open_file(self, folder: int, name: str, owner: int) -> tuple[int, os.stat_result]:
        try:
            handle = os.open(name, FILE_FLAGS, dir_fd=folder)
        except OSError as error:  # ELOOP: swapped for a link since it was listed
            raise Refused(f"it cannot be opened ({error.strerror})") from None
        info = os.fstat(handle)
        reason = safe_files.refusal(info)  # what was opened: type and link count
        if reason is None and info.st_uid != owner:
            reason = f"it is owned by {_account(info.st_uid)}, not by the submitter"
        if reason is not None:
            os.close(handle)
            raise Refused(reason)
        return handle, info

    def _claim(self, folder: int) -> str | None:
        try:
            handle, info = self._open_file(folder, "timestamp.txt", os.fstat(folder).st_uid)
        except Refused:
            return None
        with os.fdopen(handle, "rb") as stream:
            text = stream.read(CLAIM_BYTES + 1)
        return text.decode("utf-8", "replace").strip()[:CLAIM_BYTES] if len(text) <= CLAIM_BYTES else None

    def _copy_file(self, folder: int, name: str, target: pathlib.Path, shown: str, result, budget) -> None:
        try:
            handle, info = self._open_file(folder, name, result.owner)
        except Refused as error:
            result.left_out.append(f"{shown}: {error}")
            return
        with os.fdopen(handle, "rb") as stream:
            if info.st_size > self.rules.max_file_bytes:
                result.left_out.append(f"{shown}: larger than {self.rules.max_file_bytes // 1000} kB")
                return
            if info.st_size > budget[0]:
                result.left_out.append(f"{shown}: the submission exceeds {self.rules.max_dir_bytes // 1000} kB")
                return
            budget[0] -= info.st_size
            result.arrival = max(result.arrival, info.st_ctime)
            with open(target, "xb") as out:
                copied = 0
                while copied <= info.st_size:  # no more than fstat said: a growing file is cut there
                    block = stream.read(min(CHUNK, info.st_size + 1 - copied))
                    if not block:
                        break
                    out.write(block[: info.st_size - copied])
                    copied += len(block)
            after = os.fstat(stream.fileno())
            result.arrival = max(result.arrival, after.st_ctime)  # written to while copied
