"""`caat agent`: a long-running process that trains queued runs and runs queued
evaluations from a (shared) store.

Any number of agents, on any hosts, may serve one store: each claims queued runs in the
store's dispatch transaction (`Store.claim_runs`, the same claim the dashboard and the
sweeps use) and queued evaluation jobs with a compare-and-set (`Store.claim_eval_job`),
so nothing starts twice, and starts them as ordinary workers on its own GPUs (`--gpus`,
default: what nvidia-smi lists) and CPU slots; an evaluation takes a slot as a run does.
Workers record their host, so a reaper never takes another host's live worker for dead;
an agent's workers die with it (the kernel kills them when it does), so a killed
agent's runs and evaluations are reaped as failed.

Stopping: SIGTERM or Ctrl-C asks every worker of this agent to stop (a run checkpoints
and ends `cancelled`, to be resumed; an evaluation ends `cancelled`, keeping what it
measured); with `drain` the running ones finish first and nothing new starts.
`max_runs`: start that many runs (evaluations do not count), wait for them and for the
evaluations started meanwhile, then exit.
"""

from __future__ import annotations

import json
import re
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from caat_app.runs.launcher import (
    Gpu,
    Scheduler,
    cpu_share,
    launch_eval_worker,
    launch_worker,
    request_cancel,
)
from caat_app.runs.launcher import run_gpus as run_width
from caat_app.runs.manage import reap_dead
from caat_app.runs.sweep import nap
from caat_storage import RunStatus, Store

if TYPE_CHECKING:
    from caat_storage import EvalJob

STOP_TIMEOUT = 120.0
"""How long a stopping agent waits for its workers' checkpoints before it leaves them."""

_CUDA_INDEX = re.compile(r"cuda:(\d+)")

Slot = int | None
"""Where a worker runs: a GPU index, or None for a CPU slot."""


@dataclass
class AgentReport:
    """What one agent did: the runs and the evaluation jobs it started, and how it ended."""

    started: list[int] = field(default_factory=list)
    evals: list[int] = field(default_factory=list)
    stopped_by: str = ""  # "", "signal", "max-runs", "idle"


def _eval_device(job: EvalJob) -> str:
    """The device an evaluation asks for; `auto` when its stored request is unreadable
    (its worker then fails it with the reason)."""
    try:
        device = json.loads(job.spec).get("device", "auto")
    except (TypeError, ValueError, AttributeError):
        return "auto"
    return device if isinstance(device, str) else "auto"


