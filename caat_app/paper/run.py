"""An experiment's life in the store: queue it as a sweep, train it, evaluate what it lacks.

Torch-free: workers train and evaluate. Training is `caat sweep`'s machinery (a named
sweep, `plan_sweep` queues only the configs it does not hold, `run_sweep` works
through it), so `caat front --sweep` and the dashboard see the experiment like any
sweep. Evaluations are `caat eval --detach`'s jobs, started at most `jobs` at once;
an evaluation whose every measurement is already stored for the run's final weights is
not started at all, and the worker reads back any it finds stored.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from caat_app.errors import CaatError
from caat_app.evaluation.plan import plan, settings_text
from caat_app.runs.grid import config_key
from caat_app.runs.launcher import cpu_share
from caat_app.runs.service import Workbench
from caat_app.runs.stored import config_of
from caat_app.runs.sweep import current_runs, nap, plan_sweep
from caat_storage import TERMINAL_STATUSES, RunStatus

if TYPE_CHECKING:
    from caat_app.evaluation.plan import EvalSpec
    from caat_app.paper.scale import Plan, PlannedRun
    from caat_app.runs.launcher import Gpu
    from caat_storage import EvalResult, Run, Store

_ENDED = {status.value for status in TERMINAL_STATUSES}


def queue(store: Store, plan_: Plan) -> tuple[list[int], list[int]]:
    """Queue the experiment's configs its sweep lacks; (new ids, ids already held)."""
    return plan_sweep(store, plan_.sweep, [r.config for r in plan_.runs])


def queue_pretrain(store: Store, plan_: Plan) -> tuple[list[int], list[int]]:
    """Queue stage 1 (PEFT at the smoke scale) in its own sweep; a finished one is held."""
    return plan_sweep(store, plan_.pretrain_sweep, [r.config for r in plan_.pretrain])


def stage1_weights(store: Store, plan_: Plan) -> str | None:
    """Stage 1's `best.pt` (its first seed's), once that run has finished; else None."""
    by_key = {_key(r): r for r in current_runs(store.sweep_runs(plan_.pretrain_sweep))}
    run = by_key.get(config_key(plan_.pretrain[0].config)) if plan_.pretrain else None
    if run is None or run.status != RunStatus.FINISHED or not run.run_dir:
        return None
    best = Path(run.run_dir) / "best.pt"
    return str(best) if best.is_file() else None


def _key(run: Run) -> str | None:
    try:
        return config_key(config_of(run))
    except CaatError:
        return None  # unreadable: it is none of the plan's runs


def stored_runs(store: Store, plan_: Plan) -> list[tuple[PlannedRun, Run | None]]:
    """Each planned run with its run in the sweep (the newest held, else the newest try)."""
    by_key = {_key(r): r for r in current_runs(store.sweep_runs(plan_.sweep))}
    return [(p, by_key.get(config_key(p.config))) for p in plan_.runs]


def has_evaluation(run: Run, spec: EvalSpec, results: Iterable[EvalResult]) -> bool:
    """Whether every measurement of `spec` is stored for the run's final weights.

    Final: measured after the run finished (a `best` checkpoint moves while it trains).
    """
    wanted = {(m.attack, round(m.eps, 12), settings_text(m.attack, m.eps)) for m in plan(spec)}
    have = {
        (r.attack, round(r.eps, 12), r.settings)
        for r in results
        if r.checkpoint == spec.checkpoint
        and r.norm == spec.norm
        and (spec.n == 0 or r.samples == spec.n)
        and (run.finished_at is None or r.created_at >= run.finished_at)
    }
    return wanted <= have


def missing_evaluations(
    store: Store, pairs: Sequence[tuple[PlannedRun, Run | None]]
) -> list[tuple[Run, EvalSpec]]:
    """The evaluations the finished runs still lack, run by run."""
    finished = [(p, r) for p, r in pairs if r is not None and r.status == RunStatus.FINISHED]
    results = store.evals_of_runs([r.id for _, r in finished if r.id is not None])
    return [
        (run, spec)
        for planned, run in finished
        for spec in planned.evaluations
        if not has_evaluation(run, spec, results.get(run.id or -1, []))
    ]


