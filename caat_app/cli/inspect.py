"""`caat runs`, `caat show`, `caat export`: reading the store, never writing it.

Torch-free: a person looks at runs while others train.
"""

from __future__ import annotations

import json
import sys
import textwrap
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.cells import cell_len
from rich.console import RenderableType
from rich.table import Table
from rich.text import Text

from caat_app.cli.base import err, open_store, out
from caat_app.cli.options import DbOption, JsonOption, RunArgument, check_int64
from caat_app.cli.render import NARROW_DROPS, eval_parts, rows_csv, run_parts, runs_table
from caat_app.errors import CaatError
from caat_app.evaluation.plan import describe_spec
from caat_app.runs.stored import options_of

if TYPE_CHECKING:
    from sqlmodel import SQLModel

    from caat_storage import Run, Store


def fields_of(row: SQLModel, **dump: Any) -> dict[str, Any]:
    """A stored row as plain data, its fields in the order its model declares them.

    A loaded row's attributes come in an order that shifts with what the process has
    imported; a script reading our JSON keys or CSV columns gets one order, always.
    """
    data = row.model_dump(**dump)
    return {k: data[k] for k in type(row).model_fields if k in data} | data


def run_record(run: Run) -> dict[str, Any]:
    """A run as plain JSON-able data (what `--json` prints)."""
    data = fields_of(run, mode="json")
    data["config"] = options_of(run)
    return data


PAGE = 50
"""How many runs `caat runs` lists unless told: the newest, a screenful or two."""
CHUNK = 1000
"""Runs read (and drawn) at a time past one page: memory stays flat at any store size."""


def runs(
    db: str | None = DbOption,
    as_json: bool = typer.Option(
        False, "--json", help="the same runs as one JSON list (the 'showing' line on stderr)"
    ),
    limit: int | None = typer.Option(
        None, min=1, help=f"the newest N runs (default {PAGE})", callback=check_int64
    ),
    show_all: bool = typer.Option(False, "--all", help="every run, however many"),
) -> None:
    """List the runs in the store, newest first: the newest 50 unless --limit N or --all.

    When the store holds more, a last line says how many ("showing 50 of N runs"); with
    --json it goes to stderr and stdout holds the same page as a JSON list.
    """
    if show_all and limit is not None:
        raise CaatError("give one of --all and --limit")
    store = open_store(db)
    total = store.count_runs()
    count = total if show_all else min(limit or PAGE, total)
    if as_json:
        _print_json(store, count)
    elif not total:
        out.print(Text(f"no runs in {store.url} yet: try `caat demo` or `caat train`"))
    else:
        _print_table(store, count)
    if count < total:
        more = Text(f"showing {count} of {total} runs; --all or --limit N for more")
        (err if as_json else out).print(more)


def _pages(store: Store, count: int, below: int | None = None) -> Iterator[list[Run]]:
    """The newest `count` runs (with ids below `below`), CHUNK at a time, each page read
    after the last id of the one before."""
    while count > 0:
        rows = store.list_runs(limit=min(CHUNK, count), below=below)
        if not rows:
            return
        yield rows
        count -= len(rows)
        below = rows[-1].id


def _print_json(store: Store, count: int) -> None:
    """The runs as `json.dumps(records, indent=2)` writes them, written a page at a time."""
    first = True
    for rows in _pages(store, count):
        text = ",\n".join(textwrap.indent(json.dumps(run_record(r), indent=2), "  ") for r in rows)
        sys.stdout.write(("[\n" if first else ",\n") + text)
        first = False
    sys.stdout.write("[]\n" if first else "\n]\n")


def _widths(table: Table) -> list[int]:
    """Each column's width as rich would measure it: its widest cell (or header)."""

    def width(cell: RenderableType) -> int:
        return cell.cell_len if isinstance(cell, Text) else cell_len(str(cell))

    return [
        max(width(column.header), column.min_width or 0, *map(width, column.cells))
        for column in table.columns
    ]


def _pin(table: Table, widths: list[int] | None) -> Table:
    """Fix the columns' widths (None: rich measures them again)."""
    for i, column in enumerate(table.columns):
        column.width = None if widths is None else widths[i]
    return table


def _fits(table: Table) -> bool:
    unbounded = out.options.update_width(2**31)  # measured as it wants, not as it fits
    return out.measure(table, options=unbounded).maximum <= out.width


