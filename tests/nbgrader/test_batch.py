"""The batch grader on the mini course: gradebook, autograded tree, resumability, manual grades."""

import datetime
import json
import shutil
import subprocess
import sys

import pytest

from autograder.cli.main import main
from autograder.core.course import Course
from autograder.dev import classroom
from autograder.nbgrader import batch
from tests.builders.classes import auto_scores, run_batch

pytestmark = pytest.mark.slow


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


def test_the_progress_bar_counts_only_notebooks_that_are_graded(mini_class, capsys):
    classroom.write_submission(mini_class, "fay", "mini", {})  # submitted nothing
    assert run_batch(mini_class) == 0
    err = capsys.readouterr().err
    assert "5/5" in err and "6/6" not in err and "1 not submitted or refused" in err
    assert auto_scores(mini_class)["fay"]["mini_matrix"] == 0


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
    classroom.write_submission(
        mini_class, "bob", "mini", {"mini": classroom.filled_notebook(Course(mini_class), "mini", "mini")}
    )
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
    """An interruption while recording leaves every earlier chunk committed (with its markers) and
    nothing of the interrupted one; the rerun grades exactly what is left."""
    monkeypatch.setattr(batch, "CHUNK_NOTEBOOKS_PER_JOB", 1)  # chunks of two students (two jobs)
    original = batch._record_student
    calls = {"n": 0}

    def interrupted_on_third(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(batch, "_record_student", interrupted_on_third)
    with pytest.raises(KeyboardInterrupt):
        run_batch(mini_class)
    monkeypatch.setattr(batch, "_record_student", original)
    assert len(list((mini_class / batch.MARKERS_DIR).glob("*/mini.json"))) == 2
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{mini_class / 'gradebook.db'}", "transformer-circuits") as gradebook:
        committed = {
            submission.student.id
            for submission in gradebook.assignment_submissions("mini")
            if submission.notebooks[0].grades[0].auto_score is not None
        }
    assert committed == {"ada", "bob"}
    run_batch(mini_class)
    assert len(list((mini_class / batch.MARKERS_DIR).glob("*/mini.json"))) == 5
    assert auto_scores(mini_class)["eve"]["mini_matrix"] == 2


def test_nbgrader_feedback_and_export_work_after_the_batch(mini_class):
    run_batch(mini_class)
    for command in (["generate_feedback", "mini"], ["export"]):
        subprocess.run(
            [sys.executable, "-m", "nbgrader", *command, "--log-level=ERROR"],
            cwd=mini_class,
            check=True,
            capture_output=True,
        )
    feedback = (mini_class / "feedback" / "bob" / "mini" / "mini.html").read_text()
    assert "differs from the identity" in feedback
    # what the grader keeps for reruns is the instructor's, never in what students receive
    assert not [path for folder in ("autograded", "feedback") for path in (mini_class / folder).rglob(".autograder*")]
    assert batch.marker_path(mini_class, "bob", "mini").is_file()
    grades = (mini_class / "grades.csv").read_text()
    assert "ada" in grades and "bob" in grades


def test_unknown_assignment_is_a_usage_error(mini_class, capsys):
    assert main(["grade", "--course", str(mini_class), "nope"]) == 2
    assert "generate_assignment --force nope" in capsys.readouterr().err
    assert not (mini_class / "autograded").exists()  # nothing was graded or written


def test_configuration_is_read_as_nbgrader_reads_it(mini_class, tmp_path, monkeypatch, capsys):
    """Settings in the user's Jupyter config directory (~/.jupyter) apply to the batch grader as
    they do to `nbgrader autograde`: here another gradebook and a late-penalty method."""
    from nbgrader.api import Gradebook

    assert "db_url" not in (mini_class / "nbgrader_config.py").read_text()  # so the user's setting is in force
    user_config = tmp_path / "jupyter_config_dir"
    user_config.mkdir()
    elsewhere = tmp_path / "elsewhere.db"
    shutil.copy(mini_class / "gradebook.db", elsewhere)
    (user_config / "nbgrader_config.py").write_text(
        "c = get_config()\n"
        f"c.CourseDirectory.db_url = 'sqlite:///{elsewhere}'\n"
        "c.LateSubmissionPlugin.penalty_method = 'zero'\n"
    )
    monkeypatch.setenv("JUPYTER_CONFIG_DIR", str(user_config))
    with Gradebook(f"sqlite:///{elsewhere}", "transformer-circuits") as gradebook:
        gradebook.update_or_create_assignment("mini", duedate="2026-11-01 00:00:00 UTC")
    assert run_batch(mini_class) == 0
    err = capsys.readouterr().err
    assert f"gradebook sqlite:///{elsewhere}" in err and "due 2026-11-01 00:00 UTC" in err
    with Gradebook(f"sqlite:///{elsewhere}", "transformer-circuits") as gradebook:
        ada = gradebook.find_submission("mini", "ada")
        assert ada.score == 4 and ada.late_submission_penalty == 4  # 'zero': a late submission scores 0
    with Gradebook(f"sqlite:///{mini_class / 'gradebook.db'}", "transformer-circuits") as gradebook:
        assert gradebook.assignment_submissions("mini") == []  # nothing graded into the course's own file


def test_a_rerun_after_a_due_date_or_extension_change_updates_the_late_penalty(mini_class, capsys):
    """The due date, the student's extension and the penalty settings decide whether a grade is
    current: after each changes, a rerun regrades and the late penalty follows."""
    from nbgrader.api import Gradebook

    url = f"sqlite:///{mini_class / 'gradebook.db'}"
    with open(mini_class / "nbgrader_config.py", "a") as stream:
        stream.write("\nc.LateSubmissionPlugin.penalty_method = 'zero'\n")

    def penalty(student="ada"):
        with Gradebook(url, "transformer-circuits") as gradebook:
            return gradebook.find_submission("mini", student).late_submission_penalty

    with Gradebook(url, "transformer-circuits") as gradebook:
        gradebook.update_or_create_assignment("mini", duedate="2026-11-01 00:00:00 UTC")
    assert run_batch(mini_class) == 0
    assert penalty() == 4  # 'zero': a late submission scores 0
    with Gradebook(url, "transformer-circuits") as gradebook:
        gradebook.update_or_create_assignment("mini", duedate="2099-01-01 00:00:00 UTC")
    capsys.readouterr()
    assert run_batch(mini_class) == 0
    assert "0 to grade" not in capsys.readouterr().err
    assert not penalty()
    with Gradebook(url, "transformer-circuits") as gradebook:
        gradebook.update_or_create_assignment("mini", duedate="2026-11-01 00:00:00 UTC")
    assert run_batch(mini_class) == 0 and penalty() == 4
    with Gradebook(url, "transformer-circuits") as gradebook:
        gradebook.update_or_create_submission("mini", "ada", extension=datetime.timedelta(days=365 * 80))
    capsys.readouterr()
    assert run_batch(mini_class) == 0
    assert "1 to grade" in capsys.readouterr().err  # ada alone: the others' policy is unchanged
    assert not penalty() and penalty("bob") == 2
    with open(mini_class / "nbgrader_config.py", "a") as stream:
        stream.write("c.LateSubmissionPlugin.penalty_method = 'none'\n")
    capsys.readouterr()
    assert run_batch(mini_class) == 0
    assert "0 to grade" not in capsys.readouterr().err and not penalty("bob")  # the settings changed


def test_a_second_grader_is_turned_away_while_the_first_runs(mini_class, capsys):
    """Two graders started together (a cron job and an instructor): the second says who holds
    the assignment and exits 2 without touching anything; once the first is done, a rerun works."""
    first = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import sys, time\n"
                "from autograder.nbgrader.lock import GraderLock\n"
                f"with GraderLock('sqlite:///{mini_class / 'gradebook.db'}', 'transformer-circuits', 'mini'):\n"
                "    print('locked', flush=True)\n"
                "    sys.stdin.readline()\n"
            ),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert first.stdout.readline().strip() == "locked"
        assert run_batch(mini_class) == 2
        err = capsys.readouterr().err
        assert "another grader is running for 'mini'" in err and f"pid {first.pid}" in err
        assert not (mini_class / "autograded").exists()
    finally:
        first.communicate("done\n", timeout=30)
    assert run_batch(mini_class) == 0
    assert auto_scores(mini_class)["ada"]["mini_matrix"] == 2


