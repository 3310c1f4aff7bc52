"""The course being graded: where its files are, and trusted access to its grading content.

A `Course` is built explicitly (from `--course ROOT`, from nbgrader's `CourseDirectory.root`,
or discovered from a working directory or a notebook's path) and passed to everything that
needs it. Its layout is nbgrader's plus one folder of grading content per assignment:

    ROOT/source/<assignment>/           instructor notebooks and public helper modules
    ROOT/release/<assignment>/          what students receive (nbgrader generate_assignment)
    ROOT/solutions/<assignment>/        reference solutions (generated)
    ROOT/autograder/assignments/<assignment>/
        test_<notebook>.py              hidden checks, one module per notebook
        reference.py, ...               anything the checks import relatively (`from . import reference`)
        mistakes.json, alternatives.json  wrong and other correct answers the tests grade

An instructor can copy `source/<assignment>` and `autograder/assignments/<assignment>` into their
own nbgrader course and grade it there: nothing here depends on where this package is installed.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os
import pathlib
import sys
import types

from autograder.core.errors import UsageError

GRADING_DIR = pathlib.Path("autograder", "assignments")


class CourseNotFound(UsageError):
    """No course could be found where one was looked for; the message says where and why."""


class Course:
    """One nbgrader course on disk (its root holds source/, release/ and the grading content)."""

    def __init__(self, root: str | os.PathLike):
        self.root = pathlib.Path(root).resolve()
        self.source = self.root / "source"
        self.release = self.root / "release"
        self.solutions = self.root / "solutions"
        self.grading = self.root / GRADING_DIR
        # A name for this course's modules in sys.modules, distinct per root, so that two
        # courses (or two copies of one) loaded in one process never share check modules.
        self._module_prefix = "_course_" + hashlib.sha256(str(self.root).encode()).hexdigest()[:12]

    def __repr__(self) -> str:
        return f"Course({str(self.root)!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, Course) and other.root == self.root

    def __hash__(self) -> int:
        return hash(self.root)

    # -- discovery -----------------------------------------------------------------------------
    @classmethod
    def discover(cls, start: str | os.PathLike | None = None) -> Course:
        """The course whose root contains `start` (a directory or a file; default: the working dir)."""
        here = pathlib.Path(start if start is not None else os.getcwd()).resolve()
        if here.is_file() or not here.exists():
            here = here.parent
        for candidate in (here, *here.parents):
            if (candidate / GRADING_DIR).is_dir() and (candidate / "source").is_dir():
                return cls(candidate)
        raise CourseNotFound(
            f"no course found at or above {here}: a course root holds source/ and {GRADING_DIR}/ "
            "(give it with --course ROOT)"
        )

    # -- content -------------------------------------------------------------------------------
    def assignments(self) -> list[str]:
        """Assignments that have grading content."""
        if not self.grading.is_dir():
            return []
        return sorted(
            path.name for path in self.grading.iterdir() if path.is_dir() and not path.name.startswith((".", "_"))
        )

    def grading_dir(self, assignment: str) -> pathlib.Path:
        return self.grading / assignment

    def grades(self, assignment: str | None) -> bool:
        """Whether `assignment` is one of this course's (it has grading content in the course).
        Every other assignment of an nbgrader course is nbgrader's own, graded by nbgrader."""
        return bool(assignment) and self.grading_dir(str(assignment)).is_dir()

    def library(self, kind: str, assignment: str) -> dict[str, dict]:
        """An assignment's "mistakes" or "alternatives" library (empty when it has none)."""
        if kind not in ("mistakes", "alternatives"):
            raise ValueError(f"unknown library {kind!r}")
        path = self.grading_dir(assignment) / f"{kind}.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}

    def grading_package(self, assignment: str) -> types.ModuleType:
        """The assignment's grading folder as a package, so its modules import each other
        relatively. Its namespace offers `public_module(name)`: the course's own copy of a
        public helper module, never a student's."""
        name = f"{self._module_prefix}.{assignment}"
        if name in sys.modules:
            return sys.modules[name]
        if self._module_prefix not in sys.modules:
            root_package = types.ModuleType(self._module_prefix, f"grading content of {self}")
            root_package.__path__ = []
            sys.modules[self._module_prefix] = root_package
        folder = self.grading_dir(assignment)
        init = folder / "__init__.py"
        spec = importlib.util.spec_from_file_location(
            name, init if init.exists() else None, submodule_search_locations=[str(folder)]
        )
        if spec is None or not folder.is_dir():
            raise CourseNotFound(f"{self} has no grading content for {assignment!r} ({folder})")
        package = importlib.util.module_from_spec(spec)
        vars(package).update(
            course=self, assignment=assignment, public_module=functools.partial(self.public_module, assignment)
        )
        sys.modules[name] = package
        if spec.loader is not None:
            spec.loader.exec_module(package)
        return package

    def grading_module(self, assignment: str, module: str) -> types.ModuleType:
        """A module of the assignment's grading content (e.g. "test_questions", "reference")."""
        self.grading_package(assignment)
        name = f"{self._module_prefix}.{assignment}.{module}"
        if name in sys.modules:
            return sys.modules[name]
        path = self.grading_dir(assignment) / f"{module}.py"
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None or not path.exists():
            raise CourseNotFound(f"{self} has no grading module {assignment}/{module} ({path})")
        loaded = importlib.util.module_from_spec(spec)
        sys.modules[name] = loaded
        try:
            spec.loader.exec_module(loaded)
        except BaseException:
            del sys.modules[name]
            raise
        return loaded

    def public_module(self, assignment: str, module: str) -> types.ModuleType:
        """Import `source/<assignment>/<module>.py`: the course's own copy, never a student's."""
        name = f"{self._module_prefix}_public.{assignment}.{module}"
        if name in sys.modules:
            return sys.modules[name]
        path = self.source / assignment / f"{module}.py"
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None or not path.exists():
            raise CourseNotFound(f"{self} has no public module {path}")
        loaded = importlib.util.module_from_spec(spec)
        sys.modules[name] = loaded
        spec.loader.exec_module(loaded)
        return loaded

    def release_notebook(self, assignment: str, notebook: str) -> dict:
        """The release notebook as parsed plain data, read once while unchanged (callers copy
        what they change)."""
        from autograder.core import notebook as nbio

        path = self.release / assignment / f"{notebook}.ipynb"
        return _read_cached(str(path), path.stat().st_mtime_ns, nbio.read_course_notebook)

    def variant_settings(self, assignment: str, notebook: str):
        """The variant settings the release notebook carries (core.variants), or None."""
        path = self.release / assignment / f"{notebook}.ipynb"
        return _read_cached(str(path), path.stat().st_mtime_ns, _variant_settings_of)

    @functools.cached_property
    def specs(self):
        """Every notebook's grading spec, from the hidden check modules and the source notebooks."""
        from autograder.core import specs

        return tuple(
            specs.read_spec(
                assignment,
                checks_path,
                self.grading_module(assignment, checks_path.stem),
                source=self.source / assignment,
                helpers_dir=self.release / assignment,
            )
            for assignment in self.assignments()
            for checks_path in sorted(self.grading_dir(assignment).glob("test_*.py"))
        )

    def find_spec(self, assignment: str | None, notebook: str):
        for spec in self.specs:
            if spec.notebook == notebook and (assignment is None or spec.assignment == assignment):
                return spec
        return None


CONTENT_DIR = "course_content"  # in an installed package: a course root (setup.py writes it)


def bundled_course() -> Course | None:
    """The course this package carries: its installed content (a wheel's `autograder/course_content/`),
    else the checkout it runs from (an editable install of a clone); None when it carries neither."""
    package = pathlib.Path(__file__).resolve().parents[1]
    for root in (package / CONTENT_DIR, package.parent):
        if (root / "source").is_dir() and (root / GRADING_DIR).is_dir():
            return Course(root)
    return None


@functools.lru_cache(maxsize=16)
def _read_cached(path: str, mtime_ns: int, read):
    return read(path)


def _variant_settings_of(path: str):
    from autograder.core import notebook as nbio
    from autograder.core import variants

    return variants.settings_of(nbio.read_course_notebook(path))
