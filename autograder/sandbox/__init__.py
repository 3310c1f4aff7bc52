"""Running untrusted cells: the supervisor (grader side) and the driver (inside the sandbox)."""
