"""What every part of the store stands on: the engines, short transactions, its location."""

import os
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from sqlalchemy import Engine, event, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, InterfaceError, OperationalError
from sqlalchemy.orm import QueryContext
from sqlalchemy.orm.attributes import set_committed_value
from sqlmodel import Session

from .engine import _sqlite_file, write_engine
from .errors import StoreError, StoreUnreachable
from .location import artifacts_root, on_this_host
from .models import Meta, Run

STORE_ID_KEY = "store_id"
"""The `caat_meta` key of the store's identity, a UUID made when the store is first opened."""


RUNS_FOLDER = "runs"
"""The folder of the artifacts root that holds every store's run folders."""
ARTIFACTS_KEY = "caat_artifacts"
"""`Session.info` key of the artifacts root that stored run folders are relative to."""


@event.listens_for(Run, "load")
def _absolute_run_dir(run: Run, context: QueryContext) -> None:
    """A run read from the store carries its folder as a path on this host.

    Run folders are stored relative to the artifacts root; runs made before that carry
    an absolute path, which is kept as it is.
    """
    folder = run.__dict__.get("run_dir")
    root = context.session.info.get(ARTIFACTS_KEY) if context.session is not None else None
    if folder and root is not None and not os.path.isabs(folder):
        set_committed_value(run, "run_dir", on_this_host(root, folder))


def check_store_id(value: str, where: str) -> str:
    """The stored id in canonical form; a store id names a folder, so anything else is refused."""
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise StoreError(f"the store at {where} has an unreadable store id {value!r}") from None


def sqlite_path_of(url: str) -> Path | None:
    """The file of a SQLite store URL; None for other stores (and unreadable URLs)."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return None
    return _sqlite_file(parsed.database) if parsed.get_backend_name() == "sqlite" else None


def unreachable(exc: BaseException, dialect: str, where: str) -> StoreUnreachable | None:
    """The `StoreUnreachable` a driver's error means, if it means a lost server; a SQLite
    file has no connection to lose, so its errors are real failures."""
    if not isinstance(exc, OperationalError | InterfaceError):
        return None
    if dialect == "sqlite" and not exc.connection_invalidated:
        return None
    return StoreUnreachable(f"store unreachable at {where}: {one_line(exc)}")


def describe_location(url: str) -> str:
    """A store's location for messages: its file, or its URL without the password."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return url
    if parsed.get_backend_name() == "sqlite":
        path = _sqlite_file(parsed.database)
        return str(path) if path is not None else "an in-memory SQLite database"
    return parsed.render_as_string(hide_password=True)


def one_line(exc: BaseException) -> str:
    """The driver's own words, without SQLAlchemy's SQL echo and background links."""
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        text = str(exc.orig)
    elif isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror + (f": {exc.filename}" if exc.filename else "")
    else:
        text = str(exc)
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


class StoreBase:
    """The engines and transactions that each domain's part of `Store` builds on.

    Every public method runs its own short transaction, so a Store can be kept open for
    the life of a dashboard or a worker.
    """

    def __init__(self, url: str, engine: Engine, artifacts: Path | str | None = None) -> None:
        self.url = url
        self.artifacts = artifacts_root(sqlite_path_of(url), artifacts)
        """The artifacts root (`location.artifacts_root`); run folders are stored relative to it."""
        self._engine = engine
        self._writer = write_engine(engine)
        self._where = describe_location(url)
        self._store_id: str | None = None
        self.upgraded: str | None = None  # opening upgraded the store: what was done

    @property
    def _session_options(self) -> dict[str, Any]:
        root = os.path.join(self.artifacts, "")  # with its separator, for the load event
        return {"expire_on_commit": False, "info": {ARTIFACTS_KEY: root}}

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({self._where})"

    @property
    def store_id(self) -> str:
        """This store's identity (a UUID): a new store at the same path gets another one."""
        if self._store_id is None:
            meta = Meta.__table__  # type: ignore[attr-defined]
            with self._read() as session:
                value = session.execute(
                    select(meta.c.value).where(meta.c.key == STORE_ID_KEY)
                ).scalar_one_or_none()
            if value is None:
                raise StoreError(f"the store at {self._where} has no store id")
            self._store_id = check_store_id(value, self._where)
        return self._store_id

    def shared_runs_root(self) -> Path:
        """The `runs` folder of the artifacts root (by default next to a SQLite file, else
        in caat's home), shared by every store there: each keeps its runs in its own folder
        inside, and runs of stores made before store ids lie directly in it."""
        return self.artifacts / RUNS_FOLDER

    def runs_root(self) -> Path:
        """Where this store's new run folders go: `<shared runs root>/<store id>`.

        Named by the store's id, so a store made anew at the same path (or another store
        in the same folder) never finds an old store's `runs/1` and its weights.
        """
        return self.artifacts / self.stored_runs_root()

    def stored_runs_root(self) -> Path:
        """`runs_root` as the store records it: relative to the artifacts root."""
        return Path(RUNS_FOLDER) / self.store_id

    @contextmanager
    def _read(self) -> Iterator[Session]:
        # A plain BEGIN: readers never take the write lock, so polling never stalls a worker.
        with (
            self._reaching(),
            Session(self._engine, **self._session_options) as session,
            session.begin(),
        ):
            yield session

    @contextmanager
    def _write(self) -> Iterator[Session]:
        # BEGIN IMMEDIATE: the lock is waited for up front, where busy_timeout applies.
        with (
            self._reaching(),
            Session(self._writer, **self._session_options) as session,
            session.begin(),
        ):
            yield session

    @contextmanager
    def _reaching(self) -> Iterator[None]:
        """A server store's lost connection becomes `StoreUnreachable`, which callers may
        wait out; the transaction it broke was rolled back whole (or, when the commit's
        answer was lost, perhaps committed: writes that may be retried are idempotent)."""
        try:
            yield
        except (OperationalError, InterfaceError) as exc:
            lost = unreachable(exc, self._engine.dialect.name, self._where)
            if lost is None:
                raise
            raise lost from exc

    def _no_run(self, ref: int | str) -> StoreError:
        """The one "no such run" error, so every path names the store the same way.

        `ref` as it should read: an id, or a name already quoted.
        """
        return StoreError(f"no run {ref} in {self._where}")

    def _require_run(self, session: Session, run_id: int) -> None:
        """Refuse rows for a missing run before a foreign-key failure says it less clearly."""
        if session.get(Run, run_id) is None:
            raise self._no_run(run_id)

    def _update_run(self, session: Session, run_id: int, values: Mapping[str, Any]) -> None:
        result = session.execute(
            update(Run).where(Run.id == run_id).values(**values),  # type: ignore[arg-type]
            execution_options={"synchronize_session": False},
        )
        if result.rowcount == 0:  # type: ignore[attr-defined]
            raise self._no_run(run_id)
