"""`caat conflict RUN`: where a finished run's conflict lives, image by image; `--ablate`
retrains it without its most conflicting images (and, as the control, without as many
random ones) and puts all of them on the SA-AA front.

The report lands in the store (its body and one row per training image), where the
dashboard's Conflict screen reads it and `--show` prints it again without computing.
The per-sample gradients (torch) are computed inside the command; the report, the
ablation's planning and everything printed are torch-free. Every mistake in the
options is found before the store is opened.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.table import Table
from rich.text import Text

from caat_app.cli.base import open_store, out
from caat_app.cli.options import DbOption, JsonOption, RunArgument
from caat_app.cli.progress import interruptible
from caat_app.errors import CaatError
from caat_storage import RunStatus

if TYPE_CHECKING:
    from caat_app.config import RunConfig
    from caat_storage import Run, Store

RANDOM_SEED = 0
"""The control's draw: the same random images for every seed and every call."""
PROTOCOL = (
    "per-sample gradients over all trainable parameters, the checkpoint in eval mode "
    "(BatchNorm: running statistics; batch-statistics models: their chunk's statistics as "
    "constants), x' from the run's own training attack (seeded), no augmentation, float32"
)


def conflict(
    run: str = RunArgument,
    checkpoint: str = typer.Option("best", help="best (chosen on validation) or last"),
    n: int = typer.Option(0, "--n", help="first N training images, stratified (0: all)"),
    top: int = typer.Option(16, "--top", help="how many of the most conflicting to show"),
    png: Path | None = typer.Option(None, "--png", help="write the figure (.png, .svg, .pdf)"),
    ablate: str | None = typer.Option(
        None,
        "--ablate",
        help="retrain without the top P% most conflicting training images (e.g. 10%), "
        "and without as many random ones (the control), then show the SA-AA front",
    ),
    seeds: str | None = typer.Option(
        None, "--seeds", help="with --ablate: comma list of seeds (default: the run's own)"
    ),
    jobs: int = typer.Option(1, "--jobs", min=1, help="with --ablate: runs trained at once"),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N"),
    show: bool = typer.Option(
        False, "--show", help="print the run's stored report again instead of computing one"
    ),
    as_json: bool = JsonOption,
    db: str | None = DbOption,
) -> None:
    """Per-sample conflict φ_i, μ_i of a finished run's training images, and its top-k.

    Stores the report (the dashboard's Conflict screen draws it). Each image's g_c,i
    and g_a,i are those of training's losses, at the checkpoint, in eval mode.
    """
    fraction = parse_fraction(ablate) if ablate is not None else None
    seed_list = parse_seeds(seeds) if seeds is not None else None
    _check(checkpoint, n, top, png, fraction, seed_list)
    if show and fraction is not None:
        raise CaatError("--show prints a stored report; it cannot --ablate")
    store = open_store(db)
    if show:
        show_stored(store, store.find_run(run), png, as_json)
        return
    record = finished_run(store, run)
    report = analyse(record, checkpoint=checkpoint, n=n, top=top, device=device, quiet=as_json)
    report_id = save_report(store, record, report, key=f"{checkpoint} checkpoint, n={n or 'all'}")
    if png is not None:
        from caat_app.lab.conflict_figure import save_conflict_figure

        save_conflict_figure(report, png, title=f"run {record.id} ({record.name})")
    if not as_json:
        print_report(report)
        if png is not None:
            out.print(Text(f"figure: {png}"))
    if fraction is not None:
        report["ablation"] = run_ablation(
            store, record, report, fraction, seed_list, jobs=jobs, quiet=as_json
        )
        store.update_lab_body(report_id, stored_body(report))
        if not as_json:
            print_ablation(report["ablation"])
    if as_json:
        print(json.dumps(report))
        return
    out.print(Text(f"stored as lab report {report_id}: caat conflict {record.id} --show"))


# --------------------------------------------------------------------------- input


def parse_fraction(text: str) -> float:
    """`10%` or `10` → 0.1; anything outside (0, 100) percent is a one-line error."""
    body = text.strip().removesuffix("%").strip()
    try:
        value = float(body)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and 0 < value < 100):
        raise CaatError(f"--ablate: expected a percentage in (0, 100) like 10%, got {text!r}")
    return value / 100


