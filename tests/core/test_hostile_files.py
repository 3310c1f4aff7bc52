"""Hostile files, not only hostile code: links, odd files, parse bombs and injections (issue 14).

Fast tests of each defence first; the batch on a class of hostile submissions, and the
property-based fuzzing of the reader, build one class per module and are marked slow.
"""

import contextlib
import csv
import json
import os
import pathlib
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from nbgrader.coursedir import CourseDirectory

from autograder.core import notebook as nbio
from autograder.core import safe_files
from autograder.core.course import Course
from autograder.dev import classroom
from autograder.nbgrader import release
from autograder.nbgrader.course_view import CourseView, SubmissionKey
from tests.builders import REPOSITORY, classes


def _notebook(*sources, cell_type="code"):
    return {
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {},
        "cells": [
            {
                "cell_type": cell_type,
                "id": f"c{i}",
                "metadata": {},
                "source": source,
                **({"outputs": [], "execution_count": None} if cell_type == "code" else {}),
            }
            for i, source in enumerate(sources)
        ],
    }


@pytest.fixture
def good_notebook(tmp_path):
    path = tmp_path / "work.ipynb"
    path.write_text(json.dumps(_notebook("W = 1")))
    return path


# -- 1. only regular files opened by the grader, without following links ----------------------


@pytest.mark.parametrize(
    "make, word",
    [
        (lambda target, path: path.symlink_to(target), "symbolic link"),
        (lambda target, path: os.link(target, path), "hard link"),
        (lambda target, path: os.mkfifo(path), "named pipe"),
        (lambda target, path: path.mkdir(), "folder"),
        (lambda target, path: path.symlink_to("/dev/zero"), "symbolic link"),
    ],
)
def test_notebook_that_is_not_a_regular_file_of_its_own_is_refused(good_notebook, make, word):
    path = good_notebook.parent / "mini.ipynb"
    make(good_notebook, path)
    with pytest.raises(nbio.UnreadableNotebook, match=word):
        nbio.read_notebook(str(path))
    if word != "hard link":  # (a hard link gives the original a second name too)
        assert nbio.read_notebook(str(good_notebook))["cells"][0]["source"] == "W = 1"


def test_sparse_huge_notebook_is_refused_before_reading(tmp_path):
    path = tmp_path / "mini.ipynb"
    with open(path, "wb") as stream:
        stream.truncate(1 << 40)  # a terabyte that occupies nothing
    with pytest.raises(nbio.UnreadableNotebook, match="over the 100 MiB limit"):
        nbio.read_notebook(str(path))


def test_folder_on_the_way_that_is_a_link_is_refused(tmp_path, good_notebook):
    root = tmp_path / "course"
    (root / "submitted" / "ada").mkdir(parents=True)
    (root / "submitted" / "ada" / "mini").symlink_to(good_notebook.parent)
    with pytest.raises(nbio.UnreadableNotebook, match="not a real folder"):
        nbio.read_notebook(str(root / "submitted" / "ada" / "mini" / "work.ipynb"), root=str(root))


def test_copy_and_fingerprint_follow_no_link_and_read_no_device(tmp_path):
    source, destination = tmp_path / "submitted", tmp_path / "autograded"
    source.mkdir()
    (source / "data.csv").write_text("1,2\n")
    (source / "passwd").symlink_to("/etc/passwd")
    (source / "zero").symlink_to("/dev/zero")
    (source / "solutions").symlink_to(tmp_path)
    os.link(source / "data.csv", tmp_path / "second_name")
    (source / "fifo").parent.mkdir(exist_ok=True)
    os.mkfifo(source / "fifo")
    (source / "own.txt").write_text("mine")
    with open(source / "sparse.bin", "wb") as stream:
        stream.truncate(1 << 40)
    digest = safe_files.fingerprint(source).hexdigest()
    left_out = safe_files.copy_submitted_files(source, destination, skip=lambda relative: False)
    assert sorted(p.name for p in destination.iterdir()) == ["own.txt"]
    assert len(left_out) == 6 and any("hard link" in line for line in left_out)
    (source / "own.txt").write_text("changed")
    assert safe_files.fingerprint(source).hexdigest() != digest


