"""Evaluation jobs that wait in the store: `caat eval --queue` records them, `caat agent`
claims them (exactly once, whatever the number of agents) and runs them; a claimed job
whose worker never starts is reaped, a cancelled one is never started."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import run_cli
from store_procs import new_run, race

from caat_app.errors import CaatError
from caat_app.evaluation.plan import eval_spec
from caat_app.runs.manage import cancel_eval, queue_eval, start_eval
from caat_storage import RunStatus, Store, StoreError
from caat_storage.status import this_host

SqlRunner = Callable[..., list[tuple[Any, ...]]]

SPEC = eval_spec(attacks="fgsm", budgets="0.1", n=20).to_json()


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    with Store.open(store_url) as opened:
        yield opened


def test_a_queued_job_waits_and_a_claim_takes_it_once(store: Store) -> None:
    run_id = new_run(store, "r", epochs_total=1)
    jobs = [store.create_eval_job(run_id, SPEC, total=2) for _ in range(3)]
    assert [j.id for j in store.queued_eval_jobs()] == jobs  # oldest first
    assert [j.id for j in store.queued_eval_jobs(limit=2)] == jobs[:2]
    before = time.time()
    assert store.claim_eval_job(jobs[1]) is True
    assert store.claim_eval_job(jobs[1]) is False  # not queued any more
    claimed = store.get_eval_job(jobs[1])
    assert claimed is not None
    assert (claimed.status, claimed.pid, claimed.host) == ("running", None, this_host())
    assert claimed.heartbeat_at is not None and claimed.heartbeat_at.timestamp() >= before - 1
    assert [j.id for j in store.queued_eval_jobs()] == [jobs[0], jobs[2]]
    at_once = store.create_eval_job(run_id, SPEC, total=2, claim=True)
    now = store.get_eval_job(at_once)
    assert now is not None and (now.status, now.pid, now.host) == ("running", None, this_host())
    assert store.claim_eval_job(at_once) is False  # no agent can take it
    assert at_once not in [j.id for j in store.queued_eval_jobs()]


def test_start_accepts_queued_and_claimed_and_refuses_the_rest(store: Store) -> None:
    run_id = new_run(store, "r", epochs_total=1)
    queued, claimed, cancelled = (store.create_eval_job(run_id, SPEC) for _ in range(3))
    store.claim_eval_job(claimed)
    store.finish_eval_job(cancelled, RunStatus.CANCELLED)
    for job, pid in ((queued, 4242), (claimed, 4343)):
        store.start_eval_job(job, pid, total=5)
        record = store.get_eval_job(job)
        assert record is not None
        assert (record.status, record.pid, record.total) == ("running", pid, 5)
        assert record.started_at is not None and record.host == this_host()
    with pytest.raises(StoreError, match=f"evaluation {cancelled} is cancelled; nothing to run"):
        store.start_eval_job(cancelled, 1, total=5)
    with pytest.raises(StoreError, match=f"evaluation {claimed} is running"):
        store.start_eval_job(claimed, 1, total=5)  # a second worker for a started job
    still = store.get_eval_job(claimed)
    assert still is not None and still.pid == 4343


def test_the_reaper_ends_a_claim_whose_worker_never_started(store: Store) -> None:
    run_id = new_run(store, "r", epochs_total=1)
    stale = store.create_eval_job(run_id, SPEC, claim=True)
    live = store.create_eval_job(run_id, SPEC)
    store.start_eval_job(live, os.getpid(), total=1)

    def alive(pid: int) -> bool:
        assert pid is not None  # a claimed job has no pid to ask about
        return True

    assert store.reap_stale_evals(timeout=30, is_alive=alive) == []  # fresh heartbeat
    time.sleep(0.6)
    store.eval_progress(live)  # the started one keeps beating
    assert store.reap_stale_evals(timeout=0.5, is_alive=alive) == [stale]
    record = store.get_eval_job(stale)
    assert record is not None and record.status == "failed"
    assert "no heartbeat for over 0.5 s" in (record.error or "")
    started = store.get_eval_job(live)
    assert started is not None and started.status == "running"


def test_a_claimed_job_is_cancelled_at_once_and_never_started(store: Store) -> None:
    run_id = new_run(store, "r", epochs_total=1)
    job = store.create_eval_job(run_id, SPEC, claim=True)
    record = store.get_eval_job(job)
    assert record is not None
    cancel_eval(store, record)
    now = store.get_eval_job(job)
    assert now is not None and now.status == "cancelled"
    with pytest.raises(StoreError, match="is cancelled"):
        store.start_eval_job(job, os.getpid(), total=1)


def test_a_job_running_on_another_host_is_not_cancelled_from_here(
    store: Store, store_url: str, raw_sql: SqlRunner
) -> None:
    run_id = new_run(store, "r", epochs_total=1)
    job = store.create_eval_job(run_id, SPEC)
    store.start_eval_job(job, 999_999, total=1)  # no such pid here
    assert store.finish_eval_job(job, RunStatus.FAILED, unstarted=True) is False  # started
    raw_sql(store_url, "UPDATE eval_job SET host = 'gpu-node-7' WHERE id = :job", job=job)
    record = store.get_eval_job(job)
    assert record is not None
    with pytest.raises(CaatError, match="runs on gpu-node-7; cancel it there"):
        cancel_eval(store, record)
    now = store.get_eval_job(job)
    assert now is not None and now.status == "running"  # not taken for dead


# -- 4 processes claim 20 queued jobs -------------------------------------------------------
# Module level, so the spawn start method can import it by name.


def _claimer_proc(url: str, name: str, barrier: Any, results: Any) -> None:
    """Claim what is queued until the queue stays empty; each claim is started and ended
    as a worker would, so a job claimed twice would also be started twice (and refused)."""
    try:
        claimed: list[int] = []
        with Store.open(url) as store:
            barrier.wait(timeout=60)
            idle_since = time.monotonic()
            while time.monotonic() - idle_since < 1.0:
                jobs = store.queued_eval_jobs(limit=3)
                for job in jobs:
                    assert job.id is not None
                    if store.claim_eval_job(job.id):
                        claimed.append(job.id)
                        store.start_eval_job(job.id, os.getpid(), total=1)
                        store.finish_eval_job(job.id, RunStatus.FINISHED)
                if jobs:
                    idle_since = time.monotonic()
                else:
                    time.sleep(0.01)
        results.put((name, (os.getpid(), claimed)))
    except BaseException:
        results.put((name, traceback.format_exc()))


@pytest.mark.slow
def test_four_processes_claim_twenty_jobs_each_exactly_once(store_url: str) -> None:
    with Store.open(store_url) as store:
        run_id = new_run(store, "r", epochs_total=1)
        jobs = [store.create_eval_job(run_id, SPEC, total=1) for _ in range(20)]
    names = [f"claimer-{i}" for i in range(4)]
    outcome, _ = race(_claimer_proc, store_url, names)
    assert {n: r for n, r in outcome.items() if isinstance(r, str)} == {}
    claims = [job for n in names for job in outcome[n][1]]
    assert sorted(claims) == jobs  # every job claimed, none twice
    with Store.open(store_url) as store:
        for n in names:
            pid, claimed = outcome[n]
            for job_id in claimed:
                record = store.get_eval_job(job_id)
                assert record is not None and (record.status, record.pid) == ("finished", pid)


# -- the CLI and real agents ------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A digits run trained for one epoch (a few seconds): its checkpoints are evaluated."""
    db = str(tmp_path_factory.mktemp("queue") / "caat.db")
    tiny = ("--epochs", "1", "--model", "linear", "--attack-steps", "2", "--eval-steps", "2")
    assert run_cli("train", "--db", db, *tiny, "--eval-n", "16") == 0
    return db


