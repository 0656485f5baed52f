"""The per-sample conflict figure: the histogram of μ_i, μ_i against the clean margin, and
a grid of the top-k most conflicting training images with their numbers.

Drawn from `conflict_report.build_report`'s dict; matplotlib is imported inside the
drawing function, so importing this module costs nothing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from caat_app.analysis.figure import figure_format

COLUMNS_MAX = 8
"""Top-k images per row of the grid."""
_RC: dict[str, Any] = {"font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8}


def save_conflict_figure(report: Mapping[str, Any], path: Path, *, title: str = "") -> None:
    """Write the figure as .png, .svg or .pdf (from the suffix; checked before drawing)."""
    path = Path(path)
    suffix = figure_format(path)

    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    top = report["top"]
    cols = max(1, min(COLUMNS_MAX, len(top)))
    rows = math.ceil(len(top) / cols) if top else 0
    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=(max(1.5 * cols, 9.0), 2.6 + 1.7 * rows), layout="constrained")
        grid = fig.add_gridspec(1 + rows, 2 * cols, height_ratios=[1.4] + [1.0] * rows)
        _histogram(fig.add_subplot(grid[0, :cols]), report)
        _scatter(fig.add_subplot(grid[0, cols:]), report)
        for i, sample in enumerate(top):
            r, c = divmod(i, cols)
            _image(fig.add_subplot(grid[1 + r, 2 * c : 2 * c + 2]), sample)
        if title:
            fig.suptitle(title)
        path.parent.mkdir(parents=True, exist_ok=True)
        save: dict[str, Any] = {"bbox_inches": "tight"}
        if suffix == ".png":
            save["dpi"] = 150
        fig.savefig(path, format=suffix[1:], **save)


def _histogram(ax: Any, report: Mapping[str, Any]) -> None:
    hist = report["histogram"]
    edges = np.asarray(hist["edges"], dtype=float)
    if len(edges):
        ax.stairs(hist["counts"], 10**edges, fill=True, alpha=0.7)
        ax.set_xscale("log")
    if report["top"]:
        ax.axvline(min(s["mu"] for s in report["top"]), color="C3", lw=1, ls="--", label="top-k")
        ax.legend(frameon=False)
    ax.set_xlabel("per-sample conflict μ_i")
    ax.set_ylabel("training images")
    ax.set_title(f"μ_i over {report['n']} images")


def _scatter(ax: Any, report: Mapping[str, Any]) -> None:
    samples = report["samples"]
    mu = np.asarray(samples["mu"], dtype=float)
    margin = np.asarray(samples["margin"], dtype=float)
    ax.scatter(margin, np.maximum(mu, 1e-12), s=3, alpha=0.4, lw=0)
    ax.set_yscale("log")
    rho = report["correlation"].get("mu~margin")
    ax.set_xlabel("clean margin (true logit − largest other)")
    ax.set_ylabel("μ_i")
    ax.set_title("μ_i against margin" + (f" (Spearman ρ = {rho:+.2f})" if rho is not None else ""))


def _image(ax: Any, sample: Mapping[str, Any]) -> None:
    img = np.asarray(sample["pixels"], dtype=np.uint8)
    if img.shape[0] == 1:
        ax.imshow(img[0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    else:
        ax.imshow(img[:3].transpose(1, 2, 0), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(
        f"#{sample['index']} y={sample['label']}→{sample['pred_c']}\n"
        f"margin {sample['margin']:+.2f}  loss {sample['loss_c']:.2f}\n"
        f"φ {sample['phi']:+.2f}  μ {sample['mu']:.3g}",
        fontsize=7,
    )
