"""A front in words: the verdict `front.report()` gives, computed from its numbers.

Torch-free and pure. Every sentence is derived from the points, fronts, hypervolumes and
dominations `front` computed, so the CLI and the dashboard state the same verdict.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from caat_app.analysis.front import Point


def _fmt(x: float) -> str:
    return f"{x:g}"


def _hv_pair(x: float, y: float) -> tuple[str, str]:
    """Two hypervolumes with just enough digits to tell them apart (3 to 6)."""
    for digits in range(3, 7):
        sx, sy = f"{x:.{digits}f}", f"{y:.{digits}f}"
        if sx != sy:
            return sx, sy
    return f"{x:.12g}", f"{y:.12g}"


def _join(items: Sequence[str]) -> str:
    if len(items) <= 2:
        return " and ".join(items)
    return ", ".join(items[:-1]) + ", and " + items[-1]


def _names(points: Sequence[Point]) -> dict[tuple[str, str], str]:
    """'label (family)' per point; run ids are added where that is still ambiguous.

    Run ids rather than the setting: a setting is often a whole config as JSON,
    unreadable in a sentence.
    """
    count: dict[tuple[str, str], int] = {}
    for p in points:
        count[(p.label, p.family)] = count.get((p.label, p.family), 0) + 1
    names: dict[tuple[str, str], str] = {}
    for p in points:
        if count[(p.label, p.family)] == 1 or not p.run_ids:
            names[(p.family, p.setting)] = f"{p.label} ({p.family})"
        else:
            runs = ", ".join(str(i) for i in p.run_ids)
            word = "run" if len(p.run_ids) == 1 else "runs"
            names[(p.family, p.setting)] = f"{p.label} ({p.family}; {word} {runs})"
    return names


def _short_names(points: Sequence[Point], full: dict[tuple[str, str], str]) -> list[str]:
    """Bare labels where unique among all points, the full name otherwise."""
    count: dict[str, int] = {}
    for p in points:
        count[p.label] = count.get(p.label, 0) + 1
    return [p.label if count[p.label] == 1 else full[(p.family, p.setting)] for p in points]


def verdict(
    agg: Sequence[Point],
    fronts: dict[str, list[Point]],
    hvs: dict[str, float],
    doms: Sequence[tuple[Point, list[Point]]],
    beats: set[tuple[str, str]],
    ref: tuple[float, float],
) -> list[str]:
    """The verdict's sentences, in the order a reader needs them.

    Hypervolumes, which front dominates which (`beats`: each (family, family) pair whose
    first front dominates the second), who is dominated by whom, which front points add
    nothing, and which points rest on a single seed.
    """
    if not agg:
        return ["No finished runs to compare."]
    full = _names(agg)
    out: list[str] = []
    names = list(fronts)
    ref_txt = f"({_fmt(ref[0])}, {_fmt(ref[1])})"
    if len(names) == 1:
        f = names[0]
        out.append(f"Only one family ({f}): there is no other front to compare with.")
        out.append(f"{f}'s front has hypervolume {hvs[f]:.3f} against the reference {ref_txt}.")
    else:
        listing = ", ".join(f"{f} {hvs[f]:.3f}" for f in names)
        out.append(f"Hypervolume against the reference {ref_txt}: {listing}.")
        for a, b in combinations(names, 2):
            out.append(_compare_sentence(a, b, beats, hvs, pair_only=len(names) == 2))

    if doms:
        for p, by in doms:
            who = _join([full[(q.family, q.setting)] for q in by])
            out.append(f"{full[(p.family, p.setting)]} is dominated by {who}.")
    elif len(agg) > 1:
        out.append("No point is dominated by another.")

    outside = [p for fr in fronts.values() for p in fr if not (p.sa > ref[0] and p.aa > ref[1])]
    if outside:
        who = ", ".join(_short_names(outside, full))
        out.append(
            f"Front points not beyond the reference {ref_txt} add nothing to the "
            f"hypervolume ({who})."
        )

    single = [p for p in agg if p.seeds == 1]
    if single and len(single) == len(agg):
        out.append("All points come from a single seed: their spread is unknown.")
    elif single:
        who = ", ".join(_short_names(single, full))
        out.append(f"Some points come from a single seed ({who}): their spread is unknown.")
    return out


def _compare_sentence(
    a: str,
    b: str,
    beats: set[tuple[str, str]],
    hvs: dict[str, float],
    *,
    pair_only: bool,
) -> str:
    """Two families' fronts: which dominates, else which claims the larger hypervolume."""
    if (a, b) in beats:
        return f"{a}'s front dominates {b}'s."
    if (b, a) in beats:
        return f"{b}'s front dominates {a}'s."
    head = (
        "Neither front dominates the other"
        if pair_only
        else f"Neither of {a}'s and {b}'s fronts dominates the other"
    )
    if hvs[a] == hvs[b]:
        return f"{head}: both have hypervolume {hvs[a]:.3f}."
    big, small = (a, b) if hvs[a] > hvs[b] else (b, a)
    sbig, ssmall = _hv_pair(hvs[big], hvs[small])
    return f"{head}: {big} has the larger hypervolume ({sbig} vs {ssmall})."
