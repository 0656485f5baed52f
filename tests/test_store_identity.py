"""Every store has its own identity, and its run folders live under it: a new store at an
old store's path never finds the old store's `runs/1` and its weights.

Tests through `store_url` run on both back ends; those about SQLite files and the
folder beside them take `db_path`."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from caat_app.runs.manage import delete_run
from caat_storage import Store, StoreError, caat_home

CONFIG = {"name": "r", "method": "caat", "gamma": 0.7, "dataset": "digits", "device": "cpu"}


def _new_run(store: Store, name: str = "run") -> int:
    return store.create_run(
        name=name,
        config=CONFIG,
        method="caat",
        param=0.7,
        dataset="digits",
        model="cnn",
        eps=0.3,
        epochs_total=2,
    )


def _url(path: Path) -> str:
    return f"sqlite:///{path}"


def _run_dir(store: Store, run_id: int) -> Path:
    run = store.get_run(run_id)
    assert run is not None
    return Path(run.run_dir)


SqlRunner = Callable[..., list[tuple[Any, ...]]]
"""conftest's `raw_sql`: a statement past the store, on any back end."""


MetaReader = Callable[[str], dict[str, str]]


@pytest.fixture
def meta(raw_sql: SqlRunner) -> MetaReader:
    """`meta(url)`: the store's `caat_meta` rows, read past the store."""
    return lambda url: {str(k): str(v) for k, v in raw_sql(url, "SELECT key, value FROM caat_meta")}


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "store" / "caat.db"


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    with Store.open(store_url) as opened:
        yield opened


def _runs_beside(url: str) -> Path:
    """Where a store's shared runs folder is: next to a SQLite file, else in caat's home."""
    if url.startswith("sqlite:///"):
        return Path(url.removeprefix("sqlite:///")).parent / "runs"
    return caat_home() / "runs"


def test_a_new_store_at_an_old_path_never_finds_the_old_run_folders(db_path: Path) -> None:
    with Store.open(_url(db_path)) as old:
        first = _new_run(old, "old")
        old_folder = _run_dir(old, first)
        old_folder.mkdir(parents=True)
        (old_folder / "last.pt").write_bytes(b"the old run's weights")
    for leftover in (db_path, Path(f"{db_path}-wal"), Path(f"{db_path}-shm")):
        leftover.unlink(missing_ok=True)
    with Store.open(_url(db_path)) as new:
        again = _new_run(new, "new")
        assert again == first  # the same run id as before ...
        folder = _run_dir(new, again)
    assert folder != old_folder  # ... in another folder,
    assert not (folder / "last.pt").exists()  # that holds nothing of the old run
    assert (old_folder / "last.pt").read_bytes() == b"the old run's weights"


def test_the_store_id_is_a_uuid_kept_in_the_store(store: Store, meta: MetaReader) -> None:
    identity = store.store_id
    assert str(uuid.UUID(identity)) == identity
    assert meta(store.url)["store_id"] == identity
    assert store.runs_root() == _runs_beside(store.url) / identity
    assert store.shared_runs_root() == _runs_beside(store.url)
    assert _run_dir(store, _new_run(store)) == store.runs_root() / "1"
    with Store.open(store.url) as again:
        assert again.store_id == identity


def test_stores_in_one_folder_keep_their_runs_apart(tmp_path: Path) -> None:
    with Store.open(_url(tmp_path / "a.db")) as a, Store.open(_url(tmp_path / "b.db")) as b:
        assert a.store_id != b.store_id
        assert a.shared_runs_root() == b.shared_runs_root()
        assert _run_dir(a, _new_run(a)) != _run_dir(b, _new_run(b))


def test_a_store_from_before_store_ids_gets_one_and_keeps_its_folders(
    store: Store, raw_sql: SqlRunner, meta: MetaReader
) -> None:
    run_id = _new_run(store)
    old_folder = store.shared_runs_root() / str(run_id)  # where runs went before store ids
    store.update_run(run_id, run_dir=str(old_folder), status="finished")
    old_folder.mkdir(parents=True)
    store.close()
    raw_sql(store.url, "DELETE FROM caat_meta WHERE key = 'store_id'")
    with Store.open(store.url) as opened:
        identity = opened.store_id
        assert meta(store.url)["store_id"] == identity
        run = opened.get_run(run_id)
        assert run is not None and run.run_dir == str(old_folder)
        assert delete_run(opened, run) == old_folder  # still known to be the run's own
    assert not old_folder.exists()


def test_stores_opening_an_old_store_at_once_agree_on_one_id(
    store_url: str, raw_sql: SqlRunner, meta: MetaReader
) -> None:
    Store.open(store_url).close()
    raw_sql(store_url, "DELETE FROM caat_meta WHERE key = 'store_id'")
    seen: list[str] = []

    def open_and_read() -> None:
        with Store.open(store_url) as opened:
            seen.append(opened.store_id)

    threads = [threading.Thread(target=open_and_read) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(seen) == 6 and len(set(seen)) == 1
    assert meta(store_url)["store_id"] == seen[0]


@pytest.mark.parametrize("value", ["../../elsewhere", "", "not-a-uuid"])
def test_a_store_id_that_is_no_uuid_is_refused(
    store_url: str, raw_sql: SqlRunner, value: str
) -> None:
    # The id names a folder that gc empties: a path in its place must never be used.
    Store.open(store_url).close()
    raw_sql(store_url, "UPDATE caat_meta SET value = :v WHERE key = 'store_id'", v=value)
    with pytest.raises(StoreError, match="store id") as info:
        Store.open(store_url)
    assert "\n" not in str(info.value)


def test_run_ids_never_repeat_within_a_store(store: Store) -> None:
    first = _new_run(store, "first")
    store.delete_run(first)
    assert _new_run(store, "second") == first + 1
