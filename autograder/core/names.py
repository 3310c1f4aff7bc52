"""What a student id may be, and how a name from a student is shown on a terminal.

A student id is chosen by whoever submits (it is the first field of the exchange folder's name,
or the name of a folder under submitted/), and it then travels to places that interpret text:
nbgrader turns it into glob patterns and paths, instructors paste it into shells, the
formgrader renders it in HTML, grades.csv opens in spreadsheets. One definition of an
acceptable id, applied wherever submissions are discovered (collect, the grading service, the
batch grader), keeps every one of those places safe; anything else is refused with the reason,
shown escaped.

Allowed: ASCII letters and digits, then also `.`, `_`, `-` and `@` (e-mail style hub names), at
most MAX_LENGTH characters. Excluded, and why:
  * `* ? [ ] { } !`: glob and brace patterns; nbgrader matches `submitted/{student_id}/...` and
    `{student}+{assignment}+*` with glob, so a student named `*` is every student;
  * `+`: the separator of the exchange's `student+assignment+timestamp+random` folder names;
  * `/`, `\\`, a leading `.`: paths (`..` is the course root, `.x` a hidden folder);
  * spaces, quotes, `$ ; & | ( ) < > ~ # %` and backquotes: a shell splits or runs them;
  * `< > & " '`: HTML markup and attribute quoting (the formgrader's student list);
  * a leading `- = + @`, tabs and carriage returns: CSV formulas, and options on a command line;
  * control characters: terminal escape sequences (a cleared screen, forged log lines);
  * anything not ASCII, and bytes that are not UTF-8: look-alike letters, and names the
    database and the terminal cannot take.
"""

from __future__ import annotations

import re

MAX_LENGTH = 64
_ACCEPTABLE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]*")
_SHELL_OR_MARKUP = set(" \"'$;&|()<>~#%`*?[]{}!+/\\=,")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def refusal(student: str) -> str | None:
    """Why `student` is not an acceptable student id (None when it is), in words for the instructor."""
    if not student:
        return "the student id is empty"
    if len(student) > MAX_LENGTH:
        return f"the student id is {len(student)} characters long, over {MAX_LENGTH}"
    if _ACCEPTABLE.fullmatch(student):
        return None
    try:
        student.encode("utf-8")
    except UnicodeEncodeError:
        return "the name is not UTF-8 text"
    if _CONTROL.search(student):
        return "the student id holds control characters"
    if not student.isascii():
        return "the student id holds characters other than ASCII letters, digits and . _ - @"
    odd = sorted({character for character in student if character in _SHELL_OR_MARKUP})
    if odd:
        return f"the student id holds {' '.join(odd)}, which globs, shells, HTML or CSV interpret"
    return "the student id must start with a letter or a digit"


def shown(text, limit: int = 200) -> str:
    """`text` fit for one terminal line or log line: control characters, bytes that are not
    UTF-8 (a file name's surrogate escapes) and anything non-printable shown as escapes, and
    at most `limit` characters."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "surrogateescape")
    text = str(text)
    if len(text) > limit:
        text = text[:limit] + f"...({len(text) - limit} more)"
    out = []
    for character in text:
        if character.isprintable() and not _CONTROL.match(character) and not 0xDC80 <= ord(character) <= 0xDCFF:
            out.append(character)
        elif 0xDC80 <= ord(character) <= 0xDCFF:  # an undecodable byte of a file name
            out.append(f"\\x{ord(character) - 0xDC00:02x}")
        else:
            out.append(character.encode("unicode_escape").decode("ascii"))
    return "".join(out)
