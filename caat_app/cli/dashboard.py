"""`caat` with no command, and `caat tui`: the dashboard.

`open_dashboard` stays a small function that imports the dashboard when it is called,
so the CLI's other commands never pay for Textual.
"""

from __future__ import annotations

import os
from pathlib import Path

import typer

from caat_app.cli.options import DbOption, MaxCpuOption, PerGpuOption
from caat_storage import ARTIFACTS_ENV, resolve_db_url


def root(
    ctx: typer.Context,
    db: str | None = typer.Option(
        None, "--db", help="store of the dashboard: SQLAlchemy URL or SQLite file path"
    ),
    per_gpu: int = PerGpuOption,
    max_cpu: int = MaxCpuOption,
    artifacts: Path | None = typer.Option(
        None,
        "--artifacts",
        help="root of the run folders, seen by every host (default: $CAAT_ARTIFACTS, "
        "else next to a SQLite store, else $CAAT_HOME); goes before the command",
    ),
) -> None:
    """With no command: the dashboard."""
    use_artifacts(artifacts)
    if ctx.invoked_subcommand is None:
        open_dashboard(db, per_gpu=per_gpu, max_cpu=max_cpu)


def use_artifacts(folder: Path | str | None) -> None:
    """`--artifacts` for this process and every worker it starts (they inherit it)."""
    if folder:
        os.environ[ARTIFACTS_ENV] = str(Path(folder).expanduser().absolute())


def tui(
    db: str | None = DbOption, per_gpu: int = PerGpuOption, max_cpu: int = MaxCpuOption
) -> None:
    """The dashboard (the same as `caat` with no command)."""
    open_dashboard(db, per_gpu=per_gpu, max_cpu=max_cpu)


def open_dashboard(db: str | None, *, per_gpu: int = 1, max_cpu: int = 1) -> None:
    """Run the dashboard on the store `db` names (a launcher with these limits)."""
    from caat_screens.app import run_dashboard

    run_dashboard(resolve_db_url(db), per_gpu=per_gpu, max_cpu=max_cpu)
