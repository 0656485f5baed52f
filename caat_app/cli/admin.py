"""`caat backup`, `restore`, `gc`: keeping the store, and the run folders beside it, through
upgrades and mishaps. The work is `caat_storage.backup`'s; these commands say what it did."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.text import Text

from caat_app.cli.base import open_store, out
from caat_app.cli.options import DbOption
from caat_storage import resolve_db_url


def megabytes(size: int) -> str:
    """Sizes as people compare disks: decimal megabytes."""
    return f"{size / 1e6:.1f} MB"


def backup(
    path: Path | None = typer.Argument(
        None, help="the file to write (default: next to the store, <name>-YYYYmmdd-HHMMSS.db)"
    ),
    db: str | None = DbOption,
) -> None:
    """Copy the store to a new file; safe while workers write (SQLite's online backup)."""
    from caat_storage.backup import backup_store, default_backup_path, store_file

    store = store_file(resolve_db_url(db), "back up")
    target = (path or default_backup_path(store)).absolute()
    size = backup_store(store, target)
    out.print(Text(f"wrote {target} ({megabytes(size)})"))


def restore(
    backup_file: Path = typer.Argument(..., help="a file `caat backup` wrote"),
    force: bool = typer.Option(
        False, "--force", help="restore even while runs or evaluations are running"
    ),
    db: str | None = DbOption,
) -> None:
    """Replace the store with a backup once it is checked; the store as it was is saved first."""
    from caat_storage.backup import restore_store, store_file

    store = store_file(resolve_db_url(db), "restore")
    done = restore_store(backup_file, store, force=force)
    if done.saved is not None:
        out.print(Text(f"saved the store as it was to {done.saved} ({megabytes(done.saved_size)})"))
    runs = f"{done.runs} run{'' if done.runs == 1 else 's'}"
    out.print(Text(f"restored {store} from {backup_file.absolute()}: {runs}"))


def gc(
    dry_run: bool = typer.Option(False, "--dry-run", help="list what would go; delete nothing"),
    db: str | None = DbOption,
) -> None:
    """Remove the folders of deleted runs and stale temporary files (*.part, *.tmp) in run
    folders; never a folder of a run the store holds."""
    from caat_storage.backup import find_garbage, remove_garbage

    store = open_store(db)
    garbage = find_garbage(store)
    verb = "would remove" if dry_run else "removing"
    for path, size in garbage.folders + garbage.temps:
        out.print(Text(f"{verb} {path} ({megabytes(size)})"))
    if garbage.others:
        out.print(
            Text(
                f"left alone: {len(garbage.others)} folder(s) in {store.shared_runs_root()} "
                "that are not this store's (another store's, or from before store ids)"
            )
        )
    count = len(garbage.folders) + len(garbage.temps)
    if dry_run:
        out.print(Text(f"would free {count} path(s), {megabytes(garbage.size)}"))
        return
    removed, freed, failures = remove_garbage(store, garbage)
    for line in failures:
        print(f"error: cannot remove {line}", file=sys.stderr)
    out.print(Text(f"freed {removed} path(s), {megabytes(freed)}"))
    if failures:
        raise typer.Exit(1)
