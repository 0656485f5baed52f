"""Evaluation jobs: a `caat eval` request's life, reported by the process that runs it.

A job is `queued` until a launcher claims it: `running` with a host and a heartbeat but
no pid (its worker is starting), then the worker's `start_eval_job` records its pid.
A launcher that starts its worker at once records the job claimed from the outset
(`claim=True`), so no agent can take it in between.
"""

import json
from collections.abc import Callable, Collection, Mapping
from typing import Any

from sqlalchemy import ColumnElement, and_, or_, update
from sqlmodel import select

from .base import StoreError
from .models import EvalJob, utcnow
from .reaper import ReaperMixin
from .status import ACTIVE_STATUSES, RunStatus, final_status, this_host

_ACTIVE: list[str] = [status.value for status in ACTIVE_STATUSES]


def _claimed() -> ColumnElement[bool]:
    """A claimed job: running, its worker not started yet (no pid)."""
    return and_(EvalJob.status == RunStatus.RUNNING.value, EvalJob.pid.is_(None))  # type: ignore[union-attr]


def _claim_values() -> dict[str, Any]:
    """The fields of a job claimed by this host: its worker has not started, so no pid."""
    return {
        "status": RunStatus.RUNNING.value,
        "pid": None,
        "host": this_host(),
        "heartbeat_at": utcnow(),
    }


class JobsMixin(ReaperMixin):
    """Every change is a compare-and-set on the status, so a cancel and a worker never clash."""

    def create_eval_job(
        self, run_id: int, spec: Mapping[str, Any], *, total: int = 0, claim: bool = False
    ) -> int:
        """Record an evaluation request as `queued`; `spec` is its checked request as JSON.

        `claim`: recorded already claimed by this host, for a launcher that starts its
        worker now; an agent never sees it queued. The reaper ends it if no worker starts.
        """
        with self._write() as session:
            self._require_run(session, run_id)
            job = EvalJob(
                run_id=run_id,
                spec=json.dumps(dict(spec), sort_keys=True),
                total=total,
                **(_claim_values() if claim else {}),
            )
            session.add(job)
            session.flush()
            assert job.id is not None
            return job.id

    def get_eval_job(self, job_id: int) -> EvalJob | None:
        with self._read() as session:
            return session.get(EvalJob, job_id)

    def eval_jobs(self, run_id: int | None = None, *, active: bool = False) -> list[EvalJob]:
        """Evaluation jobs, newest first: a run's, or all; `active`: queued or running only."""
        statement = select(EvalJob)
        if run_id is not None:
            statement = statement.where(EvalJob.run_id == run_id)
        if active:
            statement = statement.where(EvalJob.status.in_(_ACTIVE))  # type: ignore[attr-defined]
        with self._read() as session:
            return list(session.exec(statement.order_by(EvalJob.id.desc())).all())  # type: ignore[union-attr]

    def queued_eval_jobs(self, limit: int | None = None) -> list[EvalJob]:
        """The jobs waiting for an agent, oldest first (at most `limit`)."""
        statement = select(EvalJob).where(EvalJob.status == RunStatus.QUEUED.value)
        statement = statement.order_by(EvalJob.id).limit(limit)  # type: ignore[arg-type]
        with self._read() as session:
            return list(session.exec(statement).all())

    def claim_eval_job(self, job_id: int) -> bool:
        """Take a queued job for a worker this host starts now (compare-and-set, so two
        agents never both get it); False when it was not queued any more."""
        return self._update_job(job_id, _claim_values(), [RunStatus.QUEUED.value])

    def _update_job(
        self,
        job_id: int,
        values: Mapping[str, Any],
        statuses: Collection[str],
        also: ColumnElement[bool] | None = None,
    ) -> bool:
        """Change a job only while its status is one of `statuses` (compare-and-set), or
        it matches `also`."""
        condition = EvalJob.status.in_(list(statuses))  # type: ignore[attr-defined]
        if also is not None:
            condition = or_(condition, also)
        with self._write() as session:
            result = session.execute(
                update(EvalJob)
                .where(EvalJob.id == job_id, condition)  # type: ignore[arg-type]
                .values(**values),
                execution_options={"synchronize_session": False},
            )
            return bool(result.rowcount)  # type: ignore[attr-defined]

    def start_eval_job(self, job_id: int, pid: int, *, total: int) -> None:
        """The job's process has started it: a queued job, or one claimed for this worker;
        a job already ended (cancelled) or started by another worker is refused."""
        now = utcnow()
        started = self._update_job(
            job_id,
            {
                "status": RunStatus.RUNNING.value,
                "pid": pid,
                "host": this_host(),
                "total": total,
                "done": 0,
                "started_at": now,
                "heartbeat_at": now,
            },
            [RunStatus.QUEUED.value],
            _claimed(),
        )
        if not started:
            job = self.get_eval_job(job_id)
            state = "does not exist" if job is None else f"is {job.status}"
            raise StoreError(f"evaluation {job_id} {state}; nothing to run")

    def eval_progress(self, job_id: int, *, done: int | None = None, current: str = "") -> None:
        """Where a running job is (also its heartbeat); `done` None only beats."""
        values: dict[str, Any] = {"heartbeat_at": utcnow()}
        if done is not None:
            values.update(done=done, current=current)
        self._update_job(job_id, values, [RunStatus.RUNNING.value])

    def finish_eval_job(
        self,
        job_id: int,
        status: RunStatus,
        *,
        error: str | None = None,
        when: str | None = None,
        unstarted: bool = False,
    ) -> bool:
        """End a job (only from status `when`, if given; `unstarted`: only while claimed and
        its worker has not started it); False when it had already ended (or started)."""
        status = final_status(status)
        values = {"status": status.value, "finished_at": utcnow(), "error": error, "current": ""}
        if unstarted:
            return self._update_job(job_id, values, [], _claimed())
        return self._update_job(job_id, values, [when] if when is not None else _ACTIVE)

    def reap_stale_evals(
        self, *, timeout: float = 60.0, is_alive: Callable[[int], bool] | None = None
    ) -> list[int]:
        """`reap_stale` for evaluation jobs: a job whose worker is gone ends `failed`."""
        return self._reap(EvalJob, timeout, is_alive)
