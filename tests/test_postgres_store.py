"""What only a PostgreSQL store has to show: its column types, its write lock, upgrades
when several hosts open an old store at once, SQLite-only commands refused in one line,
and the CLI on a `postgresql+psycopg://` URL. (The whole store suite also runs on
PostgreSQL: the `[postgres]` cases of tests/test_store*.py.)"""

from __future__ import annotations

import multiprocessing
import sys
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from helpers import run_cli

from caat_storage import SCHEMA_VERSION, RunStatus, Store, StoreError
from caat_storage.engine import AdvisoryLock, make_engine, write_engine
from caat_storage.firstpage import first_page
from caat_storage.migrate import HEAD

SqlRunner = Callable[..., list[tuple[Any, ...]]]
"""conftest's `raw_sql`: a statement past the store, on any back end."""
TABLES = ("run", "step_metric", "epoch_metric", "eval_result", "eval_job", "run_layer")
TABLES += ("layer_metric", "lab_report", "sample_conflict")


def _new_run(store: Store, name: str = "run") -> int:
    return store.create_run(
        name=name,
        config={"method": "caat", "gamma": 0.8},
        method="caat",
        param=0.8,
        dataset="digits",
        model="mlp",
        eps=0.1,
        epochs_total=2,
    )


@pytest.fixture
def store(pg_url: str) -> Iterator[Store]:
    with Store.open(pg_url) as opened:
        yield opened


def _types(store: Store, raw_sql: SqlRunner) -> dict[str, str]:
    rows = raw_sql(
        store.url,
        "SELECT table_name || '.' || column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = 'public'",
    )
    return {name: kind for name, kind in rows if name.split(".")[0] in TABLES}


def test_integers_are_bigint_and_floats_double_precision(store: Store, raw_sql: SqlRunner) -> None:
    types = _types(store, raw_sql)
    assert types["run.id"] == types["step_metric.step"] == "bigint"
    assert types["step_metric.phi"] == types["run.eps"] == "double precision"
    assert not [name for name, kind in types.items() if kind in ("integer", "real", "smallint")]
    # Past 32 bits, both ways.
    run_id = _new_run(store)
    big = 2**40 + 3
    store.append_metrics(
        run_id, steps=[{"step": big, "epoch": 0, "t": 0.1}], run_fields={"steps_done": big}
    )
    (row,) = store.steps(run_id)
    run = store.get_run(run_id)
    assert row.step == big and run is not None and run.steps_done == big


def test_nan_is_stored_as_null_as_on_sqlite(store: Store, raw_sql: SqlRunner) -> None:
    run_id = _new_run(store)
    nan, inf = float("nan"), float("inf")
    store.append_metrics(
        run_id,
        steps=[{"step": 0, "epoch": 0, "t": 0.0, "loss_c": nan, "loss_a": inf, "phi": -0.5}],
        epochs=[{"epoch": 0, "val_adv": nan, "val_clean": 0.25}],
        run_fields={"last_mu": nan},
    )
    stored = raw_sql(store.url, "SELECT loss_c, loss_a, phi FROM step_metric")
    assert stored == [(None, inf, -0.5)]  # NULL in the database itself, not 'NaN'
    (epoch,) = store.epochs(run_id)
    run = store.get_run(run_id)
    assert epoch.val_adv is None and epoch.val_clean == 0.25
    assert run is not None and run.last_mu is None


def _lock_is_free(url: str) -> bool:
    """Whether another session could take the store's write lock this moment."""
    import psycopg

    with psycopg.connect(url.replace("+psycopg", ""), autocommit=True) as conn:
        row = conn.execute("SELECT pg_try_advisory_lock(%s)", (int(AdvisoryLock.WRITE),)).fetchone()
        assert row is not None
        if row[0]:
            conn.execute("SELECT pg_advisory_unlock(%s)", (int(AdvisoryLock.WRITE),))
        return bool(row[0])


def test_writes_take_the_write_lock_at_begin_and_reads_do_not(store: Store) -> None:
    engine = make_engine(store.url)
    try:
        with write_engine(engine).connect() as conn:
            conn.begin()  # nothing written yet: the lock comes with the transaction itself
            assert not _lock_is_free(store.url)
            conn.rollback()
        assert _lock_is_free(store.url)
        with engine.connect() as conn:
            conn.begin()
            assert conn.exec_driver_sql("SELECT count(*) FROM run").scalar() == 0
            assert _lock_is_free(store.url)
            conn.rollback()
    finally:
        engine.dispose()


# -- an old store, opened by several hosts at once ------------------------------------------


def _make_version_1(store: Store, raw_sql: SqlRunner) -> int:
    """Turn a fresh store into what schema version 1 looked like (as on SQLite's fixture):
    no hosts, no lab tables, no Alembic revision; one run with rows to keep."""
    run_id = _new_run(store, "v1-0")
    store.append_metrics(run_id, steps=[{"step": s, "epoch": 0, "t": s / 10} for s in range(5)])
    store.close()
    for sql in (
        "ALTER TABLE run DROP COLUMN host",
        "ALTER TABLE eval_job DROP COLUMN host",
        "DROP TABLE sample_conflict",
        "DROP TABLE lab_report",
        "DROP TABLE alembic_version",
        "UPDATE caat_meta SET value = '1' WHERE key = 'schema_version'",
    ):
        raw_sql(store.url, sql)
    return run_id


