"""`nbgrader autograde` with the unsandboxed kernel-per-notebook baseline, for `make bench` only.

The baseline is injected here, in the benchmark's own process, because no configuration of the
course can select it: `SandboxedGrading` has no option that runs student code unsandboxed.
Usage: python benchmarks/kernel_autograde.py ASSIGNMENT [nbgrader autograde options]
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from kernel_runner import run_in_kernel

from autograder.nbgrader import preprocessors

preprocessors.SandboxedGrading._benchmark_options = {"runner": run_in_kernel, "isolation": "none", "jobs": 1}

if __name__ == "__main__":
    from nbgrader.apps.nbgraderapp import NbGraderApp

    sys.argv = ["nbgrader", "autograde", *sys.argv[1:]]
    NbGraderApp.launch_instance()