# -- 2. bounded, linear work on student text ---------------------------------------------------


def test_json_bombs_are_refused_with_a_reason():
    bomb = _notebook("W = 1")
    bomb["metadata"]["x"] = [{}] * (nbio.MAX_JSON_CONTAINERS + 1)
    with pytest.raises(nbio.UnreadableNotebook, match="lists and objects"):
        nbio.parse_notebook(json.dumps(bomb))
    with pytest.raises(nbio.UnreadableNotebook, match="not valid notebook JSON"):
        nbio.parse_notebook(
            json.dumps(_notebook("W = 1")).replace('"metadata": {}', '"metadata": {"n": ' + "9" * 5000 + "}", 1)
        )
    # braces inside strings (code) are not containers: the fast path and the exact count agree
    many_braces = _notebook("d = {" + "{}" * (nbio.MAX_JSON_CONTAINERS // 2 + 10) + "}")
    assert nbio.parse_notebook(json.dumps(many_braces))["cells"]


def test_ipython_rewrite_is_bounded_with_a_reason():
    shell_lines = "\n".join("!ls -la /tmp" for _ in range(600))
    rewritten = nbio.to_python(shell_lines)
    assert rewritten.startswith("raise SyntaxError(") and "split it into smaller cells" in rewritten
    assert (
        nbio.to_python("x = 1\n!ls\n%time y = 2")
        == "x = 1\nget_ipython().system('ls')\nget_ipython().run_line_magic('time', 'y = 2')\n"
    )
    budget = [2000]  # what is left of the notebook's budget
    cells = [nbio.to_python("\n".join(["!ls"] * 30), budget) for _ in range(3)]
    assert [cell.startswith("raise SyntaxError(") for cell in cells] == [False, False, True]


def test_name_recognition_keeps_its_meaning():
    source = "# W = 1 commented out\nx, y = 1, 2\nk += 3\nn: int = 4\ndef f(a):\n    z == 1\n"
    assert {"y", "k", "n", "f"} <= nbio.assigned_names(source) and not {"W", "x", "z", "a"} & nbio.assigned_names(
        source
    )
    notebook = _notebook("W = 1", "# k = 3", "def double(x):\n    return 2 * x")
    assert nbio.count_defined(notebook, ["W", "k", "double"]) == 2


def test_student_text_costs_linear_time():
    """Inputs that took minutes to hours (quadratic regexes, per-name rescans, the unbounded
    IPython rewrite) run in a child process that must finish well within a generous budget."""
    script = textwrap.dedent("""
        from autograder.core import engine
        from autograder.core import notebook as nbio
        from autograder.core.course import Course
        from autograder.core.submission import CellReport
        course = Course(".")
        blank = "x = 1" + "\\n" * 100_000 + "#"
        nb = {"cells": [{"cell_type": kind, "source": blank, "metadata": {}} for kind in ("code", "markdown", "raw")] * 5}
        nbio.defined_names(nb)
        engine._missing_hints(nb, ["W", "k", "double"], [CellReport(0, "error", "E")])
        engine.identify(course, nb, "renamed.ipynb", None)
        nbio.cell_label(0, "\\n" * 5_000_000 + "x")
        nbio.to_python("\\n".join(["!ls"] * 600))
        print("done")
    """)
    finished = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=REPOSITORY.root,
    )
    assert finished.stdout.strip() == "done", finished.stderr[-2000:]


# -- 4. escaped for where it is shown; quotes capped -----------------------------------------


def test_submission_strings_are_capped_and_escaped_in_messages():
    from autograder.core.checks import Mistake
    from autograder.core.submission import Submission

    huge = "C" * 8_000_000
    sub = Submission(
        "s", {"W": {"kind": "object", "type": huge}, "E": {"kind": "object", "type": "X\x1b[2J\n  PASS forged (9/9)"}}
    )
    for name in ("W", "E"):
        with pytest.raises(Mistake) as raised:
            sub.array(name)
        message = str(raised.value)
        assert len(message) < 1000 and "\x1b" not in message and "\n" not in message


def test_text_reports_cannot_forge_lines_on_a_terminal():
    from autograder.core import engine
    from autograder.core.runner import CheckResult

    forged = "bad\x1b[1A\r\n  PASS part / check (9/9)\nautograded total: 13/13"
    spec = REPOSITORY.find_spec("attention_heads", "virtual_head")
    part = spec.auto_parts[0]
    report = engine.Report(
        notebook="nb\x1b]0;x\x07.ipynb",
        submission_id="s",
        graded_as=spec.key,
        spec=spec,
        checks=[CheckResult("check", part.grade_id, 0.0, part.points, False, forged)],
    )
    for text in (report.as_text(), report.as_self_check(REPOSITORY.solutions, False)):
        assert "\x1b" not in text and "\r" not in text and "\x07" not in text
        lines = text.splitlines()
        assert not any(line.startswith(("  PASS", "autograded total: 13")) for line in lines)


def test_student_markdown_renders_inert_and_keeps_maths_as_written():
    """Answers are kept as written (nothing rewrites them); what a page makes of them is inert."""
    from autograder.nbgrader import maths

    answer = (
        "Answer $s > t$, $n<1$, `n_ctx >= 1` & a < b <script>alert(1)</script>"
        "<img src=x onerror=alert(2)> [x](javascript:alert(3)) [y](&#106;avascript:alert(4))"
    )
    page = maths.markdown_to_html(answer)
    assert "<script" not in page and "onerror" not in page and "javascript" not in page.lower()
    assert "<mo>&gt;</mo>" in page and "<mo>&lt;</mo>" in page and "n_ctx &gt;= 1" in page and "&amp; a &lt; b" in page


def test_report_html_is_escaped():
    from autograder.core import engine
    from autograder.core.runner import CheckResult

    spec = REPOSITORY.find_spec("attention_heads", "virtual_head")
    part = spec.auto_parts[0]
    report = engine.Report(
        notebook="n",
        submission_id="s",
        spec=spec,
        checks=[CheckResult("c", part.grade_id, 0.0, 1.0, False, "<script>alert(1)</script>")],
    )
    body = report.part(part.grade_id).as_html()
    assert "<script>" not in body and "&lt;script&gt;" in body
    report.checks[0].message = "C" * 8_000_000
    block = report.part(part.grade_id)
    body, plain = block.as_html(), block.as_text()
    assert len(body) < 10_000 and len(plain) < 10_000


def test_grades_csv_has_no_formulas_and_one_row_per_student(tmp_path):
    from nbgrader.api import Gradebook

    from autograder.nbgrader.export import SafeCsvExportPlugin

    ids = ['=HYPERLINK("http://x","y")', "a,b\nc", "+1 cmd", "@SUM(A1)", "\tx", "plain"]
    with Gradebook(f"sqlite:///{tmp_path / 'gradebook.db'}") as gradebook:
        gradebook.add_assignment("mini")
        for student in ids:
            gradebook.add_student(student, first_name="-2+3", last_name=student)
        plugin = SafeCsvExportPlugin(to=str(tmp_path / "grades.csv"))
        plugin.export(gradebook)
    with open(tmp_path / "grades.csv", newline="", encoding="utf-8") as stream:
        rows = list(csv.reader(stream))
    assert len(rows) == 1 + len(ids) and all(len(row) == 11 for row in rows)
    cells = [cell for row in rows[1:] for cell in row]
    assert not any(cell.startswith(("=", "+", "-", "@", "\t", "\r")) for cell in cells)
    assert {row[3] for row in rows[1:]} == {"'" + i if i[0] in "=+@\t" else i for i in ids}


# -- the exchange -----------------------------------------------------------------------------


def test_collect_refuses_links_and_non_regular_files(tmp_path):
    from nbgrader.coursedir import CourseDirectory

    from autograder.nbgrader.exchange import SafeExchangeCollect

    collector = SafeExchangeCollect(coursedir=CourseDirectory(root=str(tmp_path)))
    secret = tmp_path / "solutions"
    secret.mkdir()
    (secret / "mini.ipynb").write_text("the instructor's")
    inbound = tmp_path / "inbound"
    planted = inbound / "ada+mini+2026-11-28 09:00:00.000000 UTC"
    planted.mkdir(parents=True)
    (planted / "mini.ipynb").symlink_to(secret / "mini.ipynb")
    os.link(secret / "mini.ipynb", planted / "copy.ipynb")
    os.mkfifo(planted / "pipe")
    (planted / "timestamp.txt").write_text("2026-11-28 09:00:00.000000 UTC")
    (planted / "sub").symlink_to(secret)
    collector.do_copy(str(planted), str(tmp_path / "submitted" / "ada" / "mini"))
    assert sorted(p.name for p in (tmp_path / "submitted" / "ada" / "mini").iterdir()) == ["timestamp.txt"]
    linked = inbound / "bob+mini+2026-11-28 09:00:00.000000 UTC"
    linked.symlink_to(secret)
    collector.do_copy(str(linked), str(tmp_path / "submitted" / "bob" / "mini"))
    assert not (tmp_path / "submitted" / "bob").exists()


@pytest.mark.slow
def test_nbgrader_collect_as_configured_takes_no_planted_link(tmp_path):
    root, exchange, secret = tmp_path / "course", tmp_path / "exchange", tmp_path / "secret"
    inbound = exchange / "transformer-circuits" / "inbound"
    for folder in (root, inbound, secret):
        folder.mkdir(parents=True)
    (secret / "mini.ipynb").write_text("the instructor's")
    shutil.copy(REPOSITORY.root / "nbgrader_config.py", root / "nbgrader_config.py")
    (inbound / "ada+mini+2026-11-28 09:00:00.000000 UTC+a").symlink_to(secret)
    bob = inbound / "bob+mini+2026-11-28 09:00:00.000000 UTC+b"
    bob.mkdir()
    (bob / "mini.ipynb").symlink_to(secret / "mini.ipynb")
    (bob / "timestamp.txt").write_text("2026-11-28 09:00:00.000000 UTC")
    (bob / "notes.txt").write_text("own work")
    finished = subprocess.run(
        [
            sys.executable,
            "-m",
            "nbgrader",
            "collect",
            "mini",
            f"--Exchange.root={exchange}",
            "--ExchangeCollect.check_owner=False",
            "--ExchangeTrust.allow_new_students=True",  # ada and bob are on no roster here
        ],
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    collected = sorted(str(path.relative_to(root / "submitted")) for path in (root / "submitted").rglob("*"))
    assert collected == ["bob", "bob/mini", "bob/mini/notes.txt", "bob/mini/timestamp.txt"], collected
    assert "it is a symbolic link" in finished.stderr  # ada's folder, and bob's mini.ipynb


def test_course_configuration_uses_the_guarded_collect_and_export():
    from autograder.nbgrader import settings

    config = settings.load(REPOSITORY).config
    assert config.ExchangeFactory.collect == "autograder.nbgrader.exchange.SafeExchangeCollect"
    assert config.ExportApp.plugin_class == "autograder.nbgrader.export.SafeCsvExportPlugin"
    assert config.Autograde.pre_convert_hook == "autograder.nbgrader.hooks.guard_submission"


# -- 5. tolerances that a submission cannot inflate ---------------------------------------------


def test_rebasing_a_head_does_not_inflate_the_copy_tolerance():
    tc = REPOSITORY.public_module("attention_heads", "tc_checks")
    d_model, d_head = tc.D_MODEL, tc.D_HEAD
    W_V = np.zeros((d_head, d_model))
    W_O = np.zeros((d_model, d_head))
    for i in range(4):
        W_V[i, i] = 1.0
        W_O[8 + i, i] = 2.0  # gain 2: a wrong copy
    M = np.eye(d_head)
    M[0, 1] = 1e9  # ill-conditioned change of basis: W_O M^-1 M W_V is the same product
    rebased_V, rebased_O = M @ W_V, W_O @ np.linalg.inv(M)
    assert np.allclose(rebased_O @ rebased_V, W_O @ W_V, atol=1e-3)
    tolerance = tc.product_tolerance(rebased_O, rebased_V)
    assert tolerance < 0.01
    assert tc.copy_problems_head1(rebased_O @ rebased_V, tolerance)
    honest = W_O / 2
    assert not tc.copy_problems_head1(honest @ W_V, tc.product_tolerance(honest, W_V))


# -- 1 and 3 on the batch: a class of hostile submissions, and fuzzed notebooks -----------------


@pytest.fixture(scope="module")
def hostile_class(mini_course, tmp_path_factory):
    """The mini course generated by nbgrader, with one honest student and one per attack."""
    root = classes.generate(mini_course, tmp_path_factory.mktemp("hostile") / "course")
    course = Course(root)
    full = classroom.filled_notebook(course, "mini", "mini")
    wrong = classroom.filled_notebook(course, "mini", "mini", {"mini_matrix_answer": "W = [[2, 0], [0, 2]]"})
    classroom.write_submission(root, "ada", "mini", {"mini": full})
    solutions = root / "solutions_mini"
    solutions.mkdir()
    (solutions / "mini.ipynb").write_text(json.dumps(full))
    (solutions / "secret.txt").write_text("the instructor's")
    attacks = {
        "link_to_solution": lambda folder: (folder / "mini.ipynb").symlink_to(solutions / "mini.ipynb"),
        "relative_link": lambda folder: (folder / "mini.ipynb").symlink_to("../../ada/mini/mini.ipynb"),
        "hard_link": lambda folder: os.link(solutions / "mini.ipynb", folder / "mini.ipynb"),
        "fifo": lambda folder: os.mkfifo(folder / "mini.ipynb"),
        "directory": lambda folder: (folder / "mini.ipynb").mkdir(),
        "zero_link": lambda folder: (folder / "mini.ipynb").symlink_to("/dev/zero"),
        "renamed_link": lambda folder: (folder / "my work.ipynb").symlink_to(solutions / "mini.ipynb"),
    }
    for student, plant in attacks.items():
        plant(classroom.write_submission(root, student, "mini", {}))
    beside = classroom.write_submission(root, "beside", "mini", {"mini": wrong})
    (beside / "zero").symlink_to("/dev/zero")
    (beside / "passwd").symlink_to("/etc/passwd")
    (beside / "gradebook.db").symlink_to(root / "gradebook.db")
    with open(beside / "sparse.bin", "wb") as stream:
        stream.truncate(1 << 40)
    (classroom.write_submission(root, "bad_time", "mini", {"mini": wrong}) / "timestamp.txt").write_text("not a date")
    as_string = json.loads(json.dumps(wrong))
    as_list = json.loads(json.dumps(wrong))
    for cell in as_string["cells"]:
        cell["metadata"]["nbgrader"] = "a string"
    for cell in as_list["cells"]:
        if "nbgrader" in cell["metadata"]:
            cell["metadata"]["nbgrader"]["grade_id"] = ["a", "list"]
    classroom.write_submission(root, "meta_string", "mini", {"mini": as_string})
    classroom.write_submission(root, "meta_list", "mini", {"mini": as_list})
    scripted = classroom.filled_notebook(
        course, "mini", "mini", {"mini_why": "Because <script>alert(document.cookie)</script>"}
    )
    classroom.write_submission(root, "scripted", "mini", {"mini": scripted})
    (root / "submitted" / "dir_link").mkdir()
    (root / "submitted" / "dir_link" / "mini").symlink_to(solutions)
    return root


def _gradebook_state(root):
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{root / 'gradebook.db'}", "transformer-circuits") as gradebook:
        return {
            submission.student.id: (
                {grade.name: grade.score for grade in submission.notebooks[0].grades},
                {comment.name: comment.comment for comment in submission.notebooks[0].comments},
            )
            for submission in gradebook.assignment_submissions("mini")
        }


@pytest.mark.slow
def test_batch_grades_every_hostile_submission_with_a_reason_and_copies_nothing_foreign(hostile_class):
    from autograder.cli.main import main

    assert (
        main(["grade", "--course", str(hostile_class), "mini", "--jobs", "2", "--cell-timeout", "5", "--timeout", "30"])
        == 0
    )
    state = _gradebook_state(hostile_class)
    full = sum(state["ada"][0].values())
    assert full == 4  # mini_matrix 2 + mini_function 2 (mini_why is graded by hand)
    for student in ("link_to_solution", "relative_link", "hard_link", "fifo", "directory", "zero_link", "dir_link"):
        scores, comments = state[student]
        assert not any(scores.values()), student
        assert any("is not graded" in (comment or "") for comment in comments.values()), (student, comments)
    assert not any(state["renamed_link"][0].values())  # a link is not taken for a renamed notebook
    for student in ("beside", "bad_time", "meta_string", "meta_list"):
        scores, _ = state[student]
        assert scores["mini_matrix"] == 0 and scores["mini_function"] == 2, (student, scores)
    # the answer is kept as written; the feedback page that shows it runs nothing (issue 21.4)
    scripted = (hostile_class / "autograded" / "scripted" / "mini" / "mini.ipynb").read_text()
    assert "Because <script>alert(document.cookie)</script>" in scripted
    page = (hostile_class / "feedback" / "scripted" / "mini" / "mini.html").read_text()
    assert "Because" in page and "<script" not in page and "alert(document.cookie)" not in page
    autograded = hostile_class / "autograded"
    for path in autograded.rglob("*"):
        assert not path.is_symlink() and (not path.is_file() or os.lstat(path).st_nlink == 1), path
        assert path.name not in ("zero", "passwd", "gradebook.db", "sparse.bin", "secret.txt"), path


@pytest.mark.slow
def test_fuzzed_notebooks_each_get_a_reason_and_leave_the_others_alone(hostile_class, tmp_path_factory):
    """Property: whatever is done to a notebook's JSON structure, reading and preparing it gives
    that notebook a sanitised notebook or a reason, never an exception, and the honest student
    in the same chunk is prepared as before."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from autograder.core import engine
    from autograder.nbgrader import batch
    from autograder.sandbox.supervisor import RunResult

    root = hostile_class
    course = Course(root)
    honest = json.loads((root / "submitted" / "ada" / "mini" / "mini.ipynb").read_text())
    json_values = st.recursive(
        st.none() | st.booleans() | st.integers(-(10**30), 10**30) | st.floats(allow_nan=False) | st.text(max_size=20),
        lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
        max_leaves=12,
    )

    def paths(value, prefix=()):
        yield prefix
        if isinstance(value, dict):
            for key, child in value.items():
                yield from paths(child, (*prefix, key))
        elif isinstance(value, list):
            for index, child in enumerate(value):
                yield from paths(child, (*prefix, index))

    gradebook = f"sqlite:///{root / 'gradebook.db'}"
    view = CourseView(CourseDirectory(root=str(root), db_url=gradebook, course_id="transformer-circuits"))
    pipeline = batch.Pipeline(course, view, "mini")  # nbgrader's default steps: no configuration

    class Progress:
        def update(self, count):
            pass

    def no_sandbox(cells, names, helpers, make_probes, limits, isolation, environment=None):
        return RunResult(isolation="none", cells=[{"index": i, "status": "ok"} for i, _ in cells])

    @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def check(data):
        mutated = json.loads(json.dumps(honest))
        for _ in range(data.draw(st.integers(1, 3))):
            where = data.draw(st.sampled_from(list(paths(mutated))[1:]))
            *parents, last = where
            holder = mutated
            for key in parents:
                holder = holder[key]
            action = data.draw(st.sampled_from(["replace", "delete"]))
            if action == "delete":
                del holder[last]
            else:
                holder[last] = data.draw(json_values)
            if not isinstance(mutated, dict):
                break
        folder = classroom.write_submission(root, "fuzzed", "mini", {})
        (folder / "mini.ipynb").write_text(json.dumps(mutated))
        work = batch.find_work(course, "mini", ["mini"], ["ada", "fuzzed"])
        prepared, requests = pipeline.prepare(work, Progress())
        assert set(prepared) == {SubmissionKey("ada", "mini", "mini"), SubmissionKey("fuzzed", "mini", "mini")}
        assert prepared[SubmissionKey("ada", "mini", "mini")].notebook is not None
        state = prepared[SubmissionKey("fuzzed", "mini", "mini")]
        assert (state.notebook is None and state.reason) or hasattr(state.notebook, "cells")
        for request in requests:
            report, _ = engine.extract(course, request, None, "none", runner=no_sandbox)
            assert report.error is None or isinstance(report.error, str)

    with contextlib.redirect_stderr(open(os.devnull, "w")):
        check()


@pytest.mark.slow
def test_nbgrader_autograde_grades_hostile_notebooks_zero_and_carries_on(tmp_path):
    """`nbgrader autograde` as the course configures it, on the course itself: a notebook that
    is a link or a hard link to the solution scores 0 with the reason in the autograded
    notebook; a pipe named like a notebook is not opened (stock nbgrader blocks on it); links,
    devices, pipes, huge files and a timestamp that is not a date beside the notebooks are
    moved aside before nbgrader copies them (stock nbgrader copies /dev/zero until the disk is
    full, and exits for the whole class on the timestamp)."""
    course = release.copy_course(REPOSITORY, tmp_path / "course")
    root = course.root
    subprocess.run(
        [sys.executable, "-m", "nbgrader", "generate_assignment", "attention_heads", "--force", "--log-level=ERROR"],
        cwd=root,
        check=True,
        capture_output=True,
    )
    solution = root / "stolen" / "virtual_head.ipynb"
    solution.parent.mkdir()
    shutil.copy(REPOSITORY.solutions / "attention_heads" / "virtual_head.ipynb", solution)
    classroom.write_submission(root, "linked", "attention_heads", {})
    (root / "submitted" / "linked" / "attention_heads" / "virtual_head.ipynb").symlink_to(solution)
    classroom.write_submission(root, "hard", "attention_heads", {})
    os.link(solution, root / "submitted" / "hard" / "attention_heads" / "virtual_head.ipynb")
    folder = classroom.write_submission(root, "piped", "attention_heads", {})
    os.mkfifo(folder / "virtual_head.ipynb")
    (folder / "questions.ipynb").write_text(
        json.dumps(classroom.filled_notebook(course, "attention_heads", "questions", blank=True))
    )
    beside = classroom.write_submission(
        root,
        "beside",
        "attention_heads",
        {"questions": classroom.filled_notebook(course, "attention_heads", "questions", blank=True)},
    )
    (beside / "zero").symlink_to("/dev/zero")
    (beside / "passwd").symlink_to("/etc/passwd")
    (beside / "gradebook.db").symlink_to(root / "gradebook.db")
    os.mkfifo(beside / "pipe")
    with open(beside / "sparse.bin", "wb") as stream:
        stream.truncate(1 << 40)
    (beside / "timestamp.txt").write_text("not a date")
    (beside / "notes.txt").write_text("own work")
    finished = subprocess.run(
        [sys.executable, "-m", "nbgrader", "autograde", "attention_heads", "--force"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert "not grading" in finished.stderr
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{root / 'gradebook.db'}", "transformer-circuits") as gradebook:
        for student in ("linked", "hard", "piped", "beside"):
            submission = gradebook.find_submission("attention_heads", student)
            assert submission.score == 0, student
    kept = sorted(path.name for path in (root / "autograded" / "beside" / "attention_heads").iterdir())
    assert "notes.txt" in kept and not {"zero", "passwd", "gradebook.db", "pipe", "sparse.bin"} & set(kept), kept
    moved = sorted(path.name for path in (root / "submitted" / "beside" / ".attention_heads.quarantined").iterdir())
    assert moved == ["gradebook.db", "passwd", "pipe", "sparse.bin", "timestamp.txt", "zero"], moved
    for student, word in (("linked", "symbolic link"), ("hard", "hard link")):
        text = (root / "autograded" / student / "attention_heads" / "virtual_head.ipynb").read_text()
        assert "is not graded" in text and word in text, student


# -- 3 on the command line: odd files each get a report, the others carry on -------------------


def test_cli_reports_every_odd_file_and_carries_on(tmp_path, capsys):
    from autograder.cli.main import main

    (tmp_path / "folder.ipynb").mkdir()
    os.mkfifo(tmp_path / "pipe.ipynb")
    (tmp_path / "zero.ipynb").symlink_to("/dev/zero")
    (tmp_path / "digits.ipynb").write_text(
        '{"nbformat": 4, "nbformat_minor": 5, "metadata": {"n": ' + "7" * 5000 + '}, "cells": []}'
    )
    (tmp_path / "bomb.ipynb").write_text(
        json.dumps({**_notebook("W = 1"), "metadata": {"m": [{}] * (nbio.MAX_JSON_CONTAINERS + 1)}})
    )
    names = ["folder", "pipe", "zero", "digits", "bomb"]
    assert main(["grade", *[str(tmp_path / f"{name}.ipynb") for name in names], "--json"]) == 0
    reports = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [pathlib.Path(report["notebook"]).stem for report in reports] == names
    assert all(report["error"].startswith("unreadable notebook: ") for report in reports)


def test_recognition_ignores_malformed_nbgrader_metadata():
    from autograder.core import engine

    notebook = _notebook("W_net = 1", "x = 2")
    notebook["cells"][0]["metadata"]["nbgrader"] = "a string"
    notebook["cells"][1]["metadata"]["nbgrader"] = {"grade_id": ["a", "list"]}
    notebook["cells"].append({"cell_type": "markdown", "metadata": ["not", "a", "dict"], "source": ""})
    engine.identify(REPOSITORY, notebook, "renamed.ipynb", None)  # no exception: it chooses by what the code defines


@pytest.mark.slow
def test_nbgrader_autograde_copies_nothing_through_a_linked_submission_folder(tmp_path):
    """submitted/<student>/<assignment> itself a link to someone else's files: the pre-convert
    hook moves the link (never its target) aside for an empty folder, so nbgrader copies and
    grades nothing of it (it reports that student as having no notebooks) and the class goes on."""
    course = release.copy_course(REPOSITORY, tmp_path / "course")
    root = course.root
    subprocess.run(
        [sys.executable, "-m", "nbgrader", "generate_assignment", "attention_heads", "--force", "--log-level=ERROR"],
        cwd=root,
        check=True,
        capture_output=True,
    )
    elsewhere = root / "stolen_folder"
    elsewhere.mkdir()
    shutil.copy(REPOSITORY.solutions / "attention_heads" / "virtual_head.ipynb", elsewhere / "virtual_head.ipynb")
    (elsewhere / "secret.txt").write_text("the instructor's")
    (elsewhere / "timestamp.txt").write_text("2026-11-28 09:00:00.000000 UTC")
    (root / "submitted" / "linker").mkdir(parents=True)
    (root / "submitted" / "linker" / "attention_heads").symlink_to(elsewhere)
    classroom.write_submission(
        root,
        "honest",
        "attention_heads",
        {"virtual_head": classroom.filled_notebook(course, "attention_heads", "virtual_head")},
    )
    finished = subprocess.run(
        [sys.executable, "-m", "nbgrader", "autograde", "attention_heads", "--force"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert "the link was moved to" in finished.stderr and "No notebooks found" in finished.stderr
    linked = root / "autograded" / "linker" / "attention_heads"
    assert not linked.exists() or not {"secret.txt", "virtual_head.ipynb"} & {p.name for p in linked.iterdir()}
    assert (root / "submitted" / "linker" / ".attention_heads.quarantined-link").is_symlink()
    assert sorted(p.name for p in elsewhere.iterdir()) == ["secret.txt", "timestamp.txt", "virtual_head.ipynb"]
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{root / 'gradebook.db'}", "transformer-circuits") as gradebook:
        honest = gradebook.find_submission("attention_heads", "honest")
        assert honest.notebooks[[nb.name for nb in honest.notebooks].index("virtual_head")].score == 13
