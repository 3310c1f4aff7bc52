"""The grading service: time from `nbgrader submit` returning to the feedback being fetchable.

Builds a scratch copy of this course in build/bench_service/ with a real exchange, releases
attention_heads, and starts `python -m autograder serve` on it. Simulated students (nbgrader's
own exchange classes, in this process) fetch the assignment and submit the virtual-head notebook
(correct, alternative, wrong, blank and broken work, cycling); a submission's latency is the time
from its submit returning to its feedback page existing under the name `nbgrader fetch_feedback`
looks up. Phases:

  * idle: one submission at a time (the next once the previous one's feedback is out);
  * burst: N submissions spread evenly over S seconds (default 200 in 60 s); the drain time is
    from the first submit to the last feedback;
  * the batch grader on the same N submissions (a copy of the course's submitted/ tree, fresh
    gradebook): `python -m autograder grade --course COPY attention_heads`, and that plus
    `nbgrader generate_feedback` (what the service also does for each submission).

  * fairness (before the burst): a sleeper (a notebook that sleeps SLEEP seconds, within its
    limits) then an honest student a second later; and a flood (one student submitting FLOOD
    times, FLOOD more under invented names that are on no roster) then an honest student. It
    prints each honest student's latency split into their wait before their grading began and
    their own grading (claim to page out, from the queue's row), and judges the rule "another
    student's slow or numerous submissions delay feedback by no more than its own grading
    time" (wait <= own grading time): PASS or FAIL for each, and for both.
  * TeX (after the fairness phase): another student's feedback latency alone, and when
    submitted a second after an answer holding TEX_KIB KiB of TeX; and the three pages' load
    times in Chromium (headless /usr/bin/chromium, via Playwright).

It prints median and 95th percentile latencies, the burst's drain time, the batch times, their
ratios, the CPU time each spent per submission in its own processes (the service with its
feedback process, the batch grader; not the sandboxed runs, whose processes neither reaps, and
which are the same for both: a figure that other work on a shared machine disturbs less than
wall time), the load average at each phase, and the
service's resident memory (with its children, and of its main process alone) every 100 graded
submissions, its peak in each grading child's lifetime (the child is replaced after
SUBMISSIONS_PER_CHILD), and its slope fitted after the first fifth of the burst and over its
second half (memory over a long run: `--idle 0 --burst 2000 --burst-seconds 300 --no-batch`).
A benchmark, not a test: nothing is asserted.

    python benchmarks/bench_service.py [--idle 20] [--burst 200] [--burst-seconds 60] [--jobs 2]
                                       [--sleep 30] [--flood 100] [--tex-kib 1024]
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import threading
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from autograder.core import processes  # noqa: E402
from autograder.core.course import Course  # noqa: E402
from autograder.dev import classroom  # noqa: E402
from autograder.dev.students import Student  # noqa: E402
from autograder.nbgrader import release  # noqa: E402
from autograder.nbgrader import settings as nbgrader_settings  # noqa: E402
from autograder.service.grading_process import SUBMISSIONS_PER_CHILD  # noqa: E402

ASSIGNMENT, NOTEBOOK = "attention_heads", "virtual_head"
COURSE_ID = "transformer-circuits"
WORK = ROOT / "build" / "bench_service"


def nbgrader_config(root: pathlib.Path, exchange: pathlib.Path):
    config = nbgrader_settings.load(Course(root)).config
    config.CourseDirectory.root = str(root)
    config.CourseDirectory.assignment_id = ASSIGNMENT
    config.Exchange.root = str(exchange)
    return config


def build_course() -> tuple[pathlib.Path, pathlib.Path]:
    """A scratch course with attention_heads generated and released to a fresh exchange."""
    from nbgrader.auth import Authenticator
    from nbgrader.converters import GenerateAssignment
    from nbgrader.coursedir import CourseDirectory
    from nbgrader.exchange.default import ExchangeReleaseAssignment

    if WORK.exists():
        shutil.rmtree(WORK)
    WORK.mkdir(parents=True)
    root = release.copy_course(Course(ROOT), WORK / "course", with_release=True).root
    exchange = WORK / "exchange"
    exchange.mkdir()
    os.chmod(exchange, 0o777)
    config = nbgrader_config(root, exchange)
    here = os.getcwd()
    try:
        converter = GenerateAssignment(coursedir=CourseDirectory(config=config), config=config)
        converter.force = True
        converter.start()
    finally:
        os.chdir(here)
    ExchangeReleaseAssignment(
        coursedir=CourseDirectory(config=config), authenticator=Authenticator(config=config), config=config
    ).start()
    with open(root / "nbgrader_config.py", "a", encoding="utf-8") as stream:
        stream.write(f"\nc.Exchange.root = {str(exchange)!r}\nc.GradingService.poll_seconds = 0.2\n")
    return root, exchange


def enrol(root: pathlib.Path, names) -> None:
    """Put students on the course roster (the bench's students share one uid, as in containers:
    the roster is what makes them students)."""
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{root / 'gradebook.db'}", COURSE_ID) as gradebook:
        for name in names:
            gradebook.update_or_create_student(name)


def sleeper_work(course: Course, seconds: float) -> dict:
    """The correct notebook, with a sleep of `seconds` before its first answer (within its CPU limit)."""
    answers = classroom.model_answers(course, ASSIGNMENT, NOTEBOOK)
    first = next(iter(answers))
    return classroom.filled_notebook(
        course, ASSIGNMENT, NOTEBOOK, {first: f"import time\ntime.sleep({seconds})\n" + answers[first]}
    )


def judged(root: pathlib.Path, watcher, name: str, idle_median: float) -> tuple[str, bool]:
    """An honest student's latency split into the wait before their grading began and their own
    grading (its claim to its page out, from the queue's row), judged by the rule: another
    student's slow or numerous submissions delay theirs by no more than their own grading time."""
    from sqlalchemy import create_engine

    from autograder.service import queue as jobqueue

    engine = create_engine(f"sqlite:///{root / 'gradebook.db'}")
    rows = [row for row in jobqueue.Queue(engine, COURSE_ID).rows(states=(jobqueue.DONE,)) if row.student == name]
    latency = watcher.latencies.get(name, float("nan"))
    if not rows:
        return f"{name}: no feedback ({latency:.1f} s)", False
    own = watcher.appeared_at[name] - rows[-1].started_at  # claimed -> page out
    waited = latency - own
    passed = waited <= own
    return (
        f"{name}'s feedback after {latency:.2f} s: waited {waited:.2f} s before its grading began, "
        f"its own grading {own:.2f} s (claim to page; idle median latency {idle_median:.2f} s, "
        f"{latency - idle_median:+.2f} s beyond it); rule (wait <= own grading time): "
        f"{'PASS' if passed else 'FAIL'}",
        passed,
    )


def fairness(args, course: Course, exchange: pathlib.Path, watcher, idle_median: float) -> bool:
    """A sleeper, then a flood, each followed by an honest student: print each honest student's
    wait and own grading time, judged by the rule; True when both pass."""
    root = course.root
    sleeper, honest = prepare_students(["sleeper", "honest1"], exchange, course)
    sleeper.write_notebook(ASSIGNMENT, NOTEBOOK, sleeper_work(course, args.sleep))
    sleeper.submit(ASSIGNMENT)
    watcher.expect(sleeper, time.monotonic())
    time.sleep(1.0)
    honest.submit(ASSIGNMENT)
    watcher.expect(honest, time.monotonic())
    watcher.wait_all(args.sleep + 300)
    line, sleeper_passed = judged(root, watcher, "honest1", idle_median)
    print(
        f"sleeper ({args.sleep:g} s asleep): its feedback after {watcher.latencies.get('sleeper', float('nan')):.1f} s; "
        f"an honest student 1 s later: {line}"
    )
    flooder, honest = prepare_students(["flooder", "honest2"], exchange, course)
    invented = prepare_students([f"invented{n:04d}" for n in range(args.flood)], exchange, course)
    start = time.monotonic()
    for _ in range(args.flood):
        flooder.submit(ASSIGNMENT)
    for student in invented:
        student.submit(ASSIGNMENT)
    watcher.expect(flooder, time.monotonic())
    honest.submit(ASSIGNMENT)
    watcher.expect(honest, time.monotonic())
    watcher.wait_all(600)
    line, flood_passed = judged(root, watcher, "honest2", idle_median)
    print(
        f"flood ({args.flood} submissions of one student and {args.flood} under invented names, in "
        f"{time.monotonic() - start:.0f} s), then an honest student: {line}"
    )
    print(f"fairness: {'PASS' if sleeper_passed and flood_passed else 'FAIL'} (sleeper and flood)")
    return sleeper_passed and flood_passed


def page_of(student: Student) -> pathlib.Path:
    """Where the student's virtual-head feedback page is released (what fetch_feedback looks up)."""
    from nbgrader.utils import notebook_hash

    secret = (student.last_submission(ASSIGNMENT) / "submission_secret.txt").read_text()
    return student.exchange / COURSE_ID / "feedback" / f"{notebook_hash(secret=secret, notebook_id=NOTEBOOK)}.html"


def chromium_load_seconds(pages: list[pathlib.Path]) -> list[float]:
    """Seconds Chromium (headless, /usr/bin/chromium) takes to open each page until its load
    event, in one browser, each in a new tab."""
    from playwright.sync_api import sync_playwright

    seconds = []
    with sync_playwright() as driver:
        browser = driver.chromium.launch(
            executable_path="/usr/bin/chromium", headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            warm = browser.new_page()  # the browser's own start-up is not the page's
            warm.goto("about:blank")
            warm.close()
            for page_file in pages:
                tab = browser.new_page()
                started = time.monotonic()
                tab.goto(page_file.as_uri(), wait_until="load", timeout=300_000)
                seconds.append(time.monotonic() - started)
                tab.close()
        finally:
            browser.close()
    return seconds


def tex_phase(args, course: Course, exchange: pathlib.Path, watcher) -> None:
    """Another student's feedback, without and with a hostile answer of TEX_KIB KiB of TeX
    submitted a second before it: its latency, and its page's load in Chromium (the hostile
    page's too), in the same run."""
    plain, texer, other = prepare_students(["plain", "texer", "other"], exchange, course)
    for student in (plain, other):
        student.write_notebook(ASSIGNMENT, NOTEBOOK, classroom.filled_notebook(course, ASSIGNMENT, NOTEBOOK))
    formula, tex = 0, []
    while sum(map(len, tex)) < args.tex_kib * 1024:
        tex.append(f"$x_{{{formula}}}^2 + y$")
        formula += 1
    texer.write_notebook(
        ASSIGNMENT,
        NOTEBOOK,
        classroom.filled_notebook(course, ASSIGNMENT, NOTEBOOK, {"ex1_explain_nets": " ".join(tex)}),
    )
    plain.submit(ASSIGNMENT)
    watcher.expect(plain, time.monotonic())
    watcher.wait_all(300)
    texer.submit(ASSIGNMENT)
    watcher.expect(texer, time.monotonic())
    time.sleep(1.0)
    other.submit(ASSIGNMENT)
    watcher.expect(other, time.monotonic())
    watcher.wait_all(600)
    pages = [page_of(plain), page_of(other), page_of(texer)]
    sizes = [page.stat().st_size / 1024 for page in pages]
    try:
        loads = chromium_load_seconds(pages)
        shown = f"{loads[0]:.2f} s, {loads[1]:.2f} s and {loads[2]:.2f} s"
    except Exception as error:  # noqa: BLE001 - no browser here: the latencies still stand
        shown = f"not measured ({error!r:.80})"
    print(
        f"TeX ({args.tex_kib} KiB in one answer): another student's feedback after "
        f"{watcher.latencies['plain']:.2f} s alone, {watcher.latencies['other']:.2f} s when submitted 1 s after "
        f"the hostile answer (whose own came after {watcher.latencies['texer']:.2f} s); pages "
        f"{sizes[0]:.0f}, {sizes[1]:.0f} and {sizes[2]:.0f} KiB (alone, after, hostile), opened in Chromium in {shown}"
    )


def kinds_of_work(course: Course) -> list[dict]:
    """Correct, alternative, wrong, blank and broken virtual-head notebooks (as bench_grading.py)."""
    work = [classroom.filled_notebook(course, ASSIGNMENT, NOTEBOOK)]
    for kind in ("alternatives", "mistakes"):
        for entry in course.library(kind, ASSIGNMENT).values():
            if entry["notebook"] == NOTEBOOK:
                work.append(classroom.filled_notebook(course, ASSIGNMENT, NOTEBOOK, entry["cells"]))
    work.append(classroom.filled_notebook(course, ASSIGNMENT, NOTEBOOK, blank=True))
    answers = classroom.model_answers(course, ASSIGNMENT, NOTEBOOK)
    first, second = list(answers)[:2]
    work.append(
        classroom.filled_notebook(
            course,
            ASSIGNMENT,
            NOTEBOOK,
            {first: answers[first] + "\nW_V1 = [[1, 2]\n", second: "raise RuntimeError('oops')\n" + answers[second]},
        )
    )
    return work


def prepare_students(names, exchange: pathlib.Path, course: Course) -> list[Student]:
    """Each student fetches the assignment and fills in the virtual-head notebook only."""
    work = kinds_of_work(course)
    students = []
    for number, name in enumerate(names):
        student = Student(name, WORK / "homes" / name, exchange, COURSE_ID)
        student.home.mkdir(parents=True, exist_ok=True)
        student.fetch_assignment(ASSIGNMENT)
        for other in (student.home / ASSIGNMENT).glob("*.ipynb"):
            if other.stem != NOTEBOOK:
                other.unlink()  # submit one notebook (nbgrader warns, and submits)
        student.write_notebook(ASSIGNMENT, NOTEBOOK, work[number % len(work)])
        students.append(student)
    return students


def rss_mib(pid: int, children: bool = True) -> float:
    """Resident memory of the service (and its children: the feedback process, bubblewrap) right now."""
    total = 0
    pids = [pid]
    if children:
        try:
            pids += [int(child) for child in pathlib.Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
        except OSError:
            pass
    for one in pids:
        try:
            for line in pathlib.Path(f"/proc/{one}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def _children(pid: int) -> list[int]:
    try:
        return [int(child) for child in pathlib.Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of a process, its reaped descendants and its live children (the
    sandboxed runs are not among them: bubblewrap's sandbox processes are not reaped by the grader)."""
    ticks = 0
    for one in [pid, *_children(pid)]:
        try:
            fields = pathlib.Path(f"/proc/{one}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += sum(int(value) for value in fields[11:15])  # utime, stime, cutime, cstime
    return ticks / os.sysconf("SC_CLK_TCK")


class MemorySampler:
    """The service's resident memory against the number of its feedback pages out, every second."""

    def __init__(self, pid: int, watcher):
        self.pid, self.watcher, self.samples = pid, watcher, []  # (pages out, MiB, MiB of the service alone)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.wait(1.0):
            with self.watcher.lock:
                done = len(self.watcher.appeared)
            self.samples.append((done, rss_mib(self.pid), rss_mib(self.pid, children=False)))

    def report(self, total: int) -> str:
        self.stop.set()
        self.thread.join()
        marks = []
        for mark in range(0, total + 1, 100):
            at = [(mib, alone) for done, mib, alone in self.samples if done >= mark]
            if at:
                marks.append(f"{mark}: {at[0][0]:.0f} ({at[0][1]:.0f})")

        def slope(start: float, column: int) -> str:
            fitted = [(sample[0], sample[column]) for sample in self.samples if total * start <= sample[0] < total]
            if len({done for done, _ in fitted}) < 2:
                return "-"
            mean_x = statistics.fmean(done for done, _ in fitted)
            mean_y = statistics.fmean(mib for _, mib in fitted)
            covariance = sum((done - mean_x) * (mib - mean_y) for done, mib in fitted)
            variance = sum((done - mean_x) ** 2 for done, _ in fitted)
            return f"{1000 * covariance / variance:+.1f}"

        # The grading child is replaced after SUBMISSIONS_PER_CHILD, so the total is a sawtooth and
        # a fitted slope depends on where the teeth fall: bounded means each generation's peak
        # is no higher than the one before.
        peaks = []
        for start in range(0, total, SUBMISSIONS_PER_CHILD):
            window = [sample for sample in self.samples if start <= sample[0] < start + SUBMISSIONS_PER_CHILD]
            if window:
                peaks.append(
                    f"{start}-{start + SUBMISSIONS_PER_CHILD}: {max(s[1] for s in window):.0f} "
                    f"({max(s[2] for s in window):.0f})"
                )
        return (
            f"memory (MiB; in brackets the service's main process alone) at N feedback pages out: "
            f"{', '.join(marks)}; peak in each grading child's {SUBMISSIONS_PER_CHILD} submissions: "
            f"{', '.join(peaks)}; slope in MiB per 1000 submissions, fitted after the first fifth: "
            f"{slope(0.2, 1)} ({slope(0.2, 2)}), over the second half: {slope(0.5, 1)} ({slope(0.5, 2)})"
        )


class Watcher:
    """Notes when each submitted student's feedback page appears in the exchange."""

    def __init__(self):
        self.pending: dict[str, tuple[Student, float, pathlib.Path]] = {}
        self.latencies: dict[str, float] = {}
        self.appeared: dict[str, float] = {}
        self.appeared_at: dict[str, float] = {}  # epoch seconds, to compare with the queue's times
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def expect(self, student: Student, submitted: float) -> None:
        from nbgrader.utils import notebook_hash

        secret = (student.last_submission(ASSIGNMENT) / "submission_secret.txt").read_text()
        page = student.exchange / COURSE_ID / "feedback" / f"{notebook_hash(secret=secret, notebook_id=NOTEBOOK)}.html"
        with self.lock:
            self.pending[student.name] = (student, submitted, page)

    def _run(self) -> None:
        # One directory listing per round (not a stat per pending page): the watcher must not
        # take the CPU the service is measured on.
        while not self.stop.is_set():
            with self.lock:
                waiting = list(self.pending.items())
            if waiting:
                try:
                    present = set(os.listdir(waiting[0][1][2].parent))
                except FileNotFoundError:
                    present = set()
                now, epoch = time.monotonic(), time.time()
                for name, (_, submitted, page) in waiting:
                    if page.name in present:
                        with self.lock:
                            self.pending.pop(name, None)
                            self.latencies[name] = now - submitted
                            self.appeared[name] = now
                            self.appeared_at[name] = epoch
            time.sleep(0.05)

    def wait_all(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if not self.pending:
                    return True
            time.sleep(0.05)
        return False


def percentiles(values: list[float]) -> str:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]
    return (
        f"median {statistics.median(ordered):6.2f} s   p95 {p95:6.2f} s   max {ordered[-1]:6.2f} s   (n={len(ordered)})"
    )


def batch_times(root: pathlib.Path, jobs: int, with_feedback: bool = True) -> tuple[float, float | None, float, float]:
    """(grade, grade + generate_feedback) wall seconds of the batch path on a copy of submitted/,
    the batch grader's CPU seconds (with its sandboxes) and the load average when it started."""
    copy = WORK / "batch"
    if copy.exists():
        shutil.rmtree(copy)
    course_copy = release.copy_course(Course(root), copy, with_release=True).root
    shutil.copytree(root / "submitted", course_copy / "submitted", symlinks=True)
    exchange = WORK / "exchange"
    from nbgrader.converters import GenerateAssignment
    from nbgrader.coursedir import CourseDirectory

    config = nbgrader_config(course_copy, exchange)
    here = os.getcwd()
    try:
        converter = GenerateAssignment(coursedir=CourseDirectory(config=config), config=config)
        converter.force = True
        converter.start()
    finally:
        os.chdir(here)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    load = os.getloadavg()[0]
    start = time.monotonic()
    with open(WORK / "batch.log", "w") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "autograder",
                "grade",
                "--course",
                str(course_copy),
                ASSIGNMENT,
                "--jobs",
                str(jobs),
            ],
            env=env,
            stdout=log,
            stderr=log,
        )
        _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    graded = time.monotonic() - start
    if process.returncode != 0:
        raise RuntimeError(f"the batch grader failed: see {WORK / 'batch.log'}")
    cpu = usage.ru_utime + usage.ru_stime
    if not with_feedback:
        return graded, None, cpu, load
    subprocess.run(
        [sys.executable, "-m", "nbgrader", "generate_feedback", ASSIGNMENT, "--force", "--log-level=ERROR"],
        cwd=course_copy,
        check=True,
        env=env,
        capture_output=True,
    )
    return graded, time.monotonic() - start, cpu, load


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle", type=int, default=20, help="submissions one at a time")
    parser.add_argument("--burst", type=int, default=200, help="submissions in the burst")
    parser.add_argument("--burst-seconds", type=float, default=60.0, help="the burst arrives within this time")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--sleep", type=float, default=30.0, help="the sleeper's sleep, seconds (0: no fairness phase)")
    parser.add_argument("--flood", type=int, default=100, help="the flood's submissions")
    parser.add_argument(
        "--tex-kib", type=int, default=1024, help="TeX in the hostile answer of the TeX phase, KiB (0: no TeX phase)"
    )
    parser.add_argument(
        "--no-nbgrader-feedback",
        action="store_true",
        help="skip timing nbgrader generate_feedback after the batch grader (minutes)",
    )
    parser.add_argument(
        "--no-batch", action="store_true", help="skip the batch grader's run (for memory over a long run)"
    )
    args = parser.parse_args()
    processes.prepare_process()  # as the grader does (a slow, unused import of jsonschema, warnings)

    root, exchange = build_course()
    course = Course(root)
    idle_students = prepare_students([f"idle{n:03d}" for n in range(args.idle)], exchange, course)
    burst_students = prepare_students([f"burst{n:04d}" for n in range(args.burst)], exchange, course)
    enrol(
        root,
        [s.name for s in idle_students + burst_students]
        + ["sleeper", "honest1", "flooder", "honest2", "plain", "texer", "other"],
    )
    log = open(WORK / "service.log", "w")
    service = subprocess.Popen(
        [sys.executable, "-m", "autograder", "serve", "--course", str(root), "--jobs", str(args.jobs)],
        stderr=log,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    try:
        while "feedback process ready" not in (WORK / "service.log").read_text():
            time.sleep(0.1)
        watcher = Watcher()
        print(
            f"machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; {ASSIGNMENT}/{NOTEBOOK}; "
            f"service --jobs {args.jobs}; memory at start {rss_mib(service.pid):.0f} MiB"
        )

        for student in idle_students:
            student.submit(ASSIGNMENT)
            watcher.expect(student, time.monotonic())
            if not watcher.wait_all(120):
                print("idle: feedback did not arrive within 120 s; see", WORK / "service.log")
                return 1
            time.sleep(0.3)
        idle = [watcher.latencies[s.name] for s in idle_students]
        if idle:
            print(f"idle  ({args.idle} one at a time):   {percentiles(idle)}; memory {rss_mib(service.pid):.0f} MiB")
        if args.sleep > 0:
            fairness(args, course, exchange, watcher, statistics.median(idle) if idle else 0.0)
        if args.tex_kib > 0:
            tex_phase(args, course, exchange, watcher)
        if not args.burst:
            return 0

        gap = args.burst_seconds / max(1, args.burst)
        burst_load = os.getloadavg()[0]
        cpu_before = cpu_seconds(service.pid)
        with watcher.lock:
            watcher.appeared.clear()  # the sampler counts the burst's pages only
        sampler = MemorySampler(service.pid, watcher)
        burst_start = time.monotonic()
        peak = 0.0
        for number, student in enumerate(burst_students):
            target = burst_start + number * gap
            while time.monotonic() < target:
                time.sleep(max(0.0, min(0.01, target - time.monotonic())))
            student.submit(ASSIGNMENT)
            watcher.expect(student, time.monotonic())
            if number % 20 == 0:
                peak = max(peak, rss_mib(service.pid))
        arrived = time.monotonic() - burst_start
        while not watcher.wait_all(1.0):
            peak = max(peak, rss_mib(service.pid))
            if time.monotonic() - burst_start > 30 * 60:
                print("burst: not drained after 30 minutes")
                return 1
        drained = max(watcher.appeared[s.name] for s in burst_students) - burst_start
        service_cpu = cpu_seconds(service.pid) - cpu_before
        burst = [watcher.latencies[s.name] for s in burst_students]
        print(f"burst ({args.burst} in {arrived:.0f} s, load {burst_load:.1f} at its start): {percentiles(burst)}")
        print(
            f"burst drained in {drained:.1f} s ({args.burst / drained:.2f} submissions/s), "
            f"{drained - arrived:.1f} s after the last submission; service CPU (sandboxes aside) {service_cpu:.1f} s "
            f"({service_cpu / args.burst:.3f} s per submission); memory peak "
            f"{peak:.0f} MiB, end {rss_mib(service.pid):.0f} MiB"
        )
        print(sampler.report(args.burst))
    finally:
        service.terminate()
        service.wait(60)
        watcher.stop.set()
        log.close()

    if args.no_batch:
        return 0
    graded, with_feedback, batch_cpu, batch_load = batch_times(root, args.jobs, not args.no_nbgrader_feedback)
    total = args.burst + args.idle
    print(
        f"batch grader, same {total} submissions (--jobs {args.jobs}, load {batch_load:.1f} at its start): "
        f"grade {graded:.1f} s, CPU (sandboxes aside) {batch_cpu:.1f} s ({batch_cpu / total:.3f} s per submission)"
        + (f"; grade + nbgrader generate_feedback {with_feedback:.1f} s" if with_feedback else "")
    )
    batch_burst = graded / total * args.burst  # the batch grader's time for the burst's submissions
    print(
        f"ratios: burst drain / batch grade of the same {args.burst} ({batch_burst:.1f} s) = "
        f"{drained / batch_burst:.2f}"
        + (
            f"; / batch grade + feedback ({with_feedback / total * args.burst:.1f} s) = "
            f"{drained / (with_feedback / total * args.burst):.2f}"
            if with_feedback
            else ""
        )
        + (f"; idle median latency / batch grade of the class = {statistics.median(idle) / graded:.3f}" if idle else "")
        + f"; service CPU per submission / batch's = {service_cpu / args.burst / (batch_cpu / total):.2f}"
    )
    (WORK / "results.json").write_text(
        json.dumps(
            {
                "idle_latencies": idle,
                "burst_latencies": burst,
                "burst_drained": drained,
                "burst_arrival": arrived,
                "batch_grade": graded,
                "batch_grade_and_feedback": with_feedback,
                "service_burst_cpu": service_cpu,
                "batch_cpu": batch_cpu,
                "memory_samples": sampler.samples,
                "jobs": args.jobs,
            },
            indent=1,
        )
    )
    print(f"results: {WORK / 'results.json'}; service log: {WORK / 'service.log'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
