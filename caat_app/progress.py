"""A rich progress bar that shows φ, μ and the accuracies live while `caat train` runs."""

from __future__ import annotations

from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


class ProgressSink:
    """A trainer sink that only draws; the store sink does the recording."""

    def __init__(self, console: Console, name: str, epochs: int) -> None:
        self.progress = Progress(
            TextColumn("{task.description}", markup=False),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[live]}", markup=False),
            TimeRemainingColumn(),
            console=console,
        )
        self.task = self.progress.add_task(name, total=epochs, live="")
        self.step_text = ""
        self.epoch_text = ""

    def __enter__(self) -> ProgressSink:
        self.progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.progress.stop()

    def _refresh(self) -> None:
        self.progress.update(self.task, live=f"{self.step_text}{self.epoch_text}")

    def steps(self, rows: list[dict[str, Any]]) -> None:
        last = rows[-1]
        self.step_text = f"step {last['step'] + 1}  φ {last['phi']:+.3f}  μ {last['mu']:.3g}"
        self._refresh()

    def epoch(self, row: dict[str, Any], summary: dict[str, Any]) -> None:
        self.epoch_text = f"  val SA {100 * row['val_clean']:.1f}  AA {100 * row['val_adv']:.1f}"
        self.progress.update(self.task, completed=row["epoch"])
        self._refresh()

    def should_stop(self) -> bool:
        return False