def parse_seeds(text: str) -> list[int]:
    """`0,1,2` → [0, 1, 2], distinct and non-negative."""
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        seeds = []
    if not seeds or any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise CaatError(f"--seeds: expected distinct seeds like 0,1,2, got {text!r}")
    return seeds


def _check(
    checkpoint: str,
    n: int,
    top: int,
    png: Path | None,
    fraction: float | None,
    seeds: list[int] | None,
) -> None:
    """The options' own mistakes, before the store is opened."""
    from caat_app.analysis.figure import FORMATS
    from caat_app.evaluation.plan import CHECKPOINTS

    if checkpoint not in CHECKPOINTS:
        raise CaatError(f"--checkpoint: unknown {checkpoint!r}; choose one of best, last")
    if n < 0:
        raise CaatError(f"--n: expected 0 (all) or a positive count, got {n}")
    if top < 1:
        raise CaatError(f"--top: expected at least 1, got {top}")
    if png is not None and png.suffix.lower() not in FORMATS:
        raise CaatError(f"--png: {png.name} is not {', '.join(FORMATS)}")
    if fraction is not None and n:
        raise CaatError("--ablate ranks the whole training split; drop --n")
    if seeds is not None and fraction is None:
        raise CaatError("--seeds chooses the ablation's seeds; give --ablate too")


def finished_run(store: Store, ref: str) -> Run:
    """The run, or a one-line error when it has not finished (its checkpoints may move)."""
    record = store.find_run(ref)
    if record.status != RunStatus.FINISHED:
        raise CaatError(f"run {record.id} is {record.status}; caat conflict needs a finished run")
    return record


# --------------------------------------------------------------------------- analysis


def analyse(
    record: Run, *, checkpoint: str, n: int, top: int, device: str, quiet: bool
) -> dict[str, Any]:
    """Per-sample φ_i, μ_i of the run's training images (the first n, stratified), reported."""
    import torch

    from caat_app.evaluation.runner import load_run_model, stratified_order
    from caat_app.lab.conflict_report import build_report
    from caat_app.lab.persample import per_sample_conflict

    start = time.perf_counter()
    model, cfg, data, weights = load_run_model(record, checkpoint, device)
    index = torch.arange(len(data.y_train))
    if n:
        index = stratified_order(data.y_train)[:n].sort().values
    x, y = data.x_train[index], data.y_train[index]
    with _bar(len(y), quiet) as progress:
        result = per_sample_conflict(
            model, cfg, x, y, index=index, seed=cfg.seed, on_chunk=progress
        )
    columns = {k: getattr(result, k).tolist() for k in _COLUMN_NAMES}
    pixels = (x.clamp(0, 1) * 255).round().to(torch.uint8)
    meta = {
        "run": record.id,
        "name": record.name,
        "checkpoint": checkpoint,
        "weights": weights,
        "split": "train",
        "params": result.params,
        "protocol": PROTOCOL,
        "attack": _attack_text(cfg),
        "whole": {k: float(v) for k, v in result.whole._asdict().items()},
        "seconds": round(time.perf_counter() - start, 2),
    }
    return build_report(columns, top=top, pixels=lambda row: pixels[row].tolist(), meta=meta)


_COLUMN_NAMES = ("index", "label", "pred_c", "pred_a", "margin", "loss_c", "loss_a", "phi", "mu")
_COLUMN_NAMES += ("norm_c", "norm_a")


def _attack_text(cfg: RunConfig) -> str:
    from caat_app.present import format_budget

    return (
        f"{cfg.attack} {cfg.norm} ε={format_budget(cfg.eps)} step={format_budget(cfg.step_size)} "
        f"steps={cfg.attack_steps} loss={cfg.loss}"
    )


class _bar:
    """A transient progress bar over the analysed images (none with --json)."""

    def __init__(self, total: int, quiet: bool) -> None:
        from rich.progress import TimeElapsedColumn

        from caat_app.cli.progress import LiveBar

        self.bar = (
            None if quiet else LiveBar(out, "per-sample gradients", total, TimeElapsedColumn())
        )

    def __enter__(self) -> Callable[[int, int], None]:
        if self.bar is not None:
            self.bar.__enter__()
        return self.update

    def update(self, done: int, total: int) -> None:
        if self.bar is not None:
            self.bar.progress.update(self.bar.task, completed=done, total=total)

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)


