"""The `caat` command line: every command registered on the one typer app, and `main`.

One module per command family (train, inspect, manage, analyse, evaluate, bench,
dashboard), shared options in `options`, rich tables in `render`. Commands that do not
train or evaluate never import torch: the training stack is imported inside the
commands that need it. Every expected error is printed as one line on stderr with exit
code 2, and is detected before anything is written to the store.
"""

from __future__ import annotations

import sys

import typer

from caat_app.cli import analyse, bench, dashboard, evaluate, inspect, manage, train
from caat_app.cli.base import app
from caat_app.errors import CaatError
from caat_storage import StoreError

__all__ = ["app", "main"]

COMMANDS = (
    ("train", train.train),
    ("sweep", train.sweep_command),
    ("tui", dashboard.tui),
    ("runs", inspect.runs),
    ("show", inspect.show),
    ("export", inspect.export),
    ("cancel", manage.cancel),
    ("compare", analyse.compare_command),
    ("front", analyse.front),
    ("eval", evaluate.eval_command),
    ("rename", manage.rename),
    ("tag", manage.tag),
    ("note", manage.note),
    ("delete", manage.delete),
    ("demo", train.demo),
    ("bench", bench.bench),
)
"""Every command, in the order `caat --help` lists them."""

app.callback(invoke_without_command=True)(dashboard.root)
for _name, _command in COMMANDS:
    app.command(name=_name)(_command)


def _fail(message: str, code: int = 2) -> None:
    """One line on stderr, never wrapped (a person and a script both read it)."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


def _is_usage_error(exc: BaseException) -> bool:
    """Click's usage errors (typer vendors click, so match them by shape, not by import)."""
    return type(exc).__module__.split(".")[0] in {"click", "typer"} and callable(
        getattr(exc, "format_message", None)
    )


def main(argv: list[str] | None = None) -> None:
    """Entry point: expected errors become one line and exit code 2, never a traceback."""
    try:
        code = app(args=argv, standalone_mode=False)
    except (CaatError, StoreError) as exc:
        _fail(str(exc))
    except (KeyboardInterrupt, typer.Abort):
        _fail("interrupted", 130)
    except Exception as exc:
        if not _is_usage_error(exc):
            raise
        _fail(exc.format_message())  # type: ignore[attr-defined]
    sys.exit(code if isinstance(code, int) else 0)
