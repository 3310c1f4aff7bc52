"""`python -m autograder ...`: the command line (see autograder.cli.main)."""

from autograder.cli.main import run

if __name__ == "__main__":
    run()
