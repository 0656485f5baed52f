"""Upgrading a store an earlier caat wrote: Alembic's migrations in `migrations/`.

A store records its Alembic revision in `alembic_version` (a version-1 store, from
before migrations, has none and is taken as the baseline `0001`). Opening a store reads
that revision with plain SQL and compares it with `HEAD`; Alembic itself is imported
only to stamp a fresh store or to upgrade an old one, so opening a current store costs
nothing extra.

An upgrade runs on one connection inside one write transaction (SQLite: BEGIN
IMMEDIATE, foreign keys off so rebuilding a table cascades nothing; PostgreSQL: the
write and schema advisory locks, its DDL transactional too), re-reads the revision
under the lock (two processes or hosts opening an old store at once upgrade it once),
and checks the foreign keys before it commits.
"""

from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, inspect
from sqlalchemy import text as sql_text

from .errors import StoreError

HEAD = "0002"
"""The newest revision in `migrations/versions` (a test checks it against Alembic's)."""
BASELINE = "0001"
"""The revision of a version-1 store, which has no `alembic_version` table."""
SCRIPTS = Path(__file__).with_name("migrations")
REVISIONS = ("0001", "0002")
"""Every revision this caat knows, oldest first: a store at another one is newer."""


def stored_revision(conn: Connection) -> str | None:
    """The store's Alembic revision, or None when it has no `alembic_version` table."""
    if not inspect(conn).has_table("alembic_version"):
        return None
    row = conn.execute(sql_text("SELECT version_num FROM alembic_version")).first()
    return None if row is None else str(row[0])


def _config(conn: Connection) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(SCRIPTS))
    config.attributes["connection"] = conn
    return config


def stamp_head(conn: Connection) -> None:
    """Mark a store created whole by this caat as being at `HEAD`."""
    from alembic import command

    command.stamp(_config(conn), HEAD)


def is_known(revision: str) -> bool:
    return revision in REVISIONS


def upgrade(writer: Engine, take_lock: Any) -> str | None:
    """Upgrade the store to `HEAD` in one transaction; the revision it started from, or
    None when another process had already upgraded it."""
    from alembic import command

    with writer.connect() as conn:
        sqlite = conn.dialect.name == "sqlite"
        if sqlite:  # outside any transaction, where SQLite honours it
            conn.connection.driver_connection.execute("PRAGMA foreign_keys=OFF")  # type: ignore[union-attr]
        try:
            with conn.begin():
                take_lock(conn)
                start = stored_revision(conn) or BASELINE
                if start == HEAD:
                    return None
                if not is_known(start):
                    raise StoreError(f"unknown schema revision {start!r}")
                if start == BASELINE and stored_revision(conn) is None:
                    command.stamp(_config(conn), BASELINE)
                command.upgrade(_config(conn), HEAD)
                if sqlite:
                    broken = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                    if broken:
                        raise StoreError(f"the upgrade broke {len(broken)} foreign key(s)")
        finally:
            if sqlite:
                conn.connection.driver_connection.execute("PRAGMA foreign_keys=ON")  # type: ignore[union-attr]
    return start
