"""nbgrader's configuration of a course, loaded exactly as nbgrader's own commands load it.

nbgrader reads `jupyter_config` and `nbgrader_config` from every Jupyter config directory
(`~/.jupyter`, the environment's, the system's: `jupyter --paths`), then the course root's
`nbgrader_config.py`, later files overriding earlier ones. The batch grader must see the same
settings (late-penalty plugin, gradebook URL, course id, exchange) as `nbgrader autograde`
would, or the two grade the same class differently.
"""

from __future__ import annotations

import dataclasses
import logging

from traitlets.config import Config

from autograder.core.course import Course


@dataclasses.dataclass(frozen=True)
class CourseSettings:
    """What a grading run needs from the configuration."""

    config: Config  # the merged configuration
    db_url: str
    course_id: str


def load(course: Course) -> CourseSettings:
    """The course's nbgrader configuration, as `nbgrader <command>` run at the course root loads it."""
    from nbgrader.apps.baseapp import NbGrader

    class _Loader(NbGrader):
        load_cwd_config = False  # the course root's file is loaded explicitly, wherever we run from

        def init_syspath(self) -> None:  # nbgrader puts the working directory on sys.path; we need nothing
            pass

        def init_logging(self, *args, **kwargs) -> None:
            pass

    # WARNING would say "No nbgrader_config.py file found" whenever the user has none of their
    # own, although the course's is loaded right after; errors in config files still show.
    app = _Loader(log_level=logging.ERROR)
    app.initialize([], root=str(course.root))
    coursedir = app.coursedir
    return CourseSettings(config=app.config, db_url=coursedir.db_url, course_id=coursedir.course_id)


def describe(settings: CourseSettings) -> str:
    """The gradebook a run writes to, for the first lines of every run (no password shown)."""
    url = settings.db_url
    if "://" in url and "@" in url.split("://", 1)[1]:
        scheme, rest = url.split("://", 1)
        credentials, host = rest.rsplit("@", 1)
        user = credentials.split(":", 1)[0]
        url = f"{scheme}://{user}{':***' if ':' in credentials else ''}@{host}"
    return f"gradebook {url} (course id {settings.course_id})"
