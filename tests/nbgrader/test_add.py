"""`python -m autograder add` and `docs` from this checkout, and panels only where a mark scheme is
(tests/nbgrader/test_course_add.py does the same from an installed wheel, with a whole term)."""

import json

from autograder.cli.main import main
from autograder.nbgrader import markscheme
from autograder.nbgrader.settings import CONFIG_LINE
from tests.builders import REPOSITORY


def test_add_copies_real_files_keeps_the_instructors_and_adds_one_line(tmp_path, capsys):
    root = tmp_path / "course"
    root.mkdir()
    (root / "nbgrader_config.py").write_text('c = get_config()\nc.CourseDirectory.course_id = "mine"\n')
    assert main(["add", "--course", str(root), "attention_heads"]) == 0
    assert CONFIG_LINE in capsys.readouterr().out
    copied = sorted(path.relative_to(root) for path in root.rglob("*") if path.is_file())
    assert not [path for path in root.rglob("*") if path.is_symlink()]
    assert (root / "source" / "attention_heads" / "tclib.py").read_bytes() == (
        REPOSITORY.source / "common" / "tclib.py"
    ).read_bytes()
    assert not (root / "source" / "induction_heads").exists()  # only the assignment named
    assert (root / "autograder" / "assignments" / "attention_heads" / "test_virtual_head.py").is_file()
    # again: nothing to do, the line is not added twice
    assert main(["add", "--course", str(root), "attention_heads"]) == 0
    assert (root / "nbgrader_config.py").read_text().count(CONFIG_LINE) == 1
    assert sorted(path.relative_to(root) for path in root.rglob("*") if path.is_file()) == copied
    # a file of the instructor's that differs is kept without --force
    mine = root / "autograder" / "assignments" / "attention_heads" / "mistakes.json"
    mine.write_text("{}")
    assert main(["add", "--course", str(root)]) == 2
    assert "mistakes.json" in capsys.readouterr().err
    assert mine.read_text() == "{}" and not (root / "source" / "induction_heads").exists()  # nothing written
    assert main(["add", "--course", str(root), "--force"]) == 0
    assert mine.read_text() == (REPOSITORY.grading_dir("attention_heads") / "mistakes.json").read_text()
    assert (root / "source" / "induction_heads" / "induction_heads.ipynb").is_file()


def test_add_names_unknown_assignments_and_missing_courses(tmp_path, capsys):
    assert main(["add", "--course", str(tmp_path), "ps1"]) == 2
    assert "no assignment 'ps1'" in capsys.readouterr().err
    assert main(["add", "--course", str(tmp_path / "nowhere")]) == 2


def test_docs_prints_the_documents_the_grader_cites(capsys):
    assert main(["docs", "deployment"]) == 0
    assert capsys.readouterr().out == (REPOSITORY.root / "docs" / "DEPLOYMENT.md").read_text()
    assert main(["docs"]) == 0
    assert "marking" in capsys.readouterr().out


def test_a_whole_cell_markdown_solution_is_the_model_answer():
    cell = {
        "cell_type": "markdown",
        "metadata": {"nbgrader": {"grade": True, "solution": True, "grade_id": "explain", "points": 1}},
        "source": "$\\sum_{i=1}^n i^2$",
    }
    scheme = markscheme.scheme_of(cell)
    assert scheme is not None and scheme.model_answer == "$\\sum_{i=1}^n i^2$" and scheme.scheme == ""


def _formgrader_page(root, notebook: dict) -> str:
    """`notebook` rendered as the formgrader's grading page, with the course's configuration."""
    from nbconvert.exporters import HTMLExporter
    from traitlets.config import Config
    from traitlets.config.loader import PyFileConfigLoader

    (root / "source" / "a").mkdir(parents=True)
    (root / "source" / "a" / "n.ipynb").write_text(json.dumps(notebook))
    config = Config()
    config.merge(PyFileConfigLoader("nbgrader_config.py", path=str(REPOSITORY.root)).load_config())
    config.CourseDirectory.root = str(root)
    config.HTMLExporter.template_name = "formgrade"
    resources = {"assignment_id": "a", "notebook_id": "n", "submission_id": "x", "base_url": "", "index": 0, "total": 1}
    page, _ = HTMLExporter(config=config).from_filename(str(root / "source" / "a" / "n.ipynb"), resources=resources)
    return page


def test_a_notebook_without_a_mark_scheme_gets_no_panel(tmp_path):
    answer = {
        "cell_type": "markdown",
        "metadata": {"nbgrader": {"grade": True, "solution": True, "grade_id": "explain", "points": 1}},
        "source": "It doubles $x$.",
        "id": "explain",
    }
    notebook = {"cells": [answer], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    page = _formgrader_page(tmp_path / "theirs", notebook)
    assert markscheme.PANEL_CLASS not in page and "No model answer" not in page
    schemed = json.loads(json.dumps(answer))
    schemed["metadata"]["nbgrader"]["grade_id"] = schemed["id"] = "schemed"
    schemed["source"] = "### BEGIN SOLUTION\nA head.\nMark scheme:\n* 1: says head\n### END SOLUTION"
    notebook["cells"].append(schemed)
    page = _formgrader_page(tmp_path / "ours", notebook)
    assert page.count(f'class="panel panel-info {markscheme.PANEL_CLASS}"') == 2
    assert "It doubles" in page.split(markscheme.PANEL_CLASS, 1)[1]  # the whole cell, as its model answer
