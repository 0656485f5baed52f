"""`caat synth`: the paper's Section 3 reproduced (its synthetic task, Theorem 1's bound
and Figure 2).

A self-contained experiment: six logistic regressions on two digits train in seconds,
so it trains no runs; its report lands in the store as a lab report (the dashboard's
Conflict screen draws the newest), and its numbers go to the terminal, `--json`, `--csv`
and `--plot`. torch is imported inside the command only.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from rich.text import Text

from caat_app.attacks.registry import NORMS
from caat_app.cli.base import err, open_store, out
from caat_app.cli.options import DbOption, JsonOption
from caat_app.errors import CaatError
from caat_app.lab.synth_view import synth_table
from caat_app.registry import one_of

SYNTH_DATASETS = ("digits", "mnist")
PAPER_GRID = "0.05,0.1,0.15,0.2,0.25,0.3"  # Fig. 2's budgets
CSV_FIELDS = (
    "delta",
    "sa",
    "aa",
    "val_sa",
    "val_aa",
    "mu",
    "norm_c",
    "norm_a",
    "one_minus_phi",
    "gap",
    "constant",
    "bound",
    "mu_steps",
    "dual_norm_w",
)


def synth(
    deltas: str = typer.Option(PAPER_GRID, help="budgets δ, a comma list (default: Fig. 2's)"),
    norm: str = typer.Option("linf", help=f"budget norm: {one_of(NORMS)}"),
    epochs: int = typer.Option(20, min=1, help="epochs per model (the paper: 20)"),
    dataset: str | None = typer.Option(
        None, help="digits or mnist (default: MNIST when its files are present, else digits)"
    ),
    data_dir: Path | None = typer.Option(None, help="data folder (default $CAAT_DATA)"),
    lr: float = typer.Option(0.1, help="SGD learning rate"),
    batch_size: int = typer.Option(32, min=1, help="minibatch size"),
    seed: int = typer.Option(0, help="seed of the batch order and the t-SNE"),
    tsne: int = typer.Option(500, min=0, help="with --plot: samples per t-SNE panel (0: none)"),
    plot: Path | None = typer.Option(None, "--plot", help="write Fig. 2: .png, .svg or .pdf"),
    csv_path: Path | None = typer.Option(None, "--csv", help="write the table as CSV"),
    as_json: bool = JsonOption,
    db: str | None = DbOption,
) -> None:
    """The paper's synthetic experiment: digits 1 vs 2, logistic regression, Vanilla AT
    (λ = 0.5) with the exact inner maximisation, one model per δ; SA, AA, the conflict μ
    with its factors, Theorem 1's bound and the power law fitted to μ(δ)."""
    budgets = parse_deltas(deltas)
    _check(norm, dataset, lr, plot)
    store = open_store(db)
    from caat_app.lab.synth import SynthConfig, as_report, load_task, run_synth

    data = load_task(dataset, data_dir)
    cfg = SynthConfig(
        deltas=budgets,
        norm=norm,
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        seed=seed,
        tsne=tsne if plot is not None else 0,
    )
    result = run_synth(data, cfg)
    rep = as_report(result)
    report_id = store.save_lab_report("synth", rep, key=synth_key(rep))
    if plot is not None:
        from caat_app.lab.synth_figure import save_synth_figure

        _write(plot, lambda: save_synth_figure(rep, result.embeddings, plot))
    if csv_path is not None:
        _write(csv_path, lambda: csv_path.write_text(synth_csv(rep)))
    if as_json:
        print(json.dumps(rep, indent=2))
        return
    out.print(synth_table(rep))
    for sentence in [rep["task"]["note"], *rep["findings"]]:
        out.print(Text(sentence))
    out.print(Text(f"stored as lab report {report_id} (the dashboard's Conflict screen)"))


def synth_key(rep: dict[str, Any]) -> str:
    """What makes two experiments the same: the data set and the recipe."""
    return json.dumps({"dataset": rep["task"]["dataset"], **rep["config"]}, sort_keys=True)


def parse_deltas(text: str) -> tuple[float, ...]:
    """A comma list of distinct budgets, each finite and > 0."""
    values: list[float] = []
    for part in text.split(","):
        try:
            value = float(part)
        except ValueError:
            raise CaatError(f"--deltas: {part.strip()!r} is not a number") from None
        if not (math.isfinite(value) and value > 0):
            raise CaatError(f"--deltas: every budget must be finite and > 0, got {part.strip()}")
        if value in values:
            raise CaatError(f"--deltas: {part.strip()} is listed twice")
        values.append(value)
    return tuple(values)


def _check(norm: str, dataset: str | None, lr: float, plot: Path | None) -> None:
    """The options' own mistakes, before any data is read."""
    if norm not in NORMS:
        raise CaatError(f"--norm: unknown {norm!r}; choose {one_of(NORMS)}")
    if dataset is not None and dataset not in SYNTH_DATASETS:
        raise CaatError(f"--dataset: unknown {dataset!r}; choose {one_of(SYNTH_DATASETS)}")
    if not (math.isfinite(lr) and lr > 0):
        raise CaatError(f"--lr: must be finite and > 0, got {lr:g}")
    if plot is not None and plot.suffix.lower() not in {".png", ".svg", ".pdf"}:
        raise CaatError(f"--plot: {plot.name} is not .png, .svg or .pdf")


def synth_csv(rep: dict[str, Any]) -> str:
    """The rows with every measured field, full precision."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    for r in rep["rows"]:
        writer.writerow([repr(r[k]) for k in CSV_FIELDS])
    return buf.getvalue()


def _write(path: Path, write: Callable[[], Any]) -> None:
    """Write a file the person asked for; an OS refusal is a one-line error."""
    try:
        write()
    except OSError as exc:
        raise CaatError(f"cannot write {path}: {exc.strerror or exc}") from None
    err.print(Text(f"wrote {path}"))
