"""`caat train`, `caat sweep`, `caat demo`: commands that start training.

The training stack (torch and all) is imported inside the functions that train, so
loading this module costs the other commands nothing. Everything that can be wrong
with the input is found before the store is touched.
"""

from __future__ import annotations

import shlex
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.text import Text

from caat_app.cli.base import EXIT_CODES, err, open_store, out
from caat_app.cli.options import DbOption, JsonOption, run_options
from caat_app.cli.render import results_table, sweep_table
from caat_app.errors import ConfigError
from caat_app.present import STATUS_STYLE, format_budget, visible
from caat_app.runs.manage import create_run
from caat_storage import RunStatus, resolve_db_url

if TYPE_CHECKING:
    from caat_app.config import RunConfig
    from caat_storage import Store


@run_options("train")
def train(
    config: Path | None = typer.Option(None, "--config", help="TOML file of these options"),
    db: str | None = DbOption,
    detach: bool = typer.Option(False, "--detach", help="train in a worker process, return now"),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="print the resolved config and where each value comes from"
    ),
    as_json: bool = JsonOption,
    **run: Any,
) -> None:
    """Train one run (Vanilla AT or CA-AT) and stream its metrics into the store."""
    from caat_app.config import load_config_file, resolve_config

    file_values = load_config_file(config) if config is not None else {}
    cfg, origins = resolve_config(run, file_values)
    if dry_run:
        _print_resolved(cfg, origins, as_json=as_json)
        return
    _, ids, statuses = start_runs([cfg], db=db, detach=detach)
    if statuses:
        out.print(Text(f"config, times and more: caat show {ids[0]}"))
        raise typer.Exit(EXIT_CODES.get(statuses[0], 0))


def _print_resolved(cfg: RunConfig, origins: dict[str, str], *, as_json: bool) -> None:
    """What `--dry-run` shows: every field, its value and its origin; nothing is stored."""
    import json

    from rich.table import Table

    from caat_app.config import command_line

    if as_json:
        data = {"config": cfg.model_dump(mode="json"), "origins": origins}
        print(json.dumps(data | {"command": command_line(cfg)}, indent=2))
        return
    table = Table("option", "value", "from", title="resolved config (nothing stored)")
    for name, origin in origins.items():
        value = getattr(cfg, name)
        shown = format_budget(value) if name in {"eps", "alpha"} and value is not None else value
        if name == "momentum" and cfg.schedule == "cosinew":
            shown, origin = "0.95 → 0.85 → 0.95", "schedule cosinew cycles it (not --momentum)"
        table.add_row(name, Text(str(shown)), Text(origin))
    out.print(table)
    out.print(Text(f"to run it: {command_line(cfg)}"))


def demo(
    epochs: int = typer.Option(30, min=1, help="epochs per run"),
    db: str | None = DbOption,
) -> None:
    """Train Vanilla AT (λ=0.5) and CA-AT (γ=0.8) on digits at ε=0.3 and compare them."""
    from caat_app.config import build_config

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


# --------------------------------------------------------------------------- sweep

CONFIRM_ABOVE = 1000
"""A grid of more runs than this is queued only when a person confirms it (or `--yes`)."""


def confirm_size(count: int, what: str, *, yes: bool, prompt_on_stderr: bool = False) -> None:
    """Ask before queueing more than CONFIRM_ABOVE runs: one value too many in a list
    (`--seeds` spelled out to 999) should cost a question, not a thousand queued runs.

    Without a terminal to ask on it refuses (ConfigError: one line, exit 2); a person
    who declines gets exit code 1. Either way nothing has been queued.
    """
    if yes or count <= CONFIRM_ABOVE:
        return
    if not sys.stdin.isatty():
        raise ConfigError(
            f"{what} has {count} runs, over {CONFIRM_ABOVE}: pass --yes to queue them all"
        )
    say = err if prompt_on_stderr else out  # not click's prompt: it writes to stdout
    say.print(Text(f"{what} has {count} runs; queue them all? [y/N] "), end="")
    if sys.stdin.readline().strip().lower() not in {"y", "yes"}:
        say.print(Text("nothing queued"))
        raise typer.Exit(1)


