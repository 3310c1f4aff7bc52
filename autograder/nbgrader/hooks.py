"""Hooks of nbgrader's converters (configured in nbgrader_config.py); light to import.

`nbgrader autograde` reads a submission with plain open() and shutil.copy, following links: a
named pipe named like a notebook blocks it forever, a link to /dev/zero beside the notebooks is
copied until the disk is full, a link to the gradebook or to /etc/passwd lands in autograded/,
and a timestamp.txt that is not a date makes it exit for the whole class. Its pre-convert hook
runs once per submission before any of that, and is handed the very list of notebooks it will
open. This hook
  * renames a stray notebook recognised as a missing one (the batch grader's rule,
    batch.find_work) to the expected name, so that both paths grade it;
  * takes out of that list the notebooks that are not regular files once links are followed, or
    are over the size limit (nbgrader then grades them as not submitted, 0, and this logs why);
    links to regular notebooks stay, for the sanitising step to grade 0 with the reason
    (nbgrader_bridge.RestoreCourseMetadata);
  * moves every other unsafe entry of the submission folder (links, hard links, devices, pipes,
    files over the size cap, a timestamp.txt that is not a date) out of it, into
    `submitted/<student>/.<assignment>.quarantined/`, so nbgrader never reads or copies it.
    Nothing is deleted, and nothing is touched in a folder reached through a link.
"""

from __future__ import annotations

import logging
import os
import pathlib
import stat

from autograder.core import safe_files
from autograder.core.notebook import MAX_NOTEBOOK_BYTES, quote

_log = logging.getLogger("autograder")


def _notebook_refusal(path: str) -> str | None:
    try:
        info = os.stat(path)  # following links: what nbgrader's open() would read
    except OSError as error:
        return f"it cannot be read ({error.strerror})"
    if not stat.S_ISREG(info.st_mode):
        return "it is not a regular file (a folder, a pipe, a device, or a link to one)"
    if info.st_size > MAX_NOTEBOOK_BYTES:
        return f"it is {info.st_size} bytes, over the {MAX_NOTEBOOK_BYTES >> 20} MiB limit"
    return None


def _ours(root: pathlib.Path, assignment: str) -> bool:
    """Whether the course grades `assignment` (it has grading content); nbgrader grades the rest."""
    from autograder.core.course import GRADING_DIR

    return (pathlib.Path(root) / GRADING_DIR / assignment).is_dir()


def _timestamp_refusal(path: pathlib.Path) -> str | None:
    from nbgrader.utils import parse_utc

    try:
        text = safe_files.read_regular(path, 200).decode("utf-8").strip()
        if text:
            parse_utc(text)
    except Exception as error:  # noqa: BLE001 - dateutil raises ValueError, OverflowError...
        return f"it is not a readable date ({quote(error, 100)})"
    return None


def _side_refusal(folder: pathlib.Path, relative: pathlib.Path, info: os.stat_result) -> str | None:
    if stat.S_ISDIR(info.st_mode) or relative.suffix == ".ipynb":
        return None  # notebooks are never copied by nbgrader; the ones it grades are judged above
    reason = safe_files.refusal(info)
    if reason is None and info.st_size > safe_files.MAX_SIDE_FILE_BYTES:
        reason = f"it is {info.st_size} bytes, over the {safe_files.MAX_SIDE_FILE_BYTES >> 20} MiB limit"
    if reason is None and relative == pathlib.Path("timestamp.txt"):
        reason = _timestamp_refusal(folder / relative)
    return reason


def _note_renamed(course_root: pathlib.Path, folder: pathlib.Path, notebook_id: str, original: str) -> None:
    """Keep the submitted name, for the grade's note (SandboxedGrading) and the batch grader."""
    import json

    from autograder.nbgrader.preprocessors import renamed_record

    record_path = renamed_record(folder)
    try:
        record = json.loads(safe_files.read_regular(record_path, 1 << 16, root=course_root))
    except (OSError, ValueError, safe_files.UnsafeFile):
        record = {}
    record = record if isinstance(record, dict) else {}
    record[notebook_id] = original
    record_path.write_text(json.dumps(record, indent=1))


