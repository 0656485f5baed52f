"""A report of `caat_app.paper.report` as a table of text: a header and rows of cells.

Pure and torch-free: the CLI draws these cells; a dashboard could draw the same.
Accuracies are in %, budgets as people write them (8/255).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from caat_app.analysis.front import POINT_COLUMNS, point_cells
from caat_app.paper.table1 import row_cells
from caat_app.present import format_budget, pct

Cells = tuple[list[str], list[list[str]]]


def report_cells(report: Mapping[str, Any]) -> tuple[str, list[str], list[list[str]]]:
    """(title, header, rows) of the report's table, whatever its kind."""
    kind = report["kind"]
    header, rows = {
        "front": _front_cells,
        "mu": _mu_cells,
        "budget": _budget_cells,
        "table": _table_cells,
    }[kind](report)
    scale = "" if report["scale"] == "paper" else f" ({report['scale']} scale)"
    return f"{report['title']}{scale}", header, rows


def _front_cells(report: Mapping[str, Any]) -> Cells:
    rows = [
        [front["axis"], *point_cells(p)]
        for front in report["fronts"]
        for p in front["report"]["points"]
    ]
    return ["AA", *POINT_COLUMNS], rows


def _mu(value: float | None) -> str:
    return "–" if value is None else f"{value:.4g}"


def _mu_cells(report: Mapping[str, Any]) -> Cells:
    rows = [
        [
            panel["panel"],
            line["label"],
            str(len(line["epochs"])),
            _mu(line["mu"][0] if line["mu"] else None),
            _mu(line["tail"]),
        ]
        for panel in report["panels"]
        for line in panel["lines"]
    ]
    return ["panel", "run", "epochs", "μ, first epoch", "μ, last quarter"], rows


def _budget_cells(report: Mapping[str, Any]) -> Cells:
    budgets = sorted({e for line in report["lines"] for e in line["eps"]})
    rows = []
    for line in report["lines"]:
        acc = dict(zip(line["eps"], line["accuracy"], strict=True))
        rows.append([line["attack"], line["label"], *[pct(acc.get(e)) for e in budgets]])
    header = ["attack", "run", *("SA" if e == 0 else format_budget(e) for e in budgets)]
    return header, rows


def _table_cells(report: Mapping[str, Any]) -> Cells:
    header = ["panel", "attack", "ε", "paper Vanilla", "paper CA-AT", "caat Vanilla", "caat CA-AT"]
    rows = [[t["panel"], *row_cells(r)] for t in report["tables"] for r in t["rows"]]
    return header, rows
