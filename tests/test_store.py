"""The run store: schema, transactions, the run lifecycle, metrics and many processes at once.

Tests through `store` run on both back ends (`[sqlite]`, `[postgres]`); those about a
SQLite file itself (its pragmas, locks, folder) take `db_path` or `sqlite_store`.
"""

import multiprocessing
import sqlite3
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.exc import IntegrityError
from store_procs import Load, collect_reports, join_all, race, reader_proc, writer_proc

import caat_storage.writer
from caat_storage import (
    TERMINAL_STATUSES,
    BatchWriter,
    RunStatus,
    Store,
    StoreError,
    caat_home,
    resolve_db_url,
)
from caat_storage.engine import make_engine, write_engine
from caat_storage.models import SCHEMA_VERSION

SqlRunner = Callable[..., list[tuple[Any, ...]]]
"""conftest's `raw_sql`: a statement past the store, on any back end."""
LOAD = Load(batches=60, rows_per_batch=25)
"""Each writer of the parallel test: 60 flushes of 25 step rows."""


def _url(path: Path) -> str:
    return f"sqlite:///{path}"


def _new_run(store: Store, name: str = "run-a", epochs_total: int = 3) -> int:
    return store.create_run(
        name=name,
        config={"method": "caat", "gamma": 0.8, "nested": {"lr": 0.1}},
        method="caat",
        param=0.8,
        dataset="digits",
        model="mlp",
        eps=0.1,
        epochs_total=epochs_total,
    )


def _step(step: int, epoch: int = 0, **extra: Any) -> dict[str, Any]:
    return {"step": step, "epoch": epoch, "t": step * 0.01, "loss_c": 1.0 / (step + 1), **extra}


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "store" / "caat.db"


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    """A fresh store on each back end."""
    with Store.open(store_url) as opened:
        yield opened


@pytest.fixture
def sqlite_store(db_path: Path) -> Iterator[Store]:
    """A fresh store in a SQLite file, for tests about the file itself."""
    with Store.open(_url(db_path)) as opened:
        yield opened


# -- schema ------------------------------------------------------------------------------


def test_schema_created_once_and_versioned(db_path: Path) -> None:
    with Store.open(_url(db_path)) as first:
        run_id = _new_run(first)
    assert db_path.is_file()  # the missing parent folder was created
    with Store.open(_url(db_path)) as second:  # reopening keeps what is there
        run = second.get_run(run_id)
        assert run is not None and run.name == "run-a"
    raw = sqlite3.connect(db_path)
    try:
        meta = raw.execute("SELECT key, value FROM caat_meta").fetchall()
        tables = {
            row[0] for row in raw.execute("SELECT name FROM sqlite_master WHERE type='table'")
        }
    finally:
        raw.close()
    assert dict(meta) == {"schema_version": str(SCHEMA_VERSION), "store_id": second.store_id}
    assert {"run", "step_metric", "epoch_metric", "caat_meta"} <= tables


def test_newer_schema_is_refused(store_url: str, raw_sql: SqlRunner) -> None:
    Store.open(store_url).close()
    newer = str(SCHEMA_VERSION + 1)
    raw_sql(store_url, "UPDATE caat_meta SET value = :v WHERE key = 'schema_version'", v=newer)
    with pytest.raises(StoreError, match="newer") as info:
        Store.open(store_url)
    assert "\n" not in str(info.value)


def test_sqlite_connections_are_tuned(db_path: Path) -> None:
    engine = make_engine(_url(db_path))
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
    finally:
        engine.dispose()


