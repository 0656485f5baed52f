"""An experiment's stored results as the paper reports them: fronts, μ curves, budget lines,
Table 1, each with its rows (for CSV) and a verdict computed from the numbers.

Torch-free. Fronts are `analysis.points.front_view`, the one `caat front` and the
dashboard draw, so their verdict is `analysis.verdict`'s; the other kinds state what
their numbers say in the same plain way. `write_outputs` writes the figure, the table
and the verdict; matplotlib is imported only there.
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from caat_app.analysis.front import METHOD_FAMILY
from caat_app.analysis.points import EvalAxis, evaluated, front_view
from caat_app.paper import table1
from caat_app.paper.run import stored_runs
from caat_app.present import format_budget, param_label
from caat_app.runs.stored import options_of
from caat_storage import RunStatus

if TYPE_CHECKING:
    from caat_app.paper.scale import Plan, PlannedRun
    from caat_storage import EvalResult, Run, Store

Pairs = Sequence[tuple["PlannedRun", "Run | None"]]


def build_report(store: Store, plan_: Plan) -> dict[str, Any]:
    """Everything the experiment's outputs show, as one JSON-able dict."""
    exp = plan_.experiment
    pairs = stored_runs(store, plan_)
    kind = exp.report
    body = {"front": _fronts, "mu": _mu, "budget": _budget, "table": _table}[kind](
        store, plan_, pairs
    )
    return {
        "experiment": exp.id,
        "title": exp.help,
        "figure_title": exp.help if not plan_.smoke else f"{exp.id}, smoke scale: {plan_.title}",
        "source": exp.source,
        "paper_shows": exp.shows,
        "scale": plan_.scale,
        "sweep": plan_.sweep,
        "notes": list(plan_.notes),
        "kind": kind,
        "runs": [_run_json(p, r) for p, r in pairs],
        "missing": _missing(pairs),
        **body,
    }


def _run_json(planned: PlannedRun, run: Run | None) -> dict[str, Any]:
    return {
        "name": planned.config.name,
        "panel": planned.panel,
        "id": None if run is None else run.id,
        "status": "not queued" if run is None else run.status,
    }


def _missing(pairs: Pairs) -> list[str]:
    """Runs the report lacks, and why (failed ones name their status)."""
    return [
        f"{p.config.name}: {'not queued' if r is None else r.status}"
        for p, r in pairs
        if r is None or r.status != RunStatus.FINISHED
    ]


def _finished(pairs: Pairs) -> list[tuple[PlannedRun, Run]]:
    return [(p, r) for p, r in pairs if r is not None and r.status == RunStatus.FINISHED]


def _family(method: str) -> str:
    return METHOD_FAMILY.get(method, method)


# --------------------------------------------------------------------------- fronts


def _axes(plan_: Plan) -> list[EvalAxis]:
    """The fronts to draw: one per attack, budget and norm of the experiment's evaluations."""
    if not plan_.runs:
        return []
    return [
        EvalAxis(attack, eps, spec.norm, spec.checkpoint)
        for spec in plan_.runs[0].evaluations
        for attack in spec.attacks
        for eps in spec.budgets
    ]


def _fronts(store: Store, plan_: Plan, pairs: Pairs) -> dict[str, Any]:
    """One SA-AA front per evaluated attack; the first is the experiment's figure."""
    runs = [r for _, r in _finished(pairs)]
    results = store.evals_of_runs([r.id for r in runs if r.id is not None])
    fronts, rows, verdict = [], [], []
    for axis in _axes(plan_):
        view = front_view(runs, axis=axis, results=results)
        fronts.append(
            {
                "axis": axis.text,
                "attack": axis.attack,
                "norm": axis.norm,
                "eps": axis.eps,
                "labels": list(view.labels),
                "report": view.report,
            }
        )
        rows += [
            {
                "aa_attack": axis.text,
                **{k: p[k] for k in ("family", "label", "sa", "aa", "seeds")},
                "on_front": p["on_front"],
                "runs": " ".join(map(str, p["run_ids"])),
            }
            for p in view.report["points"]
        ]
        sentences = view.report["verdict"]
        verdict += [f"AA = {axis.text}: {sentences[0]}", *sentences[1:]] if sentences else []
    return {"fronts": fronts, "rows": rows, "verdict": verdict}


# --------------------------------------------------------------------------- μ curves


