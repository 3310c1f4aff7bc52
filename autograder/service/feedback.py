"""Feedback for one student's graded submission, released to that student only.

Generation is the renderer the batch grader uses too (autograder.nbgrader.feedback: nbgrader's
own `GenerateFeedback` converter run in-process for one student, autograded/ ->
feedback/<student>/<assignment>/<notebook>.html), and release is nbgrader's own
`ExchangeReleaseFeedback` for that student: it puts each page in the exchange's feedback folder
under md5(submission secret + notebook id), the name `nbgrader fetch_feedback` (and the
Assignment List extension) looks up from the student's own copy of the secret. No other student
can name, hence find, the page.
"""

from __future__ import annotations

import html
import logging
import os
import pathlib

from autograder.nbgrader.feedback import WithholdCheckMessages, converter_config, generate

__all__ = ["WithholdCheckMessages", "generate", "release", "release_notice"]

log = logging.getLogger("autograder.service")

SECRET_LIMIT = 4096


def release(course_config, root: pathlib.Path, assignment: str, student: str) -> None:
    """The student's generated feedback into the exchange, by nbgrader's ExchangeReleaseFeedback."""
    from nbgrader.auth import Authenticator
    from nbgrader.coursedir import CourseDirectory
    from nbgrader.exchange.default import ExchangeReleaseFeedback

    config = converter_config(course_config, root, assignment, student)
    coursedir = CourseDirectory(config=config)
    ExchangeReleaseFeedback(coursedir=coursedir, authenticator=Authenticator(config=config), config=config).start()


def release_notice(
    outbound_feedback: pathlib.Path, secret: str, notebook_ids: list[str], title: str, text: str
) -> None:
    """A short page in place of feedback (e.g. "graded at 14:00"), under the names
    fetch_feedback looks up; real feedback replaces it. Written then renamed, as nbgrader does."""
    from nbgrader.utils import notebook_hash

    outbound_feedback.mkdir(parents=True, exist_ok=True)
    for notebook_id in notebook_ids:
        page = (
            f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head>"
            f"<body><h1>{html.escape(title)}</h1><p>{html.escape(text)}</p></body></html>\n"
        )
        name = notebook_hash(secret=secret, notebook_id=notebook_id)
        temporary = outbound_feedback / f"{name}-tmp.html"
        temporary.write_text(page, encoding="utf-8")
        os.chmod(temporary, 0o644)
        os.replace(temporary, outbound_feedback / f"{name}.html")
