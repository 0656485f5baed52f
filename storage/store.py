"""The run store: the one place that reads and writes runs and their metrics."""

import json
import math
import operator
import time
import unicodedata
from collections.abc import Callable, Collection, Hashable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from sqlalchemy import (
    ColumnElement,
    Engine,
    Table,
    and_,
    delete,
    func,
    insert,
    inspect,
    or_,
    update,
)
from sqlalchemy import text as sql_text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, SQLAlchemyError
from sqlmodel import Session, SQLModel, select

from .engine import _sqlite_file, make_engine, write_engine
from .location import caat_home
from .models import (
    SCHEMA_VERSION,
    TABLES,
    EpochMetric,
    EvalJob,
    EvalResult,
    Meta,
    Run,
    StepMetric,
    utcnow,
)


class StoreError(Exception):
    """A store problem worth showing to a person as is: one line, no traceback needed."""


class RunStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"
    CANCELLED = "cancelled"
    DIVERGED = "diverged"


TERMINAL_STATUSES: frozenset[RunStatus] = frozenset(
    {RunStatus.FINISHED, RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.DIVERGED}
)

_RUN_TABLE: Table = Run.__table__  # type: ignore[attr-defined]
_STEP_TABLE: Table = StepMetric.__table__  # type: ignore[attr-defined]
_EPOCH_TABLE: Table = EpochMetric.__table__  # type: ignore[attr-defined]
_RUN_FIELDS = frozenset(_RUN_TABLE.columns.keys()) - {"id"}

SORTABLE_COLUMNS: tuple[str, ...] = (
    "id",
    "name",
    "sweep",
    "status",
    "method",
    "param",
    "dataset",
    "model",
    "eps",
    "epochs_done",
    "best_val_clean",
    "best_val_adv",
    "last_phi",
    "last_mu",
    "created_at",
    "started_at",
    "finished_at",
)
"""Columns `list_runs` sorts by: the run table's columns, never arbitrary SQL."""

SEARCH_COLUMNS: tuple[str, ...] = (
    "name",
    "sweep",
    "method",
    "dataset",
    "model",
    "status",
    "tags",
)
"""What the run list's text filter looks at."""

MAX_NAME_LENGTH = 200  # the same limit as RunConfig.name
MAX_SWEEP_LENGTH = 100  # leaves room in a run name for `<sweep>-<method>-<param>-s<seed>`


def _converter(column: Any) -> Callable[[Any], Any] | None:
    """How to turn numpy/torch scalars into what every DB driver can bind."""
    try:
        python_type = column.type.python_type
    except NotImplementedError:
        return None
    if python_type is bool:
        return bool
    if python_type is int:
        return operator.index  # refuses floats instead of silently truncating them
    if python_type is float:
        return float
    return None


def _converters(table: Table) -> dict[str, Callable[[Any], Any] | None]:
    return {column.key: _converter(column) for column in table.columns}


_RUN_CONVERT = _converters(_RUN_TABLE)
_STEP_CONVERT = _converters(_STEP_TABLE)
_EPOCH_CONVERT = _converters(_EPOCH_TABLE)
_STEP_DEFAULTS: dict[str, Any] = {
    name: info.default
    for name, info in StepMetric.model_fields.items()
    if not info.is_required() and name != "run_id"
}


def _coerce(
    convert: Mapping[str, Callable[[Any], Any] | None], values: Mapping[str, Any], what: str
) -> dict[str, Any]:
    unknown = sorted(set(values) - set(convert))
    if unknown:
        raise ValueError(f"unknown {what} field(s): {', '.join(unknown)}")
    out: dict[str, Any] = {}
    for key, value in values.items():
        fn = convert[key]
        out[key] = value if value is None or fn is None else fn(value)
    return out


def _run_values(fields: Mapping[str, Any]) -> dict[str, Any]:
    if "id" in fields:
        raise ValueError("a run's id cannot be changed")
    return _coerce(_RUN_CONVERT, fields, "run")


def _metric_row(
    convert: Mapping[str, Callable[[Any], Any] | None],
    run_id: int,
    row: Mapping[str, Any],
    what: str,
) -> dict[str, Any]:
    if row.get("run_id", run_id) != run_id:
        raise ValueError(f"a {what} row for run {row['run_id']} was given to run {run_id}")
    values = _coerce(convert, row, what)
    values["run_id"] = run_id
    return values


