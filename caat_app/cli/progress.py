"""Rich progress bars for the terminal: a training run's epochs, a sweep's runs."""

from __future__ import annotations

import signal
from collections.abc import Callable
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from caat_app.runs.sweep import counts_text
from caat_storage import TERMINAL_STATUSES


class LiveBar:
    """A bar with a live text column (never parsed as markup), used as a context manager."""

    def __init__(
        self, console: Console, description: str, total: int | None, clock: ProgressColumn
    ) -> None:
        self.progress = Progress(
            TextColumn("{task.description}", markup=False),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[live]}", markup=False),
            clock,
            console=console,
        )
        self.task = self.progress.add_task(description, total=total, live="")

    def __enter__(self) -> Any:
        self.progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.progress.stop()


class ProgressSink(LiveBar):
    """A trainer sink that draws φ, μ and the accuracies live; the store sink records."""

    def __init__(self, console: Console, name: str, epochs: int) -> None:
        super().__init__(console, name, epochs, TimeRemainingColumn())
        self.step_text = ""
        self.epoch_text = ""

    def _refresh(self) -> None:
        self.progress.update(self.task, live=f"{self.step_text}{self.epoch_text}")

    def steps(self, rows: list[dict[str, Any]]) -> None:
        last = rows[-1]
        self.step_text = f"step {last['step'] + 1}  φ {last['phi']:+.3f}  μ {last['mu']:.3g}"
        self._refresh()

    def epoch(self, row: dict[str, Any], summary: dict[str, Any]) -> None:
        self.epoch_text = f"  val SA {100 * row['val_clean']:.1f}  PGD {100 * row['val_adv']:.1f}"
        self.progress.update(self.task, completed=row["epoch"])
        self._refresh()

    def should_stop(self) -> bool:
        return False


class SweepProgress(LiveBar):
    """`caat sweep`: configs ended out of the grid, and the count per status."""

    ENDED = tuple(TERMINAL_STATUSES)

    def __init__(self, console: Console, name: str) -> None:
        super().__init__(console, f"sweep {name}", None, TimeElapsedColumn())
        self.stopping = False

    def __call__(self, counts: dict[str, int]) -> None:
        live = counts_text(counts) + ("  (stopping…)" if self.stopping else "")
        self.progress.update(
            self.task,
            total=sum(counts.values()),
            completed=sum(counts.get(s, 0) for s in self.ENDED),
            live=live,
        )


def interruptible(work: Callable[[Callable[[], bool]], Any]) -> tuple[Any, bool]:
    """Run `work(should_stop)`; the first Ctrl-C asks it to stop, a second interrupts now."""
    stop = {"asked": False}

    def on_sigint(*_: Any) -> None:
        stop["asked"] = True
        signal.signal(signal.SIGINT, signal.default_int_handler)

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        result = work(lambda: stop["asked"])
    finally:
        signal.signal(signal.SIGINT, previous)
    return result, stop["asked"]
