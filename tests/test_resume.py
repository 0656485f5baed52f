"""Crash resume: a run stopped or killed mid-way continues from its checkpoint and ends
with exactly the numbers of a run never interrupted (on the CPU, bit for bit)."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers import run_app, run_cli, wait_for

from caat_app.config import build_config
from caat_app.data.splits import load_dataset
from caat_app.errors import CaatError
from caat_app.runs.launcher import Scheduler
from caat_app.runs.manage import create_run, pid_alive, resume_point, resume_run
from caat_app.runs.sweep import plan_sweep
from caat_app.runs.worker import StopFlag, execute_run
from caat_app.training.resume_point import ResumePoint, read_resume_point, write_resume_point
from caat_app.training.sinks import ListSink
from caat_app.training.trainer import TrainResult, train
from caat_storage import RunStatus, Store

BASE = {
    "epochs": 2,
    "model": "cnn",
    "eval_n": 32,
    "attack_steps": 2,
    "eval_steps": 2,
    "log_every": 1,
    "device": "cpu",
}
STEPS_PER_EPOCH = 1257 // 128  # the digits training split in batches of 128: 9
TIMING = ("t", "images_per_sec", "epoch_seconds", "elapsed")
VANILLA = {"method": "vanilla", "lam": 0.5}
CAAT_AUGMENTED = {"method": "caat", "gamma": 0.8, "augment": True}
CAAT_LAYERS = {"method": "caat", "gamma": 0.9, "layer_stats": 2, "checkpoint_every": 1e-9}
CAAT_ADAMW = {"method": "caat", "gamma": 0.8, "optimizer": "adamw", "lr": 1e-3}
CAAT_ADAMW["schedule"] = "cosinew"  # β₁ cycles too


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(f"sqlite:///{tmp_path / 'caat.db'}") as opened:
        yield opened


class Stopper(ListSink):
    """Asks to stop after `steps` step rows, after `epochs` epoch rows, or at the
    `calls`-th question once a whole epoch's steps are in (inside its measurement)."""

    def __init__(self, *, steps: int = 0, epochs: int = 0, calls: int = 0) -> None:
        super().__init__()
        self.at_steps, self.at_epochs, self.at_calls = steps, epochs, calls
        self.asked = 0

    def should_stop(self) -> bool:
        if self.at_calls and len(self.step_rows) >= STEPS_PER_EPOCH:
            self.asked += 1
            return self.asked >= self.at_calls
        return bool(
            (self.at_steps and len(self.step_rows) >= self.at_steps)
            or (self.at_epochs and len(self.epoch_rows) >= self.at_epochs)
        )


class Crash(ListSink):
    """A worker that dies: raises once it is handed the `steps`-th step row."""

    def __init__(self, steps: int) -> None:
        super().__init__()
        self.at_steps = steps

    def steps(self, rows: list[dict[str, Any]]) -> None:
        super().steps(rows)
        if len(self.step_rows) >= self.at_steps:
            raise RuntimeError("killed")


def _without_timing(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in row.items() if k not in TIMING} for row in rows]


def _uninterrupted(digits, options: dict[str, Any]) -> tuple[TrainResult, ListSink]:
    sink = ListSink()
    return train(build_config({**BASE, **options}), sink, data=digits), sink


def _stopped_then_resumed(
    digits, tmp_path: Path, options: dict[str, Any], first: ListSink
) -> tuple[TrainResult, ListSink, ListSink, ResumePoint]:
    """Train until `first` stops it (or kills it), then resume from its checkpoint.

    Returns the resumed result, what the first attempt reported before its checkpoint
    (what the store keeps), the resumed attempt's sink and the point it resumed from.
    """
    cfg = build_config({**BASE, **options})
    try:
        stopped = train(cfg, first, data=digits, run_dir=tmp_path)
        assert stopped.status == "cancelled"
    except RuntimeError as exc:
        assert str(exc) == "killed"
    point = read_resume_point(tmp_path)
    assert point is not None
    kept = ListSink(
        step_rows=first.step_rows[: point.step],
        epoch_rows=first.epoch_rows[: point.epochs_done],
        layer_rows=[r for r in first.layer_rows if r["step"] < point.step],
    )
    second = ListSink()
    result = train(cfg, second, data=digits, run_dir=tmp_path, resume_step=point.step)
    return result, kept, second, point


