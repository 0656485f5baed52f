"""Sweeps: named groups of runs over a grid, added to again without queueing a config twice."""

import json
from collections.abc import Callable, Collection, Hashable, Mapping, Sequence
from typing import Any

from sqlalchemy import func
from sqlmodel import Session, select

from .base import StoreBase
from .labels import check_sweep_name
from .models import Run
from .runs import insert_run, new_run
from .schema import AdvisoryLock, take_lock
from .status import RunStatus

Key = Callable[[dict[str, Any]], Hashable]
"""What makes two configs the same run of a sweep."""

PRESENT: tuple[str, ...] = (
    RunStatus.QUEUED.value,
    RunStatus.RUNNING.value,
    RunStatus.FINISHED.value,
)
"""Statuses of a run that holds its config in a sweep: a failed attempt may be queued again."""


def _held(session: Session, sweep: str, key: Key, present: Collection[str]) -> dict[Hashable, int]:
    """Each config key the sweep holds, with the newest such run's id."""
    rows = session.execute(
        select(Run.id, Run.config)
        .where(Run.sweep == sweep, Run.status.in_(list(present)))  # type: ignore[attr-defined]
        .order_by(Run.id)  # type: ignore[arg-type]
    ).all()
    have: dict[Hashable, int] = {}
    for run_id, config in rows:
        try:
            have[key(json.loads(config))] = run_id
        except (ValueError, TypeError):
            continue  # an unreadable stored config matches nothing
    return have


class SweepsMixin(StoreBase):
    """Sweeps are a column of the run table, so their queries group runs."""

    def add_to_sweep(
        self,
        sweep: str,
        runs: Sequence[Mapping[str, Any]],
        *,
        key: Key,
        present: Collection[str] = PRESENT,
    ) -> tuple[list[int], list[int]]:
        """Queue in sweep `sweep` those of `runs` it does not hold yet; (new ids, held ids).

        `runs` are `create_run` keyword sets (without `sweep`). Two configs are the same
        run when `key(config)` is equal; the sweep holds a config when one of its runs
        with that key has a status in `present` (the newest such run's id is returned for
        it). Read and insert share one write transaction, so two `caat sweep` calls adding
        the same grid at once never queue a config twice.
        """
        sweep = check_sweep_name(sweep)
        new = [new_run(**dict(fields), sweep=sweep) for fields in runs]
        root = self.stored_runs_root()
        created: list[int] = []
        held: list[int] = []
        with self._write() as session:
            take_lock(session, AdvisoryLock.SWEEP)
            have = _held(session, sweep, key, present)
            for run in new:
                wanted = key(json.loads(run.config))
                if wanted in have:
                    if have[wanted] not in held and have[wanted] not in created:
                        held.append(have[wanted])
                    continue
                have[wanted] = insert_run(session, run, root)
                created.append(have[wanted])
        return created, held

    def sweep_runs(self, sweep: str) -> list[Run]:
        """Every run of a sweep, oldest first (attempts that failed included)."""
        statement = select(Run).where(Run.sweep == sweep.strip()).order_by(Run.id)  # type: ignore[arg-type]
        with self._read() as session:
            return list(session.exec(statement).all())

    def list_sweeps(self) -> list[tuple[str, dict[str, int]]]:
        """Each sweep with its run count per status, the most recently added-to first."""
        statement = (
            select(Run.sweep, Run.status, func.count(), func.max(Run.id))
            .where(Run.sweep.is_not(None))  # type: ignore[union-attr]
            .group_by(Run.sweep, Run.status)
        )
        with self._read() as session:
            rows = session.execute(statement).all()
        counts: dict[str, dict[str, int]] = {}
        newest: dict[str, int] = {}
        for sweep, status, count, last in rows:
            counts.setdefault(sweep, {})[status] = int(count)
            newest[sweep] = max(newest.get(sweep, 0), int(last))
        return [(sweep, counts[sweep]) for sweep in sorted(counts, key=lambda s: -newest[s])]
