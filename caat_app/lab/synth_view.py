"""The synthetic experiment's table and summary, drawn from its stored report.

Torch-free (rich only): `caat synth` prints the table, and the dashboard's Conflict
screen draws the newest stored report with the same code, narrower.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

FACTORS = ("norm_c", "norm_a", "one_minus_phi")
"""μ's three factors: the wide table shows them, the narrow one leaves them out."""


def synth_title(rep: Mapping[str, Any]) -> str:
    task, cfg = rep["task"], rep["config"]
    return (
        f"caat synth: {task['dataset']} 1 vs 2, {cfg['norm']}, Vanilla AT λ = {cfg['lam']:g}, "
        f"{cfg['epochs']} epochs, {task['n_train']} train / {task['n_test']} test"
    )


def synth_table(rep: Mapping[str, Any], *, factors: bool = True) -> Table:
    """One row per δ: test SA and AA, μ (and its factors), the bound and whether μ is under."""
    table = Table(title=Text(synth_title(rep)), title_justify="left")
    heads = ["δ", "SA", "AA", "μ"]
    heads += ["‖g_c‖", "‖g_a‖", "1 − φ"] if factors else []
    heads += ["bound ½δ²K²", "μ ≤ bound"]
    for head in heads:
        table.add_column(head, justify="right")
    for r in rep["rows"]:
        cells = [f"{r['delta']:g}", f"{100 * r['sa']:.1f}", f"{100 * r['aa']:.1f}"]
        cells.append(f"{r['mu']:.3e}")
        if factors:
            cells += [f"{r['norm_c']:.3e}", f"{r['norm_a']:.3e}", f"{r['one_minus_phi']:.3f}"]
        cells += [f"{r['bound']:.3e}", "yes" if r["mu"] <= r["bound"] else "NO"]
        table.add_row(*cells)
    return table


def synth_view(rep: Mapping[str, Any], width: int) -> RenderableType:
    """The stored experiment as the dashboard shows it: the table (its factors only when
    the screen is wide enough), the data set's note and the findings."""
    table = synth_table(rep, factors=width >= 110)
    table.title = None  # as a line of its own, it wraps with the screen, not the table
    sentences = [rep["task"].get("note", ""), *rep.get("findings", [])]
    return Group(Text(synth_title(rep)), table, *(Text(s) for s in sentences if s))
