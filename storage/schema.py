"""The store's schema: created on first open, then checked to be one this code understands,
and upgraded (Alembic, `migrate`) when an earlier caat wrote it."""

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, insert, inspect, select
from sqlalchemy import text as sql_text
from sqlmodel import Session, SQLModel

from . import migrate
from .base import STORE_ID_KEY, StoreError, check_store_id
from .engine import AdvisoryLock
from .models import SCHEMA_VERSION, TABLES, Meta


def take_lock(target: Connection | Session, lock: AdvisoryLock) -> None:
    """Hold `lock` until the transaction ends, on PostgreSQL (SQLite's write lock already
    serialises): names what the transaction must not race, beside the write lock."""
    bind = target.get_bind() if isinstance(target, Session) else target
    if bind.dialect.name == "postgresql":
        target.execute(sql_text(f"SELECT pg_advisory_xact_lock({int(lock)})"))


def _missing_columns(conn: Any) -> list[str]:
    """Our tables' columns that an existing database lacks, as `table.column`."""
    inspector = inspect(conn)
    missing = []
    for table in TABLES:
        if not inspector.has_table(table.name):
            missing.append(table.name)
            continue
        have = {column["name"] for column in inspector.get_columns(table.name)}
        missing += [f"{table.name}.{c.name}" for c in table.columns if c.name not in have]
    return missing


META = Meta.__table__  # type: ignore[attr-defined]


def _meta_value(conn: Connection, key: str) -> str | None:
    value = conn.execute(select(META.c.value).where(META.c.key == key)).scalar_one_or_none()
    return None if value is None else str(value)


def _add_store_id(conn: Connection) -> str:
    store_id = str(uuid.uuid4())
    conn.execute(insert(META).values(key=STORE_ID_KEY, value=store_id))
    return store_id


@dataclass
class Opened:
    """What opening a store found out: its id, and the upgrade it made, in words."""

    store_id: str
    upgraded: str | None = None


def _create_or_read(writer: Engine) -> tuple[str | None, str | None, str | None]:
    """(stored version, store id, Alembic revision); a fresh store is created whole at
    `HEAD` with its version row and its id: (None, id, HEAD)."""
    # One write transaction: two processes opening a fresh file at once cannot both
    # create tables or both insert the version row.
    with writer.begin() as conn:
        take_lock(conn, AdvisoryLock.SCHEMA)
        has_meta = inspect(conn).has_table(META.name)
        stored = _meta_value(conn, "schema_version") if has_meta else None
        if stored is None:  # a fresh store (an existing one is changed only by migrations)
            SQLModel.metadata.create_all(conn, tables=TABLES)
            conn.execute(insert(META).values(key="schema_version", value=str(SCHEMA_VERSION)))
            migrate.stamp_head(conn)
            return None, _add_store_id(conn), migrate.HEAD
        return stored, _meta_value(conn, STORE_ID_KEY), migrate.stored_revision(conn)


def _version(stored: str, revision: str | None, where: str) -> int:
    """The stored schema version; a store this code would misread is refused."""
    try:
        version = int(stored)
    except ValueError:
        raise StoreError(
            f"the store at {where} has an unreadable schema version {stored!r}"
        ) from None
    if version > SCHEMA_VERSION or (revision is not None and not migrate.is_known(revision)):
        raise StoreError(
            f"the store at {where} was written by a newer caat (schema version "
            f"{version}, this caat reads {SCHEMA_VERSION}); upgrade caat or use another --db"
        )
    return version


def _check_columns(writer: Engine, where: str) -> None:
    with writer.connect() as conn:
        missing = _missing_columns(conn)
    if missing:
        # Schema version 1 grew columns before any release; a store made by such an
        # early build is named as such instead of failing later on "no such column".
        raise StoreError(
            f"the store at {where} lacks column(s) {', '.join(missing)}: it was made "
            "by an earlier development build of caat; use another --db"
        )


def _upgrade(writer: Engine, version: int, where: str) -> str | None:
    """Back the store up, then migrate it to `HEAD`; what was done, in one line."""
    from .backup import backup_store, default_backup_path
    from .engine import sqlite_path

    path = sqlite_path(writer.url.render_as_string(hide_password=False))
    saved = None
    if path is not None:
        saved = default_backup_path(path.absolute(), f"-before-schema-{SCHEMA_VERSION}")
        try:
            backup_store(path, saved)
        except StoreError:
            if not saved.exists():  # exists: another process is upgrading it this second
                raise
    started = migrate.upgrade(writer, lambda conn: take_lock(conn, AdvisoryLock.SCHEMA))
    if started is None:
        return None  # another process upgraded it first
    kept = f"; the store as it was: {saved}" if saved is not None else ""
    return f"upgraded the store at {where} from schema version {version} to {SCHEMA_VERSION}{kept}"


def _give_store_id(writer: Engine) -> str:
    """The id of a store made before stores had one, given now (once, however many open it)."""
    with writer.begin() as conn:
        take_lock(conn, AdvisoryLock.SCHEMA)
        return _meta_value(conn, STORE_ID_KEY) or _add_store_id(conn)


def prepare_schema(writer: Engine, where: str) -> Opened:
    """Create the tables of a fresh store, or check (and upgrade, after a backup) those
    of an existing one (StoreError); the store's id, given now to a store without one."""
    stored, store_id, revision = _create_or_read(writer)
    upgraded = None
    if stored is not None:
        version = _version(stored, revision, where)
        if version < SCHEMA_VERSION or (revision or migrate.BASELINE) != migrate.HEAD:
            upgraded = _upgrade(writer, version, where)
        _check_columns(writer, where)
    if store_id is None:
        # Only a store this code understands is written to.
        store_id = _give_store_id(writer)
    return Opened(check_store_id(store_id, where), upgraded)
