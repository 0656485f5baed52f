"""The queries the dashboard runs: paging, search, sort, edits, reaping dead workers."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, insert, update

from caat_storage import Run, RunStatus, Store, StoreError
from caat_storage.engine import make_engine, write_engine
from caat_storage.runs import list_statement
from caat_storage.status import this_host
from caat_storage.store import SORTABLE_COLUMNS, split_tags


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "caat.db"


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    """A fresh store on each back end (`[sqlite]`, `[postgres]`)."""
    with Store.open(store_url) as opened:
        yield opened


@pytest.fixture
def sqlite_store(db_path: Path) -> Iterator[Store]:
    """A store in a SQLite file, for what SQLite's own planner and progress handler show."""
    with Store.open(f"sqlite:///{db_path}") as opened:
        yield opened


def _new_run(store: Store, name: str = "run", **fields: Any) -> int:
    values = {
        "method": "caat",
        "param": 0.8,
        "dataset": "digits",
        "model": "cnn",
        "eps": 0.3,
        **fields,
    }
    run_id = store.create_run(
        name=name,
        config={"device": "cpu"},
        method=values.pop("method"),
        param=values.pop("param"),
        dataset=values.pop("dataset"),
        model=values.pop("model"),
        eps=values.pop("eps"),
        epochs_total=3,
    )
    if values:
        store.update_run(run_id, **values)
    return run_id


def _ids(runs: list[Run]) -> list[int | None]:
    return [run.id for run in runs]


@contextmanager
def _own_engine(store: Store) -> Iterator[Engine]:
    """The test's own engine on the store's database, to go past the store's rules."""
    engine = make_engine(store.url)
    try:
        yield write_engine(engine)
    finally:
        engine.dispose()


def _set(store: Store, run_id: int, **values: Any) -> None:
    """Write columns directly, past the store's rules: times in the past, odd states."""
    with _own_engine(store) as engine, engine.begin() as conn:
        conn.execute(update(Run).where(Run.id == run_id).values(**values))  # type: ignore[arg-type]


# -- search and sort ------------------------------------------------------------------------


def test_default_listing_is_unchanged(store: Store) -> None:
    ids = [_new_run(store, name=f"r{i}") for i in range(4)]
    assert _ids(store.list_runs()) == ids[::-1]
    assert _ids(store.list_runs(limit=2, offset=1)) == [ids[2], ids[1]]
    assert store.count_runs() == 4


def test_search_is_case_insensitive_over_the_listed_columns(store: Store) -> None:
    by_name = _new_run(store, name="Sweep-Alpha")
    by_method = _new_run(store, name="x1", method="vanilla", param=0.5)
    by_dataset = _new_run(store, name="x2", dataset="cifar10")
    by_model = _new_run(store, name="x3", model="resnet18")
    by_status = _new_run(store, name="x4", status="diverged")
    by_tags = _new_run(store, name="x5", tags="paper,best")
    _new_run(store, name="x6", notes="sweep resnet18 cifar10 in the notes only")

    assert _ids(store.list_runs(search="sweep-ALPHA")) == [by_name]
    assert _ids(store.list_runs(search="VANILLA")) == [by_method]
    assert _ids(store.list_runs(search="cifar")) == [by_dataset]
    assert _ids(store.list_runs(search="ResNet")) == [by_model]
    assert _ids(store.list_runs(search="diverg")) == [by_status]
    assert _ids(store.list_runs(search="best")) == [by_tags]
    assert store.count_runs(search="best") == 1
    # Every word must match somewhere (each in any column); blank means no filter.
    assert _ids(store.list_runs(search="  cifar10   x2 ")) == [by_dataset]
    assert store.list_runs(search="cifar10 resnet18") == []
    assert store.count_runs(search="   ") == 7
    assert len(store.list_runs(search="")) == 7


def test_search_takes_wildcards_literally(store: Store) -> None:
    percent = _new_run(store, name="lr 10% warmup")
    underscore = _new_run(store, name="ab_c")
    backslash = _new_run(store, name="dir\\sub")
    _new_run(store, name="abxc")
    _new_run(store, name="lr 10 warmup")
    assert _ids(store.list_runs(search="10%")) == [percent]
    assert _ids(store.list_runs(search="%")) == [percent]
    assert _ids(store.list_runs(search="b_c")) == [underscore]
    assert _ids(store.list_runs(search="_")) == [underscore]
    assert _ids(store.list_runs(search="\\")) == [backslash]
    assert store.count_runs(search="%") == 1


def test_sort_by_every_whitelisted_column(store: Store) -> None:
    for i in range(3):
        _new_run(store, name=f"r{i}")
    for column in SORTABLE_COLUMNS:
        for descending in (True, False):
            assert len(store.list_runs(sort=column, descending=descending)) == 3