def restore_renamed(notebooks: list[str], root: pathlib.Path | None = None) -> None:
    """Give a renamed notebook (`questions-Copy1.ipynb`) back its expected name, when one of the
    assignment's notebooks is missing and the stray is recognised as it by the batch grader's rule
    (the one defining most of the names its checks ask for), so that nbgrader grades it instead of
    "Skipping unknown notebook". Links and unreadable strays are never taken; nothing is deleted."""
    by_folder: dict[pathlib.Path, list[pathlib.Path]] = {}
    for path in notebooks:
        by_folder.setdefault(pathlib.Path(path).parent, []).append(pathlib.Path(path))
    for folder, paths in by_folder.items():
        course_root = pathlib.Path(root) if root else folder.parents[2]  # <root>/submitted/<student>/<assignment>
        if not _ours(course_root, folder.name):
            continue  # nbgrader's own assignment: a stray notebook is skipped as stock nbgrader skips it
        expected = sorted(p.stem for p in (course_root / "source" / folder.name).glob("*.ipynb"))
        missing = [nb for nb in expected if not os.path.lexists(folder / f"{nb}.ipynb")]
        strays = sorted(p for p in paths if p.stem not in expected and stat.S_ISREG(os.lstat(p).st_mode))
        if not missing or not strays:
            continue
        from autograder.core.course import Course
        from autograder.nbgrader import batch

        course = Course(course_root)
        defined = batch.defined_names(strays[: batch.MAX_STRAY_NOTEBOOKS], course.root)
        for notebook_id in missing:
            match = batch.match_renamed(course, defined, folder.name, notebook_id)
            if match is None:
                continue
            del defined[match]
            target = folder / f"{notebook_id}.ipynb"
            os.rename(match, target)
            notebooks[notebooks.index(str(match))] = str(target)
            _note_renamed(course_root, folder, notebook_id, match.name)
            _log.warning(
                "graded %s as %s: it is the assignment's %s notebook under another name",
                quote(match, 500),
                target.name,
                notebook_id,
            )


def _set_aside_linked_submission(folder: pathlib.Path, root: pathlib.Path, notebooks: list, error) -> None:
    """A submission reached through a link of the student's (submitted/<student>/<assignment> or
    a folder on the way pointing elsewhere): nbgrader would read and copy what the link points
    at as the student's work. Its notebooks leave nbgrader's list, and the link itself (never
    what it points at) is moved aside for an empty folder, so nothing foreign is copied."""
    for path in [path for path in notebooks if pathlib.Path(path).parent == folder]:
        notebooks.remove(path)
    submitted = root / "submitted"
    linked = next(
        (
            candidate
            for candidate in (folder, *folder.parents)
            if candidate.is_symlink() and submitted in candidate.parents
        ),
        None,
    )
    if linked is None:
        _log.warning("not grading %s: %s", quote(folder, 500), error)
        return
    aside = linked.with_name(f".{linked.name}.quarantined-link")
    os.replace(linked, aside)  # renames the link, not its target
    linked.mkdir()
    _log.warning(
        "not grading %s: %s; the link was moved to %s and the submission scores as not submitted",
        quote(linked, 500),
        error,
        quote(aside, 500),
    )


def guard_submission(assignment=None, student=None, notebooks=None, root=None, **_) -> None:
    """nbgrader's Autograde.pre_convert_hook (see the module's docstring)."""
    notebooks = notebooks if notebooks is not None else []
    try:
        restore_renamed(notebooks, root)
    except Exception:  # noqa: BLE001 - the guards below must run whatever this met
        _log.exception("looking for renamed notebooks failed")
    for path in list(notebooks):
        reason = _notebook_refusal(path)
        folder = pathlib.Path(path).parent  # <root>/submitted/<student>/<assignment>
        if reason is None and os.path.islink(path) and not _ours(pathlib.Path(root or folder.parents[2]), folder.name):
            # Ours are graded 0 with the reason by RestoreCourseMetadata; nbgrader's own would read the target.
            reason = "it is a link, and a submission is read only from regular files"
        if reason is not None:
            notebooks.remove(path)
            _log.warning("not grading %s: %s; it scores as not submitted", quote(path, 500), reason)
    root = pathlib.Path(root or os.getcwd())
    folders = {pathlib.Path(path).parent for path in notebooks}
    for folder in folders:
        try:
            safe_files.check_inside(folder / "notebook", root)
        except safe_files.UnsafeFile as error:
            _set_aside_linked_submission(folder, root, notebooks, error)
            continue
        quarantine = folder.parent / f".{folder.name}.quarantined"
        for relative, info in list(safe_files.walk_entries(folder)):
            reason = _side_refusal(folder, relative, info)
            if reason is None:
                continue
            target = quarantine / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(folder / relative, target)  # moves a link itself, never what it points at
            _log.warning(
                "moved %s out of the submission into %s: %s",
                quote(folder / relative, 500),
                quote(quarantine, 500),
                reason,
            )
