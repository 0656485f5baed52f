"""`caat agent`: agents share a store's queue, never start a run twice, stop cleanly, and
take their workers with them when killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from helpers import run_cli

from caat_app.config import build_config
from caat_app.runs.agent import Agent
from caat_app.runs.launcher import Gpu
from caat_app.runs.manage import pid_alive
from caat_storage import RunStatus, Store
from caat_storage.status import this_host
from caat_storage.writer import HEARTBEAT_S

TINY = {"model": "linear", "epochs": 1, "eval_n": 16, "attack_steps": 2, "eval_steps": 2}


def _queue(store: Store, name: str, **options: Any) -> int:
    cfg = build_config({**TINY, **options, "name": name})
    return store.create_run(
        name=name, config=cfg.model_dump(mode="json"), method=cfg.method, param=cfg.param,
        dataset=cfg.dataset, model=cfg.model, eps=cfg.eps, epochs_total=cfg.epochs,
    )  # fmt: skip


@dataclass
class FakeProc:
    pid: int
    alive: bool = True

    def poll(self) -> int | None:
        return None if self.alive else 0


@dataclass
class FakeLaunch:
    procs: dict[int, FakeProc] = field(default_factory=dict)
    die_with_parent: set[bool] = field(default_factory=set)

    def __call__(self, db_url: str, run_id: int, run_dir: Path, **kwargs: Any) -> FakeProc:
        self.die_with_parent.add(kwargs["die_with_parent"])
        self.procs[run_id] = FakeProc(pid=os.getpid())  # alive, so the reaper leaves it
        return self.procs[run_id]


@pytest.fixture
def store(tmp_path: Path) -> Any:
    with Store.open(f"sqlite:///{tmp_path / 'caat.db'}") as opened:
        yield opened


def test_an_agent_starts_at_most_max_runs_and_its_workers_die_with_it(store: Store) -> None:
    ids = [_queue(store, f"r{i}", device="cpu") for i in range(4)]
    launch = FakeLaunch()
    agent = Agent(store, gpus=[], max_cpu=2, max_runs=3, poll=0.01, launch=launch)
    agent.step()
    assert agent.report.started == ids[:2]  # two CPU slots
    agent.step()
    assert agent.report.started == ids[:2]  # full
    launch.procs[ids[0]].alive = False
    store.finish(ids[0], RunStatus.FINISHED)
    agent.step()
    assert agent.report.started == ids[:3]  # one more, then its --max-runs is reached
    store.finish(ids[1], RunStatus.FINISHED)
    launch.procs[ids[1]].alive = False
    agent.step()
    assert agent.report.started == ids[:3]
    assert launch.die_with_parent == {True}
    for rid in ids[1:3]:
        launch.procs[rid].alive = False
    assert agent.run().stopped_by == "max-runs"
    run = store.get_run(ids[3])
    assert run is not None and run.status == "queued"


def test_a_stopped_agent_starts_nothing_more(store: Store) -> None:
    _queue(store, "waits", device="cpu")
    agent = Agent(store, gpus=[], poll=0.01, launch=FakeLaunch())
    agent.ask_stop()
    assert agent.run().stopped_by == "signal"
    assert agent.report.started == []


def test_other_hosts_runs_do_not_take_this_hosts_gpus(store: Store) -> None:
    elsewhere = _queue(store, "elsewhere")
    store.claim_runs(lambda running, queued: [(elsewhere, 0)])
    store.mark_running(elsewhere, pid=1, host="gpu-node-7")
    here = _queue(store, "here")
    agent = Agent(store, gpus=[Gpu(0, "a", 1)], poll=0.01, launch=FakeLaunch())
    agent.step()
    assert agent.report.started == [here]  # GPU 0 of gpu-node-7 is not GPU 0 here


def test_bad_gpu_lists_are_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    db = str(tmp_path / "caat.db")
    assert run_cli("agent", "--db", db, "--gpus", "0,x") == 2
    assert (
        capsys.readouterr().err.strip()
        == "error: --gpus: expected GPU indices like 0,1 or none, got '0,x'"
    )


def _agent(db: str, *args: str) -> subprocess.Popen[str]:
    caat = str(Path(sys.executable).with_name("caat"))
    command = [caat, "agent", "--db", db, "--poll", "0.2", *args]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
def test_two_agents_share_one_queue_and_no_run_starts_twice(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'caat.db'}"
    with Store.open(db) as store:
        ids = [_queue(store, f"run{i}") for i in range(6)]
    # Fake GPU lists: the runs say `auto`, get a "GPU" each and train on the CPU.
    agents = [_agent(db, "--gpus", gpu, "--until-idle") for gpu in ("0", "1")]
    outputs = [a.communicate(timeout=240)[0] for a in agents]
    assert [a.returncode for a in agents] == [0, 0], outputs
    started = [int(o.rsplit("queue empty: ", 1)[1].split()[0]) for o in outputs]
    assert sum(started) == 6 and min(started) >= 1, outputs
    with Store.open(db) as store:
        for rid in ids:
            run = store.get_run(rid)
            assert run is not None and run.status == "finished", run
            log = (Path(run.run_dir) / "worker.log").read_text()
            assert log.count("worker pid") == 1  # started once


def _wait_running(db: str, run_id: int, timeout: float = 60.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with Store.open(db) as store:
            run = store.get_run(run_id)
            if run is not None and run.pid is not None and run.steps_done:
                return run.pid
        time.sleep(0.2)
    raise AssertionError(f"run {run_id} never started training")


@pytest.mark.slow
def test_sigterm_cancels_with_a_checkpoint_and_a_killed_agent_takes_its_worker(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = f"sqlite:///{tmp_path / 'caat.db'}"
    with Store.open(db) as store:
        first = _queue(store, "cancelled", device="cpu", epochs=200, log_every=1)
    agent = _agent(db, "--gpus", "none")
    _wait_running(db, first)
    agent.send_signal(signal.SIGTERM)
    assert agent.wait(timeout=120) == 0
    with Store.open(db) as store:
        run = store.get_run(first)
        assert run is not None and run.status == "cancelled"
        second = _queue(store, "orphaned", device="cpu", epochs=200, log_every=1)
    agent = _agent(db, "--gpus", "none", "--max-runs", "1")
    worker = _wait_running(db, second)
    other = _agent(db, "--gpus", "none", "--max-cpu", "1")  # a second agent, nothing to take
    try:
        os.kill(agent.pid, signal.SIGKILL)
        killed = time.monotonic()
        agent.wait(timeout=30)
        with Store.open(db) as store:  # reading only: the other agent's loop must reap it
            while (run := store.get_run(second)) and run.status == "running":  # type: ignore[assignment]
                assert time.monotonic() - killed < 2 * HEARTBEAT_S, "not reaped in 2 heartbeats"
                time.sleep(0.1)
        assert not pid_alive(worker)  # the kernel took it with its agent
        assert run is not None and run.status == "failed"
        assert f"died without reporting (pid {worker} on {this_host()}" in (run.error or "")
    finally:
        other.send_signal(signal.SIGTERM)
        other.wait(timeout=60)
    capsys.readouterr()


# -- evaluations ------------------------------------------------------------------------------


@dataclass
class FakeEvalLaunch:
    """Records each evaluation worker's environment; `fail` makes every launch fail."""

    procs: dict[int, FakeProc] = field(default_factory=dict)
    envs: dict[int, dict[str, str]] = field(default_factory=dict)
    die_with_parent: set[bool] = field(default_factory=set)
    fail: str = ""

    def __call__(self, db_url: str, job_id: int, run_dir: Path, **kwargs: Any) -> FakeProc:
        if self.fail:
            raise OSError(self.fail)
        self.die_with_parent.add(kwargs["die_with_parent"])
        self.envs[job_id] = kwargs["env"]
        self.procs[job_id] = FakeProc(pid=os.getpid())
        return self.procs[job_id]


