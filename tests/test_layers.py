"""The package's architecture, enforced: imports go only downward through the layers, and the
sandbox driver uses nothing of the grader (only its own directory is visible in the sandbox)."""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "autograder"
# Lower layers first; a module may import its own layer and those before it.
LAYERS = ["student", "sandbox.driver", "sandbox", "core", "nbgrader", "service", "cli", "dev"]


def _layer(module: str) -> str | None:
    """The layer of a dotted name inside the package (longest matching prefix)."""
    name = module.removeprefix("autograder.")
    matches = [layer for layer in LAYERS if name == layer or name.startswith(layer + ".")]
    return max(matches, key=len) if matches else None


def _imports(path: pathlib.Path) -> list[str]:
    """Every autograder.* module the file imports, at any depth (lazy imports included)."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names if alias.name.startswith("autograder")]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("autograder"):
            names += [f"{node.module}.{alias.name}" for alias in node.names]
    return names


MODULES = sorted(path for path in PACKAGE.rglob("*.py") if "assignments" not in path.relative_to(PACKAGE).parts)


@pytest.mark.parametrize("path", MODULES, ids=lambda path: str(path.relative_to(PACKAGE)))
def test_imports_go_only_downward(path):
    dotted = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    own = _layer(dotted)
    if own is None:  # autograder/__init__.py, __main__.py: the entry points sit above everything
        return
    upward = [
        name
        for name in _imports(path)
        if (layer := _layer(name)) is not None and LAYERS.index(layer) > LAYERS.index(own)
    ]
    assert not upward, f"{dotted} ({own}) imports from a higher layer: {upward}"


@pytest.mark.parametrize("folder", ["sandbox/driver", "student"])
def test_code_that_runs_outside_the_grader_imports_nothing_of_it(folder):
    """The driver runs in the sandbox, the student library in students' notebooks: neither sees the grader."""
    for path in (PACKAGE / folder).glob("*.py"):
        assert not _imports(path), f"{folder}/{path.name} imports grader modules, which are not visible there"


def test_every_module_is_in_a_layer():
    unplaced = [
        str(path.relative_to(PACKAGE))
        for path in MODULES
        if path.parent == PACKAGE and path.name not in ("__init__.py", "__main__.py")
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
