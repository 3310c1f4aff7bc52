"""Reading and copying files of a submission as hostile input.

A submission folder is written by the student (and, through the exchange's world-writable
inbound folder, by anyone). The grader therefore opens only regular files, itself, without
following links (`O_NOFOLLOW` on the file, `lstat` on every folder between the course root and
it), refuses hard links (a file with several names may be the instructor's own), and checks the
size before reading. Every refusal is an `UnsafeFile` whose message is meant for the student.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import stat

# Files beside the notebooks (data, images) that are copied into autograded/: larger ones are
# left out rather than copied, so a sparse "terabyte" costs nothing.
MAX_SIDE_FILE_BYTES = 20 << 20


class UnsafeFile(Exception):
    """A file of the submission that the grader will not read; the message says why."""


def _kind(mode: int) -> str | None:
    """What a non-regular file is, in words; None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a named pipe"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def refusal(info: os.stat_result) -> str | None:
    """Why a file with this lstat() must not be read as submitted work; None when it may."""
    kind = _kind(info.st_mode)
    if kind is not None:
        return f"it is {kind}, not a regular file"
    if info.st_nlink > 1:
        return (
            f"it is a hard link (the same file has {info.st_nlink} names), so it may be "
            "someone else's file; submit a copy of your own"
        )
    return None


def check_inside(path: pathlib.Path, root: pathlib.Path) -> None:
    """Raise UnsafeFile unless every folder from `root` down to `path`'s parent is a real folder.

    `root` itself is the course's (trusted); what lies below it may be the student's.
    """
    path, root = pathlib.Path(os.path.abspath(path)), pathlib.Path(os.path.abspath(root))
    try:
        relative = path.parent.relative_to(root)
    except ValueError:
        raise UnsafeFile(f"{path} is outside the course folder {root}") from None
    current = root
    for part in relative.parts:
        current = current / part
        try:
            info = os.lstat(current)
        except OSError as error:
            raise UnsafeFile(f"the folder {part!r} cannot be read ({error.strerror})") from None
        if not stat.S_ISDIR(info.st_mode):
            raise UnsafeFile(f"the folder {part!r} is {_kind(info.st_mode)}, not a real folder")


def read_regular(path, limit: int, root=None, too_large=None) -> bytes:
    """The bytes of a regular, singly-linked file of at most `limit` bytes, opened without
    following links (and, with `root`, below `root` through real folders only).

    `too_large(size)` gives the message when the file is larger than `limit`.
    """
    path = pathlib.Path(path)
    if root is not None:
        check_inside(path, pathlib.Path(root))
    try:
        info = os.lstat(path)
    except OSError as error:
        raise UnsafeFile(f"the file cannot be read ({error.strerror})") from None
    reason = refusal(info)
    if reason:
        raise UnsafeFile(reason)
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        descriptor = os.open(path, flags)
    except OSError as error:  # swapped for a link after the lstat (ELOOP), or gone
        raise UnsafeFile(f"the file cannot be opened ({error.strerror})") from None
    with os.fdopen(descriptor, "rb") as handle:
        info = os.fstat(handle.fileno())
        reason = refusal(info)  # what was opened, not what was looked at before
        if reason:
            raise UnsafeFile(reason)
        if info.st_size > limit:
            raise UnsafeFile(
                too_large(info.st_size) if too_large else f"it is {info.st_size} bytes, over the limit of {limit}"
            )
        # Read what fstat says is there (a buffer of `limit` bytes for every notebook would be
        # allocated, if not touched, on each read); more only if the file grows meanwhile.
        data = handle.read(info.st_size + 1)
        if len(data) > info.st_size:
            data += handle.read(limit + 1 - len(data))
    if len(data) > limit:  # grew while being read
        raise UnsafeFile(too_large(len(data)) if too_large else f"it is over the limit of {limit} bytes")
    return data


def read_course_file(path, limit: int) -> bytes:
    """The bytes of one of the course's own files (source/, release/, autograder/), at most `limit`.

    These are the instructor's, so a second name (`cp -al` of the course, a student's hard link
    to a release notebook where the kernel allows one) or a link the instructor made is no reason
    to stop grading: they are read as any program reads its own files, only bounded in size.
    """
    with open(path, "rb") as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise UnsafeFile(f"{pathlib.Path(path).name} is over the limit of {limit} bytes")
    return data


def walk_entries(top: pathlib.Path):
    """(relative path, lstat) of everything below `top`, without entering linked folders."""
    stack = [pathlib.Path(top)]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as entries:
                found = sorted(entries, key=lambda entry: entry.name)
        except OSError:
            continue
        for entry in found:
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            path = pathlib.Path(entry.path)
            yield path.relative_to(top), info
            if stat.S_ISDIR(info.st_mode):
                stack.append(path)


def fingerprint(top: pathlib.Path, digest=None):
    """A digest of what a submission folder holds, reading only small regular files.

    Everything else enters by its type, size and modification time, so a link to /dev/zero
    or a sparse huge file costs nothing and still changes the fingerprint when it changes.
    """
    digest = digest or hashlib.sha256()
    for relative, info in walk_entries(top):
        digest.update(f"{relative}\0{info.st_mode}\0{info.st_size}\0".encode("utf-8", "surrogateescape"))
        if refusal(info) is None and info.st_size <= MAX_SIDE_FILE_BYTES:
            try:
                digest.update(read_regular(top / relative, MAX_SIDE_FILE_BYTES))
            except UnsafeFile:
                digest.update(b"\0unreadable")
        else:
            digest.update(f"{info.st_mtime_ns}".encode())
    return digest


def copy_submitted_files(source: pathlib.Path, destination: pathlib.Path, skip) -> list[str]:
    """Copy the regular, singly-linked, not too large files below `source` into `destination`.

    `skip(relative_path)` says what to leave out by name. Links, devices, pipes and hard links
    are never copied (nor followed); returns a line per file left out, with the reason.
    """
    left_out = []
    for relative, info in walk_entries(source):
        if skip(relative):
            continue
        if stat.S_ISDIR(info.st_mode):
            continue  # folders are made as their files are copied
        reason = refusal(info)
        if reason is None and info.st_size > MAX_SIDE_FILE_BYTES:
            reason = (
                f"it is {info.st_size} bytes, over the {MAX_SIDE_FILE_BYTES >> 20} MiB limit for files beside notebooks"
            )
        data = None
        if reason is None:
            try:
                data = read_regular(source / relative, MAX_SIDE_FILE_BYTES)
            except UnsafeFile as error:
                reason = str(error)
        if reason is not None:
            left_out.append(f"{relative}: not copied, {reason}")
            continue
        target = destination / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return left_out