def _eval_job(store: Store, run_id: int, device: str = "auto") -> int:
    from caat_app.evaluation.plan import eval_spec

    return store.create_eval_job(
        run_id, eval_spec(attacks="fgsm", budgets="0.1", device=device).to_json()
    )


def _status(store: Store, job_id: int) -> tuple[str, str | None]:
    job = store.get_eval_job(job_id)
    assert job is not None
    return job.status, job.error


def test_evaluations_take_the_slots_runs_leave_and_hold_them(store: Store) -> None:
    gpus = [Gpu(0, "a", 1), Gpu(1, "b", 1)]
    launch, evals = FakeLaunch(), FakeEvalLaunch()
    agent = Agent(store, gpus=gpus, poll=0.01, launch=launch, launch_eval=evals)
    first = _queue(store, "first")
    auto, waits, cpu, missing, pinned = (
        _eval_job(store, first, device) for device in ("auto", "cuda", "cpu", "cuda:5", "cuda:0")
    )
    agent.step()
    assert agent.report.started == [first]  # runs first: GPU 0
    assert agent.report.evals == [auto, cpu]  # GPU 1, then the CPU slot
    assert evals.envs[auto] == {"CUDA_VISIBLE_DEVICES": "1"}
    assert evals.envs[cpu] == {"OMP_NUM_THREADS": str(os.cpu_count() or 1)}
    assert evals.die_with_parent == {True}
    claimed = store.get_eval_job(auto)
    assert claimed is not None
    assert (claimed.status, claimed.pid, claimed.host) == ("running", None, this_host())
    assert _status(store, missing) == ("failed", "device cuda:5: this machine has GPU(s) 0, 1")
    assert _status(store, waits) == _status(store, pinned) == ("queued", None)
    second = _queue(store, "second")
    agent.step()
    assert agent.report.started == [first]  # GPU 1 is the evaluation's
    evals.procs[auto].alive = False  # its worker exited before it started the job
    agent.step()
    assert agent.report.started == [first, second]  # the freed GPU goes to the queued run
    assert agent.report.evals == [auto, cpu]
    status, error = _status(store, auto)
    assert status == "failed" and f"exited (code 0) before it started; see eval-{auto}" in (
        error or ""
    )


