"""The budget view: how the conflict μ grows with the training budget ε, on real runs.

For runs that differ only in ε (and the method and its γ or λ): μ during training as the
median of each epoch's steps with its spread (the quartiles), and the last epoch's
median against ε, Vanilla AT and CA-AT side by side. Section 3 predicts μ grows with ε;
`verdict` says whether the stored runs show it, family by family.

Torch-free: it reads step rows (anything with `epoch` and `mu`) and run options.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from itertools import pairwise
from typing import Any

from caat_app.analysis.front import METHOD_FAMILY
from caat_app.present import format_budget, param_label

# Fields that may differ inside one budget group: the budget, the method's trade-off,
# and what only names or repeats a run.
_FREE = frozenset({"eps", "alpha", "method", "lam", "gamma", "seed", "name", "preset"})


def quartiles(values: Sequence[float]) -> tuple[float, float, float]:
    """(25 %, median, 75 %) of a non-empty sample; one value is all three."""
    if len(values) == 1:
        return values[0], values[0], values[0]
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q2, q3


def epoch_spread(rows: Iterable[Any]) -> dict[str, list[float]]:
    """Per epoch, the quartiles of the finite μ its steps recorded."""
    per: dict[int, list[float]] = {}
    for row in rows:
        if row.mu is not None and math.isfinite(row.mu):
            per.setdefault(int(row.epoch), []).append(float(row.mu))
    out: dict[str, list[float]] = {"epoch": [], "q25": [], "median": [], "q75": []}
    for epoch in sorted(per):
        q1, q2, q3 = quartiles(per[epoch])
        for key, value in zip(out, (epoch, q1, q2, q3), strict=True):
            out[key].append(value)
    return out


def group_key(options: Mapping[str, Any]) -> str:
    """What a run shares with the others of its budget group: every option but `_FREE`."""
    return repr(sorted((k, repr(v)) for k, v in options.items() if k not in _FREE))


def budget_groups(
    runs: Sequence[tuple[int, Mapping[str, Any], Mapping[str, list[float]]]],
) -> list[dict[str, Any]]:
    """Groups of runs that differ only in ε (and method), with two budgets at least.

    `runs` holds (run id, its options, its `epoch_spread`). Each group's `lines` are one
    per method and trade-off parameter: the budgets in order, each with its run's last-
    epoch median μ and its per-epoch spread.
    """
    by_group: dict[str, list[tuple[int, Mapping[str, Any], Mapping[str, list[float]]]]] = {}
    for run in runs:
        by_group.setdefault(group_key(run[1]), []).append(run)
    groups = []
    for members in by_group.values():
        if len({round(float(o["eps"]), 9) for _, o, _ in members}) < 2:
            continue
        lines: dict[tuple[str, float], dict[str, Any]] = {}
        for run_id, options, spread in sorted(members, key=lambda m: float(m[1]["eps"])):
            method = str(options["method"])
            param = float(options["gamma"] if method == "caat" else options["lam"])
            line = lines.setdefault(
                (method, param),
                {
                    "method": method,
                    "param": param,
                    "label": f"{METHOD_FAMILY.get(method, method)} {param_label(method, param)}",
                    "eps": [],
                    "last_mu": [],
                    "runs": [],
                },
            )
            line["eps"].append(float(options["eps"]))
            line["last_mu"].append(spread["median"][-1] if spread["median"] else None)
            line["runs"].append({"run": run_id, "eps": float(options["eps"]), **spread})
        first = members[0][1]
        title = f"{first.get('dataset')} · {first.get('model')} · {first.get('loss', 'ce')}"
        kept = [line for line in lines.values() if len(line["eps"]) > 1]  # one ε: no trend
        if kept:
            groups.append({"group": title, "lines": kept})
    return groups


def verdict(groups: Sequence[Mapping[str, Any]]) -> list[str]:
    """Per line: does the last epoch's μ rise with ε (every step up), and by how much."""
    out = []
    for group in groups:
        for line in group["lines"]:
            pairs = [(e, m) for e, m in zip(line["eps"], line["last_mu"], strict=True) if m]
            if len(pairs) < 2:
                out.append(f"{group['group']}, {line['label']}: fewer than two budgets measured.")
                continue
            rises = all(b[1] > a[1] for a, b in pairwise(pairs))
            trend = " → ".join(f"{m:.3g} at {format_budget(e)}" for e, m in pairs)
            word = "rises with ε at every step" if rises else "does not rise with ε at every step"
            out.append(f"{group['group']}, {line['label']}: last-epoch μ {word} ({trend}).")
    return out
