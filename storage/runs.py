"""Run rows: recording, finding, listing a page of, editing and deleting runs."""

import json
import operator
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any, ClassVar

from sqlalchemy import Boolean, ColumnElement, and_, delete, func, literal, or_
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.visitors import InternalTraversal
from sqlmodel import Session, select
from sqlmodel.sql.expression import SelectOfScalar

from .base import StoreBase, StoreError
from .labels import check_name, check_sweep_name, normalise_tags
from .models import Run, utcnow
from .status import RunStatus
from .values import RUN_TABLE, run_values

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


def _like_pattern(word: str) -> str:
    """A LIKE pattern matching `word` anywhere, with `%`, `_` and `\\` taken literally."""
    escaped = word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


class _FoldedLike(ColumnElement[bool]):
    """`column ILIKE pattern ESCAPE '\\'`, written for each backend by `_ilike`/`_sqlite_like`."""

    inherit_cache = True
    type = Boolean()
    _is_implicitly_boolean = True  # a comparison: never `(...) = 1` where booleans are ints
    _traverse_internals: ClassVar[list[tuple[str, InternalTraversal]]] = [
        ("column", InternalTraversal.dp_clauseelement),
        ("pattern", InternalTraversal.dp_clauseelement),
    ]

    def __init__(self, column: ColumnElement[Any], pattern: str) -> None:
        self.column = column
        self.pattern = literal(pattern)


@compiles(_FoldedLike)
def _ilike(element: _FoldedLike, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(element.column.ilike(element.pattern, escape="\\"), **kw)


@compiles(_FoldedLike, "sqlite")
def _sqlite_like(element: _FoldedLike, compiler: SQLCompiler, **kw: Any) -> str:
    """SQLite's LIKE folds ASCII case itself, as its `lower()` does (neither folds more), so
    the same match without SQLAlchemy's `lower(column) LIKE lower(pattern)`: a filtered
    page of a 100 000-run store in half the time."""
    return compiler.process(element.column.like(element.pattern, escape="\\"), **kw)


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
            or_(*(_FoldedLike(RUN_TABLE.c[name], _like_pattern(word)) for name in SEARCH_COLUMNS))
            for word in words
        )
    )


def _order_by(sort: str, descending: bool) -> list[ColumnElement[Any]]:
    if sort not in SORTABLE_COLUMNS:
        raise ValueError(
            f"cannot sort runs by {sort!r}; choose one of {', '.join(SORTABLE_COLUMNS)}"
        )
    column = RUN_TABLE.c[sort]
    newest = RUN_TABLE.c.id.desc()
    if sort == "id":
        return [newest if descending else RUN_TABLE.c.id.asc()]
    order = [column.desc() if descending else column.asc(), newest]
    if column.nullable:
        # `IS NULL` first rather than NULLS LAST: portable to every backend, and these
        # columns have no index a NULLS LAST ordering could have used anyway.
        order.insert(0, column.is_(None).asc())
    return order


def list_statement(
    *,
    limit: int | None = None,
    offset: int = 0,
    search: str | None = None,
    sort: str = "id",
    descending: bool = True,
    below: int | None = None,
) -> SelectOfScalar[Run]:
    """The query behind `Store.list_runs`, public so its plan can be examined on its own."""
    statement = select(Run)
    clause = _search_clause(search)
    if clause is not None:
        statement = statement.where(clause)
    if below is not None:
        statement = statement.where(RUN_TABLE.c.id < below)
    return statement.order_by(*_order_by(sort, descending)).offset(offset).limit(limit)


def new_run(
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
    """A queued run row, checked before any transaction so a bad one costs no lock."""
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


def insert_run(session: Session, run: Run, root: Path) -> int:
    """Insert `run` and fix its folder from its new id, in the caller's transaction.

    `root` is `stored_runs_root()`, relative to the artifacts root, as every host reads it.
    """
    session.add(run)
    session.flush()
    assert run.id is not None
    run.run_dir = (root / str(run.id)).as_posix()
    return run.id


class RunsMixin(StoreBase):
    """Run rows as people see and edit them."""

    def create_run(self, **fields: Any) -> int:
        """Record a queued run (`new_run`'s fields); its folder path is fixed now so every
        process agrees on it."""
        run = new_run(**fields)
        root = self.stored_runs_root()
        with self._write() as session:
            return insert_run(session, run, root)

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
            raise self._no_run(repr(ref))
        return run

    def list_runs(
        self,
        *,
        limit: int | None = None,
        offset: int = 0,
        search: str | None = None,
        sort: str = "id",
        descending: bool = True,
        below: int | None = None,
    ) -> list[Run]:
        """One page of runs, filtered and sorted in SQL so a page costs the same at any size.

        The default is newest first, what a person most likely wants. `search`: every
        word must occur (case-insensitive, `%` and `_` literal) in the name, sweep,
        method, data set, model, status or tags. `sort`: one of SORTABLE_COLUMNS (else
        ValueError); empty values go last either way and ties go newest first. `below`:
        only runs with a smaller id, so newest-first pages can follow one another by the
        last id shown (no OFFSET to skip, and a run added meanwhile shifts nothing).
        """
        statement = list_statement(
            limit=limit,
            offset=offset,
            search=search,
            sort=sort,
            descending=descending,
            below=below,
        )
        with self._read() as session:
            return list(session.exec(statement).all())

    def count_runs(self, *, search: str | None = None) -> int:
        """How many runs `list_runs` would page through with the same search."""
        statement = select(func.count()).select_from(RUN_TABLE)
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

    def update_run(self, run_id: int, **fields: Any) -> None:
        """Write run columns as given; nothing given takes no write lock."""
        values = run_values(fields)
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
                raise self._no_run(run_id)
