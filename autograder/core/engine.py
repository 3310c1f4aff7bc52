"""Grade notebooks: recognise them, run them sandboxed, check what they defined, report.

This is the one grading path. The CLI, the batch grader and nbgrader's autograde preprocessor
all call `grade`, so they reach the same verdicts from the same checks.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import pathlib
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from autograder.core import notebook as nbio
from autograder.core import specs, variants
from autograder.core.course import Course
from autograder.core.report import Report
from autograder.core.runner import CheckSession, run_checks
from autograder.core.submission import CellReport, Submission
from autograder.sandbox import supervisor as sandbox
from autograder.sandbox.driver import wire


@dataclasses.dataclass(frozen=True)
class NotebookKey:
    """A course notebook: (assignment, notebook id)."""

    assignment: str
    notebook: str

    @classmethod
    def parse(cls, text: str) -> NotebookKey:
        """From "assignment/notebook", as the command line takes it."""
        assignment, _, notebook = text.partition("/")
        if not assignment or not notebook:
            raise ValueError(f"{text!r} is not ASSIGNMENT/NOTEBOOK")
        return cls(assignment, notebook)

    def __str__(self) -> str:
        return f"{self.assignment}/{self.notebook}"


@dataclasses.dataclass
class GradeRequest:
    """One notebook to grade. `expected` (the course notebook it must be) is known in a batch."""

    path: str
    submission_id: str
    expected: NotebookKey | None = None
    notebook: dict | None = None  # already read (and sanitised by nbgrader); else read from path
    student_id: str | None = None  # who handed it in (nbgrader's student id): whose variant grades it


def identify(course: Course, notebook, path: str, expected: NotebookKey | None) -> specs.NotebookSpec | None:
    """Which course notebook this is: as the batch expects; else by its structure (the nbgrader
    cell ids it carries and the locked cells of a release it contains), so that a renamed copy
    is known for what it is; else by file name; else by the names its own code defines, never
    counting names that locked cells given by a release assign (Q6 gives W_V1 ... W_O2, which
    virtual_head asks the student for). Untrusted metadata only chooses which checks run, never
    a score."""
    if expected:
        return course.find_spec(expected.assignment, expected.notebook)
    cells = notebook["cells"]
    claimed = {nbio.grade_id(cell) for cell in cells} - {None}
    sources = {nbio.source_text(cell.get("source", "")).strip() for cell in cells if cell.get("cell_type") == "code"}
    given = {spec.key: _locked_sources(course, spec) for spec in course.specs}
    structure = [
        (len(claimed & {part.grade_id for part in spec.parts}) + len(given[spec.key] & sources), spec)
        for spec in course.specs
    ]
    best = max((score for score, _ in structure), default=0)
    leaders = [spec for score, spec in structure if score == best]
    if best > 0 and len(leaders) == 1:
        return leaders[0]
    stem = os.path.splitext(os.path.basename(path))[0]
    by_name = course.find_spec(None, stem)
    if by_name is not None:
        return by_name
    every_given = set().union(*given.values()) if given else set()
    own = {
        "cells": [
            cell
            for cell in cells
            if not (cell.get("cell_type") == "code" and nbio.source_text(cell.get("source", "")).strip() in every_given)
        ]
    }
    defined = nbio.defined_names(own)  # one pass over the cells, whatever the number of names
    scored = [(nbio.count_defined(own, spec.extract, defined), spec) for spec in course.specs]
    count, spec = max(scored, key=lambda entry: entry[0], default=(0, None))
    return spec if count else None


def _locked_sources(course: Course, spec: specs.NotebookSpec) -> set[str]:
    """The code of the release's locked code cells (given set-up and public-check cells)."""
    try:
        release = course.release_notebook(spec.assignment, spec.notebook)
    except (OSError, nbio.UnreadableNotebook):
        return set()
    return {
        nbio.source_text(cell["source"]).strip()
        for cell in release["cells"]
        if cell.get("cell_type") == "code"
        and cell.get("metadata", {}).get("nbgrader", {}).get("locked")
        and nbio.source_text(cell["source"]).strip()
    }


