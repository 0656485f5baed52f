"""Sweeps: a grid of runs recorded under one name, and the loop that works through it.

A sweep is only a label on runs (`Run.sweep`), so the dashboard, `caat runs` and the
SA-AA front see its runs like any other. Adding a grid to a sweep queues just the
configs it does not hold yet, which is what makes a sweep resumable. Torch-free: the
CLI and the dashboard use it; worker processes do the training.

The grid itself (comma lists, expansion, names, what makes two runs the same) lives in
`caat_app.runs.grid`; its names are re-exported here for the CLI and the launch form.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from caat_app.errors import CaatError, ConfigError
from caat_app.runs.grid import (
    LIST_KINDS,
    check_sweep,
    config_key,
    expand,
    name_runs,
    parse_list,
    sweep_options,
    value_text,
)
from caat_app.runs.launcher import Gpu, Launch, Scheduler, launch_worker
from caat_app.runs.manage import (
    RESUMABLE,
    cancel_run,
    pid_alive,
    resume_point,
    resume_run,
    run_fields,
)
from caat_app.runs.stored import config_of, options_of
from caat_storage import RunStatus

if TYPE_CHECKING:
    from caat_app.config import RunConfig
    from caat_storage import Run, Store

__all__ = [
    "ACTIVE",
    "LIST_KINDS",
    "PRESENT",
    "STATUS_ORDER",
    "SweepRow",
    "check_sweep",
    "config_key",
    "counts_text",
    "current_runs",
    "expand",
    "name_runs",
    "parse_list",
    "plan_sweep",
    "resume_stopped",
    "run_sweep",
    "status_counts",
    "sweep_configs",
    "sweep_options",
    "sweep_rows",
]

# A run counts as done or on its way in these states; any other is tried again.
PRESENT = (RunStatus.QUEUED.value, RunStatus.RUNNING.value, RunStatus.FINISHED.value)
ACTIVE = (RunStatus.QUEUED.value, RunStatus.RUNNING.value)
# How a sweep's status counts are listed.
STATUS_ORDER = tuple(
    status.value
    for status in (
        RunStatus.FINISHED,
        RunStatus.FAILED,
        RunStatus.DIVERGED,
        RunStatus.CANCELLED,
        RunStatus.RUNNING,
        RunStatus.QUEUED,
    )
)


# --------------------------------------------------------------------------- the store


def plan_sweep(
    store: Store, name: str, configs: Sequence[RunConfig]
) -> tuple[list[int], list[int]]:
    """Queue in sweep `name` the configs it does not hold; returns (new ids, held ids).

    A config is held when a run of the sweep with the same config (the name aside) is
    finished, queued or running. A config whose current run failed or was cancelled
    after a checkpoint continues from it (`resume_stopped`: that run is queued again and
    counted new); any other failed, cancelled or diverged one is queued again as a new
    run trained from the start, and the old one stays as history. Held ids: one per
    held config, its newest such run.
    """
    name = check_sweep(name)
    resumed = resume_stopped(store, name, configs)
    new, held = store.add_to_sweep(name, [run_fields(cfg) for cfg in configs], key=config_key)
    return resumed + new, [run_id for run_id in held if run_id not in resumed]


def resume_stopped(store: Store, name: str, configs: Sequence[RunConfig]) -> list[int]:
    """Queue again, to continue from its checkpoint, each of these configs' current run
    (`current_runs`) that failed or was cancelled and has one; their ids."""
    wanted = {config_key(cfg) for cfg in configs}
    resumed: list[int] = []
    for run in current_runs(store.sweep_runs(name)):
        if run.status not in RESUMABLE or run.id is None or _run_key(run) not in wanted:
            continue
        if resume_point(run) is None:
            continue
        try:
            resume_run(store, run)
        except CaatError:
            continue  # it changed meanwhile (another sweep resumed it): it is held now
        resumed.append(run.id)
    return resumed


def sweep_configs(store: Store, name: str) -> list[RunConfig]:
    """The distinct configs a sweep holds (each under its first run's name), oldest first."""
    configs: dict[str, RunConfig] = {}
    for run in store.sweep_runs(name):
        try:
            cfg = config_of(run)
        except CaatError:
            continue  # unreadable or invalid: it cannot be run again anyway
        configs.setdefault(config_key(cfg), cfg)
    return list(configs.values())


def _run_key(run: Run) -> str:
    try:
        return config_key(config_of(run))
    except CaatError:
        return f"run {run.id}"  # unreadable: a config of its own


def current_runs(runs: Iterable[Run]) -> list[Run]:
    """One run per config of the grid: its newest held run, else its newest attempt.

    A config that failed and was queued again is counted once, by its new run; the
    failed attempt is history.
    """
    best: dict[str, Run] = {}
    for run in runs:  # oldest first: a later run replaces an earlier one of its kind
        key = _run_key(run)
        held = best.get(key)
        if held is None or run.status in PRESENT or held.status not in PRESENT:
            best[key] = run
    return sorted(best.values(), key=lambda r: r.id or 0)


def status_counts(runs: Iterable[Run]) -> dict[str, int]:
    """How many of the grid's configs are in each status (see `current_runs`)."""
    counts = dict.fromkeys(STATUS_ORDER, 0)
    for run in current_runs(runs):
        counts[run.status] = counts.get(run.status, 0) + 1
    return counts


# --------------------------------------------------------------------------- running


def _stop(store: Store, runs: Sequence[Run], asked: set[int]) -> None:
    """Cancel what is queued and ask running workers to stop, each once.

    A run a dispatcher has claimed but not started yet (no pid) is asked on a later
    poll; one whose worker turns out dead is recorded failed by `cancel_run`.
    """
    for run in runs:
        assert run.id is not None
        if run.status not in ACTIVE or run.id in asked:
            continue
        try:
            cancel_run(store, run)
        except CaatError:
            now = store.get_run(run.id)
            if now is not None and now.status == RunStatus.RUNNING and now.pid is None:
                continue  # claimed a moment ago: its worker has no pid to signal yet
        asked.add(run.id)


def run_sweep(
    store: Store,
    name: str,
    *,
    jobs: int,
    gpus: list[Gpu],
    poll: float = 1.0,
    on_progress: Callable[[dict[str, int]], None] | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    launch: Launch = launch_worker,
    stale_timeout: float = 60.0,
    stop_timeout: float = 120.0,
) -> dict[str, int]:
    """Start the sweep's queued runs, at most `jobs` at once, until none is queued or running.

    Workers are separate processes (started by `launch`), so a run started here, by a
    dashboard or by another `caat sweep` is all the same: this loop only dispatches
    and watches the store. Each GPU takes up to `jobs` runs and the CPU `jobs`, as the
    launcher counts them machine-wide, and the sweep never has more than `jobs` running.
    When `should_stop()` turns true, queued runs are cancelled and running workers
    asked to stop (they checkpoint and end `cancelled`); it waits up to `stop_timeout`
    seconds for them. Returns the status counts of the grid (`status_counts`).
    """
    name = check_sweep(name)
    if jobs < 1:
        raise ConfigError(f"--jobs: must be at least 1, got {jobs}")
    scheduler = Scheduler(store, gpus=gpus, per_gpu=jobs, max_cpu=jobs, launch=launch)
    stopping_since: float | None = None
    asked: set[int] = set()
    while True:
        store.reap_stale(timeout=stale_timeout, is_alive=pid_alive)
        if stopping_since is None and should_stop():
            stopping_since = time.monotonic()
        runs = store.sweep_runs(name)
        if stopping_since is not None:
            _stop(store, runs, asked)
            runs = store.sweep_runs(name)
        else:
            running = sum(r.status == RunStatus.RUNNING for r in runs)
            queued = [r.id for r in runs if r.status == RunStatus.QUEUED and r.id is not None]
            if queued and running < jobs:
                scheduler.dispatch(only=queued[: jobs - running])
                runs = store.sweep_runs(name)
        counts = status_counts(runs)
        if on_progress is not None:
            on_progress(counts)
        if not any(r.status in ACTIVE for r in runs):
            return counts
        if stopping_since is not None and time.monotonic() - stopping_since > stop_timeout:
            return counts
        nap(poll, should_stop if stopping_since is None else lambda: False)


def nap(seconds: float, wake: Callable[[], bool]) -> None:
    """Sleep, but wake early when `wake()` turns true (a Ctrl-C is answered at once)."""
    deadline = time.monotonic() + seconds
    while not wake():
        left = deadline - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(left, 0.1))