class Agent:
    """The dispatch loop of one agent; `launch` and `launch_eval` start a worker (tests
    pass their own)."""

    def __init__(
        self,
        store: Store,
        *,
        gpus: list[Gpu],
        per_gpu: int = 1,
        max_cpu: int = 1,
        max_runs: int | None = None,
        drain: bool = False,
        poll: float = 1.0,
        launch: Callable[..., Any] = launch_worker,
        launch_eval: Callable[..., Any] = launch_eval_worker,
    ) -> None:
        self.store = store
        self.gpus, self.per_gpu, self.max_cpu = list(gpus), per_gpu, max_cpu
        self.max_runs, self.drain, self.poll = max_runs, drain, poll
        self.launch_eval = launch_eval
        self.procs: dict[int, Any] = {}  # run id → its worker process
        self.eval_procs: dict[int, Any] = {}  # evaluation job id → its worker process
        self.slots: dict[tuple[str, int], list[Slot]] = {}  # ("run"|"eval", id) → its slots
        self.report = AgentReport()
        self.stop_asked = False
        self.cancelling = False  # this agent sent its workers SIGTERM

        def mine(db_url: str, run_id: int, run_dir: Path, *, env: dict[str, str]) -> Any:
            proc = launch(db_url, run_id, run_dir, env=env, die_with_parent=True)
            self.procs[run_id] = proc
            run = store.get_run(run_id)  # claimed: its first GPU is stored
            if run is None or run.gpu is None:
                self.slots["run", run_id] = [None]
            else:
                self.slots["run", run_id] = list(range(run.gpu, run.gpu + run_width(run)))
            return proc

        self.scheduler = Scheduler(
            store, gpus=gpus, per_gpu=per_gpu, max_cpu=max_cpu, launch=mine, held=self.eval_slots
        )

    def ask_stop(self, *_: Any) -> None:
        """The signal handler: only sets a flag, the loop does the rest."""
        self.stop_asked = True

    def running(self) -> list[int]:
        """This agent's runs whose worker is still alive."""
        self.procs = {rid: p for rid, p in self.procs.items() if p.poll() is None}
        self.slots = {k: v for k, v in self.slots.items() if k[0] != "run" or k[1] in self.procs}
        return list(self.procs)

    def running_evals(self) -> list[int]:
        """This agent's evaluation jobs whose worker is still alive.

        A worker that exited before it started its job (it failed at start, or a stop
        came first) would leave the job claimed until the reaper's timeout: it is ended
        here, `cancelled` when this agent stopped it, else `failed`.
        """
        for job_id, proc in list(self.eval_procs.items()):
            code = proc.poll()
            if code is None:
                continue
            del self.eval_procs[job_id]
            self.slots.pop(("eval", job_id), None)
            status = RunStatus.CANCELLED if self.cancelling else RunStatus.FAILED
            why = f"its worker exited (code {code}) before it started; see eval-{job_id}.log"
            error = None if self.cancelling else f"{why} in the run's folder"
            self.store.finish_eval_job(job_id, status, error=error, unstarted=True)
        return list(self.eval_procs)

    def busy(self) -> bool:
        """Whether any worker of this agent, run or evaluation, is still alive."""
        return bool(self.running()) | bool(self.running_evals())  # both: each forgets its dead

    def eval_slots(self) -> list[Slot]:
        """The slots this agent's evaluations hold (the Scheduler counts them as runs).

        Called inside the store's dispatch transaction: it reads memory only."""
        return [s for (kind, _), slots in self.slots.items() if kind == "eval" for s in slots]

    def room(self) -> int | None:
        """How many more runs this agent may start (None: no limit); evaluations do not count."""
        if self.max_runs is None:
            return None
        return max(0, self.max_runs - len(self.report.started))

    def step(self) -> None:
        """Reap dead workers (any host's, by heartbeat), then start the runs that fit,
        then the queued evaluations that fit in what is left."""
        reap_dead(self.store)
        self.busy()  # forget the workers that ended, and free their slots
        room = self.room()
        if self.stop_asked or room == 0:
            return
        self.report.started += self.scheduler.dispatch(limit=room)
        self.report.evals += self.start_evals()

    def start_evals(self) -> list[int]:
        """Claim queued evaluations, oldest first, while this agent has room; start each.

        Placed as the Scheduler places runs: `cpu` (or no GPU here) on a CPU slot,
        `cuda:N` on GPU N (failed when this machine has no GPU N), else the least loaded
        GPU, given as `CUDA_VISIBLE_DEVICES`.
        """
        started: list[int] = []
        for job in self.store.queued_eval_jobs():
            assert job.id is not None
            device = _eval_device(job)
            fits, slot = self.free_slot(device)
            if isinstance(slot, str):
                self.store.finish_eval_job(
                    job.id, RunStatus.FAILED, error=slot, when=RunStatus.QUEUED.value
                )
                continue
            if fits and self.store.claim_eval_job(job.id) and self._launch_eval(job, slot, device):
                started.append(job.id)
        return started

    def free_slot(self, device: str) -> tuple[bool, Slot | str]:
        """(whether it fits now, where) for an evaluation on `device`; `where` is a reason
        instead when it can never fit here."""
        load = {gpu.index: 0 for gpu in self.gpus}
        cpu = 0
        for slots in self.slots.values():
            for slot in slots:
                if slot is None:
                    cpu += 1
                elif slot in load:
                    load[slot] += 1
        match = _CUDA_INDEX.fullmatch(device)
        if not load or device == "cpu":
            return cpu < self.max_cpu, None
        if match and int(match[1]) not in load:
            have = ", ".join(str(i) for i in load)
            return False, f"device {device}: this machine has GPU(s) {have}"
        candidates = [int(match[1])] if match else sorted(load)
        free = [i for i in candidates if load[i] < self.per_gpu]
        if not free:
            return False, None
        return True, min(free, key=lambda i: (load[i], i))

    def _launch_eval(self, job: EvalJob, slot: Slot, device: str) -> bool:
        """Start a claimed job's worker; a failed launch ends the job `failed`, never claimed."""
        assert job.id is not None
        env = cpu_share(self.max_cpu) if slot is None else {}
        if slot is not None and not _CUDA_INDEX.fullmatch(device):
            env["CUDA_VISIBLE_DEVICES"] = str(slot)
        run = self.store.get_run(job.run_id)
        try:
            if run is None:
                raise LookupError(f"run {job.run_id} no longer exists")
            proc = self.launch_eval(
                self.store.url, job.id, Path(run.run_dir), env=env, die_with_parent=True
            )
        except Exception as exc:
            reason = " ".join(str(exc).split()) or type(exc).__name__
            error = f"could not start its worker: {reason}"
            self.store.finish_eval_job(job.id, RunStatus.FAILED, error=error, unstarted=True)
            return False
        self.eval_procs[job.id] = proc
        self.slots["eval", job.id] = [slot]
        return True

    def run(self, *, until_idle: bool = False) -> AgentReport:
        """Serve the store until stopped, `max_runs` are done, or (`until_idle`) nothing
        is queued (runs or evaluations) and this agent's workers are done."""
        while True:
            self.step()
            if self.stop_asked:
                self.report.stopped_by = "signal"
                break
            if self.room() == 0 and not self.busy():
                self.report.stopped_by = "max-runs"
                return self.report
            if until_idle and not self.busy() and not self.queued():
                self.report.stopped_by = "idle"
                return self.report
            nap(self.poll, lambda: self.stop_asked)
        self.wind_down()
        return self.report

    def queued(self) -> bool:
        """Whether any run or evaluation waits (the search narrows the read to runs that
        mention it)."""
        if self.store.queued_eval_jobs(limit=1):
            return True
        return any(r.status == "queued" for r in self.store.list_runs(search="queued"))

    def wind_down(self, timeout: float = STOP_TIMEOUT) -> None:
        """Ask this agent's workers, runs and evaluations, to stop (or, draining, let them
        finish); wait for them."""
        if not self.drain:
            self.cancelling = True
            for rid in self.running():
                request_cancel(self.procs[rid].pid)
            for job_id in self.running_evals():
                request_cancel(self.eval_procs[job_id].pid)
        deadline = None if self.drain else time.monotonic() + timeout
        while self.busy() and (deadline is None or time.monotonic() < deadline):
            time.sleep(0.2)


def install_signals(agent: Agent) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, agent.ask_stop)
