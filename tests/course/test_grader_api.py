"""The student-side modules declare what the grader uses of them, and public and hidden checks agree.

Every module of `source/` that the grader loads (through its grading package's `public_module`,
or, for the student library, `autograder.student.tclib`) declares `GRADER_API`, the names the grader may use. The grader's files are parsed (never run)
to find every name they take from such a module; the test fails when one is not declared, when
a declared name is gone or unused, or when a grader file could reach a module in a way the
parse cannot follow. Then the same odd answers are staged by the public side (`tclib`) and by
the grader (`Submission`): both must give the same message, since both use the same function.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import pathlib
import sys

import numpy as np
import pytest

from autograder.core.checks import Mistake
from autograder.core.testing import make_submission
from autograder.student import tclib as grader_tclib
from tests.builders import REPOSITORY

PACKAGE = REPOSITORY.root / "autograder"
GRADER_FILES = sorted(REPOSITORY.grading.glob("*/*.py")) + [PACKAGE / "core" / "submission.py"]
PUBLIC_MODULE_NAMES = {path.stem for path in REPOSITORY.source.glob("*/*.py")}
STUDENT_LIBRARY = ("common", "tclib")  # the package's autograder.student.tclib, shipped as source/common/tclib.py


def _loaded_module(node, assignment: str) -> tuple[str, str] | None:
    """("assignment", "module") when `node` is the call public_module("module") in that assignment's
    grading package."""
    if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == "public_module":
        if len(node.args) == 1 and isinstance(node.args[0], ast.Constant):
            return assignment, node.args[0].value
        raise AssertionError(f"public_module called without one literal name: {ast.unparse(node)}")
    return None


class _GraderFile:
    """The names one grader file binds to public modules, and the attributes it takes from them."""

    def __init__(self, path: pathlib.Path, exports: dict[str, dict[str, tuple[str, str]]]):
        self.path = path
        self.assignment = path.parent.name
        self.tree = ast.parse(path.read_text(encoding="utf-8"))
        self.bound: dict[str, tuple[str, str]] = {}  # name -> module, e.g. tc -> tc_checks
        self.imports = self._imported_course_files()
        self.returning: dict[str, tuple[str, str]] = {}  # function returning a public module
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                module = _loaded_module(node.value, self.assignment) or self._through_import(node.value, exports)
                if module:
                    self.bound[node.targets[0].id] = module
            elif isinstance(node, ast.FunctionDef):
                returns = [
                    n for n in ast.walk(node) if isinstance(n, ast.Return) and _loaded_module(n.value, self.assignment)
                ]
                if returns:
                    self.returning[node.name] = _loaded_module(returns[0].value, self.assignment)

    def _imported_course_files(self) -> dict[str, str]:
        """Local name -> stem of a grader file imported relatively (`from . import reference`);
        the grader's own student library (`from autograder.student import tclib`) is bound too."""
        found = {}
        for node in ast.walk(self.tree):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                for alias in node.names:
                    if alias.name != "public_module":
                        found[alias.asname or alias.name] = alias.name
            elif isinstance(node, ast.ImportFrom) and node.module == "autograder.student":
                for alias in node.names:
                    self.bound[alias.asname or alias.name] = STUDENT_LIBRARY
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [alias.name for alias in node.names] + [getattr(node, "module", None) or ""]
                direct = {name.split(".")[-1] for name in names} & PUBLIC_MODULE_NAMES
                assert not direct, f"{self.path.name} imports {direct} by name: it must use the course's copy"
        return found

    def _through_import(self, node, exports):
        """`reference.tools`: a module another grader file bound."""
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in self.imports:
            return exports.get(self.imports[node.value.id], {}).get(node.attr)
        return None

    def module_of(self, node) -> tuple[str, str] | None:
        """The public module an expression stands for, if any (tc, _tclib(), ref.tc)."""
        if isinstance(node, ast.Name):
            return self.bound.get(node.id)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            return self.returning.get(node.func.id)
        return None

    def uses(self, exports) -> dict[tuple[str, str], set[str]]:
        used: dict[tuple[str, str], set[str]] = {}
        as_attribute_base = set()
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Attribute):
                module = self.module_of(node.value) or self._through_import(node.value, exports)
                if module:
                    used.setdefault(module, set()).add(node.attr)
                    as_attribute_base.add(id(node.value))
                    if isinstance(node.value, ast.Attribute):
                        as_attribute_base.add(id(node.value.value))
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Name) and node.id in self.bound and isinstance(node.ctx, ast.Load):
                assert id(node) in as_attribute_base, (
                    f"{self.path.name}:{node.lineno} passes the public module {node.id} on as a value; "
                    "take names from it as attributes so this test can see what the grader uses"
                )
        return used


