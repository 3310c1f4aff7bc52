"""nbgrader's configuration of a course: what this course adds to it (`configure`), and the
whole of it loaded exactly as nbgrader's own commands load it (`load`).

An nbgrader course takes these assignments with one line in its nbgrader_config.py (written or
printed by `python -m autograder add`): `CONFIG_LINE`. Every step configured there acts only on
the assignments that have this course's grading content (autograder/assignments/<assignment>/ in
the course); the course's other assignments are graded, rendered and exported as stock nbgrader
does (nbgrader's Execute runs them, with its own timeout).

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


CONFIG_LINE = "from autograder.nbgrader.settings import configure; configure(c)"

# nbgrader's autograde steps, with the sandboxed grader where nbgrader's Execute runs. The batch
# grader runs these same lists (batch.Pipeline), with its parallel engine for the grading step
# and one transaction per student for the recording steps (RECORDING_STEPS).
GRADING_STEP = "autograder.nbgrader.preprocessors.SandboxedGrading"
RECORDING_STEPS = ("nbgrader.preprocessors.SaveAutoGrades", "nbgrader.preprocessors.AssignLatePenalties")
AUTOGRADE_STEPS = [
    GRADING_STEP,  # instead of nbgrader.preprocessors.Execute (which it runs for nbgrader's own assignments)
    "nbgrader.preprocessors.IgnorePattern",
    "nbconvert.preprocessors.ClearMetadataPreprocessor",
    "nbgrader.preprocessors.LimitOutput",
    *RECORDING_STEPS,
    "nbgrader.preprocessors.CheckCellMetadata",
]
# Sanitising starts by replacing whatever nbgrader metadata the student's notebook carries with
# the course's own (and putting back graded cells the student deleted): nbgrader's own steps
# raise on malformed metadata, and a mangled notebook must still be graded by what it defines.
SANITIZE_STEPS = [
    "autograder.nbgrader.preprocessors.RestoreCourseMetadata",
    "nbgrader.preprocessors.ClearOutput",
    "nbgrader.preprocessors.DeduplicateIds",
    "nbgrader.preprocessors.OverwriteKernelspec",
    "nbgrader.preprocessors.OverwriteCells",
    "nbgrader.preprocessors.CheckCellMetadata",
]


def configure(c: Config) -> None:
    """Add this course's steps to nbgrader's configuration `c` (a course's nbgrader_config.py
    calls it with its `c`; settings of its own go after the call). Each step leaves every
    assignment without this course's grading content to nbgrader."""
    from autograder.nbgrader import maths

    # A notebook nbgrader cannot parse (cut off while saving, not JSON) would stop that student's
    # grading: it is graded as the release notebook instead, every part 0 with the reason shown.
    c.Autograde.exporter_class = "autograder.nbgrader.preprocessors.TolerantNotebookExporter"
    c.Autograde.autograde_preprocessors = list(AUTOGRADE_STEPS)
    c.Autograde.sanitize_preprocessors = list(SANITIZE_STEPS)
    # nbgrader's generate_assignment steps, after writing the variant settings
    # (c.StudentVariants.per_student and .salt, docs of `python -m autograder docs variants`) in.
    c.GenerateAssignment.preprocessors = [
        "autograder.nbgrader.preprocessors.StudentVariants",
        "nbgrader.preprocessors.IncludeHeaderFooter",
        "nbgrader.preprocessors.InstantiateTests",
        "nbgrader.preprocessors.LockCells",
        "nbgrader.preprocessors.ClearSolutions",
        "nbgrader.preprocessors.ClearOutput",
        "nbgrader.preprocessors.CheckCellMetadata",
        "nbgrader.preprocessors.ComputeChecksums",
        "nbgrader.preprocessors.SaveCells",
        "nbgrader.preprocessors.ClearHiddenTests",
        "nbgrader.preprocessors.ClearMarkScheme",
        "nbgrader.preprocessors.ComputeChecksums",
        "nbgrader.preprocessors.CheckCellMetadata",
    ]
    # Feedback pages show each part's checks and score, not the execute_result from which
    # SaveAutoGrades reads that score (it would read `Out[1]: 1.0`).
    c.GenerateFeedback.preprocessors = [
        "autograder.nbgrader.feedback.HideScoreOutputs",
        "nbgrader.preprocessors.GetGrades",
        "nbconvert.preprocessors.CSSHTMLHeaderPreprocessor",
    ]
    # Submissions are hostile files: collecting follows no link and copies only regular files;
    # `nbgrader export` writes a CSV no spreadsheet runs as formulas; before nbgrader reads a
    # submission, pipes, devices, links and huge files leave it for a quarantine folder.
    c.ExchangeFactory.collect = "autograder.nbgrader.exchange.SafeExchangeCollect"
    c.ExportApp.plugin_class = "autograder.nbgrader.export.SafeCsvExportPlugin"
    c.Autograde.pre_convert_hook = "autograder.nbgrader.hooks.guard_submission"
    # The formgrader and feedback draw maths as MathML made on the server (no MathJax, no
    # network); the formgrader's grading page shows each free-text answer's model answer and
    # mark scheme from source/ (never a page for students).
    c.HTMLExporter.filters = {"markdown2html": "autograder.nbgrader.maths.MarkdownWithMathML"}
    c.HTMLExporter.extra_template_basedirs = maths.template_basedirs()
    c.HTMLExporter.preprocessors = [
        "autograder.nbgrader.markscheme.MarkSchemePanels",
        "autograder.nbgrader.inert.InertOutputs",
    ]
    # Student content renders inert (docs/hostile-files.md): every cell's HTML is cleaned after
    # Markdown and maths, outputs and raw cells by InertOutputs, and a feedback page as a whole,
    # under a policy that runs and loads nothing (autograder/nbgrader/inert.py).
    c.GenerateFeedback.exporter_class = "autograder.nbgrader.inert.InertHTMLExporter"


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