# --------------------------------------------------------------------------- terminal


@dataclass(frozen=True)
class SweepRow:
    """One line of a sweep's results table: the run, what sets it apart, its seed."""

    run: Run
    label: str
    seed: int | None


def sweep_rows(runs: Sequence[Run]) -> list[SweepRow]:
    """The grid's current runs (`current_runs`), labelled by method, parameter and any
    other option that differs between them."""
    current = current_runs(runs)
    configs = [_options_or_empty(run) for run in current]
    fixed = {"name", "method", "lam", "gamma", "seed"}
    keys = sorted({k for c in configs for k in c} - fixed)
    differ = [k for k in keys if len({repr(c.get(k)) for c in configs}) > 1]
    rows = []
    for run, data in zip(current, configs, strict=True):
        symbol = "γ" if run.method == "caat" else "λ"
        param = "-" if run.param is None else f"{run.param:g}"
        label = " ".join(
            [f"{run.method} {symbol}={param}"] + [f"{k}={value_text(data.get(k))}" for k in differ]
        )
        seed = data.get("seed")
        rows.append(SweepRow(run, label, seed if isinstance(seed, int) else None))
    return rows


def _options_or_empty(run: Run) -> dict[str, Any]:
    """The run's stored options; none when they cannot be read (its label says less)."""
    try:
        return options_of(run)
    except CaatError:
        return {}


def counts_text(counts: Mapping[str, int]) -> str:
    """`finished 3 · running 2 · queued 1`: the statuses that have runs, in a fixed order."""
    order = [s for s in STATUS_ORDER if counts.get(s)] + [
        s for s in counts if s not in STATUS_ORDER and counts[s]
    ]
    return " · ".join(f"{status} {counts[status]}" for status in order) or "no runs"
