"""Messages that carry store data from thread workers to the screens (Harlequin style)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from textual.message import Message

if TYPE_CHECKING:
    from caat_storage import EpochMetric, Run, StepMetric


@dataclass
class RunsLoaded(Message):
    """One page of the runs table, and how many runs match the filter.

    `quick`: read by `caat_storage.firstpage` before the store was open (rows that look like runs).
    """

    runs: list[Any]
    total: int
    quick: bool = False


@dataclass
class RunLoaded(Message):
    """A monitored run's new rows since the last poll, and its worker log's tail."""

    run: Run
    steps: list[StepMetric]
    epochs: list[EpochMetric]
    log_tail: list[str]


@dataclass
class StoreFailed(Message):
    """A store call from a worker failed; the screen shows the one-line reason."""

    error: str
