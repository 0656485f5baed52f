"""`caat layers RUN`: where the conflict lives, per layer over training. Torch-free.

Reads what a run trained with `--layer-stats N` stored: a heatmap in the terminal (one
line per parameter tensor, one cell per stretch of training), a table of each layer's
mean and last φ and μ, which layers conflict most, and on request the heatmap as a
figure (`--plot`) or everything as JSON.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.table import Table
from rich.text import Text

from caat_app.analysis.layers import (
    METRICS,
    LayerMap,
    binned,
    cell_colour,
    findings,
    layer_map,
    layer_summary,
    save_layer_figure,
    short_names,
    value_range,
)
from caat_app.cli.base import err, open_store, out
from caat_app.cli.options import DbOption, JsonOption, RunArgument
from caat_app.errors import CaatError
from caat_app.runs.stored import option

_COLUMNS = 60  # heatmap cells per line in the terminal
_FIGURES = (".png", ".svg", ".pdf")


def layers_command(
    run: str = RunArgument,
    metric: str = typer.Option("phi", help=f"heatmap of {' or '.join(METRICS)}"),
    plot: Path | None = typer.Option(None, "--plot", help="write the heatmap: .png, .svg or .pdf"),
    as_json: bool = JsonOption,
    db: str | None = DbOption,
) -> None:
    """Per-layer conflict over training (φ or μ per parameter tensor): a run trained with
    `--layer-stats N`. Shows a heatmap, each layer's mean and last φ and μ, and which
    layers conflict most."""
    if metric not in METRICS:
        raise CaatError(f"--metric: unknown {metric!r}; choose one of {', '.join(METRICS)}")
    if plot is not None and plot.suffix.lower() not in _FIGURES:
        raise CaatError(f"--plot: {plot.name} is not .png, .svg or .pdf")
    store = open_store(db)
    record = store.find_run(run)
    assert record.id is not None
    rows = [r.model_dump() for r in store.layer_metrics(record.id)]
    if not rows:
        raise CaatError(
            f"run {record.id} ({record.name}) recorded no per-layer conflict: "
            "train with --layer-stats N (e.g. 20) to record it"
        )
    stored = store.run_layers(record.id)
    names, sizes = [s.name for s in stored], [s.size for s in stored]
    lmap = layer_map(names, sizes, rows, metric)
    summary = layer_summary(names, sizes, rows)
    if plot is not None:
        _save(lmap, plot, f"run {record.id} ({record.name}): per-layer {METRICS[metric]}")
    every = option(record, "layer_stats")
    if as_json:
        report = {"run": record.id, "name": record.name, "every": every, "layers": summary}
        print(json.dumps(report | {"heatmap": lmap.to_json()}, indent=2))
        return
    out.print(
        Text(
            f"run {record.id} ({record.name}): per-layer {METRICS[metric]}, "
            f"{_every(every)}, {len(lmap.steps)} recorded steps, {len(lmap.names)} layers"
        )
    )
    _print_heatmap(lmap)
    out.print(_summary_table(summary))
    for sentence in findings(summary):
        out.print(Text(sentence))


def _save(lmap: LayerMap, path: Path, title: str) -> None:
    """Write the figure; an OS refusal is a one-line error."""
    try:
        save_layer_figure(lmap, path, title=title)
    except OSError as exc:
        raise CaatError(f"cannot write {path}: {exc.strerror or exc}") from None
    err.print(Text(f"wrote {path}"))


def _print_heatmap(lmap: LayerMap) -> None:
    """One line per layer, one coloured cell per stretch of training, and its legend."""
    shown = binned(lmap, _COLUMNS)
    lo, hi = value_range(lmap)
    labels = short_names(shown.names)
    width = max(len(label) for label in labels)
    for label, row in zip(labels, shown.values, strict=True):
        line = Text(label.ljust(width) + " ")
        for value in row:
            line.append("█", style="rgb({},{},{})".format(*cell_colour(lmap.metric, value, lo, hi)))
        out.print(line)
    span = f"steps {shown.steps[0]}…{lmap.steps[-1]} (epochs {shown.epochs[0]}…{lmap.epochs[-1]})"
    if lmap.metric == "phi":
        scale = "red φ = −1 (opposed), white 0, blue +1 (aligned)"
    else:
        scale = f"log scale, dark {lo:.3g} to yellow {hi:.3g}"
    out.print(Text(f"{' ' * width} {span}; {scale}; grey: not stored", style="dim"))


def _every(every: Any) -> str:
    return "every step" if every == 1 else f"every {every} steps"


def _number(value: float | None, fmt: str) -> str:
    return "—" if value is None else format(value, fmt)


def _summary_table(summary: list[dict[str, Any]]) -> Table:
    table = Table(title="per layer, over the recorded steps", title_justify="left")
    for col in ("#", "layer", "params", "mean φ", "last φ", "mean μ", "last μ", "μ share"):
        table.add_column(col, justify="left" if col == "layer" else "right")
    labels = short_names([s["name"] for s in summary])
    for s, label in zip(summary, labels, strict=True):
        share = None if s["mu_share"] is None else 100 * s["mu_share"]
        table.add_row(
            str(s["layer"]),
            label,
            str(s["size"]),
            _number(s["mean_phi"], "+.3f"),
            _number(s["last_phi"], "+.3f"),
            _number(s["mean_mu"], ".3g"),
            _number(s["last_mu"], ".3g"),
            _number(share, ".1f") + ("%" if share is not None else ""),
        )
    return table
