"""`caat eval`: robust accuracy of saved runs under the attack zoo.

Measured here with a live bar, or in detached workers started through the workbench
service. The evaluation runner (torch) is imported only when this process measures.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.text import Text

from caat_app.cli.base import EXIT_CODES, err, open_store, out
from caat_app.cli.options import DbOption, check_int64, check_run_refs
from caat_app.cli.render import eval_parts, rows_csv, run_label
from caat_app.errors import CaatError
from caat_app.evaluation.plan import DEFAULT_ATTACKS, EVAL_ATTACKS, eval_spec
from caat_app.present import format_budget
from caat_app.runs.service import Workbench
from caat_app.runs.stored import option, options_of
from caat_storage import RunStatus

if TYPE_CHECKING:
    from caat_app.evaluation.plan import EvalSpec
    from caat_app.evaluation.tables import EvalTable
    from caat_storage import Run, Store


def eval_command(
    runs: list[str] | None = typer.Argument(
        None, help="run ids or names; several print side by side", callback=check_run_refs
    ),
    sweep: str | None = typer.Option(
        None, help="also every finished run of this sweep (for `caat front --attack`)"
    ),
    attacks: str = typer.Option(
        ",".join(DEFAULT_ATTACKS),
        help=f"comma list of {', '.join(EVAL_ATTACKS)}. Quote AutoAttack's number: a point "
        "counts as robust only if every attack of its ensemble fails on it. pgd also runs "
        "two probes for the masking report (pgd-100, and pgd at 4× the largest ε)",
    ),
    eps: str = typer.Option(
        "", help="comma list of budgets, e.g. 8/255,16/255 (default: the run's own)"
    ),
    norm: str = typer.Option("linf", help="linf or l2"),
    n: int = typer.Option(
        1000, help="first N test images, stratified and fixed (0: all)", callback=check_int64
    ),
    checkpoint: str = typer.Option("best", help="best (chosen on validation) or last"),
    force: bool = typer.Option(False, "--force", help="measure again what the store has"),
    as_table: bool = typer.Option(
        False, "--table", help="the paper's layout: attacks × budgets, SA first (the default)"
    ),
    as_json: bool = typer.Option(False, "--json", help="one record per attack and budget"),
    csv_out: bool = typer.Option(False, "--csv", help="CSV on stdout"),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N"),
    detach: bool = typer.Option(False, "--detach", help="evaluate in a worker, return now"),
    queue: bool = typer.Option(
        False, "--queue", help="record it for a `caat agent` (any host's) to run, return now"
    ),
    db: str | None = DbOption,
) -> None:
    """Robust accuracy of saved runs under the attack zoo, with a gradient-masking report.

    Results are stored; an identical evaluation later is read back, not measured again.
    """
    if as_table + as_json + csv_out > 1:
        raise CaatError("give one of --table, --json and --csv")
    _check_queue(queue, detach=detach, prints=as_table or as_json or csv_out)
    check = {"attacks": attacks, "norm": norm, "n": n, "checkpoint": checkpoint}
    check |= {"force": force, "device": device}
    eval_spec(budgets=eps or "1", **check)  # fail before the store
    if not runs and sweep is None:
        raise CaatError("name the runs to evaluate, or --sweep NAME")
    store = open_store(db)
    records = [store.find_run(ref) for ref in runs or []]
    if sweep is not None:
        records += _finished_of_sweep(store, sweep)
    records = list({r.id: r for r in records}.values())  # a run named twice is measured once
    specs = [eval_spec(budgets=eps or [options_of(r)["eps"]], **check) for r in records]
    if queue:
        _queue_jobs(store, records, specs)
        return
    if detach:
        _start_workers(store, records, specs, device=device)
        return
    tables, report = _measure_all(store, records, specs)
    _print_results(tables, report, as_json=as_json, csv_out=csv_out)


def _finished_of_sweep(store: Store, sweep: str) -> list[Run]:
    """The finished runs of a sweep, or a one-line error saying why there are none."""
    runs = store.sweep_runs(sweep)
    if not runs:
        raise CaatError(f"--sweep: no sweep named {sweep!r}")
    finished = [r for r in runs if r.status == RunStatus.FINISHED.value]
    if not finished:
        raise CaatError(f"--sweep: no run of {sweep!r} has finished yet")
    return finished


def _check_queue(queue: bool, *, detach: bool, prints: bool) -> None:
    """`--queue` measures nowhere here: no worker of ours, no results to print now."""
    if queue and detach:
        raise CaatError("give one of --detach (a worker here, now) and --queue (for an agent)")
    if queue and prints:
        raise CaatError(
            "--queue prints no results: drop --table/--json/--csv, and read them once an "
            "agent has measured them (`caat show RUN`, or `caat eval` again)"
        )


def _queue_jobs(store: Store, records: list[Run], specs: list[EvalSpec]) -> None:
    """Every run's job waits in the store for an agent; every checkpoint is checked first."""
    from caat_app.runs.manage import evaluable, queue_eval

    for record, spec in zip(records, specs, strict=True):
        evaluable(store, record, spec)
    for record, spec in zip(records, specs, strict=True):
        job = queue_eval(store, record, spec)
        out.print(
            Text(f"evaluation {job} of run {run_label(record)} queued: it waits for a `caat agent`")
        )