def test_unknown_sort_is_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="cannot sort runs by 'config'") as info:
        store.list_runs(sort="config")
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError):
        store.list_runs(sort="id; DROP TABLE run")


def test_sort_puts_empty_values_last_and_breaks_ties_newest_first(store: Store) -> None:
    low = _new_run(store, name="low", last_phi=-0.5)
    empty_old = _new_run(store, name="empty-old")
    high_old = _new_run(store, name="high-old", last_phi=0.9)
    empty_new = _new_run(store, name="empty-new")
    high_new = _new_run(store, name="high-new", last_phi=0.9)
    assert _ids(store.list_runs(sort="last_phi")) == [high_new, high_old, low, empty_new, empty_old]
    assert _ids(store.list_runs(sort="last_phi", descending=False)) == [
        low,
        high_new,
        high_old,
        empty_new,
        empty_old,
    ]
    # Paging through a sorted list gives each row once.
    pages = [store.list_runs(sort="last_phi", limit=2, offset=o) for o in (0, 2, 4)]
    assert [run.id for page in pages for run in page] == [
        high_new,
        high_old,
        low,
        empty_new,
        empty_old,
    ]


def test_sort_by_text_and_status(store: Store) -> None:
    b = _new_run(store, name="b")
    a = _new_run(store, name="a")
    c = _new_run(store, name="c", status="running")
    assert _ids(store.list_runs(sort="name", descending=False)) == [a, b, c]
    assert _ids(store.list_runs(sort="status", descending=False)) == [a, b, c]  # ties: newest first
    assert _ids(store.list_runs(sort="status")) == [c, a, b]


# -- thousands of runs ------------------------------------------------------------------------


def _bulk_fill(store: Store, n: int) -> None:
    """Insert `n` runs in one statement: every 7th is CA-AT on CIFAR-10, every 10th tagged."""
    start = datetime(2026, 1, 1, tzinfo=UTC)
    rows = [
        {
            "name": f"run-{i:05d}",
            "status": "finished" if i % 3 else "failed",
            "method": "caat" if i % 7 == 0 else "vanilla",
            "param": 0.8,
            "dataset": "cifar10" if i % 7 == 0 else "digits",
            "model": "cnn",
            "eps": 0.3,
            "config": "{}",
            "created_at": start + timedelta(seconds=i),
            "epochs_total": 10,
            "epochs_done": i % 11,
            "best_val_adv": None if i % 5 == 0 else (i % 97) / 100,
            "notes": "",
            "tags": "sweep" if i % 10 == 0 else "",
        }
        for i in range(n)
    ]
    with _own_engine(store) as engine, engine.begin() as conn:
        conn.execute(insert(Run), rows)


def test_five_thousand_runs_page_search_and_sort(store: Store) -> None:
    n = 5000
    _bulk_fill(store, n)
    assert store.count_runs() == n

    page = store.list_runs(limit=50)
    assert [run.name for run in page] == [f"run-{i:05d}" for i in range(n - 1, n - 51, -1)]

    # CA-AT on CIFAR-10 (i % 7 == 0), sorted by best AA descending, empties last, ties newest first.
    expected = sorted(
        (i for i in range(n) if i % 7 == 0),
        key=lambda i: (i % 5 == 0, -((i % 97) / 100), -i),
    )
    found = store.list_runs(limit=50, offset=50, search="CIFAR10 caat", sort="best_val_adv")
    assert [run.name for run in found] == [f"run-{i:05d}" for i in expected[50:100]]
    assert store.count_runs(search="cifar10 caat") == len(expected)

    tagged = store.list_runs(limit=50, search="sweep", sort="created_at", descending=False)
    assert [run.name for run in tagged] == [f"run-{i:05d}" for i in range(0, 500, 10)]


def _plan(store: Store, **kwargs: Any) -> str:
    defaults: dict[str, Any] = {
        "limit": 50,
        "offset": 0,
        "search": None,
        "sort": "id",
        "descending": True,
    }
    statement = list_statement(**{**defaults, **kwargs})
    with _own_engine(store) as engine:
        compiled = statement.compile(dialect=engine.dialect, compile_kwargs={"literal_binds": True})
        with engine.connect() as conn:
            rows = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}").fetchall()
    return " | ".join(row[-1] for row in rows)


