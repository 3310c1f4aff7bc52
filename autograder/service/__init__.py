"""The grading service: instant grading and feedback of nbgrader exchange submissions (docs/SERVICE.md)."""
