"""The main program of a worker process: `python -m autograder.core.worker PARENT_PID MODULE:NAME`.

Started by `processes.Worker`, which also speaks its protocol (see autograder/core/processes.py);
it runs the `processes.Tasks` named `NAME` in `MODULE` until its parent is done with it.
"""

import sys

from autograder.core import processes

if __name__ == "__main__":
    processes.serve(int(sys.argv[1]), sys.argv[2])