def test_a_grader_killed_with_sigkill_leaves_no_lock_behind(mini_class):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import time\n"
                "from autograder.nbgrader.lock import GraderLock\n"
                f"with GraderLock('sqlite:///{mini_class / 'gradebook.db'}', 'transformer-circuits', 'mini'):\n"
                "    print('locked', flush=True)\n"
                "    time.sleep(600)\n"
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "locked"
    holder.kill()
    holder.wait()
    assert run_batch(mini_class) == 0


def test_the_score_table_says_what_the_gradebook_holds(mini_class):
    """Scores, totals, late penalties, parts left to grade by hand and flags, read at once, are
    what nbgrader's own attributes give one by one."""
    from nbgrader.api import Gradebook

    with open(mini_class / "nbgrader_config.py", "a") as stream:
        stream.write("\nc.LateSubmissionPlugin.penalty_method = 'zero'\n")
    database = f"sqlite:///{mini_class / 'gradebook.db'}"
    with Gradebook(database, "transformer-circuits") as gradebook:
        gradebook.update_or_create_assignment("mini", duedate="2026-11-01 00:00:00 UTC")
    assert run_batch(mini_class) == 0
    with Gradebook(database, "transformer-circuits") as gradebook:
        gradebook.find_submission_notebook("mini", "mini", "bob").flagged = True
        gradebook.db.commit()
        one_by_one = batch.format_score_table("mini", ["mini"], gradebook.assignment_submissions("mini"))
    table = batch.score_table(Course(mini_class), "mini")
    assert table == one_by_one
    lines = {line.split()[0]: line.split()[1:] for line in table.splitlines()[3:]}
    assert lines["ada"] == ["4/5", "4/5", "manual", "late", "-4"]  # 'zero': the penalty takes the whole score
    assert lines["bob"] == ["2/5", "2/5", "manual", "late", "-2", "flagged"]
    assert lines["cy"] == ["0/5", "0/5"] and len(lines) == 5
