"""The `caat` command line.

Commands that do not train (`runs`, `show`, `export`, `cancel`) never import torch:
the training stack is imported inside the commands that need it. Every expected
error is printed as one line on stderr with exit code 2, and is detected before
anything is written to the store.
"""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import sys
from collections.abc import Iterable
from functools import partial
from pathlib import Path
from typing import Any

import typer
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from caat_app.config import RunConfig, build_config, load_config_file
from caat_app.errors import CaatError
from caat_app.evaluation.plan import DEFAULT_ATTACKS as DEFAULT_EVAL_ATTACKS
from caat_app.evaluation.plan import EVAL_ATTACKS, describe_spec
from caat_app.present import format_budget, pct
from caat_app.runs.manage import create_run
from caat_storage import Run, RunStatus, Store, StoreError, resolve_db_url

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

# Exit codes of a foreground `caat train` by the run's final status.
EXIT_CODES = {"finished": 0, "cancelled": 130, "diverged": 1, "failed": 1}

STATUS_STYLE = {
    "queued": "cyan",
    "running": "yellow",
    "finished": "green",
    "failed": "red",
    "cancelled": "magenta",
    "diverged": "red",
}


PerGpuOption = typer.Option(1, "--per-gpu", min=1, help="dashboard: runs at once per GPU")
MaxCpuOption = typer.Option(1, "--max-cpu", min=1, help="dashboard: CPU runs at once")


@app.callback(invoke_without_command=True)
def _root(
    ctx: typer.Context,
    db: str | None = typer.Option(
        None, "--db", help="store of the dashboard: SQLAlchemy URL or SQLite file path"
    ),
    per_gpu: int = PerGpuOption,
    max_cpu: int = MaxCpuOption,
) -> None:
    """With no command: the dashboard."""
    if ctx.invoked_subcommand is None:
        open_dashboard(db, per_gpu=per_gpu, max_cpu=max_cpu)


def open_dashboard(db: str | None, *, per_gpu: int = 1, max_cpu: int = 1) -> None:
    from caat_screens.app import run_dashboard

    run_dashboard(resolve_db_url(db), per_gpu=per_gpu, max_cpu=max_cpu)


DbOption = typer.Option(
    None, "--db", help="store: SQLAlchemy URL or SQLite file path (default: $CAAT_DB, $CAAT_HOME)"
)


def open_store(db: str | None) -> Store:
    return Store.open(resolve_db_url(db))


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return (
            f"{value:.{digits}g}"
            if abs(value) >= 1e4 or 0 < abs(value) < 1e-3
            else (
                f"{value:.{digits}f}".rstrip("0").rstrip(".")
                if value != int(value)
                else f"{value:g}"
            )
        )
    return str(value)


def run_record(run: Run) -> dict[str, Any]:
    """A run as plain JSON-able data (what `--json` prints)."""
    data = run.model_dump(mode="json")
    data["config"] = json.loads(run.config)
    return data


def _status_text(status: str) -> Text:
    return Text(status, style=STATUS_STYLE.get(status, ""))


def _method_text(run: Run) -> str:
    symbol = "γ" if run.method == "caat" else "λ"
    return f"{run.method} {symbol}={_fmt(run.param)}"


# --------------------------------------------------------------------------- train


@app.command()
def train(
    method: str | None = typer.Option(None, help="vanilla (weight λ) or caat (threshold γ)"),
    lam: float | None = typer.Option(None, help="Vanilla AT: weight of the adversarial loss"),
    gamma: float | None = typer.Option(None, help="CA-AT: cosine threshold γ in (-1, 1]"),
    projection: str | None = typer.Option(None, help="global (the paper) or layer"),
    dataset: str | None = typer.Option(None, help="digits (embedded), mnist, cifar10, cifar100"),
    model: str | None = typer.Option(None, help="linear, cnn, resnet18, resnet34, wrn28-10"),
    bn: str | None = typer.Option(None, help="BatchNorm: standard or batchstats"),
    loss: str | None = typer.Option(None, help="adversarial loss: ce, trades, clp"),
    beta: float | None = typer.Option(None, help="TRADES / CLP weight (default 6 / 0.5)"),
    attack: str | None = typer.Option(
        None, help="training attack: pgd, fgsm, mifgsm, apgd-ce, apgd-dlr, apgd-t"
    ),
    norm: str | None = typer.Option(None, help="budget norm: linf or l2"),
    eps: str | None = typer.Option(None, help="budget ε, e.g. 0.3 or 8/255"),
    alpha: str | None = typer.Option(None, help="attack step (default ε/4), e.g. 2/255"),
    attack_steps: int | None = typer.Option(None, help="PGD steps while training"),
    eval_steps: int | None = typer.Option(None, help="PGD steps of the per-epoch evaluation"),
    epochs: int | None = typer.Option(None),
    batch_size: int | None = typer.Option(None),
    lr: float | None = typer.Option(None, help="peak learning rate of the one-cycle schedule"),
    momentum: float | None = typer.Option(None),
    weight_decay: float | None = typer.Option(None),
    seed: int | None = typer.Option(None),
    device: str | None = typer.Option(None, help="auto, cpu, cuda or cuda:N"),
    bf16: bool | None = typer.Option(None, "--bf16/--no-bf16", help="bf16 autocast (CUDA)"),
    augment: bool | None = typer.Option(None, "--augment/--no-augment"),
    eval_n: int | None = typer.Option(None, help="val/test images evaluated per epoch (0: all)"),
    max_nonfinite: int | None = typer.Option(None, help="skipped steps before `diverged`"),
    log_every: int | None = typer.Option(None, help="steps between metric copies"),
    data_dir: str | None = typer.Option(None, help="data set folder (default $CAAT_DATA)"),
    download: bool | None = typer.Option(None, "--download/--no-download"),
    preset: str | None = typer.Option(None, help="e.g. paper-cifar10-r18; options override it"),
    name: str | None = typer.Option(None, help="run name"),
    config: Path | None = typer.Option(None, "--config", help="TOML file of these options"),
    db: str | None = DbOption,
    detach: bool = typer.Option(False, "--detach", help="train in a worker process, return now"),
) -> None:
    """Train one run (Vanilla AT or CA-AT) and stream its metrics into the store."""
    options = {k: v for k, v in locals().items() if k not in {"config", "db", "detach"}}
    file_values = load_config_file(config) if config is not None else {}
    cfg = build_config(options, file_values)
    store, ids, statuses = start_runs([cfg], db=db, detach=detach)
    if statuses:
        out.print(Text(f"config, times and more: caat show {ids[0]}"))
        raise typer.Exit(EXIT_CODES.get(statuses[0], 0))


