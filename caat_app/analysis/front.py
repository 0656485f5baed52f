"""SA-AA fronts: seed aggregation, Pareto fronts, hypervolume, and the report with its verdict
(whose sentences `verdict` writes).

Pure and torch-free on purpose: the dashboard imports it, and it works on plain
data (no store, no plotting), so the CLI, the dashboard and the tests share one
computation and the verdict is computed, never guessed.

Conventions (the paper's claim is "up and to the right", so both axes are maximised):
- q *dominates* p when q.sa >= p.sa and q.aa >= p.aa with at least one strict.
  Comparisons are exact on the floats: no tolerance, so a verdict never depends on
  a threshold someone picked.
- Ties: two points with the same sa and different aa -> the lower one is dominated
  (and symmetrically for the same aa). Exact duplicates (same sa and aa) do not
  dominate each other, so both stay on the front.
- q *weakly dominates* p when q.sa >= p.sa and q.aa >= p.aa (duplicates included).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from caat_app.analysis.verdict import verdict
from caat_app.present import param_label

METHOD_FAMILY = {"vanilla": "Vanilla AT", "caat": "CA-AT"}
_FAMILY_ORDER = ("Vanilla AT", "CA-AT")


def _known(method: str) -> None:
    """A point on a front belongs to a family: an unknown method is an error, not a `?`."""
    if method not in METHOD_FAMILY:
        raise ValueError(f"unknown method {method!r}; expected one of {', '.join(METHOD_FAMILY)}")


def family_of(method: str, loss: str) -> str:
    """The family a run's front belongs to: the method, split by loss when it is not CE.

    TRADES and CLP shift the whole trade-off, so mixing them into the CE front would
    compare losses rather than methods.
    """
    _known(method)
    base = METHOD_FAMILY[method]
    return base if loss == "ce" else f"{base} · {loss}"


def label_of(method: str, param: float) -> str:
    """The short name printed next to a point (`γ=0.8`), as every table writes it."""
    _known(method)
    return param_label(method, param)


def _check_unit(name: str, value: float) -> None:
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise ValueError(f"{name} must be a finite accuracy in [0, 1], got {value!r}")


@dataclass(frozen=True)
class RunPoint:
    """One finished run on the SA-AA plane (accuracies as fractions in [0, 1]); `source`
    names what measured its AA (an attack, or training's `epoch-pgd`)."""

    run_id: int
    family: str
    setting: str
    label: str
    seed: int
    sa: float
    aa: float
    source: str = ""

    def __post_init__(self) -> None:
        # A NaN would silently break every comparison below; percentages would
        # silently dwarf every fraction. Reject both at the door.
        _check_unit("sa", self.sa)
        _check_unit("aa", self.aa)


@dataclass(frozen=True)
class Point:
    """One setting of one family, its seeds aggregated: the unit a front is made of."""

    family: str
    setting: str
    label: str
    sa: float
    aa: float
    sa_std: float = 0.0
    aa_std: float = 0.0
    sa_range: tuple[float, float] = (math.nan, math.nan)
    aa_range: tuple[float, float] = (math.nan, math.nan)
    seeds: int = 1
    run_ids: tuple[int, ...] = ()
    source: str = ""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.sa) and math.isfinite(self.aa)):
            raise ValueError(f"sa and aa must be finite, got ({self.sa!r}, {self.aa!r})")
        # A hand-built point (tests, scripts) without ranges is its own range.
        if math.isnan(self.sa_range[0]):
            object.__setattr__(self, "sa_range", (self.sa, self.sa))
        if math.isnan(self.aa_range[0]):
            object.__setattr__(self, "aa_range", (self.aa, self.aa))


def _family_key(family: str) -> tuple[int, str]:
    """Vanilla AT families, then CA-AT ones, then others (each base before its loss variants)."""
    base = family.split(" · ", 1)[0]
    rank = _FAMILY_ORDER.index(base) if base in _FAMILY_ORDER else len(_FAMILY_ORDER)
    return (rank, family)


def _point_key(p: Point) -> tuple[Any, ...]:
    return (p.sa, p.aa, _family_key(p.family), p.setting)


