"""Sweeps as Slurm job arrays through submitit: parsing `--slurm`, and the whole path on
submitit's local executor (the same submission path as Slurm's)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from helpers import run_cli
from hypothesis import given
from hypothesis import strategies as st

from caat_app.errors import CaatError
from caat_app.runs.manage import pid_alive
from caat_app.runs.slurm import (
    JOB_FILE,
    eval_job_file,
    job_alive,
    job_of,
    limit_threads,
    minutes,
    parameters,
    submit_evals,
)
from caat_storage import Store


@pytest.mark.parametrize(
    ("text", "expected"),
    [("90", 90), ("5:30", 6), ("12:00:00", 720), ("1-12", 2160), ("1-0:30", 1470), ("0:0:1", 1)],
)
def test_slurm_times_in_minutes(text: str, expected: int) -> None:
    assert minutes(text) == expected


@given(st.integers(0, 6), st.integers(0, 23), st.integers(0, 59), st.integers(0, 59))
def test_every_time_form_rounds_up_to_whole_minutes(d: int, h: int, m: int, s: int) -> None:
    total = ((d * 24 + h) * 60 + m) * 60 + s
    assert minutes(f"{d}-{h}:{m:02d}:{s:02d}") == max(1, -(-total // 60))
    assert minutes(f"{d * 24 + h}:{m}:{s}") == max(1, -(-total // 60))


def test_parameters_become_submitits() -> None:
    assert parameters("partition=gpu, time=12:00:00,gpus-per-task=1,account=lab") == {
        "slurm_partition": "gpu",
        "timeout_min": 720,
        "slurm_gpus_per_task": 1,
        "slurm_account": "lab",
    }


@pytest.mark.parametrize("bad", ["partition", "=gpu", "time=soon", "time=1:2:3:4"])
def test_bad_slurm_options_are_one_line(bad: str) -> None:
    with pytest.raises(CaatError, match="--slurm: ") as info:
        parameters(bad)
    assert "\n" not in str(info.value)


def test_without_sbatch_the_sweep_says_so_and_queues_nothing_more(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.delenv("CAAT_SLURM_CLUSTER", raising=False)
    db = str(tmp_path / "caat.db")
    code = run_cli("sweep", "--db", db, "--name", "s", "--model", "linear", "--slurm", "time=5")
    assert code == 2
    assert capsys.readouterr().err.strip().startswith("error: --slurm: sbatch is not on the PATH")


def _wait(db: str, ids: list[int], statuses: set[str], timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with Store.open(f"sqlite:///{db}") as store:
            runs = [store.get_run(i) for i in ids]
        if all(r is not None and r.status in statuses for r in runs):
            return
        time.sleep(0.5)
    raise AssertionError(f"runs {ids} never reached {statuses}: {[r.status for r in runs if r]}")


@pytest.mark.slow
def test_a_sweep_trains_as_a_local_job_array_and_cancel_reaches_the_job(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CAAT_SLURM_CLUSTER", "local")
    db = str(tmp_path / "caat.db")
    tiny = ["--model", "linear", "--eval-n", "16", "--attack-steps", "2", "--eval-steps", "2"]
    args = ["sweep", "--db", db, "--name", "grid", *tiny, "--epochs", "1"]
    assert run_cli(*args, "--method", "vanilla", "--lam", "0,1", "--slurm", "time=10") == 0
    assert "submitted 2 run(s) of sweep grid" in capsys.readouterr().out
    _wait(db, [1, 2], {"finished"})
    with Store.open(f"sqlite:///{db}") as store:
        for run_id in (1, 2):
            run = store.get_run(run_id)
            assert run is not None
            job = json.loads((Path(run.run_dir) / JOB_FILE).read_text())
            assert job["cluster"] == "local" and job["job_id"].isdigit()

    long = ["sweep", "--db", db, "--name", "long", *tiny, "--epochs", "300", "--log-every", "1"]
    assert run_cli(*long, "--method", "caat", "--gamma", "0.8", "--slurm", "time=10") == 0
    _wait(db, [3], {"running"})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # until it has trained a step, so it can checkpoint
        with Store.open(f"sqlite:///{db}") as store:
            run = store.get_run(3)
        if run is not None and run.steps_done:
            break
        time.sleep(0.2)
    assert run_cli("cancel", "3", "--db", db) == 0
    assert "local job" in capsys.readouterr().out
    _wait(db, [3], {"cancelled"})

    # an evaluation submitted as a job: `caat cancel --eval` reaches its job too
    square = ["--attacks", "square", "--eps", "0.3", "--n", "0"]
    assert run_cli("eval", "1", "--db", db, "--queue", *square) == 0
    with Store.open(f"sqlite:///{db}") as store:
        (job,) = store.eval_jobs(1)
        assert job.id is not None and submit_evals(store, [job.id], "time=10")
        deadline = time.monotonic() + 60
        while (job := store.get_eval_job(job.id)).pid is None:  # type: ignore[arg-type, union-attr]
            assert time.monotonic() < deadline, "the evaluation's task never started it"
            time.sleep(0.2)
    assert run_cli("cancel", "--eval", str(job.id), "--db", db) == 0
    assert f"evaluation {job.id}: local job" in capsys.readouterr().out
    deadline = time.monotonic() + 60
    while pid_alive(job.pid):  # type: ignore[arg-type]
        assert time.monotonic() < deadline, "the evaluation's worker never stopped"
        time.sleep(0.2)
    # The local executor forwards SIGINT, then SIGKILLs a task still alive a second later
    # (Slurm waits 30 s): a worker deep in one attack may be killed before it reports.
    assert run_cli("runs", "--db", db) == 0  # reaps it then
    with Store.open(f"sqlite:///{db}") as store:
        ended = store.get_eval_job(job.id)  # type: ignore[arg-type]
        assert ended is not None and ended.status in ("cancelled", "failed")
        assert ended.status == "cancelled" or "died without reporting" in (ended.error or "")


def _fake_squeue(folder: Path, stdout: str, stderr: str, code: int) -> None:
    folder.mkdir()
    script = folder / "squeue"
    script.write_text(f"#!/bin/sh\necho '{stdout}'\necho '{stderr}' >&2\nexit {code}\n")
    script.chmod(0o755)


@pytest.mark.parametrize(
    ("stdout", "stderr", "code", "alive"),
    [
        ("PENDING", "", 0, True),
        ("RUNNING", "", 0, True),
        ("COMPLETED", "", 0, False),
        ("TIMEOUT", "", 0, False),
        ("", "slurm_load_jobs error: Invalid job id specified", 1, False),
        ("", "slurm_load_jobs error: Unable to contact slurm controller", 1, True),
    ],
)
def test_a_slurm_job_is_alive_while_squeue_says_it_may_still_run(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    stdout: str,
    stderr: str,
    code: int,
    alive: bool,
) -> None:
    _fake_squeue(tmp_path / "bin", stdout, stderr, code)
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    assert job_alive({"job_id": "123_4", "cluster": "slurm"}) is alive


def test_a_local_job_is_alive_while_its_process_is(tmp_path: Path) -> None:
    proc = subprocess.Popen(["sleep", "30"])
    try:
        assert job_alive({"job_id": str(proc.pid), "cluster": "local"})
    finally:
        proc.kill()
        proc.wait()
    assert not job_alive({"job_id": str(proc.pid), "cluster": "local"})


def test_evaluation_jobs_are_recorded_beside_their_runs_job(tmp_path: Path) -> None:
    (tmp_path / JOB_FILE).write_text(json.dumps({"job_id": "7_0", "cluster": "slurm"}))
    (tmp_path / eval_job_file(3)).write_text(json.dumps({"job_id": "9_1", "cluster": "slurm"}))
    assert job_of(tmp_path) == {"job_id": "7_0", "cluster": "slurm"}
    assert job_of(tmp_path, eval_job=3) == {"job_id": "9_1", "cluster": "slurm"}
    assert job_of(tmp_path, eval_job=4) is None


def test_slurms_time_limit_warning_checkpoints_the_run_for_a_resume(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Slurm sends SIGUSR2 before a job's time limit (submitit asks for it): the worker
    stops as on SIGTERM, with a checkpoint, `cancelled` and resumable."""
    db = str(tmp_path / "caat.db")
    tiny = ["--model", "linear", "--attack-steps", "2", "--eval-steps", "2", "--log-every", "1"]
    assert run_cli("train", "--db", db, *tiny, "--epochs", "300", "--detach") == 0
    deadline = time.monotonic() + 60
    with Store.open(f"sqlite:///{db}") as store:
        while not ((run := store.get_run(1)) and run.pid and run.steps_done):  # type: ignore[assignment]
            assert time.monotonic() < deadline, "the worker never trained a step"
            time.sleep(0.2)
        os.kill(run.pid, signal.SIGUSR2)
        _wait(db, [1], {"cancelled"}, timeout=60)
    capsys.readouterr()
    assert run_cli("resume", "1", "--db", db, "--detach") == 0
    assert "resumes at step" in capsys.readouterr().out
    assert run_cli("cancel", "1", "--db", db) == 0
    _wait(db, [1], {"cancelled", "finished"}, timeout=60)


def test_a_task_uses_the_cores_slurm_gave_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "3")
    monkeypatch.setenv("OMP_NUM_THREADS", "")  # recorded: what limit_threads sets is undone
    monkeypatch.delenv("OMP_NUM_THREADS")
    limit_threads()
    assert os.environ["OMP_NUM_THREADS"] == "3"
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # a choice already made is kept
    limit_threads()
    assert os.environ["OMP_NUM_THREADS"] == "1"
