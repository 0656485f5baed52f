"""Publication figure of SA-AA fronts, drawn from `front.report()`'s dict.

matplotlib is imported inside the function: the dashboard and the CLI import
this module freely, and only `caat front --plot` pays for matplotlib.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

FORMATS = (".png", ".svg", ".pdf")
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
# Dates left out of SVG/PDF so the same report gives byte-identical files.
FIGURE_METADATA: dict[str, dict[str, Any]] = {
    ".png": {},
    ".svg": {"Date": None},
    ".pdf": {"CreationDate": None},
}


def figure_format(path: Path) -> str:
    """The output format from the suffix; checked before any drawing so a typo fails fast."""
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(
            f"unsupported figure format {path.suffix or '(none)'!r} for {path.name!r}; "
            f"use {', '.join(FORMATS)}"
        )
    return suffix


# Journal-sized text; text stays text in SVG, TrueType (editable) in PDF.
FIGURE_RC: dict[str, Any] = {
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "svg.fonttype": "none",
    "pdf.fonttype": 42,
}


def save_front_figure(
    rep: dict[str, Any],
    path: Path,
    *,
    sa_label: str = "standard accuracy (%)",
    aa_label: str = "adversarial accuracy (%)",
    title: str | None = None,
) -> None:
    """Draw each family's points (mean ± sample std) and its Pareto front, and save it.

    Accuracies are plotted in percent. Single-seed points get no error bars (their
    spread is unknown) and a hollow marker, so they are not mistaken for tight ones.
    Each front is drawn as its attainment staircase: the boundary of what the
    family's points dominate, which is what the hypervolume measures.
    """
    path = Path(path)
    suffix = figure_format(path)

    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    with matplotlib.rc_context(FIGURE_RC):
        fig = Figure(figsize=(6.0, 4.5))
        ax = fig.add_subplot()
        handles = _draw_families(ax, rep, matplotlib.colormaps["tab10"].colors)
        _dress_axes(ax, rep, handles, sa_label=sa_label, aa_label=aa_label, title=title)
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        save: dict[str, Any] = {"metadata": FIGURE_METADATA[suffix], "bbox_inches": "tight"}
        if suffix == ".png":
            save["dpi"] = 200
        fig.savefig(path, format=suffix[1:], **save)


def _draw_families(ax: Any, rep: dict[str, Any], colours: Sequence[Any]) -> list[Any]:
    """Every family in the report's order, one colour and marker each; their legend entries."""
    from matplotlib.lines import Line2D

    points: list[dict[str, Any]] = rep.get("points", [])
    families: dict[str, Any] = rep.get("families", {})
    order = list(families) + sorted({p["family"] for p in points} - set(families))
    handles: list[Any] = []
    for i, fam in enumerate(order):
        colour = colours[i % len(colours)]
        marker = _MARKERS[i % len(_MARKERS)]
        _draw_family(ax, [p for p in points if p["family"] == fam], colour, marker)
        hv = families.get(fam, {}).get("hypervolume")
        name = fam if hv is None else f"{fam}  (HV {hv:.3f})"
        # One entry per family: its marker over its front's line style.
        handles.append(Line2D([], [], color=colour, marker=marker, linestyle="--", label=name))
    if any(p.get("seeds", 1) <= 1 for p in points):
        handles.append(
            Line2D(
                [],
                [],
                color="0.35",
                marker="o",
                markerfacecolor="white",
                linestyle="none",
                label="single seed (spread unknown)",
            )
        )
    return handles


def _dress_axes(
    ax: Any,
    rep: dict[str, Any],
    handles: list[Any],
    *,
    sa_label: str,
    aa_label: str,
    title: str | None,
) -> None:
    """Axis titles, grid and legend (titled with the hypervolume's reference), or a note
    where there is nothing to draw."""
    if not rep.get("points", []):
        ax.text(
            0.5,
            0.5,
            "No finished runs to compare.",
            ha="center",
            va="center",
            transform=ax.transAxes,
        )
    ax.set_xlabel(sa_label)
    ax.set_ylabel(aa_label)
    if title:
        ax.set_title(title)
    ax.grid(True, linewidth=0.5, alpha=0.4)
    ax.set_axisbelow(True)
    ax.margins(0.08)
    if handles:
        ref = rep.get("reference")
        ax.legend(
            handles=handles,
            loc="best",
            frameon=False,
            title=f"hypervolume vs ({ref[0]:g}, {ref[1]:g})" if ref else None,
            title_fontsize=8,
        )


def _draw_family(ax: Any, points: list[dict[str, Any]], colour: Any, marker: str) -> None:
    """One family: error-barred points, hollow single seeds, labels, front staircase."""
    many = [p for p in points if p.get("seeds", 1) > 1]
    single = [p for p in points if p.get("seeds", 1) <= 1]
    if many:
        ax.errorbar(
            [100 * p["sa"] for p in many],
            [100 * p["aa"] for p in many],
            xerr=[100 * p.get("sa_std", 0.0) for p in many],
            yerr=[100 * p.get("aa_std", 0.0) for p in many],
            fmt=marker,
            color=colour,
            markersize=6,
            elinewidth=0.8,
            capsize=2.5,
            zorder=3,
        )
    if single:
        ax.plot(
            [100 * p["sa"] for p in single],
            [100 * p["aa"] for p in single],
            linestyle="none",
            marker=marker,
            markersize=6,
            markerfacecolor="white",
            markeredgecolor=colour,
            markeredgewidth=1.2,
            zorder=3,
        )
    for p in points:
        ax.annotate(
            p["label"],
            (100 * p["sa"], 100 * p["aa"]),
            xytext=(4, 4),
            textcoords="offset points",
            fontsize=7,
            color=colour,
        )

    front = sorted((p for p in points if p.get("on_front")), key=lambda p: (p["sa"], p["aa"]))
    if len(front) > 1:
        # where="pre": between two front points the line drops first, then runs
        # right, so every corner is a point the family attains or beats.
        ax.step(
            [100 * p["sa"] for p in front],
            [100 * p["aa"] for p in front],
            where="pre",
            color=colour,
            linewidth=1.2,
            linestyle="--",
            zorder=2,
        )
