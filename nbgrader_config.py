"""nbgrader configuration of the transformer-circuits course (the course root is this folder).

The course's own settings are the three lines below; everything the grader adds to nbgrader
(the sandboxed grading step in nbgrader's autograde pipeline, the guards on submissions, maths
and mark-scheme panels in the formgrader) is one call, `configure(c)`, the same line that
`python -m autograder add` puts into another course's configuration (see
autograder/nbgrader/settings.py for what it sets and why). Settings that follow it override it.
"""

import os

c = get_config()  # noqa: F821 - provided by traitlets when nbgrader loads this file

c.CourseDirectory.root = os.path.dirname(os.path.abspath(__file__))
c.CourseDirectory.course_id = "transformer-circuits"
c.CourseDirectory.ignore = [".ipynb_checkpoints", "*.pyc", "__pycache__", "feedback"]

from autograder.nbgrader.settings import configure  # noqa: E402 - after get_config(), as nbgrader loads this file

configure(c)

# Per-student variants (`python -m autograder docs variants`): every student gets their own
# layout of Exercise 1's residual stream, Q6's heads and the induction setting, drawn from their
# nbgrader student id. Off here, so that the committed release/ is the exercise page's own set-up;
# a course turns it on, with a salt of its own, and runs `nbgrader generate_assignment --force` again.
c.StudentVariants.per_student = False
c.StudentVariants.salt = ""
