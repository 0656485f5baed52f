"""`caat paper EXP --slurm …`: each training phase, then the evaluations, as Slurm job
arrays (`runs.slurm`), waited for in the foreground with `caat sweep`'s bar.

Waiting only watches the store, so a Ctrl-C stops the waiting and nothing else: the jobs
keep running on Slurm and the same command again picks up where they are. It submits
only what is queued and held by no live job; what runs elsewhere (an agent) or has
finished is never submitted. A queued run or evaluation whose job ended without taking
it (the job failed to start, or was cancelled while pending) is marked failed with the
reason, so the wait ends and the same command queues it again. Torch-free.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.text import Text

from caat_app.cli.base import err
from caat_app.cli.progress import interruptible
from caat_app.errors import ConfigError
from caat_app.runs.sweep import ACTIVE, nap
from caat_storage import RunStatus

if TYPE_CHECKING:
    from caat_app.paper.scale import Plan
    from caat_storage import Store

SlurmOption = typer.Option(
    None,
    "--slurm",
    help="train and evaluate as Slurm job arrays and wait for them, e.g. "
    "partition=gpu,time=12:00:00,gpus-per-task=1",
)
POLL = 2.0  # seconds between two looks at the store
CHECK_JOBS_EVERY = 15.0  # seconds between two looks at the queued ones' Slurm jobs
STALE_AFTER = 60.0  # seconds without a heartbeat before a running worker counts as dead
_QUEUED = RunStatus.QUEUED.value
_LOST = "its Slurm job ended without starting it (see the job's log under {})"


@dataclass(frozen=True)
class Workers:
    """Where an experiment's work runs: `jobs` local workers at once, or Slurm jobs."""

    jobs: int = 1
    slurm: str | None = None


def workers(jobs: int | None, slurm: str | None, *, check: bool) -> Workers:
    """The options as `Workers`, or a one-line error: bad `--slurm` text, `--jobs` with it
    (each run is its own Slurm task), or (when `check`) no cluster to submit to."""
    from caat_app.runs.slurm import check_cluster, parameters

    if slurm is None:
        return Workers(jobs or 1)
    if jobs is not None:
        raise ConfigError("--jobs is for local workers; with --slurm each run is a Slurm task")
    parameters(slurm)
    if check:
        check_cluster()
    return Workers(slurm=slurm)


def stopped_text(how: Workers, sweep: str) -> str:
    """What a Ctrl-C leaves behind, in one line."""
    if how.slurm is None:
        return f"stopped; run the same command again to resume ({sweep})"
    return (
        "stopped waiting; the Slurm jobs keep running (nothing was cancelled); "
        f"run the same command again to resume ({sweep})"
    )


def _held(job: dict[str, str] | None) -> bool:
    """Whether a recorded Slurm job may still take (or is running) its work."""
    from caat_app.runs.slurm import job_alive

    return job is not None and job_alive(job)


def _jobs_text(jobs: list[str]) -> str:
    """Job ids as one short text: each array once (`123` for `123_0`, `123_1`, …)."""
    arrays = list(dict.fromkeys(job.partition("_")[0] for job in jobs))
    return ", ".join(arrays[:5]) + (f" and {len(arrays) - 5} more" if len(arrays) > 5 else "")


def _watch(
    active: Callable[[], tuple[bool, list[int]]],
    strand: Callable[[int], None],
    should_stop: Callable[[], bool],
) -> None:
    """Poll `active()` (whether anything has not ended, and which are queued) until
    nothing has or `should_stop()`; now and then each queued one goes to `strand`."""
    checked = time.monotonic()
    while True:
        busy, queued = active()
        if not busy or should_stop():
            return
        if time.monotonic() - checked >= CHECK_JOBS_EVERY:
            checked = time.monotonic()
            for ident in queued:
                strand(ident)
            continue
        nap(POLL, should_stop)


# --------------------------------------------------------------------------- training


