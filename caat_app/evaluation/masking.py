"""Gradient-masking report: sanity checks that flag robustness numbers too good to be true.

A model that masks or obfuscates its gradients looks robust to gradient attacks without
being robust. Such models leave fingerprints in an evaluation table (Athalye et al. 2018,
Carlini et al. 2019): one step beats many, black-box beats white-box, accuracy does not
fall with the budget, more steps keep helping, PGD and AutoAttack disagree, or an attack
raises accuracy. Each check reads only the table's numbers, so it runs on stored results.

A record is ``{"attack", "eps", "accuracy", "samples", "steps"}``, optionally with ``norm``
and ``family`` (the attack a variant belongs to, for the convergence check: ``pgd-100`` is
PGD with more steps); accuracies are fractions;
the report states them in percent, as the tables do.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from itertools import pairwise
from typing import Any

from caat_app.present import format_budget, pct

NEAR_ZERO = 0.05  # accuracy that counts as "broken" at a very large budget
VERY_LARGE_RATIO = 4.0  # a budget this many times the smallest counts as very large
PGD_GAP = 0.05  # PGD above AutoAttack by more than this: PGD overestimates robustness
APGD = ("apgd-ce", "apgd-dlr")


@dataclass(frozen=True)
class Check:
    """One check's outcome: passed True/False, or None when the table cannot tell."""

    name: str
    passed: bool | None
    detail: str


def _pts(v: float) -> str:
    """A difference of accuracies in percentage points, without a spurious decimal."""
    p = round(v * 100, 1)
    return f"{p:g}"


def _pct(v: float) -> str:
    """An accuracy in the report's sentences, as the tables show it."""
    return f"{pct(v)}%"


def _key(e: float) -> float:
    """Group budgets that differ only by float noise (8/255 computed two ways)."""
    return round(float(e), 9)


def _best(records: Iterable[Mapping[str, Any]]) -> dict[str, dict[float, float]]:
    """Per attack and budget, the lowest accuracy: the strongest run is what counts."""
    out: dict[str, dict[float, float]] = {}
    for r in records:
        per_eps = out.setdefault(str(r["attack"]).lower(), {})
        e, acc = _key(r["eps"]), float(r["accuracy"])
        per_eps[e] = min(acc, per_eps.get(e, acc))
    return out


def _not_above(
    name: str,
    strong: dict[float, float] | None,
    weak: dict[float, float] | None,
    labels: tuple[str, str],
    tolerance: float,
) -> Check:
    """``strong`` must not be above ``weak`` (+tolerance) at any budget both were run at."""
    common = sorted(set(strong or {}) & set(weak or {}))
    if not strong or not weak or not common:
        return Check(name, None, f"needs {labels[0]} and {labels[1]} at the same ε")
    bad = [e for e in common if strong[e] > weak[e] + tolerance]
    if bad:
        parts = [
            f"ε={format_budget(e)}: {labels[0]} {_pct(strong[e])} > {labels[1]} {_pct(weak[e])}"
            for e in bad
        ]
        return Check(name, False, "; ".join(parts))
    parts = [
        f"ε={format_budget(e)}: {labels[0]} {_pct(strong[e])}, {labels[1]} {_pct(weak[e])}"
        for e in common
    ]
    return Check(name, True, "; ".join(parts))


def _iterative(best: dict[str, dict[float, float]], tolerance: float) -> Check:
    """Many steps must not do worse than one: if they do, the gradient is not informative."""
    return _not_above(
        "iterative ≤ single-step", best.get("pgd"), best.get("fgsm"), ("PGD", "FGSM"), tolerance
    )


def _lowest(best: dict[str, dict[float, float]], names: Sequence[str]) -> dict[float, float]:
    """Per budget, the lowest accuracy over the named attacks that were run there."""
    out: dict[float, float] = {}
    for n in names:
        for e, acc in best.get(n, {}).items():
            out[e] = min(acc, out.get(e, acc))
    return out