def stored_body(report: dict[str, Any]) -> dict[str, Any]:
    """The report without its per-sample columns, which are stored as rows."""
    return {k: v for k, v in report.items() if k != "samples"}


def save_report(store: Store, record: Run, report: dict[str, Any], *, key: str) -> int:
    """The report into the store in one transaction (the same settings again replace it)."""
    samples = dict(report["samples"])
    samples["sample"] = samples.pop("index")
    return store.save_lab_report(
        "conflict", stored_body(report), run_id=record.id, key=key, samples=samples
    )


def show_stored(store: Store, record: Run, png: Path | None, as_json: bool) -> None:
    """The run's newest stored report, printed (and drawn) as when it was computed."""
    stored = store.latest_lab_report("conflict", run_id=record.id)
    if stored is None:
        raise CaatError(f"run {record.id} has no per-sample report yet: caat conflict {record.id}")
    report = json.loads(stored.body)
    samples = store.sample_conflicts(stored.id)  # type: ignore[arg-type]
    samples["index"] = samples.pop("sample")
    report["samples"] = samples
    if png is not None:
        from caat_app.lab.conflict_figure import save_conflict_figure

        save_conflict_figure(report, png, title=f"run {record.id} ({record.name})")
    if as_json:
        print(json.dumps(report))
        return
    print_report(report)
    if report.get("ablation"):
        print_ablation(report["ablation"])
    if png is not None:
        out.print(Text(f"figure: {png}"))


# --------------------------------------------------------------------------- terminal


def print_report(report: dict[str, Any]) -> None:
    """Protocol, distribution, histogram, the top-k images, the classes, the findings."""
    from caat_app.lab.conflict_report import (
        class_table,
        histogram_text,
        quantile_table,
        top_grid,
    )

    out.print(
        Text(
            f"run {report['run']} ({report['name']}), {report['checkpoint']} checkpoint "
            f"({report['weights']}): {report['n']} training images, {report['params']} "
            f"parameters, {report['seconds']:.1f} s"
        )
    )
    out.print(Text(f"protocol: {report['protocol']}; attack: {report['attack']}", style="dim"))
    out.print(quantile_table(report))
    out.print(Text("μ_i histogram (log scale):"))
    out.print(histogram_text(report["histogram"]))
    out.print(top_grid(report["top"]))
    out.print(class_table(report))
    for sentence in report["findings"]:
        out.print(Text(sentence))


# --------------------------------------------------------------------------- ablation


def run_ablation(
    store: Store,
    record: Run,
    report: dict[str, Any],
    fraction: float,
    seeds: list[int] | None,
    *,
    jobs: int,
    quiet: bool,
) -> dict[str, Any]:
    """Queue and train the ablation's sweep in workers; its variants, front and finding."""
    from caat_app.cli.train import check_runnable
    from caat_app.lab.conflict_report import ablation_drops
    from caat_app.runs.stored import config_of
    from caat_app.runs.sweep import plan_sweep

    cfg = config_of(record)
    drops = ablation_drops(report["samples"], cfg.drop, fraction, seed=RANDOM_SEED)
    sweep = f"ablate-{record.id}-{fraction * 100:g}pct"
    configs = ablation_configs(cfg, drops, sweep, seeds or [cfg.seed])
    check_runnable(cfg)
    new, held = plan_sweep(store, sweep, [c for _, c in configs])
    if not quiet:
        out.print(
            Text(
                f"ablation sweep {sweep}: removing {drops['count']} of {drops['candidates']} "
                f"training images; {len(new)} runs queued now, {len(held)} already held "
                f"(the unchanged recipe at seed {cfg.seed} is run {record.id} itself)"
            )
        )
    counts, stopped = _train(store, sweep, jobs, quiet)
    if stopped:
        out.print(Text(f"stopped; resume with: caat sweep --name {sweep} --resume"))
        raise typer.Exit(130)
    return ablation_result(store, record, sweep, configs, drops) | {"counts": counts}


