"""`caat backup`, `restore` and `gc`: copies made while workers write, checked restores
that never leave half a store, and collecting only what deleted runs left behind."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from helpers import run_cli

from caat_storage import SCHEMA_VERSION, Store
from caat_storage.backup import backup_store, restore_store

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


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "store" / "caat.db"


@pytest.fixture
def store(db_path: Path) -> Iterator[Store]:
    with Store.open(_url(db_path)) as opened:
        yield opened


def _names(path: Path) -> list[str]:
    with Store.open(_url(path)) as opened:
        return sorted(run.name for run in opened.list_runs())


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert "Traceback" not in captured.err + captured.out
    return lines[0]


def _integrity(path: Path) -> list[str]:
    conn = sqlite3.connect(path)
    try:
        return [row[0] for row in conn.execute("PRAGMA integrity_check")]
    finally:
        conn.close()


# -- backup -----------------------------------------------------------------------------


def _writer(url: str, run_id: int, stop: threading.Event, committed: list[int]) -> None:
    """A worker's flushes: each batch of ten steps and the run's step count in one commit."""
    with Store.open(url) as worker:
        while not stop.is_set():
            first = committed[0] * 10
            steps = [{"step": first + k, "epoch": 0, "t": 0.0} for k in range(10)]
            worker.append_metrics(run_id, steps=steps, run_fields={"steps_done": first + 10})
            committed[0] += 1


def test_a_backup_while_a_worker_writes_is_one_committed_moment(
    store: Store, db_path: Path, tmp_path: Path
) -> None:
    # Enough rows that the copy takes a while, so the worker commits while it is made.
    ballast = _new_run(store, "ballast")
    store.append_metrics(ballast, steps=[{"step": i, "epoch": 0, "t": 0.0} for i in range(60000)])
    run_id = _new_run(store, "busy")
    stop, committed = threading.Event(), [0]
    thread = threading.Thread(target=_writer, args=(_url(db_path), run_id, stop, committed))
    thread.start()
    try:
        while committed[0] < 5:
            time.sleep(0.005)
        before = committed[0]
        size = backup_store(db_path, tmp_path / "copy.db")
        after = committed[0]
    finally:
        stop.set()
        thread.join()
    assert after > before  # the worker did commit while the copy was being made
    copy = tmp_path / "copy.db"
    assert size == copy.stat().st_size
    assert _integrity(copy) == ["ok"]
    conn = sqlite3.connect(copy)
    try:
        (done,) = conn.execute("SELECT steps_done FROM run WHERE id = ?", (run_id,)).fetchone()
        rows = conn.execute("SELECT step FROM step_metric WHERE run_id = ?", (run_id,))
        steps = [step for (step,) in rows]
        ballast_rows = conn.execute(
            "SELECT count(*) FROM step_metric WHERE run_id = ?", (ballast,)
        ).fetchone()
    finally:
        conn.close()
    # Both tables as of one commit: the steps are exactly the first `done`, no torn batch.
    assert sorted(steps) == list(range(done))
    assert before * 10 <= done <= after * 10
    assert ballast_rows == (60000,)
    assert not Path(f"{copy}-wal").exists()  # one self-contained file


def test_backup_defaults_to_a_dated_file_next_to_the_store(
    store: Store, db_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _new_run(store, "kept")
    assert run_cli("backup", "--db", str(db_path)) == 0
    written = list(db_path.parent.glob("caat-*.db"))
    assert len(written) == 1
    stamp = datetime.strptime(written[0].name, "caat-%Y%m%d-%H%M%S.db")
    assert abs((datetime.now() - stamp).total_seconds()) < 60
    line = capsys.readouterr().out.strip()
    size_mb = written[0].stat().st_size / 1e6
    assert line == f"wrote {written[0]} ({size_mb:.1f} MB)"
    assert _names(written[0]) == ["kept"]


def test_backup_never_overwrites(
    store: Store, db_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "precious.db"
    target.write_text("not to be lost")
    assert run_cli("backup", str(target), "--db", str(db_path)) == 2
    assert "exists" in _one_error_line(capsys)
    assert target.read_text() == "not to be lost"


@pytest.mark.parametrize(("command", "tool"), [("backup", "pg_dump"), ("restore", "pg_restore")])
def test_a_postgresql_store_names_its_own_tool(
    command: str, tool: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [command] if command == "backup" else [command, str(tmp_path / "b.db")]
    assert run_cli(*args, "--db", "postgresql://who:secret@nowhere/caat") == 2
    line = _one_error_line(capsys)
    assert tool in line and "secret" not in line
    assert list(tmp_path.iterdir()) == []


# -- restore ----------------------------------------------------------------------------


def test_restore_brings_the_backup_back_and_saves_the_store_first(
    store: Store, db_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _new_run(store, "before")
    backup = tmp_path / "b.db"
    backup_store(db_path, backup)
    _new_run(store, "after")
    assert run_cli("restore", str(backup), "--db", str(db_path)) == 0
    out = capsys.readouterr().out.splitlines()
    saved = list(db_path.parent.glob("caat-*-before-restore.db"))
    assert len(saved) == 1
    assert out[0].startswith(f"saved the store as it was to {saved[0]} (")
    assert out[1] == f"restored {db_path} from {backup}: 1 run"
    assert store.list_runs()[0].name == "before"  # an open store sees the restored content
    assert _names(db_path) == ["before"]
    assert _names(saved[0]) == ["after", "before"]
    assert _integrity(db_path) == ["ok"]


def _not_a_store(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / f"{kind}.db"
    if kind == "text":
        path.write_text("hello, not a database\n" * 100)
    elif kind == "other sqlite":
        with sqlite3.connect(path) as conn:
            conn.execute("CREATE TABLE notes (body TEXT)")
        conn.close()
    elif kind == "newer caat":
        Store.open(_url(path)).close()
        with sqlite3.connect(path) as conn:
            conn.execute(
                "UPDATE caat_meta SET value = ? WHERE key = 'schema_version'",
                (str(SCHEMA_VERSION + 1),),
            )
        conn.close()
    return path


@pytest.mark.parametrize("kind", ["text", "other sqlite", "newer caat", "missing"])
def test_restore_refuses_what_is_not_a_caat_store(
    kind: str, store: Store, db_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _new_run(store, "mine")
    before = sorted(p.name for p in db_path.parent.iterdir())
    assert run_cli("restore", str(_not_a_store(tmp_path, kind)), "--db", str(db_path)) == 2
    _one_error_line(capsys)
    assert _names(db_path) == ["mine"]
    assert sorted(p.name for p in db_path.parent.iterdir()) == before  # no temp file left


def test_restore_refuses_a_damaged_backup(
    store: Store, db_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _new_run(store, "mine")
    damaged = tmp_path / "damaged.db"
    filler = _new_run(store, "filler")
    store.append_metrics(filler, steps=[{"step": i, "epoch": 0, "t": 0.0} for i in range(3000)])
    backup_store(db_path, damaged)
    data = bytearray(damaged.read_bytes())
    page = 4096
    for start in range(len(data) // 2, len(data) - page, page * 3):
        data[start + 8 : start + 300] = b"\xff" * 292  # cell pointers of every third page
    damaged.write_bytes(bytes(data))
    assert run_cli("restore", str(damaged), "--db", str(db_path)) == 2
    assert "integrity check" in _one_error_line(capsys)
    assert sorted(run.name for run in store.list_runs()) == ["filler", "mine"]
    assert _integrity(db_path) == ["ok"]
    assert not list(db_path.parent.glob("*before-restore*"))  # refused before anything else


def test_restore_waits_for_running_work_unless_forced(
    store: Store, db_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    backup = tmp_path / "b.db"
    backup_store(db_path, backup)
    run_id = _new_run(store, "training")
    store.mark_running(run_id, pid=os.getpid())
    job = store.create_eval_job(run_id, {"attack": "pgd"})
    store.start_eval_job(job, os.getpid(), total=10)
    assert run_cli("restore", str(backup), "--db", str(db_path)) == 2
    line = _one_error_line(capsys)
    assert f"run {run_id}" in line and f"evaluation {job}" in line and "--force" in line
    assert _names(db_path) == ["training"]
    assert run_cli("restore", str(backup), "--force", "--db", str(db_path)) == 0
    assert _names(db_path) == []


def test_restore_over_a_removed_store_ignores_its_stale_wal(db_path: Path, tmp_path: Path) -> None:
    with Store.open(_url(db_path)) as first:
        _new_run(first, "from the backup")
        backup_store(db_path, tmp_path / "b.db")
    # A store removed without its -wal, whose frames would corrupt any file put there.
    live = sqlite3.connect(db_path)
    live.execute("PRAGMA wal_autocheckpoint=0")
    with live:
        live.execute("UPDATE run SET name = 'stale'")
    wal = Path(f"{db_path}-wal").read_bytes()
    live.close()
    assert wal
    db_path.unlink()
    Path(f"{db_path}-wal").write_bytes(wal)
    restore_store(tmp_path / "b.db", db_path)
    assert _integrity(db_path) == ["ok"]
    assert _names(db_path) == ["from the backup"]


def test_restore_a_backup_of_another_page_size(store: Store, db_path: Path, tmp_path: Path) -> None:
    other = tmp_path / "other" / "caat.db"
    with Store.open(_url(other)) as made:
        _new_run(made, "big pages")
    conn = sqlite3.connect(other)
    conn.execute("PRAGMA journal_mode=DELETE")
    conn.execute("PRAGMA page_size=8192")
    conn.execute("VACUUM")
    conn.close()
    backup_store(other, tmp_path / "b.db")
    assert sqlite3.connect(tmp_path / "b.db").execute("PRAGMA page_size").fetchone() == (8192,)
    _new_run(store, "small pages")
    restore_store(tmp_path / "b.db", db_path)
    assert _names(db_path) == ["big pages"]
    assert _integrity(db_path) == ["ok"]


def test_a_restored_store_keeps_its_identity(store: Store, db_path: Path, tmp_path: Path) -> None:
    backup_store(db_path, tmp_path / "b.db")
    identity = store.store_id
    db_path.unlink()
    restored = restore_store(tmp_path / "b.db", db_path)
    assert restored.saved is None  # nothing there to save
    assert restored.store_id == identity
    with Store.open(_url(db_path)) as again:
        assert again.store_id == identity
        assert again.runs_root() == store.runs_root()


# -- gc ---------------------------------------------------------------------------------


def _write(path: Path, size: int, age_s: float = 0.0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    when = time.time() - age_s
    os.utime(path, (when, when))


def _tree(root: Path) -> list[str]:
    """Every path under `root`, relative; linked folders are listed, not entered."""
    found = []
    for top, dirs, files in os.walk(root):
        found += [str(Path(top, name).relative_to(root)) for name in dirs + files]
    return sorted(found)


@pytest.fixture
def garbage(store: Store, tmp_path: Path) -> dict[str, Path]:
    """Three runs, run 2 deleted with its folder left, stale and fresh temporary files,
    and things gc must leave alone: links out, a folder not named by a run, old layouts."""
    ids = [_new_run(store, f"run-{i}") for i in range(3)]
    folders = {i: Path(run.run_dir) for i in ids if (run := store.get_run(i)) is not None}
    for i in ids:
        _write(folders[i] / "last.pt", 1000)
    store.delete_run(ids[1])
    _write(folders[ids[1]] / "best.pt", 1_499_000)  # the deleted run's folder: 1.5 MB
    _write(folders[ids[0]] / ".last.pt.tmp", 300_000, age_s=7200)
    _write(folders[ids[0]] / "sub" / "data.part", 200_000, age_s=4000)
    _write(folders[ids[0]] / "fresh.tmp", 50_000, age_s=60)  # a write still going on
    outside = tmp_path / "outside"
    _write(outside / "old.tmp", 70_000, age_s=7200)
    (folders[ids[2]] / "linked").symlink_to(outside, target_is_directory=True)
    (store.runs_root() / "9").symlink_to(outside, target_is_directory=True)
    _write(store.runs_root() / "notes" / "mine.txt", 10)
    _write(store.shared_runs_root() / "1" / "old-store.pt", 10)
    return {"outside": outside, "deleted": folders[ids[1]], "root": store.runs_root()}


def test_gc_dry_run_lists_and_deletes_nothing(
    garbage: dict[str, Path], db_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shared = garbage["root"].parent
    before = _tree(shared)
    assert run_cli("gc", "--dry-run", "--db", str(db_path)) == 0
    out = capsys.readouterr().out.splitlines()
    assert _tree(shared) == before
    listed = sorted(line.split(" (")[0].removeprefix("would remove ") for line in out[:-2])
    root = garbage["root"]
    assert listed == sorted(
        [
            str(garbage["deleted"]),
            str(root / "9"),
            str(root / "1" / ".last.pt.tmp"),
            str(root / "1" / "sub" / "data.part"),
        ]
    )
    assert out[-2].startswith("left alone: 1 folder(s) in ")
    assert out[-1] == "would free 4 path(s), 2.0 MB"


def test_gc_frees_only_what_deleted_runs_and_dead_writes_left(
    garbage: dict[str, Path], store: Store, db_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli("gc", "--db", str(db_path)) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "freed 4 path(s), 2.0 MB"
    root = garbage["root"]
    assert not garbage["deleted"].exists()
    assert not os.path.lexists(root / "9")
    assert sorted(p.name for p in garbage["outside"].iterdir()) == ["old.tmp"]
    assert _tree(root) == sorted(
        [
            "1",
            "1/fresh.tmp",
            "1/last.pt",
            "1/sub",
            "3",
            "3/last.pt",
            "3/linked",
            "notes",
            "notes/mine.txt",
        ]
    )
    assert (root.parent / "1" / "old-store.pt").is_file()
    for run in store.list_runs():
        assert Path(run.run_dir).is_dir()
    assert run_cli("gc", "--db", str(db_path)) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "freed 0 path(s), 0.0 MB"