def _missing_hints(notebook, names, cells: list[CellReport], answer_of: dict[str, str] | None = None) -> dict[str, str]:
    """Why a name the checks need may be undefined, read from the notebook text and cell results.

    A name no cell assigns is explained by the answer cell meant to define it (`answer_of`:
    name -> its grade_id) when that cell stopped early; otherwise the generic message applies.
    Each hint names one cell: never a list of every cell that failed, under every name."""
    cells = [cell for cell in cells if 0 <= cell.index < len(notebook["cells"])]  # indexes come from the sandbox
    status = {cell.index: cell for cell in cells}
    hints = {}
    answer_positions = nbio.grade_id_positions(notebook)
    wanted = set(names)
    sites: dict[str, list[tuple[int, str]]] = {}  # each cell scanned once, not once per name
    if wanted:
        for position, cell in enumerate(notebook["cells"]):
            for name in nbio.assigned_names(cell["source"]) & wanted:
                sites.setdefault(name, []).append((position, cell["cell_type"]))
    for name in names:
        for index, cell_type in sites.get(name, []):
            label = nbio.cell_label(index, notebook["cells"][index]["source"])
            report = status.get(index)
            if cell_type == "code" and report is not None and report.status != "ok":
                hints[name] = (
                    f"The cell that assigns it, {label}, stopped with {nbio.quote(report.error)}, so the assignment never ran."
                )
                break
            if cell_type == "raw":
                hints[name] = f"It is assigned in {label}, a Raw cell, which never runs: change the cell type to Code."
                break
            if cell_type == "markdown":
                hints[name] = f"It appears in {label}, a Markdown cell, which never runs: put the code in a Code cell."
                break
            if cell_type == "code" and report is None:
                hints[name] = f"{label} assigns it, but grading stopped before that cell ran."
                break
        else:
            answer_id = (answer_of or {}).get(name)
            answer = answer_positions.get(answer_id) if answer_id is not None else None
            report = status.get(answer) if answer is not None else None
            if answer is not None and report is not None and report.status != "ok":
                label = nbio.cell_label(answer, notebook["cells"][answer]["source"])
                hints[name] = (
                    f"Its answer cell, {label}, stopped with {nbio.quote(report.error)}: replace that "
                    f"with your code, which assigns `{name} = ...`, and run it."
                )
    return hints


def _probe_maker(spec: specs.NotebookSpec, rng: np.random.Generator, drawn: dict):
    """Draw inputs for the submitted functions only after the student's cells have run."""

    def make(values: dict) -> dict:
        request = {}
        for name, draw in spec.probes.items():
            value = values.get(name) if isinstance(values, dict) else None
            if isinstance(value, dict) and value.get("kind") == "callable":
                arg_lists = [tuple(args) for args in draw(rng)]
                drawn[name] = arg_lists
                request[name] = [[wire.encode_value(arg) for arg in args] for args in arg_lists]
        return request

    return make


def _as_submission(
    request: GradeRequest, notebook, result: sandbox.RunResult, drawn: dict, spec: specs.NotebookSpec
) -> Submission:
    names, answer_of = spec.extract, spec.answer_of
    values = result.values if isinstance(result.values, dict) else {}
    values = {name: value for name, value in values.items() if isinstance(value, dict)}
    calls = {}
    for name, records in (result.calls or {}).items():
        if name in drawn and isinstance(records, list):
            calls[name] = [
                {**record, "args": args} for args, record in zip(drawn[name], records) if isinstance(record, dict)
            ]
    cells = [
        CellReport(
            int(cell["index"]),
            nbio.quote(cell["status"], 20),
            nbio.quote(cell["error"]) if cell.get("error") is not None else None,
        )
        for cell in result.cells
        if isinstance(cell, dict) and isinstance(cell.get("index"), int)
    ]
    return Submission(
        request.submission_id,
        values,
        calls,
        cells,
        static_hints=_missing_hints(
            notebook, [n for n in names if values.get(n, {}).get("kind", "missing") == "missing"], cells, answer_of
        ),
        fatal=nbio.quote(result.fatal, 1000) if result.fatal else result.fatal,
    )


PROBE_SEED_VERSION = 1  # bump to redraw every probe input


def probe_seed(spec: specs.NotebookSpec, cells: list[tuple[int, str]]) -> int:
    """The seed of the inputs drawn for the submitted functions: fixed by the code that runs and
    by the grader that judges it (package and check module), so regrading the same notebook
    gives the same messages. A submission cannot steer it: changing its code changes the seed."""
    digest = _grader_digest(spec)
    digest.update(json.dumps(cells).encode())
    return int.from_bytes(digest.digest()[:16], "big")


def _grader_digest(spec: specs.NotebookSpec):
    """A hash of the grader's part of the probe seed (package version, notebook, check module),
    to be continued with the cells. Worked out once per check file while it is unchanged:
    reading the package's metadata costs milliseconds, which every notebook paid before."""
    try:
        stat = spec.checks_path.stat()
        state: tuple = (stat.st_mtime_ns, stat.st_size)
    except OSError:
        state = ()
    return _grader_digest_of(str(spec.key), str(spec.checks_path), state).copy()


@functools.lru_cache(maxsize=64)
def _grader_digest_of(key: str, checks_path: str, state: tuple):
    from importlib import metadata

    try:
        package = metadata.version("transformer-circuits-course")
    except metadata.PackageNotFoundError:
        package = "unknown"
    digest = hashlib.sha256(f"probes {PROBE_SEED_VERSION} {package} {key}\n".encode())
    try:
        digest.update(pathlib.Path(checks_path).read_bytes())
    except OSError:
        digest.update(checks_path.encode())
    return digest


