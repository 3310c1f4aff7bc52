"""`make bench`: the sandboxed batch grader against a Jupyter kernel per notebook, same run.

For each class size N it builds a class of N submissions of the virtual-head notebook (a mix of
correct, alternative, wrong, blank and broken work, cycling), grades one copy with
`python -m autograder grade --course` (sandboxed, parallel) and another with
`nbgrader autograde` with the kernel baseline injected (benchmarks/kernel_autograde.py; stock
nbgrader's way of running student code: one Jupyter kernel per notebook, serially, identical
checks), checks that both gradebooks hold identical scores, and prints wall time, notebooks per
second, peak memory and the ratio. First it prints the start cost of each isolation tier this
machine offers (one trivial cell, start to result), measured in the same run.

Feedback, for the sizes in --feedback-sizes: the class graded alone (`grade --no-feedback`)
then given `nbgrader generate_feedback --force` (stock nbgrader's feedback), against another
copy of the same class graded with its feedback (`grade`, pages rendered in parallel while
grading goes on); it prints both, their ratio, the mean page size of each, and checks that both
copies hold the same scores and a page for every student.

Profile (--profile-size, default 100): the same class graded in this process with one worker
(`--jobs 1`), timing each step where it runs: per notebook, the sandbox's start, the imports,
confinement, the student's cells, the probe calls and teardown (from the supervisor's frame
times), reading and sanitising, checking, writing the autograded notebooks (with the copies,
markers and commit), recording in the gradebook, and then rendering each student's feedback
page. One worker, so each step's seconds are its core-seconds (the sandbox's on the other core).

    python benchmarks/bench_grading.py [--sizes 50 100 200] [--baseline-sizes 50 100 200] [--feedback-sizes 50]
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import pathlib
import shutil
import subprocess
import sys
import time

from autograder.core.course import Course
from autograder.dev import classroom
from autograder.nbgrader import release

ROOT = pathlib.Path(__file__).resolve().parent.parent
REPOSITORY = Course(ROOT)

ASSIGNMENT, NOTEBOOK = "attention_heads", "virtual_head"
WORK = ROOT / "build" / "bench"


def make_class(course: Course, size: int) -> None:
    """N students, cycling through correct, alternative, wrong, blank and broken submissions."""
    kinds = [("reference", classroom.filled_notebook(course, ASSIGNMENT, NOTEBOOK))]
    for kind in ("alternatives", "mistakes"):
        for entry in course.library(kind, ASSIGNMENT).values():
            if entry["notebook"] == NOTEBOOK:
                kinds.append((kind, classroom.filled_notebook(course, ASSIGNMENT, NOTEBOOK, entry["cells"])))
    kinds.append(("blank", classroom.filled_notebook(course, ASSIGNMENT, NOTEBOOK, blank=True)))
    # Broken code (a syntax error, a crash). Not broken JSON: stock nbgrader stops on that
    # student with an error, so the baseline could not be compared.
    answers = classroom.model_answers(course, ASSIGNMENT, NOTEBOOK)
    first, second = list(answers)[:2]
    kinds.append(
        (
            "broken",
            classroom.filled_notebook(
                course,
                ASSIGNMENT,
                NOTEBOOK,
                {
                    first: answers[first] + "\nW_V1 = [[1, 2]\n",
                    second: "raise RuntimeError('oops')\n" + answers[second],
                },
            ),
        )
    )
    for number in range(size):
        kind, notebook = kinds[number % len(kinds)]
        classroom.write_submission(course.root, f"student{number:04d}", ASSIGNMENT, {NOTEBOOK: notebook})


def make_course(name: str, size: int) -> pathlib.Path:
    root = WORK / name
    if root.exists():
        shutil.rmtree(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    course = release.copy_course(REPOSITORY, root)
    subprocess.run(
        [sys.executable, "-m", "nbgrader", "generate_assignment", ASSIGNMENT, "--force", "--log-level=ERROR"],
        cwd=root,
        check=True,
        capture_output=True,
    )
    make_class(course, size)
    return root


def measured(command: list[str], cwd: pathlib.Path) -> dict:
    """Run a command in a child that reports its own and its children's peak memory."""
    probe = (
        "import json, resource, subprocess, sys, time\n"
        "start = time.monotonic()\n"
        f"done = subprocess.run({command!r}, cwd={str(cwd)!r}, capture_output=True, text=True)\n"
        "wall = time.monotonic() - start\n"
        "if done.returncode: sys.stderr.write(done.stdout + done.stderr); sys.exit(done.returncode)\n"
        "print(json.dumps({'wall': wall, 'peak_child_kib': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))\n"
    )
    completed = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return json.loads(completed.stdout.strip().splitlines()[-1])