def test_switching_a_fresh_file_to_wal_waits_for_a_writer(db_path: Path) -> None:
    # Another process's write lock on a file still in rollback mode makes SQLite refuse
    # the switch to WAL at once, busy timeout or not; the connection must wait instead.
    db_path.parent.mkdir(parents=True, exist_ok=True)
    other = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
    other.execute("CREATE TABLE t (i INTEGER)")
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO t VALUES (1)")
    plain = sqlite3.connect(db_path, timeout=5, isolation_level=None)
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        plain.execute("PRAGMA journal_mode=WAL")  # the failure the engine has to absorb
    plain.close()
    release = threading.Timer(0.3, lambda: other.execute("COMMIT"))
    engine = make_engine(_url(db_path))
    release.start()
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("SELECT count(*) FROM t").scalar() == 1
    finally:
        release.join()
        other.close()
        engine.dispose()


def test_writes_take_the_lock_at_begin_and_reads_do_not(db_path: Path) -> None:
    Store.open(_url(db_path)).close()
    engine = make_engine(_url(db_path))
    other = sqlite3.connect(db_path, timeout=0, isolation_level=None)
    try:
        # A write transaction holds the write lock from BEGIN on, before it writes anything.
        with write_engine(engine).connect() as conn:
            conn.begin()
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("BEGIN IMMEDIATE")
            conn.rollback()
        # A read transaction leaves the write lock free, even while it is open.
        with engine.connect() as conn:
            conn.begin()
            assert conn.exec_driver_sql("SELECT count(*) FROM run").scalar() == 0
            other.execute("BEGIN IMMEDIATE")
            other.execute("ROLLBACK")
            conn.rollback()
    finally:
        other.close()
        engine.dispose()


