"""Feedback for one student's graded submission, released to that student only.

Generation is nbgrader's own `GenerateFeedback` converter run in-process for one student
(autograded/ -> feedback/<student>/<assignment>/<notebook>.html, with the submission's
timestamp.txt and submission_secret.txt copied along), and release is nbgrader's own
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
import re
import stat

from nbconvert.preprocessors import Preprocessor
from traitlets import default

log = logging.getLogger("autograder.service")

_CHECK_LINE = re.compile(r"^(PASS|FAIL) (\S+ \([^)]*\))")
SECRET_LIMIT = 4096


class WithholdCheckMessages(Preprocessor):
    """Before the due date, if the policy says so: each autograded part's feedback lists which
    checks passed and their points, without the checks' messages and pictures."""

    @default("enabled")
    def _enabled_default(self):
        return True  # nbconvert preprocessors start disabled; this one is only registered when wanted

    def preprocess_cell(self, cell, resources, index):
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            plain = data.get("text/plain", "")
            if output.get("output_type") != "display_data" or not plain.startswith("Autograder, part"):
                continue
            lines = plain.splitlines()
            kept = [lines[0]] + [match.group(0) for line in lines[1:] if (match := _CHECK_LINE.match(line))]
            items = "".join(f"<li>{html.escape(line)}</li>" for line in kept[1:])
            data["text/html"] = (
                f'<div class="tc-grading"><p><b>{html.escape(kept[0])}</b></p><ul>{items}</ul>'
                "<p><i>The checks' messages are shown after the due date.</i></p></div>"
            )
            data["text/plain"] = "\n".join(kept)
        return cell, resources


def _converter_config(course_config, root: pathlib.Path, assignment: str, student: str):
    from traitlets.config import Config

    config = Config()
    config.merge(course_config)
    config.CourseDirectory.root = str(root)
    config.CourseDirectory.assignment_id = assignment
    config.CourseDirectory.student_id = student
    return config


_exporters: dict[tuple, object] = {}


def _feedback_exporter_class():
    from nbconvert.exporters import HTMLExporter, TemplateExporter
    from nbconvert.filters.highlight import Highlight2HTML
    from nbconvert.filters.widgetsdatatypefilter import WidgetsDataTypeFilter

    class FeedbackHTMLExporter(HTMLExporter):
        """nbconvert's HTML exporter without its closing accessibility pass where that pass has
        nothing to do. The pass re-parses the whole page with BeautifulSoup (85% of a feedback
        page's cost, with the checks' SVG pictures) to give <img> tags without alt text one, and
        JupyterLab-template cells a tabindex; a feedback page (nbgrader's classic-based template)
        with no <img> has neither, and then the page is returned as rendered."""

        def from_notebook_node(self, nb, resources=None, **kw):
            language = nb.metadata.get("language_info", {})
            lexer = language.get("pygments_lexer", language.get("name", None))
            self.register_filter(
                "highlight_code", self.filters.get("highlight_code", Highlight2HTML(pygments_lexer=lexer, parent=self))
            )
            resources = self._init_resources(resources)
            self.register_filter(
                "filter_data_type",
                WidgetsDataTypeFilter(notebook_metadata=self._nb_metadata, parent=self, resources=resources),
            )
            page, resources = TemplateExporter.from_notebook_node(self, nb, resources, **kw)
            if "<img" in page or "jp-Cell-inputWrapper" in page or "jp-OutputArea-output" in page:
                return super().from_notebook_node(nb, resources, **kw)  # the pass has work: run it all
            return page, resources

    return FeedbackHTMLExporter


def _feedback_converter_class():
    from nbconvert.writers import FilesWriter
    from nbgrader.converters import GenerateFeedback

    class OneStudentFeedback(GenerateFeedback):
        """GenerateFeedback whose HTML exporter (its compiled templates and registered
        preprocessors, which hold no per-student state) is kept between students: compiling the
        feedback templates afresh cost more than the rest of a submission's feedback."""

        def start(self) -> None:
            self.init_notebooks()
            self.writer = FilesWriter(parent=self, config=self.config)
            key = (self.coursedir.root, tuple(self.preprocessors))
            if key not in _exporters:
                exporter = _feedback_exporter_class()(parent=self, config=self.config)
                for preprocessor in self.preprocessors:
                    exporter.register_preprocessor(preprocessor)
                _exporters[key] = exporter
            self.exporter = _exporters[key]
            here = os.getcwd()
            os.chdir(self.coursedir.root)  # as nbgrader's converters run
            try:
                self.convert_notebooks()
            finally:
                os.chdir(here)

    return OneStudentFeedback


def generate(course_config, root: pathlib.Path, assignment: str, student: str, withhold_messages: bool) -> None:
    """feedback/<student>/<assignment>/*.html from autograded/, by nbgrader's GenerateFeedback."""
    from nbconvert.preprocessors import CSSHTMLHeaderPreprocessor
    from nbgrader.coursedir import CourseDirectory
    from nbgrader.preprocessors import GetGrades

    config = _converter_config(course_config, root, assignment, student)
    coursedir = CourseDirectory(config=config)
    converter = _feedback_converter_class()(coursedir=coursedir, config=config)
    converter.force = True
    if withhold_messages:
        converter.preprocessors = [WithholdCheckMessages, GetGrades, CSSHTMLHeaderPreprocessor]
    converter.start()


def release(course_config, root: pathlib.Path, assignment: str, student: str) -> None:
    """The student's generated feedback into the exchange, by nbgrader's ExchangeReleaseFeedback."""
    from nbgrader.auth import Authenticator
    from nbgrader.coursedir import CourseDirectory
    from nbgrader.exchange.default import ExchangeReleaseFeedback

    config = _converter_config(course_config, root, assignment, student)
    coursedir = CourseDirectory(config=config)
    ExchangeReleaseFeedback(coursedir=coursedir, authenticator=Authenticator(config=config), config=config).start()


def read_secret(submission: pathlib.Path) -> str | None:
    """The submission's submission_secret.txt (nbgrader submit writes one), read without
    following a link and bounded in size; None when there is no usable one."""
    try:
        descriptor = os.open(submission / "submission_secret.txt", os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(descriptor, "rb") as stream:
        if not stat.S_ISREG(os.fstat(stream.fileno()).st_mode):
            return None
        secret = stream.read(SECRET_LIMIT).decode("ascii", errors="replace")
    return secret or None


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