def scores(root: pathlib.Path) -> dict:
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{root / 'gradebook.db'}", "transformer-circuits") as gradebook:
        return {
            (submission.student.id, notebook.name, grade.name): grade.auto_score
            for submission in gradebook.assignment_submissions(ASSIGNMENT)
            for notebook in submission.notebooks
            for grade in notebook.grades
        }


def page_sizes(root: pathlib.Path) -> list[int]:
    return [page.stat().st_size for page in (root / "feedback").glob(f"*/{ASSIGNMENT}/{NOTEBOOK}.html")]


def feedback_rows(size: int, graded_root: pathlib.Path, grading: dict, stock: bool = True) -> dict:
    """Stock feedback after grading alone (on `graded_root`) against grading with feedback (a
    fresh copy); without `stock`, grading with feedback against grading alone only."""
    if not stock:
        both_root = make_course(f"feedback-{size}", size)
        both = measured(
            [sys.executable, "-m", "autograder", "grade", "--course", str(both_root), ASSIGNMENT, "--force"], ROOT
        )
        pages = page_sizes(both_root)
        complete = len(pages) == size and scores(graded_root) == scores(both_root)
        print(
            f"{size:>5} {'grading with feedback':<28} {both['wall']:>8.1f} {size / both['wall']:>7.2f} "
            f"{both['wall'] / size:>7.3f} {'':>9} {'':>7}  pages {sum(pages) / max(1, len(pages)) / 1024:.0f} KiB; "
            f"{both['wall'] / grading['wall']:.2f}x grading alone; {len(pages)} pages, scores identical: {complete}",
            flush=True,
        )
        return {"grading_with_feedback_wall": both["wall"], "feedback_complete": complete}
    stock_run = measured(
        [sys.executable, "-m", "nbgrader", "generate_feedback", ASSIGNMENT, "--force", "--log-level=ERROR"],
        graded_root,
    )
    both_root = make_course(f"feedback-{size}", size)
    both = measured(
        [sys.executable, "-m", "autograder", "grade", "--course", str(both_root), ASSIGNMENT, "--force"], ROOT
    )
    stock_pages, our_pages = page_sizes(graded_root), page_sizes(both_root)
    complete = len(stock_pages) == len(our_pages) == size and scores(graded_root) == scores(both_root)
    before = grading["wall"] + stock_run["wall"]
    mean = lambda sizes: sum(sizes) / max(1, len(sizes)) / 1024  # noqa: E731
    for label, wall, extra in (
        ("nbgrader generate_feedback", stock_run["wall"], f"pages {mean(stock_pages):.0f} KiB"),
        ("grading, then that", before, ""),
        (
            "grading with feedback",
            both["wall"],
            f"pages {mean(our_pages):.0f} KiB; {both['wall'] / grading['wall']:.2f}x grading alone; "
            f"{len(our_pages)} pages, scores identical: {complete}",
        ),
    ):
        ratio = f"{before / wall:>6.1f}x" if label == "grading with feedback" else ""
        print(
            f"{size:>5} {label:<28} {wall:>8.1f} {size / wall:>7.2f} {wall / size:>7.3f} {'':>9} {ratio:>7}  {extra}",
            flush=True,
        )
    return {
        "stock_feedback_wall": stock_run["wall"],
        "grading_with_feedback_wall": both["wall"],
        "feedback_speedup": before / both["wall"],
        "stock_page_kib": mean(stock_pages),
        "page_kib": mean(our_pages),
        "feedback_complete": complete,
    }


