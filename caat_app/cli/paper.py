"""`caat paper`: the paper's experiments, each one command, from queueing to its figure.

Torch-free here: workers train and evaluate. Everything that can be wrong with the input
(the experiment, the scale, the options) is found before the store is opened, and a dry
run opens nothing at all.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from caat_app.cli.base import err, open_store, out
from caat_app.cli.lab import PAPER_GRID as SYNTH_GRID
from caat_app.cli.options import DbOption, JsonOption
from caat_app.cli.paper_list import list_experiments
from caat_app.cli.paper_slurm import (
    SlurmOption,
    Workers,
    evaluate_on_slurm,
    stopped_text,
    train_on_slurm,
    workers,
)
from caat_app.cli.progress import interruptible
from caat_app.errors import CaatError
from caat_app.paper.peft import weights_complaint
from caat_app.present import format_budget, norm_text
from caat_app.runs.grid import parse_list

if TYPE_CHECKING:
    from caat_app.paper.estimate import Bench, ReferenceGpu
    from caat_app.paper.scale import Plan
    from caat_storage import Store


ExperimentArgument = typer.Argument(
    None, help="an experiment: fig3, fig4, fig5, fig6a, fig6b, fig6c, fig7a, fig7b, fig8, table1"
)
ScaleOption = typer.Option(
    "paper", help="paper, or smoke: digits and a small model, minutes on a CPU, no claims"
)
JobsOption = typer.Option(
    None, "--jobs", min=1, help="runs (then evaluations) at once, default 1; not with --slurm"
)
WeightsOption = typer.Option(
    None, "--weights", help="fig4/fig5: the robust ImageNet base weights (paper scale)"
)


def paper_command(
    experiment: str | None = ExperimentArgument,
    scale: str = ScaleOption,
    dry_run: bool = typer.Option(
        False, "--dry-run", help="print the runs, evaluations and GPU hours; store nothing"
    ),
    jobs: int | None = JobsOption,
    seeds: str | None = typer.Option(None, "--seeds", help="seeds of every config: 0,1,2"),
    device: str | None = typer.Option(None, "--device", help="auto, cpu, cuda or cuda:N"),
    epochs: int | None = typer.Option(
        None, "--epochs", min=1, help="train every run this long (not the paper's schedule)"
    ),
    eval_n: int | None = typer.Option(
        None, "--eval-n", min=0, help="test images each evaluation attacks (0: all)"
    ),
    weights: str | None = WeightsOption,
    out_dir: Path = typer.Option(
        Path("caat-paper"), "--out", help="folder for the figure, the table and the verdict"
    ),
    bench_file: Path | None = typer.Option(
        None, "--bench", help="a saved `caat bench --json` report: estimate at measured speed"
    ),
    gpu: str = typer.Option(
        "A100:312:0.35",
        "--gpu",
        help="the analytic estimate's GPU: NAME:PEAK_BF16_TFLOPS:SHARE_OF_PEAK_ACHIEVED",
    ),
    as_json: bool = JsonOption,
    csv_out: bool = typer.Option(False, "--csv", help="the experiment's table as CSV on stdout"),
    db: str | None = DbOption,
    yes: bool = typer.Option(False, "--yes", help="queue over 1000 runs without asking"),
    slurm: str | None = SlurmOption,
) -> None:
    """The paper's experiments: none named lists them; one named runs it to its figure.

    Queues the experiment as a sweep (`paper-<id>`, resumable: run it again to train and
    evaluate only what is missing), trains and evaluates it in workers (--slurm: Slurm
    jobs it waits for), then writes its figure, table and verdict under --out. Over 1000
    runs (many --seeds) are queued only when confirmed (or --yes).
    """
    from caat_app.paper.scale import Overrides, check_scale, resolve

    if as_json and csv_out:
        raise CaatError("give one of --json and --csv")
    if experiment is None:
        return list_experiments(as_json)
    if check_scale(scale) and experiment == "fig2":  # no runs: the synthetic experiment
        return _synth(out_dir, scale, epochs, dry_run, as_json)
    seed_list = tuple(parse_list(seeds, "int", option="--seeds")) if seeds else None
    how = workers(jobs, slurm, check=not dry_run)
    overrides = Overrides(seed_list, epochs, eval_n, device, weights)
    reference, bench = _gpu(gpu), _bench(bench_file)
    plan = resolve(experiment, scale, overrides)
    if dry_run:
        _dry_run(plan, reference, bench, as_json=as_json)
        return
    _check_runnable(plan, yes=yes, quiet=as_json or csv_out)
    code = _run(plan, jobs=how, db=db, out_dir=out_dir, as_json=as_json, csv_out=csv_out)
    raise typer.Exit(code)


# --------------------------------------------------------------------------- fig2


def _synth(out_dir: Path, scale: str, epochs: int | None, dry_run: bool, as_json: bool) -> None:
    """Fig. 2: `caat synth` with the paper's budgets; its figure, table and findings."""
    from caat_app.cli.lab import synth_csv, synth_table

    if dry_run:
        plan = {"experiment": "fig2", "scale": scale, "runs": [], "evaluations": []}
        if as_json:
            print(json.dumps({**plan, "estimate": {"total_gpu_hours": 0.0}}, indent=2))
        else:
            out.print(
                Text(
                    f"fig2 trains one logistic regression per δ ∈ {{{SYNTH_GRID}}} on "
                    "the CPU (seconds); no GPU hours, nothing stored"
                )
            )
        return
    from caat_app.lab.synth import SynthConfig, as_report, load_task, run_synth
    from caat_app.lab.synth_figure import save_synth_figure

    cfg = SynthConfig(deltas=tuple(float(d) for d in SYNTH_GRID.split(",")), tsne=500)
    if epochs is not None:
        cfg = replace(cfg, epochs=epochs)
    result = run_synth(load_task(None), cfg)
    rep = as_report(result)
    stem = "fig2" if scale == "paper" else f"fig2-{scale}"
    out_dir.mkdir(parents=True, exist_ok=True)
    save_synth_figure(rep, result.embeddings, out_dir / f"{stem}.png")
    (out_dir / f"{stem}.json").write_text(json.dumps(rep, indent=2))
    (out_dir / f"{stem}.csv").write_text(synth_csv(rep))
    findings = [rep["task"]["note"], *rep["findings"]]
    (out_dir / f"{stem}-verdict.txt").write_text("\n".join(findings) + "\n")
    if as_json:
        print(json.dumps(rep, indent=2))
        return
    for name in (f"{stem}.png", f"{stem}.json", f"{stem}.csv", f"{stem}-verdict.txt"):
        out.print(Text(f"wrote {out_dir / name}"))
    out.print(synth_table(rep))
    for sentence in findings:
        out.print(Text(sentence))


