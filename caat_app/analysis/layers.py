"""Where the conflict lives: per-layer φ and μ over training, as a heatmap and a ranking.

Built from the rows a run with `layer_stats` stored (`Store.layer_metrics`), as plain
mappings, so the CLI, the dashboard and tests share it without torch. matplotlib is
imported only inside `save_layer_figure`.

Per layer l, μ_l = ‖g_c,l‖·‖g_a,l‖·(1 − φ_l). The per-layer μ add up to at most the
whole model's μ (Cauchy-Schwarz: Σ‖g_c,l‖‖g_a,l‖ ≤ ‖g_c‖‖g_a‖, and the dot products
add up exactly), so a layer's share of Σμ_l says where the measured conflict sits.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from caat_app.analysis.figure import figure_format

METRICS = {"phi": "φ = cos(g_c, g_a)", "mu": "μ = ‖g_c‖·‖g_a‖·(1 − φ)"}
"""The metrics a heatmap shows, with their label."""


@dataclass(frozen=True)
class LayerMap:
    """One metric per layer (rows, flat-buffer order) and recorded step (columns)."""

    metric: str
    names: tuple[str, ...]
    sizes: tuple[int, ...]
    steps: tuple[int, ...]
    epochs: tuple[int, ...]
    values: tuple[tuple[float | None, ...], ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "layers": list(self.names),
            "steps": list(self.steps),
            "epochs": list(self.epochs),
            "values": [list(row) for row in self.values],
        }


def _finite(value: Any) -> float | None:
    """A stored value as a float, None for a missing or non-finite one."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def check_metric(metric: str) -> str:
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
    return metric


def layer_map(
    names: Sequence[str], sizes: Sequence[int], rows: Sequence[Mapping[str, Any]], metric: str
) -> LayerMap:
    """The heatmap's data: `metric` of each layer at each recorded step (None: not stored).

    A layer index past `names` (names missing from the store) is named `layer i`.
    """
    check_metric(metric)
    steps = sorted({int(r["step"]) for r in rows})
    column = {step: i for i, step in enumerate(steps)}
    epoch_of = {int(r["step"]): int(r["epoch"]) for r in rows}
    count = max([len(names), *(int(r["layer"]) + 1 for r in rows)])
    full_names = [*names, *(f"layer {i}" for i in range(len(names), count))]
    full_sizes = [*sizes, *([0] * (count - len(sizes)))]
    grid: list[list[float | None]] = [[None] * len(steps) for _ in range(count)]
    for r in rows:
        grid[int(r["layer"])][column[int(r["step"])]] = _finite(r.get(metric))
    return LayerMap(
        metric,
        tuple(full_names),
        tuple(full_sizes[:count]),
        tuple(steps),
        tuple(epoch_of[s] for s in steps),
        tuple(tuple(row) for row in grid),
    )