@functools.cache
def _grader_uses() -> dict[tuple[str, str], dict[str, set[str]]]:
    """(assignment, module) -> name -> the grader files that use it.

    A module linked into several assignments (heatmaps.py) is one file with one declaration, so
    its uses are counted together, under the first (assignment, module) that loads it.
    """
    exports: dict[str, dict[str, tuple[str, str]]] = {}
    files = []
    for path in sorted(GRADER_FILES, key=lambda p: p.stem != "reference"):  # references are imported
        grader_file = _GraderFile(path, exports)
        exports[path.stem] = grader_file.bound
        files.append(grader_file)
    uses: dict[tuple[str, str], dict[str, set[str]]] = {}
    first_by_file: dict[pathlib.Path, tuple[str, str]] = {}
    for grader_file in files:
        for module, names in sorted(grader_file.uses(exports).items()):
            real = (REPOSITORY.source / module[0] / f"{module[1]}.py").resolve()
            first_by_file.setdefault((REPOSITORY.source / "common" / "tclib.py").resolve(), STUDENT_LIBRARY)
            module = first_by_file.setdefault(real, module)
            for name in names:
                uses.setdefault(module, {}).setdefault(name, set()).add(grader_file.path.name)
    return uses


def test_the_parse_finds_what_the_grader_is_known_to_use():
    """Guards the parser itself: a few uses that must be seen, through each way of binding."""
    USES = _grader_uses()
    assert "judge_predictions" in USES[("induction_heads", "induction_tools")]  # tools = reference.tools
    assert "copy_problems_head1" in USES[("attention_heads", "tc_checks")]  # tc = public_module(...)
    assert "stage_array" in USES[STUDENT_LIBRARY]  # tclib.stage_array (submission.py)
    assert "show_head" in USES[("attention_heads", "heatmaps")]  # a local binding
    assert ("induction_heads", "heatmaps") not in USES  # a linked file is counted once


def test_the_grader_uses_only_declared_names():
    """For every public module the grader loads: used = declared, and every declared name exists."""
    uses = _grader_uses()
    assert len(uses) == 4  # tc_checks, induction_tools, tclib, heatmaps
    for module, used in sorted(uses.items()):
        where = f"source/{'/'.join(module)}.py"
        loaded = REPOSITORY.public_module(*module)
        declared = getattr(loaded, "GRADER_API", None)
        assert declared is not None, f"{where} declares no GRADER_API"
        undeclared = {name: sorted(files) for name, files in used.items() if name not in declared}
        assert undeclared == {}, f"the grader uses names that {where} does not declare"
        assert [name for name in declared if not hasattr(loaded, name)] == [], where
        assert sorted(set(declared) - set(used)) == [], f"{where} declares names the grader does not use"


# -- one staging, two sides ---------------------------------------------------------------------

ODD_ARRAYS = [
    None,
    "W_Q",
    print,
    [[1, 2], [3]],
    {"x": 1},
    np.array(["a", "b"]),
    np.array([None, 1]),
    np.eye(3) * (1 + 1j),
    np.eye(3) + 0j,
    np.ones((3, 2)),
    np.ones((2, 3)),
    np.ones(6),
    np.full((2, 3), np.nan),
    [[1.0, np.inf, 0.0], [0.0, 0.0, 0.0]],
    2.5,
    True,
    1 + 2j,
]
ODD_NUMBERS = [None, 2.5, 4.0, float("nan"), float("inf"), np.ones(3), np.array([7.0]), True, "4", 1 + 2j]
ODD_CHOICES = [None, 3, "W_Q, W_K", ["W_Q", "w_k^T"], ["W_Q", "W_X"], {"WQ", "W_O"}, "W_Q and WV", ""]


def _message(function, *args):
    try:
        function(*args)
    except AssertionError as problem:  # Mistake and tclib.InputProblem both are
        return str(problem)
    return None


@pytest.mark.parametrize("index", range(len(ODD_ARRAYS)))
def test_public_and_hidden_checks_stage_an_array_alike(index):
    tclib = REPOSITORY.public_module("common", "tclib")
    value = ODD_ARRAYS[index]
    public = _message(tclib.stage_array, value, "W", (2, 3), ("d_head", "d_model"))
    hidden = _message(make_submission({"W": value}).array, "W", (2, 3), ("d_head", "d_model"))
    assert public == hidden
    assert public or np.shape(value) == (2, 3)


