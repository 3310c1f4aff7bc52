"""Give a submitted notebook the course's own structure back, as grading sees it.

One function for every grading path: the nbgrader steps (`RestoreCourseMetadata`, used by
`nbgrader autograde`, the batch grader and the service) and the self-check (`autograder check`)
all call `restore_course_cells`, so a self-learner who typed answers into a locked cell gets the
verdict grading gives, never more.
"""

from __future__ import annotations

import json

from nbformat import from_dict


def _copy(cell: dict):
    return from_dict(json.loads(json.dumps(cell)))


def _grade_id(cell) -> str | None:
    meta = cell.get("metadata") if isinstance(cell, dict) else None
    nbgrader = meta.get("nbgrader") if isinstance(meta, dict) else None
    grade_id = nbgrader.get("grade_id") if isinstance(nbgrader, dict) else None
    return grade_id if isinstance(grade_id, str) else None


def restore_course_cells(nb: dict, release: dict) -> None:
    """Make a submitted notebook's nbgrader structure the release's, in place.

    Every cell carrying a grade_id of this notebook gets the release cell's nbgrader metadata
    (only the first such cell keeps it) and, where the release cell is locked, its cell type and
    source (the whole cell); every other cell loses any nbgrader metadata; graded cells the
    student deleted are put back from the release, after the cell that precedes them there; the
    kernelspec is the release's. Student metadata therefore never reaches nbgrader's steps, which
    raise on malformed metadata, and a mangled notebook is still graded by what its code defines.
    (What nbgrader's OverwriteCells and OverwriteKernelspec then check finds nothing left to change.)
    """
    cells = release["cells"]
    order = {grade_id: position for position, cell in enumerate(cells) if (grade_id := _grade_id(cell))}
    seen: set[str] = set()
    submitted = nb["cells"]
    for index, cell in enumerate(submitted):
        meta = cell.get("metadata")
        if not isinstance(meta, dict):
            cell["metadata"] = meta = {}
        claimed = meta.pop("nbgrader", None)
        grade_id = claimed.get("grade_id") if isinstance(claimed, dict) else None
        if not (isinstance(grade_id, str) and grade_id in order and grade_id not in seen):
            continue
        seen.add(grade_id)
        original = cells[order[grade_id]]
        if original["metadata"]["nbgrader"].get("locked"):
            submitted[index] = _copy(original)
        else:
            meta["nbgrader"] = json.loads(json.dumps(original["metadata"]["nbgrader"]))
    for grade_id, position in sorted(order.items(), key=lambda item: item[1]):
        meta = cells[position]["metadata"]["nbgrader"]
        if grade_id in seen or not (meta.get("grade") or meta.get("solution")):
            continue
        earlier = [i for i, cell in enumerate(submitted) if order.get(_grade_id(cell) or "", len(cells)) < position]
        submitted.insert(earlier[-1] + 1 if earlier else 0, _copy(cells[position]))
        seen.add(grade_id)
    if "kernelspec" in release.get("metadata", {}):
        nb.setdefault("metadata", {})["kernelspec"] = json.loads(json.dumps(release["metadata"]["kernelspec"]))