@pytest.mark.parametrize(
    ("options", "first", "where"),
    [
        (VANILLA, lambda: Stopper(steps=5), (5, 0)),
        (VANILLA, lambda: Stopper(epochs=1), (STEPS_PER_EPOCH, 1)),
        (CAAT_AUGMENTED, lambda: Stopper(steps=12), (12, 1)),
        (CAAT_AUGMENTED, lambda: Stopper(calls=3), (STEPS_PER_EPOCH, 0)),
        (CAAT_LAYERS, lambda: Crash(steps=13), (12, 1)),
        (CAAT_ADAMW, lambda: Stopper(steps=5), (5, 0)),
    ],
    ids=[
        "vanilla-mid-epoch",
        "vanilla-epoch-boundary",
        "caat-augment-mid-epoch",
        "caat-augment-during-measurement",
        "caat-layers-killed-after-a-timed-checkpoint",
        "caat-adamw-mid-epoch",
    ],
)
def test_a_resumed_run_ends_with_the_numbers_of_an_uninterrupted_one(
    digits, tmp_path: Path, options: dict[str, Any], first: Any, where: tuple[int, int]
) -> None:
    whole, reference = _uninterrupted(digits, options)
    result, kept, second, point = _stopped_then_resumed(digits, tmp_path, options, first())
    assert (point.step, point.epochs_done) == where
    assert result.status == "finished"
    assert result.summary == whole.summary
    steps = _without_timing(kept.step_rows + second.step_rows)
    assert steps == _without_timing(reference.step_rows)  # no duplicate, no gap, same φ, μ, losses
    epochs = _without_timing(kept.epoch_rows + second.epoch_rows)
    assert epochs == _without_timing(reference.epoch_rows)
    assert kept.layer_rows + second.layer_rows == reference.layer_rows
    assert second.step_rows[0]["t"] >= kept.step_rows[-1]["t"]  # the clock continues


def test_resume_checkpoints_load_with_weights_only_and_evaluation_still_reads_best(
    digits, tmp_path: Path
) -> None:
    train(build_config({**BASE, **VANILLA}), Stopper(steps=4), data=digits, run_dir=tmp_path)
    point = read_resume_point(tmp_path)
    assert point is not None and point.step == 4
    state = torch.load(tmp_path / point.file, weights_only=True)
    assert (state["step"], state["epoch"], state["done"]) == (4, 1, 4)
    assert state["order"].dtype == torch.uint8 and state["rng"]["cpu"].dtype == torch.uint8
    last = torch.load(tmp_path / "last.pt", weights_only=True)
    assert last["model"].keys() == state["model"].keys()
    # the epoch's fields are unknown yet: the point names them empty
    assert point.fields["best_epoch"] is None and point.fields["steps_done"] == 4
    assert sorted(p.name for p in tmp_path.glob("resume*")) == ["resume-4.pt", "resume.json"]


def test_a_checkpoint_of_another_step_than_the_store_expects_is_refused(
    digits, tmp_path: Path
) -> None:
    cfg = build_config({**BASE, **VANILLA})
    train(cfg, Stopper(steps=3), data=digits, run_dir=tmp_path)
    with pytest.raises(CaatError, match="at step 3, the store expects 5"):
        train(cfg, ListSink(), data=digits, run_dir=tmp_path, resume_step=5)
    with pytest.raises(CaatError, match="no checkpoint to resume from"):
        train(cfg, ListSink(), data=digits, run_dir=tmp_path / "other", resume_step=3)


# -- through the store and the worker ---------------------------------------------------


