"""A store that goes away: a worker trains on and writes every row once it is back; a
reader gets one clear `StoreUnreachable` and recovers by itself.

The outage is real where it can be: a PostgreSQL server of the test's own, stopped and
started again mid-run.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from helpers import NotingApp, run_app, run_cli, wait_for
from hypothesis import given, settings
from hypothesis import strategies as st
from store_procs import new_run
from textual.pilot import Pilot
from textual.widgets import DataTable

from caat_storage import BatchWriter, RunStatus, Store, StoreUnreachable


class FlakyStore:
    """A stand-in store whose writes fail while `down` says so; it keeps what got through."""

    def __init__(self, down: list[bool]) -> None:
        self.down = down  # one entry per write try; past the end: up
        self.tries = 0
        self.steps: list[int] = []
        self.epochs: list[int] = []
        self.layer_names: list[list[str]] = []

    def _try(self) -> None:
        self.tries += 1
        if self.tries <= len(self.down) and self.down[self.tries - 1]:
            raise StoreUnreachable("store unreachable at test: connection refused")

    def append_metrics(
        self,
        run_id: int,
        steps: Sequence[Mapping[str, Any]] = (),
        epochs: Sequence[Mapping[str, Any]] = (),
        run_fields: Mapping[str, Any] | None = None,
        layers: Sequence[Mapping[str, Any]] = (),
    ) -> None:
        self._try()
        self.steps += [int(row["step"]) for row in steps]
        self.epochs += [int(row["epoch"]) for row in epochs]

    def heartbeat(self, run_id: int) -> None:
        self._try()

    def set_run_layers(self, run_id: int, names: Sequence[str], sizes: Sequence[int]) -> None:
        self._try()
        self.layer_names.append(list(names))


@settings(max_examples=60, deadline=None)
@given(down=st.lists(st.booleans(), max_size=30), batches=st.integers(1, 12))
def test_every_row_is_written_once_in_order_whatever_the_outages(
    down: list[bool], batches: int
) -> None:
    store = FlakyStore(down)
    told: list[str | None] = []
    writer = BatchWriter(store, 1, interval=0.0, retry_interval=0.0, on_outage=told.append)
    writer.name_layers(["w", "b"], [4, 2])
    for batch in range(batches):
        writer.add_steps([{"step": 3 * batch + i} for i in range(3)])
        writer.add_epoch({"epoch": batch})
        writer.maybe_flush()
    writer.drain(wait_s=5)
    assert store.steps == list(range(3 * batches))
    assert store.epochs == list(range(batches))
    assert store.layer_names == [["w", "b"]]
    # told once as each outage begins (a reason) and once as it ends (None), alternating
    assert all(isinstance(t, str) for t in told[0::2]) and all(t is None for t in told[1::2])
    assert len(told) % 2 == 0 and writer.unreachable is None


def test_drain_gives_up_after_its_wait() -> None:
    writer = BatchWriter(FlakyStore([True] * 1000), 1, retry_interval=0.01)
    writer.add_steps([{"step": 0}])
    with pytest.raises(StoreUnreachable):
        writer.drain(wait_s=0.1)
    assert writer.pending  # the rows are still there for a later try


def _step(step: int) -> dict[str, Any]:
    return {"step": step, "epoch": 0, "t": float(step), "loss_c": 1.0}


def test_a_batch_sent_again_replaces_itself(store_url: str) -> None:
    """A worker whose commit's answer was lost sends the batch again: no row twice."""
    with Store.open(store_url) as store:
        run_id = new_run(store, "r", epochs_total=1)
        store.append_metrics(run_id, steps=[_step(0), _step(1)])
        for _ in range(2):
            store.append_metrics(run_id, steps=[_step(2), _step(3)], epochs=[{"epoch": 0}])
        assert [row.step for row in store.steps(run_id)] == [0, 1, 2, 3]
        assert [row.epoch for row in store.epochs(run_id)] == [0]


def test_a_stopped_server_is_unreachable_then_back(
    own_pg_server: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    url = own_pg_server.url()
    with Store.open(url) as store:
        run_id = new_run(store, "r", epochs_total=1)
        own_pg_server.stop()
        try:
            with pytest.raises(StoreUnreachable, match=r"store unreachable at .*127\.0\.0\.1"):
                store.list_runs()
            assert run_cli("runs", "--db", url) == 2
            (line,) = capsys.readouterr().err.strip().splitlines()
            assert line.startswith("error: store unreachable at")
        finally:
            own_pg_server.start()
        assert [run.id for run in store.list_runs()] == [run_id]  # the same Store, again


def _worker_rows(url: str, run_id: int) -> tuple[Any, list[int], int]:
    with Store.open(url) as store:
        run = store.get_run(run_id)
        return run, [row.step for row in store.steps(run_id)], len(store.epochs(run_id))


def test_a_worker_trains_through_a_server_restart_and_stores_every_row(
    own_pg_server: Any, tmp_path: Path
) -> None:
    url = own_pg_server.url()
    args = ("--model", "linear", "--epochs", "12", "--attack-steps", "2", "--eval-steps", "2")
    assert run_cli("train", "--db", url, "--name", "outage", *args, "--detach") == 0
    with Store.open(url) as store:
        run_id = store.find_run("outage").id
        deadline = time.monotonic() + 60
        while (store.get_run(run_id).steps_done or 0) < 5:  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "the worker never started training"
            time.sleep(0.1)
    own_pg_server.stop()
    time.sleep(4)  # the worker trains on meanwhile, its rows kept
    own_pg_server.start()
    deadline = time.monotonic() + 120
    run, steps, epochs = _worker_rows(url, run_id)
    while run.status == RunStatus.RUNNING.value:
        assert time.monotonic() < deadline, "the worker never finished"
        time.sleep(0.5)
        run, steps, epochs = _worker_rows(url, run_id)
    log = (Path(run.run_dir) / "worker.log").read_text()
    assert run.status == RunStatus.FINISHED.value, log
    assert "store unreachable at" in log and "store reachable again" in log
    assert steps == list(range(run.steps_done)) and epochs == 12


def test_the_dashboard_says_unreachable_once_and_recovers(own_pg_server: Any) -> None:
    url = own_pg_server.url()
    with Store.open(url) as store:
        new_run(store, "r", epochs_total=1)
    app = NotingApp(url)

    def rows() -> int:
        return app.screen.query(DataTable).first().row_count

    async def body(pilot: Pilot[None]) -> None:
        await wait_for(pilot, lambda: app.bench is not None and rows() == 1)
        own_pg_server.stop()
        try:
            await wait_for(pilot, lambda: any("store unreachable at" in s for s in app.shown))
            assert app.sub_title.startswith("STORE UNREACHABLE")
            await pilot.pause(1.0)  # ten more polls and a housekeeping round: still one notice
            assert sum("unreachable" in s for s in app.shown) == 1
        finally:
            own_pg_server.start()
        with Store.open(url) as store:
            new_run(store, "r", epochs_total=1)
        await wait_for(pilot, lambda: "store reachable again" in app.shown and rows() == 2)
        assert not app.sub_title.startswith("STORE UNREACHABLE")

    run_app(app, body)
