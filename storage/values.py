"""Checked column values: numpy/torch scalars become plain Python (NaN: NULL on every back
end), unknown fields are refused."""

import math
import operator
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import Table

from .models import EpochMetric, LayerMetric, Run, StepMetric

Convert = Mapping[str, Callable[[Any], Any] | None]

RUN_TABLE: Table = Run.__table__  # type: ignore[attr-defined]
STEP_TABLE: Table = StepMetric.__table__  # type: ignore[attr-defined]
EPOCH_TABLE: Table = EpochMetric.__table__  # type: ignore[attr-defined]
LAYER_TABLE: Table = LayerMetric.__table__  # type: ignore[attr-defined]


def _float(value: Any) -> float | None:
    """A float, NaN as None: SQLite stores NaN as NULL, so PostgreSQL (which keeps NaN)
    is given NULL too and both back ends read a diverged step the same way."""
    number = float(value)
    return None if math.isnan(number) else number


def _converter(column: Any) -> Callable[[Any], Any] | None:
    """How to turn numpy/torch scalars into what every DB driver can bind."""
    try:
        python_type = column.type.python_type
    except NotImplementedError:
        return None
    if python_type is bool:
        return bool
    if python_type is int:
        return operator.index  # refuses floats instead of silently truncating them
    if python_type is float:
        return _float
    return None


def _converters(table: Table) -> dict[str, Callable[[Any], Any] | None]:
    return {column.key: _converter(column) for column in table.columns}


RUN_CONVERT = _converters(RUN_TABLE)
STEP_CONVERT = _converters(STEP_TABLE)
EPOCH_CONVERT = _converters(EPOCH_TABLE)
LAYER_CONVERT = _converters(LAYER_TABLE)
STEP_DEFAULTS: dict[str, Any] = {
    name: info.default
    for name, info in StepMetric.model_fields.items()
    if not info.is_required() and name != "run_id"
}
"""Filled into every step row, so one executemany binds the same columns for all."""


def coerce(convert: Convert, values: Mapping[str, Any], what: str) -> dict[str, Any]:
    """Values a driver can bind; a misspelt field is an error, not a silently lost number."""
    unknown = sorted(set(values) - set(convert))
    if unknown:
        raise ValueError(f"unknown {what} field(s): {', '.join(unknown)}")
    out: dict[str, Any] = {}
    for key, value in values.items():
        fn = convert[key]
        out[key] = value if value is None or fn is None else fn(value)
    return out


def run_values(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Run columns to write; the id is the run's identity, never an update."""
    if "id" in fields:
        raise ValueError("a run's id cannot be changed")
    return coerce(RUN_CONVERT, fields, "run")


def metric_row(convert: Convert, run_id: int, row: Mapping[str, Any], what: str) -> dict[str, Any]:
    """A metric row of `run_id`: a row that names another run is refused, not moved."""
    if row.get("run_id", run_id) != run_id:
        raise ValueError(f"a {what} row for run {row['run_id']} was given to run {run_id}")
    values = coerce(convert, row, what)
    values["run_id"] = run_id
    return values