def sandbox_start_costs(runs: int = 10) -> None:
    """Median seconds from start to result of a one-cell run, per tier, and the ratio to bubblewrap."""
    import statistics

    from autograder.sandbox import supervisor as sandbox

    helpers = str(REPOSITORY.release / ASSIGNMENT)
    costs = {}
    for tier, reason in sandbox.tier_status().items():
        if reason is not None:
            print(f"sandbox start {tier:<11} unavailable: {reason}")
            continue
        times = []
        for _ in range(runs):
            started = time.monotonic()
            result = sandbox.run_submission([(0, "x = 1")], ["x"], helpers, lambda values: {}, sandbox.Limits(), tier)
            times.append(time.monotonic() - started)
            assert result.values.get("x", {}).get("value") == 1.0, (tier, result)
        costs[tier] = statistics.median(times)
    base = costs.get("bubblewrap")
    for tier, cost in costs.items():
        ratio = f"  {cost / base:.2f}x bubblewrap" if base else ""
        print(f"sandbox start {tier:<11} {cost * 1000:7.1f} ms (median of {runs}){ratio}", flush=True)


@contextlib.contextmanager
def _timing(spent: collections.Counter, owner, name: str, step: str):
    """Time every call of `owner.name` into `spent[step]` while the block runs."""
    original = getattr(owner, name)

    def timed(*args, **kwargs):
        begun = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            spent[step] += time.perf_counter() - begun

    setattr(owner, name, timed)
    try:
        yield
    finally:
        setattr(owner, name, original)


SANDBOX_STEPS = ("start", "import", "confine", "cells", "probes", "teardown")


