"""One SQLAlchemy engine per gradebook URL in the grading service's long-running processes.

nbgrader's `Gradebook` creates a new engine each time it is opened, and the service (and its
feedback process) opens several per submission: the batch grader's steps, nbgrader's GetGrades
for each feedback page, the due dates and extensions the policy reads. Each new engine brings a
new dialect, and the ORM mappers' compiled-statement caches keep every dialect they compiled for
(until pushed out of their LRU), with its compiled inserts and updates: in a process that runs
for days, memory creeps by about 190 KB per chunk graded, and each engine costs its creation.
With `share_gradebook_engines()` a Gradebook opened on a URL seen before reuses that URL's
engine. `Gradebook.close()` still disposes it, which only closes its idle pooled connections
(SQLAlchemy replaces the pool; connections in use elsewhere finish normally), so nothing
nbgrader relies on changes.
"""

from __future__ import annotations

import threading

_lock = threading.Lock()
_engines: dict[tuple, object] = {}


def share_gradebook_engines() -> None:
    """Make nbgrader's Gradebook reuse one engine per database URL in this process (idempotent)."""
    import nbgrader.api

    create = nbgrader.api.create_engine
    if getattr(create, "shares_engines", False):
        return

    def shared_engine(url, **options):
        key = (str(url), tuple(sorted(options.items())))
        with _lock:
            engine = _engines.get(key)
            if engine is None:
                engine = _engines[key] = create(url, **options)
            return engine

    shared_engine.shares_engines = True  # type: ignore[attr-defined]
    nbgrader.api.create_engine = shared_engine