def test_the_default_page_reads_only_its_rows(sqlite_store: Store, db_path: Path) -> None:
    store = sqlite_store
    _bulk_fill(store, 5000)
    # In id order with no sort step: SQLite walks the table backwards and stops at LIMIT.
    plan = _plan(store)
    assert "TEMP B-TREE" not in plan, plan
    # Indexed columns are read in index order, not sorted after a full scan.
    for column in ("created_at", "status", "name"):
        plan = _plan(store, sort=column)
        assert f"USING INDEX ix_run_{column}" in plan and "TEMP B-TREE" not in plan, plan

    # The same measured: the first page costs a small fraction of a full pass.
    with _own_engine(store) as engine:
        statement = list_statement(
            limit=50, offset=0, search=None, sort="id", descending=True
        ).compile(dialect=engine.dialect, compile_kwargs={"literal_binds": True})
    raw = sqlite3.connect(db_path)
    try:
        counts = []
        for sql in (str(statement), "SELECT * FROM run ORDER BY last_mu"):
            ticks = [0]

            def tick(ticks: list[int] = ticks) -> int:
                ticks[0] += 1
                return 0

            raw.set_progress_handler(tick, 100)
            raw.execute(sql).fetchall()
            counts.append(ticks[0])
    finally:
        raw.close()
    assert counts[0] * 20 < counts[1], counts


# -- edits ----------------------------------------------------------------------------------


def test_rename_run(store: Store) -> None:
    run_id = _new_run(store, name="old")
    assert store.rename_run(run_id, "  new name  ") == "new name"
    run = store.get_run(run_id)
    assert run is not None and run.name == "new name"
    assert store.rename_run(run_id, "x" * 200) == "x" * 200
    assert store.rename_run(run_id, "γ=0.8\u00a0sweep 🚀") == "γ=0.8\u00a0sweep 🚀"
    refused = [
        ("", "empty"),
        ("   ", "empty"),
        ("x" * 201, "at most 200"),
        ("two\nlines", "line breaks"),
        ("a\u2028b", "line breaks"),
        ("tab\there", "control"),
    ]
    for bad, words in refused:
        with pytest.raises(ValueError, match=words) as info:
            store.rename_run(run_id, bad)
        assert "\n" not in str(info.value)
    with pytest.raises(StoreError, match="no run 999"):
        store.rename_run(999, "name")


def test_set_tags_normalises(store: Store) -> None:
    run_id = _new_run(store)
    assert store.set_tags(run_id, [" paper ", "best", "", "paper", "  ", "γ sweep"]) == [
        "paper",
        "best",
        "γ sweep",
    ]
    run = store.get_run(run_id)
    assert run is not None and run.tags == "paper,best,γ sweep"
    assert split_tags(run.tags) == ["paper", "best", "γ sweep"]
    with pytest.raises(ValueError, match="comma"):
        store.set_tags(run_id, ["a,b"])
    run = store.get_run(run_id)
    assert run is not None and run.tags == "paper,best,γ sweep"  # a refused edit changes nothing
    with pytest.raises(TypeError):
        store.set_tags(run_id, "paper")  # type: ignore[arg-type]
    assert store.set_tags(run_id, []) == []
    run = store.get_run(run_id)
    assert run is not None and run.tags == "" and split_tags(run.tags) == []


def test_set_notes(store: Store) -> None:
    run_id = _new_run(store)
    note = "[bold]not markup[/bold]\nsecond line"
    store.set_notes(run_id, note)
    run = store.get_run(run_id)
    assert run is not None and run.notes == note
    with pytest.raises(StoreError):
        store.set_notes(999, "x")


# -- reaping dead workers -------------------------------------------------------------------


def _running(store: Store, *, pid: int, age: float, name: str = "r") -> int:
    run_id = _new_run(store, name=name)
    store.mark_running(run_id, pid=pid)
    past = datetime.now(UTC) - timedelta(seconds=age)
    _set(store, run_id, heartbeat_at=past, started_at=past)
    return run_id


def test_reap_stale_by_heartbeat(store: Store) -> None:
    stale = _running(store, pid=1234, age=120)
    fresh = _running(store, pid=1235, age=5)
    finished = _running(store, pid=1236, age=500)
    store.finish(finished, RunStatus.FINISHED)
    queued = _new_run(store)

    assert store.reap_stale(timeout=60) == [stale]
    run = store.get_run(stale)
    assert run is not None and run.status == RunStatus.FAILED and run.finished_at is not None
    assert run.heartbeat_at is not None
    stamp = run.heartbeat_at.strftime("%Y-%m-%d %H:%M:%S UTC")
    assert run.error == (
        "worker stopped reporting: no heartbeat for over 60 s "
        f"(pid 1234 on {this_host()}, last heartbeat {stamp})"
    )
    for other, status in ((fresh, "running"), (finished, "finished"), (queued, "queued")):
        record = store.get_run(other)
        assert record is not None and record.status == status
    assert store.reap_stale(timeout=60) == []  # nothing left to do, nothing written


