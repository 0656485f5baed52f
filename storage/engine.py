"""Engines tuned for many processes sharing one store: a SQLite file, or a PostgreSQL
database shared by many hosts, with the same write lock semantics on both."""

import errno
import sqlite3
import time
from enum import IntEnum
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import Connection, make_url

WRITE_OPTION = "caat_write"
"""Execution option that makes a transaction take the store's write lock as it begins:
BEGIN IMMEDIATE on SQLite, the `AdvisoryLock.WRITE` transaction lock on PostgreSQL."""


class AdvisoryLock(IntEnum):
    """PostgreSQL advisory-lock keys, held until the transaction ends.

    `WRITE` is SQLite's database-wide write lock rebuilt: every write transaction takes
    it first, so each read-then-write (a status checked, then changed) is as serialised
    as on SQLite, and readers never wait. The others name what one kind of transaction
    must not race, taken after `WRITE`. The values are fixed: processes of different caat
    versions must agree on them.
    """

    WRITE = 2107202
    """Every write transaction (`write_engine`), as it begins."""
    SCHEMA = 2107203
    """First opens: two processes must not both create the tables or the version row."""
    DISPATCH = 2107204
    """`claim_runs`: two dispatchers must not start one run twice or overfill a GPU."""
    SWEEP = 2107205
    """`add_to_sweep`: two `caat sweep` calls must not queue one config twice."""


CONNECT_TIMEOUT_S = 10
"""How long one try to connect to a PostgreSQL server may take."""

WAL_WAIT_S = 30.0
"""How long a new connection keeps trying to switch a fresh file to WAL."""


def _sqlite_file(database: str | None) -> Path | None:
    """The file behind a SQLite URL, or None for an in-memory database."""
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database).expanduser()


def sqlite_path(url: str) -> Path | None:
    """The SQLite file a store URL names; None for in-memory and non-SQLite stores."""
    parsed = make_url(url)
    return _sqlite_file(parsed.database) if parsed.get_backend_name() == "sqlite" else None


def _on_sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # Take BEGIN away from pysqlite so the `begin` listener decides how to start.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        # busy_timeout first: switching to WAL itself may have to wait for a lock.
        cursor.execute("PRAGMA busy_timeout=30000")
        _enter_wal(cursor)
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        cursor.close()


def _enter_wal(cursor: Any, wait_s: float = WAL_WAIT_S) -> None:
    """Switch to WAL, retrying while another connection holds the file's write lock.

    On a file still in rollback mode the switch needs an exclusive lock after a shared
    one; SQLite refuses that at once, without its busy handler, while another connection
    holds the write lock (to avoid a deadlock). That happens when several processes open
    a fresh store together, so wait here instead.
    """
    deadline = time.monotonic() + wait_s
    pause = 0.005
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.1)


def _on_sqlite_begin(conn: Connection) -> None:
    # A writer takes the write lock up front: a deferred transaction that reads and
    # then writes can fail at once with "database is locked" instead of waiting.
    if conn.get_execution_options().get(WRITE_OPTION):
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        conn.exec_driver_sql("BEGIN")


def _make_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        # mkdir says "File exists" when a file sits where a folder should be: name that file.
        blocker = next(
            (p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), folder
        )
        raise NotADirectoryError(errno.ENOTDIR, "not a folder", str(blocker)) from None


def _on_postgresql_begin(conn: Connection) -> None:
    # The transaction starts with its first statement: this one, so the lock is its own.
    if conn.get_execution_options().get(WRITE_OPTION):
        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({int(AdvisoryLock.WRITE)})")


def make_engine(url: str) -> Engine:
    """Create an engine; SQLite gets WAL, a busy timeout and explicit BEGINs; a server's
    connections are checked before use (it may have restarted), PostgreSQL's writes take
    the write lock."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        if parsed.get_backend_name() != "postgresql":
            return create_engine(url, pool_pre_ping=True)
        # A server that cannot be reached must fail a try in seconds, not after TCP's
        # minutes: workers retry, dashboards say "store unreachable" and poll on.
        engine = create_engine(
            url, pool_pre_ping=True, connect_args={"connect_timeout": CONNECT_TIMEOUT_S}
        )
        event.listen(engine, "begin", _on_postgresql_begin)
        return engine
    path = _sqlite_file(parsed.database)
    if path is not None:
        _make_folder(path.parent)
    engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
    event.listen(engine, "connect", _on_sqlite_connect)
    event.listen(engine, "begin", _on_sqlite_begin)
    return engine


def write_engine(engine: Engine) -> Engine:
    """The same engine (same pool) whose transactions take the write lock at BEGIN."""
    return engine.execution_options(**{WRITE_OPTION: True})
