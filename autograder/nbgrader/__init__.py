"""nbgrader integration: preprocessors, the batch grader, the release build."""