SlurmOption = typer.Option(
    None,
    "--slurm",
    help="submit the queued runs as a Slurm job array instead, e.g. "
    "partition=gpu,time=12:00:00,gpus-per-task=1",
)


@run_options("sweep", lead=("name",))
def sweep_command(
    name: str = typer.Option(..., "--name", help="the sweep; the same name again adds to it"),
    config: Path | None = typer.Option(None, "--config", help="TOML file (lists are swept)"),
    db: str | None = DbOption,
    jobs: int = typer.Option(1, "--jobs", min=1, help="runs of the sweep at once"),
    detach: bool = typer.Option(False, "--detach", help="only queue the runs; start nothing"),
    resume: bool = typer.Option(False, "--resume", help="run again what the sweep lacks"),
    yes: bool = typer.Option(
        False, "--yes", help=f"queue a grid of over {CONFIRM_ABOVE} runs without asking"
    ),
    slurm: str | None = SlurmOption,
    **run: Any,
) -> None:
    """Train a grid (lists like --lam 0,0.5,1 times --seeds 0,1) as one sweep, in workers.

    A sweep is resumable: runs already finished, queued or running are never added
    again, and failed or cancelled ones continue from their checkpoint (or start anew
    when they have none). A grid of over 1000 runs is queued only when confirmed.
    """
    from caat_app.runs.sweep import check_sweep, plan_sweep, sweep_rows

    seeds = run.pop("seeds")
    sweep_name = check_sweep(name)
    again = f"caat sweep --name {shlex.quote(sweep_name)} --resume" + (
        f" --db {shlex.quote(db)}" if db else ""
    )
    if resume:
        store, configs = _resumed(sweep_name, run, seeds=seeds, config=config, db=db)
    else:
        configs = _grid(sweep_name, run, seeds=seeds, config=config)
        confirm_size(len(configs), f"sweep {sweep_name}'s grid", yes=yes)
        store = open_store(db)
    new, held = plan_sweep(store, sweep_name, configs)
    out.print(
        Text(
            f"sweep {sweep_name} in {store.url}: {len(new) + len(held)} runs in this grid, "
            f"{len(new)} queued now, {len(held)} already finished, queued or running"
        )
    )
    for run_id in new:
        record = store.get_run(run_id)
        out.print(Text(f"  + {run_id} {visible(record.name) if record else ''}"))
    if detach:
        out.print(Text(f"start them with `{again}` (or from the dashboard)"))
        return
    if slurm is not None:
        _submit(store, sweep_name, slurm)
        return
    stopped = _work_through(store, sweep_name, jobs=jobs)
    rows = sweep_rows(store.sweep_runs(sweep_name))
    out.print(sweep_table(sweep_name, rows))
    # Judged by this call's grid: the other half of a sweep, or its history, is not ours.
    mine = set(new) | set(held)
    code = max((EXIT_CODES.get(r.run.status, 0) for r in rows if r.run.id in mine), default=0)
    if stopped:
        out.print(Text(f"stopped; resume with: {again}"))
    elif code:
        out.print(Text(f"to queue the runs that did not finish again: {again}"))
    out.print(Text(f"the SA-AA front: caat front --sweep {shlex.quote(sweep_name)}"))
    raise typer.Exit(130 if stopped else code)


def _submit(store: Store, sweep_name: str, slurm: str) -> None:
    """The sweep's queued runs as one Slurm job array (`runs.slurm`)."""
    from caat_app.runs.slurm import submit

    queued = [r.id for r in store.sweep_runs(sweep_name) if r.status == "queued" and r.id]
    jobs = submit(store, queued, slurm)
    out.print(Text(f"submitted {len(jobs)} run(s) of sweep {sweep_name}: job(s) {', '.join(jobs)}"))
    out.print(Text("watch them with `caat runs` or the dashboard; cancel with `caat cancel RUN`"))