def _white_box(best: dict[str, dict[float, float]], tolerance: float) -> Check:
    """Gradients must beat random search; if Square wins, the gradients are masked."""
    return _not_above(
        "white-box ≤ black-box",
        _lowest(best, APGD),
        best.get("square"),
        ("APGD", "Square"),
        tolerance,
    )


def _monotone(best: dict[str, dict[float, float]], tolerance: float) -> Check:
    """A larger ball contains the smaller one, so accuracy can only fall as ε grows."""
    name = "falls as ε grows"
    series = {a: v for a, v in best.items() if len(v) >= 2}
    if not series:
        return Check(name, None, "needs an attack at two or more ε")
    bad: list[str] = []
    for attack, per_eps in sorted(series.items()):
        budgets = sorted(per_eps)
        for lo, hi in pairwise(budgets):
            if per_eps[hi] > per_eps[lo] + tolerance:
                bad.append(
                    f"{attack}: {_pct(per_eps[lo])} at ε={format_budget(lo)} → "
                    f"{_pct(per_eps[hi])} at ε={format_budget(hi)}"
                )
    if bad:
        return Check(name, False, "accuracy rises with ε: " + "; ".join(bad))
    return Check(name, True, f"non-increasing for {', '.join(sorted(series))}")


def _near_zero(best: dict[str, dict[float, float]], tolerance: float, norm: str | None) -> Check:
    """At a very large budget every image can be destroyed; surviving points mean masking.

    Very large: 4× the smallest budget, or for L∞ an ε of 1, whose ball is the whole
    [0, 1] box (any image can be turned into any other).
    """
    name = "near zero at large ε"
    budgets = sorted({e for per_eps in best.values() for e in per_eps if e > 0})
    whole_box = norm == "linf" and bool(budgets) and budgets[-1] >= 1.0
    if not budgets or (budgets[-1] < VERY_LARGE_RATIO * budgets[0] and not whole_box):
        span = f" (largest ε is {budgets[-1] / budgets[0]:.1f}× the smallest)" if budgets else ""
        return Check(name, None, f"needs an ε ≥ {VERY_LARGE_RATIO:g}× the smallest{span}")
    top = budgets[-1]
    attack, acc = min(
        ((a, v[top]) for a, v in best.items() if top in v), key=lambda t: (t[1], t[0])
    )
    limit = max(NEAR_ZERO, tolerance)
    verdict = "≤" if acc <= limit else ">"
    detail = (
        f"ε={format_budget(top)}: lowest accuracy {_pct(acc)} ({attack}) {verdict} {_pct(limit)}"
    )
    return Check(name, acc <= limit, detail)


def _converged(records: Sequence[Mapping[str, Any]], tolerance: float) -> Check:
    """If more steps still lower accuracy a lot, the fewer-step number was not converged."""
    name = "converged"
    runs: dict[tuple[str, float], dict[int, float]] = {}
    for r in records:
        if r.get("steps") is None:
            continue
        family = str(r.get("family") or r["attack"]).lower()  # pgd-100 is PGD run longer
        per_steps = runs.setdefault((family, _key(r["eps"])), {})
        s, acc = int(r["steps"]), float(r["accuracy"])
        per_steps[s] = min(acc, per_steps.get(s, acc))
    pairs = {k: v for k, v in runs.items() if len(v) >= 2}
    if not pairs:
        return Check(name, None, "needs an attack run with two step counts at the same ε")
    bad: list[str] = []
    ok: list[str] = []
    for (attack, e), per_steps in sorted(pairs.items()):
        few, many = min(per_steps), max(per_steps)
        drop = per_steps[few] - per_steps[many]
        line = (
            f"{attack} at ε={format_budget(e)}: {few} steps {_pct(per_steps[few])} → "
            f"{many} steps {_pct(per_steps[many])}"
        )
        if drop > 2 * tolerance:
            bad.append(f"{line} (−{_pts(drop)} points)")
        else:
            ok.append(line)
    if bad:
        return Check(name, False, "more steps still lower accuracy: " + "; ".join(bad))
    return Check(name, True, "; ".join(ok))


