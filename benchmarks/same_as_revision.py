"""Grade the benchmark's class with this checkout and with an earlier revision; compare all.

A speed change must leave every verdict as it was: this grades two copies of the class that
`bench_grading.py` builds (feedback included) with `python -m autograder grade`, one with this
checkout's code and one with REVISION's (extracted by `git archive`, put first on PYTHONPATH),
and compares the gradebooks (scores, comments, flags, penalties, timestamps), autograded/ and
feedback/, byte for byte. Exit status 1 when anything differs.

    python benchmarks/same_as_revision.py REVISION [--size 20]
"""

from __future__ import annotations

import argparse
import os
import pathlib
import shutil
import sqlite3
import subprocess
import sys
import tempfile

import bench_grading as bench

TABLES = ("grade", "comment", "submitted_notebook", "submitted_assignment", "student")


def gradebook_rows(root: pathlib.Path) -> list[list[str]]:
    """Every row of the tables grading writes, without the random ids that join them."""
    connection = sqlite3.connect(root / "gradebook.db")
    rows = []
    for table in TABLES:
        columns = [row[1] for row in connection.execute(f"pragma table_info({table})")]
        kept = [column for column in columns if column != "id" and not column.endswith("_id")]
        rows.append(sorted(map(repr, connection.execute(f"select {', '.join(kept)} from {table}"))))
    connection.close()
    return rows


def grade(root: pathlib.Path, code: str | None) -> None:
    env = dict(os.environ)
    if code is not None:
        env["PYTHONPATH"] = code
    command = [sys.executable, "-m", "autograder", "grade", "--course", str(root), bench.ASSIGNMENT, "--force"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=tempfile.gettempdir())
    if done.returncode:
        sys.exit(f"grading {root} failed:\n{done.stderr[-3000:]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("revision")
    parser.add_argument("--size", type=int, default=20)
    args = parser.parse_args()
    base = bench.make_course(f"same-{args.size}", args.size)
    ours, theirs = bench.WORK / f"same-ours-{args.size}", bench.WORK / f"same-theirs-{args.size}"
    for root in (ours, theirs):
        shutil.rmtree(root, ignore_errors=True)
        shutil.copytree(base, root, symlinks=True)
    with tempfile.TemporaryDirectory(prefix="same_as_revision_") as code:
        archive = subprocess.run(["git", "archive", args.revision], cwd=bench.ROOT, capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", code], input=archive.stdout, check=True)
        grade(theirs, code)
    grade(ours, None)
    same = {"gradebook": gradebook_rows(ours) == gradebook_rows(theirs)}
    for folder in ("autograded", "feedback"):
        same[folder] = bench.same_files(ours, theirs, folder)
    print(
        f"{args.size} submissions graded by this checkout and by {args.revision}: identical "
        + ", ".join(f"{name} {value}" for name, value in same.items())
    )
    return 0 if all(same.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