def _one_line(exc: BaseException) -> str:
    """The driver's own words, without SQLAlchemy's SQL echo and background links."""
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        text = str(exc.orig)
    elif isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror + (f": {exc.filename}" if exc.filename else "")
    else:
        text = str(exc)
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def _where(url: str) -> str:
    """A store's location for messages: its file, or its URL without the password."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return url
    if parsed.get_backend_name() == "sqlite":
        path = _sqlite_file(parsed.database)
        return str(path) if path is not None else "an in-memory SQLite database"
    return parsed.render_as_string(hide_password=True)


def _like_pattern(word: str) -> str:
    """A LIKE pattern matching `word` anywhere, with `%`, `_` and `\\` taken literally."""
    escaped = word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _search_clause(search: str | None) -> ColumnElement[bool] | None:
    """Every whitespace-separated word must occur, case-insensitively, in one of the columns.

    Words rather than the whole text so `cifar10 caat` finds CA-AT runs on CIFAR-10; a
    single word is a plain substring match.
    """
    words = (search or "").split()
    if not words:
        return None
    return and_(
        *(
            or_(
                *(
                    _RUN_TABLE.c[name].ilike(_like_pattern(word), escape="\\")
                    for name in SEARCH_COLUMNS
                )
            )
            for word in words
        )
    )


def _order_by(sort: str, descending: bool) -> list[ColumnElement[Any]]:
    if sort not in SORTABLE_COLUMNS:
        raise ValueError(
            f"cannot sort runs by {sort!r}; choose one of {', '.join(SORTABLE_COLUMNS)}"
        )
    column = _RUN_TABLE.c[sort]
    newest = _RUN_TABLE.c.id.desc()
    if sort == "id":
        return [newest if descending else _RUN_TABLE.c.id.asc()]
    order = [column.desc() if descending else column.asc(), newest]
    if column.nullable:
        # `IS NULL` first rather than NULLS LAST: portable to every backend, and these
        # columns have no index a NULLS LAST ordering could have used anyway.
        order.insert(0, column.is_(None).asc())
    return order


def _conditions(
    when: Mapping[str, Any], model: type[Run] | type[EvalJob] = Run
) -> list[ColumnElement[bool]]:
    """Column == value for each item (None: IS NULL), for compare-and-set updates."""
    table: Table = model.__table__  # type: ignore[attr-defined]
    unknown = sorted(set(when) - set(table.columns.keys()))
    if unknown:
        raise ValueError(f"unknown {table.name} field(s): {', '.join(unknown)}")
    return [
        table.c[key].is_(None) if value is None else table.c[key] == value
        for key, value in when.items()
    ]


def _utc_text(moment: datetime | None) -> str:
    return "never" if moment is None else moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def lost_worker_error(reason: str, pid: int | None, last_heartbeat: datetime | None) -> str:
    """The error text of a run whose worker vanished: what happened, which pid, when last seen."""
    who = f"pid {pid}" if pid is not None else "pid unknown"
    return f"{reason} ({who}, last heartbeat {_utc_text(last_heartbeat)})"


def _breaks_lines(text: str) -> bool:
    """Control characters and line/paragraph separators: they would split a table row."""
    return any(unicodedata.category(ch) in ("Cc", "Zl", "Zp") for ch in text)


def _check_label(name: str, what: str, limit: int) -> str:
    """A name stripped, or a ValueError saying why: it is shown on one line of a table."""
    text = name.strip()
    if not text:
        raise ValueError(f"a {what} name cannot be empty")
    if len(text) > limit:
        raise ValueError(f"a {what} name is at most {limit} characters, got {len(text)}")
    if _breaks_lines(text):
        raise ValueError(f"a {what} name cannot contain line breaks or control characters")
    return text


def check_name(name: str) -> str:
    """A run name, stripped, or ValueError."""
    return _check_label(name, "run", MAX_NAME_LENGTH)


def check_sweep_name(name: str) -> str:
    """A sweep name, stripped, or ValueError: it prefixes its runs' names."""
    return _check_label(name, "sweep", MAX_SWEEP_LENGTH)


def normalise_tags(tags: Sequence[str]) -> list[str]:
    """Stripped, without empties or repeats, first spelling first; a comma is refused."""
    out: list[str] = []
    for tag in tags:
        if "," in tag:
            raise ValueError(f"a tag cannot contain a comma: {tag!r}")
        text = tag.strip()
        if _breaks_lines(text):
            raise ValueError(f"a tag cannot contain line breaks or control characters: {tag!r}")
        if text and text not in out:
            out.append(text)
    return out


def split_tags(text: str) -> list[str]:
    """A run's stored `tags` text back as a list."""
    return [tag for tag in (part.strip() for part in text.split(",")) if tag]


def _missing_columns(conn: Any) -> list[str]:
    """Our tables' columns that an existing database lacks, as `table.column`."""
    inspector = inspect(conn)
    missing = []
    for table in TABLES:
        have = {column["name"] for column in inspector.get_columns(table.name)}
        missing += [f"{table.name}.{c.name}" for c in table.columns if c.name not in have]
    return missing