def _open_proc(url: str, barrier: Any, results: Any) -> None:
    try:
        barrier.wait(timeout=60)
        with Store.open(url) as store:
            results.put(("ok", store.upgraded, store.store_id))
    except BaseException:
        results.put(("error", traceback.format_exc(), None))


def _open_at_once(url: str, count: int) -> list[tuple[str, Any, Any]]:
    """`count` processes open the store at `url` together: (kind, upgraded, store id)."""
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(count), ctx.Queue()
    procs = [ctx.Process(target=_open_proc, args=(url, barrier, results)) for _ in range(count)]
    for proc in procs:
        proc.start()
    try:
        return [results.get(timeout=120) for _ in procs]
    finally:
        for proc in procs:
            proc.join(timeout=30)


@pytest.mark.slow
def test_hosts_opening_an_empty_database_at_once_create_one_store(
    pg_url: str, raw_sql: SqlRunner
) -> None:
    outcome = _open_at_once(pg_url, 4)
    assert [kind for kind, _, _ in outcome] == ["ok"] * 4, outcome
    assert len({identity for _, _, identity in outcome}) == 1
    keys = raw_sql(pg_url, "SELECT key FROM caat_meta ORDER BY key")
    assert keys == [("schema_version",), ("store_id",)]
    assert raw_sql(pg_url, "SELECT version_num FROM alembic_version") == [(HEAD,)]


@pytest.mark.slow
def test_hosts_opening_an_old_store_at_once_upgrade_it_once(
    store: Store, raw_sql: SqlRunner
) -> None:
    run_id = _make_version_1(store, raw_sql)
    outcome = _open_at_once(store.url, 4)
    assert [kind for kind, _, _ in outcome] == ["ok"] * 4, outcome
    said = [upgraded for _, upgraded, _ in outcome if upgraded is not None]
    assert len(said) == 1 and "from schema version 1 to 2" in said[0]
    assert "store as it was" not in said[0]  # no file to copy: pg_dump's job
    assert len({identity for _, _, identity in outcome}) == 1
    assert raw_sql(store.url, "SELECT version_num FROM alembic_version") == [(HEAD,)]
    with Store.open(store.url) as again:
        assert again.upgraded is None
        assert [row.step for row in again.steps(run_id)] == list(range(5))
        again.mark_running(run_id, pid=1, host="elsewhere")  # the column is back
        run = again.get_run(run_id)
        assert run is not None and run.host == "elsewhere"
        report = again.save_lab_report("synth", {"a": 1})  # so are the lab's tables
        assert again.lab_report(report) is not None
    meta = dict(raw_sql(store.url, "SELECT key, value FROM caat_meta"))
    assert meta["schema_version"] == str(SCHEMA_VERSION)


# -- SQLite-only tools, and the CLI -----------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("backup",), "back it up with pg_dump"),
        (("restore", "/nonexistent/b.db"), "restore it with pg_restore"),
    ],
)
def test_sqlite_only_commands_name_the_postgresql_tool(
    store: Store, args: tuple[str, ...], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli(*args, "--db", store.url) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and captured.err.startswith("error: ")
    assert says in captured.err and "Traceback" not in captured.err


def test_without_psycopg_the_store_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)  # as if it were not installed
    with pytest.raises(StoreError, match=r"pip install 'caat\[postgres\]'") as info:
        Store.open("postgresql+psycopg://who:secret@127.0.0.1:1/caat")
    assert "\n" not in str(info.value) and "secret" not in str(info.value)


def test_the_dashboard_fast_path_leaves_postgresql_to_the_store(store: Store) -> None:
    _new_run(store)
    assert first_page(store.url, 10) is None


def test_caat_runs_lists_a_postgresql_store(
    store: Store, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    first = _new_run(store, "pg-first")
    second = _new_run(store, "pg-second")
    store.finish(first, RunStatus.FINISHED)
    assert run_cli("runs", "--db", store.url) == 0
    out = capsys.readouterr().out
    assert "pg-first" in out and "pg-second" in out and "finished" in out
    monkeypatch.setenv("CAAT_DB", store.url)  # the same through the environment
    assert run_cli("show", str(second)) == 0
    assert "pg-second" in capsys.readouterr().out


@pytest.mark.slow
def test_caat_demo_trains_into_postgresql(pg_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("demo", "--epochs", "1", "--db", pg_url) == 0
    out = capsys.readouterr().out
    assert "vanilla λ=0.5" in out and "caat γ=0.8" in out
    with Store.open(pg_url) as store:
        runs = store.list_runs()
        assert sorted(r.method for r in runs) == ["caat", "vanilla"]
        assert {r.status for r in runs} == {"finished"}
        for run in runs:
            assert run.id is not None and len(store.steps(run.id)) == run.steps_done > 0
            assert [e.epoch for e in store.epochs(run.id)][-1] == 1
