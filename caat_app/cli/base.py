"""The one typer app, its two consoles, and what every command module shares.

Kept tiny and free of commands, so every command module imports it without a cycle;
`caat_app.cli` registers the commands on `app`. (Not named `app.py`: the package
exports the `app` object, which would hide a submodule of the same name.)
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import typer
from rich.console import Console

from caat_storage import RunStatus, resolve_db_url

if TYPE_CHECKING:
    from caat_storage import Store

app = typer.Typer(
    name="caat",
    help="Conflict-Aware Adversarial Training: train, measure the gradient conflict, compare.",
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
# Piped output is not cut to 80 columns: a script reading a table wants whole cells.
out = Console(highlight=False, width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, highlight=False)

EXIT_CODES = {
    RunStatus.FINISHED: 0,
    RunStatus.CANCELLED: 130,
    RunStatus.DIVERGED: 1,
    RunStatus.FAILED: 1,
}
"""Exit codes of a foreground `caat train` (or eval, sweep) by the final status."""


def open_store(db: str | None) -> Store:
    """The store `--db` names, else $CAAT_DB, else the one under $CAAT_HOME.

    Says so when opening upgraded it, and fails the runs whose worker died first, so
    no command shows a dead run as running.
    """
    from caat_app.runs.manage import reap_dead
    from caat_storage import Store

    store = Store.open(resolve_db_url(db))
    if store.upgraded:  # one line, unwrapped, as errors are: a script may read it
        print(store.upgraded, file=sys.stderr, flush=True)
    reap_dead(store)
    return store