def extract(course: Course, request: GradeRequest, limits: sandbox.Limits, isolation: str, runner=None):
    """Read, recognise and run one notebook; returns (report, submission or None).

    `runner` runs the cells (default: the sandbox); the benchmark passes the kernel baseline.
    """
    report = Report(notebook=request.path, submission_id=request.submission_id)
    try:
        notebook = request.notebook if request.notebook is not None else nbio.read_notebook(request.path)
    except nbio.UnreadableNotebook as error:
        report.error = f"unreadable notebook: {error}"
        return report, None
    spec = identify(course, notebook, request.path, request.expected)
    if spec is None:
        report.error = "could not tell which course notebook this is (it defines none of the names any part asks for)"
        return report, None
    report.spec, report.graded_as = spec, spec.key
    report.manual_parts = [part for part in spec.parts if part.manual]
    release = course.release_notebook(spec.assignment, spec.notebook)
    report.attempted = specs.attempted_parts(spec, notebook, release)
    report.answer_cells = specs.answer_cell_positions(spec, notebook, release)
    if not spec.helpers_dir.is_dir():
        raise RuntimeError(f"{spec.helpers_dir} is missing: run `python -m autograder release` first")
    settings = course.variant_settings(spec.assignment, spec.notebook)
    choice = variants.choose(settings, request.student_id, notebook)
    environment = {"AUTOGRADER_STUDENT_ID": choice.student_id} if choice.student_id is not None else {}
    variant = spec.variant(choice.student_id, settings.salt) if spec.variant is not None and settings else None
    if choice.student_id is not None and hasattr(variant, "_repr_mimebundle_"):
        choice = dataclasses.replace(
            choice, table=dict(variant._repr_mimebundle_()[0])
        )  # the course's module, in the grader
    report.variant = choice
    drawn: dict = {}
    cells = nbio.code_cells(notebook)
    rng = np.random.default_rng(probe_seed(spec, cells))
    result = (runner or sandbox.run_submission)(
        cells,
        list(spec.extract),
        str(spec.helpers_dir),
        _probe_maker(spec, rng, drawn),
        limits,
        isolation,
        environment,
    )
    report.isolation, report.seconds = result.isolation, result.seconds
    report.isolation_details = dict(result.details)
    if result.grader_error:
        report.grader_error = result.grader_error
        report.error = f"grader error, not graded: {result.grader_error}"
        return report, None
    submission = _as_submission(request, notebook, result, drawn, spec)
    submission.variant = variant
    report.cells = submission.cells
    return report, submission


def grade(
    course: Course,
    requests: Iterable[GradeRequest],
    jobs: int | None = None,
    limits: sandbox.Limits = sandbox.Limits(),
    isolation: str = "auto",
    on_extracted: Callable[[Report], None] | None = None,
    with_figures: bool = False,
    runner=None,
    allow_unisolated: bool = False,
) -> list[Report]:
    """Grade notebooks: sandboxed runs in parallel (`jobs` at once), then one pytest session.

    Raises sandbox.SandboxUnavailable when no acceptable isolation tier runs here."""
    isolation = sandbox.choose_isolation(isolation, allow_unisolated) if runner is None else isolation
    with ThreadPoolExecutor(max_workers=jobs or os.cpu_count() or 1) as pool:
        futures = submit_extractions(course, pool, requests, limits, isolation, on_extracted, runner)
        outcomes = [future.result() for future in futures]
    return check(outcomes, with_figures)


def submit_extractions(course: Course, pool, requests, limits, isolation, on_extracted=None, runner=None):
    """Start sandboxed runs on `pool`; each future gives (report, submission or None)."""

    def run_one(request):
        outcome = extract(course, request, limits, isolation, runner)
        if on_extracted:
            on_extracted(outcome[0])
        return outcome

    return [pool.submit(run_one, request) for request in requests]


def check(outcomes, with_figures: bool = False, checks: CheckSession | None = None) -> list[Report]:
    """Run the hidden checks on extracted submissions (in `checks`, a session that serves a whole
    batch run, else a pytest session of their own); complete the reports."""
    by_spec: dict[pathlib.Path, tuple[specs.NotebookSpec, list[Submission]]] = {}
    for report, submission in outcomes:
        if submission is not None:
            by_spec.setdefault(report.spec.checks_path, (report.spec, []))[1].append(submission)
    verdicts = (checks.check if checks is not None else run_checks)(list(by_spec.values()))
    reports = []
    for report, submission in outcomes:
        if submission is not None:
            order = {part.grade_id: i for i, part in enumerate(report.spec.parts)}
            report.checks = sorted(verdicts.get(submission.id, []), key=lambda c: order.get(c.part, len(order)))
            if with_figures and report.spec.figures is not None:
                report.figures = _figures(report.spec, submission)
        reports.append(report)
    return reports


def _figures(spec: specs.NotebookSpec, submission: Submission) -> dict[str, list[str]]:
    figures: dict[str, list[str]] = {}
    draw = spec.figures
    if draw is None:
        return figures
    for part in spec.auto_parts:
        try:
            drawn = draw(submission, part.grade_id) or []
        except Exception:  # noqa: BLE001 - a picture that cannot be drawn is simply left out
            drawn = []
        if drawn:
            figures[part.grade_id] = list(drawn)
    return figures
