"""`caat agent`: a long-running process that trains queued runs from a (shared) store.

Any number of agents, on any hosts, may serve one store: each claims queued runs in the
store's dispatch transaction (`Store.claim_runs`, the same claim the dashboard and the
sweeps use), so no run starts twice, and starts them as ordinary workers on its own GPUs
(`--gpus`, default: what nvidia-smi lists) and CPU slots. Workers record their host, so
a reaper never takes another host's live run for dead; an agent's workers die with it
(the kernel kills them when it does), so a killed agent's runs are reaped as failed.

Stopping: SIGTERM or Ctrl-C asks every worker of this agent to stop (each checkpoints
and ends `cancelled`, to be resumed); with `drain` the running ones finish first and
nothing new starts. `max_runs`: start that many, wait for them, then exit.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from caat_app.runs.launcher import Gpu, Scheduler, launch_worker, request_cancel
from caat_app.runs.manage import reap_dead
from caat_app.runs.sweep import nap
from caat_storage import Store

STOP_TIMEOUT = 120.0
"""How long a stopping agent waits for its workers' checkpoints before it leaves them."""


@dataclass
class AgentReport:
    """What one agent did: the runs it started, and how it ended."""

    started: list[int] = field(default_factory=list)
    stopped_by: str = ""  # "", "signal", "max-runs", "idle"


class Agent:
    """The dispatch loop of one agent; `launch` starts a worker (tests pass their own)."""

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
    ) -> None:
        self.store = store
        self.max_runs, self.drain, self.poll = max_runs, drain, poll
        self.procs: dict[int, Any] = {}  # run id → its worker process
        self.report = AgentReport()
        self.stop_asked = False

        def mine(db_url: str, run_id: int, run_dir: Path, *, env: dict[str, str]) -> Any:
            proc = launch(db_url, run_id, run_dir, env=env, die_with_parent=True)
            self.procs[run_id] = proc
            return proc

        self.scheduler = Scheduler(store, gpus=gpus, per_gpu=per_gpu, max_cpu=max_cpu, launch=mine)

    def ask_stop(self, *_: Any) -> None:
        """The signal handler: only sets a flag, the loop does the rest."""
        self.stop_asked = True

    def running(self) -> list[int]:
        """This agent's runs whose worker is still alive."""
        self.procs = {rid: p for rid, p in self.procs.items() if p.poll() is None}
        return list(self.procs)

    def room(self) -> int | None:
        """How many more runs this agent may start (None: no limit)."""
        if self.max_runs is None:
            return None
        return max(0, self.max_runs - len(self.report.started))

    def step(self) -> None:
        """Reap dead workers (any host's, by heartbeat), then start what fits."""
        reap_dead(self.store)
        room = self.room()
        if self.stop_asked or room == 0:
            return
        self.report.started += self.scheduler.dispatch(limit=room)

    def run(self, *, until_idle: bool = False) -> AgentReport:
        """Serve the store until stopped, `max_runs` are done, or (`until_idle`) the queue
        and this agent's workers are empty."""
        while True:
            self.step()
            if self.stop_asked:
                self.report.stopped_by = "signal"
                break
            if self.room() == 0 and not self.running():
                self.report.stopped_by = "max-runs"
                return self.report
            if until_idle and not self.running() and not self.queued():
                self.report.stopped_by = "idle"
                return self.report
            nap(self.poll, lambda: self.stop_asked)
        self.wind_down()
        return self.report

    def queued(self) -> bool:
        """Whether any run waits (the search narrows the read to runs that mention it)."""
        return any(r.status == "queued" for r in self.store.list_runs(search="queued"))

    def wind_down(self, timeout: float = STOP_TIMEOUT) -> None:
        """Ask this agent's workers to stop (or, draining, let them finish); wait for them."""
        if not self.drain:
            for rid in self.running():
                request_cancel(self.procs[rid].pid)
        deadline = None if self.drain else time.monotonic() + timeout
        while self.running() and (deadline is None or time.monotonic() < deadline):
            time.sleep(0.2)


def install_signals(agent: Agent) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, agent.ask_stop)