@app.command(name="sweep")
def sweep_command(
    name: str = typer.Option(..., "--name", help="the sweep; the same name again adds to it"),
    method: str | None = typer.Option(None, help="vanilla (weight λ) or caat (threshold γ)"),
    lam: str | None = typer.Option(None, help="Vanilla AT λ, or a list: 0,0.25,0.5"),
    gamma: str | None = typer.Option(None, help="CA-AT γ, or a list: 0.7,0.8,0.9"),
    projection: str | None = typer.Option(None, help="global (the paper) or layer"),
    dataset: str | None = typer.Option(None, help="digits (embedded), mnist, cifar10, cifar100"),
    model: str | None = typer.Option(None, help="linear, cnn, resnet18, ... (a list too)"),
    bn: str | None = typer.Option(None, help="BatchNorm: standard or batchstats"),
    loss: str | None = typer.Option(None, help="adversarial loss: ce, trades, clp (a list too)"),
    beta: str | None = typer.Option(None, help="TRADES / CLP weight (default 6 / 0.5)"),
    attack: str | None = typer.Option(
        None, help="training attack: pgd, fgsm, mifgsm, apgd-ce, apgd-dlr, apgd-t"
    ),
    norm: str | None = typer.Option(None, help="budget norm: linf or l2"),
    eps: str | None = typer.Option(None, help="budget ε, e.g. 0.3 or a list: 8/255,16/255"),
    alpha: str | None = typer.Option(None, help="attack step (default ε/4), e.g. 2/255"),
    attack_steps: str | None = typer.Option(None, help="PGD steps while training"),
    eval_steps: str | None = typer.Option(None, help="PGD steps of the per-epoch evaluation"),
    epochs: str | None = typer.Option(None),
    batch_size: str | None = typer.Option(None),
    lr: str | None = typer.Option(None, help="peak learning rate of the one-cycle schedule"),
    momentum: str | None = typer.Option(None),
    weight_decay: str | None = typer.Option(None),
    seed: str | None = typer.Option(None, help="a seed, or a list: 0,1,2"),
    seeds: str | None = typer.Option(None, help="the seeds of each config: 0,1,2"),
    device: str | None = typer.Option(None, help="auto, cpu, cuda or cuda:N"),
    bf16: bool | None = typer.Option(None, "--bf16/--no-bf16", help="bf16 autocast (CUDA)"),
    augment: bool | None = typer.Option(None, "--augment/--no-augment"),
    eval_n: str | None = typer.Option(None, help="val/test images evaluated per epoch (0: all)"),
    max_nonfinite: int | None = typer.Option(None, help="skipped steps before `diverged`"),
    log_every: int | None = typer.Option(None, help="steps between metric copies"),
    data_dir: str | None = typer.Option(None, help="data set folder (default $CAAT_DATA)"),
    download: bool | None = typer.Option(None, "--download/--no-download"),
    preset: str | None = typer.Option(None, help="e.g. paper-cifar10-r18; options override it"),
    config: Path | None = typer.Option(None, "--config", help="TOML file (lists are swept)"),
    db: str | None = DbOption,
    jobs: int = typer.Option(1, "--jobs", min=1, help="runs of the sweep at once"),
    detach: bool = typer.Option(False, "--detach", help="only queue the runs; start nothing"),
    resume: bool = typer.Option(False, "--resume", help="run again what the sweep lacks"),
) -> None:
    """Train a grid (lists like --lam 0,0.5,1 times --seeds 0,1) as one sweep, in workers.

    A sweep is resumable: runs already finished, queued or running are never added
    again, and failed or cancelled ones are queued anew.
    """
    import shlex

    from sqlalchemy.engine import make_url

    from caat_app.cli.progress import SweepProgress
    from caat_app.config import ConfigError
    from caat_app.runs.launcher import list_gpus
    from caat_app.runs.sweep import (
        check_sweep,
        counts_text,
        expand,
        name_runs,
        plan_sweep,
        run_sweep,
        sweep_configs,
        sweep_options,
        sweep_rows,
    )

    options = {
        k: v
        for k, v in locals().items()
        if k not in {"name", "seeds", "config", "db", "jobs", "detach", "resume"}
        and k in RunConfig.model_fields
    }
    sweep_name = check_sweep(name)
    again = f"caat sweep --name {shlex.quote(sweep_name)} --resume" + (
        f" --db {shlex.quote(db)}" if db else ""
    )
    if resume:
        given = [k for k, v in options.items() if v is not None]
        if given or seeds is not None or config is not None:
            what = ", ".join("--" + k.replace("_", "-") for k in given) or "--seeds/--config"
            raise ConfigError(f"--resume runs the sweep's own configs; drop {what}")
        parsed = make_url(resolve_db_url(db))
        file = parsed.database if parsed.get_backend_name() == "sqlite" else None
        if file and file != ":memory:" and not Path(file).exists():  # resuming creates nothing
            raise ConfigError(f"no sweep {sweep_name!r}: no store at {file}")
        store = open_store(db)
        configs = sweep_configs(store, sweep_name)
        if not configs:
            raise ConfigError(f"no sweep {sweep_name!r} in {store.url}")
    else:
        file_values = load_config_file(config) if config is not None else {}
        base, lists, seed_list = sweep_options(options, file_values, seeds)
        configs = name_runs(sweep_name, expand(base, lists, seed_list))
        checked: set[tuple[Any, ...]] = set()
        for cfg in configs:  # the data and the device, once per distinct need
            need = (cfg.device, cfg.dataset, cfg.data_dir, cfg.download)
            if need not in checked:
                check_runnable(cfg)
                checked.add(need)
        store = open_store(db)
    new, held = plan_sweep(store, sweep_name, configs)
    out.print(
        Text(
            f"sweep {sweep_name} in {store.url}: {len(new) + len(held)} runs in this grid, "
            f"{len(new)} queued now, {len(held)} already finished, queued or running"
        )
    )
    for run_id in new:
        run = store.get_run(run_id)
        out.print(Text(f"  + {run_id} {run.name if run else ''}"))
    if detach:
        out.print(Text(f"start them with `{again}` (or from the dashboard)"))
        return
    stop = {"asked": False}

    def on_sigint(*_: Any) -> None:
        stop["asked"] = True
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl-C: now

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        with SweepProgress(out, sweep_name) as progress:

            def should_stop() -> bool:
                progress.stopping = stop["asked"]
                return stop["asked"]

            counts = run_sweep(
                store,
                sweep_name,
                jobs=jobs,
                gpus=list_gpus(),
                on_progress=progress,
                should_stop=should_stop,
            )
    finally:
        signal.signal(signal.SIGINT, previous)
    out.print(Text(f"sweep {sweep_name}: {counts_text(counts)}"))
    rows = sweep_rows(store.sweep_runs(sweep_name))
    table = Table(
        title=Text(f"sweep {sweep_name} (best epoch on validation; test accuracies in %)"),
        title_justify="left",
    )
    for col in ("id", "run", "seed", "status", "test SA", "test AA (PGD)"):
        table.add_column(col, justify="left" if col in {"run", "status"} else "right")
    for row in rows:
        r = row.run
        table.add_row(
            str(r.id),
            Text(row.label),
            _fmt(row.seed),
            _status_text(r.status),
            pct(r.best_test_clean),
            pct(r.best_test_adv),
        )
    out.print(table)
    # Judged by this call's grid: the other half of a sweep, or its history, is not ours.
    mine = set(new) | set(held)
    code = max((EXIT_CODES.get(r.run.status, 0) for r in rows if r.run.id in mine), default=0)
    if stop["asked"]:
        out.print(Text(f"stopped; resume with: {again}"))
    elif code:
        out.print(Text(f"to queue the runs that did not finish again: {again}"))
    out.print(Text(f"the SA-AA front: caat front --sweep {shlex.quote(sweep_name)}"))
    raise typer.Exit(130 if stop["asked"] else code)