def train_on_slurm(
    store: Store, sweep: str, slurm: str, say: Console
) -> tuple[dict[str, int], bool]:
    """Submit the sweep's queued runs that no live job holds, then wait for every run of
    the sweep to end; (its status counts, whether a Ctrl-C stopped the waiting)."""
    from caat_app.cli.progress import SweepProgress
    from caat_app.runs.manage import pid_alive
    from caat_app.runs.slurm import job_of, submit
    from caat_app.runs.sweep import status_counts

    queued = [r for r in store.sweep_runs(sweep) if r.status == _QUEUED and r.id is not None]
    fresh = [r.id for r in queued if r.id is not None and not _held(job_of(r.run_dir))]
    jobs = submit(store, fresh, slurm)
    held = len(queued) - len(fresh)
    say.print(
        Text(
            f"submitted {len(fresh)} run(s) of sweep {sweep} to Slurm"
            + (f" (job {_jobs_text(jobs)})" if jobs else "")
            + (f"; {held} wait for jobs submitted before" if held else "")
        )
    )

    def strand(run_id: int) -> None:
        run = store.get_run(run_id)
        if run is None or run.status != _QUEUED or _held(job_of(run.run_dir)):
            return
        error = _LOST.format(f"{store.runs_root()}/slurm")
        store.finish_if(run_id, RunStatus.FAILED, when={"status": _QUEUED}, error=error)

    def work(should_stop: Callable[[], bool]) -> dict[str, int]:
        counts: dict[str, int] = {}
        with SweepProgress(say, sweep) as progress:

            def active() -> tuple[bool, list[int]]:
                nonlocal counts
                store.reap_stale(timeout=STALE_AFTER, is_alive=pid_alive)
                runs = store.sweep_runs(sweep)
                counts = status_counts(runs)
                progress(counts)
                busy = any(r.status in ACTIVE for r in runs)
                return busy, [r.id for r in runs if r.status == _QUEUED and r.id is not None]

            _watch(active, strand, should_stop)
        return counts

    return interruptible(work)


# --------------------------------------------------------------------------- evaluating


def _eval_held(store: Store, job_id: int) -> bool:
    """Whether a queued evaluation job's recorded Slurm job may still take it."""
    from caat_app.runs.slurm import job_of

    job = store.get_eval_job(job_id)
    run = store.get_run(job.run_id) if job is not None else None
    return run is not None and _held(job_of(run.run_dir, eval_job=job_id))


def evaluate_on_slurm(store: Store, plan: Plan, slurm: str, say: Console) -> tuple[int, bool]:
    """What the finished runs lack, queued as evaluation jobs (one already queued or
    running is waited for) and submitted; (failures, whether a Ctrl-C stopped the waiting)."""
    from caat_app.paper.run import missing_evaluations, queue_evaluations, stored_runs
    from caat_app.runs.slurm import submit_evals

    todo = missing_evaluations(store, stored_runs(store, plan))
    say.print(Text(f"evaluations: {len(todo)} to measure, the rest read back from the store"))
    if not todo:
        return 0, False
    ids, errors = queue_evaluations(store, todo)
    fresh = [i for i in ids if _status(store, i) == _QUEUED and not _eval_held(store, i)]
    held = len(ids) - len(fresh)
    jobs = submit_evals(store, fresh, slurm)
    say.print(
        Text(
            f"submitted {len(fresh)} evaluation(s) to Slurm"
            + (f" (job {_jobs_text(jobs)})" if jobs else "")
            + (f"; {held} already queued or running" if held else "")
        )
    )
    stopped = _wait_evals(store, ids) if ids else False
    ended = [store.get_eval_job(i) for i in ids]
    failures = [j for j in ended if j is None or j.status != RunStatus.FINISHED]
    for text in errors + [f"evaluation {j.id}: {j.error or j.status}" for j in failures if j]:
        err.print(Text(f"  evaluation failed: {text}"))
    return (0 if stopped else len(failures)) + len(errors), stopped


def _status(store: Store, job_id: int) -> str | None:
    job = store.get_eval_job(job_id)
    return None if job is None else job.status


def _wait_evals(store: Store, ids: list[int]) -> bool:
    """Wait, with a bar, until every job has ended; whether a Ctrl-C stopped the waiting."""
    from rich.progress import TimeElapsedColumn

    from caat_app.cli.progress import LiveBar
    from caat_app.runs.manage import pid_alive

    def strand(job_id: int) -> None:
        if _status(store, job_id) != _QUEUED or _eval_held(store, job_id):
            return
        error = _LOST.format(f"{store.runs_root()}/slurm")
        store.finish_eval_job(job_id, RunStatus.FAILED, error=error, when=_QUEUED)

    def work(should_stop: Callable[[], bool]) -> None:
        with LiveBar(err, "evaluations", len(ids), TimeElapsedColumn()) as bar:

            def active() -> tuple[bool, list[int]]:
                store.reap_stale_evals(timeout=STALE_AFTER, is_alive=pid_alive)
                statuses = {i: _status(store, i) for i in ids}
                counts = Counter(s or "deleted" for s in statuses.values())
                ended = sum(n for s, n in counts.items() if s not in ACTIVE)
                live = " · ".join(f"{k} {v}" for k, v in sorted(counts.items()))
                bar.progress.update(bar.task, completed=ended, live=live)
                queued = [i for i, s in statuses.items() if s == _QUEUED]
                return any(s in ACTIVE for s in statuses.values()), queued

            _watch(active, strand, should_stop)

    return interruptible(work)[1]
