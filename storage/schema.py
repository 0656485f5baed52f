"""The store's schema: created on first open, then checked to be one this code understands."""

from enum import IntEnum
from typing import Any

from sqlalchemy import Connection, Engine, insert, inspect, select
from sqlalchemy import text as sql_text
from sqlmodel import Session, SQLModel

from .base import StoreError
from .models import SCHEMA_VERSION, TABLES, Meta


class AdvisoryLock(IntEnum):
    """PostgreSQL advisory-lock keys: it has no database-wide write lock as SQLite has.

    Each key serialises one kind of read-then-write transaction across processes. The
    values are fixed: processes of different caat versions must agree on them.
    """

    SCHEMA = 2107203
    """First opens: two processes must not both create the tables or the version row."""
    DISPATCH = 2107204
    """`claim_runs`: two dispatchers must not start one run twice or overfill a GPU."""
    SWEEP = 2107205
    """`add_to_sweep`: two `caat sweep` calls must not queue one config twice."""


def take_lock(target: Connection | Session, lock: AdvisoryLock) -> None:
    """Hold `lock` until the transaction ends; SQLite's BEGIN IMMEDIATE already serialises."""
    bind = target.get_bind() if isinstance(target, Session) else target
    if bind.dialect.name == "postgresql":
        target.execute(sql_text(f"SELECT pg_advisory_xact_lock({int(lock)})"))


def _missing_columns(conn: Any) -> list[str]:
    """Our tables' columns that an existing database lacks, as `table.column`."""
    inspector = inspect(conn)
    missing = []
    for table in TABLES:
        have = {column["name"] for column in inspector.get_columns(table.name)}
        missing += [f"{table.name}.{c.name}" for c in table.columns if c.name not in have]
    return missing


def _create_or_read(writer: Engine) -> tuple[str | None, list[str]]:
    """(stored version, missing columns); a fresh store gets its version row, (None, [])."""
    # One write transaction: two processes opening a fresh file at once cannot both
    # create tables or both insert the version row.
    with writer.begin() as conn:
        take_lock(conn, AdvisoryLock.SCHEMA)
        SQLModel.metadata.create_all(conn, tables=TABLES)
        meta = Meta.__table__  # type: ignore[attr-defined]
        stored = conn.execute(
            select(meta.c.value).where(meta.c.key == "schema_version")
        ).scalar_one_or_none()
        if stored is None:
            conn.execute(insert(meta).values(key="schema_version", value=str(SCHEMA_VERSION)))
            return None, []
        return stored, _missing_columns(conn)


def _check_version(stored: str, missing: list[str], where: str) -> None:
    """Refuse a store this code would misread, saying what to do instead."""
    try:
        version = int(stored)
    except ValueError:
        raise StoreError(
            f"the store at {where} has an unreadable schema version {stored!r}"
        ) from None
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"the store at {where} was written by a newer caat (schema version "
            f"{version}, this caat reads {SCHEMA_VERSION}); upgrade caat or use another --db"
        )
    if version < SCHEMA_VERSION:
        raise StoreError(
            f"the store at {where} has schema version {version}, older than "
            f"{SCHEMA_VERSION}, and no migration exists; use another --db"
        )
    if missing:
        # Schema version 1 grew columns before any release; a store made by such an
        # early build is named as such instead of failing later on "no such column".
        raise StoreError(
            f"the store at {where} lacks column(s) {', '.join(missing)}: it was made "
            "by an earlier development build of caat; use another --db"
        )


def prepare_schema(writer: Engine, where: str) -> None:
    """Create the tables of a fresh store, or check those of an existing one (StoreError)."""
    stored, missing = _create_or_read(writer)
    if stored is not None:
        _check_version(stored, missing, where)
