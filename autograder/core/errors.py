"""Errors the grader reports to the person running it (not to students)."""


class UsageError(Exception):
    """The request cannot be carried out as given; the message says what to do instead."""