def _resumed(
    sweep_name: str,
    options: dict[str, Any],
    *,
    seeds: str | None,
    config: Path | None,
    db: str | None,
) -> tuple[Store, list[RunConfig]]:
    """The sweep's own configs, from its store; resuming takes no options and creates nothing."""
    from sqlalchemy.engine import make_url

    from caat_app.runs.sweep import sweep_configs

    given = [k for k, v in options.items() if v is not None]
    if given or seeds is not None or config is not None:
        what = ", ".join("--" + k.replace("_", "-") for k in given) or "--seeds/--config"
        raise ConfigError(f"--resume runs the sweep's own configs; drop {what}")
    parsed = make_url(resolve_db_url(db))
    file = parsed.database if parsed.get_backend_name() == "sqlite" else None
    if file and file != ":memory:" and not Path(file).exists():
        raise ConfigError(f"no sweep {sweep_name!r}: no store at {file}")
    store = open_store(db)
    configs = sweep_configs(store, sweep_name)
    if not configs:
        raise ConfigError(f"no sweep {sweep_name!r} in {store.url}")
    return store, configs


def _grid(
    sweep_name: str, options: dict[str, Any], *, seeds: str | None, config: Path | None
) -> list[RunConfig]:
    """The grid the options (comma lists) and the config file span, checked runnable."""
    from caat_app.config import load_config_file
    from caat_app.runs.sweep import expand, name_runs, sweep_options

    file_values = load_config_file(config) if config is not None else {}
    base, lists, seed_list = sweep_options(options, file_values, seeds)
    configs = name_runs(sweep_name, expand(base, lists, seed_list))
    checked: set[tuple[Any, ...]] = set()
    for cfg in configs:  # the data and the device, once per distinct need
        need = (cfg.device, cfg.dataset, cfg.data_dir, cfg.download)
        if need not in checked:
            check_runnable(cfg)
            checked.add(need)
    return configs


def _work_through(store: Store, sweep_name: str, *, jobs: int) -> bool:
    """Run the sweep's queued runs in workers with a live bar; whether Ctrl-C stopped it.

    The first Ctrl-C asks the workers to stop; a second one interrupts now.
    """
    from caat_app.cli.progress import SweepProgress
    from caat_app.runs.launcher import list_gpus
    from caat_app.runs.sweep import counts_text, run_sweep

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
    return stop["asked"]


# --------------------------------------------------------------------------- runs


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
        _start_workers(store, ids)
        return store, ids, []
    statuses: list[str] = []
    for run_id in ids:
        statuses.append(train_foreground(store, run_id))
        if statuses[-1] == RunStatus.CANCELLED:  # Ctrl-C: later runs are cancelled too
            for later in ids[len(statuses) :]:
                store.finish(later, RunStatus.CANCELLED)
            break
    out.print(results_table([store.find_run(str(i)) for i in ids[: len(statuses)]]))
    return store, ids, statuses


def _start_workers(store: Store, ids: list[int]) -> None:
    """Start a worker for each run now, and say where to follow it."""
    from caat_app.runs.launcher import Scheduler, list_gpus

    # Claimed through the store like a dashboard's launches (so no run starts twice),
    # but now: asking for a detached run is asking to start it, whatever else runs.
    unlimited = Scheduler(store, gpus=list_gpus(), per_gpu=10**6, max_cpu=10**6, share_cores=False)
    unlimited.dispatch(only=ids)
    for run_id in ids:
        run = store.get_run(run_id)
        assert run is not None
        out.print(Text(f"run {run_id} ({visible(run.name)}) started in worker pid {run.pid}"))
        out.print(Text(f"  log: {Path(run.run_dir) / 'worker.log'}"))
    out.print(Text("follow it with: caat runs, caat show RUN, caat cancel RUN"))


def train_foreground(store: Store, run_id: int) -> str:
    """Train in this process with a live progress bar; Ctrl-C cancels cleanly."""
    from caat_app.cli.progress import ProgressSink
    from caat_app.runs.worker import StopFlag, execute_run

    run = store.get_run(run_id)
    assert run is not None
    out.print(Text(f"run {run_id} ({visible(run.name)}) in {store.url}"))
    flag = StopFlag()
    previous = signal.signal(signal.SIGINT, flag.set)
    try:
        with ProgressSink(out, visible(run.name), run.epochs_total) as progress:
            status = execute_run(store, run_id, flag, progress)
    finally:
        signal.signal(signal.SIGINT, previous)
    out.print(Text(f"run {run_id} {status}", style=STATUS_STYLE.get(status, "")))
    return status