def _mean(values: Sequence[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return sum(kept) / len(kept) if kept else None


def binned(lmap: LayerMap, columns: int) -> LayerMap:
    """At most `columns` columns, each the mean of consecutive steps (for a terminal).

    A bin is named by its first step; a layer with nothing stored in a bin gets None.
    """
    n = len(lmap.steps)
    if columns < 1:
        raise ValueError(f"columns: expected at least 1, got {columns}")
    if n <= columns:
        return lmap
    edges = [round(i * n / columns) for i in range(columns + 1)]
    spans = [(a, b) for a, b in itertools.pairwise(edges) if b > a]
    values = tuple(tuple(_mean(row[a:b]) for a, b in spans) for row in lmap.values)
    return LayerMap(
        lmap.metric,
        lmap.names,
        lmap.sizes,
        tuple(lmap.steps[a] for a, _ in spans),
        tuple(lmap.epochs[a] for a, _ in spans),
        values,
    )


def short_names(names: Sequence[str]) -> list[str]:
    """The names without the dotted prefix they all share (a wrapper's `1.`)."""
    if len(names) < 2:
        return list(names)
    parts = [name.split(".") for name in names]
    shared = 0
    while all(len(p) > shared + 1 and p[shared] == parts[0][shared] for p in parts):
        shared += 1
    return [".".join(p[shared:]) for p in parts]


def layer_summary(
    names: Sequence[str], sizes: Sequence[int], rows: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """Per layer: mean and last φ and μ over the recorded steps, and its share of Σμ_l."""
    phi, mu = layer_map(names, sizes, rows, "phi"), layer_map(names, sizes, rows, "mu")
    means = [_mean(row) for row in mu.values]
    total = sum(m for m in means if m is not None)
    summary = []
    for i, name in enumerate(phi.names):
        last_phi = next((v for v in reversed(phi.values[i]) if v is not None), None)
        last_mu = next((v for v in reversed(mu.values[i]) if v is not None), None)
        share = means[i] / total if means[i] is not None and total > 0 else None
        summary.append(
            {
                "layer": i,
                "name": name,
                "size": phi.sizes[i],
                "mean_phi": _mean(phi.values[i]),
                "last_phi": last_phi,
                "mean_mu": means[i],
                "last_mu": last_mu,
                "mu_share": share,
            }
        )
    return summary


def findings(summary: Sequence[Mapping[str, Any]], top: int = 3) -> list[str]:
    """Which layers conflict most, in sentences: by share of μ and by lowest mean φ."""
    short = short_names([s["name"] for s in summary])
    named = {s["layer"]: name for s, name in zip(summary, short, strict=True)}
    by_mu = sorted((s for s in summary if s["mu_share"] is not None), key=lambda s: -s["mu_share"])[
        :top
    ]
    by_phi = sorted((s for s in summary if s["mean_phi"] is not None), key=lambda s: s["mean_phi"])
    sentences = []
    if by_mu:
        parts = [f"{named[s['layer']]} ({100 * s['mu_share']:.0f}%)" for s in by_mu]
        sentences.append("Most of the conflict μ (share of Σ μ_l): " + ", ".join(parts) + ".")
    if by_phi:
        parts = [f"{named[s['layer']]} (φ {s['mean_phi']:+.2f})" for s in by_phi[:top]]
        sentences.append("Most opposed directions (lowest mean φ): " + ", ".join(parts) + ".")
    return sentences


def cell_colour(metric: str, value: float | None, lo: float, hi: float) -> tuple[int, int, int]:
    """An RGB colour for a heatmap cell: φ red (−1) to white (0) to blue (+1); μ on a
    log scale from dark (lo) to bright yellow (hi); grey where nothing is stored."""
    if value is None:
        return (80, 80, 80)
    if metric == "phi":
        t = max(-1.0, min(1.0, value))
        if t < 0:
            fade = int(255 * (1 + t))
            return (255, fade, fade)
        fade = int(255 * (1 - t))
        return (fade, fade, 255)
    if value <= 0 or lo <= 0 or hi <= lo:
        t = 0.0 if value <= 0 else 1.0
    else:
        t = (math.log(value) - math.log(lo)) / (math.log(hi) - math.log(lo))
    t = max(0.0, min(1.0, t))
    return (int(40 + 215 * t), int(20 + 200 * t), int(90 * (1 - t)))


def value_range(lmap: LayerMap) -> tuple[float, float]:
    """(lo, hi) of the stored values; for μ only the positive ones (its scale is log)."""
    values = [v for row in lmap.values for v in row if v is not None]
    if lmap.metric == "mu":
        values = [v for v in values if v > 0]
    if not values:
        return (0.0, 0.0)
    return (min(values), max(values))


def save_layer_figure(lmap: LayerMap, path: Path, *, title: str | None = None) -> None:
    """Draw the layer × step heatmap (φ diverging around 0, μ on a log scale) and save it."""
    path = Path(path)
    suffix = figure_format(path)

    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.colors import LogNorm, Normalize
    from matplotlib.figure import Figure

    data = [[math.nan if v is None else v for v in row] for row in lmap.values]
    lo, hi = value_range(lmap)
    if lmap.metric == "phi":
        norm, cmap = Normalize(-1.0, 1.0), "RdBu"
    else:
        norm, cmap = (LogNorm(lo, hi) if 0 < lo < hi else Normalize()), "magma"
    height = max(2.5, 0.25 * len(lmap.names) + 1.2)
    fig = Figure(figsize=(7.0, height))
    ax = fig.add_subplot()
    steps = lmap.steps or (0,)
    half = (steps[1] - steps[0]) / 2 if len(steps) > 1 else 0.5  # a cell spans its interval
    image = ax.imshow(
        data,
        aspect="auto",
        interpolation="nearest",
        cmap=cmap,
        norm=norm,
        extent=(steps[0] - half, steps[-1] + half, len(lmap.names) - 0.5, -0.5),
    )
    ax.set_yticks(range(len(lmap.names)), short_names(lmap.names), fontsize=7)
    ax.set_xlabel("training step")
    ax.set_title(title or f"per-layer {METRICS[lmap.metric]}", fontsize=10)
    fig.colorbar(image, ax=ax, label=METRICS[lmap.metric])
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    save: dict[str, Any] = {"bbox_inches": "tight"}
    if suffix == ".png":
        save["dpi"] = 160
    else:
        save["metadata"] = {".svg": {"Date": None}, ".pdf": {"CreationDate": None}}[suffix]
    fig.savefig(path, format=suffix[1:], **save)
