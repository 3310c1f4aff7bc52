import sys

from autograder.cli import EXIT_GRADER_FAULT, main

if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception:  # a fault of the grader itself, not of any notebook
        import traceback

        traceback.print_exc()
        sys.exit(EXIT_GRADER_FAULT)