def _agent(db: str, *args: str) -> subprocess.Popen[str]:
    caat = str(Path(sys.executable).with_name("caat"))
    command = [caat, "agent", "--db", db, "--gpus", "none", "--poll", "0.2", *args]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _summary(output: str) -> list[int]:
    """The evaluation ids an agent's last line names."""
    last = output.strip().splitlines()[-1]
    assert "queue empty" in last, output
    if "(" not in last:
        return []
    return [int(i) for i in last.rsplit("(", 1)[1].rstrip(")").split(", ")]


@pytest.mark.slow
def test_eval_queue_waits_for_an_agent_that_runs_it(
    trained: str, capsys: pytest.CaptureFixture[str]
) -> None:
    measure = ("--attacks", "fgsm", "--eps", "0.1", "--n", "20", "--force")
    assert run_cli("eval", "1", "--db", trained, *measure, "--queue") == 0
    said = capsys.readouterr().out.strip()
    with Store.open(f"sqlite:///{trained}") as store:
        job = store.eval_jobs()[0]
        assert job.id is not None and job.status == "queued"
    assert said == f"evaluation {job.id} of run 1 (digits-linear-caat-0.8) queued: " + (
        "it waits for a `caat agent`"
    )
    time.sleep(0.5)
    with Store.open(f"sqlite:///{trained}") as store:
        assert store.get_eval_job(job.id).status == "queued"  # type: ignore[union-attr]
    agent = _agent(trained, "--until-idle")
    output = agent.communicate(timeout=60)[0]
    assert agent.returncode == 0, output
    assert _summary(output) == [job.id]
    assert "0 run(s), 1 evaluation(s)" in output
    with Store.open(f"sqlite:///{trained}") as store:
        done = store.get_eval_job(job.id)
        assert done is not None and done.status == "finished", done
        assert done.host == this_host() and done.done == done.total == 2
        rows = {(r.attack, r.eps, r.samples) for r in store.evals(1)}
        assert {("clean", 0.0, 20), ("fgsm", 0.1, 20)} <= rows


