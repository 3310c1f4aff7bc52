"""The shipped notebooks run top to bottom on a fresh kernel (nbclient and a real ipykernel).

* The reference solution (solutions/<assignment>/<notebook>.ipynb) runs with no error and no
  stderr output, and every public-check test cell prints that its public checks passed.
* The untouched release (release/<assignment>/<notebook>.ipynb) runs to the end: its answer
  cells raise NotImplementedError and nothing else; any other cell may fail only with a
  NameError for a name that an answer cell would define; no public check passes.

Each notebook runs in a temporary copy of its folder (helper modules included), so kernels
write nothing into the repository. How long each run took is printed (run with -s): the
target is a few seconds per notebook, but speed targets belong to benchmarks, so no test fails
on time.
"""

from __future__ import annotations

import ast
import json
import pathlib
import re
import shutil
import time

import nbformat
import pytest
from nbclient import NotebookClient

from autograder.dev import classroom
from tests.builders import REPOSITORY

pytestmark = pytest.mark.slow

PASSED = "public checks passed"
NOTEBOOKS = sorted(
    (path.parent.name, path.stem)
    for path in REPOSITORY.source.glob("*/*.ipynb")
    if ".ipynb_checkpoints" not in path.parts
)
IDS = [f"{assignment}/{notebook}" for assignment, notebook in NOTEBOOKS]


@pytest.fixture(autouse=True)
def quiet_kernels(tmp_path, monkeypatch):
    """Kernels with a private IPython profile and runtime folder, writing no bytecode."""
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")


def _source_cells(assignment: str, notebook: str) -> list[dict]:
    path = REPOSITORY.source / assignment / f"{notebook}.ipynb"
    return json.loads(path.read_text(encoding="utf-8"))["cells"]


def _nbgrader(cell: dict) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {})


def _is_test_cell(cell: dict) -> bool:
    meta = _nbgrader(cell)
    return cell["cell_type"] == "code" and bool(meta.get("grade")) and not meta.get("solution")


def _is_answer_cell(cell: dict) -> bool:
    return cell["cell_type"] == "code" and bool(_nbgrader(cell).get("solution"))


def _run(folder: pathlib.Path, notebook_file: str, label: str) -> nbformat.NotebookNode:
    """Execute a notebook in `folder` on a fresh python3 kernel; print how long it took."""
    notebook = nbformat.read(folder / notebook_file, as_version=4)
    client = NotebookClient(
        notebook, timeout=120, kernel_name="python3", allow_errors=True, resources={"metadata": {"path": str(folder)}}
    )
    start = time.monotonic()
    client.execute()
    elapsed = time.monotonic() - start
    code_cells = sum(cell.cell_type == "code" for cell in notebook.cells)
    print(f"\n{label}: {code_cells} code cells ran in {elapsed:.2f} s on a fresh kernel (target: a few seconds)")
    return notebook


def _errors(cell) -> list[dict]:
    return [output for output in cell.get("outputs", []) if output.output_type == "error"]


def _stdout(cell) -> str:
    return "".join(
        output.get("text", "")
        for output in cell.get("outputs", [])
        if output.output_type == "stream" and output.name == "stdout"
    )


def _stderr(cell) -> str:
    return "".join(
        output.get("text", "")
        for output in cell.get("outputs", [])
        if output.output_type == "stream" and output.name == "stderr"
    )


def _describe(index: int, cell) -> str:
    shown = []
    for output in cell.get("outputs", []):
        if output.output_type == "error":
            shown.append(f"{output.ename}: {output.evalue}")
        elif output.output_type == "stream":
            shown.append(f"[{output.name}] {output.text.strip()[:800]}")
    return f"cell {index}:\n  " + "\n  ".join(shown or ["(no output)"]) + "\n  source: " + cell.source[:200]


def defined_names(code: str) -> set[str]:
    """The names a piece of code binds at top level or in loops (assignments, defs, imports)."""
    names = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
    return names


@pytest.mark.parametrize(("assignment", "notebook"), NOTEBOOKS, ids=IDS)
def test_solution_runs_cleanly_and_passes_its_public_checks(assignment, notebook, tmp_path):
    solution = REPOSITORY.solutions / assignment / f"{notebook}.ipynb"
    assert solution.exists(), f"no reference solution {solution}: run `python -m autograder release`"
    folder = tmp_path / assignment
    shutil.copytree(
        REPOSITORY.solutions / assignment,
        folder,
        symlinks=False,
        ignore=shutil.ignore_patterns("__pycache__", ".ipynb_checkpoints"),
    )
    ran = _run(folder, solution.name, f"solutions/{assignment}/{notebook}.ipynb")
    source = _source_cells(assignment, notebook)
    assert len(ran.cells) == len(source), "the solution notebook and its source have different cells"

    problems = [
        _describe(i, cell)
        for i, cell in enumerate(ran.cells)
        if cell.cell_type == "code" and (_errors(cell) or _stderr(cell))
    ]
    assert not problems, "the reference solution shows errors or stderr output:\n" + "\n".join(problems)
    tests = [i for i, cell in enumerate(source) if _is_test_cell(cell)]
    assert tests, f"{notebook} has no public-check test cells"
    failing = [_describe(i, ran.cells[i]) for i in tests if PASSED not in _stdout(ran.cells[i])]
    assert not failing, "public checks that do not pass on the reference solution:\n" + "\n".join(failing)


@pytest.mark.parametrize(("assignment", "notebook"), NOTEBOOKS, ids=IDS)
def test_untouched_release_runs_with_only_unanswered_errors(assignment, notebook, tmp_path):
    release = REPOSITORY.release / assignment / f"{notebook}.ipynb"
    assert release.exists(), f"no release {release}: run `python -m autograder release`"
    folder = tmp_path / assignment
    shutil.copytree(
        REPOSITORY.release / assignment, folder, ignore=shutil.ignore_patterns("__pycache__", ".ipynb_checkpoints")
    )
    ran = _run(folder, release.name, f"release/{assignment}/{notebook}.ipynb")
    released = classroom.release_notebook(REPOSITORY, assignment, notebook)["cells"]
    assert len(ran.cells) == len(released)
    answerable = set().union(
        *(
            defined_names(text)
            for grade_id, text in classroom.model_answers(REPOSITORY, assignment, notebook).items()
            if _code_answer(released, grade_id)
        )
    )

    problems = []
    for index, (cell, original) in enumerate(zip(ran.cells, released)):
        if cell.cell_type != "code":
            continue
        errors = _errors(cell)
        if _is_answer_cell(original):
            if [error.ename for error in errors] != ["NotImplementedError"]:
                problems.append("an answer cell should raise NotImplementedError only:\n" + _describe(index, cell))
            continue
        for error in errors:
            missing = re.fullmatch(r"name '(\w+)' is not defined", error.evalue)
            if error.ename != "NameError" or not missing or missing.group(1) not in answerable:
                problems.append("an error that no unanswered cell explains:\n" + _describe(index, cell))
        if _is_test_cell(original) and PASSED in _stdout(cell):
            problems.append("a public check passes on the untouched release:\n" + _describe(index, cell))
    assert not problems, "\n".join(problems)


def _code_answer(cells: list[dict], grade_id: str) -> bool:
    return any(_nbgrader(cell).get("grade_id") == grade_id and cell["cell_type"] == "code" for cell in cells)