# --------------------------------------------------------------------------- dry run


def _gpu(text: str) -> ReferenceGpu:
    """`A100:312:0.35` as a reference GPU, or a one-line error."""
    from caat_app.paper.estimate import ReferenceGpu

    name, _, rest = text.partition(":")
    peak, _, share = rest.partition(":")
    try:
        gpu = ReferenceGpu(name.strip() or "GPU", float(peak), float(share))
    except ValueError:
        gpu = None
    if gpu is None or not (gpu.peak_tflops > 0 and 0 < gpu.utilisation <= 1):
        raise CaatError(f"--gpu: expected NAME:PEAK_TFLOPS:SHARE like A100:312:0.35, got {text!r}")
    return gpu


def _bench(path: Path | None) -> Bench | None:
    from caat_app.paper.estimate import read_bench

    return None if path is None else read_bench(path)


def dry_run_json(plan: Plan, estimate: dict[str, Any]) -> dict[str, Any]:
    """The dry run's one object: each run's resolved config, each evaluation, the estimate."""
    return {
        "experiment": plan.experiment.id,
        "scale": plan.scale,
        "sweep": plan.sweep,
        "notes": list(plan.notes),
        "pretrain_sweep": plan.pretrain_sweep or None,
        "pretrain": [{**r.config.model_dump(mode="json"), "panel": r.panel} for r in plan.pretrain],
        "runs": [{**r.config.model_dump(mode="json"), "panel": r.panel} for r in plan.runs],
        "evaluations": [
            {"run": r.config.name, **spec.to_json()} for r in plan.runs for spec in r.evaluations
        ],
        "estimate": estimate,
    }


