"""A run's per-layer conflict: its layers' names once, then φ, μ and norms per step and layer.

Rows arrive in the worker's batched transactions (`append_metrics(..., layers=...)`);
the names are written once, when the first rows are.
"""

import operator
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import delete, insert
from sqlmodel import select

from .base import StoreBase
from .models import LayerMetric, RunLayer
from .values import LAYER_CONVERT, metric_row

_LAYER_DEFAULTS = {"phi": None, "mu": None, "norm_c": None, "norm_a": None}


def layer_rows(run_id: int, rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Checked before the transaction, as step rows are: a bad row refuses the batch."""
    out = []
    for row in rows:
        values = metric_row(LAYER_CONVERT, run_id, row, "layer")
        missing = [key for key in ("step", "layer", "epoch") if values.get(key) is None]
        if missing:
            raise ValueError(f"a layer row lacks {', '.join(missing)}")
        out.append({**_LAYER_DEFAULTS, **values})
    return out


class LayersMixin(StoreBase):
    """Names a run's layers and reads their conflict back, for `caat layers` and the screens."""

    def set_run_layers(self, run_id: int, names: Sequence[str], sizes: Sequence[int]) -> None:
        """Record the run's layers (replacing any recorded before), index = position."""
        if len(names) != len(sizes):
            raise ValueError(f"{len(names)} layer names for {len(sizes)} sizes")
        rows = [
            {"run_id": run_id, "layer": i, "name": str(name), "size": operator.index(size)}
            for i, (name, size) in enumerate(zip(names, sizes, strict=True))
        ]
        with self._write() as session:
            self._require_run(session, run_id)
            session.execute(delete(RunLayer).where(RunLayer.run_id == run_id))  # type: ignore[arg-type]
            if rows:
                session.execute(insert(RunLayer), rows)

    def run_layers(self, run_id: int) -> list[RunLayer]:
        """The run's layers in order; empty when it recorded no per-layer conflict."""
        statement = (
            select(RunLayer).where(RunLayer.run_id == run_id).order_by(RunLayer.layer)  # type: ignore[arg-type]
        )
        with self._read() as session:
            return list(session.exec(statement).all())

    def layer_metrics(self, run_id: int, *, after_step: int = -1) -> list[LayerMetric]:
        """Per-layer rows after `after_step`, by step then layer: what a poller asks for."""
        statement = (
            select(LayerMetric)
            .where(LayerMetric.run_id == run_id, LayerMetric.step > after_step)
            .order_by(LayerMetric.step, LayerMetric.layer)  # type: ignore[arg-type]
        )
        with self._read() as session:
            return list(session.exec(statement).all())
