"""Regenerate everything derived from source/: the student release and the reference solutions.

`python -m autograder release` (`make release`) is the one command. The release is produced by
`nbgrader generate_assignment` itself (against a throwaway gradebook, so an instructor's
gradebook is untouched) and nothing edits it afterwards: nbgrader's checksums cover its cells.
Solutions are the instructor notebooks with nbgrader's markers and metadata removed, next to
links to the public helper files the release ships, so they open and run where they are.
"""

from __future__ import annotations

import json
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile

from autograder.core.course import Course

_MARKER = re.compile(r"^\s*(#+|<!--)?\s*(BEGIN|END) (SOLUTION|HIDDEN TESTS|MARK SCHEME)\b.*$")


def source_assignments(root: pathlib.Path) -> list[str]:
    """The folders of source/ that hold notebooks (source/common holds only shared helpers)."""
    return sorted(
        path.name
        for path in (root / "source").iterdir()
        if path.is_dir() and not path.name.startswith(".") and any(path.glob("*.ipynb"))
    )


def generate_release(root: pathlib.Path, assignment: str) -> None:
    """Run nbgrader generate_assignment for one assignment of the course at `root`."""
    with tempfile.TemporaryDirectory() as scratch:
        command = [
            sys.executable,
            "-m",
            "nbgrader",
            "generate_assignment",
            assignment,
            "--force",
            "--create",
            f"--db=sqlite:///{scratch}/gradebook.db",
            "--log-level=WARN",
        ]
        completed = subprocess.run(command, cwd=root, capture_output=True, text=True)
    if completed.returncode != 0:
        raise RuntimeError(f"nbgrader generate_assignment {assignment} failed:\n{completed.stdout}{completed.stderr}")


def solution_notebook(source_notebook: dict) -> dict:
    """The instructor notebook as a plain solution: markers, outputs and nbgrader metadata removed."""
    notebook = json.loads(json.dumps(source_notebook))
    for cell in notebook["cells"]:
        text = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        kept = [line for line in text.split("\n") if not _MARKER.match(line)]
        cell["source"] = "\n".join(kept).strip("\n")
        cell["metadata"].pop("nbgrader", None)
        if cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
    return notebook


def generate_solutions(root: pathlib.Path, assignment: str) -> None:
    source_dir = root / "source" / assignment
    target = root / "solutions" / assignment
    target.mkdir(parents=True, exist_ok=True)
    for stale in target.iterdir():
        if stale.suffix == ".ipynb" or stale.is_symlink():
            stale.unlink()
    for path in sorted(source_dir.iterdir()):
        if path.suffix == ".ipynb":
            notebook = solution_notebook(json.loads(path.read_text(encoding="utf-8")))
            text = json.dumps(notebook, indent=1, ensure_ascii=False, sort_keys=True) + "\n"
            (target / path.name).write_text(text, encoding="utf-8")
        elif path.suffix == ".py":
            # the public helpers the notebooks import, as the release ships them (one copy, linked)
            (target / path.name).symlink_to(pathlib.Path("..", "..", "release", assignment, path.name))


STUDENT_LIBRARY = pathlib.Path(__file__).resolve().parent.parent / "student" / "tclib.py"


def student_solutions(
    course: Course, assignment: str, student_id: str, destination: pathlib.Path
) -> list[pathlib.Path]:
    """One student's reference solutions: the solution notebooks with their set-up cells drawing
    that student's variant (with the course's settings, as the release carries them), beside a
    copy of the public helpers they import. The solutions are written in terms of the variant,
    so the one source is right for every student."""
    from autograder.core import variants

    destination.mkdir(parents=True, exist_ok=True)
    written = []
    for path in sorted((course.source / assignment).iterdir()):
        if path.suffix == ".ipynb":
            settings = variants.settings_of(course.release_notebook(assignment, path.stem)) or variants.Settings()
            notebook = solution_notebook(json.loads(path.read_text(encoding="utf-8")))
            for cell in notebook["cells"]:
                if cell["cell_type"] == "code":
                    cell["source"] = variants.with_settings(cell["source"], settings, student_id)
            target = destination / path.name
            target.write_text(json.dumps(notebook, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
            written.append(target)
        elif path.suffix == ".py":
            shutil.copyfile(course.release / assignment / path.name, destination / path.name)
    return written


def write_student_library(course: Course) -> None:
    """Copy the student library (autograder/student/tclib.py, its one source) to
    source/common/tclib.py, which the assignments link to and nbgrader ships with each."""
    target = course.source / "common" / "tclib.py"
    text = STUDENT_LIBRARY.read_text(encoding="utf-8")
    if not target.exists() or target.read_text(encoding="utf-8") != text:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")


def build(course: Course, assignments: list[str] | None = None) -> None:
    """Regenerate release/ and solutions/ of `assignments` (default: all in source/)."""
    root = course.root
    if (course.source / "common").is_dir():
        write_student_library(course)
    for assignment in assignments or source_assignments(root):
        generate_release(root, assignment)
        generate_solutions(root, assignment)
        print(f"regenerated release/{assignment} and solutions/{assignment}")


def copy_course(course: Course, destination: pathlib.Path, with_release: bool = False) -> Course:
    """A new course at `destination` with `course`'s source, grading content and nbgrader config
    (and its release when asked): what an instructor copies into a course of their own."""
    destination = pathlib.Path(destination)
    shutil.copytree(course.source, destination / "source", symlinks=True)
    shutil.copytree(
        course.grading,
        destination / course.grading.relative_to(course.root),
        symlinks=True,
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    shutil.copy(course.root / "nbgrader_config.py", destination / "nbgrader_config.py")
    if with_release:
        shutil.copytree(course.release, destination / "release", symlinks=True)
    return Course(destination)


def build_copy(course: Course, destination: pathlib.Path) -> Course:
    """Build the course into a fresh copy (for the freshness test): source and config only."""
    copy = copy_course(course, destination)
    build(copy)
    return copy