def test_max_runs_counts_runs_only_and_a_failed_launch_ends_the_job(store: Store) -> None:
    run_id = _queue(store, "only", device="cpu")
    job = _eval_job(store, run_id, "cpu")
    agent = Agent(store, gpus=[], max_cpu=2, max_runs=1, poll=0.01, launch=FakeLaunch(),
                  launch_eval=FakeEvalLaunch())  # fmt: skip
    agent.step()
    assert (agent.report.started, agent.report.evals) == ([run_id], [job])
    later = _eval_job(store, run_id, "cpu")
    agent.step()  # its one run started: it takes nothing new
    assert agent.report.evals == [job] and _status(store, later) == ("queued", None)
    broken = Agent(store, gpus=[], poll=0.01, launch=FakeLaunch(),
                   launch_eval=FakeEvalLaunch(fail="no python\nhere"))  # fmt: skip
    broken.step()
    assert broken.report.evals == []
    assert _status(store, later) == ("failed", "could not start its worker: no python here")


def test_a_stopped_agent_cancels_its_evaluation_workers(store: Store) -> None:
    run_id = _queue(store, "r", device="cpu")
    store.finish(run_id, RunStatus.FINISHED)
    job = _eval_job(store, run_id, "cpu")
    sleepers: list[subprocess.Popen[bytes]] = []

    def launch_eval(db_url: str, job_id: int, run_dir: Path, **kwargs: Any) -> Any:
        # a worker still starting (it has not claimed the job for itself) when SIGTERM comes
        sleepers.append(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]))
        agent.ask_stop()
        return sleepers[-1]

    agent = Agent(store, gpus=[], poll=0.01, launch=FakeLaunch(), launch_eval=launch_eval)
    report = agent.run(until_idle=True)
    assert (report.stopped_by, report.evals) == ("signal", [job])
    assert sleepers[0].wait(timeout=10) == -signal.SIGTERM
    assert _status(store, job) == ("cancelled", None)
