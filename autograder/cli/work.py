"""`autograder work`: a self-learner's own copies of the assignments, in `work/` of the checkout.

Each assignment's release folder (notebooks and the public helper modules they import) is copied
to `work/<assignment>/`, which `.gitignore` keeps out of the repository, so `git pull` never
touches the learner's answers and the release stays as shipped. A file already there is never
overwritten (run it again after a pull to get new assignments; your answers stay). Each copied
notebook records its course, so `autograder check` finds the course for it wherever it is moved.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil

from autograder.cli.selfcheck import WORK_RECORD_KEY
from autograder.core.course import Course
from autograder.core.errors import UsageError

WORK_DIR = "work"


def make_copies(course: Course, assignments: list[str] | None = None) -> list[pathlib.Path]:
    """Copy the release of each assignment (all by default) into work/; the files it made."""
    known = sorted(path.name for path in course.release.iterdir() if path.is_dir()) if course.release.is_dir() else []
    for name in assignments or ():
        if name not in known:
            raise UsageError(f"no assignment {name!r} in {course.release} (known: {', '.join(known) or 'none'})")
    made = []
    for assignment in assignments or known:
        source, target = course.release / assignment, course.root / WORK_DIR / assignment
        target.mkdir(parents=True, exist_ok=True)
        for path in sorted(source.iterdir()):
            if not path.is_file() or path.name.startswith("."):
                continue
            destination = target / path.name
            if destination.exists():
                continue  # the learner's own work (or a helper module they already have): kept
            if path.suffix == ".ipynb":
                notebook = json.loads(path.read_text(encoding="utf-8"))
                notebook.setdefault("metadata", {})[WORK_RECORD_KEY] = {
                    "course": str(course.root),
                    "assignment": assignment,
                    "notebook": path.stem,
                }
                destination.write_text(json.dumps(notebook, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
            else:
                shutil.copyfile(path, destination)
            made.append(destination)
    return made


def main(course: Course, assignments: list[str] | None = None) -> int:
    made = make_copies(course, assignments)
    work = course.root / WORK_DIR
    for path in made:
        print(f"made {os.path.relpath(path)}")
    if not made:
        print(f"nothing new: your copies in {os.path.relpath(work)} are all there (none was changed)")
    notebooks = sorted(work.glob("*/*.ipynb"))
    if notebooks:
        first = os.path.relpath(notebooks[0], course.root)
        print(
            "\nopen them with JupyterLab at the course's root (the file browser then shows work/, "
            f"release/ and solutions/):\n  cd {course.root}\n  jupyter lab --ServerApp.root_dir=. {first}\n"
            f"and check a notebook with:\n  autograder check {first}"
        )
    return 0
