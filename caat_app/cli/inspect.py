"""`caat runs`, `caat show`, `caat export`: reading the store, never writing it.

Torch-free: a person looks at runs while others train.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.text import Text

from caat_app.cli.base import err, open_store, out
from caat_app.cli.options import DbOption, JsonOption, RunArgument, check_int64
from caat_app.cli.render import eval_parts, rows_csv, run_parts, runs_table
from caat_app.errors import CaatError
from caat_app.evaluation.plan import describe_spec
from caat_app.runs.stored import options_of

if TYPE_CHECKING:
    from sqlmodel import SQLModel

    from caat_storage import Run


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


def runs(
    db: str | None = DbOption,
    as_json: bool = JsonOption,
    limit: int | None = typer.Option(None, min=1, help="newest N runs", callback=check_int64),
) -> None:
    """List the runs in the store, newest first."""
    store = open_store(db)
    rows = store.list_runs(limit=limit)
    if as_json:
        print(json.dumps([run_record(r) for r in rows], indent=2))
    elif not rows:
        out.print(Text(f"no runs in {store.url} yet: try `caat demo` or `caat train`"))
    else:
        out.print(runs_table(rows, store.url))


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
