"""Reading notebooks as Jupyter reads them, and recognising renamed ones by their structure.

A notebook Jupyter opens is never "unreadable": what nbformat repairs (cells without ids, duplicate
ids, missing outputs) is repaired, what it merely warns about is read, and only what it cannot
show as cells is refused, with the reason. A renamed notebook is known by the nbgrader ids and
the locked cells of its release before anything else, and code given by a release's locked
cells never counts as the student's.
"""

import json

import pytest

from autograder.core import engine
from autograder.core import notebook as nbio
from autograder.dev import classroom
from tests.builders import REPOSITORY


def _release(notebook: str) -> dict:
    return classroom.release_notebook(REPOSITORY, "attention_heads", notebook)


def test_a_cell_without_an_id_is_repaired_as_nbformat_repairs_it():
    notebook = classroom.filled_notebook(REPOSITORY, "attention_heads", "virtual_head")
    assert notebook["nbformat_minor"] >= 5
    del notebook["cells"][3]["id"]  # a cell added by a tool that predates cell ids
    notebook["cells"][4]["id"] = notebook["cells"][5]["id"]  # and a duplicate
    del notebook["cells"][6]["outputs"]
    read = nbio.parse_notebook(json.dumps(notebook))
    ids = [cell["id"] for cell in read["cells"]]
    assert len(ids) == len(set(ids)) and all(ids)
    assert read["cells"][6]["outputs"] == []


@pytest.mark.parametrize("minor", [0, 1, 2, 3, 4, 5])
def test_every_4x_minor_is_read(minor):
    notebook = {
        "nbformat": 4,
        "nbformat_minor": minor,
        "metadata": {},
        "cells": [{"cell_type": "code", "metadata": {}, "source": "W = 1", "outputs": [], "execution_count": None}],
    }
    assert nbio.parse_notebook(json.dumps(notebook))["cells"][0]["source"] == "W = 1"


def test_a_notebook_jupyter_opens_with_a_warning_is_read():
    """Unknown fields fail the schema; nbformat logs that and Jupyter opens the notebook anyway."""
    notebook = {
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {},
        "cells": [
            {
                "cell_type": "code",
                "id": "a",
                "metadata": {},
                "source": ["W = ", "1"],
                "outputs": [],
                "execution_count": None,
                "added_by_some_tool": True,
            }
        ],
    }
    assert nbio.parse_notebook(json.dumps(notebook))["cells"][0]["source"] == "W = 1"


def test_what_jupyter_cannot_show_is_refused_with_the_reason():
    notebook = {
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {},
        "cells": [{"cell_type": "code", "id": "a", "metadata": {}, "source": 42, "outputs": []}],
    }
    with pytest.raises(nbio.UnreadableNotebook, match="cell 1 is not a notebook cell Jupyter can show"):
        nbio.parse_notebook(json.dumps(notebook))


def _identify(notebook, name):
    spec = engine.identify(REPOSITORY, notebook, name, None)
    return spec.key if spec else None


@pytest.mark.parametrize(
    "name", ["questions (1).ipynb", "questions-copy.ipynb", "Untitled.ipynb", "virtual_head.ipynb"]
)
def test_a_renamed_nearly_blank_notebook_is_known_by_its_structure(name):
    """Even saved under the other notebook's name: its cells say what it is."""
    assert _identify(_release("questions"), name) == "attention_heads/questions"
    assert (
        _identify(_release("virtual_head"), name.replace("questions", "virtual_head")) == "attention_heads/virtual_head"
    )


def test_without_nbgrader_metadata_the_locked_cells_still_say_which_notebook_it_is():
    notebook = _release("questions")
    for cell in notebook["cells"]:
        cell["metadata"].pop("nbgrader", None)
    assert _identify(notebook, "pasted.ipynb") == "attention_heads/questions"


def test_names_assigned_by_given_cells_never_count_as_the_students():
    """Q6's given cell assigns W_V1, W_O1, W_V2, W_O2, the names virtual_head asks for: a
    notebook holding only that cell and the student's own Q2 is still the questions notebook,
    and the given cell alone recognises nothing by name."""
    given = [
        cell
        for cell in _release("questions")["cells"]
        if cell.get("metadata", {}).get("nbgrader", {}).get("locked") and "W_V1" in "".join(cell["source"])
    ]
    assert given, "the questions release gives the Q6 heads in a locked cell"
    bare = {"cells": [{**cell, "metadata": {}} for cell in given]}
    assert _identify(bare, "Untitled.ipynb") == "attention_heads/questions"  # by structure
    virtual_locked = next(
        cell
        for cell in _release("virtual_head")["cells"]
        if cell.get("metadata", {}).get("nbgrader", {}).get("locked") and cell["cell_type"] == "code"
    )
    tied = {"cells": bare["cells"] + [{**virtual_locked, "metadata": {}}]}  # one locked cell of each
    assert _identify(tied, "Untitled.ipynb") is None  # the given W_V1 ... do not make it virtual_head
    own = {"cells": [{"cell_type": "code", "metadata": {}, "source": "W_V1 = 1\nW_O1 = 2\nW_net1 = 3\n"}]}
    assert _identify(own, "Untitled.ipynb") == "attention_heads/virtual_head"  # the student's own code