def profile(size: int, label: str = "") -> collections.Counter:
    """Seconds per step of grading `size` notebooks with one worker, then rendering feedback."""
    from autograder.core import engine
    from autograder.nbgrader import batch, settings
    from autograder.nbgrader import feedback as pages
    from autograder.sandbox import supervisor

    root = make_course(f"profile-{size}", size)
    course = Course(root)
    spent: collections.Counter = collections.Counter()
    run_submission = supervisor.run_submission

    def sandboxed(*args, **kwargs):
        result = run_submission(*args, **kwargs)
        for step, seconds in result.timings.items():
            spent[f"sandbox {step}"] += seconds
        return result

    with contextlib.ExitStack() as stack:
        stack.callback(setattr, supervisor, "run_submission", run_submission)
        stack.enter_context(_timing(spent, batch._Pipeline, "prepare", "reading and sanitising"))
        stack.enter_context(_timing(spent, engine, "check", "checking"))
        stack.enter_context(_timing(spent, batch._Pipeline, "record", "recording in the gradebook"))
        stack.enter_context(_timing(spent, batch, "_record_chunk", "writing (with recording)"))
        supervisor.run_submission = sandboxed
        grader = batch.BatchGrader(course, ASSIGNMENT, jobs=1, force=True, quiet=True, feedback=False)
        begun = time.perf_counter()
        with contextlib.redirect_stderr(open(os.devnull, "w")):
            grader.run()
        spent["grading (wall)"] = time.perf_counter() - begun
    spent["writing autograded notebooks"] = spent.pop("writing (with recording)") - spent["recording in the gradebook"]
    config = settings.load(course).config
    begun = time.perf_counter()
    for number in range(size):
        pages.generate(config, root, ASSIGNMENT, f"student{number:04d}", False)
    spent["rendering feedback"] = time.perf_counter() - begun
    sandbox_total = sum(spent[f"sandbox {step}"] for step in SANDBOX_STEPS)
    print(f"profile{label}: {size} notebooks, one worker; seconds in all and ms per notebook", flush=True)
    rows = [*(f"sandbox {step}" for step in SANDBOX_STEPS)]
    rows += ["reading and sanitising", "checking", "writing autograded notebooks", "recording in the gradebook"]
    rows += ["rendering feedback"]
    for step in rows:
        print(f"  {step:<32} {spent[step]:8.2f} s {spent[step] / size * 1000:8.1f} ms", flush=True)
    print(f"  {'sandbox, sum of its steps':<32} {sandbox_total:8.2f} s {sandbox_total / size * 1000:8.1f} ms")
    print(f"  {'grading, wall (one worker)':<32} {spent['grading (wall)']:8.2f} s", flush=True)
    return spent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[50, 100, 200])
    parser.add_argument(
        "--baseline-sizes",
        type=int,
        nargs="*",
        default=None,
        help="sizes at which to run the slow kernel baseline too (default: all)",
    )
    parser.add_argument(
        "--feedback-sizes",
        type=int,
        nargs="*",
        default=None,
        help="sizes at which to measure feedback: grading + nbgrader generate_feedback against grading with feedback (default: all)",
    )
    parser.add_argument(
        "--stock-feedback-sizes",
        type=int,
        nargs="*",
        default=None,
        help="sizes at which to run nbgrader generate_feedback too (default: the feedback sizes; it is slow)",
    )
    parser.add_argument("--profile-size", type=int, default=100, help="notebooks in the profile (0: none)")
    parser.add_argument("--profile-only", action="store_true", help="print the profile and stop")
    args = parser.parse_args()
    if args.profile_size:
        print(f"load average before the profile: {os.getloadavg()[0]:.2f}")
        profile(args.profile_size)
    if args.profile_only:
        return 0
    baseline_sizes = args.sizes if args.baseline_sizes is None else args.baseline_sizes
    feedback_sizes = args.sizes if args.feedback_sizes is None else args.feedback_sizes
    stock_sizes = feedback_sizes if args.stock_feedback_sizes is None else args.stock_feedback_sizes
    print(f"machine: {os.cpu_count()} cores; class: N submissions of {ASSIGNMENT}/{NOTEBOOK}")
    sandbox_start_costs()
    print(f"{'N':>5} {'grader':<28} {'wall s':>8} {'nb/s':>7} {'s/nb':>7} {'peak MiB':>9} {'ratio':>7}")
    rows = []
    for size in args.sizes:
        batch_root = make_course(f"batch-{size}", size)
        batch = measured(
            [
                sys.executable,
                *("-m", "autograder", "grade", "--course", str(batch_root), ASSIGNMENT, "--force", "--no-feedback"),
            ],
            ROOT,
        )
        print(
            f"{size:>5} {'sandboxed batch (grading)':<28} {batch['wall']:>8.1f} {size / batch['wall']:>7.2f} "
            f"{batch['wall'] / size:>7.3f} {batch['peak_child_kib'] / 1024:>9.0f} {'':>7}",
            flush=True,
        )
        row = {"N": size, "batch_wall": batch["wall"], "batch_peak_mib": batch["peak_child_kib"] / 1024}
        if size in feedback_sizes:
            row.update(feedback_rows(size, batch_root, batch, stock=size in stock_sizes))
            if not row["feedback_complete"]:
                print("ERROR: feedback is missing or scores differ", file=sys.stderr)
                return 1
        if size in baseline_sizes:
            kernel_root = make_course(f"kernel-{size}", size)
            kernel = measured(
                [
                    sys.executable,
                    str(pathlib.Path(__file__).with_name("kernel_autograde.py")),
                    ASSIGNMENT,
                    "--force",
                    "--log-level=ERROR",
                ],
                kernel_root,
            )
            identical = scores(batch_root) == scores(kernel_root)
            ratio = kernel["wall"] / batch["wall"]
            print(
                f"{size:>5} {'kernel per notebook (serial)':<28} {kernel['wall']:>8.1f} "
                f"{size / kernel['wall']:>7.2f} {kernel['wall'] / size:>7.3f} "
                f"{kernel['peak_child_kib'] / 1024:>9.0f} {ratio:>6.1f}x  scores identical: {identical}",
                flush=True,
            )
            row.update(kernel_wall=kernel["wall"], ratio=ratio, identical=identical)
            if not identical:
                print("ERROR: the two graders disagree", file=sys.stderr)
                return 1
        rows.append(row)
    (WORK / "results.json").write_text(json.dumps(rows, indent=1))
    print(f"results: {WORK / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
