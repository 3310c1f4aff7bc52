"""The resource limits of one submission's sandbox, as every part of the sandbox reads them."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Limits:
    """Resource limits for one submission."""

    cell_seconds: float = 10.0  # soft limit: the driver interrupts the cell and goes on
    cell_grace_seconds: float = 5.0  # hard limit = soft + grace: the supervisor kills the run
    call_seconds: float = 5.0  # per call of a submitted function, and per value extracted
    total_seconds: float = 90.0  # the whole submission, hard
    memory_bytes: int = 2 << 30
    max_processes: int = 32
    file_bytes: int = 16 << 20
    kept_output_bytes: int = 64 << 10  # stdout/stderr kept for the report
    max_output_bytes: int = 64 << 20  # printing more than this ends the run
    # Cell and call limits count CPU time; wall-clock limits (for code that waits) are this
    # many times the CPU limits, so sandboxes graded side by side cannot push each other over.
    wall_factor: float = 2.0
