"""Packaging hook: the course content travels with the package, built from its one source.

The wheel carries `autograder/course_content/`, laid out as a course root (`source/<assignment>/`,
`autograder/assignments/<assignment>/`, `docs/`), copied at build time from this repository's
source/, autograder/assignments/ and docs/ with every link replaced by the file it points at, so
that `python -m autograder add` works from an installed package. Nothing of it is committed twice:
a checkout (and an editable install) reads the repository's own folders.
"""

import pathlib
import shutil

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = pathlib.Path(__file__).resolve().parent
CONTENT = pathlib.Path("autograder", "course_content")  # in the package: see autograder/core/course.py bundled_course
COPIED = {"source": "source", "autograder/assignments": "autograder/assignments", "docs": "docs"}


class BuildWithCourseContent(build_py):
    """build_py, then the course content into the build (not in an editable install: there the
    checkout's own folders are the content)."""

    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return
        target = pathlib.Path(self.build_lib) / CONTENT
        if target.exists():
            shutil.rmtree(target)
        for source, destination in COPIED.items():
            shutil.copytree(
                HERE / source,
                target / destination,
                symlinks=False,  # a link's target, copied: the content has no link
                ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".ipynb_checkpoints"),
            )


setup(cmdclass={"build_py": BuildWithCourseContent})
