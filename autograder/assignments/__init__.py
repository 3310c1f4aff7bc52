"""Hidden checks, one package per nbgrader assignment."""
