"""The runs table's first page straight from a SQLite file, while SQLAlchemy still loads.

Importing the store (SQLAlchemy, SQLModel, pydantic) takes about as long as the whole
first paint may; reading one page with the standard library's `sqlite3` takes
milliseconds. So the dashboard shows its home page from here and opens the real store
behind it; the first poll after that replaces these rows with the store's own.

This is the one place that reads the run table without the store, and only the default
view: newest first, no filter, the first page. Whatever it cannot read (another
database, a missing file, a table it does not know) is None, and the dashboard waits
for the store instead. A test holds it to `Store.list_runs` and `Store.count_runs` cell
by cell. It imports nothing but the standard library (and where the store lives).
"""

from __future__ import annotations

import os
import sqlite3
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

from .location import artifacts_root, on_this_host

SQLITE_PREFIX = "sqlite:///"
TABLE = "run"
"""`caat_storage.Run.__tablename__`."""
DATETIMES = ("created_at", "started_at", "finished_at", "heartbeat_at")
"""The run's columns the store keeps as UTC datetimes (SQLite: naive ISO text)."""
NEEDED = frozenset({"id", "name", "status", "method", "param", "dataset", "model", "eps"})


def sqlite_file(url: str) -> Path | None:
    """The existing file behind a plain SQLite URL; None for anything else.

    `sqlite:///relative.db` and `sqlite:////absolute.db` as SQLAlchemy reads them; a
    query string, an escaped name or an in-memory database is left to the store.
    """
    if not url.startswith(SQLITE_PREFIX):
        return None
    name = url[len(SQLITE_PREFIX) :]
    if not name or name == ":memory:" or any(c in name for c in "?%#"):
        return None
    path = Path(name).expanduser().absolute()
    return path if path.is_file() else None


def _when(value: str | None) -> datetime | None:
    """A stored time as the store returns it: aware, in UTC."""
    if value is None:
        return None
    moment = datetime.fromisoformat(value)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _row(names: list[str], values: tuple[object, ...], root: str) -> SimpleNamespace:
    fields = dict(zip(names, values, strict=True))
    for name in DATETIMES:
        if name in fields:
            fields[name] = _when(fields[name])  # type: ignore[arg-type]
    if isinstance(fields.get("run_dir"), str):  # as the store reads it: a path on this host
        fields["run_dir"] = on_this_host(root, fields["run_dir"])  # type: ignore[arg-type]
    return SimpleNamespace(**fields)


def first_page(url: str, limit: int) -> tuple[list[SimpleNamespace], int] | None:
    """The newest `limit` runs (with every column of the run table) and how many there are.

    Read-only: a missing file is never created, and nothing is written.
    """
    path = sqlite_file(url)
    if path is None:
        return None
    try:
        with closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=0.2)) as conn:
            cursor = conn.execute(f"SELECT * FROM {TABLE} ORDER BY id DESC LIMIT ?", (limit,))
            names = [column[0] for column in cursor.description]
            rows = cursor.fetchall()
            (total,) = conn.execute(f"SELECT count(*) FROM {TABLE}").fetchone()
            return _page(names, rows, total, os.path.join(artifacts_root(path), ""))
    except (sqlite3.Error, ValueError):
        return None


def _page(
    names: list[str], rows: list[tuple[object, ...]], total: int, root: str
) -> tuple[list[SimpleNamespace], int] | None:
    if not NEEDED.issubset(names):
        return None
    return [_row(names, values, root) for values in rows], int(total)
