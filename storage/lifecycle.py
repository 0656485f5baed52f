"""A run's life as its launcher and worker report it: claimed, running, beating, ended."""

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import update
from sqlmodel import Session, select

from .metrics import trim_after
from .models import Run, utcnow
from .reaper import ReaperMixin, finish_where
from .schema import AdvisoryLock, take_lock
from .status import RunStatus, final_status, this_host
from .values import run_values

Chooser = Callable[[list[Run], list[Run]], Sequence[tuple[int, int | None]]]
"""`choose(running, queued)` -> the (run id, GPU index or None) pairs to start."""


def _claim(session: Session, run_id: int, gpu: int | None, now: datetime) -> bool:
    """Move one run from queued to running; False if it was no longer queued."""
    result = session.execute(
        update(Run)
        .where(Run.id == run_id, Run.status == RunStatus.QUEUED.value)  # type: ignore[arg-type]
        .values(
            status=RunStatus.RUNNING.value,
            gpu=gpu,
            pid=None,
            started_at=None,
            heartbeat_at=now,
            finished_at=None,
            error=None,
        ),
        execution_options={"synchronize_session": False},
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


class LifecycleMixin(ReaperMixin):
    """Status changes, each a compare-and-set or a single write, so racing processes agree."""

    def mark_running(self, run_id: int, pid: int, host: str | None = None) -> None:
        """The worker has started (on `host`, default this machine); a rerun forgets the
        previous attempt's end and error."""
        now = utcnow()
        with self._write() as session:
            self._update_run(
                session,
                run_id,
                {
                    "status": RunStatus.RUNNING.value,
                    "started_at": now,
                    "heartbeat_at": now,
                    "pid": pid,
                    "host": host or this_host(),
                    "finished_at": None,
                    "error": None,
                },
            )

    def heartbeat(self, run_id: int) -> None:
        """Proof of life: a running run whose heartbeat is old has a dead worker."""
        with self._write() as session:
            self._update_run(session, run_id, {"heartbeat_at": utcnow()})

    def finish(
        self,
        run_id: int,
        status: RunStatus,
        *,
        error: str | None = None,
        fields: dict[str, Any] | None = None,
    ) -> None:
        """Record how a run ended; `fields` lands in the same transaction as the status."""
        status = final_status(status)
        values = run_values(fields or {})
        values.update(status=status.value, finished_at=utcnow(), error=error)
        with self._write() as session:
            self._update_run(session, run_id, values)

    def finish_if(
        self,
        run_id: int,
        status: RunStatus,
        *,
        when: Mapping[str, Any],
        error: str | None = None,
    ) -> bool:
        """End a run only if its row still matches `when` (column -> value, None: empty).

        Compare-and-set: a cancel or a reap racing a worker that reports at the same
        moment changes nothing, and the caller learns it from the False.
        """
        status = final_status(status)
        with self._write() as session:
            return finish_where(session, run_id, status, when, error, utcnow())

    def reap_stale(
        self, *, timeout: float = 60.0, is_alive: Callable[[int], bool] | None = None
    ) -> list[int]:
        """Mark `failed` the running runs whose worker is gone; returns their ids.

        Gone: no heartbeat (or start) for `timeout` seconds, or, when `is_alive` is given,
        a pid it says is dead. Only pass `is_alive` for workers on this machine. The rows
        are read without the write lock (a dashboard calls this every poll) and each is
        then failed only if unchanged since (still running, same pid, same heartbeat), so
        a worker that reports or finishes meanwhile wins.
        """
        return self._reap(Run, timeout, is_alive)

    def claim_runs(self, choose: Chooser) -> list[tuple[int, int | None]]:
        """Move queued runs to `running` before their workers start; returns (id, gpu) pairs.

        `choose(running, queued)` (queued oldest first) returns the (run id, GPU index or
        None) to start. It is called inside one write transaction, so two dashboards
        dispatching at once see each other's claims and never exceed a GPU's limit or
        start a run twice. A claimed run has a heartbeat (so a launcher that dies before
        the worker starts is reaped by timeout), no pid yet and no `started_at` until the
        worker's own `mark_running`.
        """
        with self._read() as session:  # the common case, nothing queued, takes no lock
            queued_one = select(Run.id).where(Run.status == RunStatus.QUEUED.value).limit(1)
            if session.execute(queued_one).first() is None:
                return []
        now = utcnow()
        claimed: list[tuple[int, int | None]] = []
        with self._write() as session:
            take_lock(session, AdvisoryLock.DISPATCH)
            running = list(
                session.exec(select(Run).where(Run.status == RunStatus.RUNNING.value)).all()
            )
            queued = list(
                session.exec(
                    select(Run).where(Run.status == RunStatus.QUEUED.value).order_by(Run.id)  # type: ignore[arg-type]
                ).all()
            )
            for run_id, gpu in choose(running, queued) if queued else ():
                if _claim(session, run_id, gpu, now):
                    claimed.append((run_id, gpu))
        return claimed

    def prepare_resume(
        self,
        run_id: int,
        *,
        step: int,
        epochs_done: int,
        fields: Mapping[str, Any] | None = None,
        resumable: Sequence[str] = (RunStatus.FAILED.value, RunStatus.CANCELLED.value),
    ) -> bool:
        """Queue a stopped run again to continue from its checkpoint after `step` steps.

        One transaction: a compare-and-set from a status in `resumable` to queued (False,
        and nothing changed, when the run is in none), then the rows its last worker
        wrote after the checkpoint are deleted (`trim_after`) and the run's counts and
        summary `fields` set to the checkpoint's. `steps_done` > 0 on a queued run is
        what tells its worker to resume.
        """
        values = run_values(fields or {})
        values.update(
            status=RunStatus.QUEUED.value,
            steps_done=step,
            epochs_done=epochs_done,
            pid=None,
            finished_at=None,
            error=None,
        )
        with self._write() as session:
            result = session.execute(
                update(Run)
                .where(Run.id == run_id, Run.status.in_(list(resumable)))  # type: ignore[arg-type, attr-defined]
                .values(**values),
                execution_options={"synchronize_session": False},
            )
            if not result.rowcount:  # type: ignore[attr-defined]
                self._require_run(session, run_id)
                return False
            last_phi, last_mu = trim_after(session, run_id, step=step, epochs_done=epochs_done)
            self._update_run(session, run_id, {"last_phi": last_phi, "last_mu": last_mu})
        return True