def _dry_run(plan: Plan, gpu: ReferenceGpu, bench: Bench | None, *, as_json: bool) -> None:
    from caat_app.paper.estimate import estimate

    est = estimate(plan, gpu, bench)
    if as_json:
        print(json.dumps(dry_run_json(plan, est), indent=2))
        return
    table = Table(title=Text(f"{plan.experiment.help}: sweep {plan.sweep}"), title_justify="left")
    for col in ("run", "panel", "epochs", "train GPU h", "eval GPU h"):
        table.add_column(col, justify="left" if col in {"run", "panel"} else "right")
    for run, cost in zip((*plan.pretrain, *plan.runs), est["runs"], strict=True):
        table.add_row(
            run.config.name,
            run.panel,
            str(run.config.epochs),
            f"{cost['train_gpu_hours']:.2f}",
            f"{cost['eval_gpu_hours']:.2f}",
        )
    out.print(table)
    if plan.runs and plan.runs[0].evaluations:
        for spec in plan.runs[0].evaluations:
            budgets = ",".join(format_budget(b) for b in spec.budgets)
            out.print(
                Text(
                    f"each run: {','.join(spec.attacks)} at ε={budgets} "
                    f"{norm_text(spec.norm)} on {spec.n or 'all'} test images"
                )
            )
    out.print(
        Text(
            f"estimate: {est['total_gpu_hours']:.1f} GPU hours ({est['train_gpu_hours']:.1f} "
            f"training, {est['eval_gpu_hours']:.1f} evaluation); basis: {est['basis_text']}"
        )
    )
    for line in (*est["model"], *plan.notes):
        out.print(Text(f"  · {line}"))
    out.print(Text("dry run: nothing stored"))


# --------------------------------------------------------------------------- running


def _check_runnable(plan: Plan, *, yes: bool, quiet: bool) -> None:
    """The data and the device of every distinct need, and a person's yes when the plan
    has over 1000 runs (asked on stderr when stdout is `quiet`), before the store is
    touched."""
    from caat_app.cli.train import check_runnable, confirm_size

    exp = plan.experiment
    if exp.base_weights and not plan.smoke and any(r.config.weights is None for r in plan.runs):
        raise CaatError(weights_complaint(exp.id, exp.base_weights))
    checked: set[tuple[Any, ...]] = set()
    for run in plan.runs:
        cfg = run.config
        need = (cfg.device, cfg.dataset, cfg.data_dir, cfg.download)
        if need not in checked:
            check_runnable(cfg)
            checked.add(need)
    what = f"{plan.experiment.id} ({plan.scale} scale)"
    confirm_size(len(plan.runs), what, yes=yes, prompt_on_stderr=quiet)


def _train(store: Store, sweep: str, how: Workers, say: Console) -> tuple[dict[str, int], bool]:
    """The sweep's queued runs, in workers (or Slurm jobs), with `caat sweep`'s bar."""
    from caat_app.cli.progress import SweepProgress
    from caat_app.runs.launcher import list_gpus
    from caat_app.runs.sweep import run_sweep

    if how.slurm is not None:
        return train_on_slurm(store, sweep, how.slurm, say)

    def work(should_stop: Callable[[], bool]) -> dict[str, int]:
        with SweepProgress(say, sweep) as progress:

            def stopping() -> bool:
                progress.stopping = should_stop()
                return progress.stopping

            return run_sweep(
                store,
                sweep,
                jobs=how.jobs,
                gpus=list_gpus(),
                on_progress=progress,
                should_stop=stopping,
            )

    return interruptible(work)


def _evaluate(store: Store, plan: Plan, how: Workers, say: Console) -> tuple[int, bool]:
    """What the finished runs lack, in evaluation workers (or Slurm jobs); (failures,
    whether stopped)."""
    from rich.progress import TimeElapsedColumn

    from caat_app.cli.progress import LiveBar
    from caat_app.paper.run import missing_evaluations, run_evaluations, stored_runs
    from caat_app.runs.launcher import list_gpus
    from caat_app.runs.service import Workbench

    if how.slurm is not None:
        return evaluate_on_slurm(store, plan, how.slurm, say)
    todo = missing_evaluations(store, stored_runs(store, plan))
    say.print(Text(f"evaluations: {len(todo)} to measure, the rest read back from the store"))
    if not todo:
        return 0, False
    gpus = list_gpus()
    bench = Workbench(store, gpus=gpus)

    def work(should_stop: Callable[[], bool]) -> Any:
        with LiveBar(err, "evaluations", len(todo), TimeElapsedColumn()) as bar:

            def shown(progress: Any) -> None:
                counts = " · ".join(f"{k} {v}" for k, v in progress.counts.items())
                bar.progress.update(bar.task, completed=progress.ended, live=counts)

            return run_evaluations(
                bench, todo, jobs=how.jobs, gpus=gpus, on_progress=shown, should_stop=should_stop
            )

    progress, stopped = interruptible(work)
    for error in progress.errors:
        err.print(Text(f"  evaluation failed: {error}"))
    return sum(v for k, v in progress.counts.items() if k != "finished"), stopped


