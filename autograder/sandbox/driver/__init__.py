"""Code that runs inside the sandbox. Stdlib and numpy only: nothing else of the grader is visible there."""
