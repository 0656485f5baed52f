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


@dataclass
class StoreReach(Message):
    """Whether a store call got through (None) or why the store is unreachable.

    Posted by every poller and bubbled to the app, which says so once as an outage begins
    and once as it ends, instead of a notification per poll.
    """

    unreachable: str | None = None


def read_failed(exc: BaseException, what: str = "cannot read the store") -> Message:
    """The message for a failed poll: an outage (`StoreReach`), or a failure to show."""
    from caat_storage import StoreUnreachable

    if isinstance(exc, StoreUnreachable):
        return StoreReach(str(exc))
    return StoreFailed(f"{what}: {exc}")