def test_readers_are_not_blocked_by_a_writer(sqlite_store: Store, db_path: Path) -> None:
    store = sqlite_store
    run_id = _new_run(store)
    other = sqlite3.connect(db_path, timeout=0, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        other.execute("UPDATE run SET notes = 'uncommitted'")
        started = time.monotonic()
        run = store.get_run(run_id)
        assert time.monotonic() - started < 5
        assert run is not None and run.notes == ""  # the reader sees the last commit
        other.execute("ROLLBACK")
    finally:
        other.close()


# -- opening errors -----------------------------------------------------------------------


def test_unwritable_location_is_one_clear_line(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(StoreError) as info:
        Store.open(_url(blocker / "sub" / "caat.db"))
    message = str(info.value)
    assert message.startswith(f"cannot open the store at {blocker / 'sub' / 'caat.db'}: ")
    assert str(blocker) in message.split(": ", 1)[1]
    assert "\n" not in message


def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.db"
    bogus.write_bytes(b"this is not a sqlite database at all, just some bytes" * 40)
    with pytest.raises(StoreError, match="not a database") as info:
        Store.open(_url(bogus))
    assert "\n" not in str(info.value)


def test_a_bad_url_is_refused() -> None:
    with pytest.raises(StoreError, match="cannot open the store at nosuchdb://x"):
        Store.open("nosuchdb://x")


# -- locations ----------------------------------------------------------------------------


def test_resolve_db_url(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("CAAT_DB", raising=False)
    monkeypatch.setenv("CAAT_HOME", str(tmp_path / "home"))
    assert caat_home() == tmp_path / "home"
    assert resolve_db_url(None) == f"sqlite:///{tmp_path / 'home' / 'caat.db'}"

    monkeypatch.chdir(tmp_path)
    assert resolve_db_url("runs.db") == f"sqlite:///{tmp_path / 'runs.db'}"
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert resolve_db_url("~/x.db") == f"sqlite:///{tmp_path / 'user' / 'x.db'}"
    pg = "postgresql://caat:secret@db.example/caat"
    assert resolve_db_url(pg) == pg

    monkeypatch.setenv("CAAT_DB", "other.db")
    assert resolve_db_url(None) == f"sqlite:///{tmp_path / 'other.db'}"
    assert resolve_db_url("explicit.db") == f"sqlite:///{tmp_path / 'explicit.db'}"
    monkeypatch.setenv("CAAT_DB", pg)
    assert resolve_db_url(None) == pg


def test_caat_home_defaults_to_the_user_data_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    import platformdirs

    monkeypatch.delenv("CAAT_HOME", raising=False)
    assert caat_home() == Path(platformdirs.user_data_dir("caat"))


def test_runs_root(sqlite_store: Store, db_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = sqlite_store
    assert store.runs_root() == db_path.parent / "runs" / store.store_id
    run = store.get_run(_new_run(store))
    assert run is not None
    assert run.run_dir == str(db_path.parent / "runs" / store.store_id / str(run.id))
    assert not Path(run.run_dir).exists()  # the store names the folder; the worker makes it
    monkeypatch.setenv("CAAT_HOME", "/somewhere/else")
    with Store.open("sqlite://") as memory:
        assert memory.runs_root() == Path("/somewhere/else/runs") / memory.store_id


# -- the run lifecycle --------------------------------------------------------------------


def test_run_lifecycle(store: Store) -> None:
    run_id = _new_run(store)
    run = store.get_run(run_id)
    assert run is not None
    assert run.status == RunStatus.QUEUED
    assert run.created_at.tzinfo is not None and run.created_at.utcoffset().total_seconds() == 0
    assert run.started_at is None and run.pid is None
    assert run.epochs_total == 3 and run.epochs_done == 0
    assert '"gamma": 0.8' in run.config

    store.mark_running(run_id, pid=4242)
    run = store.get_run(run_id)
    assert run is not None
    assert run.status == RunStatus.RUNNING and run.pid == 4242
    assert run.started_at is not None and run.heartbeat_at is not None
    assert run.started_at >= run.created_at

    trace = 'Traceback (most recent call last):\n  File "x.py", line 1\nRuntimeError: boom\n'
    store.finish(run_id, RunStatus.FAILED, error=trace, fields={"epochs_done": 2})
    run = store.get_run(run_id)
    assert run is not None
    assert run.status == RunStatus.FAILED and run.status in TERMINAL_STATUSES
    assert run.error == trace
    assert run.epochs_done == 2
    assert run.finished_at is not None and run.finished_at >= run.started_at


def test_find_run_by_id_and_by_newest_name(store: Store) -> None:
    older = _new_run(store, name="sweep")
    newer = _new_run(store, name="sweep")
    other = _new_run(store, name="2024-baseline")
    found = store.find_run(str(older))
    assert found.id == older
    assert store.find_run("sweep").id == newer
    assert store.find_run("2024-baseline").id == other
    with pytest.raises(StoreError, match="no run 'missing' in"):
        store.find_run("missing")
    with pytest.raises(StoreError, match="no run '999'"):
        store.find_run("999")
    assert store.get_run(999) is None


def test_list_runs_newest_first_with_paging(store: Store) -> None:
    ids = [_new_run(store, name=f"r{i}") for i in range(5)]
    assert [run.id for run in store.list_runs()] == ids[::-1]
    assert [run.id for run in store.list_runs(limit=2)] == ids[:-3:-1]
    assert [run.id for run in store.list_runs(limit=2, offset=2)] == [ids[2], ids[1]]


def test_update_run_and_errors(store: Store) -> None:
    run_id = _new_run(store)
    store.update_run(run_id, notes="a note", tags="best,paper", best_epoch=2)
    run = store.get_run(run_id)
    assert run is not None
    assert (run.notes, run.tags, run.best_epoch) == ("a note", "best,paper", 2)
    with pytest.raises(ValueError, match="no_such_column"):
        store.update_run(run_id, no_such_column=1)
    with pytest.raises(StoreError, match="no run 12345"):
        store.update_run(12345, notes="x")
    with pytest.raises(StoreError, match="no run 12345"):
        store.mark_running(12345, pid=1)
    with pytest.raises(ValueError, match="not a final status"):
        store.finish(run_id, RunStatus.RUNNING)


# -- metrics ------------------------------------------------------------------------------


def test_append_metrics_round_trip(store: Store) -> None:
    run_id = _new_run(store)
    store.mark_running(run_id, pid=1)
    before = store.get_run(run_id)
    assert before is not None and before.heartbeat_at is not None
    time.sleep(0.01)

    steps = [_step(i, phi=0.5 - i * 0.1, skipped=i == 3) for i in range(5)]
    store.append_metrics(
        run_id,
        steps=steps,
        epochs=[{"epoch": 0, "train_loss_c": 0.7, "train_clean": 0.6}],
        run_fields={"steps_done": 5, "last_phi": 0.1},
    )
    stored = store.steps(run_id)
    assert [row.step for row in stored] == [0, 1, 2, 3, 4]
    assert all(row.run_id == run_id for row in stored)
    assert stored[2].phi == pytest.approx(0.3) and stored[2].t == pytest.approx(0.02)
    assert [row.skipped for row in stored] == [False, False, False, True, False]
    assert stored[0].mu is None  # a field not given stays empty

    assert [row.step for row in store.steps(run_id, after_step=2)] == [3, 4]
    assert [row.step for row in store.steps(run_id, after_step=0, limit=2)] == [1, 2]
    assert store.steps(run_id, after_step=4) == []

    # The same epoch again with more fields: updated, and a None erases nothing.
    store.append_metrics(
        run_id, epochs=[{"epoch": 0, "val_clean": 0.9, "val_adv": 0.4, "train_clean": None}]
    )
    (epoch,) = store.epochs(run_id)
    assert (epoch.train_clean, epoch.val_clean, epoch.val_adv) == (0.6, 0.9, 0.4)
    store.append_metrics(run_id, epochs=[{"epoch": 1, "train_clean": 0.7}])
    assert [row.epoch for row in store.epochs(run_id)] == [0, 1]

    after = store.get_run(run_id)
    assert after is not None and after.heartbeat_at is not None
    assert after.steps_done == 5 and after.last_phi == pytest.approx(0.1)
    assert after.heartbeat_at > before.heartbeat_at


def test_append_metrics_is_all_or_nothing(store: Store) -> None:
    run_id = _new_run(store)
    store.append_metrics(run_id, steps=[_step(0)])
    # Step 0 again, in the middle of a batch (SQLite says UNIQUE, PostgreSQL unique).
    with pytest.raises(IntegrityError, match=r"(?i)unique"):
        store.append_metrics(
            run_id, steps=[_step(1), _step(0)], epochs=[{"epoch": 0}], run_fields={"steps_done": 2}
        )
    assert [row.step for row in store.steps(run_id)] == [0]
    assert store.epochs(run_id) == []
    run = store.get_run(run_id)
    assert run is not None and run.steps_done == 0


def test_append_metrics_rejects_bad_rows(store: Store) -> None:
    run_id = _new_run(store)
    with pytest.raises(ValueError, match="unknown step field"):
        store.append_metrics(run_id, steps=[_step(0, bogus=1.0)])
    with pytest.raises(ValueError, match="lacks t"):
        store.append_metrics(run_id, steps=[{"step": 0, "epoch": 0}])
    with pytest.raises(ValueError, match="unknown run field"):
        store.append_metrics(run_id, run_fields={"bogus": 1})
    with pytest.raises(StoreError, match="no run 777"):
        store.append_metrics(777, steps=[_step(0)])
    assert store.steps(run_id) == []


def test_nan_and_numpy_values_are_stored(store: Store) -> None:
    np = pytest.importorskip("numpy")
    run_id = _new_run(store)
    store.append_metrics(
        run_id,
        steps=[
            {
                "step": np.int64(0),
                "epoch": 0,
                "t": np.float32(0.5),
                "loss_c": float("nan"),
                "phi": np.float64(-0.25),
                "skipped": np.bool_(True),
            }
        ],
        run_fields={"nonfinite_steps": np.int64(1)},
    )
    (row,) = store.steps(run_id)
    assert row.step == 0 and row.skipped is True and row.phi == -0.25
    assert row.loss_c is None  # NaN is NULL on every back end, as SQLite stores it
    run = store.get_run(run_id)
    assert run is not None and run.nonfinite_steps == 1


def test_delete_run_cascades(store: Store, raw_sql: SqlRunner) -> None:
    keep = _new_run(store, name="keep")
    gone = _new_run(store, name="gone")
    for run_id in (keep, gone):
        store.append_metrics(run_id, steps=[_step(0), _step(1)], epochs=[{"epoch": 0}])
    store.delete_run(gone)
    assert store.get_run(gone) is None
    # Read past the store: the database itself holds no row of the deleted run.
    steps = raw_sql(store.url, "SELECT run_id, count(*) FROM step_metric GROUP BY run_id")
    epochs = raw_sql(store.url, "SELECT run_id, count(*) FROM epoch_metric GROUP BY run_id")
    assert steps == [(keep, 2)] and epochs == [(keep, 1)]
    with pytest.raises(StoreError):
        store.delete_run(gone)


# -- BatchWriter --------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(caat_storage.writer.time, "monotonic", fake)
    return fake


def _count_writes(monkeypatch: pytest.MonkeyPatch, store: Store) -> list[str]:
    calls: list[str] = []
    real_append, real_heartbeat = store.append_metrics, store.heartbeat

    def append(*args: Any, **kwargs: Any) -> None:
        calls.append("append")
        real_append(*args, **kwargs)

    def heartbeat(*args: Any, **kwargs: Any) -> None:
        calls.append("heartbeat")
        real_heartbeat(*args, **kwargs)

    monkeypatch.setattr(store, "append_metrics", append)
    monkeypatch.setattr(store, "heartbeat", heartbeat)
    return calls


def test_batch_writer_buffers_until_the_interval(
    store: Store, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id = _new_run(store)
    calls = _count_writes(monkeypatch, store)
    writer = BatchWriter(store, run_id, interval=0.5, heartbeat_interval=5.0)

    writer.add_steps([_step(0), _step(1)])
    writer.set_run_fields(steps_done=2, last_phi=0.2)
    clock.now += 0.4
    assert writer.maybe_flush() is False
    assert store.steps(run_id) == [] and calls == []

    writer.add_steps([_step(2)])
    writer.add_epoch({"epoch": 0, "train_clean": 0.5})
    writer.set_run_fields(steps_done=3)  # the latest value wins
    clock.now += 0.2
    assert writer.maybe_flush() is True
    assert calls == ["append"]  # everything went in one transaction
    assert [row.step for row in store.steps(run_id)] == [0, 1, 2]
    assert [row.epoch for row in store.epochs(run_id)] == [0]
    run = store.get_run(run_id)
    assert run is not None and run.steps_done == 3 and run.last_phi == pytest.approx(0.2)
    assert not writer.pending

    clock.now += 1.0  # nothing buffered and no heartbeat due: nothing to write
    assert writer.maybe_flush() is False
    assert calls == ["append"]


def test_batch_writer_heartbeats_when_quiet(
    store: Store, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id = _new_run(store)
    store.mark_running(run_id, pid=1)
    first = store.get_run(run_id)
    assert first is not None and first.heartbeat_at is not None
    calls = _count_writes(monkeypatch, store)
    writer = BatchWriter(store, run_id, interval=0.5, heartbeat_interval=5.0)

    clock.now += 4.9
    assert writer.maybe_flush() is False
    time.sleep(0.01)
    clock.now += 0.2
    assert writer.maybe_flush() is True
    assert calls == ["heartbeat"]
    second = store.get_run(run_id)
    assert second is not None and second.heartbeat_at is not None
    assert second.heartbeat_at > first.heartbeat_at
    assert store.steps(run_id) == []

    writer.flush()  # nothing buffered: only a heartbeat
    assert calls == ["heartbeat", "heartbeat"]


def test_batch_writer_keeps_rows_when_a_write_fails(
    store: Store, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id = _new_run(store)
    writer = BatchWriter(store, run_id, interval=0.5)
    writer.add_steps([_step(0), _step(1)])
    real_append = store.append_metrics

    def failing(*args: Any, **kwargs: Any) -> None:
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(store, "append_metrics", failing)
    with pytest.raises(sqlite3.OperationalError):
        writer.flush()
    assert writer.pending

    monkeypatch.setattr(store, "append_metrics", real_append)
    writer.add_steps([_step(2)])
    clock.now += 0.5
    assert writer.maybe_flush() is True
    assert [row.step for row in store.steps(run_id)] == [0, 1, 2]


# -- many processes on one SQLite file ---------------------------------------------------
# PostgreSQL's own are in tests/test_postgres_concurrency.py. Worker functions live at
# module level so the spawn start method can import them by name.


def _opener_proc(url: str, name: str, barrier: Any, results: Any) -> None:
    try:
        barrier.wait(timeout=60)
        with Store.open(url) as store:
            _new_run(store, name=name)
        results.put((name, None))
    except BaseException:
        results.put((name, traceback.format_exc()))
        raise SystemExit(1) from None


@pytest.mark.slow
def test_processes_opening_a_fresh_store_at_once(tmp_path: Path) -> None:
    url = _url(tmp_path / "fresh" / "caat.db")
    names = [f"opener-{i}" for i in range(4)]
    outcome, exits = race(_opener_proc, url, names)
    assert {name: error for name, error in outcome.items() if error} == {}
    assert exits == [0] * len(names)
    with Store.open(url) as store:
        assert sorted(run.name for run in store.list_runs()) == names
    raw = sqlite3.connect(tmp_path / "fresh" / "caat.db")
    try:
        keys = raw.execute("SELECT key FROM caat_meta ORDER BY key").fetchall()
        assert keys == [("schema_version",), ("store_id",)]
    finally:
        raw.close()


@pytest.mark.slow
def test_writers_and_readers_in_parallel_processes(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    url = _url(tmp_path / "caat.db")
    Store.open(url).close()
    writer_names = [f"writer-{i}" for i in range(4)]
    reader_names = [f"reader-{i}" for i in range(2)]
    barrier = ctx.Barrier(len(writer_names) + len(reader_names))
    stop, results = ctx.Event(), ctx.Queue()
    writers = [
        ctx.Process(target=writer_proc, args=(url, name, barrier, results, LOAD), name=name)
        for name in writer_names
    ]
    readers = [
        ctx.Process(target=reader_proc, args=(url, name, barrier, stop, results, LOAD), name=name)
        for name in reader_names
    ]
    started = time.monotonic()
    try:
        for proc in writers + readers:
            proc.start()
        outcome = collect_reports(results, writers + readers, writer_names)
        stop.set()
        outcome |= collect_reports(results, writers + readers, reader_names)
    finally:
        stop.set()
        join_all(writers + readers)
    elapsed = time.monotonic() - started

    errors = {name: payload for name, payload in outcome.items() if isinstance(payload, str)}
    assert errors == {}
    assert [proc.exitcode for proc in writers + readers] == [0] * 6

    total, batches = LOAD.rows, LOAD.batches
    with Store.open(url) as store:
        runs = store.list_runs()
        assert sorted(run.name for run in runs) == writer_names
        for run in runs:
            assert run.id is not None
            assert [row.step for row in store.steps(run.id)] == list(range(total))
            assert [row.epoch for row in store.epochs(run.id)] == list(range(batches))
            assert run.status == RunStatus.FINISHED
            assert (run.steps_done, run.epochs_done) == (total, batches)
    for name in reader_names:
        report = outcome[name]
        assert report["seen"] == dict.fromkeys(writer_names, total)
        assert report["polls"] > 1
    assert elapsed < 60
