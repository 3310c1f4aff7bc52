"""The exchange as a dishonest student uses it, against both collectors (the grading service's
and `nbgrader collect`, which share autograder.core.collector) and the service's discovery:
folders swapped for links while they are collected, folders named for another student or
dated in the future, names that are globs, markup, control codes or not UTF-8, hard links and
dangling links. Ownership is real: folders of "another student" belong to uid 65534 (nobody),
made by a process running as that user where the test runs as root."""

from __future__ import annotations

import ctypes
import datetime
import io
import logging
import multiprocessing
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

import pytest

from autograder.core import collector, names
from autograder.service import collect

COURSE = "course101"
NOBODY = 65534
STAMP = "2026-12-01 10:00:00.000000 UTC"
SECRET = b"INSTRUCTOR: the model answer"
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="makes files owned by another uid")


# -- a course, its gradebook and its exchange --------------------------------------------------


class Exchange:
    """A course root with a gradebook (assignment `mini`, a roster) and an exchange inbound."""

    def __init__(self, base: pathlib.Path, gradebook: pathlib.Path):
        self.root, self.exchange = base / "course", base / "exchange"
        self.inbound = self.exchange / COURSE / "inbound"
        self.inbound.mkdir(parents=True)
        self.root.mkdir()
        os.chmod(self.exchange, 0o777)
        os.chmod(self.inbound.parent, 0o755)
        os.chmod(self.inbound, 0o733)  # nbgrader's: anyone writes, no one else lists
        self.secret = base / "source"  # the instructor's
        (self.secret / "sub").mkdir(parents=True)
        (self.secret / "mini.ipynb").write_bytes(SECRET)
        (self.secret / "sub" / "notes.txt").write_bytes(SECRET)
        shutil.copy(gradebook, self.root / "gradebook.db")
        self.db_url = f"sqlite:///{self.root / 'gradebook.db'}"

    def submit(self, student: str, stamp: str = STAMP, owner: int | None = None, name: str | None = None):
        """A submission folder as nbgrader submit makes it (by `owner`'s own process when given)."""
        name = name or f"{student}+mini+{stamp}+{os.urandom(4).hex()}"
        folder = self.inbound / name
        script = (
            "import os, sys; folder = sys.argv[1]; os.mkdir(folder); "
            "open(os.path.join(folder, 'mini.ipynb'), 'w').write(sys.argv[2]); "
            "open(os.path.join(folder, 'timestamp.txt'), 'w').write(sys.argv[3])"
        )
        if owner is None:
            folder.mkdir()
            (folder / "mini.ipynb").write_text(f"{student}'s own")
            (folder / "timestamp.txt").write_text(stamp)
        else:
            as_owner = ["setpriv", f"--reuid={owner}", f"--regid={owner}", "--clear-groups"]
            subprocess.run(
                [*as_owner, sys.executable, "-c", script, str(folder), f"{student}'s own", stamp], check=True
            )
        return folder

    def config(self, **trust):
        from traitlets.config import Config

        config = Config()
        config.CourseDirectory.root = str(self.root)
        config.CourseDirectory.course_id = COURSE
        config.CourseDirectory.assignment_id = "mini"
        config.CourseDirectory.db_url = self.db_url
        config.Exchange.root = str(self.exchange)
        config.ExchangeCollect.update = True
        for option, value in trust.items():
            setattr(config.ExchangeTrust, option, value)
        return config

    def nbgrader_collect(self, **trust) -> str:
        """`nbgrader collect --update mini` as the course configures it (SafeExchangeCollect), in
        process; returns its log."""
        from nbgrader.auth import Authenticator
        from nbgrader.coursedir import CourseDirectory

        from autograder.nbgrader.exchange import SafeExchangeCollect

        config = self.config(**trust)
        collector_app = SafeExchangeCollect(
            coursedir=CourseDirectory(config=config), authenticator=Authenticator(config=config), config=config
        )
        stream = io.StringIO()
        handler = logging.StreamHandler(stream)
        collector_app.log.addHandler(handler)
        try:
            collector_app.start()
        finally:
            collector_app.log.removeHandler(handler)
        return stream.getvalue()

    def coursedir(self):
        from nbgrader.coursedir import CourseDirectory

        return CourseDirectory(config=self.config())

    def submitted(self, student: str) -> dict[str, bytes]:
        folder = self.root / "submitted" / student / "mini"
        return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def gradebook(tmp_path_factory) -> pathlib.Path:
    """A gradebook with assignment `mini` and the roster ada, bob (made once: its migrations take seconds)."""
    from nbgrader.api import Gradebook

    path = tmp_path_factory.mktemp("gradebook") / "gradebook.db"
    with Gradebook(f"sqlite:///{path}", COURSE) as book:
        book.update_or_create_assignment("mini")
        for student in ("ada", "bob"):
            book.update_or_create_student(student)
    return path