def test_reap_stale_by_dead_pid(store: Store) -> None:
    dead = _running(store, pid=4321, age=1)
    alive = _running(store, pid=4322, age=1)
    asked: list[int] = []

    def is_alive(pid: int) -> bool:
        asked.append(pid)
        return pid != 4321

    assert store.reap_stale(is_alive=is_alive) == [dead]
    assert sorted(asked) == [4321, 4322]
    run = store.get_run(dead)
    assert run is not None and run.status == RunStatus.FAILED
    assert run.error is not None
    assert run.error.startswith(
        f"worker died without reporting (pid 4321 on {this_host()}, last heartbeat 20"
    )
    assert run.error.endswith(" UTC)")
    record = store.get_run(alive)
    assert record is not None and record.status == RunStatus.RUNNING
    assert store.reap_stale() == []  # without is_alive only the heartbeat counts


def test_reap_stale_without_any_heartbeat(store: Store) -> None:
    run_id = _new_run(store)
    _set(store, run_id, status="running")  # no pid, no start, no heartbeat
    assert store.reap_stale() == [run_id]
    run = store.get_run(run_id)
    assert run is not None
    assert run.error == (
        "worker stopped reporting: no heartbeat for over 60 s (pid unknown, last heartbeat never)"
    )


def test_a_worker_that_reports_meanwhile_wins(store: Store) -> None:
    finishes = _running(store, pid=11, age=300, name="finishes")
    beats = _running(store, pid=12, age=300, name="beats")
    dies = _running(store, pid=13, age=300, name="dies")

    def is_alive(pid: int) -> bool:
        # Called between the read and the write: the workers report right then.
        if pid == 11:
            store.finish(finishes, RunStatus.FINISHED)
        if pid == 12:
            store.heartbeat(beats)
        return pid != 13

    assert store.reap_stale(is_alive=is_alive) == [dies]
    statuses = {r.name: r.status for r in store.list_runs()}
    assert statuses == {"finishes": "finished", "beats": "running", "dies": "failed"}
    record = store.get_run(finishes)
    assert record is not None and record.error is None


def test_reap_stale_checks_its_timeout(store: Store) -> None:
    for bad in (0, -1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="timeout"):
            store.reap_stale(timeout=bad)


# -- conditional updates --------------------------------------------------------------------


def test_finish_if(store: Store) -> None:
    run_id = _new_run(store)
    assert not store.finish_if(run_id, RunStatus.CANCELLED, when={"status": "running"})
    assert store.finish_if(run_id, RunStatus.CANCELLED, when={"status": "queued", "pid": None})
    run = store.get_run(run_id)
    assert run is not None and run.status == "cancelled" and run.finished_at is not None
    assert not store.finish_if(run_id, RunStatus.FAILED, when={"status": "queued"})
    with pytest.raises(ValueError, match="not a final status"):
        store.finish_if(run_id, RunStatus.RUNNING, when={})
    with pytest.raises(ValueError, match="bogus"):
        store.finish_if(run_id, RunStatus.FAILED, when={"bogus": 1})


def test_claim_runs(store: Store) -> None:
    first, second, third = (_new_run(store, name=f"q{i}") for i in range(3))
    seen: list[tuple[list[int | None], list[int | None]]] = []

    def choose(running: list[Run], queued: list[Run]) -> list[tuple[int, int | None]]:
        seen.append((_ids(running), _ids(queued)))
        return [(first, 1), (third, None)]

    assert store.claim_runs(choose) == [(first, 1), (third, None)]
    assert seen == [([], [first, second, third])]  # queued oldest first
    run = store.get_run(first)
    assert run is not None
    assert (run.status, run.gpu, run.pid, run.started_at) == ("running", 1, None, None)
    assert run.heartbeat_at is not None  # a launcher that dies now is reaped by timeout

    # A run claimed elsewhere meanwhile is not claimed twice.
    assert store.claim_runs(lambda running, queued: [(first, 0), (second, 0)]) == [(second, 0)]
    assert store.claim_runs(lambda running, queued: pytest.fail("nothing is queued")) == []


def test_delete_run_refuses_statuses(store: Store) -> None:
    run_id = _new_run(store)
    with pytest.raises(StoreError, match=f"run {run_id} is queued"):
        store.delete_run(run_id, refuse=("queued", "running"))
    assert store.get_run(run_id) is not None
    store.delete_run(run_id, refuse=("running",))
    assert store.get_run(run_id) is None


def test_a_store_from_an_earlier_build_is_named(store_url: str) -> None:
    Store.open(store_url).close()
    engine = make_engine(store_url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("ALTER TABLE run DROP COLUMN gpu")
    finally:
        engine.dispose()
    with pytest.raises(StoreError, match=r"lacks column\(s\) run\.gpu") as info:
        Store.open(store_url)
    assert "\n" not in str(info.value)
