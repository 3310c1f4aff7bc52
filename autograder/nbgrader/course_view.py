"""One view of an nbgrader course: its gradebook, its folders by nbgrader's own layout rules, and
the key naming one student's notebook.

nbgrader lays a course out by `CourseDirectory.directory_structure` (default
`{nbgrader_step}/{student_id}/{assignment_id}`) and the folder name of each step
(`submitted_directory`, `autograded_directory`, `feedback_directory`, ...), all configurable;
`CourseDirectory.format_path` applies them. Every path of a course folder is asked of a
`CourseView` (built from a CourseDirectory, or from the course's nbgrader configuration by
`CourseView.load`), so a course with its own folder names is graded where nbgrader grades it.
The gradebook is opened by it too: its URL and the course id always go together.

A `SubmissionKey` (student, assignment, notebook) names one student's notebook in reports and
logs, as `student/assignment/notebook`. The student part is chosen by whoever submits: a key
parsed from text is refused unless its student is an acceptable id (core.names).
"""

from __future__ import annotations

import functools
import glob
import os
import pathlib
import re
from typing import NamedTuple

from autograder.core import names as student_ids
from autograder.core.course import Course
from autograder.nbgrader import settings


class SubmissionKey(NamedTuple):
    """One notebook of one student's submission of an assignment."""

    student: str
    assignment: str
    notebook: str

    def __str__(self) -> str:
        return f"{self.student}/{self.assignment}/{self.notebook}"

    @classmethod
    def parse(cls, text: str) -> SubmissionKey:
        """The key whose text form is `text` (ValueError, with the reason, for anything else)."""
        parts = text.split("/")
        if len(parts) != 3 or not all(parts):
            raise ValueError(f"not student/assignment/notebook: {student_ids.shown(text)}")
        refusal = student_ids.refusal(parts[0])
        if refusal:
            raise ValueError(f"{student_ids.shown(text)}: {refusal}")
        return cls(*parts)


class CourseView:
    """An nbgrader course as nbgrader sees it: gradebook sessions and every course folder."""

    def __init__(self, coursedir, loaded: settings.CourseSettings | None = None):
        self.coursedir = coursedir  # nbgrader's CourseDirectory (root, layout, gradebook URL, course id)
        self.root = pathlib.Path(coursedir.root)  # absolute and normalised (nbgrader's validator)
        self._loaded = loaded

    @functools.cached_property
    def settings(self) -> settings.CourseSettings:
        """The course's nbgrader configuration (read when first asked: a view that only names
        folders never needs it)."""
        return self._loaded or settings.CourseSettings(
            config=self.coursedir.config, db_url=self.coursedir.db_url, course_id=self.coursedir.course_id
        )

    @classmethod
    def load(cls, course: Course) -> CourseView:
        """The view of `course` under its whole nbgrader configuration (settings.load)."""
        from nbgrader.coursedir import CourseDirectory

        loaded = settings.load(course)
        coursedir = CourseDirectory(config=loaded.config)
        coursedir.root = str(course.root)
        return cls(coursedir, loaded)

    @property
    def config(self):
        return self.settings.config

    @property
    def db_url(self) -> str:
        return self.coursedir.db_url

    @property
    def course_id(self) -> str:
        return self.coursedir.course_id

    def gradebook(self):
        """A session of the course's gradebook (`with view.gradebook() as gradebook:`)."""
        from nbgrader.api import Gradebook

        return Gradebook(self.db_url, self.course_id)

    # -- folders -------------------------------------------------------------------------------
    def folder(self, step: str, student: str, assignment: str) -> pathlib.Path:
        """The folder of `step` (a CourseDirectory folder name) for a student's assignment."""
        return pathlib.Path(self.coursedir.format_path(step, student, assignment))

    def source(self, assignment: str) -> pathlib.Path:
        return self.folder(self.coursedir.source_directory, ".", assignment)

    def release(self, assignment: str) -> pathlib.Path:
        return self.folder(self.coursedir.release_directory, ".", assignment)

    def submitted(self, student: str, assignment: str) -> pathlib.Path:
        return self.folder(self.coursedir.submitted_directory, student, assignment)

    def autograded(self, student: str, assignment: str) -> pathlib.Path:
        return self.folder(self.coursedir.autograded_directory, student, assignment)

    def feedback(self, student: str, assignment: str) -> pathlib.Path:
        return self.folder(self.coursedir.feedback_directory, student, assignment)

    def step_root(self, step: str) -> pathlib.Path:
        """Where a step's tree starts (`<root>/feedback` in nbgrader's default layout), for messages."""
        layout = self.folder(step, "{student_id}", "{assignment_id}")
        path = self.root if layout.is_relative_to(self.root) else pathlib.Path(layout.anchor)
        for part in layout.relative_to(path).parts:
            if "{" in part:
                break
            path = path / part
        return path

    def students_in(self, step: str, assignment: str) -> list[tuple[str, pathlib.Path]]:
        """(student, folder) of every student's folder of `assignment` in `step`, sorted by
        folder: the folder names found, as found (their ids are judged by the caller)."""
        pattern = os.path.relpath(self.folder(step, "*", glob.escape(assignment)), self.root)
        matcher = re.compile(self.coursedir.format_path(step, "(?P<student>[^/]+)", re.escape(assignment), escape=True))
        found = []
        for folder in sorted(self.root.glob(pattern)):
            match = matcher.fullmatch(str(folder))
            if match is not None:
                found.append((match["student"], folder))
        return found