@pytest.fixture
def exchange(gradebook):
    # Not under pytest's tmp_path, which only its owner can enter: "other students" must reach it.

    base = pathlib.Path(tempfile.mkdtemp(prefix="exchange-trust-"))
    os.chmod(base, 0o755)
    yield Exchange(base, gradebook)
    shutil.rmtree(base)


def _service_scan(exchange: Exchange, roster=("ada", "bob"), **trust):
    scanner = collect.Scanner(exchange.inbound, collector.ExchangeTrust(**trust))
    return scanner.scan({"mini"}, set(), set(roster))


# -- 1. collect by handle: a racing swapper ------------------------------------------------------

RENAME_EXCHANGE = 2


def _swap(libc, directory: int, first: bytes, second: bytes) -> None:
    if libc.renameat2(directory, first, directory, second, RENAME_EXCHANGE) != 0:
        raise OSError(ctypes.get_errno(), "renameat2")


def _swapper(inbound: str, name: str, stop) -> None:
    """Swap, atomically and as fast as it can: the submission folder with a link to the
    instructor's folder, its notebook with a link to the model answer, its subfolder with a
    link to the instructor's subfolder."""
    libc = ctypes.CDLL(None, use_errno=True)
    outer = os.open(inbound, os.O_RDONLY | os.O_DIRECTORY)
    inner = os.open(os.path.join(inbound, name), os.O_RDONLY | os.O_DIRECTORY)  # the real folder, wherever it is
    while not stop.is_set():
        _swap(libc, outer, name.encode(), b".swap")
        _swap(libc, inner, b"mini.ipynb", b".x")
        _swap(libc, inner, b"sub", b".sublink")


def _race(exchange: Exchange, attempt, attempts: int) -> dict[str, int]:
    folder = exchange.submit("ada")
    (folder / "sub").mkdir()
    (folder / "sub" / "notes.txt").write_text("ada's notes")
    (exchange.inbound / ".swap").symlink_to(exchange.secret)
    (folder / ".x").symlink_to(exchange.secret / "mini.ipynb")
    (folder / ".sublink").symlink_to(exchange.secret / "sub")
    stop = multiprocessing.Event()
    swapper = multiprocessing.get_context("fork").Process(
        target=_swapper, args=(str(exchange.inbound), folder.name, stop), daemon=True
    )
    swapper.start()
    outcomes = {"collected": 0, "refused": 0, "own notebook": 0, "own notes": 0}
    try:
        for _ in range(attempts):
            shutil.rmtree(exchange.root / "submitted", ignore_errors=True)
            attempt(folder.name)
            destination = exchange.root / "submitted" / "ada" / "mini"
            if not destination.is_dir():
                outcomes["refused"] += 1
                continue
            outcomes["collected"] += 1
            for path in destination.rglob("*"):
                assert not path.is_symlink()
                if path.is_file():
                    assert SECRET not in path.read_bytes(), f"collected the instructor's file as {path}"
            files = exchange.submitted("ada")
            outcomes["own notebook"] += files.get("mini.ipynb") == b"ada's own" or files.get(".x") == b"ada's own"
            outcomes["own notes"] += b"ada's notes" in (
                files.get("sub/notes.txt", b""),
                files.get(".sublink/notes.txt", b""),
            )
    finally:
        stop.set()
        swapper.join(10)
    assert swapper.exitcode == 0, "the swapper failed"
    assert exchange.secret.joinpath("mini.ipynb").read_bytes() == SECRET
    return outcomes