class Store:
    """Runs and metrics in one database, safe to share between processes.

    Build it with `Store.open`; every method runs its own short transaction, so a
    Store can be kept open for the life of a dashboard or a worker.
    """

    def __init__(self, url: str, engine: Engine) -> None:
        self.url = url
        self._engine = engine
        self._writer = write_engine(engine)
        self._where = _where(url)

    # -- opening and closing ---------------------------------------------------------------

    @classmethod
    def open(cls, url: str) -> Self:
        """Connect and make sure the schema is there and is one this code understands."""
        where = _where(url)
        try:
            engine = make_engine(url)
        except (SQLAlchemyError, OSError, ImportError, ValueError) as exc:
            raise StoreError(f"cannot open the store at {where}: {_one_line(exc)}") from exc
        store = cls(url, engine)
        try:
            store._prepare_schema()
        except StoreError:
            engine.dispose()
            raise
        except (SQLAlchemyError, OSError, ImportError) as exc:
            engine.dispose()
            raise StoreError(f"cannot open the store at {where}: {_one_line(exc)}") from exc
        return store

    def _prepare_schema(self) -> None:
        # One write transaction: two processes opening a fresh file at once cannot both
        # create tables or both insert the version row.
        with self._writer.begin() as conn:
            if conn.dialect.name == "postgresql":
                # PostgreSQL has no database-wide write lock; an advisory lock serialises
                # concurrent first opens instead.
                conn.exec_driver_sql("SELECT pg_advisory_xact_lock(2107203)")
            SQLModel.metadata.create_all(conn, tables=TABLES)
            meta = Meta.__table__  # type: ignore[attr-defined]
            stored = conn.execute(
                select(meta.c.value).where(meta.c.key == "schema_version")
            ).scalar_one_or_none()
            if stored is None:
                conn.execute(insert(meta).values(key="schema_version", value=str(SCHEMA_VERSION)))
                return
            missing = _missing_columns(conn)
        try:
            version = int(stored)
        except ValueError:
            raise StoreError(
                f"the store at {self._where} has an unreadable schema version {stored!r}"
            ) from None
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"the store at {self._where} was written by a newer caat (schema version "
                f"{version}, this caat reads {SCHEMA_VERSION}); upgrade caat or use another --db"
            )
        if version < SCHEMA_VERSION:
            raise StoreError(
                f"the store at {self._where} has schema version {version}, older than "
                f"{SCHEMA_VERSION}, and no migration exists; use another --db"
            )
        if missing:
            # Schema version 1 grew columns before any release; a store made by such an
            # early build is named as such instead of failing later on "no such column".
            raise StoreError(
                f"the store at {self._where} lacks column(s) {', '.join(missing)}: it was made "
                "by an earlier development build of caat; use another --db"
            )

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

    # -- sessions -------------------------------------------------------------------------

    @contextmanager
    def _read(self) -> Iterator[Session]:
        # A plain BEGIN: readers never take the write lock, so polling never stalls a worker.
        with Session(self._engine, expire_on_commit=False) as session, session.begin():
            yield session

    @contextmanager
    def _write(self) -> Iterator[Session]:
        # BEGIN IMMEDIATE: the lock is waited for up front, where busy_timeout applies.
        with Session(self._writer, expire_on_commit=False) as session, session.begin():
            yield session

    def _update_run(self, session: Session, run_id: int, values: Mapping[str, Any]) -> None:
        result = session.execute(
            update(Run).where(Run.id == run_id).values(**values),  # type: ignore[arg-type]
            execution_options={"synchronize_session": False},
        )
        if result.rowcount == 0:  # type: ignore[attr-defined]
            raise StoreError(f"no run {run_id} in {self._where}")

    # -- runs ------------------------------------------------------------------------------

    def runs_root(self) -> Path:
        """Where run folders go: next to a SQLite file, else in caat's home."""
        parsed = make_url(self.url)
        if parsed.get_backend_name() == "sqlite":
            path = _sqlite_file(parsed.database)
            if path is not None:
                return path.absolute().parent / "runs"
        return caat_home() / "runs"

    def create_run(
        self,
        *,
        name: str,
        config: dict[str, Any],
        method: str,
        param: float | None,
        dataset: str,
        model: str,
        eps: float,
        epochs_total: int,
        sweep: str | None = None,
    ) -> int:
        """Record a queued run; its folder path is fixed now so every process agrees on it."""
        run = self._new_run(
            name=name,
            config=config,
            method=method,
            param=param,
            dataset=dataset,
            model=model,
            eps=eps,
            epochs_total=epochs_total,
            sweep=sweep,
        )
        root = self.runs_root()
        with self._write() as session:
            return self._insert_run(session, run, root)

    @staticmethod
    def _new_run(
        *,
        name: str,
        config: dict[str, Any],
        method: str,
        param: float | None,
        dataset: str,
        model: str,
        eps: float,
        epochs_total: int,
        sweep: str | None = None,
    ) -> Run:
        return Run(
            name=name,
            sweep=None if sweep is None else check_sweep_name(sweep),
            status=RunStatus.QUEUED.value,
            config=json.dumps(config),
            method=method,
            param=None if param is None else float(param),
            dataset=dataset,
            model=model,
            eps=float(eps),
            epochs_total=operator.index(epochs_total),
            created_at=utcnow(),
        )

    @staticmethod
    def _insert_run(session: Session, run: Run, root: Path) -> int:
        session.add(run)
        session.flush()
        assert run.id is not None
        run.run_dir = str(root / str(run.id))
        return run.id

    def add_to_sweep(
        self,
        sweep: str,
        runs: Sequence[Mapping[str, Any]],
        *,
        key: Callable[[dict[str, Any]], Hashable],
        present: Collection[str] = (
            RunStatus.QUEUED.value,
            RunStatus.RUNNING.value,
            RunStatus.FINISHED.value,
        ),
    ) -> tuple[list[int], list[int]]:
        """Queue in sweep `sweep` those of `runs` it does not hold yet; (new ids, held ids).

        `runs` are `create_run` keyword sets (without `sweep`). Two configs are the same
        run when `key(config)` is equal; the sweep holds a config when one of its runs
        with that key has a status in `present` (the newest such run's id is returned for
        it). Read and insert share one write transaction, so two `caat sweep` calls adding
        the same grid at once never queue a config twice.
        """
        sweep = check_sweep_name(sweep)
        new = [self._new_run(**dict(fields), sweep=sweep) for fields in runs]
        root = self.runs_root()
        created: list[int] = []
        held: list[int] = []
        with self._write() as session:
            if session.get_bind().dialect.name == "postgresql":
                session.execute(sql_text("SELECT pg_advisory_xact_lock(2107205)"))
            rows = session.execute(
                select(Run.id, Run.config)
                .where(Run.sweep == sweep, Run.status.in_(list(present)))  # type: ignore[attr-defined]
                .order_by(Run.id)  # type: ignore[arg-type]
            ).all()
            have: dict[Hashable, int] = {}
            for run_id, config in rows:
                try:
                    have[key(json.loads(config))] = run_id
                except (ValueError, TypeError):
                    continue  # an unreadable stored config matches nothing
            for run in new:
                wanted = key(json.loads(run.config))
                if wanted in have:
                    if have[wanted] not in held and have[wanted] not in created:
                        held.append(have[wanted])
                    continue
                have[wanted] = self._insert_run(session, run, root)
                created.append(have[wanted])
        return created, held

    def get_run(self, run_id: int) -> Run | None:
        with self._read() as session:
            return session.get(Run, run_id)

    def find_run(self, ref: str) -> Run:
        """A run by id (all digits) or by name (the newest run of that name)."""
        with self._read() as session:
            if ref.isascii() and ref.isdigit():
                run = session.get(Run, int(ref))
            else:
                statement = select(Run).where(Run.name == ref).order_by(Run.id.desc()).limit(1)  # type: ignore[union-attr]
                run = session.exec(statement).first()
        if run is None:
            raise StoreError(f"no run {ref!r} in {self._where}")
        return run

    def sweep_runs(self, sweep: str) -> list[Run]:
        """Every run of a sweep, oldest first (attempts that failed included)."""
        statement = select(Run).where(Run.sweep == sweep.strip()).order_by(Run.id)  # type: ignore[arg-type]
        with self._read() as session:
            return list(session.exec(statement).all())

    def list_sweeps(self) -> list[tuple[str, dict[str, int]]]:
        """Each sweep with its run count per status, the most recently added-to first."""
        statement = (
            select(Run.sweep, Run.status, func.count(), func.max(Run.id))
            .where(Run.sweep.is_not(None))  # type: ignore[union-attr]
            .group_by(Run.sweep, Run.status)
        )
        with self._read() as session:
            rows = session.execute(statement).all()
        counts: dict[str, dict[str, int]] = {}
        newest: dict[str, int] = {}
        for sweep, status, count, last in rows:
            counts.setdefault(sweep, {})[status] = int(count)
            newest[sweep] = max(newest.get(sweep, 0), int(last))
        return [(sweep, counts[sweep]) for sweep in sorted(counts, key=lambda s: -newest[s])]

    def list_runs(
        self,
        *,
        limit: int | None = None,
        offset: int = 0,
        search: str | None = None,
        sort: str = "id",
        descending: bool = True,
    ) -> list[Run]:
        """One page of runs, filtered and sorted in SQL so a page costs the same at any size.

        The default is newest first, what a person most likely wants. `search`: every
        word must occur (case-insensitive, `%` and `_` literal) in the name, sweep,
        method, data set, model, status or tags. `sort`: one of SORTABLE_COLUMNS (else
        ValueError); empty values go last either way and ties go newest first.
        """
        statement = self._list_statement(
            limit=limit, offset=offset, search=search, sort=sort, descending=descending
        )
        with self._read() as session:
            return list(session.exec(statement).all())

    @staticmethod
    def _list_statement(
        *, limit: int | None, offset: int, search: str | None, sort: str, descending: bool
    ) -> Any:
        statement = select(Run)
        clause = _search_clause(search)
        if clause is not None:
            statement = statement.where(clause)
        return statement.order_by(*_order_by(sort, descending)).offset(offset).limit(limit)

    def count_runs(self, *, search: str | None = None) -> int:
        """How many runs `list_runs` would page through with the same search."""
        statement = select(func.count()).select_from(_RUN_TABLE)
        clause = _search_clause(search)
        if clause is not None:
            statement = statement.where(clause)
        with self._read() as session:
            return int(session.execute(statement).scalar_one())

    def rename_run(self, run_id: int, name: str) -> str:
        """Give a run a new name (stripped; ValueError if empty, too long or multi-line)."""
        text = check_name(name)
        with self._write() as session:
            self._update_run(session, run_id, {"name": text})
        return text

    def set_tags(self, run_id: int, tags: Sequence[str]) -> list[str]:
        """Replace a run's tags; stored as one comma-separated text so search can see them."""
        if isinstance(tags, str):
            raise TypeError("tags must be a list of strings, not one string")
        clean = normalise_tags(tags)
        with self._write() as session:
            self._update_run(session, run_id, {"tags": ",".join(clean)})
        return clean

    def set_notes(self, run_id: int, text: str) -> None:
        """Replace a run's free-text note, kept exactly as written."""
        with self._write() as session:
            self._update_run(session, run_id, {"notes": text})

    def mark_running(self, run_id: int, pid: int) -> None:
        """The worker has started; a rerun forgets the previous attempt's end and error."""
        now = utcnow()
        with self._write() as session:
            self._update_run(
                session,
                run_id,
                {
                    "status": RunStatus.RUNNING.value,
                    "started_at": now,
                    "heartbeat_at": now,
                    "pid": pid,
                    "finished_at": None,
                    "error": None,
                },
            )

    def heartbeat(self, run_id: int) -> None:
        """Proof of life: a running run whose heartbeat is old has a dead worker."""
        with self._write() as session:
            self._update_run(session, run_id, {"heartbeat_at": utcnow()})

    def finish(
        self,
        run_id: int,
        status: RunStatus,
        *,
        error: str | None = None,
        fields: dict[str, Any] | None = None,
    ) -> None:
        """Record how a run ended; `fields` lands in the same transaction as the status."""
        status = RunStatus(status)
        if status not in TERMINAL_STATUSES:
            raise ValueError(f"{status.value!r} is not a final status")
        values = _run_values(fields or {})
        values.update(status=status.value, finished_at=utcnow(), error=error)
        with self._write() as session:
            self._update_run(session, run_id, values)

    def finish_if(
        self,
        run_id: int,
        status: RunStatus,
        *,
        when: Mapping[str, Any],
        error: str | None = None,
    ) -> bool:
        """End a run only if its row still matches `when` (column -> value, None: empty).

        Compare-and-set: a cancel or a reap racing a worker that reports at the same
        moment changes nothing, and the caller learns it from the False.
        """
        status = RunStatus(status)
        if status not in TERMINAL_STATUSES:
            raise ValueError(f"{status.value!r} is not a final status")
        with self._write() as session:
            return self._finish_where(session, run_id, status, when, error, utcnow())

    @staticmethod
    def _finish_where(
        session: Session,
        run_id: int,
        status: RunStatus,
        when: Mapping[str, Any],
        error: str | None,
        now: datetime,
        table: type[Run] | type[EvalJob] = Run,
    ) -> bool:
        result = session.execute(
            update(table)
            .where(table.id == run_id, *_conditions(when, table))  # type: ignore[arg-type]
            .values(status=status.value, finished_at=now, error=error),
            execution_options={"synchronize_session": False},
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    def reap_stale(
        self, *, timeout: float = 60.0, is_alive: Callable[[int], bool] | None = None
    ) -> list[int]:
        """Mark `failed` the running runs whose worker is gone; returns their ids.

        Gone: no heartbeat (or start) for `timeout` seconds, or, when `is_alive` is given,
        a pid it says is dead. Only pass `is_alive` for workers on this machine. The rows
        are read without the write lock (a dashboard calls this every poll) and each is
        then failed only if unchanged since (still running, same pid, same heartbeat), so
        a worker that reports or finishes meanwhile wins.
        """
        return self._reap(Run, timeout, is_alive)

    def reap_stale_evals(
        self, *, timeout: float = 60.0, is_alive: Callable[[int], bool] | None = None
    ) -> list[int]:
        """`reap_stale` for evaluation jobs: a job whose worker is gone ends `failed`."""
        return self._reap(EvalJob, timeout, is_alive)

    def _reap(
        self,
        table: type[Run] | type[EvalJob],
        timeout: float,
        is_alive: Callable[[int], bool] | None,
    ) -> list[int]:
        if not (math.isfinite(timeout) and timeout > 0):
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
        now = utcnow()
        cutoff = now - timedelta(seconds=timeout)
        columns = (table.id, table.pid, table.heartbeat_at, table.started_at)
        with self._read() as session:
            rows = session.execute(
                select(*columns).where(table.status == RunStatus.RUNNING.value)
            ).all()
        doomed: list[tuple[int, dict[str, Any], str]] = []
        for row_id, pid, heartbeat, started in rows:
            last = heartbeat or started
            if pid is not None and is_alive is not None and not is_alive(pid):
                reason = "worker died without reporting"
            elif last is None or last < cutoff:
                reason = f"worker stopped reporting: no heartbeat for over {timeout:g} s"
            else:
                continue
            when = {"status": RunStatus.RUNNING.value, "pid": pid, "heartbeat_at": heartbeat}
            doomed.append((row_id, when, lost_worker_error(reason, pid, last)))
        if not doomed:
            return []
        reaped = []
        with self._write() as session:
            for row_id, when, error in doomed:
                if self._finish_where(session, row_id, RunStatus.FAILED, when, error, now, table):
                    reaped.append(row_id)
        return reaped

    def claim_runs(
        self, choose: Callable[[list[Run], list[Run]], Sequence[tuple[int, int | None]]]
    ) -> list[tuple[int, int | None]]:
        """Move queued runs to `running` before their workers start; returns (id, gpu) pairs.

        `choose(running, queued)` (queued oldest first) returns the (run id, GPU index or
        None) to start. It is called inside one write transaction, so two dashboards
        dispatching at once see each other's claims and never exceed a GPU's limit or
        start a run twice. A claimed run has a heartbeat (so a launcher that dies before
        the worker starts is reaped by timeout), no pid yet and no `started_at` until the
        worker's own `mark_running`.
        """
        with self._read() as session:  # the common case, nothing queued, takes no lock
            if (
                session.execute(select(Run.id).where(Run.status == "queued").limit(1)).first()
                is None
            ):
                return []
        now = utcnow()
        claimed: list[tuple[int, int | None]] = []
        with self._write() as session:
            if session.get_bind().dialect.name == "postgresql":
                # No database-wide write lock there: serialise dispatchers explicitly.
                session.execute(sql_text("SELECT pg_advisory_xact_lock(2107204)"))
            running = list(
                session.exec(select(Run).where(Run.status == RunStatus.RUNNING.value)).all()
            )
            queued = list(
                session.exec(
                    select(Run).where(Run.status == RunStatus.QUEUED.value).order_by(Run.id)  # type: ignore[arg-type]
                ).all()
            )
            for run_id, gpu in choose(running, queued) if queued else ():
                result = session.execute(
                    update(Run)
                    .where(Run.id == run_id, Run.status == RunStatus.QUEUED.value)  # type: ignore[arg-type]
                    .values(
                        status=RunStatus.RUNNING.value,
                        gpu=gpu,
                        pid=None,
                        started_at=None,
                        heartbeat_at=now,
                        finished_at=None,
                        error=None,
                    ),
                    execution_options={"synchronize_session": False},
                )
                if result.rowcount:  # type: ignore[attr-defined]
                    claimed.append((run_id, gpu))
        return claimed

    def update_run(self, run_id: int, **fields: Any) -> None:
        values = _run_values(fields)
        if not values:
            return
        with self._write() as session:
            self._update_run(session, run_id, values)

    def delete_run(self, run_id: int, *, refuse: Collection[str] = ()) -> None:
        """Delete a run; its metric rows go with it (ON DELETE CASCADE). Its folder stays.

        A run whose status is in `refuse` is kept (StoreError), checked in the same
        transaction so a run that starts meanwhile is never deleted under its worker.
        """
        with self._write() as session:
            if refuse:
                status = session.execute(select(Run.status).where(Run.id == run_id)).scalar()
                if status in refuse:
                    raise StoreError(f"run {run_id} is {status}")
            result = session.execute(
                delete(Run).where(Run.id == run_id),  # type: ignore[arg-type]
                execution_options={"synchronize_session": False},
            )
            if result.rowcount == 0:  # type: ignore[attr-defined]
                raise StoreError(f"no run {run_id} in {self._where}")

    # -- metrics ---------------------------------------------------------------------------

    def append_metrics(
        self,
        run_id: int,
        steps: Sequence[Mapping[str, Any]] = (),
        epochs: Sequence[Mapping[str, Any]] = (),
        run_fields: Mapping[str, Any] | None = None,
    ) -> None:
        """Write a batch in one transaction, so readers see all of it or none of it.

        An epoch that is already stored is updated with the values given again; a None
        never erases a value already there.
        """
        step_rows = []
        for row in steps:
            values = _metric_row(_STEP_CONVERT, run_id, row, "step")
            missing = [key for key in ("step", "epoch", "t") if values.get(key) is None]
            if missing:
                raise ValueError(f"a step row lacks {', '.join(missing)}")
            step_rows.append({**_STEP_DEFAULTS, **values})
        epoch_rows = []
        for row in epochs:
            values = _metric_row(_EPOCH_CONVERT, run_id, row, "epoch")
            if values.get("epoch") is None:
                raise ValueError("an epoch row lacks epoch")
            epoch_rows.append(values)
        run_values = _run_values(run_fields or {})
        run_values["heartbeat_at"] = utcnow()

        with self._write() as session:
            # The run first: a missing run is a StoreError, not a foreign-key failure.
            self._update_run(session, run_id, run_values)
            if step_rows:
                session.execute(insert(StepMetric), step_rows)
            for row in epoch_rows:
                self._upsert_epoch(session, row)

    @staticmethod
    def _upsert_epoch(session: Session, row: dict[str, Any]) -> None:
        # Portable select-then-write; the write transaction already holds the lock.
        key = (EpochMetric.run_id == row["run_id"]) & (EpochMetric.epoch == row["epoch"])
        exists = session.execute(select(EpochMetric.epoch).where(key)).first() is not None
        if not exists:
            session.execute(insert(EpochMetric).values(**row))
            return
        values = {k: v for k, v in row.items() if k not in ("run_id", "epoch") and v is not None}
        if values:
            session.execute(
                update(EpochMetric).where(key).values(**values),
                execution_options={"synchronize_session": False},
            )

    def steps(
        self, run_id: int, *, after_step: int = -1, limit: int | None = None
    ) -> list[StepMetric]:
        """Step rows after `after_step`, in order: what a poller asks for each tick."""
        statement = (
            select(StepMetric)
            .where(StepMetric.run_id == run_id, StepMetric.step > after_step)
            .order_by(StepMetric.step)  # type: ignore[arg-type]
            .limit(limit)
        )
        with self._read() as session:
            return list(session.exec(statement).all())

    def epochs(self, run_id: int) -> list[EpochMetric]:
        statement = (
            select(EpochMetric).where(EpochMetric.run_id == run_id).order_by(EpochMetric.epoch)  # type: ignore[arg-type]
        )
        with self._read() as session:
            return list(session.exec(statement).all())

    # -- evaluations -------------------------------------------------------------------------

    def add_evals(self, run_id: int, rows: Sequence[Mapping[str, Any]]) -> None:
        """Record evaluation results in one transaction (an identical one is replaced)."""
        keys = ("checkpoint", "weights", "attack", "norm", "eps", "samples", "settings")
        with self._write() as session:
            if session.get(Run, run_id) is None:
                raise StoreError(f"no run {run_id} in {self._where}")
            for row in rows:
                row = {"weights": "", **row}
                same = [getattr(EvalResult, k) == row[k] for k in keys]
                session.execute(
                    delete(EvalResult).where(EvalResult.run_id == run_id, *same)  # type: ignore[arg-type]
                )
                session.add(EvalResult(run_id=run_id, **row))

    def evals(self, run_id: int, *, checkpoint: str | None = None) -> list[EvalResult]:
        """A run's evaluation results, oldest first."""
        statement = select(EvalResult).where(EvalResult.run_id == run_id)
        if checkpoint is not None:
            statement = statement.where(EvalResult.checkpoint == checkpoint)
        with self._read() as session:
            return list(session.exec(statement.order_by(EvalResult.id)).all())  # type: ignore[arg-type]

    def evals_of_runs(self, run_ids: Collection[int]) -> dict[int, list[EvalResult]]:
        """Evaluation results of many runs at once (one query), per run, oldest first."""
        ids = list(run_ids)
        out: dict[int, list[EvalResult]] = {i: [] for i in ids}
        if not ids:
            return out
        statement = select(EvalResult).where(EvalResult.run_id.in_(ids))  # type: ignore[attr-defined]
        with self._read() as session:
            for r in session.exec(statement.order_by(EvalResult.id)).all():  # type: ignore[arg-type]
                out[r.run_id].append(r)
        return out

    # -- evaluation jobs -----------------------------------------------------------------------

    def create_eval_job(self, run_id: int, spec: Mapping[str, Any], *, total: int = 0) -> int:
        """Record an evaluation request as `queued`; `spec` is its checked request as JSON."""
        with self._write() as session:
            if session.get(Run, run_id) is None:
                raise StoreError(f"no run {run_id} in {self._where}")
            job = EvalJob(run_id=run_id, spec=json.dumps(dict(spec), sort_keys=True), total=total)
            session.add(job)
            session.flush()
            assert job.id is not None
            return job.id

    def get_eval_job(self, job_id: int) -> EvalJob | None:
        with self._read() as session:
            return session.get(EvalJob, job_id)

    def eval_jobs(self, run_id: int | None = None, *, active: bool = False) -> list[EvalJob]:
        """Evaluation jobs, newest first: a run's, or all; `active`: queued or running only."""
        statement = select(EvalJob)
        if run_id is not None:
            statement = statement.where(EvalJob.run_id == run_id)
        if active:
            statement = statement.where(
                EvalJob.status.in_([RunStatus.QUEUED.value, RunStatus.RUNNING.value])  # type: ignore[attr-defined]
            )
        with self._read() as session:
            return list(session.exec(statement.order_by(EvalJob.id.desc())).all())  # type: ignore[union-attr]

    def _update_job(
        self, job_id: int, values: Mapping[str, Any], statuses: Collection[str]
    ) -> bool:
        """Change a job only while its status is one of `statuses` (compare-and-set)."""
        with self._write() as session:
            result = session.execute(
                update(EvalJob)
                .where(EvalJob.id == job_id, EvalJob.status.in_(list(statuses)))  # type: ignore[arg-type, attr-defined]
                .values(**values),
                execution_options={"synchronize_session": False},
            )
            return bool(result.rowcount)  # type: ignore[attr-defined]

    def start_eval_job(self, job_id: int, pid: int, *, total: int) -> None:
        """The job's process has started it; a job already ended (cancelled) is refused."""
        now = utcnow()
        started = self._update_job(
            job_id,
            {
                "status": RunStatus.RUNNING.value,
                "pid": pid,
                "total": total,
                "done": 0,
                "started_at": now,
                "heartbeat_at": now,
            },
            [RunStatus.QUEUED.value],
        )
        if not started:
            job = self.get_eval_job(job_id)
            state = "does not exist" if job is None else f"is {job.status}"
            raise StoreError(f"evaluation {job_id} {state}; nothing to run")

    def eval_progress(self, job_id: int, *, done: int | None = None, current: str = "") -> None:
        """Where a running job is (also its heartbeat); `done` None only beats."""
        values: dict[str, Any] = {"heartbeat_at": utcnow()}
        if done is not None:
            values.update(done=done, current=current)
        self._update_job(job_id, values, [RunStatus.RUNNING.value])

    def finish_eval_job(
        self, job_id: int, status: RunStatus, *, error: str | None = None, when: str | None = None
    ) -> bool:
        """End a job (only from status `when`, if given); False when it had already ended."""
        status = RunStatus(status)
        if status not in TERMINAL_STATUSES:
            raise ValueError(f"{status.value!r} is not a final status")
        values = {"status": status.value, "finished_at": utcnow(), "error": error, "current": ""}
        active = (RunStatus.QUEUED.value, RunStatus.RUNNING.value)
        return self._update_job(job_id, values, [when] if when is not None else active)


class BatchWriter:
    """Turns a stream of metric rows into a few transactions a second.

    One per training process, used from one thread. Rows are only buffered by the
    `add_*` methods; `maybe_flush` is cheap enough to call every step.
    """

    def __init__(
        self,
        store: Store,
        run_id: int,
        *,
        interval: float = 0.5,
        heartbeat_interval: float = 5.0,
    ) -> None:
        self.store = store
        self.run_id = run_id
        self.interval = interval
        self.heartbeat_interval = heartbeat_interval
        self._steps: list[dict[str, Any]] = []
        self._epochs: list[dict[str, Any]] = []
        self._fields: dict[str, Any] = {}
        self._last_flush = time.monotonic()
        self._last_write = self._last_flush

    @property
    def pending(self) -> bool:
        return bool(self._steps or self._epochs or self._fields)

    def add_steps(self, rows: Sequence[Mapping[str, Any]]) -> None:
        self._steps.extend(dict(row) for row in rows)

    def add_epoch(self, row: Mapping[str, Any]) -> None:
        self._epochs.append(dict(row))

    def set_run_fields(self, **fields: Any) -> None:
        """Later values win: only the latest state of the run row matters."""
        self._fields.update(fields)

    def maybe_flush(self) -> bool:
        """Write if a batch is due, or a heartbeat if the run has been quiet; True if written."""
        now = time.monotonic()
        if self.pending and now - self._last_flush >= self.interval:
            self.flush()
            return True
        if now - self._last_write >= self.heartbeat_interval:
            self.store.heartbeat(self.run_id)
            self._last_write = time.monotonic()
            return True
        return False

    def flush(self) -> None:
        """Write everything buffered now; on failure the rows stay for the next try."""
        if not self.pending:
            self.store.heartbeat(self.run_id)
            self._last_write = time.monotonic()
            return
        self.store.append_metrics(
            self.run_id, steps=self._steps, epochs=self._epochs, run_fields=self._fields
        )
        self._steps = []
        self._epochs = []
        self._fields = {}
        self._last_flush = self._last_write = time.monotonic()