def _pgd_gap(best: dict[str, dict[float, float]]) -> Check:
    """PGD well above AutoAttack means PGD (and any number quoted from it) overestimates."""
    name = "PGD vs AutoAttack"
    pgd = best.get("pgd", {})
    aa = _lowest(best, [a for a in best if a.startswith("autoattack")])
    apgd = _lowest(best, [a for a in best if a.startswith("apgd")])
    ref = {**apgd, **aa}  # AutoAttack where it was run, else the strongest APGD
    label = {e: "AutoAttack" if e in aa else "APGD" for e in ref}
    common = sorted(set(pgd) & set(ref))
    if not common:
        return Check(name, None, "needs PGD and AutoAttack (or APGD) at the same ε")
    gaps = {e: pgd[e] - ref[e] for e in common}
    bad = [e for e in common if gaps[e] > PGD_GAP + 1e-9]
    if bad:
        parts = [
            f"PGD overestimates robustness by {_pts(gaps[e])} points at ε={format_budget(e)} "
            f"(PGD {_pct(pgd[e])}, {label[e]} {_pct(ref[e])})"
            for e in bad
        ]
        return Check(name, False, "; ".join(parts))
    parts = [f"ε={format_budget(e)}: PGD {_pct(pgd[e])}, {label[e]} {_pct(ref[e])}" for e in common]
    return Check(name, True, "gap ≤ " + _pts(PGD_GAP) + " points; " + "; ".join(parts))


def _below_clean(records: Sequence[Mapping[str, Any]], clean: float, tolerance: float) -> Check:
    """An attack can only remove correct answers; accuracy above clean means a broken attack."""
    name = "attacks ≤ clean"
    if not records:
        return Check(name, None, "no attack results")
    bad = sorted(
        {
            f"{str(r['attack']).lower()} at ε={format_budget(r['eps'])}: "
            f"{_pct(float(r['accuracy']))}"
            for r in records
            if float(r["accuracy"]) > clean + tolerance
        }
    )
    if bad:
        return Check(name, False, f"above clean {_pct(clean)}: " + "; ".join(bad))
    top = max(float(r["accuracy"]) for r in records)
    return Check(name, True, f"highest attacked accuracy {_pct(top)} ≤ clean {_pct(clean)}")


def masking_report(
    records: Sequence[Mapping[str, Any]], *, clean: float, tolerance: float = 0.02
) -> list[Check]:
    """All checks, in a fixed order; ``tolerance`` absorbs sampling noise between attacks."""
    best = _best(records)
    norms = {r.get("norm") for r in records}
    return [
        _iterative(best, tolerance),
        _white_box(best, tolerance),
        _monotone(best, tolerance),
        _near_zero(best, tolerance, norms.pop() if len(norms) == 1 else None),
        _converged(records, tolerance),
        _pgd_gap(best),
        _below_clean(records, clean, tolerance),
    ]


def summary(checks: Sequence[Check]) -> str:
    """One line for a table footer: counts, then what was flagged and why."""
    passed = sum(c.passed is True for c in checks)
    flagged = [c for c in checks if c.passed is False]
    unknown = sum(c.passed is None for c in checks)
    line = f"{passed} check{'s' if passed != 1 else ''} passed, {len(flagged)} flagged"
    if unknown:
        line += f", {unknown} not checkable"
    if flagged:
        line += ": " + "; ".join(f"{c.name} ({c.detail})" for c in flagged)
    return line


def to_json(checks: Sequence[Check]) -> list[dict[str, Any]]:
    """Plain dicts for ``--json`` output and the store."""
    return [asdict(c) for c in checks]
