"""The per-sample conflict report: distribution, top-k, and how μ_i relates to margin,
class and loss, as one JSON-ready dict (what `caat conflict` prints and writes as the run's
`conflict.json`, and what the dashboard reads); the half-block image both draw.

Torch-free (numpy only): it works on the per-sample columns `lab.persample` produced,
so the dashboard can read and draw it without importing torch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from rich.table import Table
from rich.text import Text

QUANTILES = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 1.0)
BINS = 24
RELATIONS = (("mu", "margin"), ("mu", "loss_c"), ("mu", "loss_a"), ("phi", "margin"))
"""The rank correlations reported: (per-sample quantity, what it is compared with)."""
SHARES = (0.01, 0.1)
"""The fractions of most conflicting images whose share of the summed μ_i is reported."""
COLUMNS = ("index", "label", "pred_c", "pred_a", "margin", "loss_c", "loss_a", "phi", "mu")
COLUMNS += ("norm_c", "norm_a")
"""The per-sample columns a report is built from (and keeps, for later readers)."""
NAMES = {
    "mu": "μ_i",
    "phi": "φ_i",
    "margin": "the clean margin",
    "loss_c": "the clean loss",
    "loss_a": "the adversarial loss",
}

Pixels = Callable[[int], list[Any]]
"""An image by its row in the columns: nested lists (channels, height, width) of 0–255."""


def ranks(values: Sequence[float]) -> np.ndarray:
    """Ranks 1..n, ties sharing their average rank (what Spearman's ρ correlates)."""
    a = np.asarray(values, dtype=np.float64)
    order = np.argsort(a, kind="mergesort")
    out = np.empty(len(a), dtype=np.float64)
    out[order] = np.arange(1, len(a) + 1, dtype=np.float64)
    _, first, counts = np.unique(a[order], return_index=True, return_counts=True)
    for start, count in zip(first, counts, strict=True):
        if count > 1:
            out[order[start : start + count]] = start + (count + 1) / 2
    return out


def spearman(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Spearman's rank correlation; None when either side is constant or too short."""
    if len(a) != len(b):
        raise ValueError(f"spearman: {len(a)} values against {len(b)}")
    if len(a) < 3:
        return None
    ra, rb = ranks(a), ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = math.sqrt(float((ra * ra).sum()) * float((rb * rb).sum()))
    return None if denom == 0 else float((ra * rb).sum() / denom)


def strength(rho: float | None) -> str:
    """A correlation in words, by its size (Cohen's rough bands)."""
    if rho is None:
        return "undefined"
    size = abs(rho)
    if size < 0.1:
        return "hardly related"
    band = "weakly" if size < 0.3 else "moderately" if size < 0.5 else "strongly"
    return f"{band} {'positively' if rho > 0 else 'negatively'} related"


def histogram(mu: Sequence[float], bins: int = BINS) -> dict[str, Any]:
    """Counts of log10 μ_i (μ spans decades); a zero μ is counted at the lowest edge."""
    a = np.asarray(mu, dtype=np.float64)
    positive = a[a > 0]
    if not len(positive):
        return {"scale": "log10", "edges": [], "counts": [], "zeros": len(a)}
    logs = np.log10(positive)
    low, high = float(logs.min()), float(logs.max())
    if high == low:
        low, high = low - 0.5, high + 0.5
    counts, edges = np.histogram(logs, bins=bins, range=(low, high))
    return {
        "scale": "log10",
        "edges": [round(float(e), 6) for e in edges],
        "counts": [int(c) for c in counts],
        "zeros": int((a <= 0).sum()),
    }


def top_order(mu: Sequence[float], k: int) -> list[int]:
    """Rows of the k largest μ_i, largest first (ties: the lower row first)."""
    a = np.asarray(mu, dtype=np.float64)
    return [int(i) for i in np.lexsort((np.arange(len(a)), -a))[: max(0, k)]]


def shares(mu: Sequence[float], fractions: Sequence[float] = SHARES) -> dict[str, float]:
    """The share of the summed μ_i held by the top fraction of images (1%, 10%)."""
    a = np.sort(np.asarray(mu, dtype=np.float64))[::-1]
    total = float(a.sum())
    out = {}
    for f in fractions:
        k = max(1, math.ceil(f * len(a)))
        out[f"{f:g}"] = float(a[:k].sum() / total) if total > 0 else 0.0
    return out


def by_class(columns: Mapping[str, Sequence[Any]], top: Sequence[int]) -> list[dict[str, Any]]:
    """Per class: its images, mean and median μ_i, mean φ_i, and how many are in the top-k."""
    labels = np.asarray(columns["label"])
    mu, phi = np.asarray(columns["mu"], float), np.asarray(columns["phi"], float)
    in_top = np.zeros(len(labels), dtype=bool)
    in_top[list(top)] = True
    rows = []
    for c in sorted({int(v) for v in labels}):
        mask = labels == c
        rows.append(
            {
                "class": c,
                "n": int(mask.sum()),
                "mean_mu": float(mu[mask].mean()),
                "median_mu": float(np.median(mu[mask])),
                "mean_phi": float(phi[mask].mean()),
                "in_top": int(in_top[mask].sum()),
            }
        )
    return rows


def _sample(
    columns: Mapping[str, Sequence[Any]], row: int, pixels: Pixels | None
) -> dict[str, Any]:
    """One of the top-k: its columns, and its image when `pixels` gives it."""
    entry = {k: _plain(columns[k][row]) for k in COLUMNS if k in columns}
    if pixels is not None:
        entry["pixels"] = pixels(row)
    return entry


def _plain(value: Any) -> Any:
    return int(value) if isinstance(value, (int, np.integer)) else float(value)


def build_report(
    columns: Mapping[str, Sequence[Any]],
    *,
    top: int = 16,
    pixels: Pixels | None = None,
    meta: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The whole report from the per-sample columns (`COLUMNS`); `meta` is kept as given."""
    mu = np.asarray(columns["mu"], dtype=np.float64)
    if not len(mu):
        raise ValueError("no samples to report on")
    order = top_order(mu, top)
    correct = np.asarray(columns["pred_c"]) == np.asarray(columns["label"])
    report: dict[str, Any] = {
        **dict(meta or {}),
        "n": len(mu),
        "quantiles": {
            name: {
                f"{q:g}": float(np.quantile(np.asarray(columns[name], float), q)) for q in QUANTILES
            }
            for name in ("mu", "phi", "margin")
        },
        "mean": {name: float(np.mean(np.asarray(columns[name], float))) for name in ("mu", "phi")},
        "histogram": histogram(mu),
        "shares": shares(mu),
        "correlation": {
            f"{a}~{b}": spearman(columns[a], columns[b]) for a, b in RELATIONS if b in columns
        },
        "by_class": by_class(columns, order),
        "clean_accuracy": float(correct.mean()),
        "top_clean_accuracy": float(correct[order].mean()) if order else None,
        "top": [_sample(columns, row, pixels) for row in order],
        "samples": {k: [_plain(v) for v in columns[k]] for k in COLUMNS if k in columns},
    }
    report["findings"] = findings(report)
    return report


def findings(report: Mapping[str, Any]) -> list[str]:
    """What the numbers say, in sentences a person reads without the table."""
    q, mean, share = report["quantiles"]["mu"], report["mean"], report["shares"]
    said = [
        f"Over {report['n']} training images μ_i has median {q['0.5']:.3g} and mean "
        f"{mean['mu']:.3g} (90th percentile {q['0.9']:.3g}, largest {q['1']:.3g}); the top "
        f"10% of images hold {share['0.1']:.0%} of the summed μ_i (top 1%: {share['0.01']:.0%})."
    ]
    if (whole := report.get("whole")) is not None:
        said.append(_whole_sentence(whole, report["quantiles"]["phi"]["0.5"]))
    for key, rho in report["correlation"].items():
        a, b = key.split("~")
        if rho is not None:
            said.append(f"{NAMES[a]} is {strength(rho)} to {NAMES[b]} (Spearman ρ = {rho:+.2f}).")
    classes = sorted(report["by_class"], key=lambda r: -r["mean_mu"])
    if len(classes) > 1:
        hi, lo = classes[0], classes[-1]
        said.append(
            f"By class, mean μ_i runs from {lo['mean_mu']:.3g} (class {lo['class']}) to "
            f"{hi['mean_mu']:.3g} (class {hi['class']}); class {hi['class']} has "
            f"{hi['in_top']} of the {len(report['top'])} most conflicting images."
        )
    if report["top_clean_accuracy"] is not None:
        said.append(
            f"The model classifies {report['top_clean_accuracy']:.0%} of the top "
            f"{len(report['top'])} correctly (clean), against {report['clean_accuracy']:.0%} "
            "of all analysed images."
        )
    return said


# --------------------------------------------------------------------------- images


def _rgb(pixels: Sequence[Any]) -> np.ndarray:
    """(channels, height, width) of 0–255 → (height, width, 3) uint8; gray repeated."""
    a = np.asarray(pixels, dtype=np.uint8)
    if a.ndim == 2:
        a = a[None]
    if a.shape[0] == 1:
        a = np.repeat(a, 3, axis=0)
    return np.ascontiguousarray(a[:3].transpose(1, 2, 0))


def halfblock(pixels: Sequence[Any], width: int = 16) -> Text:
    """An image as rich text: each `▀` is two pixels, the upper its colour, the lower its
    background. Small images are enlarged (nearest pixel) to about `width` columns."""
    img = _rgb(pixels)
    scale = max(1, width // img.shape[1])
    img = img.repeat(scale, axis=0).repeat(scale, axis=1)
    if img.shape[0] % 2:
        img = np.concatenate([img, np.zeros_like(img[:1])], axis=0)
    text = Text()
    for r in range(0, img.shape[0], 2):
        for upper, lower in zip(img[r], img[r + 1], strict=True):
            text.append("▀", style=f"rgb({upper[0]},{upper[1]},{upper[2]}) on "
                        f"rgb({lower[0]},{lower[1]},{lower[2]})")  # fmt: skip
        if r + 2 < img.shape[0]:
            text.append("\n")
    return text


def caption(sample: Mapping[str, Any]) -> str:
    """The lines under a top-k image: its index, label, prediction, margin, loss, φ_i, μ_i."""
    return (
        f"#{sample['index']}  y={sample['label']} → {sample['pred_c']}\n"
        f"margin {sample['margin']:+.2f}\nloss {sample['loss_c']:.3f}\n"
        f"φ {sample['phi']:+.3f}\nμ {sample['mu']:.3g}"
    )


def histogram_text(hist: Mapping[str, Any], width: int = 40) -> Text:
    """The log10 μ_i histogram as rows of bars, one per bin."""
    text = Text()
    counts, edges = hist["counts"], hist["edges"]
    most = max(counts, default=0) or 1
    for i, count in enumerate(counts):
        low, high = 10 ** edges[i], 10 ** edges[i + 1]
        bar = "█" * round(width * count / most)
        text.append(f"{low:9.3g} – {high:<9.3g} {count:5d} ")
        text.append(bar + ("\n" if i + 1 < len(counts) else ""), style="cyan")
    if hist.get("zeros"):
        text.append(f"\n{'μ = 0':>21} {hist['zeros']:5d}")
    return text


# --------------------------------------------------------------------------- tables


def quantile_table(report: Mapping[str, Any]) -> Table:
    """Quantiles of μ_i, φ_i and the margin, one row each."""
    quantiles = report["quantiles"]
    table = Table(title=Text("distribution over the training images"), title_justify="left")
    table.add_column("")
    for q in quantiles["mu"]:
        table.add_column({"0": "min", "1": "max"}.get(q, f"q{float(q) * 100:g}"), justify="right")
    for name, label in (("mu", "μ_i"), ("phi", "φ_i"), ("margin", "margin")):
        table.add_row(label, *[f"{v:.3g}" for v in quantiles[name].values()])
    return table


def top_grid(top: Sequence[Mapping[str, Any]], per_row: int = 6) -> Table:
    """The top-k images as half-block pictures, each with its caption, in rows."""
    table = Table.grid(padding=(0, 2))
    for _ in range(min(per_row, len(top))):
        table.add_column()
    for start in range(0, len(top), per_row):
        row = top[start : start + per_row]
        cells = []
        for sample in row:
            cell = halfblock(sample["pixels"]) if "pixels" in sample else Text()
            cell.append("\n" + caption(sample))
            cells.append(cell)
        table.add_row(*cells)
    title = Table.grid()
    title.add_row(Text(f"the {len(top)} most conflicting training images (largest μ_i first)"))
    title.add_row(table)
    return title


def class_table(report: Mapping[str, Any]) -> Table:
    """Per class: images, mean and median μ_i, mean φ_i, and how many are in the top-k."""
    table = Table(title=Text("per class"), title_justify="left")
    for col in ("class", "images", "mean μ_i", "median μ_i", "mean φ_i", "in top-k"):
        table.add_column(col, justify="right")
    for row in report["by_class"]:
        table.add_row(
            str(row["class"]),
            str(row["n"]),
            f"{row['mean_mu']:.3g}",
            f"{row['median_mu']:.3g}",
            f"{row['mean_phi']:+.3f}",
            str(row["in_top"]),
        )
    return table


# --------------------------------------------------------------------------- ablation

VARIANTS = ("unchanged", "top", "random")
"""The ablation's runs: the recipe as it was, without the most conflicting images, and
without as many random ones (the control that tells the two hypotheses apart)."""


def ablation_drops(
    samples: Mapping[str, Sequence[Any]], already: Sequence[int], fraction: float, seed: int = 0
) -> dict[str, Any]:
    """The training images each variant leaves out: the top `fraction` by μ_i, and as many
    drawn at random (numpy, `seed`) from the same candidates (those the run trained on)."""
    gone = set(already)
    rows = [i for i, index in enumerate(samples["index"]) if int(index) not in gone]
    if not rows:
        raise ValueError("no training images to remove")
    count = max(1, round(fraction * len(rows)))
    mu = np.asarray(samples["mu"], dtype=np.float64)[rows]
    chosen = [rows[i] for i in top_order(mu, count)]
    picked = np.random.default_rng(seed).choice(len(rows), size=count, replace=False)
    labels = np.asarray(samples["label"])
    top_labels = labels[chosen]
    return {
        "fraction": fraction,
        "count": count,
        "candidates": len(rows),
        "top": sorted(int(samples["index"][r]) for r in chosen),
        "random": sorted(int(samples["index"][rows[i]]) for i in picked),
        "top_classes": {int(c): int((top_labels == c).sum()) for c in np.unique(top_labels)},
    }


def _mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    a = np.asarray(values, dtype=np.float64)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else None


def paired(rows: Sequence[Mapping[str, Any]], a: str, b: str, key: str) -> list[float]:
    """Variant `a` minus variant `b` in `key` (sa, aa), seed by seed where both finished."""
    by = {(r["variant"], r["seed"]): r[key] for r in rows}
    seeds = sorted({r["seed"] for r in rows})
    return [by[(a, s)] - by[(b, s)] for s in seeds if (a, s) in by and (b, s) in by]


def gap(differences: Sequence[float]) -> dict[str, Any]:
    """Paired differences: their mean, standard error, count, how many share the mean's
    sign, and whether the mean is beyond twice its standard error (None: one seed)."""
    a = np.asarray(differences, dtype=np.float64)
    mean = float(a.mean())
    se = float(a.std(ddof=1) / math.sqrt(len(a))) if len(a) > 1 else None
    agree = int((np.sign(a) == np.sign(mean)).sum()) if mean else 0
    beyond = None if se is None else bool(abs(mean) > 2 * se)
    return {"mean": mean, "se": se, "n": len(a), "agree": agree, "beyond": beyond}


def ablation_summary(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Each variant's mean SA and AA over its seeds, its change against `unchanged`, and the
    targeted-minus-random gap, all paired by seed, and the finding in sentences.
    `rows`: variant, run, seed, sa, aa (fractions)."""
    variants = []
    for name in VARIANTS:
        mine = [r for r in rows if r["variant"] == name]
        if not mine:
            continue
        sa, sa_std = _mean_std([r["sa"] for r in mine])
        aa, aa_std = _mean_std([r["aa"] for r in mine])
        entry = {"variant": name, "runs": [r["run"] for r in mine], "seeds": len(mine)}
        entry |= {"sa": sa, "aa": aa, "sa_std": sa_std, "aa_std": aa_std}
        for key in ("sa", "aa"):
            if name != "unchanged" and (d := paired(rows, name, "unchanged", key)):
                entry[f"d_{key}"] = gap(d)["mean"]
        variants.append(entry)
    gaps = {k: gap(d) for k in ("sa", "aa") if (d := paired(rows, "top", "random", k))}
    return {"variants": variants, "gap": gaps, "findings": ablation_findings(variants, gaps)}


def ablation_findings(
    variants: Sequence[Mapping[str, Any]], gaps: Mapping[str, Mapping[str, Any]]
) -> list[str]:
    """What the ablation shows, including when it shows nothing beyond its control."""
    by = {v["variant"]: v for v in variants}
    top, rand = by.get("top", {}), by.get("random", {})
    if "d_aa" not in top or "d_aa" not in rand or set(gaps) != {"sa", "aa"}:
        return ["The ablation is incomplete: not every variant finished next to an unchanged run."]
    said = [
        f"Without the most conflicting images: SA {_pts(top['d_sa'])}, AA {_pts(top['d_aa'])}; "
        f"without as many random images: SA {_pts(rand['d_sa'])}, AA {_pts(rand['d_aa'])} "
        f"(test split, against the unchanged recipe, paired by seed, {gaps['aa']['n']} seed(s))."
    ]
    if gaps["aa"]["beyond"] is None:
        said.append(
            f"Targeted minus random removal: AA {_pts(gaps['aa']['mean'])}, SA "
            f"{_pts(gaps['sa']['mean'])}. One seed gives no spread to judge it by: run "
            "--seeds 0,1,2 before reading it as an effect."
        )
        return said
    for key, name in (("aa", "AA"), ("sa", "SA")):
        g = gaps[key]
        verdict = (
            "beyond twice its standard error: which images are removed matters"
            if g["beyond"]
            else "within twice its standard error: no more than removing any images"
        )
        said.append(
            f"Targeted minus random removal, {name}: {_pts(g['mean'])} ± {g['se'] * 100:.1f} "
            f"(standard error; {g['agree']} of {g['n']} seeds agree in sign), {verdict}."
        )
    return said


def _whole_sentence(whole: Mapping[str, float], median_phi: float) -> str:
    """The mean gradients (training's g_c and g_a on one batch of all these images) against
    the typical image: where the two angles differ, part of the conflict is between images."""
    said = (
        f"The mean gradients over these images have φ = {whole['phi']:+.3f} (μ = "
        f"{whole['mu']:.3g}); the median image has φ_i = {median_phi:+.3f}"
    )
    if whole["phi"] < median_phi - 0.1:
        return said + (
            ": averaged, the two gradients point further apart than within a typical image, "
            "so much of the conflict arises between images (one image's g_c against another's "
            "g_a), not within them."
        )
    if whole["phi"] > median_phi + 0.1:
        return said + ": averaging brings the two gradients closer than within a typical image."
    return said + ": averaged and one by one, the angle is about the same."


def _pts(delta: float) -> str:
    return f"{delta * 100:+.1f} pts"