def aggregate(points: Iterable[RunPoint]) -> list[Point]:
    """Group runs by (family, setting) into mean, sample std and range over seeds.

    The label of a group is its lowest run id's label; its source joins its runs' sources
    with `+` (one, unless hand-built points share a setting). `seeds` counts runs, so a
    seed run twice counts twice. The result is ordered by family (Vanilla AT and
    its loss variants, then CA-AT and its variants, then anything else) and then
    by sa, aa, so colours and reading order stay stable.
    """
    groups: dict[tuple[str, str], list[RunPoint]] = {}
    for rp in points:
        groups.setdefault((rp.family, rp.setting), []).append(rp)
    out: list[Point] = []
    for (family, setting), runs in groups.items():
        runs.sort(key=lambda r: r.run_id)
        sas = [r.sa for r in runs]
        aas = [r.aa for r in runs]
        many = len(runs) > 1
        out.append(
            Point(
                family=family,
                setting=setting,
                label=runs[0].label,
                sa=statistics.fmean(sas),
                aa=statistics.fmean(aas),
                sa_std=statistics.stdev(sas) if many else 0.0,
                aa_std=statistics.stdev(aas) if many else 0.0,
                sa_range=(min(sas), max(sas)),
                aa_range=(min(aas), max(aas)),
                seeds=len(runs),
                run_ids=tuple(r.run_id for r in runs),
                source="+".join(sorted({r.source for r in runs})),
            )
        )
    out.sort(key=lambda p: (_family_key(p.family), p.sa, p.aa, p.setting))
    return out


def dominates(q: Point, p: Point) -> bool:
    """Whether q is at least as good as p on both axes and strictly better on one."""
    return q.sa >= p.sa and q.aa >= p.aa and (q.sa > p.sa or q.aa > p.aa)


def weakly_dominates(q: Point, p: Point) -> bool:
    """Whether q is at least as good as p on both axes (a duplicate counts)."""
    return q.sa >= p.sa and q.aa >= p.aa


def pareto_front(points: Sequence[Point]) -> list[Point]:
    """The points no other point dominates, sorted by sa ascending (so aa descending).

    Exact duplicates are all kept; among them the order is family, then setting.
    O(n log n): sweep from the highest sa down, keeping the best aa seen at a
    strictly higher sa.
    """
    by_sa: dict[float, list[Point]] = {}
    for p in points:
        by_sa.setdefault(p.sa, []).append(p)
    front: list[Point] = []
    best = -math.inf  # best aa among points with a strictly larger sa
    for sa in sorted(by_sa, reverse=True):
        group = by_sa[sa]
        top = max(p.aa for p in group)
        if top > best:
            front.extend(p for p in group if p.aa == top)
        best = max(best, top)
    front.sort(key=_point_key)
    return front


def dominators(points: Sequence[Point]) -> list[tuple[Point, list[Point]]]:
    """Each dominated point with the points (of any family) that dominate it.

    Keyed by the points themselves, so two families sharing a setting string stay
    apart. Dominated points come in the input's order, their dominators by sa.
    """
    out: list[tuple[Point, list[Point]]] = []
    for p in points:
        by = sorted((q for q in points if dominates(q, p)), key=_point_key)
        if by:
            out.append((p, by))
    return out


def dominated(points: Sequence[Point]) -> dict[str, list[str]]:
    """setting -> the settings (across all families) that dominate it; undominated ones absent."""
    out: dict[str, list[str]] = {}
    for p, by in dominators(points):
        merged = out.setdefault(p.setting, [])
        merged.extend(q.setting for q in by if q.setting not in merged)
    return out


def hypervolume(front: Sequence[Point], ref: tuple[float, float] = (0.0, 0.0)) -> float:
    """Area of the union of the boxes [ref, p] over the points p beyond ref on both axes.

    Exact and O(n log n). Any point set is accepted: a dominated point adds no
    area, and a point not strictly beyond ref on both axes adds none either, so
    the number only says how much of the plane above ref the front claims.
    """
    rs, ra = ref
    beyond = sorted(((p.sa, p.aa) for p in front if p.sa > rs and p.aa > ra), reverse=True)
    area = 0.0
    covered = ra  # highest aa already counted, sweeping from the largest sa down
    for sa, aa in beyond:
        if aa > covered:
            area += (sa - rs) * (aa - covered)
            covered = aa
    return area


