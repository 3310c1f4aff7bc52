"""Hidden grader of the transformer-circuits course: sandboxed extraction, pytest checks, reports."""

import os
import sysconfig


def _scripts_on_path() -> None:
    """Put this environment's scripts directory on PATH, as activating it would.

    nbgrader opens every gradebook by running `alembic heads` by name (nbgrader.api's
    get_alembic_version), so `.venv/bin/python -m autograder ...` or `make demo` with the
    environment not activated failed in the first Gradebook, and so did every `python -m nbgrader`
    it started. Set here, it holds for this process and everything it starts."""
    scripts = sysconfig.get_path("scripts")
    path = os.environ.get("PATH", "")
    if scripts and scripts not in path.split(os.pathsep):
        os.environ["PATH"] = os.pathsep.join(filter(None, [scripts, path]))


_scripts_on_path()
