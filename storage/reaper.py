"""Ending rows whose worker is gone, for runs and evaluation jobs alike: both keep heartbeats."""

import math
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Table, update
from sqlmodel import Session, select

from .base import StoreBase
from .labels import lost_worker_error
from .models import EvalJob, Run, utcnow
from .status import RunStatus, this_host

Tracked = type[Run] | type[EvalJob]
"""A table whose rows have a worker: status, pid, heartbeat."""

Doomed = tuple[int, dict[str, Any], str]
"""(row id, the row as read, the error to record): failed only if still as read."""


def conditions(when: Mapping[str, Any], model: Tracked = Run) -> list[ColumnElement[bool]]:
    """Column == value for each item (None: IS NULL), for compare-and-set updates."""
    table: Table = model.__table__  # type: ignore[attr-defined]
    unknown = sorted(set(when) - set(table.columns.keys()))
    if unknown:
        raise ValueError(f"unknown {table.name} field(s): {', '.join(unknown)}")
    return [
        table.c[key].is_(None) if value is None else table.c[key] == value
        for key, value in when.items()
    ]


def finish_where(
    session: Session,
    row_id: int,
    status: RunStatus,
    when: Mapping[str, Any],
    error: str | None,
    now: datetime,
    table: Tracked = Run,
) -> bool:
    """End a row only if it still matches `when`; False: someone else changed it first."""
    result = session.execute(
        update(table)
        .where(table.id == row_id, *conditions(when, table))  # type: ignore[arg-type]
        .values(status=status.value, finished_at=now, error=error),
        execution_options={"synchronize_session": False},
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def _doomed(
    rows: Sequence[Any],
    cutoff: datetime,
    timeout: float,
    is_alive: Callable[[int], bool] | None,
    host: str,
) -> list[Doomed]:
    """The running rows whose worker is dead or silent since before `cutoff`.

    A pid is checked only for a worker on this `host`: elsewhere the same number is
    another process, or none, and only the heartbeat can tell.
    """
    doomed: list[Doomed] = []
    for row_id, pid, heartbeat, started, where in rows:
        last = heartbeat or started
        local = where == host and pid is not None and is_alive is not None
        if local and not is_alive(pid):  # type: ignore[misc]
            reason = "worker died without reporting"
        elif last is None or last < cutoff:
            reason = f"worker stopped reporting: no heartbeat for over {timeout:g} s"
        else:
            continue
        when = {"status": RunStatus.RUNNING.value, "pid": pid, "heartbeat_at": heartbeat}
        doomed.append((row_id, when, lost_worker_error(reason, pid, last, where)))
    return doomed


class ReaperMixin(StoreBase):
    """The reaping that `reap_stale` and `reap_stale_evals` share."""

    def _reap(
        self,
        table: Tracked,
        timeout: float,
        is_alive: Callable[[int], bool] | None,
    ) -> list[int]:
        if not (math.isfinite(timeout) and timeout > 0):
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
        now = utcnow()
        cutoff = now - timedelta(seconds=timeout)
        columns = (table.id, table.pid, table.heartbeat_at, table.started_at, table.host)
        with self._read() as session:
            rows = session.execute(
                select(*columns).where(table.status == RunStatus.RUNNING.value)
            ).all()
        doomed = _doomed(rows, cutoff, timeout, is_alive, this_host())
        if not doomed:
            return []
        reaped = []
        with self._write() as session:
            for row_id, when, error in doomed:
                if finish_where(session, row_id, RunStatus.FAILED, when, error, now, table):
                    reaped.append(row_id)
        return reaped