def _run(
    plan: Plan, *, jobs: Workers, db: str | None, out_dir: Path, as_json: bool, csv_out: bool
) -> int:
    """Queue, train, evaluate, report; the exit code (130 when stopped, 1 when incomplete)."""
    from caat_app.paper.run import queue
    from caat_app.runs.sweep import counts_text

    say = err if as_json or csv_out else out  # stdout is the JSON's or the CSV's alone
    store = open_store(db)
    if plan.pretrain:
        staged = _stage1(store, plan, jobs, say)
        if isinstance(staged, int):
            return staged
        plan = staged
    new, held = queue(store, plan)
    say.print(
        Text(
            f"{plan.experiment.id} ({plan.scale} scale) as sweep {plan.sweep} in {store.url}: "
            f"{len(plan.runs)} runs, {len(new)} queued now, {len(held)} already there"
        )
    )
    if plan.smoke:
        say.print(Text("smoke scale: checks the path, never the paper's claim", style="bold"))
    counts, stopped = _train(store, plan.sweep, jobs, say)
    say.print(Text(f"training: {counts_text(counts)}"))
    failed = 0
    if not stopped:
        failed, stopped = _evaluate(store, plan, jobs, say)
    if stopped:
        say.print(Text(stopped_text(jobs, plan.sweep)))
        return 130
    _report(store, plan, out_dir, as_json=as_json, csv_out=csv_out)
    incomplete = failed or any(counts.get(k) for k in ("failed", "diverged", "cancelled"))
    return 1 if incomplete else 0


def _stage1(store: Store, plan: Plan, jobs: Workers, say: Console) -> Plan | int:
    """Stage 1 (its own sweep; a finished one is reused), then the plan on its best.pt;
    an exit code when it was stopped or did not finish."""
    from caat_app.paper.run import queue_pretrain, stage1_weights
    from caat_app.paper.scale import on_stage1
    from caat_app.runs.sweep import counts_text

    new, held = queue_pretrain(store, plan)
    say.print(
        Text(f"stage 1 as sweep {plan.pretrain_sweep}: {len(new)} queued now, {len(held)} there")
    )
    counts, stopped = _train(store, plan.pretrain_sweep, jobs, say)
    say.print(Text(f"stage 1: {counts_text(counts)}"))
    if stopped:
        say.print(Text(stopped_text(jobs, plan.pretrain_sweep)))
        return 130
    weights = stage1_weights(store, plan)
    if weights is None:
        err.print(Text(f"error: stage 1 ({plan.pretrain_sweep}) did not finish; see caat runs"))
        return 1
    return on_stage1(plan, weights)


def _report(store: Store, plan: Plan, out_dir: Path, *, as_json: bool, csv_out: bool) -> None:
    """Write the outputs, then show the table and the verdict (or print JSON/CSV)."""
    from caat_app.cli.render import rows_csv
    from caat_app.paper.report import build_report, write_outputs

    report = build_report(store, plan)
    try:
        written = write_outputs(report, out_dir, plan.sweep.removeprefix("paper-"))
    except OSError as exc:
        raise CaatError(f"cannot write to {out_dir}: {exc.strerror or exc}") from None
    for path in written:
        err.print(Text(f"wrote {path}"))
    if as_json:
        print(json.dumps(report, indent=2, default=str))
        return
    if csv_out:
        sys.stdout.write(rows_csv(report["rows"]))
        return
    for part in report_parts(report):
        out.print(part)


def report_table(report: dict[str, Any]) -> Table:
    """The report's table (its cells from `caat_app.paper.cells`), accuracies in %."""
    from caat_app.paper.cells import report_cells

    title, header, rows = report_cells(report)
    table = Table(title=Text(title), title_justify="left")
    for i, col in enumerate(header):
        table.add_column(col, justify="left" if i < 2 else "right")
    for row in rows:
        table.add_row(*[Text(cell) for cell in row])
    return table


def report_parts(report: dict[str, Any]) -> list[Any]:
    """The report as a person reads it: its table, the verdict, what is missing, the notes."""
    parts: list[Any] = [report_table(report)]
    parts += [Text(s) for s in report["verdict"]]
    parts += [Text(f"missing: {m}", style="yellow") for m in report["missing"]]
    parts += [Text(f"note: {n}", style="dim") for n in report["notes"]]
    return parts