@pytest.mark.slow
def test_two_agents_never_start_one_evaluation_twice(trained: str) -> None:
    with Store.open(f"sqlite:///{trained}") as store:
        run = store.get_run(1)
        assert run is not None
        jobs = [
            queue_eval(store, run, eval_spec(attacks="fgsm", budgets=str(eps), n=10))
            for eps in (0.02, 0.04)
        ]
    agents = [_agent(trained, "--until-idle") for _ in range(2)]  # one CPU slot each
    outputs = [a.communicate(timeout=90)[0] for a in agents]
    assert [a.returncode for a in agents] == [0, 0], outputs
    started = [_summary(o) for o in outputs]
    assert sorted(started[0] + started[1]) == jobs, outputs  # each once, by one agent
    assert min(len(s) for s in started) >= 1, outputs  # the queue was really shared
    with Store.open(f"sqlite:///{trained}") as store:
        for job_id in jobs:
            record = store.get_eval_job(job_id)
            assert record is not None and record.status == "finished", record
            log = (Path(run.run_dir) / f"eval-{job_id}.log").read_text()
            assert log.count("worker pid") == 1, log  # one worker, started once


def test_queue_checks_the_checkpoint_and_refuses_contradictions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "c.db")
    with Store.open(f"sqlite:///{db}") as store:
        run_id = new_run(store, "untrained", epochs_total=1)
        run = store.get_run(run_id)
        assert run is not None
        spec = eval_spec(attacks="fgsm", budgets="0.1")
        for record in (lambda: queue_eval(store, run, spec), lambda: start_eval(store, run, spec)):
            with pytest.raises(CaatError, match="has no best checkpoint yet"):
                record()
        assert store.eval_jobs() == []  # refused before anything was recorded
    for extra, why in (
        (["--detach"], "give one of --detach (a worker here, now) and --queue (for an agent)"),
        (["--json"], "--queue prints no results"),
        ([], "has no best checkpoint yet"),
    ):
        assert run_cli("eval", str(run_id), "--db", db, "--eps", "0.1", "--queue", *extra) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and why in err and err.count("\n") == 1, err
