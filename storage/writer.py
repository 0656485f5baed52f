"""Batched metric writes: a worker logs every step, the store sees a few transactions a second."""

import time
from collections.abc import Mapping, Sequence
from typing import Any, Protocol


class MetricSink(Protocol):
    """What a BatchWriter writes to: a `Store`, or a stand-in in a test."""

    def append_metrics(
        self,
        run_id: int,
        steps: Sequence[Mapping[str, Any]] = (),
        epochs: Sequence[Mapping[str, Any]] = (),
        run_fields: Mapping[str, Any] | None = None,
        layers: Sequence[Mapping[str, Any]] = (),
    ) -> None: ...

    def heartbeat(self, run_id: int) -> None: ...

    def set_run_layers(self, run_id: int, names: Sequence[str], sizes: Sequence[int]) -> None: ...


class BatchWriter:
    """Turns a stream of metric rows into a few transactions a second.

    One per training process, used from one thread. Rows are only buffered by the
    `add_*` methods; `maybe_flush` is cheap enough to call every step.
    """

    def __init__(
        self,
        store: MetricSink,
        run_id: int,
        *,
        interval: float = 0.5,
        heartbeat_interval: float = 5.0,
    ) -> None:
        self.store = store
        self.run_id = run_id
        self.interval = interval
        self.heartbeat_interval = heartbeat_interval
        self._steps: list[dict[str, Any]] = []
        self._epochs: list[dict[str, Any]] = []
        self._fields: dict[str, Any] = {}
        self._layers: list[dict[str, Any]] = []
        self._last_flush = time.monotonic()
        self._last_write = self._last_flush

    @property
    def pending(self) -> bool:
        return bool(self._steps or self._epochs or self._fields or self._layers)

    def add_steps(self, rows: Sequence[Mapping[str, Any]]) -> None:
        self._steps.extend(dict(row) for row in rows)

    def add_layers(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Per-layer conflict rows; they go in the same transactions as the steps."""
        self._layers.extend(dict(row) for row in rows)

    def add_epoch(self, row: Mapping[str, Any]) -> None:
        self._epochs.append(dict(row))

    def set_run_fields(self, **fields: Any) -> None:
        """Later values win: only the latest state of the run row matters."""
        self._fields.update(fields)

    def maybe_flush(self) -> bool:
        """Write if a batch is due, or a heartbeat if the run has been quiet; True if written."""
        now = time.monotonic()
        if self.pending and now - self._last_flush >= self.interval:
            self.flush()
            return True
        if now - self._last_write >= self.heartbeat_interval:
            self.store.heartbeat(self.run_id)
            self._last_write = time.monotonic()
            return True
        return False

    def flush(self) -> None:
        """Write everything buffered now; on failure the rows stay for the next try."""
        if not self.pending:
            self.store.heartbeat(self.run_id)
            self._last_write = time.monotonic()
            return
        # `layers` only when there are some: a stand-in store may not know the keyword.
        extra = {"layers": self._layers} if self._layers else {}
        self.store.append_metrics(
            self.run_id, steps=self._steps, epochs=self._epochs, run_fields=self._fields, **extra
        )
        self._steps = []
        self._layers = []
        self._epochs = []
        self._fields = {}
        self._last_flush = self._last_write = time.monotonic()
