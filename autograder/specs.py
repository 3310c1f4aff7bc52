"""What the course expects of each notebook: names to extract, probes, parts and their points.

Everything here comes from trusted files: the hidden check modules in
`autograder/assignments/` and the instructor notebooks in `source/`.
"""
from __future__ import annotations

import dataclasses
import functools
import importlib
import pathlib

from autograder import course
from autograder import notebook as nbio


@dataclasses.dataclass(frozen=True)
class Part:
    """One nbgrader grade cell."""

    grade_id: str
    points: float
    manual: bool  # graded by a person (free text), not by checks


@dataclasses.dataclass(frozen=True)
class NotebookSpec:
    assignment: str
    notebook: str
    checks_path: pathlib.Path
    extract: tuple[str, ...]
    probes: dict
    parts: tuple[Part, ...]
    figures: object = None  # optional callable(sub, grade_id) -> list[str]

    @property
    def key(self) -> str:
        return f"{self.assignment}/{self.notebook}"

    @property
    def helpers_dir(self) -> pathlib.Path:
        """The public files every student receives: mounted read-only in the sandbox."""
        return course.RELEASE / self.assignment

    @property
    def auto_parts(self) -> tuple[Part, ...]:
        return tuple(part for part in self.parts if not part.manual)


def source_parts(assignment: str, notebook: str) -> tuple[Part, ...]:
    """Grade cells of the instructor notebook, in order."""
    path = course.SOURCE / assignment / f"{notebook}.ipynb"
    parts = []
    for cell in nbio.read_notebook(str(path))["cells"]:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if meta.get("grade"):
            parts.append(Part(meta["grade_id"], float(meta.get("points", 0)), bool(meta.get("solution"))))
    return tuple(parts)


@functools.lru_cache(maxsize=None)
def all_specs() -> tuple[NotebookSpec, ...]:
    specs = []
    for checks_path in sorted(course.ASSIGNMENTS_PACKAGE.glob("*/test_*.py")):
        assignment = checks_path.parent.name
        module = importlib.import_module(f"autograder.assignments.{assignment}.{checks_path.stem}")
        notebook = module.NOTEBOOK
        specs.append(NotebookSpec(
            assignment=assignment,
            notebook=notebook,
            checks_path=checks_path,
            extract=tuple(module.EXTRACT),
            probes=dict(getattr(module, "PROBES", {})),
            parts=source_parts(assignment, notebook),
            figures=getattr(module, "figures", None),
        ))
    return tuple(specs)


def find_spec(assignment: str | None, notebook: str) -> NotebookSpec | None:
    for spec in all_specs():
        if spec.notebook == notebook and (assignment is None or spec.assignment == assignment):
            return spec
    return None


def assignments() -> list[str]:
    return sorted({spec.assignment for spec in all_specs()})