def front_dominates(a: Sequence[Point], b: Sequence[Point]) -> bool:
    """Whether front a is better than front b: a weakly dominates every point of b, and a != b.

    "a != b" is read on the plane: some point of a is not weakly dominated by b
    (for two fronts, the same as differing as sets of (sa, aa)). So identical
    fronts dominate neither way, a non-empty front dominates an empty one, and
    an empty front dominates nothing.
    """
    covers_b = all(any(weakly_dominates(q, p) for q in a) for p in b)
    b_covers_a = all(any(weakly_dominates(q, p) for q in b) for p in a)
    return covers_b and not b_covers_a


def _point_json(p: Point, on_front: bool, is_dominated: bool) -> dict[str, Any]:
    return {
        "family": p.family,
        "setting": p.setting,
        "label": p.label,
        "run_ids": list(p.run_ids),
        "sa": p.sa,
        "aa": p.aa,
        "aa_source": p.source,
        "sa_std": p.sa_std,
        "aa_std": p.aa_std,
        "sa_range": list(p.sa_range),
        "aa_range": list(p.aa_range),
        "seeds": p.seeds,
        "on_front": on_front,
        "dominated": is_dominated,
    }


def report(points: Iterable[RunPoint], *, ref: tuple[float, float] = (0.0, 0.0)) -> dict[str, Any]:
    """Everything `caat front` and the dashboard show, as a JSON-able dict.

    Keys: `points` (aggregated, each with `on_front` for its family's front,
    `dominated` across all families and `aa_source`, what measured its AA),
    `families` (front labels in sa order, front settings, hypervolume against
    `reference`, number of points),
    `reference`, `dominated` (who is dominated by whom, across families) and
    `verdict` (plain sentences derived from the above).
    """
    agg = aggregate(points)
    ref = (float(ref[0]), float(ref[1]))
    families: dict[str, list[Point]] = {}
    for p in agg:
        families.setdefault(p.family, []).append(p)
    fronts = {f: pareto_front(ps) for f, ps in families.items()}
    hvs = {f: hypervolume(fr, ref) for f, fr in fronts.items()}
    doms = dominators(agg)
    on_front = {id(p) for fr in fronts.values() for p in fr}
    is_dom = {id(p) for p, _ in doms}
    beats = {
        (a, b) for a in fronts for b in fronts if a != b and front_dominates(fronts[a], fronts[b])
    }
    return {
        "points": [_point_json(p, id(p) in on_front, id(p) in is_dom) for p in agg],
        "families": {
            f: {
                "front": [p.label for p in fronts[f]],
                "front_settings": [p.setting for p in fronts[f]],
                "hypervolume": hvs[f],
                "points": len(families[f]),
            }
            for f in families
        },
        "reference": [ref[0], ref[1]],
        "dominated": [
            {
                "point": p.label,
                "family": p.family,
                "setting": p.setting,
                "by": [{"point": q.label, "family": q.family, "setting": q.setting} for q in by],
            }
            for p, by in doms
        ],
        "verdict": verdict(agg, fronts, hvs, doms, beats, ref),
    }


POINT_COLUMNS = ("family", "setting", "SA", "AA", "seeds", "on front", "runs")


def point_cells(point: Mapping[str, Any]) -> list[str]:
    """One point of `report()` as table cells (%, ± sample std when there are seeds)."""
    spread = point["seeds"] > 1

    def pct(key: str) -> str:
        return f"{100 * point[key]:.1f}" + (f" ± {100 * point[key + '_std']:.1f}" if spread else "")

    return [
        point["family"],
        point["label"],
        pct("sa"),
        pct("aa"),
        str(point["seeds"]),
        "yes" if point["on_front"] else "",
        " ".join(str(i) for i in point["run_ids"]),
    ]
