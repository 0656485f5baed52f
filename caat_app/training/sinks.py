"""Where the trainer reports: a small protocol, so the trainer knows nothing of stores.

The worker plugs the store in (`caat_app.runs.worker.StoreSink`), the CLI a live
progress display, tests and benchmarks a `ListSink`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


class Sink(Protocol):
    """Where the trainer reports; every method is called from the training thread.

    `should_stop` is asked after every step and before every evaluation batch, so a
    sink can also keep a heartbeat there. `layers` is called only by runs that record
    per-layer conflict (`layer_stats`): `names` and `sizes` are the parameter tensors a
    row's `layer` indexes, the same in every call of a run.
    """

    def steps(self, rows: list[dict[str, Any]]) -> None: ...

    def layers(
        self, names: Sequence[str], sizes: Sequence[int], rows: list[dict[str, Any]]
    ) -> None: ...

    def epoch(self, row: dict[str, Any], summary: dict[str, Any]) -> None: ...

    def should_stop(self) -> bool: ...


@dataclass
class ListSink:
    """Keeps everything in memory: for tests and benchmarks."""

    step_rows: list[dict[str, Any]] = field(default_factory=list)
    epoch_rows: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    stop_after_steps: int | None = None
    layer_rows: list[dict[str, Any]] = field(default_factory=list)
    layer_names: tuple[str, ...] = ()
    layer_sizes: tuple[int, ...] = ()

    def steps(self, rows: list[dict[str, Any]]) -> None:
        self.step_rows.extend(rows)

    def layers(
        self, names: Sequence[str], sizes: Sequence[int], rows: list[dict[str, Any]]
    ) -> None:
        self.layer_names, self.layer_sizes = tuple(names), tuple(sizes)
        self.layer_rows.extend(rows)

    def epoch(self, row: dict[str, Any], summary: dict[str, Any]) -> None:
        self.epoch_rows.append(row)
        self.summary = summary

    def should_stop(self) -> bool:
        return self.stop_after_steps is not None and len(self.step_rows) >= self.stop_after_steps


class NullSink:
    """Drops every report and never asks to stop: for timing the trainer on its own."""

    def steps(self, rows: list[dict[str, Any]]) -> None:
        pass

    def layers(
        self, names: Sequence[str], sizes: Sequence[int], rows: list[dict[str, Any]]
    ) -> None:
        pass

    def epoch(self, row: dict[str, Any], summary: dict[str, Any]) -> None:
        pass

    def should_stop(self) -> bool:
        return False