def epoch_means(rows: Iterable[Any]) -> tuple[list[int], list[float]]:
    """Mean μ per epoch over the steps that recorded a finite one."""
    per: dict[int, list[float]] = {}
    for row in rows:
        if row.mu is not None and math.isfinite(row.mu):
            per.setdefault(int(row.epoch), []).append(float(row.mu))
    epochs = sorted(per)
    return epochs, [statistics.fmean(per[e]) for e in epochs]


def tail_mean(values: Sequence[float]) -> float | None:
    """The mean of the last quarter (at least one value): where training settles."""
    if not values:
        return None
    return statistics.fmean(values[-max(1, len(values) // 4) :])


def _mu(store: Store, plan_: Plan, pairs: Pairs) -> dict[str, Any]:
    """μ per epoch of every run, panel by panel, and whether CA-AT keeps it lower; and the
    budget view of the runs that differ only in ε."""
    from caat_app.paper.budget_view import budget_groups, epoch_spread
    from caat_app.paper.budget_view import verdict as budget_verdict_of

    panels, rows = [], []
    spreads = []
    for panel in plan_.panels():
        lines = []
        for planned, run in _finished(pairs):
            if planned.panel != panel or run.id is None:
                continue
            steps = store.steps(run.id)
            epochs, mu = epoch_means(steps)
            spreads.append((run.id, options_of(run), epoch_spread(steps)))
            label = f"{_family(run.method)} {param_label(run.method, run.param)}"
            lines.append(
                {
                    "label": label,
                    "method": run.method,
                    "param": run.param,
                    "run": run.id,
                    "epochs": epochs,
                    "mu": mu,
                    "tail": tail_mean(mu),
                }
            )
            rows += [
                {"panel": panel, "run": run.id, "label": label, "epoch": e, "mu": m}
                for e, m in zip(epochs, mu, strict=True)
            ]
        figure = next((p.figure for p, _ in pairs if p.panel == panel), "")
        panels.append({"panel": panel, "figure": figure, "lines": lines})
    groups = budget_groups(spreads)
    verdict = mu_verdict(panels) + budget_verdict_of(groups)
    return {"panels": panels, "budget_view": groups, "rows": rows, "verdict": verdict}


def mu_verdict(panels: Sequence[Mapping[str, Any]]) -> list[str]:
    """Per panel: is every CA-AT run's μ (last quarter of training) below every Vanilla one's?"""
    out, below, judged = [], 0, 0
    for panel in panels:
        tails = {
            m: [ln for ln in panel["lines"] if ln["method"] == m and ln["tail"] is not None]
            for m in ("vanilla", "caat")
        }
        if not tails["vanilla"] or not tails["caat"]:
            out.append(f"{panel['panel']}: not both families finished; nothing to compare.")
            continue
        judged += 1
        lower = max(ln["tail"] for ln in tails["caat"]) < min(ln["tail"] for ln in tails["vanilla"])
        below += lower
        listing = ", ".join(f"{ln['label']} {ln['tail']:.3g}" for m in tails for ln in tails[m])
        word = "below" if lower else "not below"
        out.append(
            f"{panel['panel']}: CA-AT's μ is {word} every Vanilla AT run's over the last "
            f"quarter of training ({listing})."
        )
    if judged:
        out.append(f"CA-AT keeps μ lower in {below} of {judged} panels.")
    return out


# --------------------------------------------------------------------------- budgets


def pick(results: Iterable[EvalResult], axis: EvalAxis) -> tuple[float, float] | None:
    """(clean, attacked) accuracy for an axis, on the largest image count that has both."""
    found = evaluated(list(results), axis)
    return None if found is None else (found[0], found[1].accuracy)


def _budget(store: Store, plan_: Plan, pairs: Pairs) -> dict[str, Any]:
    """Accuracy against the budget, one line per run (method and training ε), per attack."""
    finished = _finished(pairs)
    results = store.evals_of_runs([r.id for _, r in finished if r.id is not None])
    spec = plan_.runs[0].evaluations[0]
    lines, rows = [], []
    for attack in spec.attacks:
        for planned, run in finished:
            eps, acc = [0.0], []
            for budget in spec.budgets:
                got = pick(results.get(run.id or -1, []), EvalAxis(attack, budget, spec.norm))
                if got is not None:
                    acc = acc or [got[0]]
                    eps.append(budget)
                    acc.append(got[1])
            label = (
                f"{_family(run.method)} {param_label(run.method, run.param)}, "
                f"trained at ε={format_budget(planned.config.eps)}"
            )
            lines.append(
                {
                    "attack": attack,
                    "label": label,
                    "method": run.method,
                    "train_eps": planned.config.eps,
                    "eps": eps[: len(acc)],
                    "accuracy": acc,
                }
            )
            rows += [
                {"attack": attack, "run": label, "eps": e, "accuracy": a}
                for e, a in zip(eps, acc, strict=False)
            ]
    return {"lines": lines, "rows": rows, "verdict": budget_verdict(lines)}


def budget_verdict(lines: Sequence[Mapping[str, Any]]) -> list[str]:
    """Per attack and training ε: at how many budgets CA-AT is at least Vanilla AT's."""
    out = []
    keys = sorted({(ln["attack"], ln["train_eps"]) for ln in lines}, key=str)
    for attack, train_eps in keys:
        pair = {
            ln["method"]: ln
            for ln in lines
            if (ln["attack"], ln["train_eps"]) == (attack, train_eps)
        }
        if set(pair) != {"vanilla", "caat"}:
            continue
        v = dict(zip(pair["vanilla"]["eps"], pair["vanilla"]["accuracy"], strict=True))
        c = dict(zip(pair["caat"]["eps"], pair["caat"]["accuracy"], strict=True))
        both = sorted(set(v) & set(c))
        ahead = sum(c[e] >= v[e] for e in both)
        out.append(
            f"{attack}, trained at ε={format_budget(train_eps)}: CA-AT is at least Vanilla AT "
            f"at {ahead} of {len(both)} budgets (SA included)."
        )
    return out or ["No pair of Vanilla AT and CA-AT runs with evaluations to compare."]


# --------------------------------------------------------------------------- Table 1


def _table(store: Store, plan_: Plan, pairs: Pairs) -> dict[str, Any]:
    """Table 1 per panel: the paper's Vanilla and CA-AT beside caat's, and who wins where."""
    finished = _finished(pairs)
    results = store.evals_of_runs([r.id for _, r in finished if r.id is not None])
    spec = plan_.runs[0].evaluations[0]
    tables, rows, verdict = [], [], []
    for panel in plan_.panels():
        measured: dict[tuple[str, str, float], float] = {}
        model = None
        for planned, run in finished:
            if planned.panel != panel:
                continue
            model = planned.paper_model if planned.paper_model in table1.MODELS else None
            for attack in spec.attacks:
                for eps in spec.budgets:
                    got = pick(results.get(run.id or -1, []), EvalAxis(attack, eps, spec.norm))
                    if got is not None:
                        measured[table1.cell_key(run.method, "clean", eps)] = got[0]
                        measured[table1.cell_key(run.method, attack, eps)] = got[1]
        table = table1.comparison_rows(
            model, measured, attacks=spec.attacks, budgets=spec.budgets, ratio=plan_.ratio
        )
        tables.append({"panel": panel, "paper_model": model, "rows": table})
        rows += [{"panel": panel, **r} for r in table]
        verdict.append(_table_sentence(panel, table, model))
    verdict.append(table1.protocol_text())
    if plan_.smoke:
        verdict.append(
            "The paper's numbers are CIFAR-10 (each beside the smoke budget that keeps its "
            "ratio: 0.3 sits beside 8/255); caat's are digits with a small CNN: not comparable."
        )
    return {"tables": tables, "rows": rows, "verdict": verdict}


def _table_sentence(panel: str, rows: Sequence[Mapping[str, Any]], model: str | None) -> str:
    ours, n = table1.wins(rows, "caat_vanilla", "caat_caat")
    text = f"{panel}: caat's CA-AT is at least its Vanilla AT in {ours} of {n} cells"
    if model is not None:
        theirs, m = table1.wins(rows, "paper_vanilla", "paper_caat")
        text += f"; the paper's in {theirs} of {m}"
    return text + "."


# --------------------------------------------------------------------------- files


def write_outputs(report: Mapping[str, Any], folder: Path, stem: str) -> list[Path]:
    """The figure(s), the table as JSON and CSV, and the verdict; the paths written."""
    from caat_app.paper.plots import draw

    folder.mkdir(parents=True, exist_ok=True)
    written = draw(report, folder, stem)
    files = {
        f"{stem}.json": json.dumps(report, indent=2, default=str),
        f"{stem}.csv": _csv(report["rows"]),
        f"{stem}-verdict.txt": "\n".join([*report["notes"], "", *report["verdict"]]) + "\n",
    }
    for name, text in files.items():
        (folder / name).write_text(text)
        written.append(folder / name)
    return written


def _csv(rows: Sequence[Mapping[str, Any]]) -> str:
    """Rows of one shape as CSV with a header (nothing for no rows)."""
    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return buf.getvalue()
