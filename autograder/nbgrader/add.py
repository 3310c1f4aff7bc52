"""`python -m autograder add --course ROOT [ASSIGNMENT ...]`: this course's assignments in an
instructor's own nbgrader course.

The content comes with the package (`bundled_course`): an installed package carries it in
`autograder/course_content/` (built from the repository by setup.py), a checkout is its own. For
each assignment, its instructor notebooks and public helper modules go to `ROOT/source/<a>/` and
its grading content to `ROOT/autograder/assignments/<a>/`, as real files (every link replaced by
what it points at, so the assignment holds no link leaving it). Nothing of the instructor's is
overwritten without `force`; the instructor's nbgrader_config.py gets one line (`CONFIG_LINE`),
and nothing else of their course changes: their other assignments are graded as stock nbgrader
grades them.
"""

from __future__ import annotations

import dataclasses
import filecmp
import pathlib
import shutil

import autograder
from autograder.core import course as course_module
from autograder.core.course import GRADING_DIR, Course
from autograder.core.errors import UsageError
from autograder.nbgrader.settings import CONFIG_LINE

_IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", ".ipynb_checkpoints")


def bundled_course() -> Course:
    """The course this package carries (`course.bundled_course`), or a usage error naming where it looked."""
    found = course_module.bundled_course()
    if found is None:
        package = pathlib.Path(autograder.__file__).resolve().parent
        raise UsageError(
            f"this installation of the grader carries no course content (looked in {package / course_module.CONTENT_DIR})"
        )
    return found


def bundled_docs() -> dict[str, pathlib.Path]:
    """The course's documents, by lower-case name (`deployment` -> DEPLOYMENT.md)."""
    folder = bundled_course().root / "docs"
    return {path.stem.lower(): path for path in sorted(folder.glob("*.md"))} if folder.is_dir() else {}


@dataclasses.dataclass
class Added:
    """What `add_course` did."""

    assignments: list[str]
    written: list[pathlib.Path]
    config: pathlib.Path
    config_written: bool  # False: the line was there already


def _files(folder: pathlib.Path) -> dict[pathlib.Path, pathlib.Path]:
    """relative path -> the real file it is (links followed), for every file under `folder`."""
    found = {}
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if any(_IGNORED(None, [part]) for part in relative.parts) or not path.is_file():
            continue
        found[relative] = path.resolve()
    return found


def plan(bundled: Course, root: pathlib.Path, assignments: list[str]) -> dict[pathlib.Path, pathlib.Path]:
    """destination -> source file, for every file the assignments bring into the course at `root`."""
    copies = {}
    for assignment in assignments:
        for folder, target in (
            (bundled.source / assignment, root / "source" / assignment),
            (bundled.grading_dir(assignment), root / GRADING_DIR / assignment),
        ):
            for relative, source in _files(folder).items():
                copies[target / relative] = source
    return copies


def add_course(root: pathlib.Path, assignments: list[str] | None = None, force: bool = False) -> Added:
    """Copy `assignments` (default: all) of the bundled course into the nbgrader course at `root`
    and give its nbgrader_config.py the line that loads this course's settings."""
    root = pathlib.Path(root)
    if not root.is_dir():
        raise UsageError(f"--course {root}: no such directory (make one with `nbgrader quickstart NAME`)")
    bundled = bundled_course()
    known = bundled.assignments()
    wanted = assignments or known
    unknown = [name for name in wanted if name not in known]
    if unknown:
        raise UsageError(f"no assignment {', '.join(map(repr, unknown))} in this course (known: {', '.join(known)})")
    copies = plan(bundled, root, wanted)
    clashes = [
        path for path, source in copies.items() if path.exists() and not filecmp.cmp(path, source, shallow=False)
    ]
    clashes += [path for path in copies if path.is_symlink() or (path.exists() and not path.is_file())]
    if clashes and not force:
        shown = "\n  ".join(str(path.relative_to(root)) for path in sorted(set(clashes))[:20])
        raise UsageError(
            f"{len(set(clashes))} files of the course at {root} differ from this course's and are kept "
            f"(--force replaces them):\n  {shown}"
        )
    written = []
    for path, source in copies.items():
        if path.is_file() and not path.is_symlink() and filecmp.cmp(path, source, shallow=False):
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_symlink() or path.exists():
            path.unlink()
        shutil.copyfile(source, path)  # the file's content, never a link
        written.append(path)
    config = root / "nbgrader_config.py"
    config_written = configure_course(config)
    return Added(wanted, written, config, config_written)


def configure_course(config: pathlib.Path) -> bool:
    """Append CONFIG_LINE to the course's nbgrader_config.py (made if missing); False when it is
    there already."""
    text = config.read_text(encoding="utf-8") if config.exists() else "c = get_config()  # noqa\n"
    if CONFIG_LINE in text:
        return False
    if text and not text.endswith("\n"):
        text += "\n"
    text += f"\n# The transformer-circuits assignments' grading (python -m autograder add)\n{CONFIG_LINE}\n"
    config.write_text(text, encoding="utf-8")
    return True


def report(added: Added, root: pathlib.Path) -> str:
    """What the instructor reads after `add`: what changed and what to run next."""
    lines = [f"added {', '.join(added.assignments)} to {root}: {len(added.written)} files written"]
    if added.config_written:
        lines.append(f"{added.config}: added the line\n    {CONFIG_LINE}")
    else:
        lines.append(f"{added.config} already loads this course's settings:\n    {CONFIG_LINE}")
    lines.append(
        "Your other assignments are graded by nbgrader as before. Next, for each assignment:\n"
        + "\n".join(f"    nbgrader generate_assignment {name}" for name in added.assignments)
        + "\nthen release, collect and `python -m autograder grade --course . ASSIGNMENT` (or nbgrader autograde)."
    )
    return "\n".join(lines)
