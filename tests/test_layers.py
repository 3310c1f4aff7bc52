"""The package's architecture, enforced against docs/ARCHITECTURE.md: every module imports only
what its layer's row of the page allows, no layer holds an import cycle, the sandbox driver and
the student library use nothing of the grader, and the page names every module there is and
none that is gone."""

import ast
import pathlib
import re

import pytest

from tests.builders import REPOSITORY

PACKAGE = REPOSITORY.root / "autograder"
ARCHITECTURE = (REPOSITORY.root / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")


def _allowed_imports() -> dict[str, set[str]]:
    """layer -> the layers it may import, from the page's table of layers."""
    section = ARCHITECTURE.split("\n## Layers\n", 1)[1].split("\n### ", 1)[0]
    allowed = {}
    for row in re.findall(r"^\| `autograder\.([\w.]+)` \|.*\| (.+) \|$", section, re.M):
        layer, may_import = row
        allowed[layer] = set(re.findall(r"`([\w.]+)`", may_import))
    return allowed


ALLOWED = _allowed_imports()


def _layer(module: str) -> str | None:
    """The layer of a dotted name inside the package (longest matching prefix)."""
    name = module.removeprefix("autograder.")
    matches = [layer for layer in ALLOWED if name == layer or name.startswith(layer + ".")]
    return max(matches, key=len) if matches else None


def _dotted(path: pathlib.Path) -> str:
    return ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")


MODULES = sorted(
    path
    for path in PACKAGE.rglob("*.py")
    if not {"assignments", "course_content"} & set(path.relative_to(PACKAGE).parts)
)
NAMES = {_dotted(path) for path in MODULES}


def _imports(path: pathlib.Path) -> list[str]:
    """Every autograder.* name the file imports, at any depth (lazy imports and those for type
    annotations included): a module where the name is one, else the package it comes from."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names if alias.name.startswith("autograder")]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("autograder"):
            names += [
                f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in NAMES else node.module
                for alias in node.names
            ]
    return names


def test_the_page_has_a_row_for_every_layer_and_the_lowest_import_nothing():
    assert set(ALLOWED) == {"student", "sandbox.driver", "sandbox", "core", "nbgrader", "service", "cli", "dev"}
    assert ALLOWED["student"] == ALLOWED["sandbox.driver"] == set()
    for layer, allowed in ALLOWED.items():
        assert allowed <= set(ALLOWED) - {layer}, f"{layer} may import an unknown layer: {allowed - set(ALLOWED)}"


@pytest.mark.parametrize("path", MODULES, ids=lambda path: str(path.relative_to(PACKAGE)))
def test_imports_stay_inside_what_the_layer_may_import(path):
    dotted = _dotted(path)
    own = _layer(dotted)
    if own is None:  # autograder/__init__.py, __main__.py: the entry points sit above everything
        return
    forbidden = [
        name for name in _imports(path) if (layer := _layer(name)) is not None and layer not in {own} | ALLOWED[own]
    ]
    assert not forbidden, f"{dotted} ({own}) imports what docs/ARCHITECTURE.md does not allow it: {forbidden}"


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for successor in sorted(graph[node]):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_cycle_finder_finds_a_cycle_and_only_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_no_import_cycle_inside_a_layer(layer):
    """Modules of one layer import each other one way: a module can be read knowing only those it imports."""
    modules = {_dotted(path): path for path in MODULES if _layer(_dotted(path)) == layer}
    graph = {name: {other for other in _imports(path) if other in modules} - {name} for name, path in modules.items()}
    assert not _cycles(graph), f"modules of {layer} that import each other: {_cycles(graph)}"


@pytest.mark.parametrize("folder", ["sandbox/driver", "student"])
def test_code_that_runs_outside_the_grader_imports_nothing_of_it(folder):
    """The driver runs in the sandbox, the student library in students' notebooks: neither sees the grader."""
    for path in (PACKAGE / folder).glob("*.py"):
        assert not _imports(path), f"{folder}/{path.name} imports grader modules, which are not visible there"


def test_every_module_is_in_a_layer():
    unplaced = [
        str(path.relative_to(PACKAGE))
        for path in MODULES
        if _layer(_dotted(path)) is None and path.relative_to(PACKAGE).as_posix() not in ("__init__.py", "__main__.py")
    ]
    assert not unplaced, f"modules outside every layer: {unplaced}"


def test_the_grader_reads_the_sandbox_driver_only_through_its_wire_format():
    """Above the sandbox, `sandbox.driver.wire` (frames and tagged values) is all that is shared
    with the driver: the sandbox's main program and its confinement stay the sandbox's own."""
    reaching_in = {
        str(path.relative_to(PACKAGE)): names
        for path in MODULES
        if path.relative_to(PACKAGE).parts[0] != "sandbox"
        and (names := [name for name in _imports(path) if _layer(name) == "sandbox.driver"])
        and any(name != "autograder.sandbox.driver.wire" for name in names)
    }
    assert not reaching_in, f"modules importing the driver beyond its wire format: {reaching_in}"


DESCRIBED = [  # the modules a page describes: the package's (but its packages' __init__), the course's configuration, the benchmarks
    *(path.relative_to(PACKAGE).as_posix() for path in MODULES if path.name != "__init__.py"),
    "nbgrader_config.py",
    *(path.relative_to(REPOSITORY.root).as_posix() for path in sorted((REPOSITORY.root / "benchmarks").glob("*.py"))),
]
ROWS = re.findall(r"^\| `([\w/]+\.py)` \|", ARCHITECTURE, re.M)


def test_the_architecture_page_has_a_row_for_every_module():
    missing = [module for module in DESCRIBED if module not in ROWS]
    assert not missing, f"docs/ARCHITECTURE.md has no row for {missing}: add each to its layer's table"


def test_the_architecture_page_names_no_module_that_is_gone():
    gone = [module for module in ROWS if module not in DESCRIBED and not (REPOSITORY.root / module).exists()]
    assert not gone, f"docs/ARCHITECTURE.md describes modules that do not exist: {gone}"