@pytest.mark.skipif(not hasattr(ctypes.CDLL(None), "renameat2"), reason="needs renameat2 (Linux)")
def test_a_racing_swapper_never_gets_the_service_to_collect_a_file_outside_the_folder(exchange):
    grader = collect.Collector(exchange.coursedir())

    def attempt(name):
        found = collect.Found("ada", "mini", STAMP, time.time(), name, exchange.inbound / name)
        try:
            grader.collect(found, {"ada"})
        except collector.Refused:
            pass

    outcomes = _race(exchange, attempt, 3000)
    # The race was run: both outcomes happened, and the student's own files came through (the
    # kernel lets the swapper win most attempts: about 1% are collected).
    assert outcomes["refused"] > 0 and outcomes["collected"] > 0, outcomes
    assert outcomes["own notebook"] > 0 and outcomes["own notes"] > 0, outcomes


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(ctypes.CDLL(None), "renameat2"), reason="needs renameat2 (Linux)")
def test_a_racing_swapper_never_gets_nbgrader_collect_to_collect_a_file_outside_the_folder(exchange):
    # A run opens the gradebook (about 0.1 s): fewer attempts than the service's, same swapper.
    outcomes = _race(exchange, lambda name: exchange.nbgrader_collect(), 1000)
    assert outcomes["refused"] > 0 and outcomes["collected"] > 0, outcomes
    assert outcomes["own notebook"] > 0 and outcomes["own notes"] > 0, outcomes


# -- the same rules for both collectors: hard links, dangling links, devices ---------------------


def _plant_odd_files(folder: pathlib.Path, exchange: Exchange) -> None:
    os.link(exchange.secret / "mini.ipynb", folder / "answer.ipynb")  # a hard link to the model answer
    (folder / "dangling").symlink_to(folder / "nowhere")
    os.mkfifo(folder / "pipe")
    os.mknod(folder / "null", 0o600 | 0o020000, os.makedev(1, 3))  # /dev/null's device


@needs_root
def test_both_collectors_refuse_hard_links_links_pipes_and_devices_alike(exchange):
    folder = exchange.submit("ada")
    _plant_odd_files(folder, exchange)
    log = exchange.nbgrader_collect()
    by_nbgrader = exchange.submitted("ada")
    shutil.rmtree(exchange.root / "submitted")
    (found,), _ = _service_scan(exchange)
    left_out = collect.Collector(exchange.coursedir()).collect(found, {"ada"}).left_out
    by_service = exchange.submitted("ada")
    assert by_nbgrader.keys() == by_service.keys() == {"mini.ipynb", "timestamp.txt"}
    assert sorted(left_out) == [
        "answer.ipynb: it is a hard link (the same file has 2 names), so it may be someone else's file; "
        "submit a copy of your own",
        "dangling: it is a symbolic link, not a regular file",
        "null: it is a device, not a regular file",
        "pipe: it is a named pipe, not a regular file",
    ]
    for line in left_out:
        assert line in log


def test_a_dangling_link_in_inbound_does_not_stop_nbgrader_collect(exchange):
    (exchange.inbound / f"aaron+mini+{STAMP}+0").symlink_to(exchange.inbound / "gone")  # sorts first
    (exchange.inbound / f"ada+mini+{STAMP}+1").symlink_to(exchange.secret)
    (exchange.inbound / "ada+mini+not a date+2").mkdir()  # nbgrader's own collect stops at this too
    exchange.submit("bob")
    log = exchange.nbgrader_collect(allow_new_students=True)
    assert exchange.submitted("bob")["mini.ipynb"] == b"bob's own"
    assert exchange.submitted("ada").keys() == {"timestamp.txt"}  # the folder with a claim that is no date
    assert "aaron+mini" in log and "it is a symbolic link" in log
    assert not (exchange.root / "submitted" / "aaron").exists()


# -- 2. who: the folder's owner, or the roster -----------------------------------------------------