def queue_evaluations(
    store: Store, todo: Sequence[tuple[Run, EvalSpec]]
) -> tuple[list[int], list[str]]:
    """Record each evaluation as a queued job for workers elsewhere (Slurm tasks, agents);
    one already queued or running for the run with the same request is taken as it is,
    so asking again never measures twice. (Job ids, why any could not be queued.)"""
    from caat_app.runs.manage import queue_eval

    ids: list[int] = []
    errors: list[str] = []
    for run, spec in todo:
        assert run.id is not None
        wanted = json.loads(json.dumps(spec.to_json()))
        same = [
            job.id
            for job in store.eval_jobs(run.id, active=True)
            if job.id is not None and json.loads(job.spec) == wanted
        ]
        try:
            ids.append(same[-1] if same else queue_eval(store, run, spec))  # the oldest
        except CaatError as exc:
            errors.append(f"run {run.id}: {exc}")
    return ids, errors


@dataclass
class EvalProgress:
    """Where the evaluations are: how many ended, in which status, and the failures' reasons."""

    total: int
    counts: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    @property
    def ended(self) -> int:
        return sum(self.counts.values())

    def end(self, status: str, error: str | None = None) -> None:
        self.counts[status] = self.counts.get(status, 0) + 1
        if error:
            self.errors.append(error.strip().splitlines()[-1])


def _env(spec: EvalSpec, index: int, gpus: Sequence[Gpu], at_once: int) -> dict[str, str]:
    """A worker's share of the machine: one GPU round-robin, or its share of the cores."""
    if spec.device == "cpu" or not gpus:
        return cpu_share(at_once) if at_once > 1 else {}
    if spec.device in {"auto", "cuda"}:
        return {"CUDA_VISIBLE_DEVICES": str(gpus[index % len(gpus)].index)}
    return {}


def run_evaluations(
    bench: Workbench,
    todo: Sequence[tuple[Run, EvalSpec]],
    *,
    jobs: int,
    gpus: Sequence[Gpu],
    on_progress: Callable[[EvalProgress], None] | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    poll: float = 0.5,
    stop_timeout: float = 120.0,
) -> EvalProgress:
    """Start the evaluations in workers, at most `jobs` at once (per GPU), until all ended.

    When `should_stop()` turns true nothing more starts and the running ones are
    cancelled (what they measured stays stored); it waits up to `stop_timeout` seconds.
    """
    at_once = jobs * max(1, len(gpus))
    pending = list(todo)
    running: list[int] = []
    progress = EvalProgress(total=len(todo))
    stopping_since: float | None = None
    started = 0
    while True:
        bench.reap()
        if stopping_since is None and should_stop():
            stopping_since = time.monotonic()
            pending.clear()
            _cancel(bench, running)
        while pending and len(running) < at_once:
            run, spec = pending.pop(0)
            assert run.id is not None
            try:
                running.append(
                    bench.start_eval(run.id, spec, env=_env(spec, started, gpus, at_once))
                )
            except CaatError as exc:
                progress.end(RunStatus.FAILED.value, str(exc))
            started += 1
        running = _collect(bench.store, running, progress)
        if on_progress is not None:
            on_progress(progress)
        if not running and not pending:
            return progress
        if stopping_since is not None and time.monotonic() - stopping_since > stop_timeout:
            return progress
        nap(poll, should_stop if stopping_since is None else lambda: False)


def _collect(store: Store, running: list[int], progress: EvalProgress) -> list[int]:
    """The jobs still running; those that ended are counted."""
    still = []
    for job_id in running:
        job = store.get_eval_job(job_id)
        if job is None:
            progress.end(RunStatus.FAILED.value, f"evaluation {job_id} was deleted")
        elif job.status in _ENDED:
            progress.end(job.status, job.error)
        else:
            still.append(job_id)
    return still


def _cancel(bench: Workbench, running: Sequence[int]) -> None:
    """Ask every running evaluation to stop; one that already ended is left alone."""
    for job_id in running:
        job = bench.store.get_eval_job(job_id)
        if job is None or job.status in _ENDED:
            continue
        try:
            bench.cancel_eval(job)
        except CaatError:
            continue  # it ended, or its worker died (and is marked failed), meanwhile
