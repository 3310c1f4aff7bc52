"""The grading engine: the course, notebook specs, reading notebooks, submissions, checks, reports."""
