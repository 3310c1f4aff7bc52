"""Command line: `python -m autograder {grade,feedback,check,work,release,solution,serve,status,grade-held,add,docs} ...` (`autograder` once installed).

The course is `--course ROOT` when given, else the course that holds the notebooks named, else
the one holding the working directory.

Exit status: 0 whenever every notebook got a report, whatever its score (`check` exits 1 when
an autograded part fails, for self-learners' scripts); 2 for misuse; 3 for a fault of the grader
(no sandbox can run here, or one could not start or be confined: those notebooks are not graded,
and the message says why and what to do).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

from autograder.core import processes
from autograder.core.course import Course
from autograder.core.errors import UsageError

EXIT_MISUSE = 2
EXIT_GRADER_FAULT = 3


ISOLATION_CHOICES = ("auto", "bubblewrap", "landlock", "unisolated")


def _add_run_options(parser, instructor=True):
    parser.add_argument("--jobs", type=int, default=None, help="notebooks run at once (default: all cores)")
    parser.add_argument(
        "--isolation",
        choices=ISOLATION_CHOICES,
        default="auto",
        help="sandbox tier (default: the strongest that works here: bubblewrap, then "
        "landlock, then" + (" (only with --allow-unisolated)" if instructor else "") + " a plain unisolated process)",
    )
    if instructor:
        parser.add_argument(
            "--allow-unisolated",
            action="store_true",
            help="accept grading in a plain process, with your rights, when no sandbox can run",
        )
    parser.add_argument("--cell-timeout", type=float, default=None, help="seconds per cell (default 10)")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per notebook (default 90)")


def _limits(args):
    from autograder.sandbox.supervisor import Limits

    changes = {}
    if args.cell_timeout is not None:
        changes["cell_seconds"] = args.cell_timeout
    if args.timeout is not None:
        changes["total_seconds"] = args.timeout
    return Limits(**changes)


def _add_course_option(parser, help_text="the course root (default: found from the notebook or the working directory)"):
    parser.add_argument("--course", metavar="ROOT", help=help_text)


def _course(args, near: str | None = None) -> Course:
    if args.course:
        root = pathlib.Path(args.course)
        if not root.is_dir():
            raise UsageError(f"--course {args.course}: no such directory")
        return Course(root)
    if near is not None:
        try:
            return Course.discover(near)
        except UsageError:
            pass  # a notebook outside any course: try the working directory
    return Course.discover()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m autograder", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    grade = commands.add_parser("grade", help="grade notebooks, or (with --course) a whole nbgrader class")
    grade.add_argument(
        "targets",
        nargs="+",
        metavar="NOTEBOOK|ASSIGNMENT",
        help="notebook files; with --course, the assignment to grade",
    )
    grade.add_argument("--json", action="store_true", help="one JSON report per notebook per line")
    grade.add_argument(
        "--as",
        dest="graded_as",
        metavar="ASSIGNMENT/NOTEBOOK",
        help="grade every notebook as this course notebook (default: recognise it)",
    )
    grade.add_argument(
        "--course",
        metavar="ROOT",
        help="the course root; given with an ASSIGNMENT, grade that course's submitted/ tree into its gradebook",
    )
    grade.add_argument("--force", action="store_true", help="with --course: regrade everything")
    grade.add_argument(
        "--student",
        action="append",
        default=None,
        metavar="ID",
        help="with --course: only these students; with notebooks: grade them as this student's work, "
        "against their variant (default: the student the notebook's set-up cell was drawn for)",
    )
    grade.add_argument(
        "--no-feedback",
        dest="feedback",
        action="store_false",
        help="with --course: grade only (by default each graded student's feedback pages are written to "
        "feedback/, as `nbgrader generate_feedback` writes them, while grading goes on)",
    )
    grade.add_argument("--quiet", action="store_true", help="with --course: no progress bar and no score table")
    _add_run_options(grade)

    add = commands.add_parser(
        "add", help="add this course's assignments to an nbgrader course of your own (e.g. `nbgrader quickstart`'s)"
    )
    add.add_argument("assignments", nargs="*", metavar="ASSIGNMENT", help="default: every assignment")
    add.add_argument("--course", metavar="ROOT", required=True, help="the root of your nbgrader course")
    add.add_argument("--force", action="store_true", help="replace files of yours that differ from this course's")

    docs = commands.add_parser("docs", help="print one of the course's documents (e.g. deployment, marking)")
    docs.add_argument("name", nargs="?", help="default: list them")

    feedback = commands.add_parser(
        "feedback",
        help="write the feedback pages of every graded student of an assignment, in parallel "
        "(what `nbgrader generate_feedback --force` writes; e.g. after manual grading)",
    )
    feedback.add_argument("assignment")
    _add_course_option(feedback, "the course root (default: the one holding the working directory)")
    feedback.add_argument("--student", action="append", default=None, help="only these students")
    feedback.add_argument("--jobs", type=int, default=None, help="pages rendered at once (default: all cores)")

    check = commands.add_parser("check", help="a readable per-part report for a self-learner")
    check.add_argument("notebook")
    check.add_argument("--as", dest="graded_as", metavar="ASSIGNMENT/NOTEBOOK")
    check.add_argument(
        "--student",
        metavar="ID",
        help="check against this student's variant (default: the student the notebook's set-up cell was drawn for)",
    )
    _add_course_option(check)
    _add_run_options(check, instructor=False)

    work = commands.add_parser(
        "work", help="copy the assignments into work/ (kept out of git) for a self-learner to work on"
    )
    work.add_argument("assignments", nargs="*", help="default: every assignment")
    _add_course_option(work, "the course root (default: the one holding the working directory)")

    release = commands.add_parser("release", help="regenerate release/ and solutions/ from source/")
    release.add_argument("assignments", nargs="*", help="default: every assignment")
    _add_course_option(release, "the course root (default: the one holding the working directory)")

    solution = commands.add_parser("solution", help="write one student's reference solutions, drawn for their variant")
    solution.add_argument("assignment")
    solution.add_argument("--student", required=True, metavar="ID", help="the student's nbgrader id")
    solution.add_argument("--output", metavar="DIR", help="default: ./solutions-ID/ASSIGNMENT")
    _add_course_option(solution, "the course root (default: the one holding the working directory)")

    serve = commands.add_parser(
        "serve",
        help="grade submissions as they arrive in the exchange and release their feedback (python -m autograder docs service)",
    )
    _add_course_option(serve, "the course root (default: the one holding the working directory)")
    serve.add_argument("--until-idle", action="store_true", help="stop once nothing is left to grade")
    serve.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    _add_run_options(serve)

    status = commands.add_parser("status", help="the grading service's queue, throughput and failures")
    _add_course_option(status, "the course root (default: the one holding the working directory)")
    status.add_argument("--json", action="store_true", help="print the status as one JSON object")

    held = commands.add_parser(
        "grade-held", help="queue for grading the submissions the service holds (after the due date)"
    )
    held.add_argument("assignment", nargs="?", help="default: every assignment")
    held.add_argument("--student", action="append", default=None, help="only these students' held submissions")
    _add_course_option(held, "the course root (default: the one holding the working directory)")
    return parser


def main(argv=None) -> int:
    from autograder.sandbox.supervisor import SandboxUnavailable

    processes.prepare_process()  # before anything imports nbgrader (and with it jsonschema)
    args = build_parser().parse_args(argv)
    try:
        if args.command == "grade" and args.course and not _all_notebooks(args.targets):
            return _grade_class(args)
        if args.command == "grade":
            return _grade_files(args)
        if args.command == "add":
            from autograder.nbgrader import add

            root = pathlib.Path(args.course)
            print(add.report(add.add_course(root, args.assignments, args.force), root))
            return 0
        if args.command == "docs":
            return _docs(args.name)
        if args.command == "feedback":
            from autograder.nbgrader import feedback

            return feedback.main(_course(args), args.assignment, args.student, args.jobs)
        if args.command == "check":
            from autograder.cli import selfcheck

            course = selfcheck.find_course(args.notebook, args.course)
            return selfcheck.main(
                course,
                args.notebook,
                _graded_as(course, args),
                args.jobs,
                _limits(args),
                args.isolation,
                student_id=args.student,
            )
        if args.command == "work":
            from autograder.cli import work

            return work.main(_course(args), args.assignments or None)
        if args.command == "release":
            from autograder.nbgrader import release

            release.build(_course(args), args.assignments or None)
            return 0
        if args.command == "solution":
            return _solution(args)
        if args.command == "serve":
            return _serve(args)
        if args.command == "status":
            from autograder.service import status

            return status.main(_course(args), args.json)
        if args.command == "grade-held":
            from autograder.service import status

            return status.grade_held(_course(args), args.assignment, args.student)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_MISUSE
    except SandboxUnavailable as error:
        print(f"grader error: {error}", file=sys.stderr)
        return EXIT_GRADER_FAULT
    return EXIT_MISUSE


def _all_notebooks(targets) -> bool:
    return all(target.endswith(".ipynb") for target in targets)


def _graded_as(course: Course, args):
    from autograder.core.engine import NotebookKey

    if not args.graded_as:
        return None
    try:
        key = NotebookKey.parse(args.graded_as)
    except ValueError:
        raise UsageError("--as takes ASSIGNMENT/NOTEBOOK, e.g. attention_heads/virtual_head") from None
    if course.find_spec(key.assignment, key.notebook) is None:
        known = ", ".join(spec.key for spec in course.specs)
        raise UsageError(f"--as {args.graded_as}: no such course notebook (known: {known})")
    return key


def _docs(name: str | None) -> int:
    from autograder.nbgrader.add import bundled_docs

    found = bundled_docs()
    if name is None or name.lower().removesuffix(".md") not in found:
        if name is not None:
            print(f"error: no document {name!r}", file=sys.stderr)
        print("documents: " + ", ".join(found) + "  (python -m autograder docs NAME)")
        return 0 if name is None else EXIT_MISUSE
    print(found[name.lower().removesuffix(".md")].read_text(encoding="utf-8"), end="")
    return 0


def _grade_class(args) -> int:
    if len(args.targets) != 1:
        raise UsageError("with --course, give exactly one assignment name")
    course = _course(args)
    if not course.grades(args.targets[0]):
        from autograder.nbgrader.batch import grade_with_nbgrader

        # Not one of this course's assignments: nbgrader grades it, exactly as `nbgrader autograde` does.
        return grade_with_nbgrader(course, args.targets[0], args.force, args.student, args.feedback, args.quiet)
    _warm_up(course, args)
    from autograder.nbgrader.batch import BatchGrader, score_table

    grader = BatchGrader(
        course,
        args.targets[0],
        quiet=args.quiet,
        jobs=args.jobs,
        limits=_limits(args),
        isolation=args.isolation,
        force=args.force,
        students=args.student,
        allow_unisolated=args.allow_unisolated,
        feedback=args.feedback,
    )
    grader.run()
    if not args.quiet:
        print(score_table(course, args.targets[0], args.student))
    return EXIT_GRADER_FAULT if grader.flagged or grader.feedback_errors else 0


def _warm_up(course: Course, args) -> None:
    """The sandboxes' warm interpreters start while this process imports nbgrader and reads the
    gradebook (a second on one core): the first submissions then run at once. Nothing is
    decided here: the batch grader chooses the tier again and reports why it cannot run."""
    import os

    from autograder.sandbox import supervisor

    try:
        isolation = supervisor.choose_isolation(args.isolation, args.allow_unisolated)
    except supervisor.SandboxUnavailable:
        return
    helpers = str(course.release / args.targets[0])
    supervisor.warm_up(helpers, _limits(args), isolation, args.jobs or os.cpu_count() or 1)


def _solution(args) -> int:
    import pathlib

    from autograder.nbgrader import release

    course = _course(args)
    if args.assignment not in course.assignments():
        raise UsageError(
            f"no assignment {args.assignment!r} in {course.root} (known: {', '.join(course.assignments())})"
        )
    destination = pathlib.Path(args.output or f"solutions-{args.student}/{args.assignment}")
    for path in release.student_solutions(course, args.assignment, args.student, destination):
        print(path)
    return 0


def _serve(args) -> int:
    import logging

    from autograder.service.service import Service

    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(message)s")
    Service(_course(args), limits=_limits(args), isolation=args.isolation, jobs=args.jobs).run(args.until_idle)
    return 0


def _grade_files(args) -> int:
    from autograder.core import engine

    course = _course(args, near=args.targets[0])
    graded_as = _graded_as(course, args)
    if args.student and len(args.student) > 1:
        raise UsageError("with notebooks, give one --student: the student whose work they are")
    student_id = args.student[0] if args.student else None
    requests = [
        engine.GradeRequest(path, submission_id=f"notebook{number}", expected=graded_as, student_id=student_id)
        for number, path in enumerate(args.targets)
    ]
    reports = engine.grade(
        course,
        requests,
        jobs=args.jobs,
        limits=_limits(args),
        isolation=args.isolation,
        allow_unisolated=args.allow_unisolated,
    )
    for report in reports:
        if args.json:
            print(json.dumps(report.to_json()), flush=True)
        else:
            print(report.as_text(), flush=True)
    faults = [report for report in reports if report.grader_error]
    for report in faults:
        print(f"grader error: {report.notebook} was not graded: {report.grader_error}", file=sys.stderr)
    return EXIT_GRADER_FAULT if faults else 0


def run() -> None:
    """The `autograder` console script and `python -m autograder`: exit with `main`'s status."""
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception:  # noqa: BLE001 - a fault of the grader itself, not of any notebook
        import traceback

        traceback.print_exc()
        sys.exit(EXIT_GRADER_FAULT)
