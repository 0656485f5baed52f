"""Many processes on one PostgreSQL store, as on a shared lab server: writers stream step
rows through BatchWriter while a reader polls (nothing lost, nothing twice, no batch seen
in part), and claimers share one queue through `Store.claim_runs` (each run once, a limit
on running runs never exceeded)."""

from __future__ import annotations

import multiprocessing
import os
import time
import traceback
from typing import Any

import pytest
from store_procs import Load, collect_reports, join_all, new_run, race, reader_proc, writer_proc

from caat_storage import Run, RunStatus, Store

WRITERS = 8
LOAD = Load(batches=40, rows_per_batch=250, pause=0.05)
"""Each writer: 10 000 rows in 40 flushes (one transaction each); a dashboard-like reader."""
ROWS = LOAD.rows
CLAIMERS = 4
QUEUED = 40
RUNNING_LIMIT = 6
"""How many runs may run at once, all claimers together: their chooser sees the others'."""


# -- 8 writers and a reader -----------------------------------------------------------------


@pytest.mark.slow
def test_eight_writers_and_a_reader_lose_nothing(pg_url: str) -> None:
    Store.open(pg_url).close()
    ctx = multiprocessing.get_context("spawn")
    names = [f"writer-{i}" for i in range(WRITERS)]
    barrier, stop, results = ctx.Barrier(WRITERS + 1), ctx.Event(), ctx.Queue()
    procs = [
        ctx.Process(target=writer_proc, args=(pg_url, n, barrier, results, LOAD), name=n)
        for n in names
    ]
    procs.append(
        ctx.Process(
            target=reader_proc,
            args=(pg_url, "reader", barrier, stop, results, LOAD),
            name="reader",
        )
    )
    try:
        for proc in procs:
            proc.start()
        outcome = collect_reports(results, procs, names)
        stop.set()
        outcome |= collect_reports(results, procs, ["reader"])
    finally:
        stop.set()
        join_all(procs)
    assert {name: error for name, error in outcome.items() if isinstance(error, str)} == {}
    with Store.open(pg_url) as store:
        runs = store.list_runs()
        assert sorted(run.name for run in runs) == names
        for run in runs:
            assert run.id is not None
            assert [row.step for row in store.steps(run.id)] == list(range(ROWS))
            assert run.status == RunStatus.FINISHED and run.steps_done == ROWS
    assert outcome["reader"]["seen"] == dict.fromkeys(names, ROWS)
    assert outcome["reader"]["polls"] > 1


# -- 4 claimers, 40 queued runs ----------------------------------------------------------------


def _one_more(running: list[Run], queued: list[Run]) -> list[tuple[int, int | None]]:
    """An agent's chooser: the oldest queued run, while fewer than the limit run."""
    if len(running) > RUNNING_LIMIT:
        raise AssertionError(f"{len(running)} runs running, over the limit {RUNNING_LIMIT}")
    return [(queued[0].id, None)] if queued and len(running) < RUNNING_LIMIT else []  # type: ignore[list-item]


def _claimer_proc(url: str, name: str, barrier: Any, results: Any) -> None:
    try:
        claimed: list[int] = []
        with Store.open(url) as store:
            barrier.wait(timeout=60)
            idle_since = time.monotonic()
            while time.monotonic() - idle_since < 2.0:  # the queue stayed empty: done
                got = store.claim_runs(_one_more)
                for run_id, _gpu in got:
                    claimed.append(run_id)
                    store.mark_running(run_id, pid=os.getpid(), host=name)
                    time.sleep(0.02)  # "trains"
                    store.finish(run_id, RunStatus.FINISHED)
                if got:
                    idle_since = time.monotonic()
                else:
                    time.sleep(0.01)
        results.put((name, claimed))
    except BaseException:
        results.put((name, traceback.format_exc()))


@pytest.mark.slow
def test_four_claimers_share_forty_queued_runs(pg_url: str) -> None:
    with Store.open(pg_url) as store:
        queued = [new_run(store, f"queued-{i}", epochs_total=1) for i in range(QUEUED)]
    names = [f"claimer-{i}" for i in range(CLAIMERS)]
    outcome, _ = race(_claimer_proc, pg_url, names)
    assert {name: error for name, error in outcome.items() if isinstance(error, str)} == {}
    claims = [run_id for name in names for run_id in outcome[name]]
    assert sorted(claims) == queued  # every run claimed, and none twice
    assert sum(1 for name in names if outcome[name]) > 1  # the queue was really shared
    with Store.open(pg_url) as store:
        for name in names:
            for run_id in outcome[name]:
                run = store.get_run(run_id)
                assert run is not None and run.status == RunStatus.FINISHED
                assert run.host == name  # the worker that claimed it is the one that ran it
