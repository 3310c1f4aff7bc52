"""nbgrader configuration of the transformer-circuits course (the course root is this folder).

Autograding keeps nbgrader's pipeline but replaces its Execute step: instead of running the
notebook and its hidden tests in a Jupyter kernel with the grader's rights, the course's
sandboxed grader runs the student's code in isolation, checks the extracted values in its own
process, and writes each part's score and messages into the test cells, from which nbgrader's
SaveAutoGrades reads them as usual.

The grader is the installed `autograder` package (`pip install ".[instructor]"`); it grades the
course nbgrader works on, whose grading content is in autograder/assignments/<assignment>/. To
use these assignments in a course of your own, copy source/<assignment>/ and
autograder/assignments/<assignment>/ there, and these preprocessor settings into its config.
"""

import os

c = get_config()  # noqa: F821 - provided by traitlets when nbgrader loads this file

c.CourseDirectory.root = os.path.dirname(os.path.abspath(__file__))
c.CourseDirectory.course_id = "transformer-circuits"
c.CourseDirectory.ignore = [".ipynb_checkpoints", "*.pyc", "__pycache__", "feedback"]

# A notebook nbgrader cannot parse (cut off while saving, not JSON) would stop that student's
# grading: it is graded as the release notebook instead, every part 0 with the reason shown in
# the autograded notebook (formgrader) and in feedback, as the batch grader does.
c.Autograde.exporter_class = "autograder.nbgrader.preprocessors.TolerantNotebookExporter"
c.Autograde.autograde_preprocessors = [
    "autograder.nbgrader.preprocessors.SandboxedGrading",  # instead of nbgrader.preprocessors.Execute
    "nbgrader.preprocessors.IgnorePattern",
    "nbconvert.preprocessors.ClearMetadataPreprocessor",
    "nbgrader.preprocessors.LimitOutput",
    "nbgrader.preprocessors.SaveAutoGrades",
    "nbgrader.preprocessors.AssignLatePenalties",
    "nbgrader.preprocessors.CheckCellMetadata",
]
# Sanitising starts by replacing whatever nbgrader metadata the student's notebook carries with
# the course's own (and putting back graded cells the student deleted): nbgrader's own steps
# raise on malformed metadata, and a mangled notebook must still be graded by what it defines.
c.Autograde.sanitize_preprocessors = [
    "autograder.nbgrader.preprocessors.RestoreCourseMetadata",
    "nbgrader.preprocessors.ClearOutput",
    "nbgrader.preprocessors.DeduplicateIds",
    "nbgrader.preprocessors.OverwriteKernelspec",
    "nbgrader.preprocessors.OverwriteCells",
    "nbgrader.preprocessors.CheckCellMetadata",
]
# Per-student variants (docs/VARIANTS.md): every student gets their own layout of Exercise 1's
# residual stream, Q6's heads and the induction setting, drawn from their nbgrader student id.
# Off here, so that the committed release/ is the exercise page's own set-up; a course turns it
# on, with a salt of its own, and runs `nbgrader generate_assignment --force` again.
c.StudentVariants.per_student = False
c.StudentVariants.salt = ""
c.GenerateAssignment.preprocessors = [
    "autograder.nbgrader.preprocessors.StudentVariants",  # writes the two settings above in
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
# Feedback pages show each part's checks and score, not the execute_result from which nbgrader's
# SaveAutoGrades reads that score (it would read `Out[1]: 1.0`). `python -m autograder grade` and
# `python -m autograder feedback` write these pages too, in parallel and with a compact stylesheet
# (autograder/nbgrader/feedback.py).
c.GenerateFeedback.preprocessors = [
    "autograder.nbgrader.feedback.HideScoreOutputs",
    "nbgrader.preprocessors.GetGrades",
    "nbconvert.preprocessors.CSSHTMLHeaderPreprocessor",
]
# Submissions are hostile files too. Collecting from the exchange's world-writable inbound folder
# follows no link and copies only regular files; `nbgrader export` writes a CSV that no
# spreadsheet runs as formulas (see autograder/nbgrader/exchange.py and export.py).
c.ExchangeFactory.collect = "autograder.nbgrader.exchange.SafeExchangeCollect"
c.ExportApp.plugin_class = "autograder.nbgrader.export.SafeCsvExportPlugin"
# nbgrader reads and copies a submission itself, following links: before it does, pipes and
# devices named like a notebook leave its list, and links, devices, pipes, hard links, huge
# files and a timestamp.txt that is not a date leave the submission folder for a quarantine
# folder beside it (see autograder/nbgrader/hooks.py).
c.Autograde.pre_convert_hook = "autograder.nbgrader.hooks.guard_submission"

# The pages nbgrader renders (the formgrader, feedback) draw their maths as MathML made on the
# server, so they need no MathJax and no network; the formgrader's grading page shows, beside
# each free-text answer, its model answer and mark scheme from source/ (never any page for
# students). See autograder/nbgrader/maths.py and markscheme.py, and docs/MARKING.md.
from autograder.nbgrader import maths  # noqa: E402 - after get_config(), as nbgrader loads this file

c.HTMLExporter.filters = {"markdown2html": "autograder.nbgrader.maths.MarkdownWithMathML"}
c.HTMLExporter.extra_template_basedirs = maths.template_basedirs()
c.HTMLExporter.preprocessors = [
    "autograder.nbgrader.markscheme.MarkSchemePanels",
    "autograder.nbgrader.inert.InertOutputs",
]
# Student content renders inert (docs/hostile-files.md): every cell's HTML is cleaned after Markdown
# and maths, outputs and raw cells by InertOutputs, and a feedback page as a whole, under a policy
# that runs and loads nothing (autograder/nbgrader/inert.py).
c.GenerateFeedback.exporter_class = "autograder.nbgrader.inert.InertHTMLExporter"
