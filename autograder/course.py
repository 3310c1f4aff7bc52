"""Where the course lives on disk, and trusted access to its public helper modules."""
import functools
import importlib.util
import pathlib
import sys

COURSE_ROOT = pathlib.Path(__file__).resolve().parent.parent
SOURCE = COURSE_ROOT / "source"
RELEASE = COURSE_ROOT / "release"
SOLUTIONS = COURSE_ROOT / "solutions"
ASSIGNMENTS_PACKAGE = pathlib.Path(__file__).resolve().parent / "assignments"


@functools.lru_cache(maxsize=None)
def public_module(assignment: str, module: str):
    """Import `source/<assignment>/<module>.py`: the course's own copy, never a student's."""
    path = SOURCE / assignment / f"{module}.py"
    name = f"_course_public.{assignment}.{module}"
    spec = importlib.util.spec_from_file_location(name, path)
    loaded = importlib.util.module_from_spec(spec)
    sys.modules[name] = loaded
    spec.loader.exec_module(loaded)
    return loaded
