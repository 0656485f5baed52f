"""Stored evaluation results as the paper prints them: budgets × attacks, SA first, with the
gradient-masking report, the probes and the batch note under each table.

Torch-free: the CLI and the dashboard render these tables; nothing here measures.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from caat_app.evaluation.masking import Check, masking_report, summary
from caat_app.evaluation.masking import to_json as masking_json
from caat_app.evaluation.plan import EVAL_ATTACKS, EVAL_BATCH, PROBE_STEPS, large_budget
from caat_app.present import format_budget, pct

MARKS = {True: "ok  ", False: "FLAG", None: "n/a "}
BATCH_NOTE = (
    "note: BatchNorm in batchstats mode: predictions depend on the batch "
    f"(here the images in their fixed order, {EVAL_BATCH} at a time)"
)


class EvalRow(Protocol):
    """What a stored result offers (storage's EvalResult, or a plain record in tests)."""

    checkpoint: str
    weights: str
    attack: str
    norm: str
    eps: float
    samples: int
    accuracy: float
    seconds: float
    settings: str


def masking_records(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Results as the masking report reads them: with step counts, and `pgd-100` as PGD's kin."""
    records = []
    for r in rows:
        if r["attack"] == "clean":
            continue
        settings = r.get("settings") or "{}"
        steps = json.loads(settings).get("steps") if isinstance(settings, str) else None
        family = "pgd" if r["attack"] == PROBE_STEPS else r["attack"]
        records.append({**r, "family": family, "steps": steps})
    return records


def _key(eps: float) -> float:
    return round(float(eps), 9)


@dataclass
class EvalTable:
    """One evaluation as the paper prints it: budgets as rows, attacks as columns, SA first.

    All results of one run that share a checkpoint (and its weights), a norm and a sample
    count form one table, whichever `caat eval` calls measured them; the masking report
    reads them all.
    """

    checkpoint: str
    weights: str
    norm: str
    samples: int
    clean: float | None
    attacks: list[str]
    budgets: list[float]
    cells: dict[tuple[str, float], float] = field(default_factory=dict)
    seconds: float = 0.0
    checks: list[Check] = field(default_factory=list)
    probes: list[dict[str, Any]] = field(default_factory=list)

    def cell(self, attack: str, eps: float) -> float | None:
        return self.cells.get((attack, _key(eps)))

    def to_json(self) -> dict[str, Any]:
        return {
            "checkpoint": self.checkpoint,
            "weights": self.weights,
            "norm": self.norm,
            "samples": self.samples,
            "clean": self.clean,
            "results": [
                {"attack": a, "eps": e, "accuracy": self.cells[(a, _key(e))]}
                for e in self.budgets
                for a in self.attacks
                if (a, _key(e)) in self.cells
            ],
            "probes": self.probes,
            "masking": masking_json(self.checks),
        }


def _row(r: EvalRow | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(r, Mapping):
        return dict(r)
    keys = ("checkpoint", "weights", "attack", "norm", "eps", "samples", "accuracy", "seconds")
    return {k: getattr(r, k) for k in keys} | {"settings": r.settings}


def build_table(
    rows: Iterable[EvalRow | Mapping[str, Any]],
    *,
    attacks: Sequence[str] | None = None,
    budgets: Sequence[float] | None = None,
) -> EvalTable:
    """One table from the results of one (checkpoint and weights, norm, samples).

    `attacks` and `budgets` choose the columns and rows (the CLI shows what was asked);
    by default every attack and budget present, probes included. Results outside the
    chosen grid become `probes`, listed under the masking report. The report always
    reads every result, since a probe is what makes some checks possible.
    """
    data = [_row(r) for r in rows]
    if not data:
        raise ValueError("no results to tabulate")
    first = data[0]
    clean = next((r["accuracy"] for r in data if r["attack"] == "clean"), None)
    measured = [r for r in data if r["attack"] != "clean"]
    order = {a: i for i, a in enumerate(EVAL_ATTACKS)}
    columns = (
        list(attacks)
        if attacks is not None
        else sorted({r["attack"] for r in measured}, key=lambda a: order.get(a, len(order)))
    )
    rows_eps = (
        [float(e) for e in budgets]
        if budgets is not None
        else sorted({float(r["eps"]) for r in measured}, key=_key)
    )
    wanted_eps = {_key(e) for e in rows_eps}
    table = EvalTable(
        checkpoint=first["checkpoint"],
        weights=first.get("weights", ""),
        norm=first["norm"],
        samples=int(first["samples"]),
        clean=clean,
        attacks=columns,
        budgets=rows_eps,
        seconds=sum(float(r.get("seconds") or 0.0) for r in data),
    )
    for r in measured:
        if r["attack"] in columns and _key(r["eps"]) in wanted_eps:
            table.cells[(r["attack"], _key(r["eps"]))] = float(r["accuracy"])
        else:
            table.probes.append(
                {"attack": r["attack"], "eps": float(r["eps"]), "accuracy": float(r["accuracy"])}
            )
    if clean is not None:
        table.checks = masking_report(masking_records(measured), clean=clean)
    return table


def _grid_of(rows: Sequence[EvalRow]) -> tuple[list[str], list[float]]:
    """Columns and rows for stored results, with what looks like `plan`'s probes left out.

    The store does not mark probes, so they are recognised by their shape: `pgd-100`
    only where `pgd` was run at the same ε, and a budget at which only `pgd` was run that
    is the very-large one for the others. Nothing is hidden: they become probe lines.
    """
    order = {a: i for i, a in enumerate(EVAL_ATTACKS)}
    measured = [r for r in rows if r.attack != "clean"]
    at: dict[str, set[float]] = {}
    for r in measured:
        at.setdefault(r.attack, set()).add(_key(r.eps))
    columns = sorted(at, key=lambda a: order.get(a, len(order)))
    if PROBE_STEPS in at and at[PROBE_STEPS] <= at.get("pgd", set()):
        columns.remove(PROBE_STEPS)
    budgets = sorted({_key(r.eps) for r in measured})
    others = sorted({_key(r.eps) for r in measured if r.attack != "pgd"})
    if others:
        norm = rows[0].norm
        big = large_budget(others, norm)
        budgets = [e for e in budgets if e in others or e < big - 1e-12]
    return columns, budgets


def tables_from_results(rows: Iterable[EvalRow]) -> list[EvalTable]:
    """A run's stored results as tables, newest first: one per checkpoint and its weights,
    norm and sample count."""
    groups: dict[tuple[str, str, str, int], list[EvalRow]] = {}
    for r in rows:
        groups.setdefault((r.checkpoint, r.weights, r.norm, r.samples), []).append(r)
    newest = sorted(
        groups.values(), key=lambda g: max(getattr(r, "id", 0) or 0 for r in g), reverse=True
    )
    tables = []
    for group in newest:
        columns, budgets = _grid_of(group)
        tables.append(build_table(group, attacks=columns, budgets=budgets))
    return tables


def table_cells(table: EvalTable) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the paper's layout, as text: the CLI and the dashboard share it."""
    header = ["ε", "SA", *table.attacks]
    body = [
        [format_budget(e), pct(table.clean), *[pct(table.cell(a, e)) for a in table.attacks]]
        for e in table.budgets
    ]
    return header, body


def probe_lines(table: EvalTable) -> list[str]:
    """The probes, one line each, for under the masking report."""
    return [
        f"probe {p['attack']} at ε={format_budget(p['eps'])}: {pct(p['accuracy'])}%"
        for p in table.probes
    ]


def report_lines(table: EvalTable, *, batchstats: bool = False) -> list[tuple[str, bool]]:
    """What follows a table, for the CLI and the dashboard alike: the masking report (its
    summary, one line per check), the probes, the batch note; True marks a flagged line.

    Clean accuracy alone (the attacks still running, or stopped before one finished) gets
    one line instead of a report whose every check says it cannot tell.
    """
    if table.attacks or table.probes:
        lines = [(summary(table.checks), any(c.passed is False for c in table.checks))]
        lines += [
            (f"  {MARKS[c.passed]} {c.name}: {c.detail}", c.passed is False) for c in table.checks
        ]
        lines += [(f"  {line}", False) for line in probe_lines(table)]
    else:
        lines = [(f"clean accuracy {pct(table.clean)}%; no attack measured yet", False)]
    if batchstats:
        lines.append((f"  {BATCH_NOTE}", False))
    return lines