def check_runnable(cfg: RunConfig) -> None:
    """Fail early (no store write) when the data or the device is missing."""
    from caat_app.data.splits import ensure_available
    from caat_app.training.device import resolve_device

    resolve_device(cfg.device)
    ensure_available(
        cfg.dataset, root=Path(cfg.data_dir) if cfg.data_dir else None, download=cfg.download
    )


def start_runs(
    configs: list[RunConfig], *, db: str | None, detach: bool = False
) -> tuple[Store, list[int], list[str]]:
    """Check, record, then train each config here (or hand it to a worker).

    Returns the store, the run ids and the final statuses (none when detached).
    Everything that can be wrong with the input is found before the store is touched.
    """
    for cfg in configs:
        check_runnable(cfg)
    store = open_store(db)
    ids = [create_run(store, cfg) for cfg in configs]
    if detach:
        from caat_app.runs.launcher import Scheduler, list_gpus

        # Claimed through the store like a dashboard's launches (so no run starts twice),
        # but now: asking for a detached run is asking to start it, whatever else runs.
        unlimited = Scheduler(
            store, gpus=list_gpus(), per_gpu=10**6, max_cpu=10**6, share_cores=False
        )
        unlimited.dispatch(only=ids)
        for run_id in ids:
            run = store.get_run(run_id)
            assert run is not None
            out.print(Text(f"run {run_id} ({run.name}) started in worker pid {run.pid}"))
            out.print(Text(f"  log: {Path(run.run_dir) / 'worker.log'}"))
        out.print(Text("follow it with: caat runs, caat show RUN, caat cancel RUN"))
        return store, ids, []
    statuses: list[str] = []
    for run_id in ids:
        statuses.append(train_foreground(store, run_id))
        if statuses[-1] == "cancelled":  # Ctrl-C: the runs not started yet are cancelled too
            for later in ids[len(statuses) :]:
                store.finish(later, RunStatus.CANCELLED)
            break
    results_table([store.find_run(str(i)) for i in ids[: len(statuses)]])
    return store, ids, statuses


def train_foreground(store: Store, run_id: int) -> str:
    """Train in this process with a live progress bar; Ctrl-C cancels cleanly."""
    from caat_app.cli.progress import ProgressSink
    from caat_app.runs.worker import StopFlag, execute_run

    run = store.get_run(run_id)
    assert run is not None
    out.print(Text(f"run {run_id} ({run.name}) in {store.url}"))
    flag = StopFlag()
    previous = signal.signal(signal.SIGINT, flag.set)
    try:
        with ProgressSink(out, run.name, run.epochs_total) as progress:
            status = execute_run(store, run_id, flag, progress)
    finally:
        signal.signal(signal.SIGINT, previous)
    out.print(Text(f"run {run_id} {status}", style=STATUS_STYLE.get(status, "")))
    return status


# --------------------------------------------------------------------------- inspect


@app.command()
def tui(
    db: str | None = DbOption, per_gpu: int = PerGpuOption, max_cpu: int = MaxCpuOption
) -> None:
    """The dashboard (the same as `caat` with no command)."""
    open_dashboard(db, per_gpu=per_gpu, max_cpu=max_cpu)