@pytest.mark.parametrize("index", range(len(ODD_NUMBERS)))
def test_public_and_hidden_checks_stage_a_number_alike(index):
    tclib = REPOSITORY.public_module("common", "tclib")
    value = ODD_NUMBERS[index]
    sub = make_submission({"n": value})
    assert _message(tclib.stage_number, value, "n") == _message(sub.number, "n")
    assert _message(tclib.stage_whole_number, value, "n") == _message(sub.integer, "n")


@pytest.mark.parametrize("index", range(len(ODD_CHOICES)))
def test_public_and_hidden_checks_stage_matrix_names_alike(index):
    tclib = REPOSITORY.public_module("common", "tclib")
    value = ODD_CHOICES[index]
    sub = make_submission({"chosen": value})
    public, hidden = tclib.stage_matrix_names, sub.matrix_names
    assert _message(public, value, "chosen") == _message(hidden, "chosen")
    if _message(public, value, "chosen") is None:
        assert public(value, "chosen") == hidden("chosen")


def test_grader_staging_raises_mistakes_with_the_library_wording():
    sub = make_submission({"W": np.ones((3, 2))})
    with pytest.raises(Mistake, match=r"^W should have shape \(2, 3\) \(d_head x d_model\).*That is the transpose"):
        sub.array("W", (2, 3), ("d_head", "d_model"))


def test_the_shipped_student_library_is_the_graders_own():
    """source/common/tclib.py is written from autograder/student/tclib.py by `autograder release`."""
    shipped = REPOSITORY.source / "common" / "tclib.py"
    assert shipped.read_bytes() == pathlib.Path(grader_tclib.__file__).read_bytes(), (
        "source/common/tclib.py is stale: edit autograder/student/tclib.py and run `make release`"
    )


def test_the_tolerance_rule_scales_with_the_terms_and_never_below_one():
    tclib = REPOSITORY.public_module("common", "tclib")
    assert tclib.tolerance() == tclib.tolerance(0.5) == tclib.RTOL
    assert tclib.tolerance(1e4) == pytest.approx(1e4 * tclib.RTOL)
    assert tclib.tolerance(10, atol=1e-3) == pytest.approx(1e-3 + 10 * tclib.RTOL)
    # difference_report applies the same rule with the largest |expected| as its scale
    expected = np.array([1e4, 0.0])
    assert tclib.difference_report(expected + [0.9e-2, 0], expected, "a", "b") is None
    report = tclib.difference_report(expected + [0, 1.1e-2], expected, "a", "b", reveal=False)
    assert report == "a differs from b in 1 of 2 entries; the largest difference is 0.011 at index [1]"


ODD_RESULTS = [
    None,
    "text",
    print,
    [[1, 2], [3]],
    np.array(["a"]),
    np.ones((2, 3)) * 1j,
    np.ones((2, 3)) + 0j,
    np.ones((3, 2)),
    np.full((2, 3), np.inf),
    4.0,
    True,
    1 + 2j,
    {"x": 1},
]


@pytest.mark.parametrize("index", range(len(ODD_RESULTS)))
def test_public_and_hidden_checks_stage_a_result_alike(index):
    tclib = REPOSITORY.public_module("common", "tclib")
    value = ODD_RESULTS[index]
    sub = make_submission({}, calls={"f": [(("X",), value)]})
    what = "f(...) on the grader's input #1"
    public = _message(tclib.stage_result, value, what, (2, 3), ("d_head", "n_ctx"))
    hidden = _message(sub.call_results, "f", lambda args: (2, 3), ("d_head", "n_ctx"))
    assert public == hidden
    assert public is None or public.startswith(f"{what} returned ")


@pytest.mark.parametrize(
    "module_name",
    ["_probe.attention_heads.tc_checks", "tc_checks"],
    ids=["as the grader loads it", "as a notebook imports it"],
)
def test_public_modules_take_tclib_from_their_own_folder_only(tmp_path, monkeypatch, module_name):
    """A tclib.py earlier on the search path (a submission's, say) is never what they use."""
    (tmp_path / "tclib.py").write_text("raise RuntimeError('a tclib.py from the search path was imported')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    sibling = f"{module_name.rpartition('.')[0]}.tclib".lstrip(".")
    monkeypatch.delitem(sys.modules, sibling, raising=False)
    for assignment, stem in (("attention_heads", "tc_checks"), ("induction_heads", "induction_tools")):
        name = module_name.replace("tc_checks", stem).replace("attention_heads", assignment)
        spec = importlib.util.spec_from_file_location(name, REPOSITORY.source / assignment / f"{stem}.py")
        loaded = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(loaded)
        finally:
            sys.modules.pop(f"{name.rpartition('.')[0]}.tclib".lstrip("."), None)
        assert pathlib.Path(loaded.tclib.__file__).resolve() == (REPOSITORY.source / "common" / "tclib.py").resolve()
