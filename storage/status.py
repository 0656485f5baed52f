"""Where a run or an evaluation job is in its life: one vocabulary for every table."""

import socket
from enum import StrEnum


class RunStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"
    CANCELLED = "cancelled"
    DIVERGED = "diverged"


TERMINAL_STATUSES: frozenset[RunStatus] = frozenset(
    {RunStatus.FINISHED, RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.DIVERGED}
)

ACTIVE_STATUSES: tuple[RunStatus, ...] = (RunStatus.QUEUED, RunStatus.RUNNING)
"""Not ended yet: what a cancel or a finish may still move on."""


def final_status(status: RunStatus | str) -> RunStatus:
    """`status` as a RunStatus, or ValueError: only an end may be written as one."""
    status = RunStatus(status)
    if status not in TERMINAL_STATUSES:
        raise ValueError(f"{status.value!r} is not a final status")
    return status


def this_host() -> str:
    """The name workers record as theirs, and reapers compare with their own."""
    return socket.gethostname()