def _narrow(rows: Sequence[Run], url: str) -> list[str]:
    """The columns to leave out so the table fits the terminal (`NARROW_DROPS` in order):
    rich would otherwise squeeze the name to nothing."""
    drop: list[str] = []
    for column in (None, *NARROW_DROPS):
        if column is not None:
            drop.append(column)
        table = runs_table(rows, url, drop=drop)
        if _fits(_pin(table, _widths(table))):
            return drop
    return drop


def _print_table(store: Store, count: int) -> None:
    """The runs as one table; past CHUNK runs drawn a page at a time, every page at the
    widths of the widest cells of all (a first pass measures them), so the pages line up
    as one table and memory stays flat.

    Widths are measured here: rich's own measuring of every cell was about a third of
    drawing 1000 runs. A table too wide for the console is left to rich to fold, as
    before, unless it comes in pages."""
    if count <= CHUNK:
        rows = store.list_runs(limit=count)
        drop = _narrow(rows, store.url)
        table = runs_table(rows, store.url, drop=drop)
        _pin(table, _widths(table))
        out.print(table if _fits(table) else _pin(table, None))
        return
    widths: list[int] = []
    top: int | None = None
    drop: list[str] = []
    for rows in _pages(store, count):
        if top is None:
            top, drop = rows[0].id, _narrow(rows, store.url)
        page_widths = _widths(runs_table(rows, store.url, drop=drop))
        widths = [max(w) for w in zip(widths, page_widths, strict=True)] if widths else page_widths
    for page, rows in enumerate(_pages(store, count, None if top is None else top + 1)):
        table = _pin(runs_table(rows, store.url, drop=drop), widths)
        table.show_edge = False  # no blank edge lines between the pages
        if page:
            table.title, table.show_header = None, False
        out.print(table)


def show(run: str = RunArgument, db: str | None = DbOption, as_json: bool = JsonOption) -> None:
    """A run's status, config and final metrics, and every evaluation stored for it."""
    from caat_app.evaluation.tables import tables_from_results

    store = open_store(db)
    record = store.find_run(run)
    assert record.id is not None
    tables = tables_from_results(store.evals(record.id))
    jobs = store.eval_jobs(record.id, active=True)
    if as_json:
        evaluating = [
            fields_of(job, mode="json", include={"id", "status", "done", "total", "current"})
            | {"spec": json.loads(job.spec)}
            for job in jobs
        ]
        evaluations = [t.to_json() for t in tables]
        data = run_record(record) | {"evaluations": evaluations, "evaluating": evaluating}
        print(json.dumps(data, indent=2))
        return
    for part in run_parts(record):
        out.print(part)
    for table in tables:
        out.print(
            Text(
                f"evaluation: {table.checkpoint} checkpoint ({table.weights or '?'}), "
                f"{table.norm}, measured in {table.seconds:.0f} s"
            )
        )
        for part in eval_parts([(record, table)]):
            out.print(part)
    for job in jobs:
        now = f", now {job.current}" if job.current else ""
        out.print(Text(f"evaluation {job.id} {job.status}: {job.done}/{job.total} measured{now}"))
        out.print(Text(f"  {describe_spec(job.spec)}; `caat cancel --eval {job.id}` stops it"))


def _ordered(row: dict[str, Any], key: str) -> dict[str, Any]:
    """The series' own key first, so a CSV reads naturally."""
    return {"run_id": row.pop("run_id"), key: row.pop(key), **row}


def export(
    run: str = RunArgument,
    fmt: str = typer.Option("json", "--format", help="json (steps and epochs) or csv"),
    series: str = typer.Option("steps", help="csv only: steps or epochs"),
    output: Path | None = typer.Option(None, "--output", "-o", help="file (default: stdout)"),
    db: str | None = DbOption,
) -> None:
    """Write a run's step and epoch series as JSON or CSV."""
    if fmt not in {"json", "csv"}:
        raise CaatError(f"--format: unknown {fmt!r}; choose one of json, csv")
    if series not in {"steps", "epochs"}:
        raise CaatError(f"--series: unknown {series!r}; choose one of steps, epochs")
    store = open_store(db)
    record = store.find_run(run)
    assert record.id is not None
    steps = [_ordered(fields_of(s), "step") for s in store.steps(record.id)]
    epochs = [_ordered(fields_of(e), "epoch") for e in store.epochs(record.id)]
    if fmt == "json":
        text = json.dumps({"run": run_record(record), "steps": steps, "epochs": epochs})
    else:
        text = rows_csv(steps if series == "steps" else epochs)
    if output is None:
        sys.stdout.write(text)
        return
    try:
        output.write_text(text)
    except OSError as exc:
        raise CaatError(f"cannot write {output}: {exc.strerror or exc}") from None
    err.print(Text(f"wrote {output}"))
