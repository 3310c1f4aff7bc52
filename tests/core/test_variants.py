"""Per-student variants (issue: every student their own exercise).

Held to: every variant keeps the exercise's maths (over many draws); the default variant is the
exercise page's own set-up; a class of 30 students, each graded under their own id, earns full
marks; every student's answers handed in under another student's id lose points on each varied
part and are flagged; `nbgrader autograde` and the batch grader agree student by student.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from autograder.core import variants
from autograder.core.course import Course
from autograder.dev import classroom
from autograder.nbgrader import release
from tests.builders import REPOSITORY, nbgrader

ASSIGNMENT = "attention_heads"
SALT = "spring-2027"
tc = REPOSITORY.public_module(ASSIGNMENT, "tc_checks")
ref = REPOSITORY.grading_module(ASSIGNMENT, "reference")
IDS = [f"student{number:03d}" for number in range(300)]


# -- every variant keeps the maths --------------------------------------------------------------


def test_without_a_student_id_the_variant_is_the_exercise_pages_own_set_up():
    variant = tc.variant_for(None)
    assert variant == tc.DEFAULT_VARIANT
    layout = variant.layout
    assert layout.content == tuple(range(8)) and layout.head1_reads == (0, 1, 2, 3)
    assert layout.head1_writes == (8, 9, 10, 11) and layout.head2_writes == (12, 13, 14, 15)
    assert tc.my_variant(per_student=False, salt="anything", student_id="ada") == tc.DEFAULT_VARIANT
    np.testing.assert_array_equal(tc.q6_heads()["W_V1"], tc.q6_heads(tc.DEFAULT_VARIANT)["W_V1"])


def test_a_variant_is_drawn_from_the_student_the_assignment_and_the_salt_alone():
    assert tc.variant_for("ada", SALT) == tc.variant_for("ada", SALT)
    assert tc.variant_for("ada", SALT) != tc.variant_for("bob", SALT)
    assert tc.variant_for("ada", SALT) != tc.variant_for("ada", "another term")
    layouts = {tc.variant_for(student, SALT).layout for student in IDS}
    assert len(layouts) == len(IDS)  # 16! / (8! ...) layouts: no two students share one here


@pytest.mark.parametrize("student", IDS)
def test_every_variant_keeps_the_maths_of_exercise_1_and_q6(student):
    variant = tc.variant_for(student, SALT)
    layout = variant.layout
    # the residual stream is split as on the exercise page: 8 content dims, 4 + 4 free
    assert sorted(layout.content + layout.free) == list(range(tc.D_MODEL))
    assert set(layout.head1_reads) <= set(layout.content) and len(set(layout.head1_reads)) == 4
    assert len(set(layout.head1_writes)) == 4 and len(set(layout.head2_writes)) == 4
    P = layout.permutation()
    np.testing.assert_array_equal(P @ P.T, np.eye(tc.D_MODEL))
    # the reference answer in this layout passes every judge, with the exercise's numbers
    s = ref.canonical_virtual_head(layout)
    assert tc.copy_problems_head1(s["W_net1"], layout=layout) == []
    assert tc.copy_problems_head2(s["W_net2"], layout=layout) == []
    assert (
        tc.simulation_problems(
            tc.trace_two_heads(s["W_V1"], s["W_O1"], s["W_V2"], s["W_O2"], layout=layout), layout=layout
        )
        == []
    )
    assert ref.virtual_head_ranks(layout) == {
        "rank_W_net1": 4,
        "rank_W_net2": 4,
        "rank_two_token_copy": 1,
        "rank_one_token_copy": 8,
    }
    counts = ref.virtual_head_capacity(layout)
    assert (counts["previous"], counts["two_back"], counts["written"]) == (7, 1, 8)  # 7/8 and 1/8
    # the exercise page's answer, moved into this layout, is this layout's answer
    page = ref.canonical_virtual_head()
    assert tc.copy_problems_head1(P @ page["W_net1"] @ P.T, layout=layout) == []
    # Q6: head 2 reads two of head 1's directions, with the variant's gains
    answers = ref.q6_answers(variant)
    assert answers["rank"] == 2
    np.testing.assert_allclose(answers["singular_values"][:2], variant.q6.gains, rtol=1e-9)
    assert variant.q6.gains[0] > variant.q6.gains[1] > 0  # a strong and a weak direction
    assert 0 < answers["score"] < 1


def test_the_set_up_cell_shows_and_records_whose_variant_it_is():
    variant = tc.variant_for("ada", SALT)
    data, metadata = variant._repr_mimebundle_()
    assert metadata == {variants.RECORD_KEY: {"assignment": ASSIGNMENT, "student": "ada"}}
    assert "drawn for student 'ada'" in data["text/plain"]
    assert "<svg" in data["text/html"] and "<table>" in data["text/html"]
    for dim in variant.layout.head1_writes:
        assert f">{dim}<" in data["text/html"]  # the picture labels every dim
    data, metadata = tc.DEFAULT_VARIANT._repr_mimebundle_()
    assert metadata[variants.RECORD_KEY]["student"] is None
    assert "exercise page's own set-up" in data["text/plain"]


def test_the_student_is_found_as_nbgrader_finds_them(monkeypatch):
    lib = REPOSITORY.public_module(ASSIGNMENT, "tclib")
    monkeypatch.delenv("AUTOGRADER_STUDENT_ID", raising=False)
    monkeypatch.setenv("JUPYTERHUB_USER", "hub-ada")
    assert lib.find_student_id() == "hub-ada"
    monkeypatch.setenv("AUTOGRADER_STUDENT_ID", "s1234")  # the documented override
    assert lib.find_student_id() == "s1234"
    assert tc.my_variant(per_student=True, salt=SALT) == tc.variant_for("s1234", SALT)


def test_messages_name_the_students_own_dims():
    layout = tc.variant_for("ada", SALT).layout
    s = ref.canonical_virtual_head(layout)
    page = ref.canonical_virtual_head()  # the exercise page's heads: wrong dims for ada
    problems = tc.copy_problems_head1(page["W_net1"], layout=layout)
    assert problems, "the page's head 1 is not ada's"
    text = " ".join(problems)
    assert tc.dims_text(layout.head1_reads) in text or any(f"dim {d}" in text for d in layout.head1_reads)
    assert not tc.copy_problems_head1(s["W_net1"], layout=layout)


# -- the notebooks and the release --------------------------------------------------------------


def test_generate_assignment_writes_the_course_settings_into_the_set_up_cells(variant_class):
    course, _ = variant_class
    for notebook in ("questions", "virtual_head"):
        release_nb = course.release_notebook(ASSIGNMENT, notebook)
        assert variants.settings_of(release_nb) == variants.Settings(True, SALT)
    # the committed release is the exercise page's own set-up
    for notebook in ("questions", "virtual_head"):
        assert variants.settings_of(REPOSITORY.release_notebook(ASSIGNMENT, notebook)) == variants.Settings()


STUDENTS = [f"s{number:02d}" for number in range(30)]  # hand in their own work
COPIERS = [f"c{number:02d}" for number in range(30)]  # c_i hands in s_i's notebooks
NOTEBOOKS = ("questions", "virtual_head")
# The parts whose right answer differs between two students' variants. The others are marked on
# the student's own earlier values (products, compositions, ranks of their own matrices, the
# singular values of their own W_V2_W_O1) or have the same answer in every variant (ranks 4, 4,
# 1, 8 and 2; the fractions 7/8 and 1/8).
VARIED = {
    "virtual_head": {"ex1_head1", "ex1_head2", "ex1_simulation"},
    "questions": {"q6_product", "q6_v_composition"},
}


def _course_with_variants(root) -> Course:
    course = release.copy_course(REPOSITORY, root)
    with open(course.root / "nbgrader_config.py", "a", encoding="utf-8") as config:
        config.write(f"\nc.StudentVariants.per_student = True\nc.StudentVariants.salt = {SALT!r}\n")
    return course


@pytest.fixture(scope="module")
def variant_class(tmp_path_factory):
    """A course with per-student variants, and a class in submitted/: 30 students' own work, and
    30 more who each hand in one of those notebooks as theirs."""
    course = _course_with_variants(tmp_path_factory.mktemp("variants") / "course")
    nbgrader(course.root, "generate_assignment", ASSIGNMENT, "--force")
    course = Course(course.root)
    filled = functools.partial(classroom.filled_notebook, course, ASSIGNMENT)
    worked = {}
    for student in STUDENTS:
        worked[student] = {
            notebook: classroom.as_run_by(
                filled(notebook, classroom.typed_answers(course, ASSIGNMENT, notebook, student, SALT)),
                ASSIGNMENT,
                student,
            )
            for notebook in NOTEBOOKS
        }
        classroom.write_submission(course.root, student, ASSIGNMENT, worked[student])
    for student, copier in zip(STUDENTS, COPIERS):
        classroom.write_submission(course.root, copier, ASSIGNMENT, worked[student])
    return course, worked


def _scores(root, assignment=ASSIGNMENT):
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{root / 'gradebook.db'}", "transformer-circuits") as gradebook:
        return {
            (submission.student.id, notebook.name, grade.name): grade.auto_score
            for submission in gradebook.assignment_submissions(assignment)
            for notebook in submission.notebooks
            for grade in notebook.grades
            if grade.auto_score is not None or not grade.needs_manual_grade
        }


# `nbgrader autograde` grades one notebook at a time, several times slower than the batch grader:
# CI compares a third of the class (ten students and their ten copiers, chosen by nbgrader's own
# --student glob); AUTOGRADER_TEST_WHOLE_CLASS=1 compares all sixty.
AUTOGRADE_GLOB = "*" if os.environ.get("AUTOGRADER_TEST_WHOLE_CLASS") else "[sc]0[0-9]"


@pytest.fixture(scope="module")
def graded_both_ways(variant_class, tmp_path_factory):
    """The class graded by the batch grader and, at the same time in a copy, by `nbgrader autograde`."""
    course, _ = variant_class
    copy = tmp_path_factory.mktemp("autograde") / "course"
    shutil.copytree(course.root, copy, symlinks=True)
    autograde = subprocess.Popen(
        [sys.executable, "-m", "nbgrader", "autograde", ASSIGNMENT, "--force", f"--student={AUTOGRADE_GLOB}"],
        cwd=copy,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    batch = subprocess.run(
        [sys.executable, "-m", "autograder", "grade", "--course", str(course.root), ASSIGNMENT, "--jobs", "2"],
        capture_output=True,
        text=True,
    )
    log = autograde.communicate()[0]
    assert batch.returncode == 0, batch.stderr
    assert autograde.returncode == 0, log[-3000:]
    return _scores(course.root), _scores(copy), batch.stderr


@pytest.mark.slow
def test_each_student_earns_full_marks_under_their_own_id(graded_both_ways):
    by_batch, _, _ = graded_both_ways
    points = {(spec.notebook, part.grade_id): part.points for spec in REPOSITORY.specs for part in spec.auto_parts}
    for student in STUDENTS:
        for (notebook, grade_id), full in points.items():
            if notebook in NOTEBOOKS:
                assert by_batch[(student, notebook, grade_id)] == full, (student, notebook, grade_id)


@pytest.mark.slow
def test_answers_handed_in_under_another_id_lose_points_on_each_varied_part_and_are_flagged(graded_both_ways):
    by_batch, _, stderr = graded_both_ways
    points = {(spec.notebook, part.grade_id): part.points for spec in REPOSITORY.specs for part in spec.auto_parts}
    for copier in COPIERS:
        for notebook, varied in VARIED.items():
            for grade_id in varied:
                assert by_batch[(copier, notebook, grade_id)] < points[(notebook, grade_id)], (copier, grade_id)
    flagged = [line for line in stderr.splitlines() if "shows the variant drawn for" in line]
    assert len(flagged) == len(COPIERS) * len(NOTEBOOKS), stderr[-3000:]
    for student, copier in zip(STUDENTS, COPIERS):
        assert any(line.strip().startswith(f"{copier}/") and f"student '{student}'" in line for line in flagged)
    assert not any(line.strip().startswith(f"{student}/") for student in STUDENTS for line in flagged)


@pytest.mark.slow
def test_nbgrader_autograde_and_the_batch_grader_agree_student_by_student(graded_both_ways):
    by_batch, by_nbgrader, _ = graded_both_ways
    compared = {student for student, _, _ in by_nbgrader}
    assert len(compared) >= 20 and {"s00", "c00"} <= compared
    assert by_nbgrader == {key: score for key, score in by_batch.items() if key[0] in compared}


@pytest.mark.slow
def test_feedback_tells_the_copier_whose_variant_their_notebook_shows(variant_class, graded_both_ways):
    course, _ = variant_class
    autograded = (course.root / "autograded" / COPIERS[0] / ASSIGNMENT / "virtual_head.ipynb").read_text()
    assert f"shows the variant drawn for student '{STUDENTS[0]}'" in autograded
    own = (course.root / "autograded" / STUDENTS[0] / ASSIGNMENT / "virtual_head.ipynb").read_text()
    assert "shows the variant drawn for" not in own
    # feedback shows, beside the messages, the variant the copier was graded against
    nbgrader(course.root, "generate_feedback", ASSIGNMENT, f"--student={COPIERS[0]}", "--force")
    page = (course.root / "feedback" / COPIERS[0] / ASSIGNMENT / "virtual_head.html").read_text()
    assert f"drawn for student &#x27;{COPIERS[0]}&#x27;" in page or f"drawn for student '{COPIERS[0]}'" in page
    assert "residual stream layout" in page  # the picture
    assert "shows the variant drawn for student" in page


def test_self_check_takes_the_recorded_student_or_student(variant_class, tmp_path):
    """`check` grades as the student the notebook recorded, or as --student ID."""
    course, worked = variant_class
    path = tmp_path / "virtual_head.ipynb"
    path.write_text(json.dumps(worked[STUDENTS[1]]["virtual_head"]))
    own = subprocess.run(
        [sys.executable, "-m", "autograder", "check", str(path), "--course", str(course.root)],
        capture_output=True,
        text=True,
    )
    assert own.returncode == 0, own.stdout + own.stderr
    assert f"drawn for student {STUDENTS[1]}" in own.stdout
    other = subprocess.run(
        [
            sys.executable,
            "-m",
            "autograder",
            "check",
            str(path),
            "--course",
            str(course.root),
            "--student",
            STUDENTS[2],
        ],
        capture_output=True,
        text=True,
    )
    assert other.returncode == 1
    assert f"drawn for student '{STUDENTS[1]}'" in other.stdout
    assert "ex1_head1" in other.stdout


def test_one_command_writes_a_students_solutions_which_earn_full_marks_for_them(variant_class, tmp_path):
    course, _ = variant_class
    out = tmp_path / "solutions"
    made = subprocess.run(
        [
            sys.executable,
            "-m",
            "autograder",
            "solution",
            ASSIGNMENT,
            "--student",
            "s07",
            "--course",
            str(course.root),
            "--output",
            str(out),
        ],
        capture_output=True,
        text=True,
    )
    assert made.returncode == 0, made.stderr
    assert sorted(path.name for path in out.glob("*.ipynb")) == ["questions.ipynb", "virtual_head.ipynb"]
    assert "student_id='s07'" in (out / "virtual_head.ipynb").read_text()
    for notebook in ("questions", "virtual_head"):
        checked = subprocess.run(
            [
                sys.executable,
                "-m",
                "autograder",
                "check",
                str(out / f"{notebook}.ipynb"),
                "--course",
                str(course.root),
                "--student",
                "s07",
            ],
            capture_output=True,
            text=True,
        )
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert "drawn for student s07" in checked.stdout


# -- induction_heads, end to end: fewer students (one notebook, the same mechanism) -------------

INDUCTION = "induction_heads"
FEW = 5


@pytest.fixture(scope="module")
def induction_graded(variant_class, tmp_path_factory):
    """Five students' own induction_heads notebooks and five copies handed in by others, graded
    by the batch grader and, in a copy, by `nbgrader autograde`."""
    course, _ = variant_class
    nbgrader(course.root, "generate_assignment", INDUCTION, "--force")
    course = Course(course.root)
    for student, copier in zip(STUDENTS[:FEW], COPIERS[:FEW]):
        answers = classroom.typed_answers(course, INDUCTION, INDUCTION, student, SALT)
        worked = classroom.as_run_by(
            classroom.filled_notebook(course, INDUCTION, INDUCTION, answers), INDUCTION, student
        )
        for who in (student, copier):
            classroom.write_submission(course.root, who, INDUCTION, {INDUCTION: worked})
    copy = tmp_path_factory.mktemp("induction_autograde") / "course"
    shutil.copytree(course.root, copy, symlinks=True)
    batch = subprocess.run(
        [sys.executable, "-m", "autograder", "grade", "--course", str(course.root), INDUCTION, "--jobs", "2"],
        capture_output=True,
        text=True,
    )
    assert batch.returncode == 0, batch.stderr
    nbgrader(copy, "autograde", INDUCTION, "--force")
    return _scores(course.root, INDUCTION), _scores(copy, INDUCTION), batch.stderr


@pytest.mark.slow
def test_induction_heads_is_graded_per_variant_on_both_paths(induction_graded):
    by_batch, by_nbgrader, stderr = induction_graded
    assert by_nbgrader == by_batch
    parts = {
        part.grade_id: part.points
        for spec in REPOSITORY.specs
        if spec.assignment == INDUCTION
        for part in spec.auto_parts
    }
    for student, copier in zip(STUDENTS[:FEW], COPIERS[:FEW]):
        own = {grade_id: by_batch[(student, INDUCTION, grade_id)] for grade_id in parts}
        assert own == parts, student  # full marks under their own id
        copied = sum(by_batch[(copier, INDUCTION, grade_id)] for grade_id in parts)
        assert copied < sum(parts.values()) / 2, (copier, copied)
        assert any(
            line.strip().startswith(f"{copier}/") and f"student '{student}'" in line for line in stderr.splitlines()
        )
