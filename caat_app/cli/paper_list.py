"""`caat paper` with no experiment: the catalogue, each experiment's training and
measurement in one line (kept apart from running them, which is `cli.paper`)."""

from __future__ import annotations

import json
from typing import Any

from rich.table import Table
from rich.text import Text

from caat_app.cli.base import out
from caat_app.cli.lab import PAPER_GRID as SYNTH_GRID
from caat_app.paper.catalogue import EXPERIMENTS, REPORTS, Experiment
from caat_app.present import format_budget, norm_text


def _values(values: tuple[float, ...]) -> str:
    return "{" + ", ".join(f"{v:g}" for v in values) + "}"


def trains_text(exp: Experiment) -> str:
    """What an experiment trains, in one line: presets, families and what else it sweeps."""
    if exp.report == "synth":
        return (
            "logistic regression on digits 1 vs 2, Vanilla AT λ = 0.5 with the exact inner "
            f"maximisation, one model per δ ∈ {{{SYNTH_GRID}}} (`caat synth`)"
        )
    grids = exp.grids
    panels = ", ".join(dict.fromkeys(g.preset for g in grids))
    lam = sorted({v for g in grids for v in g.lam})
    gamma = sorted({v for g in grids for v in g.gamma})
    swept = {k: {v for g in grids for v in g.fields.get(k, ())} for g in grids for k in g.fields}
    extra = "; ".join(
        f"{k} {', '.join(format_budget(v) if k == 'eps' else str(v) for v in sorted(vs, key=str))}"
        for k, vs in swept.items()
    )
    return f"{panels}; Vanilla AT λ ∈ {_values(tuple(lam))}, CA-AT γ ∈ {_values(tuple(gamma))}" + (
        f"; {extra}" if extra else ""
    )


def measures_text(exp: Experiment) -> str:
    """What an experiment measures and how it is reported, in one line."""
    evals = [
        f"{', '.join(r.attacks)} at "
        + (",".join(format_budget(b) for b in r.budgets) if r.budgets else "the training ε")
        + f" {norm_text(r.norm)} on {r.n or 'all'} test images"
        for r in exp.evaluations
    ]
    what = "; ".join(evals) or "μ recorded while training"
    if exp.report == "synth":
        what = "test SA, exact AA, μ and its factors, Theorem 1's bound"
    return f"{what} → {REPORTS[exp.report]}"


def catalogue_json() -> list[dict[str, Any]]:
    """Every experiment as `caat paper --json` lists it."""
    return [
        {
            "id": exp.id,
            "title": exp.help,
            "source": exp.source,
            "paper_shows": exp.shows,
            "available": exp.available,
            "why_not": exp.unavailable or None,
            "trains": trains_text(exp) if exp.available else None,
            "measures": measures_text(exp) if exp.available else None,
            "report": exp.report,
            "notes": list(exp.notes),
        }
        for exp in EXPERIMENTS.values()
    ]


def list_experiments(as_json: bool) -> None:
    """`caat paper`: the catalogue, as a table (or JSON), each experiment in one row."""
    if as_json:
        print(json.dumps(catalogue_json(), indent=2))
        return
    table = Table(title="the paper's experiments (caat paper ID runs one)", title_justify="left")
    for col in ("id", "experiment", "trains", "measures"):
        table.add_column(col)
    for exp in EXPERIMENTS.values():
        if exp.available:
            table.add_row(exp.id, exp.help, trains_text(exp), measures_text(exp))
        else:
            table.add_row(
                exp.id,
                exp.help,
                Text("not yet available", style="magenta"),
                f"it {exp.unavailable}",
            )
    out.print(table)
    out.print(Text("cost first: caat paper ID --dry-run; the path on a CPU: --scale smoke"))
