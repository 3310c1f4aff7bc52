"""What the course expects of each notebook: names to extract, probes, parts and their points.

Everything here comes from trusted files of the course: its hidden check modules
(`autograder/assignments/<assignment>/test_<notebook>.py`) and its instructor notebooks.
"""

from __future__ import annotations

import dataclasses
import pathlib
import types
from collections.abc import Callable

from autograder.core import notebook as nbio


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
    module: types.ModuleType = dataclasses.field(compare=False, repr=False)
    helpers_dir: pathlib.Path  # the public files every student receives: read-only in the sandbox
    extract: tuple[str, ...]
    probes: dict
    parts: tuple[Part, ...]
    figures: Callable[..., list[str]] | None = None  # optional figures(sub, grade_id) -> SVG strings
    variant: Callable[..., object] | None = None  # optional VARIANT(student_id, salt) -> the variant
    answer_of: dict = dataclasses.field(
        default_factory=dict, compare=False
    )  # name -> grade_id of the answer cell defining it

    @property
    def key(self) -> str:
        return f"{self.assignment}/{self.notebook}"

    @property
    def auto_parts(self) -> tuple[Part, ...]:
        return tuple(part for part in self.parts if not part.manual)


def source_parts(source_notebook: pathlib.Path) -> tuple[Part, ...]:
    """Grade cells of the instructor notebook, in order."""
    parts = []
    for cell in nbio.read_course_notebook(source_notebook)["cells"]:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if meta.get("grade"):
            parts.append(Part(meta["grade_id"], float(meta.get("points", 0)), bool(meta.get("solution"))))
    return tuple(parts)


def answer_cells_defining(source_notebook: pathlib.Path, names) -> dict[str, str]:
    """name -> grade_id of the answer cell whose model answer (in the instructor notebook) defines it."""
    wanted, found = set(names), {}  # type: set[str], dict[str, str]
    for cell in nbio.read_course_notebook(source_notebook)["cells"]:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if cell["cell_type"] == "code" and meta.get("solution"):
            for name in sorted(nbio.assigned_names(cell["source"]) & wanted):
                found.setdefault(name, meta["grade_id"])
    return found


def read_spec(
    assignment: str,
    checks_path: pathlib.Path,
    module: types.ModuleType,
    source: pathlib.Path,
    helpers_dir: pathlib.Path,
) -> NotebookSpec:
    """The spec of one hidden check module, with its parts read from the instructor notebook of
    `source` (the assignment's source folder) it names. The course lists them (`Course.specs`):
    this module knows specs, not where a course keeps its files."""
    source_notebook = source / f"{module.NOTEBOOK}.ipynb"
    return NotebookSpec(
        assignment=assignment,
        notebook=module.NOTEBOOK,
        checks_path=checks_path,
        module=module,
        helpers_dir=helpers_dir,
        extract=tuple(module.EXTRACT),
        probes=dict(getattr(module, "PROBES", {})),
        parts=source_parts(source_notebook),
        figures=getattr(module, "figures", None),
        variant=getattr(module, "VARIANT", None),
        answer_of=answer_cells_defining(source_notebook, module.EXTRACT),
    )


def answer_cells_by_part(release: dict, spec: NotebookSpec) -> dict[str, list[str]]:
    """grade_id of each part -> grade_ids of the answer cells the student fills in for it.

    An autograded part's answers are the answer (solution) cells between the previous graded
    cell and its test cell; a free-text part is its own answer. Locked parts have none.
    """
    parts = {part.grade_id for part in spec.parts}
    answers: dict[str, list[str]] = {}
    pending: list[str] = []
    for cell in release["cells"]:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        grade_id = meta.get("grade_id")
        if meta.get("grade") and grade_id in parts:
            answers[grade_id] = [grade_id] if meta.get("solution") else pending
            pending = []
        elif meta.get("solution") and grade_id:
            pending.append(grade_id)
    return answers


def attempted_parts(spec: NotebookSpec, submitted: dict, release: dict) -> list[str]:
    """Parts, in order, where the student changed an answer cell from what the release gave."""
    given = {nbio.grade_id(cell): cell for cell in release["cells"]}
    written = {
        grade_id: nbio.source_text(submitted["cells"][index].get("source", ""))
        for grade_id, index in nbio.grade_id_positions(submitted).items()
    }
    attempted = []
    for part, answer_ids in answer_cells_by_part(release, spec).items():
        if any(
            answer in written and written[answer].strip() != nbio.source_text(given[answer]["source"]).strip()
            for answer in answer_ids
            if answer in given
        ):
            attempted.append(part)
    return attempted


def answer_cell_positions(spec: NotebookSpec, submitted: dict, release: dict) -> dict[str, int]:
    """grade_id of each part -> position of the first of its answer cells in the submitted notebook."""
    positions = nbio.grade_id_positions(submitted)
    found = {}
    for part, answers in answer_cells_by_part(release, spec).items():
        where = [positions[answer] for answer in answers if answer in positions]
        if where:
            found[part] = min(where)
    return found
