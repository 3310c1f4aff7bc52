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
page: once as a run renders them (a picture drawn for an earlier student is not cleaned again),
and once with nothing remembered (as if no two students' pictures were alike). One worker, so each step's seconds are its core-seconds (the sandbox's on the other core).

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


FRESH = {"AUTOGRADER_WARM": "0"}  # every submission in a fresh sandbox, as before warm interpreters


def measured(command: list[str], cwd: pathlib.Path, env: dict | None = None) -> dict:
    """Run a command in a child that reports its own and its children's peak memory."""
    probe = (
        "import json, resource, subprocess, sys, time\n"
        "start = time.monotonic()\n"
        f"done = subprocess.run({command!r}, cwd={str(cwd)!r}, capture_output=True, text=True)\n"
        "wall = time.monotonic() - start\n"
        "if done.returncode: sys.stderr.write(done.stdout + done.stderr); sys.exit(done.returncode)\n"
        "print(json.dumps({'wall': wall, 'peak_child_kib': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, env={**os.environ, **(env or {})}
    )
    return json.loads(completed.stdout.strip().splitlines()[-1])


GRADE = [sys.executable, "-m", "autograder", "grade", "--course"]


def same_files(one: pathlib.Path, other: pathlib.Path, folder: str) -> bool:
    """Whether `folder` holds the same files, byte for byte, in both courses."""
    files = {path.relative_to(one / folder) for path in (one / folder).rglob("*") if path.is_file()}
    others = {path.relative_to(other / folder) for path in (other / folder).rglob("*") if path.is_file()}
    return (
        bool(files)
        and files == others
        and all((one / folder / name).read_bytes() == (other / folder / name).read_bytes() for name in files)
    )


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
    fresh_root = make_course(f"feedback-fresh-{size}", size)
    fresh = measured([*GRADE, str(fresh_root), ASSIGNMENT, "--force"], ROOT, FRESH)
    same_pages = same_files(both_root, fresh_root, "feedback")
    stock_pages, our_pages = page_sizes(graded_root), page_sizes(both_root)
    complete = len(stock_pages) == len(our_pages) == size and scores(graded_root) == scores(both_root)
    complete = complete and same_pages
    before = grading["wall"] + stock_run["wall"]
    mean = lambda sizes: sum(sizes) / max(1, len(sizes)) / 1024  # noqa: E731
    for label, wall, extra in (
        ("nbgrader generate_feedback", stock_run["wall"], f"pages {mean(stock_pages):.0f} KiB"),
        ("grading, then that", before, ""),
        (
            "grading with feedback, fresh",
            fresh["wall"],
            f"{before / fresh['wall']:.1f}x stock; feedback pages identical to warm: {same_pages}",
        ),
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
        "fresh_grading_with_feedback_wall": fresh["wall"],
        "feedback_speedup": before / both["wall"],
        "stock_page_kib": mean(stock_pages),
        "page_kib": mean(our_pages),
        "feedback_complete": complete,
    }


def sandbox_start_costs(runs: int = 10) -> None:
    """Median seconds from start to result of a one-cell run, per tier, fresh and warm (a
    zygote's child; the zygote's own start left out), and the ratio to fresh bubblewrap."""
    import statistics

    from autograder.sandbox import supervisor as sandbox
    from autograder.sandbox import warm

    helpers = str(REPOSITORY.release / ASSIGNMENT)
    costs = {}
    previous = os.environ.get(sandbox.WARM_SETTING)
    for tier, reason in sandbox.tier_status().items():
        if reason is not None:
            print(f"sandbox start {tier:<11} unavailable: {reason}")
            continue
        for start in ("fresh", "warm"):
            os.environ[sandbox.WARM_SETTING] = "1" if start == "warm" else "0"
            if start == "warm" and sandbox.warm_unavailable(tier) is not None:
                continue
            sandbox.run_submission([(0, "x = 1")], ["x"], helpers, lambda values: {}, sandbox.Limits(), tier)
            times = []
            for _ in range(runs):
                started = time.monotonic()
                result = sandbox.run_submission(
                    [(0, "x = 1")], ["x"], helpers, lambda values: {}, sandbox.Limits(), tier
                )
                times.append(time.monotonic() - started)
                assert result.values.get("x", {}).get("value") == 1.0, (tier, result)
                assert result.details["interpreter"].startswith(start), result.details
            costs[f"{tier} {start}"] = statistics.median(times)
    warm.POOL.close()
    if previous is None:
        os.environ.pop(sandbox.WARM_SETTING, None)
    else:
        os.environ[sandbox.WARM_SETTING] = previous
    base = costs.get("bubblewrap fresh")
    for name, cost in costs.items():
        ratio = f"  {base / cost:.1f}x faster than fresh bubblewrap" if base and name != "bubblewrap fresh" else ""
        print(f"sandbox start {name:<18} {cost * 1000:7.1f} ms (median of {runs}){ratio}", flush=True)


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


def profile(size: int, warm: bool) -> collections.Counter:
    """Seconds per step of grading `size` notebooks with one worker, then rendering feedback."""
    from autograder.core import engine
    from autograder.nbgrader import batch, inert, settings
    from autograder.nbgrader import feedback as pages
    from autograder.sandbox import supervisor

    root = make_course(f"profile-{'warm' if warm else 'fresh'}-{size}", size)
    course = Course(root)
    spent: collections.Counter = collections.Counter()
    previous = os.environ.get(supervisor.WARM_SETTING)
    os.environ[supervisor.WARM_SETTING] = "1" if warm else "0"
    run_submission = supervisor.run_submission

    def sandboxed(*args, **kwargs):
        result = run_submission(*args, **kwargs)
        for step, seconds in result.timings.items():
            spent[f"sandbox {step}"] += seconds
        return result

    with contextlib.ExitStack() as stack:
        stack.callback(setattr, supervisor, "run_submission", run_submission)
        stack.enter_context(_timing(spent, batch.Pipeline, "prepare", "reading and sanitising"))
        stack.enter_context(_timing(spent, engine, "check", "checking"))
        stack.enter_context(_timing(spent, batch.Pipeline, "submitted_notebooks", "recording in the gradebook"))
        stack.enter_context(_timing(spent, batch.Pipeline, "record", "recording in the gradebook"))
        stack.enter_context(_timing(spent, batch, "_record_chunk", "writing (with recording)"))
        supervisor.run_submission = sandboxed
        grader = batch.BatchGrader(course, ASSIGNMENT, jobs=1, force=True, quiet=True, feedback=False)
        begun = time.perf_counter()
        with contextlib.redirect_stderr(open(os.devnull, "w")):
            grader.run()
        spent["grading (wall)"] = time.perf_counter() - begun
    spent["writing autograded notebooks, commit"] = (
        spent.pop("writing (with recording)") - spent["recording in the gradebook"]
    )
    config = settings.load(course).config
    begun = time.perf_counter()
    for number in range(size):
        pages.generate(config, root, ASSIGNMENT, f"student{number:04d}", False)
    spent["rendering feedback"] = time.perf_counter() - begun
    # the same pages again, as if no two students' outputs (the checks' pictures) were alike
    for number in range(size):
        inert.forget_cleaned()
        begun = time.perf_counter()
        pages.generate(config, root, ASSIGNMENT, f"student{number:04d}", False)
        spent["rendering feedback, outputs all new"] += time.perf_counter() - begun
    if previous is None:
        del os.environ[supervisor.WARM_SETTING]
    else:
        os.environ[supervisor.WARM_SETTING] = previous
    spent["sandbox, all steps"] = sum(spent[f"sandbox {step}"] for step in SANDBOX_STEPS)
    return spent


PROFILE_ROWS = [
    *(f"sandbox {step}" for step in SANDBOX_STEPS),
    "sandbox, all steps",
    "reading and sanitising",
    "checking",
    "writing autograded notebooks, commit",
    "recording in the gradebook",
    "rendering feedback",
    "rendering feedback, outputs all new",
    "grading (wall)",
]


def print_profiles(size: int, profiles: dict[str, collections.Counter]) -> None:
    print(f"profile: {size} notebooks graded with one worker (--jobs 1), then their feedback rendered; ms per notebook")
    print(f"  {'step':<30}" + "".join(f"{label:>14}" for label in profiles))
    for step in PROFILE_ROWS:
        print(f"  {step:<30}" + "".join(f"{spent[step] / size * 1000:>14.1f}" for spent in profiles.values()))


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
        print(f"load average before the profile: {os.getloadavg()[0]:.2f}", flush=True)
        print_profiles(
            args.profile_size,
            {"fresh": profile(args.profile_size, warm=False), "warm": profile(args.profile_size, warm=True)},
        )
        print(f"load average after the profile: {os.getloadavg()[0]:.2f}", flush=True)
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
        runs = {}
        for start, env in (("fresh", FRESH), ("warm", None)):
            root = make_course(f"batch-{start}-{size}", size)
            runs[start] = (root, measured([*GRADE, str(root), ASSIGNMENT, "--force", "--no-feedback"], ROOT, env))
            wall, peak = runs[start][1]["wall"], runs[start][1]["peak_child_kib"] / 1024
            print(
                f"{size:>5} {f'sandboxed batch, {start}':<28} {wall:>8.1f} {size / wall:>7.2f} "
                f"{wall / size:>7.3f} {peak:>9.0f} {'':>7}",
                flush=True,
            )
        (batch_root, batch), (fresh_root, fresh) = runs["warm"], runs["fresh"]
        same = scores(batch_root) == scores(fresh_root) and same_files(batch_root, fresh_root, "autograded")
        print(f"{size:>5} warm against fresh: {fresh['wall'] / batch['wall']:.2f}x; identical autograded/: {same}")
        if not same:
            print("ERROR: warm and fresh grading differ", file=sys.stderr)
            return 1
        row = {
            "N": size,
            "batch_wall": batch["wall"],
            "batch_peak_mib": batch["peak_child_kib"] / 1024,
            "fresh_batch_wall": fresh["wall"],
            "fresh_batch_peak_mib": fresh["peak_child_kib"] / 1024,
        }
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
            print(f"{size:>5} kernel against fresh sandboxes: {kernel['wall'] / fresh['wall']:.1f}x", flush=True)
            print(
                f"{size:>5} {'kernel per notebook (serial)':<28} {kernel['wall']:>8.1f} "
                f"{size / kernel['wall']:>7.2f} {kernel['wall'] / size:>7.3f} "
                f"{kernel['peak_child_kib'] / 1024:>9.0f} {ratio:>6.1f}x  scores identical: {identical}",
                flush=True,
            )
            row.update(kernel_wall=kernel["wall"], ratio=ratio, identical=identical)
            if "stock_feedback_wall" in row:
                stock = kernel["wall"] + row["stock_feedback_wall"]
                row["stock_speedup"] = stock / row["grading_with_feedback_wall"]
                print(
                    f"{size:>5} stock nbgrader autograde (kernel) + generate_feedback {stock:.1f} s: grading with "
                    f"feedback {row['stock_speedup']:.1f}x faster (fresh sandboxes: "
                    f"{stock / row['fresh_grading_with_feedback_wall']:.1f}x)",
                    flush=True,
                )
            if not identical:
                print("ERROR: the two graders disagree", file=sys.stderr)
                return 1
        rows.append(row)
    (WORK / "results.json").write_text(json.dumps(rows, indent=1))
    print(f"results: {WORK / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
