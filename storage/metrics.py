"""A run's training curves: step rows as they stream in, epoch rows as evaluations finish.

A run resumed from a checkpoint first loses the rows its dead worker wrote after it
(`trim_after`), so its series continues with no duplicate and no gap.
"""

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import delete, insert, update
from sqlmodel import Session, select

from .base import StoreBase
from .layers import layer_rows
from .models import EpochMetric, LayerMetric, StepMetric, utcnow
from .values import EPOCH_CONVERT, STEP_CONVERT, STEP_DEFAULTS, metric_row, run_values


def _step_rows(run_id: int, steps: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Checked before the transaction: a bad row refuses the batch without taking the lock."""
    rows = []
    for row in steps:
        values = metric_row(STEP_CONVERT, run_id, row, "step")
        missing = [key for key in ("step", "epoch", "t") if values.get(key) is None]
        if missing:
            raise ValueError(f"a step row lacks {', '.join(missing)}")
        rows.append({**STEP_DEFAULTS, **values})
    return rows


def _epoch_rows(run_id: int, epochs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for row in epochs:
        values = metric_row(EPOCH_CONVERT, run_id, row, "epoch")
        if values.get("epoch") is None:
            raise ValueError("an epoch row lacks epoch")
        rows.append(values)
    return rows


def _upsert_epoch(session: Session, row: dict[str, Any]) -> None:
    # Portable select-then-write; the write transaction already holds the lock.
    key = (EpochMetric.run_id == row["run_id"]) & (EpochMetric.epoch == row["epoch"])
    exists = session.execute(select(EpochMetric.epoch).where(key)).first() is not None
    if not exists:
        session.execute(insert(EpochMetric).values(**row))
        return
    values = {k: v for k, v in row.items() if k not in ("run_id", "epoch") and v is not None}
    if values:
        session.execute(
            update(EpochMetric).where(key).values(**values),
            execution_options={"synchronize_session": False},
        )


def _forget_from(
    session: Session, table: type[StepMetric] | type[LayerMetric], run_id: int, step: int
) -> None:
    """Delete a run's rows of `table` from `step` on (none, unless a batch comes again)."""
    session.execute(
        delete(table).where(table.run_id == run_id, table.step >= step),  # type: ignore[arg-type, operator]
        execution_options={"synchronize_session": False},
    )


def trim_after(
    session: Session, run_id: int, *, step: int, epochs_done: int
) -> tuple[float | None, float | None]:
    """Delete a run's step and per-layer rows from `step` on and its epoch rows after
    `epochs_done`, in the caller's transaction; (φ, μ) of the last step kept."""
    for table, column, first in (
        (StepMetric, StepMetric.step, step),
        (LayerMetric, LayerMetric.step, step),
        (EpochMetric, EpochMetric.epoch, epochs_done + 1),
    ):
        session.execute(
            delete(table).where(table.run_id == run_id, column >= first),  # type: ignore[arg-type, attr-defined, operator]
            execution_options={"synchronize_session": False},
        )
    last = session.execute(
        select(StepMetric.phi, StepMetric.mu).where(
            StepMetric.run_id == run_id, StepMetric.step == step - 1
        )
    ).first()
    return (last[0], last[1]) if last is not None else (None, None)


class MetricsMixin(StoreBase):
    """Writes in batches (a worker's half-second flush); reads what a poller lacks."""

    def append_metrics(
        self,
        run_id: int,
        steps: Sequence[Mapping[str, Any]] = (),
        epochs: Sequence[Mapping[str, Any]] = (),
        run_fields: Mapping[str, Any] | None = None,
        layers: Sequence[Mapping[str, Any]] = (),
    ) -> None:
        """Write a batch in one transaction, so readers see all of it or none of it.

        An epoch that is already stored is updated with the values given again; a None
        never erases a value already there. `layers` are per-layer conflict rows. A batch
        written again replaces what it wrote before (step and per-layer rows from its
        first step on): a worker whose connection broke while it committed cannot know
        whether the commit landed, and sends the batch again.
        """
        step_rows = _step_rows(run_id, steps)
        per_layer = layer_rows(run_id, layers)
        epoch_rows = _epoch_rows(run_id, epochs)
        fields = run_values(run_fields or {})
        fields["heartbeat_at"] = utcnow()

        with self._write() as session:
            # The run first: a missing run is a StoreError, not a foreign-key failure.
            self._update_run(session, run_id, fields)
            for table, rows in ((StepMetric, step_rows), (LayerMetric, per_layer)):
                if rows:
                    _forget_from(session, table, run_id, rows[0]["step"])
                    session.execute(insert(table), rows)
            for row in epoch_rows:
                _upsert_epoch(session, row)

    def steps(
        self, run_id: int, *, after_step: int = -1, limit: int | None = None
    ) -> list[StepMetric]:
        """Step rows after `after_step`, in order: what a poller asks for each tick."""
        statement = (
            select(StepMetric)
            .where(StepMetric.run_id == run_id, StepMetric.step > after_step)
            .order_by(StepMetric.step)  # type: ignore[arg-type]
            .limit(limit)
        )
        with self._read() as session:
            return list(session.exec(statement).all())

    def epochs(self, run_id: int) -> list[EpochMetric]:
        """Every stored epoch of a run, in order: few enough to read whole."""
        statement = (
            select(EpochMetric).where(EpochMetric.run_id == run_id).order_by(EpochMetric.epoch)  # type: ignore[arg-type]
        )
        with self._read() as session:
            return list(session.exec(statement).all())