@app.command()
def runs(
    db: str | None = DbOption,
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
    limit: int | None = typer.Option(None, min=1, help="newest N runs"),
) -> None:
    """List the runs in the store, newest first."""
    store = open_store(db)
    rows = store.list_runs(limit=limit)
    if as_json:
        print(json.dumps([run_record(r) for r in rows], indent=2))
        return
    if not rows:
        out.print(Text(f"no runs in {store.url} yet: try `caat demo` or `caat train`"))
        return
    table = Table(
        title=Text(f"runs in {store.url} (SA/AA: best epoch on validation, %)"),
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    for col in ("id", "name", "status", "method", "data", "ε", "epoch", "SA", "AA", "φ", "μ"):
        left = col in {"name", "status", "method", "data"}
        table.add_column(
            col,
            justify="left" if left else "right",
            no_wrap=col != "name",
            min_width=12 if col == "name" else None,
        )
    for r in rows:
        table.add_row(
            str(r.id),
            Text(r.name),
            _status_text(r.status),
            Text(_method_text(r)),
            Text(f"{r.dataset}/{r.model}"),
            _fmt(r.eps, 3),
            f"{r.epochs_done}/{r.epochs_total}",
            pct(r.best_val_clean),
            pct(r.best_val_adv),
            _fmt(r.last_phi, 2),
            _fmt(r.last_mu, 2),
        )
    out.print(table)


def show_run(run: Run) -> None:
    table = Table(title=Text(f"run {run.id}: {run.name}"), title_justify="left", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    table.add_row("status", _status_text(run.status))
    for key in (
        "method",
        "dataset",
        "model",
        "eps",
        "epochs_done",
        "epochs_total",
        "steps_done",
        "nonfinite_steps",
        "best_epoch",
    ):
        table.add_row(key, Text(_fmt(getattr(run, key))))
    for key in (
        "best_val_clean",
        "best_val_adv",
        "best_test_clean",
        "best_test_adv",
        "last_val_clean",
        "last_val_adv",
        "last_test_clean",
        "last_test_adv",
        "last_phi",
        "last_mu",
    ):
        table.add_row(key, Text(_fmt(getattr(run, key))))
    for key in ("created_at", "started_at", "finished_at", "heartbeat_at"):
        value = getattr(run, key)
        table.add_row(key, Text(value.isoformat(timespec="seconds") if value else "-"))
    table.add_row("run_dir", Text(run.run_dir))
    out.print(table)
    cfg = Table(title="config", title_justify="left", show_header=False)
    cfg.add_column("option", style="bold")
    cfg.add_column("value")
    for key, value in json.loads(run.config).items():
        cfg.add_row(key, Text(_fmt(value) if value is not None else "-"))
    out.print(cfg)
    if run.error:
        out.print(Text("error:", style="bold red"))
        out.print(Text(run.error))


@app.command()
def show(
    run: str = typer.Argument(..., help="run id or name"),
    db: str | None = DbOption,
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
) -> None:
    """A run's status, config and final metrics, and every evaluation stored for it."""
    from caat_app.evaluation.tables import tables_from_results

    store = open_store(db)
    record = store.find_run(run)
    assert record.id is not None
    tables = tables_from_results(store.evals(record.id))
    jobs = store.eval_jobs(record.id, active=True)
    if as_json:
        evaluating = [
            job.model_dump(mode="json", include={"id", "status", "done", "total", "current"})
            | {"spec": json.loads(job.spec)}
            for job in jobs
        ]
        print(
            json.dumps(
                run_record(record)
                | {"evaluations": [t.to_json() for t in tables], "evaluating": evaluating},
                indent=2,
            )
        )
        return
    show_run(record)
    for table in tables:
        out.print(
            Text(
                f"evaluation: {table.checkpoint} checkpoint ({table.weights or '?'}), "
                f"{table.norm}, measured in {table.seconds:.0f} s"
            )
        )
        _eval_tables([(record, table)])
    for job in jobs:
        now = f", now {job.current}" if job.current else ""
        out.print(Text(f"evaluation {job.id} {job.status}: {job.done}/{job.total} measured{now}"))
        out.print(Text(f"  {describe_spec(job.spec)}; `caat cancel --eval {job.id}` stops it"))


def _ordered(row: dict[str, Any], key: str) -> dict[str, Any]:
    """The series' own key first, so a CSV reads naturally."""
    return {"run_id": row.pop("run_id"), key: row.pop(key), **row}


def _rows_csv(rows: Iterable[dict[str, Any]]) -> str:
    rows = list(rows)
    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return buf.getvalue()


@app.command()
def export(
    run: str = typer.Argument(..., help="run id or name"),
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
    steps = [_ordered(s.model_dump(), "step") for s in store.steps(record.id)]
    epochs = [_ordered(e.model_dump(), "epoch") for e in store.epochs(record.id)]
    if fmt == "json":
        text = json.dumps({"run": run_record(record), "steps": steps, "epochs": epochs})
    else:
        text = _rows_csv(steps if series == "steps" else epochs)
    if output is None:
        sys.stdout.write(text)
    else:
        try:
            output.write_text(text)
        except OSError as exc:
            raise CaatError(f"cannot write {output}: {exc.strerror or exc}") from None
        err.print(Text(f"wrote {output}"))


@app.command()
def cancel(
    run: str | None = typer.Argument(None, help="run id or name"),
    eval_job: int | None = typer.Option(
        None, "--eval", help="an evaluation job instead (the id `caat eval --detach` printed)"
    ),
    db: str | None = DbOption,
) -> None:
    """Stop a run (its worker checkpoints, ends `cancelled`) or, with --eval, an evaluation."""
    from caat_app.runs.manage import cancel_eval, cancel_run

    if (run is None) == (eval_job is None):
        raise CaatError("name a run, or an evaluation with --eval JOB (not both)")
    store = open_store(db)
    if eval_job is not None:
        job = store.get_eval_job(eval_job)
        if job is None:
            raise CaatError(f"no evaluation {eval_job} in {store.url}")
        cancel_eval(store, job)
        out.print(Text(f"asked evaluation {eval_job} to stop; what it measured stays stored"))
        return
    assert run is not None
    record = store.find_run(run)
    cancel_run(store, record)
    out.print(Text(f"asked run {record.id} to stop"))


@app.command(name="compare")
def compare_command(
    runs: list[str] = typer.Argument(..., help="two or more run ids or names"),
    show_all: bool = typer.Option(False, "--all", help="also list the options that are equal"),
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
    db: str | None = DbOption,
) -> None:
    """Runs side by side: the options that differ, and the metrics each reached."""
    from caat_app.analysis.compare import compare

    if len(runs) < 2:
        raise CaatError("compare needs two or more runs")
    store = open_store(db)
    records = [store.find_run(ref) for ref in runs]
    data = compare(records)
    if as_json:
        print(json.dumps(data, indent=2))
        return
    table = Table(title="config (differences highlighted)", title_justify="left")
    table.add_column("option", style="bold")
    for r in records:
        table.add_column(Text(f"{r.id}: {r.name}"), justify="right")
    equal = 0
    for row in data["config"]:
        if not row["differs"] and not show_all:
            equal += 1
            continue
        style = "bold yellow" if row["differs"] else ""
        table.add_row(row["option"], *[Text(_fmt(v), style=style) for v in row["values"]])
    out.print(table)
    if equal:
        out.print(Text(f"{equal} options are equal in every run (--all lists them)"))
    metrics = Table(title="metrics (accuracies in %)", title_justify="left")
    metrics.add_column("metric", style="bold")
    for r in records:
        metrics.add_column(Text(f"{r.id}: {r.name}"), justify="right")
    for row in data["metrics"]:
        percent = "SA" in row["metric"] or "AA" in row["metric"]
        cells = [
            _status_text(v) if row["key"] == "status" else (pct(v) if percent else _fmt(v, 3))
            for v in row["values"]
        ]
        metrics.add_row(row["metric"], *cells)
    out.print(metrics)


@app.command()
def front(
    sweep: str | None = typer.Option(None, help="only the runs of this sweep"),
    filter_text: str | None = typer.Option(
        None, "--filter", help="only runs matching this text (as the dashboard's filter)"
    ),
    split: str = typer.Option("test", help="accuracies of the test or the val split"),
    attack: str | None = typer.Option(
        None,
        help="AA from `caat eval` results of this attack (e.g. autoattack), not training's PGD",
    ),
    eps: str | None = typer.Option(None, help="with --attack: its budget (default: the runs' ε)"),
    norm: str = typer.Option("linf", help="with --attack: linf or l2"),
    checkpoint: str = typer.Option("best", help="with --attack: best or last"),
    ref: str = typer.Option("0,0", help="hypervolume reference point SA,AA in [0, 1]"),
    plot: Path | None = typer.Option(None, "--plot", help="write a figure: .png, .svg or .pdf"),
    csv_path: Path | None = typer.Option(None, "--csv", help="write the points as CSV"),
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
    db: str | None = DbOption,
) -> None:
    """The SA-AA front of finished runs: points, each family's front, hypervolume, verdict.

    AA is the per-epoch PGD accuracy of training's best epoch, or with --attack the
    accuracy `caat eval` measured (SA then from the same evaluated images).
    """
    from caat_app.analysis.front import POINT_COLUMNS, point_cells, report
    from caat_app.analysis.points import SPLITS, axis_labels, points_from_runs

    if split not in SPLITS:
        raise CaatError(f"--split: unknown {split!r}; choose one of {', '.join(SPLITS)}")
    try:
        ref_point = tuple(float(x) for x in ref.split(","))
    except ValueError:
        ref_point = ()
    if len(ref_point) != 2 or not all(0 <= x <= 1 for x in ref_point):
        raise CaatError(f"--ref: expected SA,AA with both in [0, 1], got {ref!r}")
    if sweep and filter_text:
        raise CaatError("give --sweep or --filter, not both")
    if plot is not None and plot.suffix.lower() not in {".png", ".svg", ".pdf"}:
        raise CaatError(f"--plot: {plot.name} is not .png, .svg or .pdf")
    if attack is None and eps is not None:
        raise CaatError("--eps chooses the budget of an evaluated --attack; give --attack too")
    store = open_store(db)
    runs = store.sweep_runs(sweep) if sweep else store.list_runs(search=filter_text)
    finished = [r for r in runs if r.status == "finished"]
    if attack is None:
        points = points_from_runs(finished, split=split)
        sa_label, aa_label = axis_labels(finished, split=split) if finished else ("SA", "AA")
        rep = report(points, ref=ref_point)  # type: ignore[arg-type]
        rep["axes"] = {"sa": sa_label, "aa": aa_label, "split": split}
    else:
        rep, sa_label, aa_label = _eval_front(
            store, sweep, finished, attack, eps, norm, checkpoint, ref_point
        )
    if plot is not None:
        from caat_app.analysis.figure import save_front_figure

        try:
            save_front_figure(
                rep,
                plot,
                sa_label=sa_label,
                aa_label=aa_label,
                title=f"SA-AA front: {sweep}" if sweep else None,
            )
        except OSError as exc:
            raise CaatError(f"cannot write {plot}: {exc.strerror or exc}") from None
        err.print(Text(f"wrote {plot}"))
    if csv_path is not None:
        rows = [
            {
                "family": p["family"],
                "label": p["label"],
                "sa": p["sa"],
                "aa": p["aa"],
                "sa_std": p["sa_std"],
                "aa_std": p["aa_std"],
                "seeds": p["seeds"],
                "runs": " ".join(str(i) for i in p["run_ids"]),
            }
            for p in rep["points"]
        ]
        try:
            csv_path.write_text(_rows_csv(rows))
        except OSError as exc:
            raise CaatError(f"cannot write {csv_path}: {exc.strerror or exc}") from None
        err.print(Text(f"wrote {csv_path}"))
    if as_json:
        print(json.dumps(rep, indent=2))
        return
    scope = f"AA: {rep['axes']['attack']}" if attack else f"{split} split"
    table = Table(title=Text(f"SA-AA points ({scope}, %)"), title_justify="left")
    for col in POINT_COLUMNS:
        table.add_column(col, justify="left" if col in {"family", "setting", "runs"} else "right")
    for p in rep["points"]:
        table.add_row(*[Text(cell) for cell in point_cells(p)])
    out.print(table)  # which points make each front is its "on front" column
    for sentence in rep["verdict"]:
        out.print(Text(sentence))


def _eval_front(
    store: Store,
    sweep: str | None,
    finished: list[Run],
    attack: str,
    eps: str | None,
    norm: str,
    checkpoint: str,
    ref_point: tuple[float, ...],
) -> tuple[dict[str, Any], str, str]:
    """The front with AA from stored evaluations; runs without one are named, not hidden."""
    from caat_app.analysis.front import report
    from caat_app.analysis.points import EvalAxis, eval_axis_labels, points_from_evals
    from caat_app.evaluation.plan import eval_spec

    budgets = {json.loads(r.config).get("eps") for r in finished}
    if eps is None and len(budgets) > 1:
        raise CaatError("--eps: these runs were trained at different ε; say which budget")
    spec = eval_spec(
        attacks=attack,
        budgets=eps or [budgets.pop() if budgets else 1.0],
        norm=norm,
        checkpoint=checkpoint,
    )
    axis = EvalAxis(spec.attacks[0], spec.budgets[0], spec.norm, spec.checkpoint)
    results = store.evals_of_runs([r.id for r in finished if r.id is not None])
    points, missing = points_from_evals(finished, results, axis)
    options = f"--attacks {axis.attack} --eps {format_budget(axis.eps)} --norm {axis.norm}"
    if finished and not points:
        which = f"--sweep {sweep}" if sweep else str(finished[0].id)
        raise CaatError(
            f"no run here was evaluated with {axis.text}; run `caat eval` on them first "
            f"(e.g. caat eval {which} {options})"
        )
    if missing:
        err.print(
            Text(
                f"{len(missing)} run(s) left out, never evaluated with {axis.text}: "
                + " ".join(map(str, missing))
                + f" (caat eval {' '.join(map(str, missing))} {options})"
            )
        )
    samples = [r.samples for p in points for r in results[p.run_id] if axis.matches(r)]
    sa_label, aa_label = eval_axis_labels(axis, samples)
    rep = report(points, ref=ref_point)  # type: ignore[arg-type]
    rep["axes"] = {"sa": sa_label, "aa": aa_label, "attack": axis.text, "missing": missing}
    return rep, sa_label, aa_label


@app.command(name="eval")
def eval_command(
    runs: list[str] | None = typer.Argument(
        None, help="run ids or names; several print side by side"
    ),
    sweep: str | None = typer.Option(
        None, help="also every finished run of this sweep (for `caat front --attack`)"
    ),
    attacks: str = typer.Option(
        ",".join(DEFAULT_EVAL_ATTACKS),
        help=f"comma list of {', '.join(EVAL_ATTACKS)}. Quote AutoAttack's number: a point "
        "counts as robust only if every attack of its ensemble fails on it. pgd also runs "
        "two probes for the masking report (pgd-100, and pgd at 4× the largest ε)",
    ),
    eps: str = typer.Option(
        "", help="comma list of budgets, e.g. 8/255,16/255 (default: the run's own)"
    ),
    norm: str = typer.Option("linf", help="linf or l2"),
    n: int = typer.Option(1000, help="first N test images, stratified and fixed (0: all)"),
    checkpoint: str = typer.Option("best", help="best (chosen on validation) or last"),
    force: bool = typer.Option(False, "--force", help="measure again what the store has"),
    as_table: bool = typer.Option(
        False, "--table", help="the paper's layout: attacks × budgets, SA first (the default)"
    ),
    as_json: bool = typer.Option(False, "--json", help="one record per attack and budget"),
    csv_out: bool = typer.Option(False, "--csv", help="CSV on stdout"),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N"),
    detach: bool = typer.Option(False, "--detach", help="evaluate in a worker, return now"),
    db: str | None = DbOption,
) -> None:
    """Robust accuracy of saved runs under the attack zoo, with a gradient-masking report.

    Results are stored; an identical evaluation later is read back, not measured again.
    """
    from caat_app.evaluation.plan import eval_spec
    from caat_app.evaluation.tables import build_table

    if as_table + as_json + csv_out > 1:
        raise CaatError("give one of --table, --json and --csv")
    check = {"attacks": attacks, "norm": norm, "n": n, "checkpoint": checkpoint}
    eval_spec(budgets=eps or "1", force=force, device=device, **check)  # fail before the store
    if not runs and sweep is None:
        raise CaatError("name the runs to evaluate, or --sweep NAME")
    store = open_store(db)
    records = [store.find_run(ref) for ref in runs or []]
    if sweep is not None:
        records += _finished_of_sweep(store, sweep)
    records = list({r.id: r for r in records}.values())  # a run named twice is measured once
    specs = [
        eval_spec(budgets=eps or [json.loads(r.config)["eps"]], force=force, device=device, **check)
        for r in records
    ]
    if detach:
        from caat_app.runs import launcher
        from caat_app.runs.manage import start_eval

        # Every run gets its worker now; on the CPU they share the cores, as a sweep's do.
        on_cpu = device == "cpu" or (device == "auto" and not launcher.list_gpus())
        env = launcher.cpu_share(len(records)) if on_cpu and len(records) > 1 else {}
        launch = partial(launcher.launch_eval_worker, env=env)
        for record, spec in zip(records, specs, strict=True):
            job = start_eval(store, record, spec, launch=launch)
            out.print(Text(f"evaluation {job} of run {record.id} ({record.name}) started"))
            out.print(Text(f"  log: {launcher.eval_log(Path(record.run_dir), job)}"))
        out.print(
            Text("`caat show RUN` and the dashboard show its table; `caat cancel --eval JOB` stops")
        )
        return
    report: list[dict[str, Any]] = []
    tables = []
    for record, spec in zip(records, specs, strict=True):
        status, rows = eval_foreground(store, record, spec)
        if status != "finished":
            raise typer.Exit(EXIT_CODES.get(status, 1))
        table = build_table(rows, attacks=spec.attacks, budgets=spec.budgets)
        tables.append((record, table))
        report.append(
            {
                "run": record.id,
                "name": record.name,
                "checkpoint": spec.checkpoint,
                "norm": spec.norm,
                "samples": table.samples,
                "clean": table.clean,
                "results": [r for r in rows if r["attack"] != "clean" and not r["probe"]],
                "probes": [r for r in rows if r["probe"]],
                "masking": table.to_json()["masking"],
                "batch_dependent": json.loads(record.config).get("bn") == "batchstats",
            }
        )
    if as_json:
        print(json.dumps(report if len(report) > 1 else report[0], indent=2))
    elif csv_out:
        sys.stdout.write(
            _rows_csv(
                {"run": r["run"], **{k: v for k, v in row.items() if k != "settings"}}
                for r in report
                for row in r["results"] + r["probes"]
            )
        )
    else:
        _eval_tables(tables)


def _finished_of_sweep(store: Store, sweep: str) -> list[Run]:
    runs = store.sweep_runs(sweep)
    if not runs:
        raise CaatError(f"--sweep: no sweep named {sweep!r}")
    finished = [r for r in runs if r.status == RunStatus.FINISHED.value]
    if not finished:
        raise CaatError(f"--sweep: no run of {sweep!r} has finished yet")
    return finished


def eval_foreground(store: Store, record: Run, spec: Any) -> tuple[str, list[dict[str, Any]]]:
    """Evaluate in this process as a worker would, with a live bar; Ctrl-C stops cleanly."""
    from rich.progress import TimeElapsedColumn

    from caat_app.cli.progress import LiveBar
    from caat_app.evaluation.plan import plan
    from caat_app.runs.worker import StopFlag, execute_eval

    assert record.id is not None
    total = len(plan(spec))
    job_id = store.create_eval_job(record.id, spec.to_json(), total=total)
    flag = StopFlag()
    label = f"run {record.id} ({record.name})"
    bar: Any = None

    def quit_now(*_: Any) -> None:
        # The attack runs in a thread that cannot be interrupted; leaving the interpreter
        # under it would abort, so the job is recorded and the process ends at once.
        store.finish_eval_job(job_id, RunStatus.CANCELLED)
        if bar is not None:
            bar.progress.stop()
        err.print(Text(f"evaluation of {label} cancelled; what it measured is stored"))
        sys.stderr.flush()
        os._exit(EXIT_CODES["cancelled"])

    def on_sigint(*_: Any) -> None:
        flag.set()
        signal.signal(signal.SIGINT, quit_now)  # a second Ctrl-C: now
        if bar is not None:  # an attack can take a while: say that the stop was heard
            bar.progress.update(bar.task, live="stopping after this batch (Ctrl-C again: now)")

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        with LiveBar(err, label, total, TimeElapsedColumn()) as bar:

            def started(index: int, total: int, measurement: Any) -> None:
                bar.progress.update(bar.task, completed=index, live=measurement.label)

            def finished(row: dict[str, Any]) -> None:
                bar.progress.advance(bar.task)
                if row["attack"] != "clean":
                    where = "stored" if row["cached"] else f"{row['seconds']:.1f} s"
                    probe = "probe " if row["probe"] else ""
                    text = f"  {probe}{row['attack']} at ε={format_budget(row['eps'])}: "
                    bar.progress.console.print(
                        Text(f"{text}{100 * row['accuracy']:.1f}% ({where})")
                    )

            status, rows = execute_eval(store, job_id, flag, started, finished)
    finally:
        signal.signal(signal.SIGINT, previous)
    if status != "finished":
        err.print(Text(f"evaluation of {label} {status}; what it measured is stored"))
    return status, rows


def _eval_tables(tables: list[tuple[Run, Any]]) -> None:
    """The paper's layout, attacks as columns and budgets as rows, runs side by side."""
    from caat_app.evaluation.tables import report_lines

    several = len(tables) > 1
    attacks = list(dict.fromkeys(a for _, t in tables for a in t.attacks))
    budgets = sorted({e for _, t in tables for e in t.budgets})
    samples = sorted({t.samples for _, t in tables})
    if several:
        title = f"accuracy in % on {', '.join(map(str, samples))} test images, runs side by side"
    else:
        record = tables[0][0]
        title = f"run {record.id} ({record.name}): accuracy in % on {samples[0]} test images"
    out.print(Text(title))
    if budgets:
        table = Table()
        table.add_column("ε")
        if several:
            table.add_column("run")
        table.add_column("SA", justify="right")
        for name in attacks:
            table.add_column(name, justify="right")
        for i, budget in enumerate(budgets):
            mine = [(r, t) for r, t in tables if budget in t.budgets]
            for j, (record, t) in enumerate(mine):
                cells = [pct(t.cell(a, budget)) for a in attacks]
                who = [Text(f"{record.id} {record.name}")] if several else []
                table.add_row(
                    format_budget(budget) if j == 0 else "",
                    *who,
                    pct(t.clean),
                    *cells,
                    end_section=several and j == len(mine) - 1 and i < len(budgets) - 1,
                )
        out.print(table)
    for record, t in tables:
        batchstats = json.loads(record.config).get("bn") == "batchstats"
        for k, (line, _) in enumerate(report_lines(t, batchstats=batchstats)):
            lead = f"run {record.id} ({record.name}): " if several and k == 0 else ""
            out.print(Text(lead + line))


@app.command()
def rename(
    run: str = typer.Argument(..., help="run id or name"),
    name: str = typer.Argument(..., help="the new name"),
    db: str | None = DbOption,
) -> None:
    """Give a run a new name."""
    store = open_store(db)
    record = store.find_run(run)
    assert record.id is not None
    out.print(Text(f"run {record.id} is now {_store_edit(store.rename_run, record.id, name)}"))


@app.command()
def tag(
    run: str = typer.Argument(..., help="run id or name"),
    tags: list[str] = typer.Argument(None, help="tags (none: remove every tag)"),
    db: str | None = DbOption,
) -> None:
    """Set a run's tags (they are searched by the dashboard's filter)."""
    store = open_store(db)
    record = store.find_run(run)
    assert record.id is not None
    kept = _store_edit(store.set_tags, record.id, tags or [])
    out.print(Text(f"run {record.id} tags: {', '.join(kept) or '(none)'}"))


@app.command()
def note(
    run: str = typer.Argument(..., help="run id or name"),
    text: str = typer.Argument(..., help="the note ('-' reads it from stdin)"),
    db: str | None = DbOption,
) -> None:
    """Attach a note to a run (replaces the one it had)."""
    store = open_store(db)
    record = store.find_run(run)
    assert record.id is not None
    _store_edit(store.set_notes, record.id, sys.stdin.read() if text == "-" else text)
    out.print(Text(f"run {record.id}: note saved"))


@app.command()
def delete(
    run: str = typer.Argument(..., help="run id or name"),
    yes: bool = typer.Option(False, "--yes", "-y", help="do not ask"),
    db: str | None = DbOption,
) -> None:
    """Delete a finished run: its metrics and its folder."""
    from caat_app.runs.manage import delete_run

    store = open_store(db)
    record = store.find_run(run)
    if not yes and not typer.confirm(f"Delete run {record.id} ({record.name}) and its folder?"):
        raise typer.Exit(1)
    folder = delete_run(store, record)
    out.print(Text(f"run {record.id} deleted" + (f", and {folder}" if folder else "")))


def _store_edit(method: Any, run_id: int, value: Any) -> Any:
    """The store refuses bad names and tags with a ValueError: a one-line CLI error."""
    try:
        return method(run_id, value)
    except ValueError as exc:
        raise CaatError(str(exc)) from None


# --------------------------------------------------------------------------- demo, bench


@app.command()
def demo(
    epochs: int = typer.Option(30, min=1, help="epochs per run"),
    db: str | None = DbOption,
) -> None:
    """Train Vanilla AT (λ=0.5) and CA-AT (γ=0.8) on digits at ε=0.3 and compare them."""
    configs = [
        build_config({"method": "vanilla", "lam": 0.5, "epochs": epochs, "name": "demo-vanilla"}),
        build_config({"method": "caat", "gamma": 0.8, "epochs": epochs, "name": "demo-caat"}),
    ]
    store, ids, statuses = start_runs(configs, db=db)
    first, second = ids
    out.print(
        Text(
            f"Open them: `caat show {first}`, `caat show {second}`, "
            f"`caat export {second} --format csv`, `caat runs` for every run, `caat eval "
            f"{first} {second} --attacks pgd,autoattack` for their robustness side by side, or "
            f"`caat` for the dashboard (store: {store.url})."
        )
    )
    raise typer.Exit(max(EXIT_CODES.get(status, 0) for status in statuses))


def results_table(records: list[Run]) -> None:
    """Runs side by side: their best epoch on validation, accuracies in %."""
    table = Table(title="results (best epoch on validation; accuracies in %)", title_justify="left")
    table.add_column("")
    for r in records:
        table.add_column(Text(f"{r.id}: {_method_text(r)}"), justify="right")
    rows = [
        ("status", lambda r: _status_text(r.status)),
        ("best epoch", lambda r: _fmt(r.best_epoch)),
        ("val SA", lambda r: pct(r.best_val_clean)),
        ("val AA (PGD)", lambda r: pct(r.best_val_adv)),
        ("test SA", lambda r: pct(r.best_test_clean)),
        ("test AA (PGD)", lambda r: pct(r.best_test_adv)),
        ("last φ", lambda r: _fmt(r.last_phi, 3)),
        ("last μ", lambda r: _fmt(r.last_mu, 3)),
    ]
    for label, get in rows:
        table.add_row(label, *[get(r) for r in records])
    out.print(table)


@app.command()
def bench(
    model: str = typer.Option("cnn", help="model to time"),
    batch_size: int = typer.Option(128, min=2),
    attack_steps: int = typer.Option(10, min=1),
    steps: int = typer.Option(30, min=5, help="timed steps per repeat"),
    repeats: int = typer.Option(5, min=1, help="interleaved repeats (the median is reported)"),
    device: str = typer.Option("auto"),
    eval_n: int = typer.Option(200, min=10, help="test images of the evaluation line"),
    eval_epochs: int = typer.Option(10, min=1, help="epochs trained before it is attacked"),
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
) -> None:
    """Per-step time of clean training, Vanilla AT and CA-AT, the cost of logging, the
    evaluation's images per second (PGD-20, fast AutoAttack) and the dashboard's start-up."""
    from caat_app.bench.evaluation import eval_bench
    from caat_app.bench.startup import dashboard_startup
    from caat_app.bench.training import run_bench
    from caat_app.cli.bench import print_report

    report = run_bench(
        model=model,
        batch_size=batch_size,
        attack_steps=attack_steps,
        steps=steps,
        repeats=repeats,
        device=device,
    )
    report["evaluation"] = eval_bench(n=eval_n, epochs=eval_epochs, device=device)
    report["dashboard_start"] = dashboard_startup(repeats=repeats)
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        print_report(out, report)


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
