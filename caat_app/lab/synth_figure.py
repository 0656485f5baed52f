"""Figure 2 of the paper, redrawn from `caat synth`'s report: (a) t-SNE of the per-sample
g_c and g_a, one panel per δ; (b) SA and AA, μ beside Theorem 1's bound with the
fitted power law, and μ's three factors, against δ.

Torch-free; matplotlib is imported inside the drawing function (the file formats, the
journal-sized text and the reproducible metadata are `analysis.figure`'s).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from caat_app.analysis.figure import FIGURE_METADATA, FIGURE_RC, figure_format

Embeddings = Mapping[float, tuple[np.ndarray, np.ndarray]]
_C, _A, _BOUND = "tab:blue", "tab:orange", "tab:red"


def save_synth_figure(rep: dict[str, Any], embeddings: Embeddings, path: Path) -> None:
    """Fig. 2a (when there are embeddings) above Fig. 2b, saved as PNG, SVG or PDF."""
    path = Path(path)
    suffix = figure_format(path)

    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    k = len(embeddings)
    with matplotlib.rc_context(FIGURE_RC):
        fig = Figure(figsize=(max(9.0, 2.0 * k), 7.2 if k else 3.6), layout="constrained")
        if k:
            top, bottom = fig.subfigures(2, 1, height_ratios=[1.0, 1.2])
            _draw_tsne(top, embeddings)
        else:
            bottom = fig
        _draw_curves(bottom, rep)
        path.parent.mkdir(parents=True, exist_ok=True)
        save: dict[str, Any] = {"metadata": FIGURE_METADATA[suffix]}
        if suffix == ".png":
            save["dpi"] = 200
        fig.savefig(path, format=suffix[1:], **save)


def _draw_tsne(sub: Any, embeddings: Embeddings) -> None:
    """One panel per δ: each training sample's g_c (blue) and g_a (orange)."""
    axes = sub.subplots(1, len(embeddings), squeeze=False)[0]
    for ax, (delta, (emb_c, emb_a)) in zip(axes, sorted(embeddings.items()), strict=True):
        ax.scatter(emb_c[:, 0], emb_c[:, 1], s=3, c=_C, alpha=0.6, linewidths=0, label="g_c")
        ax.scatter(emb_a[:, 0], emb_a[:, 1], s=3, c=_A, alpha=0.6, linewidths=0, label="g_a")
        ax.set_title(f"δ = {delta:g}")
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0].legend(loc="best", frameon=False, markerscale=3)
    sub.suptitle("(a) t-SNE of per-sample gradients, last epoch")


def _draw_curves(sub: Any, rep: dict[str, Any]) -> None:
    """Accuracies, μ with its bound and fit, and μ's three factors, against δ."""
    rows = rep["rows"]
    deltas = np.array([r["delta"] for r in rows])
    x = np.arange(len(rows))
    labels = [f"{d:g}" for d in deltas]
    ax_acc, ax_mu, ax_fac = sub.subplots(1, 3)
    width = 0.38
    ax_acc.bar(x - width / 2, [100 * r["sa"] for r in rows], width, color=_C, label="SA")
    ax_acc.bar(x + width / 2, [100 * r["aa"] for r in rows], width, color=_A, label="AA (exact)")
    ax_acc.set_xticks(x, labels)
    ax_acc.set_xlabel("δ")
    ax_acc.set_ylabel("test accuracy (%)")
    ax_acc.legend(loc="lower left", frameon=False)

    ax_mu.plot(deltas, [r["mu"] for r in rows], "o-", color="black", label="μ measured")
    ax_mu.plot(deltas, [r["bound"] for r in rows], "s-", color=_BOUND, label="bound ½δ²K²")
    fit = rep.get("fit")
    if fit:
        grid = np.geomspace(deltas.min(), deltas.max(), 50)
        law = fit["prefactor"] * grid ** fit["exponent"]
        ax_mu.plot(grid, law, "--", color="0.5", label=f"fit ∝ δ^{fit['exponent']:.2f}")
    ax_mu.set_xscale("log")
    ax_mu.set_yscale("log")
    ax_mu.set_xlabel("δ")
    ax_mu.set_ylabel("μ = ‖g_c‖‖g_a‖(1 − φ)")
    ax_mu.legend(loc="best", frameon=False)

    factors = (("norm_c", "‖g_c‖", _C), ("norm_a", "‖g_a‖", _A), ("one_minus_phi", "1 − φ", "0.4"))
    width = 0.27
    for i, (key, name, colour) in enumerate(factors):
        heights = [max(r[key], 1e-12) for r in rows]
        ax_fac.bar(x + (i - 1) * width, heights, width, color=colour, label=name)
    ax_fac.set_yscale("log")
    ax_fac.set_xticks(x, labels)
    ax_fac.set_xlabel("δ")
    ax_fac.legend(loc="best", frameon=False)
    for ax in (ax_acc, ax_mu, ax_fac):
        ax.grid(True, linewidth=0.5, alpha=0.4)
        ax.set_axisbelow(True)
    sub.suptitle(f"(b) {rep['task']['dataset']}, {rep['config']['norm']}: accuracy and conflict")
