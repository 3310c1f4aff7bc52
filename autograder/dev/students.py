"""Simulated students on a real nbgrader exchange, for the grading service's tests and benchmark.

Each student has a working directory (their Jupyter root) and a cache (nbgrader keeps each
submission's secret there, which is how fetch_feedback finds the feedback meant for them). Two
ways to act as a student, both nbgrader's own code:
  * `cli(...)`: the real command line, `python -m nbgrader fetch_assignment|submit|fetch_feedback`
    with `--student` and `--Exchange.root/cache/assignment_dir`, in a subprocess;
  * `submit(...)`, `fetch_assignment(...)`, `fetch_feedback(...)`: the same exchange classes
    that command line runs, called in-process (what a burst of hundreds of submissions needs:
    an nbgrader process start costs seconds of CPU).
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import subprocess
import sys


@dataclasses.dataclass(frozen=True)
class Student:
    name: str
    home: pathlib.Path  # working directory: fetched assignments, and fetched feedback under <assignment>/feedback/
    exchange: pathlib.Path
    course_id: str

    @property
    def cache(self) -> pathlib.Path:
        return self.home / ".nbgrader_cache"

    def options(self) -> list[str]:
        return [
            f"--course={self.course_id}",
            f"--student={self.name}",
            f"--Exchange.root={self.exchange}",
            f"--Exchange.cache={self.cache}",
            f"--Exchange.assignment_dir={self.home}",
        ]

    def cli(self, command: str, assignment: str, env: dict | None = None) -> subprocess.Popen:
        """Start `nbgrader COMMAND ASSIGNMENT` as this student (returns the running process)."""
        environment = dict(os.environ if env is None else env, JUPYTERHUB_USER=self.name)
        return subprocess.Popen(
            [sys.executable, "-m", "nbgrader", command, assignment, *self.options()],
            cwd=self.home,
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    # -- in-process: nbgrader's exchange classes, as the command line configures them ----------
    def _run(self, exchange_class, assignment: str):
        from nbgrader.auth import Authenticator
        from nbgrader.coursedir import CourseDirectory
        from traitlets.config import Config

        config = Config()
        config.CourseDirectory.course_id = self.course_id
        config.CourseDirectory.student_id = self.name
        config.CourseDirectory.assignment_id = assignment
        config.Exchange.root = str(self.exchange)
        config.Exchange.cache = str(self.cache)
        config.Exchange.assignment_dir = str(self.home)
        coursedir = CourseDirectory(config=config)
        action = exchange_class(coursedir=coursedir, authenticator=Authenticator(config=config), config=config)
        return action.start()

    def fetch_assignment(self, assignment: str) -> None:
        from nbgrader.exchange.default import ExchangeFetchAssignment

        self._run(ExchangeFetchAssignment, assignment)

    def submit(self, assignment: str) -> None:
        from nbgrader.exchange.default import ExchangeSubmit

        self._run(ExchangeSubmit, assignment)

    def fetch_feedback(self, assignment: str) -> None:
        from nbgrader.exchange.default import ExchangeFetchFeedback

        self._run(ExchangeFetchFeedback, assignment)

    # -- the student's files ------------------------------------------------------------------
    def write_notebook(self, assignment: str, notebook_id: str, notebook: dict) -> None:
        path = self.home / assignment / f"{notebook_id}.ipynb"
        path.write_text(json.dumps(notebook, indent=1), encoding="utf-8")

    def fetched_feedback(self, assignment: str) -> dict[str, dict[str, str]]:
        """timestamp -> notebook id -> feedback HTML, as fetch_feedback left them."""
        folder = self.home / assignment / "feedback"
        pages: dict[str, dict[str, str]] = {}
        for page in sorted(folder.glob("*/*.html")):
            pages.setdefault(page.parent.name, {})[page.stem] = page.read_text(encoding="utf-8")
        return pages

    def last_submission(self, assignment: str) -> pathlib.Path | None:
        """The newest submission of `assignment` in this student's cache (where its secret is)."""
        found = sorted(self.cache.glob(f"{self.course_id}/*+{assignment}+*"), key=lambda p: p.name.split("+")[2])
        return found[-1] if found else None

    def feedback_in_exchange(self, assignment: str, notebook_id: str) -> pathlib.Path | None:
        """The exchange's feedback page for this student's newest submission of the notebook
        (what fetch_feedback would fetch), or None while there is none."""
        from nbgrader.utils import notebook_hash

        submission = self.last_submission(assignment)
        if submission is None:
            return None
        secret = (submission / "submission_secret.txt").read_text()
        page = (
            self.exchange
            / self.course_id
            / "feedback"
            / f"{notebook_hash(secret=secret, notebook_id=notebook_id)}.html"
        )
        return page if page.exists() else None


def make_students(names, base: pathlib.Path, exchange: pathlib.Path, course_id: str) -> list[Student]:
    students = []
    for name in names:
        home = base / name
        home.mkdir(parents=True, exist_ok=True)
        students.append(Student(name, home, exchange, course_id))
    return students
