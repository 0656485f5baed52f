"""The processes of the store concurrency tests, for both back ends (tests/test_store.py on
SQLite and PostgreSQL, tests/test_postgres_concurrency.py at a lab's scale): writers stream
batches of step rows through BatchWriter while readers poll, and each reports on a queue."""

from __future__ import annotations

import multiprocessing
import os
import queue
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from caat_storage import BatchWriter, RunStatus, Store


@dataclass(frozen=True)
class Load:
    """How much each writer writes, and how often a reader looks."""

    batches: int  # flushes per writer (an epoch row each)
    rows_per_batch: int
    pause: float = 0.005  # seconds between a reader's polls

    @property
    def rows(self) -> int:
        return self.batches * self.rows_per_batch


def new_run(store: Store, name: str, epochs_total: int) -> int:
    return store.create_run(
        name=name,
        config={"method": "caat", "gamma": 0.8, "name": name},
        method="caat",
        param=0.8,
        dataset="digits",
        model="mlp",
        eps=0.1,
        epochs_total=epochs_total,
    )


def writer_proc(url: str, name: str, barrier: Any, results: Any, load: Load) -> None:
    """One run's rows, a batch per flush (one transaction each), then `finished`."""
    try:
        with Store.open(url) as store:
            run_id = new_run(store, name, epochs_total=load.batches)
            store.mark_running(run_id, pid=os.getpid())
            barrier.wait(timeout=60)
            writer = BatchWriter(store, run_id, interval=0.0, heartbeat_interval=1.0)
            step, size = 0, load.rows_per_batch
            for batch in range(load.batches):
                rows = [{"step": s, "epoch": batch, "t": s * 0.01, "loss_c": 1.0 / (s + 1)}
                        for s in range(step, step + size)]  # fmt: skip
                writer.add_steps(rows)
                step += size
                writer.add_epoch({"epoch": batch, "train_clean": batch / load.batches})
                writer.set_run_fields(steps_done=step, epochs_done=batch + 1)
                if not writer.maybe_flush():
                    raise AssertionError("a batch past its interval was not written")
            writer.flush()
            store.finish(run_id, RunStatus.FINISHED)
        results.put((name, None))
    except BaseException:
        results.put((name, traceback.format_exc()))
        raise SystemExit(1) from None


def reader_proc(url: str, name: str, barrier: Any, stop: Any, results: Any, load: Load) -> None:
    """Poll every run's new rows until `stop`: each run's steps arrive in order, whole
    batches only (a batch is one transaction); reports what it saw and how often it looked."""
    try:
        seen: dict[str, int] = {}  # run name -> steps read so far
        polls = 0
        with Store.open(url) as store:
            barrier.wait(timeout=60)
            while True:
                last_round = stop.is_set()  # read before polling: the last poll sees everything
                for run in store.list_runs():
                    assert run.id is not None
                    have = seen.get(run.name, 0)
                    new = [row.step for row in store.steps(run.id, after_step=have - 1)]
                    if new != list(range(have, have + len(new))):
                        raise AssertionError(f"{run.name}: after {have - 1} got {new[:5]}...")
                    if len(new) % load.rows_per_batch:
                        raise AssertionError(f"{run.name}: saw part of a batch ({len(new)} rows)")
                    seen[run.name] = have + len(new)
                    store.epochs(run.id)
                polls += 1
                if last_round:
                    break
                time.sleep(load.pause)
        results.put((name, {"seen": seen, "polls": polls}))
    except BaseException:
        results.put((name, traceback.format_exc()))
        raise SystemExit(1) from None


# -- running them ------------------------------------------------------------------------


def collect_reports(
    results: Any, procs: list[Any], names: list[str], timeout: float = 120
) -> dict[str, Any]:
    """Each named process's report (`(name, payload)` on the queue); fail fast if one dies
    without reporting."""
    out: dict[str, Any] = {}
    deadline = time.monotonic() + timeout
    while set(names) - set(out):
        try:
            name, payload = results.get(timeout=0.2)
        except queue.Empty:
            dead = [p for p in procs if p.name not in out and p.exitcode not in (None, 0)]
            if dead:
                time.sleep(0.5)  # a report sent just before exiting may still be in the pipe
                while not results.empty():
                    name, payload = results.get(timeout=1)
                    out[name] = payload
                silent = [f"{p.name} (exit {p.exitcode})" for p in dead if p.name not in out]
                if silent:
                    pytest.fail(f"died without a report: {', '.join(silent)}; see captured stderr")
            if time.monotonic() > deadline:
                pytest.fail(f"no report within {timeout:g} s from {sorted(set(names) - set(out))}")
            continue
        out[name] = payload
    return out


def join_all(procs: list[Any]) -> None:
    for proc in procs:
        proc.join(timeout=30)
        if proc.is_alive():
            proc.terminate()
            proc.join()


def race(
    target: Callable[..., None], url: str, names: list[str]
) -> tuple[dict[str, Any], list[int | None]]:
    """`target(url, name, barrier, results)` in a spawned process per name, released at once
    by one barrier; (their reports by name, their exit codes)."""
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(len(names)), ctx.Queue()
    procs = [
        ctx.Process(target=target, args=(url, name, barrier, results), name=name) for name in names
    ]
    try:
        for proc in procs:
            proc.start()
        outcome = collect_reports(results, procs, names)
    finally:
        join_all(procs)
    return outcome, [proc.exitcode for proc in procs]
