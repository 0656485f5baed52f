"""Evaluation results: what `caat eval` measured, per run and checkpoint."""

from collections.abc import Collection, Mapping, Sequence
from typing import Any

from sqlalchemy import delete
from sqlmodel import select

from .base import StoreBase
from .models import EvalResult

IDENTITY: tuple[str, ...] = (
    "checkpoint",
    "weights",
    "attack",
    "norm",
    "eps",
    "samples",
    "settings",
)
"""The columns that make two results the same measurement (besides the run)."""


class EvalsMixin(StoreBase):
    """Results are replaced, never duplicated, so a table shows one number per measurement."""

    def add_evals(self, run_id: int, rows: Sequence[Mapping[str, Any]]) -> None:
        """Record evaluation results in one transaction (an identical one is replaced)."""
        with self._write() as session:
            self._require_run(session, run_id)
            for row in rows:
                row = {"weights": "", **row}
                same = [getattr(EvalResult, k) == row[k] for k in IDENTITY]
                session.execute(
                    delete(EvalResult).where(EvalResult.run_id == run_id, *same)  # type: ignore[arg-type]
                )
                session.add(EvalResult(run_id=run_id, **row))

    def evals(self, run_id: int, *, checkpoint: str | None = None) -> list[EvalResult]:
        """A run's evaluation results, oldest first."""
        statement = select(EvalResult).where(EvalResult.run_id == run_id)
        if checkpoint is not None:
            statement = statement.where(EvalResult.checkpoint == checkpoint)
        with self._read() as session:
            return list(session.exec(statement.order_by(EvalResult.id)).all())  # type: ignore[arg-type]

    def evals_of_runs(self, run_ids: Collection[int]) -> dict[int, list[EvalResult]]:
        """Evaluation results of many runs at once (one query), per run, oldest first."""
        ids = list(run_ids)
        out: dict[int, list[EvalResult]] = {i: [] for i in ids}
        if not ids:
            return out
        statement = select(EvalResult).where(EvalResult.run_id.in_(ids))  # type: ignore[attr-defined]
        with self._read() as session:
            for r in session.exec(statement.order_by(EvalResult.id)).all():  # type: ignore[arg-type]
                out[r.run_id].append(r)
        return out
