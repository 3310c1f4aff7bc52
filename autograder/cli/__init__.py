"""The command line: grading notebooks or a class, self-checks, the release build."""