@needs_root
def test_a_folder_named_for_another_student_is_refused_by_both_where_each_student_has_an_account(exchange):
    # Student ids that are accounts of this machine: "nobody" (uid 65534) and "daemon" (uid 1).
    honest = exchange.submit("nobody", owner=NOBODY)
    forged = exchange.submit("daemon", owner=NOBODY)  # nobody's folder, named for daemon
    planted = exchange.submit("nobody")  # root's folder, named for nobody
    found, refused = _service_scan(exchange)
    assert [item.origin for item in found] == [honest.name]
    assert refused[forged.name] == (
        "the folder is owned by nobody (uid 65534), not by daemon, the account of the student it names"
    )
    assert refused[planted.name].startswith("the folder is owned by root (uid 0), not by nobody")
    log = exchange.nbgrader_collect()
    assert exchange.submitted("nobody")["mini.ipynb"] == b"nobody's own"
    assert not (exchange.root / "submitted" / "daemon").exists()
    assert "not by daemon, the account of the student it names" in log
    # With TLJH's account names (jupyter-<id>, none here), ownership proves nothing: the roster decides.
    found, refused = _service_scan(exchange, account_name="jupyter-{student}")
    assert found == [] and all("not on the course roster" in reason for reason in refused.values())


@needs_root
def test_a_file_of_another_account_inside_a_submission_is_left_out(exchange):
    folder = exchange.submit("nobody", owner=NOBODY)
    os.chmod(folder, 0o777)
    (folder / "planted.ipynb").write_bytes(SECRET)  # root's file in nobody's folder
    (found,), _ = _service_scan(exchange)
    left_out = collect.Collector(exchange.coursedir()).collect(found, set()).left_out
    assert left_out == ["planted.ipynb: it is owned by root (uid 0), not by the submitter"]
    assert "planted.ipynb" not in exchange.submitted("nobody")


def test_where_uids_are_shared_only_roster_students_are_collected_unless_allowed(exchange):
    exchange.submit("ada")
    intruder = exchange.submit("mallory")  # an invented name from the same shared uid
    found, refused = _service_scan(exchange)
    assert [item.student for item in found] == ["ada"]
    assert "not on the course roster" in refused[intruder.name]
    log = exchange.nbgrader_collect()
    assert "identity cannot be verified on this exchange" in log
    assert "not on the course roster" in log and not (exchange.root / "submitted" / "mallory").exists()
    found, refused = _service_scan(exchange, allow_new_students=True)
    assert sorted(item.student for item in found) == ["ada", "mallory"] and not refused
    # Put on the roster later (the service reads it again every 30 s), mallory is looked at again.
    scanner = collect.Scanner(exchange.inbound, collector.ExchangeTrust())
    assert [item.student for item in scanner.scan({"mini"}, set(), {"ada"})[0]] == ["ada"]
    assert [item.student for item in scanner.scan({"mini"}, set(), {"ada", "mallory"})[0]] == ["mallory"]
    assert "identity cannot be verified" in collector.ExchangeTrust(identity="shared").describe({"ada"})


# -- 2. when: the arrival, not the name or timestamp.txt --------------------------------------------


def test_nbgrader_collect_takes_the_newest_arrival_and_writes_it_as_the_timestamp(exchange):
    exchange.submit("ada", stamp="2099-01-01 00:00:00.000000 UTC")  # first, dated in the future
    time.sleep(0.05)
    honest = exchange.submit("ada")
    (honest / "mini.ipynb").write_text("ada's resubmission")
    log = exchange.nbgrader_collect()
    collected = exchange.submitted("ada")
    assert collected["mini.ipynb"] == b"ada's resubmission"
    arrival = collector.parse_timestamp(collected["timestamp.txt"].decode())
    assert abs(arrival - os.stat(honest / "mini.ipynb").st_ctime) < 0.01
    assert "minutes before its arrival" in log  # the claim of the one collected is flagged
    # What the batch grader and `nbgrader autograde` compute lateness from: the arrival.
    from autograder.nbgrader import batch

    read = batch.read_timestamp(exchange.root / "submitted" / "ada" / "mini", exchange.root)
    assert abs(read.replace(tzinfo=datetime.timezone.utc).timestamp() - arrival) < 0.01


def test_a_claim_in_the_future_or_far_from_the_arrival_is_flagged():
    trust = collector.ExchangeTrust()
    now = time.time()
    assert "in the future" in trust.claim_flag("2099-01-01 00:00:00 UTC", now)
    assert "minutes before its arrival" in trust.claim_flag(collector.format_utc(now - 3600), now)
    assert trust.claim_flag(collector.format_utc(now - 5), now) is None
    assert "is not a date" in trust.claim_flag("\x1b[2Jyesterday", now)
    assert "\x1b" not in trust.claim_flag("\x1b[2Jyesterday", now)


