"""`caat resume`: continue a failed or cancelled run from its last checkpoint.

The run keeps its id, name and series: the rows its last worker wrote after the
checkpoint are deleted as it is queued again, and the new worker appends from there.
Like `caat train`, it trains here with a live bar (`--wait`, the default) or in a
worker process (`--detach`). Torch is imported only by the training itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.text import Text

from caat_app.cli.base import EXIT_CODES, open_store, out
from caat_app.cli.options import DbOption, RunArgument
from caat_app.errors import CaatError
from caat_app.runs.manage import resume_run

if TYPE_CHECKING:
    from caat_storage import Store


def resume(
    run: str = RunArgument,
    db: str | None = DbOption,
    detach: bool = typer.Option(
        False, "--detach/--wait", help="continue in a worker process and return now, or here"
    ),
) -> None:
    """Continue a failed or cancelled run from its last checkpoint, in the same series."""
    store = open_store(db)
    record = store.find_run(run)
    assert record.id is not None
    point = resume_run(store, record)
    out.print(
        Text(
            f"run {record.id} ({record.name}) resumes at step {point.step}, "
            f"after {point.epochs_done} of {record.epochs_total} epochs"
        )
    )
    if detach:
        _start_worker(store, record.id)
        return
    _claim(store, record.id)
    from caat_app.cli.train import train_foreground

    status = train_foreground(store, record.id)
    out.print(Text(f"config, times and more: caat show {record.id}"))
    raise typer.Exit(EXIT_CODES.get(status, 0))


def _claim(store: Store, run_id: int) -> None:
    """Take the queued run for this process, so no dashboard starts a worker for it too."""
    from caat_app.runs.launcher import claim_run

    if not claim_run(store, run_id):
        now = store.get_run(run_id)
        raise CaatError(
            f"run {run_id} is {now.status if now else 'gone'}: another launcher took it"
        )


def _start_worker(store: Store, run_id: int) -> None:
    """Start the run's worker now, whatever else runs (as `caat train --detach` does)."""
    from caat_app.runs.launcher import Scheduler, list_gpus

    unlimited = Scheduler(store, gpus=list_gpus(), per_gpu=10**6, max_cpu=10**6, share_cores=False)
    unlimited.dispatch(only=[run_id])
    run = store.get_run(run_id)
    if run is None or run.pid is None:
        why = (run.error or run.status) if run else "gone"
        raise CaatError(f"run {run_id}: its worker did not start ({why})")
    out.print(Text(f"run {run_id} ({run.name}) continues in worker pid {run.pid}"))
    out.print(Text(f"  log: {Path(run.run_dir) / 'worker.log'}"))
    out.print(Text(f"follow it with: caat runs, caat show {run_id}, caat cancel {run_id}"))