class Killer:
    """An extra sink for `execute_run`: raises at the `steps`-th step row (a dying worker)."""

    def __init__(self, steps: int) -> None:
        self.at, self.seen = steps, 0

    def steps(self, rows: list[dict[str, Any]]) -> None:
        self.seen += len(rows)
        if self.seen >= self.at:
            raise RuntimeError("killed")

    def epoch(self, row: dict[str, Any], summary: dict[str, Any]) -> None:
        pass

    def should_stop(self) -> bool:
        return False


def _series(store: Store, run_id: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    steps = [r.model_dump(exclude={"run_id", "t"}) for r in store.steps(run_id)]
    epochs = [
        r.model_dump(exclude={"run_id", "images_per_sec", "epoch_seconds", "elapsed"})
        for r in store.epochs(run_id)
    ]
    return steps, epochs


def _summary(store: Store, run_id: int) -> dict[str, Any]:
    run = store.get_run(run_id)
    assert run is not None
    keep = ("status", "epochs_done", "steps_done", "nonfinite_steps", "last_phi", "last_mu")
    return {
        k: v for k, v in run.model_dump().items() if k.startswith(("best_", "last_")) or k in keep
    }


def test_a_killed_worker_resumes_in_the_store_with_no_duplicate_or_gap(store: Store) -> None:
    cfg = build_config({**BASE, **VANILLA, "epochs": 3})
    reference = create_run(store, cfg)
    assert execute_run(store, reference, StopFlag()) == RunStatus.FINISHED
    assert read_resume_point(store.get_run(reference).run_dir) is None  # finished: removed

    run_id = create_run(store, cfg)
    with pytest.raises(RuntimeError, match="killed"):  # in epoch 2, after epoch 1's checkpoint
        execute_run(store, run_id, StopFlag(), Killer(steps=STEPS_PER_EPOCH + 4))
    dead = store.get_run(run_id)
    assert dead.status == "failed" and dead.steps_done == STEPS_PER_EPOCH + 4
    assert len(store.steps(run_id)) == STEPS_PER_EPOCH + 4  # rows past the checkpoint

    point = resume_run(store, dead)
    assert (point.step, point.epochs_done) == (STEPS_PER_EPOCH, 1)
    queued = store.get_run(run_id)
    assert queued.status == "queued" and queued.steps_done == STEPS_PER_EPOCH
    assert len(store.steps(run_id)) == STEPS_PER_EPOCH and len(store.epochs(run_id)) == 1
    assert queued.error is None and queued.last_phi == store.steps(run_id)[-1].phi

    assert execute_run(store, run_id, StopFlag()) == RunStatus.FINISHED
    assert _series(store, run_id) == _series(store, reference)
    assert _summary(store, run_id) == _summary(store, reference)


def test_a_cancelled_run_resumes_twice_from_where_it_stopped(store: Store) -> None:
    cfg = build_config({**BASE, **CAAT_AUGMENTED})
    reference = create_run(store, cfg)
    execute_run(store, reference, StopFlag())
    run_id = create_run(store, cfg)
    for stop_at in (4, 13):
        flag = StopFlag()
        stopper = Stopper(steps=stop_at - store.get_run(run_id).steps_done)
        assert execute_run(store, run_id, flag, stopper) == RunStatus.CANCELLED
        assert resume_run(store, store.get_run(run_id)).step == stop_at
    assert execute_run(store, run_id, StopFlag()) == RunStatus.FINISHED
    assert _series(store, run_id) == _series(store, reference)
    assert _summary(store, run_id) == _summary(store, reference)


@pytest.mark.parametrize("status", ["finished", "running", "queued", "diverged"])
def test_only_a_failed_or_cancelled_run_resumes(store: Store, tmp_path: Path, status: str) -> None:
    run_id = create_run(store, build_config(BASE))
    run = store.get_run(run_id)
    _fake_point(Path(run.run_dir), step=3)
    store.update_run(run_id, status=status)
    with pytest.raises(CaatError, match=f"is {status}; only a failed or cancelled run"):
        resume_run(store, run)
    assert store.get_run(run_id).status == status


def test_a_run_without_a_checkpoint_does_not_resume(store: Store) -> None:
    run_id = create_run(store, build_config(BASE))
    store.finish(run_id, RunStatus.FAILED, error="boom")
    with pytest.raises(CaatError, match="no checkpoint to resume from"):
        resume_run(store, store.get_run(run_id))
    assert store.get_run(run_id).status == "failed"


def _fake_point(run_dir: Path, *, step: int, epochs_done: int = 0, **fields: Any) -> ResumePoint:
    """A resume record and a stand-in state file: what the torch-free side reads."""
    run_dir.mkdir(parents=True, exist_ok=True)
    point = ResumePoint(f"resume-{step}.pt", step, epochs_done, dict(fields))
    (run_dir / point.file).write_bytes(b"state")
    write_resume_point(run_dir, point)
    return point


def test_prepare_resume_trims_rows_after_the_checkpoint_in_one_go(store: Store) -> None:
    run_id = create_run(store, build_config(BASE))
    steps = [{"step": s, "epoch": 1 + s // 4, "t": float(s), "phi": s / 10} for s in range(10)]
    layers = [{"step": s, "epoch": 1 + s // 4, "layer": 0, "phi": 0.5} for s in range(0, 10, 2)]
    epochs = [{"epoch": e, "val_clean": 0.5} for e in (1, 2)]
    store.append_metrics(run_id, steps=steps, epochs=epochs, layers=layers)
    store.finish(run_id, RunStatus.CANCELLED, fields={"best_epoch": 2, "epochs_done": 2})
    fields = {"best_epoch": 1, "best_val_clean": 0.5}
    assert not store.prepare_resume(run_id, step=6, epochs_done=1, resumable=("failed",))
    assert len(store.steps(run_id)) == 10  # refused: nothing changed
    assert store.prepare_resume(run_id, step=6, epochs_done=1, fields=fields)
    run = store.get_run(run_id)
    assert (run.status, run.steps_done, run.epochs_done, run.best_epoch) == ("queued", 6, 1, 1)
    assert run.last_phi == pytest.approx(0.5) and run.finished_at is None
    assert [r.step for r in store.steps(run_id)] == list(range(6))
    assert [r.epoch for r in store.epochs(run_id)] == [1]
    assert [r.step for r in store.layer_metrics(run_id)] == [0, 2, 4]
    assert not store.prepare_resume(run_id, step=6, epochs_done=1)  # queued now: no second time


def test_a_sweep_resumes_its_stopped_runs_and_retrains_the_rest(store: Store) -> None:
    grid = [
        build_config({**BASE, "method": "caat", "gamma": g, "name": f"s-{g}"})
        for g in (0.7, 0.8, 0.9)
    ]
    first, _ = plan_sweep(store, "s", grid)
    with_point, without, done = first
    store.append_metrics(with_point, steps=[{"step": s, "epoch": 1, "t": 0.0} for s in range(7)])
    _fake_point(Path(store.get_run(with_point).run_dir), step=5)
    store.finish(with_point, RunStatus.CANCELLED)
    store.finish(without, RunStatus.FAILED, error="boom")
    store.finish(done, RunStatus.FINISHED)

    new, held = plan_sweep(store, "s", grid)
    assert new[0] == with_point and len(new) == 2 and held == [done]
    assert store.get_run(with_point).status == "queued"
    assert len(store.steps(with_point)) == 5
    assert store.get_run(new[1]).name == store.get_run(without).name  # from the start, anew
    assert plan_sweep(store, "s", grid) == ([], [with_point, new[1], done])


# -- the command line and the dashboard -------------------------------------------------


@pytest.fixture
def resume_command() -> Iterator[None]:
    """`caat resume`, registered here when the CLI does not list it yet."""
    from caat_app.cli import app
    from caat_app.cli.resume import resume

    before = list(app.registered_commands)
    if not any(c.name == "resume" for c in before):
        app.command(name="resume")(resume)
    yield
    app.registered_commands[:] = before


def test_caat_resume_continues_in_the_foreground(
    store: Store, tmp_path: Path, resume_command: None, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "caat.db")
    run_id = create_run(store, build_config({**BASE, **VANILLA}))
    flag = StopFlag()
    execute_run(store, run_id, flag, Stopper(steps=6))
    assert store.get_run(run_id).status == "cancelled"
    assert run_cli("resume", str(run_id), "--db", db) == 0
    out = capsys.readouterr().out
    assert f"run {run_id}" in out and "resumes at step 6, after 0 of 2 epochs" in out
    run = store.get_run(run_id)
    assert run.status == "finished" and [r.step for r in store.steps(run_id)] == list(range(18))
    assert resume_point(run) is None

    assert run_cli("resume", str(run_id), "--db", db) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: run {run_id} is finished; only a failed or cancelled run can be resumed"


def test_dashboard_r_resumes_a_cancelled_run(store: Store) -> None:
    from textual.widgets import DataTable

    from caat_screens.app import CaatApp

    run_id = create_run(store, build_config({**BASE, "name": "stopped"}))
    store.append_metrics(run_id, steps=[{"step": s, "epoch": 1, "t": 0.0} for s in range(5)])
    store.finish(run_id, RunStatus.CANCELLED)
    _fake_point(Path(store.get_run(run_id).run_dir), step=3)
    app = CaatApp(store, poll_interval=0.1, gpus=[], start_workers=False)

    async def body(pilot: Any) -> None:
        await wait_for(pilot, lambda: app.screen.query_one(DataTable).row_count == 1)
        await pilot.press("R")
        await wait_for(pilot, lambda: store.get_run(run_id).status == "queued")
        assert store.get_run(run_id).steps_done == 3 and len(store.steps(run_id)) == 3

    run_app(app, body)


def _wait_run(store: Store, run_id: int, done: Any, timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = store.get_run(run_id)
        if done(run):
            return run
        time.sleep(0.02)
    raise AssertionError(f"run {run_id} timed out: {store.get_run(run_id)}")


@pytest.mark.slow
def test_a_worker_killed_at_random_moments_resumes_each_time_and_ends_as_if_never_killed(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fault injection: SIGKILL a real worker three times at random moments (seeded),
    `caat resume --detach` after each; the run ends with the uninterrupted run's numbers,
    every step row once, and a store that passes SQLite's integrity check."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # every worker alike: the same sums, bit for bit
    db = str(tmp_path / "caat.db")
    options = {**BASE, **VANILLA, "epochs": 4, "batch_size": 64, "checkpoint_every": 0.005}
    cfg = build_config(options)
    reference, run_id = create_run(store, cfg), create_run(store, cfg)
    launch = Scheduler(store, gpus=[], per_gpu=1, max_cpu=2, share_cores=False)
    assert launch.dispatch(only=[reference, run_id]) == [reference, run_id]
    chance = random.Random(20261201)
    kills = 0
    for _ in range(3):
        run = _wait_run(store, run_id, lambda r: r.status == "running" and r.pid is not None)
        _wait_run(store, run_id, lambda r: resume_point(r) is not None or r.status != "running")
        time.sleep(chance.uniform(0.05, 1.0))  # a random moment after a checkpoint exists
        run = store.get_run(run_id)
        if run.status != "running":
            break
        os.kill(run.pid, signal.SIGKILL)
        kills += 1
        deadline = time.monotonic() + 30
        while pid_alive(run.pid) and time.monotonic() < deadline:
            time.sleep(0.01)  # SIGKILL is delivered asynchronously: wait until it is gone
        assert run_cli("resume", str(run_id), "--detach", "--db", db) == 0  # reaps it first
    assert kills >= 2  # the run was long enough to be killed more than once
    assert _wait_run(store, reference, lambda r: r.status != "running").status == "finished"
    run = _wait_run(store, run_id, lambda r: r.status not in ("queued", "running"))
    assert run.status == "finished", run.error
    assert _series(store, run_id) == _series(store, reference)
    assert _summary(store, run_id) == _summary(store, reference)
    assert [r.step for r in store.steps(run_id)] == list(range(run.steps_done))  # none lost
    with sqlite3.connect(tmp_path / "caat.db") as raw:
        assert raw.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
