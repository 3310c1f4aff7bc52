"""Hooks of nbgrader's converters (configured in nbgrader_config.py); light to import.

`nbgrader autograde` opens every `submitted/<student>/<assignment>/*.ipynb` it finds with a plain
open(), following links: a named pipe there blocks it forever, a link to /dev/zero fills its
memory, and one such file stops the whole class. Its pre-convert hook runs after the list of a
student's notebooks is made and before any is read, and is handed that very list; entries that
are not regular files (after links), or are over the size limit, are taken out of it, so nbgrader
grades them as not submitted (0) and logs why. Links to regular files stay: the sanitising step
(nbgrader_bridge.RestoreCourseMetadata) grades them 0 with the reason in the notebook.
"""
from __future__ import annotations

import logging
import os
import stat

from autograder.notebook import MAX_NOTEBOOK_BYTES, quote


def drop_unreadable_notebooks(assignment=None, student=None, notebooks=None, **_) -> None:
    """nbgrader's Autograde.pre_convert_hook: remove notebooks nbgrader must not open (in place)."""
    log = logging.getLogger("autograder")
    for path in list(notebooks or []):
        try:
            info = os.stat(path)  # following links: what nbgrader's open() would read
        except OSError as error:
            reason = f"it cannot be read ({error.strerror})"
        else:
            if not stat.S_ISREG(info.st_mode):
                reason = "it is not a regular file (a folder, a pipe, a device, or a link to one)"
            elif info.st_size > MAX_NOTEBOOK_BYTES:
                reason = f"it is {info.st_size} bytes, over the {MAX_NOTEBOOK_BYTES >> 20} MiB limit"
            else:
                continue
        notebooks.remove(path)
        log.warning("not grading %s: %s; it scores as not submitted", quote(path, 500), reason)
