"""Batched metric writes: a worker logs every step, the store sees a few transactions a second.

A store that cannot be reached (`StoreUnreachable`: its server restarting, the network
gone) costs a worker nothing but the wait: the rows stay buffered, the writer tries again
every `retry_interval`, and the first write that gets through stores them all.
"""

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

from .errors import StoreUnreachable

T = TypeVar("T")

HEARTBEAT_S = 5.0
"""How often a worker with nothing to write proves it is alive."""

STORE_WAIT_S = 600.0
"""How long a worker that has finished waits for an unreachable store before it gives up."""


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


def patiently(call: Callable[[], T], *, wait_s: float = STORE_WAIT_S, pause: float = 1.0) -> T:
    """`call()`, tried again while the store is unreachable, for up to `wait_s` seconds."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return call()
        except StoreUnreachable:
            if time.monotonic() >= deadline:
                raise
        time.sleep(pause)


class BatchWriter:
    """Turns a stream of metric rows into a few transactions a second.

    One per training process, used from one thread. Rows are only buffered by the
    `add_*` methods; `maybe_flush` is cheap enough to call every step. While the store is
    unreachable, `unreachable` holds the reason and `on_outage(reason or None)` is told
    when an outage begins and ends; `drain` waits it out.
    """

    def __init__(
        self,
        store: MetricSink,
        run_id: int,
        *,
        interval: float = 0.5,
        heartbeat_interval: float = HEARTBEAT_S,
        retry_interval: float = 1.0,
        on_outage: Callable[[str | None], None] | None = None,
    ) -> None:
        self.store = store
        self.run_id = run_id
        self.interval = interval
        self.heartbeat_interval = heartbeat_interval
        self.retry_interval = retry_interval
        self.on_outage = on_outage
        self.unreachable: str | None = None
        self._steps: list[dict[str, Any]] = []
        self._epochs: list[dict[str, Any]] = []
        self._fields: dict[str, Any] = {}
        self._layers: list[dict[str, Any]] = []
        self._layer_names: tuple[Sequence[str], Sequence[int]] | None = None
        self._last_flush = time.monotonic()
        self._last_write = self._last_flush
        self._last_try = self._last_flush

    @property
    def pending(self) -> bool:
        return bool(
            self._steps or self._epochs or self._fields or self._layers or self._layer_names
        )

    def name_layers(self, names: Sequence[str], sizes: Sequence[int]) -> None:
        """The run's layers, written before (and with the next batch of) per-layer rows."""
        self._layer_names = (list(names), list(sizes))

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
        if self.unreachable is not None:
            return now - self._last_try >= self.retry_interval and self.flush()
        if self.pending and now - self._last_flush >= self.interval:
            return self.flush()
        if now - self._last_write >= self.heartbeat_interval:
            return self.flush()
        return False

    def flush(self) -> bool:
        """Write everything buffered now (or a heartbeat); True if it got through.

        An unreachable store keeps the rows for the next try and returns False; any other
        failure raises, and the rows stay too.
        """
        self._last_try = time.monotonic()
        try:
            self._write()
        except StoreUnreachable as exc:
            if self.unreachable is None and self.on_outage is not None:
                self.on_outage(str(exc))
            self.unreachable = str(exc)
            return False
        if self.unreachable is not None:
            self.unreachable = None
            if self.on_outage is not None:
                self.on_outage(None)
        return True

    def drain(self, wait_s: float = STORE_WAIT_S) -> None:
        """Write everything, waiting up to `wait_s` for an unreachable store (then raise
        `StoreUnreachable`): how a worker ends, so no row is left behind."""
        patiently(self._write, wait_s=wait_s, pause=self.retry_interval)
        if self.unreachable is not None:
            self.unreachable = None
            if self.on_outage is not None:
                self.on_outage(None)

    def _write(self) -> None:
        if not self.pending:
            self.store.heartbeat(self.run_id)
            self._last_write = time.monotonic()
            return
        if self._layer_names is not None:
            self.store.set_run_layers(self.run_id, *self._layer_names)
            self._layer_names = None
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
