"""`caat cancel`, `rename`, `tag`, `note`, `delete`: what a person does to a run.

Each goes through the workbench service the dashboard uses, so both refuse the same
things with the same one-line errors.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import typer
from rich.text import Text

from caat_app.cli.base import open_store, out
from caat_app.cli.options import DbOption, RunArgument, check_int64, check_run_refs
from caat_app.errors import CaatError
from caat_app.present import visible
from caat_app.runs.service import Workbench

if TYPE_CHECKING:
    from caat_storage import Run


def _workbench(db: str | None, run: str) -> tuple[Workbench, Run]:
    """The store's workbench and the run a person named (by id or name)."""
    store = open_store(db)
    return Workbench(store), store.find_run(run)


def cancel(
    run: str | None = typer.Argument(None, help="run id or name", callback=check_run_refs),
    eval_job: int | None = typer.Option(
        None,
        "--eval",
        help="an evaluation job instead (the id `caat eval --detach` printed)",
        callback=check_int64,
    ),
    db: str | None = DbOption,
) -> None:
    """Stop a run (its worker checkpoints, ends `cancelled`) or, with --eval, an evaluation."""
    if (run is None) == (eval_job is None):
        raise CaatError("name a run, or an evaluation with --eval JOB (not both)")
    store = open_store(db)
    bench = Workbench(store)
    from caat_app.runs.slurm import cancel_job, job_of

    if eval_job is not None:
        job = store.get_eval_job(eval_job)
        if job is None:
            raise CaatError(f"no evaluation {eval_job} in {store.url}")
        owner = store.get_run(job.run_id)
        slurm = job_of(owner.run_dir, eval_job) if owner and job.status == "running" else None
        if slurm is not None:  # a Slurm task runs it: scancel reaches its worker
            out.print(Text(f"evaluation {eval_job}: {cancel_job(slurm)}"))
            return
        bench.cancel_eval(job)
        out.print(Text(f"asked evaluation {eval_job} to stop; what it measured stays stored"))
        return
    assert run is not None
    record = store.find_run(run)

    job = job_of(record.run_dir) if record.status in ("queued", "running") else None
    if job is not None:  # a Slurm job: its task ends a queued run at once, scancel the rest
        if record.status == "queued":
            bench.cancel_run(record)
        out.print(Text(f"run {record.id}: {cancel_job(job)}"))
        return
    bench.cancel_run(record)
    out.print(Text(f"asked run {record.id} to stop"))


def rename(
    run: str = RunArgument,
    name: str = typer.Argument(..., help="the new name"),
    db: str | None = DbOption,
) -> None:
    """Give a run a new name."""
    bench, record = _workbench(db, run)
    assert record.id is not None
    out.print(Text(f"run {record.id} is now {bench.rename_run(record.id, name)}"))


def tag(
    run: str = RunArgument,
    tags: list[str] = typer.Argument(None, help="tags (none: remove every tag)"),
    db: str | None = DbOption,
) -> None:
    """Set a run's tags (they are searched by the dashboard's filter)."""
    bench, record = _workbench(db, run)
    assert record.id is not None
    kept = bench.set_tags(record.id, tags or [])
    out.print(Text(f"run {record.id} tags: {', '.join(kept) or '(none)'}"))


def note(
    run: str = RunArgument,
    text: str = typer.Argument(..., help="the note ('-' reads it from stdin)"),
    db: str | None = DbOption,
) -> None:
    """Attach a note to a run (replaces the one it had)."""
    bench, record = _workbench(db, run)
    assert record.id is not None
    bench.set_notes(record.id, sys.stdin.read() if text == "-" else text)
    out.print(Text(f"run {record.id}: note saved"))


def delete(
    run: str = RunArgument,
    yes: bool = typer.Option(False, "--yes", "-y", help="do not ask"),
    db: str | None = DbOption,
) -> None:
    """Delete a finished run: its metrics and its folder."""
    bench, record = _workbench(db, run)
    question = f"Delete run {record.id} ({visible(record.name)}) and its folder?"
    if not yes and not typer.confirm(question):
        raise typer.Exit(1)
    folder = bench.delete_run(record)
    out.print(Text(f"run {record.id} deleted" + (f", and {folder}" if folder else "")))
