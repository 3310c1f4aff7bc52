"""`nbgrader export` to a CSV file that is safe to open in a spreadsheet.

nbgrader's CsvExportPlugin joins the fields with commas as they are: a student id or name with
a comma or a newline adds columns or rows, and a field starting with `=`, `+`, `-`, `@`, a tab
or a carriage return is run as a formula by spreadsheets (`=HYPERLINK(...)`). This exporter
(configured in nbgrader_config.py) writes the same columns with the csv module's quoting, and
prefixes such text fields with an apostrophe, the spreadsheet convention for "this is text".
Numbers are left as numbers.
"""

from __future__ import annotations

import csv

from nbgrader.api import MissingEntry
from nbgrader.plugins import CsvExportPlugin

COLUMNS = [
    "assignment",
    "duedate",
    "timestamp",
    "student_id",
    "last_name",
    "first_name",
    "email",
    "raw_score",
    "late_submission_penalty",
    "score",
    "max_score",
]
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\n")


def spreadsheet_safe(value) -> str:
    """`value` as CSV cell text that no spreadsheet evaluates."""
    if value is None:
        return ""
    if isinstance(value, (int, float)):
        return str(value)
    text = str(value)
    if text.startswith(_FORMULA_STARTS):
        try:
            float(text)
            return text  # a negative number, not a formula
        except ValueError:
            return "'" + text
    return text


class SafeCsvExportPlugin(CsvExportPlugin):
    """CsvExportPlugin's table, quoted and with formulas neutralised."""

    def export(self, gradebook) -> None:
        dest = self.to or "grades.csv"
        students = [str(item) for item in self.student]
        assignments = [str(item) for item in self.assignment]
        self.log.info("Exporting grades to %s", dest)
        with open(dest, "w", newline="", encoding="utf-8") as stream:
            writer = csv.writer(stream, quoting=csv.QUOTE_MINIMAL, lineterminator="\n")
            writer.writerow(COLUMNS)
            for assignment in gradebook.assignments:
                if assignments and assignment.name not in assignments:
                    continue
                for student in gradebook.students:
                    if students and student.id not in students:
                        continue
                    row = {
                        "assignment": assignment.name,
                        "duedate": assignment.duedate,
                        "student_id": student.id,
                        "last_name": student.last_name,
                        "first_name": student.first_name,
                        "email": student.email,
                        "max_score": assignment.max_score,
                    }
                    try:
                        submission = gradebook.find_submission(assignment.name, student.id)
                    except MissingEntry:
                        row.update(timestamp="", raw_score=0.0, late_submission_penalty=0.0, score=0.0)
                    else:
                        penalty = submission.late_submission_penalty
                        row.update(
                            timestamp=submission.timestamp,
                            raw_score=submission.score,
                            late_submission_penalty=penalty,
                            score=max(0.0, submission.score - (penalty or 0.0)),
                        )
                    writer.writerow([spreadsheet_safe(row[column]) for column in COLUMNS])
