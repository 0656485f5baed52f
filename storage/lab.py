"""The conflict lab's results: per-sample reports of runs, and synthetic experiments.

A report is written whole in one transaction (its body and, for a per-sample report,
one row per training image), so a reader never sees half of one; the same computation
again replaces it. Readers poll `lab_stamp` and fetch the body only when it changed.
"""

import json
import math
import operator
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, insert, update
from sqlmodel import select

from .base import StoreBase
from .models import LabReport, SampleConflict, utcnow

LAB_KINDS = ("conflict", "synth")
"""What a lab report holds: a run's per-sample conflict, or one synthetic experiment."""
SAMPLE_COLUMNS = ("sample", "label", "pred_c", "pred_a", "margin", "loss_c", "loss_a")
SAMPLE_COLUMNS += ("phi", "mu", "norm_c", "norm_a")
_INTS = {"sample", "label", "pred_c", "pred_a"}

Stamp = tuple[int, datetime]
"""A report's id and last change: what tells a poller whether to fetch it again."""


def sample_rows(report_id: int, columns: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Per-sample columns (equal lengths, every `SAMPLE_COLUMNS`) as rows; NaN as NULL."""
    missing = [name for name in SAMPLE_COLUMNS if name not in columns]
    if missing:
        raise ValueError(f"per-sample columns lack {', '.join(missing)}")
    lengths = {len(columns[name]) for name in SAMPLE_COLUMNS}
    if len(lengths) != 1:
        raise ValueError(f"per-sample columns differ in length: {sorted(lengths)}")
    rows = []
    for values in zip(*(columns[name] for name in SAMPLE_COLUMNS), strict=True):
        row: dict[str, Any] = {"report_id": report_id}
        for name, value in zip(SAMPLE_COLUMNS, values, strict=True):
            if name in _INTS:
                row[name] = operator.index(value)
            else:
                number = float(value)
                row[name] = number if math.isfinite(number) else None
        rows.append(row)
    return rows


def _body(body: Mapping[str, Any]) -> str:
    try:
        return json.dumps(body, allow_nan=True)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"a lab report must be plain JSON: {exc}") from None


class LabMixin(StoreBase):
    """Stores and reads the lab's reports; the dashboard draws them, the CLI writes them."""

    def save_lab_report(
        self,
        kind: str,
        body: Mapping[str, Any],
        *,
        run_id: int | None = None,
        key: str = "",
        samples: Mapping[str, Sequence[Any]] | None = None,
    ) -> int:
        """Record a report (replacing one of the same kind, run and key); its id."""
        if kind not in LAB_KINDS:
            raise ValueError(f"unknown lab report kind {kind!r}; one of {', '.join(LAB_KINDS)}")
        text = _body(body)
        rows = sample_rows(0, samples) if samples is not None else []
        with self._write() as session:
            if run_id is not None:
                self._require_run(session, run_id)
            same = select(LabReport.id).where(
                LabReport.kind == kind, LabReport.run_id == run_id, LabReport.key == key
            )
            old = list(session.exec(same).all())
            if old:
                session.execute(delete(SampleConflict).where(SampleConflict.report_id.in_(old)))  # type: ignore[attr-defined]
                session.execute(delete(LabReport).where(LabReport.id.in_(old)))  # type: ignore[union-attr]
            report = LabReport(kind=kind, run_id=run_id, key=key, body=text)
            session.add(report)
            session.flush()
            assert report.id is not None
            if rows:
                own = [row | {"report_id": report.id} for row in rows]
                session.execute(insert(SampleConflict), own)
            return report.id

    def update_lab_body(self, report_id: int, body: Mapping[str, Any]) -> None:
        """Replace a report's body (its per-sample rows stay): a later finding added."""
        text = _body(body)
        with self._write() as session:
            result = session.execute(
                update(LabReport)
                .where(LabReport.id == report_id)  # type: ignore[arg-type]
                .values(body=text, updated_at=utcnow()),
                execution_options={"synchronize_session": False},
            )
            if result.rowcount == 0:  # type: ignore[attr-defined]
                raise ValueError(f"no lab report {report_id}")

    def lab_stamp(self, kind: str, *, run_id: int | None = None) -> Stamp | None:
        """The newest report's (id, last change) of this kind (and run), or None."""
        statement = (
            select(LabReport.id, LabReport.updated_at)
            .where(LabReport.kind == kind)
            .order_by(LabReport.updated_at.desc(), LabReport.id.desc())  # type: ignore[attr-defined,union-attr]
            .limit(1)
        )
        if run_id is not None:
            statement = statement.where(LabReport.run_id == run_id)
        with self._read() as session:
            row = session.exec(statement).first()
        return None if row is None else (int(row[0]), row[1])

    def latest_lab_report(self, kind: str, *, run_id: int | None = None) -> LabReport | None:
        """The newest report of this kind (and run), or None."""
        stamp = self.lab_stamp(kind, run_id=run_id)
        return None if stamp is None else self.lab_report(stamp[0])

    def lab_report(self, report_id: int) -> LabReport | None:
        with self._read() as session:
            return session.get(LabReport, report_id)

    def lab_reports(self, kind: str, *, run_id: int | None = None) -> list[LabReport]:
        """Reports of this kind (and run), the newest change first."""
        statement = select(LabReport).where(LabReport.kind == kind)
        if run_id is not None:
            statement = statement.where(LabReport.run_id == run_id)
        order = (LabReport.updated_at.desc(), LabReport.id.desc())  # type: ignore[attr-defined,union-attr]
        with self._read() as session:
            return list(session.exec(statement.order_by(*order)).all())

    def sample_conflicts(self, report_id: int) -> dict[str, list[Any]]:
        """A per-sample report's rows as columns (`SAMPLE_COLUMNS`), by training index."""
        statement = (
            select(SampleConflict)
            .where(SampleConflict.report_id == report_id)
            .order_by(SampleConflict.sample)  # type: ignore[arg-type]
        )
        with self._read() as session:
            rows = session.exec(statement).all()
        return {name: [getattr(r, name) for r in rows] for name in SAMPLE_COLUMNS}
