"""Hidden grader of the transformer-circuits course: sandboxed extraction, pytest checks, reports."""
