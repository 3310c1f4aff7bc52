"""The batch grader on the mini course: gradebook, autograded tree, resumability, manual grades."""
import json
import shutil
import subprocess
import sys

import pytest

from autograder import batch, classroom, course, sandbox
from autograder.cli import build_parser

pytestmark = pytest.mark.slow


@pytest.fixture
def mini_class(mini_course, tmp_path):
    """A fresh copy of the mini course with the assignment generated and five submissions."""
    root = tmp_path / "course"
    root.mkdir()
    for name in ("source", "release", "nbgrader_config.py", "autograder"):
        target = mini_course / name
        if target.is_symlink():
            (root / name).symlink_to(target.resolve())
        elif target.is_dir():
            shutil.copytree(target, root / name)
        else:
            shutil.copy(target, root / name)
    subprocess.run([sys.executable, "-m", "nbgrader", "generate_assignment", "mini", "--force", "--log-level=ERROR"],
                   cwd=root, check=True, capture_output=True)
    full = classroom.filled_notebook("mini", "mini", root=root)
    classroom.write_submission(root, "ada", "mini", {"mini": full})
    classroom.write_submission(root, "bob", "mini", {"mini": classroom.filled_notebook(
        "mini", "mini", {"mini_matrix_answer": "W = [[2, 0], [0, 2]]"}, root=root)})
    classroom.write_submission(root, "cy", "mini", {"mini": classroom.filled_notebook("mini", "mini", blank=True, root=root)})
    folder = classroom.write_submission(root, "dee", "mini", {})
    (folder / "mini.ipynb").write_text("{ not json")
    folder = classroom.write_submission(root, "eve", "mini", {})
    (folder / "my work (final).ipynb").write_text(json.dumps(full))
    return root


def run_batch(root, *extra):
    args = build_parser().parse_args(["grade", "--course", str(root), "mini", "--jobs", "2", *extra])
    return batch.main(args, sandbox.Limits(cell_seconds=5, total_seconds=30))


def auto_scores(root):
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{root / 'gradebook.db'}", "transformer-circuits") as gradebook:
        return {
            submission.student.id: {grade.name: grade.score for grade in submission.notebooks[0].grades}
            for submission in gradebook.assignment_submissions("mini")
        }


def test_class_is_graded_into_the_gradebook_and_autograded_tree(mini_class):
    assert run_batch(mini_class) == 0
    scores = auto_scores(mini_class)
    assert scores["ada"] == {"mini_matrix": 2, "mini_function": 2, "mini_why": 0}
    assert scores["bob"]["mini_matrix"] == 0 and scores["bob"]["mini_function"] == 2
    assert scores["cy"] == {"mini_matrix": 0, "mini_function": 0, "mini_why": 0}
    assert scores["dee"] == {"mini_matrix": 0, "mini_function": 0, "mini_why": 0}
    assert scores["eve"]["mini_matrix"] == 2, "a renamed notebook is graded by its content"
    graded = json.loads((mini_class / "autograded" / "bob" / "mini" / "mini.ipynb").read_text())
    outputs = [o for cell in graded["cells"] for o in cell.get("outputs", [])]
    assert any("differs from the identity" in json.dumps(o) for o in outputs)


def test_rerun_grades_nothing_and_force_regrades_with_the_same_scores(mini_class, capsys):
    run_batch(mini_class)
    first = auto_scores(mini_class)
    capsys.readouterr()
    run_batch(mini_class)
    assert "0 to grade" in capsys.readouterr().err
    run_batch(mini_class, "--force")
    assert auto_scores(mini_class) == first


def test_changed_submission_is_regraded(mini_class, capsys):
    run_batch(mini_class)
    classroom.write_submission(mini_class, "bob", "mini", {"mini": classroom.filled_notebook("mini", "mini", root=mini_class)})
    capsys.readouterr()
    run_batch(mini_class)
    assert "1 to grade" in capsys.readouterr().err
    assert auto_scores(mini_class)["bob"]["mini_matrix"] == 2


def test_manual_grades_survive_regrading(mini_class):
    from nbgrader.api import Gradebook

    run_batch(mini_class)
    with Gradebook(f"sqlite:///{mini_class / 'gradebook.db'}", "transformer-circuits") as gradebook:
        grade = gradebook.find_grade("mini_why", "mini", "mini", "ada")
        grade.manual_score = 1
        gradebook.db.commit()
    run_batch(mini_class, "--force")
    assert auto_scores(mini_class)["ada"]["mini_why"] == 1


def test_interrupted_batch_loses_nothing(mini_class, monkeypatch):
    """A crash while recording one student leaves earlier students committed and a rerun completes."""
    original = batch._record_student
    calls = {"n": 0}

    def crash_on_third(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(batch, "_record_student", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        run_batch(mini_class)
    monkeypatch.setattr(batch, "_record_student", original)
    markers = list((mini_class / "autograded").glob(f"*/mini/{batch.MARKER}"))
    assert len(markers) == 2
    run_batch(mini_class)
    assert len(list((mini_class / "autograded").glob(f"*/mini/{batch.MARKER}"))) == 5
    assert auto_scores(mini_class)["ada"]["mini_matrix"] == 2


def test_nbgrader_feedback_and_export_work_after_the_batch(mini_class):
    run_batch(mini_class)
    for command in (["generate_feedback", "mini"], ["export"]):
        subprocess.run([sys.executable, "-m", "nbgrader", *command, "--log-level=ERROR"],
                       cwd=mini_class, check=True, capture_output=True)
    feedback = (mini_class / "feedback" / "bob" / "mini" / "mini.html").read_text()
    assert "differs from the identity" in feedback
    grades = (mini_class / "grades.csv").read_text()
    assert "ada" in grades and "bob" in grades


def test_unknown_assignment_is_a_usage_error(mini_class, capsys):
    from autograder.cli import main

    assert main(["grade", "--course", str(mini_class), "nope"]) == 2
    assert "generate_assignment nope" in capsys.readouterr().err
    assert course.COURSE_ROOT.exists()
