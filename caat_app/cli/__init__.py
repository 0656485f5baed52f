"""The `caat` command line: every command registered on the one typer app, and `main`.

One module per command family (train, inspect, manage, analyse, evaluate, bench,
dashboard), shared options in `options`, rich tables in `render`. Commands that do not
train or evaluate never import torch: the training stack is imported inside the
commands that need it. Every expected error is printed as one line on stderr with exit
code 2, and is detected before anything is written to the store.
"""

from __future__ import annotations

import sys
from typing import Any

import typer

from caat_app.cli import (
    admin,
    agent,
    analyse,
    bench,
    conflict,
    dashboard,
    evaluate,
    inspect,
    lab,
    manage,
    paper,
    resume,
    serve,
    train,
)
from caat_app.cli.base import app
from caat_app.cli.layers import layers_command
from caat_app.errors import CaatError
from caat_app.runs.diskfull import disk_full_reason
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
    ("resume", resume.resume),
    ("compare", analyse.compare_command),
    ("front", analyse.front),
    ("eval", evaluate.eval_command),
    ("rename", manage.rename),
    ("tag", manage.tag),
    ("note", manage.note),
    ("delete", manage.delete),
    ("demo", train.demo),
    ("bench", bench.bench),
    ("paper", paper.paper_command),
    ("layers", layers_command),
    ("synth", lab.synth),
    ("conflict", conflict.conflict),
    ("backup", admin.backup),
    ("restore", admin.restore),
    ("gc", admin.gc),
    ("agent", agent.agent_command),
    ("serve", serve.serve_command),
)
"""Every command, in the order `caat --help` lists them."""

app.callback(invoke_without_command=True)(dashboard.root)
for _name, _command in COMMANDS:
    app.command(name=_name)(_command)

ROOT_OPTIONS = {
    "--db": "db",
    "--per-gpu": "per_gpu",
    "--max-cpu": "max_cpu",
    "--artifacts": "artifacts",
}


def dashboard_options(args: list[str]) -> dict[str, Any] | None:
    """The root's options when `args` are nothing else, each valid; else None.

    `caat` alone opens the dashboard without typer's parser, which imports pydantic to
    coerce values (0.1 s of the dashboard's 0.5 s to its first page). Anything else, a
    bad value included, goes to typer, which says what is wrong.
    """
    options: dict[str, Any] = {"db": None, "per_gpu": 1, "max_cpu": 1, "artifacts": None}
    rest = list(args)
    while rest:
        flag, given, value = rest.pop(0).partition("=")
        if flag not in ROOT_OPTIONS or (not given and not rest):
            return None
        value = value if given else rest.pop(0)
        name = ROOT_OPTIONS[flag]
        if name in ("db", "artifacts"):
            options[name] = value
        elif value.isdecimal() and int(value) >= 1:
            options[name] = int(value)
        else:
            return None
    return options


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
    args = sys.argv[1:] if argv is None else argv
    options = dashboard_options(args)
    try:
        if options is not None:
            dashboard.use_artifacts(options.pop("artifacts"))
            dashboard.open_dashboard(**options)
            sys.exit(0)
        code = app(args=args, standalone_mode=False)
    except (CaatError, StoreError) as exc:
        _fail(str(exc))
    except (KeyboardInterrupt, typer.Abort):
        _fail("interrupted", 130)
    except Exception as exc:
        if _is_usage_error(exc):
            _fail(exc.format_message())  # type: ignore[attr-defined]
        full = disk_full_reason(exc)  # the environment, not a bug: one line too
        if full is None:
            raise
        _fail(full)
    sys.exit(code if isinstance(code, int) else 0)
