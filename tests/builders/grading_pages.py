"""What the tests of nbgrader's pages (formgrader, feedback) share: a graded course, and what a
page or file shows of a model answer or mark scheme.

A *fingerprint* is a run of at least MIN_WORDS words of a solution region's prose (maths
removed) that the students' own material (the source notebook outside every solution region)
does not contain: finding one in a file means the model answer or mark scheme reached it.
Texts are compared as lowercase words, so markdown, HTML and JSON spell them alike.
"""

from __future__ import annotations

import html
import json
import pathlib
import re
import subprocess
import sys

from autograder.core.course import Course
from autograder.core.notebook import grade_id as grade_id_of
from autograder.dev import classroom
from autograder.nbgrader import markscheme, release
from tests.builders import nbgrader

MIN_WORDS = 6
STUDENT = "kim"
_MATH = re.compile(r"\$\$.*?\$\$|\$[^$\n]+\$", re.S)
_WORD = re.compile(r"[a-z0-9]+")
_TAG = re.compile(r"<[^>]*>")


def words(text: str) -> str:
    """`text` as lowercase words separated by single spaces, with one space at each end."""
    return " " + " ".join(_WORD.findall(text.lower())) + " "


def visible_text(path: pathlib.Path) -> str:
    """What a file shows, as words: an HTML page's text (styles and scripts dropped, tags and
    character references resolved), every string of a notebook, any other file as it is."""
    text = path.read_text(encoding="utf-8", errors="replace")
    if path.suffix == ".html":
        text = re.sub(r"<(style|script)\b.*?</\1>", " ", text, flags=re.S | re.I)
        return words(html.unescape(_TAG.sub(" ", text)))
    if path.suffix == ".ipynb":
        strings: list[str] = []

        def collect(value):
            if isinstance(value, str):
                strings.append(value)
            elif isinstance(value, list):
                for item in value:
                    collect(item)
            elif isinstance(value, dict):
                for item in value.values():
                    collect(item)

        collect(json.loads(text))
        return words("\n".join(strings))
    return words(text)


def page_words(page: str) -> str:
    """What an HTML page (as text) shows, as words."""
    page = re.sub(r"<(style|script)\b.*?</\1>", " ", page, flags=re.S | re.I)
    return words(html.unescape(_TAG.sub(" ", page)))


def fingerprints(course: Course, assignment: str, notebook: str) -> dict[str, list[str]]:
    """grade_id -> the fingerprints of each manually graded cell's model answer and scheme."""
    source = json.loads((course.source / assignment / f"{notebook}.ipynb").read_text(encoding="utf-8"))
    schemes = markscheme.mark_schemes(source)
    outside = []
    for cell in source["cells"]:
        text = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        outside.append(re.sub(r"BEGIN SOLUTION.*?END SOLUTION", " ", text, flags=re.S))
    public = words("\n".join(outside))
    found = {}
    for grade_id, scheme in schemes.items():
        prints = []
        for line in f"{scheme.model_answer}\n{scheme.scheme}".splitlines():
            line = re.sub(r"^\s*\*\s*\d+(\.\d+)?:", " ", line)  # a scheme item's points
            for chunk in _MATH.split(line):
                chunk = words(chunk)
                if len(chunk.split()) >= MIN_WORDS and chunk not in public:
                    prints.append(chunk)
        found[grade_id] = prints
    return found


def own_words(grade_id: str) -> str:
    """A free-text answer a student might write, with maths, sharing nothing with any scheme."""
    return (
        f"My reading for {grade_id}: the channel $W_V^2 W_O^1$ and the scale $\\sqrt{{d_\\text{{head}}}}$, "
        "as I understood the lecture.\n\n$$W_{OV} = W_O W_V$$"
    )


def build_graded_course(repository: Course, folder: pathlib.Path) -> Course:
    """The course copied into `folder`, every assignment generated, one student's submission
    (the reference code, free-text answers in her own words) graded by the batch grader and
    its feedback generated, all by nbgrader's and the course's own commands."""
    course = release.copy_course(repository, folder / "course")
    root = course.root
    for assignment in release.source_assignments(root):
        nbgrader(root, "generate_assignment", assignment, "--force")
        notebooks = sorted({spec.notebook for spec in course.specs if spec.assignment == assignment})
        filled = {}
        for notebook in notebooks:
            source = json.loads((course.source / assignment / f"{notebook}.ipynb").read_text(encoding="utf-8"))
            manual = [cell for cell in source["cells"] if markscheme.manually_graded(cell)]
            replacements = {grade_id_of(cell): own_words(grade_id_of(cell)) for cell in manual}
            filled[notebook] = classroom.filled_notebook(course, assignment, notebook, replacements)
        classroom.write_submission(root, STUDENT, assignment, filled)
        subprocess.run(
            [sys.executable, "-m", "autograder", "grade", "--course", str(root), assignment],
            cwd=root,
            check=True,
            capture_output=True,
        )
        nbgrader(root, "generate_feedback", assignment, "--force")
    return course


def notebooks(course: Course) -> list[tuple[str, str]]:
    """(assignment, notebook) of every notebook of the course."""
    return sorted({(spec.assignment, spec.notebook) for spec in course.specs})


def submission_id(course: Course, assignment: str, notebook: str, student: str = STUDENT) -> str:
    """The gradebook's id of the student's submitted notebook (the formgrader's URLs name it)."""
    from autograder.nbgrader.course_view import CourseView

    with CourseView.load(course).gradebook() as gradebook:
        return gradebook.find_submission_notebook(notebook, assignment, student).id


def student_facing_files(course: Course) -> list[pathlib.Path]:
    """Everything students receive or fetch: the release (what release_assignment copies into
    the exchange), feedback (what release_feedback copies) and the autograded notebooks."""
    found = []
    for folder in ("release", "feedback", "autograded"):
        found += [path for path in sorted((course.root / folder).rglob("*")) if path.is_file()]
    return [path for path in found if "__pycache__" not in path.parts]