# -- 3. names are data ----------------------------------------------------------------------------

HOSTILE_IDS = {
    "*": "globs",
    "<img src=x onerror=alert(1)>": "HTML",
    "=HYPERLINK(1)": "CSV",
    "a b": "shells",
    "-rf": "must start with a letter",
    "\x1b[2Jroot": "control characters",
    "ädä": "other than ASCII",
    ".hidden": "must start with a letter",
    "x" * 65: "over 64",
}


def test_one_definition_of_an_acceptable_student_id():
    for student, why in HOSTILE_IDS.items():
        reason = names.refusal(student)
        assert reason is not None and why in reason, (student, reason)
    for student in ("ada", "Ada.Lovelace", "s1234567", "ada@uni.example", "jupyter-ada_2"):
        assert names.refusal(student) is None
    assert names.refusal("ada\udcff") == "the name is not UTF-8 text"
    assert names.shown("a\x1b[2J\nb\udcff\u202e") == "a\\x1b[2J\\nb\\xff\\u202e"


def test_unacceptable_names_are_refused_remembered_and_stop_neither_discovery_nor_collect(exchange):
    inbound = os.fsencode(exchange.inbound)
    for student in HOSTILE_IDS:
        if "/" not in student:
            os.mkdir(inbound + b"/" + os.fsencode(f"{student}+mini+{STAMP}+1"))
    os.mkdir(inbound + f"/\xff\xfe+mini+{STAMP}+2".encode("latin-1"))  # not UTF-8
    os.mkdir(inbound + f"/ada+mini+{STAMP}\x1b[2J+3".encode())  # a valid id, control codes later
    exchange.submit("bob")
    scanner = collect.Scanner(exchange.inbound, collector.ExchangeTrust())
    found, refused = scanner.scan({"mini"}, set(), {"ada", "bob"})
    assert [item.student for item in found] == ["bob"]
    assert len(refused) == len(HOSTILE_IDS) + 2
    assert scanner.scan({"mini"}, set(), {"ada", "bob"}) == ([], {})  # remembered, not looked at again
    log = exchange.nbgrader_collect()
    assert exchange.submitted("bob")["mini.ipynb"] == b"bob's own"
    assert sorted(p.name for p in (exchange.root / "submitted").iterdir()) == ["bob"]
    assert "\x1b" not in log and "\\x1b[2J" in log and "\\xff\\xfe+mini" in log


def test_a_scan_of_an_inbound_full_of_junk_parses_each_name_once(exchange, monkeypatch):
    inbound = exchange.inbound
    for index in range(3_000):
        os.mkdir(inbound / (f"junk{index}+mini+x+1" if index % 2 else f"*{index}+mini+x+1"))
    exchange.submit("ada")
    parsed = []
    real = collector.parse_name
    monkeypatch.setattr(
        collector, "parse_name", lambda name, assignments: parsed.append(name) or real(name, assignments)
    )
    scanner = collect.Scanner(inbound, collector.ExchangeTrust())
    found, refused = scanner.scan({"mini"}, set(), {"ada"})
    assert [item.student for item in found] == ["ada"] and len(refused) == 3_000
    assert len(parsed) == 3_001
    parsed.clear()
    for _ in range(10):  # what an idle service does every poll
        assert scanner.scan({"mini"}, {found[0].origin}, {"ada"}) == ([], {})
    assert parsed == []


def test_the_batch_grader_skips_unacceptable_and_undecodable_student_folders(mini_course, tmp_path, capsys):
    from autograder.core.course import Course
    from autograder.nbgrader import batch, release

    root = release.copy_course(mini_course, tmp_path / "course", with_release=True).root
    submitted = os.fsencode(root / "submitted")
    for student in (b"ada", b"*", b"\xff\xfe", b"<b>x<b>"):
        os.makedirs(submitted + b"/" + student + b"/mini")
        shutil.copy(root / "release" / "mini" / "mini.ipynb", os.fsdecode(submitted + b"/" + student + b"/mini"))
    work = batch.find_work(Course(root), "mini", ["mini"], None)
    assert [item.student for item in work] == ["ada"]
    warnings = capsys.readouterr().err
    assert "\\xff\\xfe" in warnings and "globs" in warnings and "HTML" in warnings