def ablation_configs(
    cfg: RunConfig, drops: dict[str, Any], sweep: str, seeds: Sequence[int]
) -> list[tuple[str, RunConfig]]:
    """The sweep's (variant, config)s: per seed the top and the random removal, and the
    unchanged recipe for every seed but the run's own (the run itself is that one)."""
    from caat_app.config import config_from_json
    from caat_app.lab.conflict_report import VARIANTS

    base = cfg.model_dump(mode="json")
    configs = []
    for seed in seeds:
        for variant in VARIANTS:
            if variant == "unchanged" and seed == cfg.seed:
                continue
            extra = drops.get(variant, [])
            name = f"{sweep}-{variant}-s{seed}"
            drop = sorted(set(cfg.drop) | set(extra))
            configs.append(
                (variant, config_from_json(base | {"name": name, "seed": seed, "drop": drop}))
            )
    return configs


def _train(store: Store, sweep: str, jobs: int, quiet: bool) -> tuple[dict[str, int], bool]:
    """The sweep's queued runs in workers, with `caat sweep`'s bar; whether Ctrl-C stopped it."""
    from caat_app.cli.progress import SweepProgress
    from caat_app.runs.launcher import list_gpus
    from caat_app.runs.sweep import run_sweep

    def work(should_stop: Callable[[], bool]) -> dict[str, int]:
        if quiet:
            return run_sweep(store, sweep, jobs=jobs, gpus=list_gpus(), should_stop=should_stop)
        with SweepProgress(out, sweep) as progress:

            def stopping() -> bool:
                progress.stopping = should_stop()
                return bool(progress.stopping)

            return run_sweep(
                store, sweep, jobs=jobs, gpus=list_gpus(), on_progress=progress,
                should_stop=stopping,
            )  # fmt: skip

    return interruptible(work)


def ablation_result(
    store: Store,
    record: Run,
    sweep: str,
    configs: Sequence[tuple[str, RunConfig]],
    drops: dict[str, Any],
) -> dict[str, Any]:
    """The finished variants (the run itself as the unchanged one at its seed) on the
    SA-AA front of training's per-epoch PGD, with their summary and finding."""
    from caat_app.analysis.points import front_view
    from caat_app.lab.conflict_report import ablation_summary
    from caat_app.runs.grid import config_key
    from caat_app.runs.stored import config_of
    from caat_app.runs.sweep import current_runs

    variant_of = {config_key(c): variant for variant, c in configs}
    runs = [record, *current_runs(store.sweep_runs(sweep))]
    rows = []
    for run in runs:
        variant = "unchanged" if run.id == record.id else variant_of.get(config_key(config_of(run)))
        if variant and run.status == RunStatus.FINISHED and run.best_test_adv is not None:
            seed = config_of(run).seed
            rows.append({"variant": variant, "run": run.id, "seed": seed,
                         "sa": run.best_test_clean, "aa": run.best_test_adv})  # fmt: skip
    view = front_view(runs, split="test", results={})  # one AA source for all: training's PGD
    return {"sweep": sweep, "drops": drops, "front": view.report, "labels": list(view.labels)} | (
        ablation_summary(rows)
    )


def print_ablation(ablation: dict[str, Any]) -> None:
    """The front's points, the variants against the unchanged recipe, and the finding."""
    from caat_app.cli.render import front_table

    out.print(front_table(ablation["front"], "test split, AA: per-epoch PGD (training-time check)"))
    table = Table(title=Text(f"ablation {ablation['sweep']} (test, %)"), title_justify="left")
    for col in ("removed", "runs", "SA", "AA", "ΔSA", "ΔAA"):
        table.add_column(col, justify="left" if col in {"removed", "runs"} else "right")
    names = {"unchanged": "nothing", "top": "most conflicting", "random": "random (control)"}
    for v in ablation["variants"]:
        table.add_row(
            names[v["variant"]],
            " ".join(str(i) for i in v["runs"]),
            _pct(v["sa"], v["sa_std"]),
            _pct(v["aa"], v["aa_std"]),
            f"{v['d_sa'] * 100:+.1f}" if "d_sa" in v else "",
            f"{v['d_aa'] * 100:+.1f}" if "d_aa" in v else "",
        )
    out.print(table)
    for sentence in ablation["findings"]:
        out.print(Text(sentence))
    out.print(Text(f"the front again: caat front --sweep {ablation['sweep']}"))


def _pct(mean: float, std: float | None) -> str:
    return f"{mean * 100:.1f}" + (f" ± {std * 100:.1f}" if std is not None else "")