def _start_workers(store: Store, records: list[Run], specs: list[EvalSpec], *, device: str) -> None:
    """Every run gets its worker now; on the CPU they share the cores, as a sweep's do."""
    from caat_app.runs import launcher

    on_cpu = device == "cpu" or (device == "auto" and not launcher.list_gpus())
    env = launcher.cpu_share(len(records)) if on_cpu and len(records) > 1 else {}
    bench = Workbench(store)
    for record, spec in zip(records, specs, strict=True):
        assert record.id is not None
        job = bench.start_eval(record.id, spec, env=env)
        out.print(Text(f"evaluation {job} of run {run_label(record)} started"))
        out.print(Text(f"  log: {launcher.eval_log(Path(record.run_dir), job)}"))
    out.print(
        Text("`caat show RUN` and the dashboard show its table; `caat cancel --eval JOB` stops")
    )


def _measure_all(
    store: Store, records: list[Run], specs: list[EvalSpec]
) -> tuple[list[tuple[Run, EvalTable]], list[dict[str, Any]]]:
    """Evaluate each run here, in turn; its table, and the record `--json` prints.

    A run that does not finish (Ctrl-C, a failure) ends the command with its exit code.
    Every checkpoint is read first: a damaged one is a one-line error before any job is
    recorded, and before an earlier run is measured for nothing.
    """
    from caat_app.evaluation.runner import read_checkpoint
    from caat_app.evaluation.tables import build_table

    for record, spec in zip(records, specs, strict=True):
        read_checkpoint(record, spec.checkpoint)
    tables: list[tuple[Run, EvalTable]] = []
    report: list[dict[str, Any]] = []
    for record, spec in zip(records, specs, strict=True):
        status, rows = eval_foreground(store, record, spec)
        if status != RunStatus.FINISHED:
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
                "batch_dependent": option(record, "bn") == "batchstats",
            }
        )
    return tables, report


def _print_results(
    tables: list[tuple[Run, EvalTable]],
    report: list[dict[str, Any]],
    *,
    as_json: bool,
    csv_out: bool,
) -> None:
    """The tables side by side (the default), or one record per measurement as JSON or CSV."""
    if as_json:
        print(json.dumps(report if len(report) > 1 else report[0], indent=2))
    elif csv_out:
        sys.stdout.write(
            rows_csv(
                {"run": r["run"], **{k: v for k, v in row.items() if k != "settings"}}
                for r in report
                for row in r["results"] + r["probes"]
            )
        )
    else:
        for part in eval_parts(tables):
            out.print(part)


def _measured_line(row: dict[str, Any]) -> str:
    """One measurement as the bar prints it above itself."""
    where = "stored" if row["cached"] else f"{row['seconds']:.1f} s"
    probe = "probe " if row["probe"] else ""
    return f"  {probe}{row['attack']} at ε={format_budget(row['eps'])}: " + (
        f"{100 * row['accuracy']:.1f}% ({where})"
    )


def eval_foreground(store: Store, record: Run, spec: EvalSpec) -> tuple[str, list[dict[str, Any]]]:
    """Evaluate in this process as a worker would, with a live bar; Ctrl-C stops cleanly."""
    from rich.progress import TimeElapsedColumn

    from caat_app.cli.progress import LiveBar
    from caat_app.evaluation.plan import plan
    from caat_app.runs.worker import StopFlag, execute_eval

    assert record.id is not None
    total = len(plan(spec))
    job_id = store.create_eval_job(record.id, spec.to_json(), total=total)
    flag = StopFlag()
    label = f"run {run_label(record)}"
    bar: Any = None

    def quit_now(*_: Any) -> None:
        # The attack runs in a thread that cannot be interrupted; leaving the interpreter
        # under it would abort, so the job is recorded and the process ends at once.
        store.finish_eval_job(job_id, RunStatus.CANCELLED)
        if bar is not None:
            bar.progress.stop()
        err.print(Text(f"evaluation of {label} cancelled; what it measured is stored"))
        sys.stderr.flush()
        os._exit(EXIT_CODES[RunStatus.CANCELLED])

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
                    bar.progress.console.print(Text(_measured_line(row)))

            status, rows = execute_eval(store, job_id, flag, started, finished)
    finally:
        signal.signal(signal.SIGINT, previous)
    if status != RunStatus.FINISHED:
        err.print(Text(f"evaluation of {label} {status}; what it measured is stored"))
    return status, rows
