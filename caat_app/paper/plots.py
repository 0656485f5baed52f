"""The paper's figures from a report of `caat_app.paper.report`: fronts, μ curves, budget lines.

Fronts are drawn by `analysis.figure` (the figure `caat front --plot` writes); μ per
epoch (Fig. 3) and accuracy against the budget (Fig. 8) are drawn here, one panel per
data set and model (or training attack), one line per run. matplotlib is imported
inside the functions that draw.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from caat_app.present import format_budget

_RC: dict[str, Any] = {
    "font.size": 9,
    "axes.titlesize": 9,
    "axes.labelsize": 9,
    "legend.fontsize": 7,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
}
_COLOURS = {"vanilla": ("tab:blue", "tab:green"), "caat": ("tab:orange", "tab:red")}
"""Vanilla AT blues and greens, CA-AT oranges and reds, as the paper's figures colour them."""


def draw(report: Mapping[str, Any], folder: Path, stem: str) -> list[Path]:
    """Every figure the report's kind has; the paths written (Table 1 has none)."""
    kind = report["kind"]
    if kind == "front":
        return _fronts(report, folder, stem)
    if kind == "mu":
        return _mu_figures(report, folder, stem)
    if kind == "budget":
        path = folder / f"{stem}.png"
        _budget_figure(report["lines"], path, report["figure_title"])
        return [path]
    return []


def _fronts(report: Mapping[str, Any], folder: Path, stem: str) -> list[Path]:
    """The first front is the experiment's figure; each other attack's goes beside it."""
    from caat_app.analysis.figure import save_front_figure

    paths = []
    for i, front in enumerate(report["fronts"]):
        suffix = "" if i == 0 else f"-{front['attack']}" + ("-l2" if front["norm"] == "l2" else "")
        path = folder / f"{stem}{suffix}.png"
        sa, aa = front["labels"]
        save_front_figure(
            front["report"], path, sa_label=sa, aa_label=aa, title=report["figure_title"]
        )
        paths.append(path)
    return paths


def _mu_figures(report: Mapping[str, Any], folder: Path, stem: str) -> list[Path]:
    """One figure per sub-figure (Fig. 3a, 3b), its panels side by side."""
    exp = report["experiment"]
    paths = []
    for letter in dict.fromkeys(p["figure"] for p in report["panels"]):
        panels = [p for p in report["panels"] if p["figure"] == letter]
        path = folder / f"{stem.replace(exp, exp + letter, 1)}.png"
        title = f"{report['figure_title']} ({exp}{letter})"
        if letter == "c" and report.get("budget_view"):
            _budget_view_figure(report["budget_view"], path, title)
        else:
            _mu_figure(panels, path, title)
        paths.append(path)
    return paths


def _budget_view_figure(groups: Sequence[Mapping[str, Any]], path: Path, title: str) -> None:
    """Left: μ per epoch (median, quartile band) per method and ε; right: the last epoch's
    median against ε, one line per method."""
    import matplotlib

    with matplotlib.rc_context(_RC):
        fig, (during, last) = _figure(2)
        for group in groups[:1]:  # the experiment has one budget group
            for k, line in enumerate(group["lines"]):
                for j, run in enumerate(line["runs"]):
                    colour = _colour(line["method"], k)
                    alpha = 0.35 + 0.65 * (j + 1) / len(line["runs"])
                    name = f"{line['label']}, ε={format_budget(run['eps'])}"
                    during.plot(run["epoch"], run["median"], color=colour, alpha=alpha, label=name)
                    during.fill_between(
                        run["epoch"], run["q25"], run["q75"], color=colour, alpha=0.12 * alpha
                    )
                colour = _colour(line["method"], k)
                label = line["label"]
                last.plot(line["eps"], line["last_mu"], marker="o", color=colour, label=label)
            ticks = sorted({e for line in group["lines"] for e in line["eps"]})
            last.set_xticks(ticks, [format_budget(e) for e in ticks])
        during.set_yscale("log")
        during.set_xlabel("epoch")
        during.set_ylabel("μ per epoch: median, quartile band")
        last.set_xlabel("training budget ε")
        last.set_ylabel("μ, last epoch's median")
        for ax in (during, last):
            ax.grid(True, linewidth=0.5, alpha=0.4)
            ax.legend(frameon=False)
        fig.suptitle(title)
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=200, bbox_inches="tight")


def _figure(panels: int) -> tuple[Any, list[Any]]:
    """A row of `panels` axes in a figure sized for a paper's full width."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3.4 * max(panels, 1) + 0.5, 3.2))
    axes = [fig.add_subplot(1, max(panels, 1), i + 1) for i in range(max(panels, 1))]
    return fig, axes


def _colour(method: str, index: int) -> str:
    shades = _COLOURS.get(method, ("tab:gray", "tab:brown"))
    return shades[index % len(shades)]


def _mu_figure(panels: Sequence[Mapping[str, Any]], path: Path, title: str) -> None:
    """μ per epoch on a log axis, one line per run, one panel per setting."""
    import matplotlib

    with matplotlib.rc_context(_RC):
        fig, axes = _figure(len(panels))
        for ax, panel in zip(axes, panels, strict=False):
            seen: dict[str, int] = {}
            for line in panel["lines"]:
                k = seen[line["method"]] = seen.get(line["method"], -1) + 1
                if line["mu"]:
                    ax.plot(
                        line["epochs"],
                        line["mu"],
                        color=_colour(line["method"], k),
                        label=line["label"],
                        linewidth=1.2,
                    )
            if any(line["mu"] for line in panel["lines"]):
                ax.set_yscale("log")
                ax.legend(frameon=False)
            else:
                ax.text(0.5, 0.5, "no finished runs", ha="center", transform=ax.transAxes)
            ax.set_title(textwrap.fill(panel["panel"], 36))
            ax.set_xlabel("epoch")
            ax.grid(True, linewidth=0.5, alpha=0.4)
        axes[0].set_ylabel("μ = ‖g_c‖·‖g_a‖·(1 − φ), epoch mean")
        fig.suptitle(title)
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=200, bbox_inches="tight")


def _budget_figure(lines: Sequence[Mapping[str, Any]], path: Path, title: str) -> None:
    """Accuracy against the attack budget: one panel per attack, one line per run."""
    import matplotlib

    attacks = list(dict.fromkeys(line["attack"] for line in lines)) or ["(no runs)"]
    train_eps = sorted({line["train_eps"] for line in lines})
    with matplotlib.rc_context(_RC):
        fig, axes = _figure(len(attacks))
        for ax, attack in zip(axes, attacks, strict=False):
            for line in (ln for ln in lines if ln["attack"] == attack):
                k = train_eps.index(line["train_eps"])
                ax.plot(
                    line["eps"],
                    [100 * a for a in line["accuracy"]],
                    color=_colour(line["method"], k),
                    marker="os"[k % 2],
                    linestyle="-" if k == 0 else "--",
                    label=line["label"],
                    linewidth=1.2,
                )
            ticks = sorted({e for ln in lines for e in ln["eps"]})
            ax.set_xticks(ticks, [format_budget(e) for e in ticks], rotation=45)
            ax.set_title(attack)
            ax.set_xlabel("attack budget ε (0: clean)")
            ax.grid(True, linewidth=0.5, alpha=0.4)
            if lines:
                ax.legend(frameon=False)
        axes[0].set_ylabel("accuracy (%)")
        fig.suptitle(title)
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=200, bbox_inches="tight")
