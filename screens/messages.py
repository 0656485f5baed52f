"""Messages that carry store data from thread workers to the screens (Harlequin style)."""

from __future__ import annotations

from dataclasses import dataclass

from textual.message import Message

from caat_storage import EpochMetric, Run, StepMetric


@dataclass
class RunsLoaded(Message):
    """One page of the runs table, and how many runs match the filter."""

    runs: list[Run]
    total: int


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
