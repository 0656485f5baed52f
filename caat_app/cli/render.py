"""How the commands draw runs, sweeps, evaluations, comparisons and fronts: rich tables.

Pure: each function builds renderables (or CSV text) from what a command fetched and
prints nothing, so a command reads as fetch, build, print. Numbers, budgets, statuses
and methods are written by `caat_app.present`, as the dashboard writes them.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from rich import box
from rich.console import RenderableType
from rich.table import Table
from rich.text import Text

from caat_app.present import (
    STATUS_STYLE,
    format_budget,
    method_label,
    model_text,
    number,
    pct,
    visible,
)
from caat_app.runs.stored import option, options_of

if TYPE_CHECKING:
    from caat_app.evaluation.tables import EvalTable
    from caat_app.runs.sweep import SweepRow
    from caat_storage import Run

RUN_FIELDS = (
    "method",
    "dataset",
    "model",
    "eps",
    "epochs_done",
    "epochs_total",
    "steps_done",
    "nonfinite_steps",
    "best_epoch",
    "best_val_clean",
    "best_val_adv",
    "best_test_clean",
    "best_test_adv",
    "last_val_clean",
    "last_val_adv",
    "last_test_clean",
    "last_test_adv",
    "last_phi",
    "last_mu",
)
"""What `caat show` lists of a run, in this order, before its times."""

RUN_TIMES = ("created_at", "started_at", "finished_at", "heartbeat_at")


def status_text(status: str) -> Text:
    """A status in the dashboard's colours."""
    return Text(status, style=STATUS_STYLE.get(status, ""))


def method_text(run: Run) -> str:
    """`caat γ=0.8`: the method and its trade-off parameter."""
    return method_label(run.method, run.param)


def run_label(run: Run) -> str:
    """`3 (name)`, its name's control characters escaped (an older build let them in)."""
    return f"{run.id} ({visible(run.name)})"


def value_cell(value: Any) -> Text:
    """A stored value as a table cell: numbers as `number` writes them, text escaped."""
    return Text(visible(number(value)))


def rows_csv(rows: Iterable[dict[str, Any]]) -> str:
    """Dicts of one shape as CSV with a header (nothing at all for no rows)."""
    rows = list(rows)
    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return buf.getvalue()


# --------------------------------------------------------------------------- runs


def results_table(records: Sequence[Run]) -> Table:
    """Runs side by side: their best epoch on validation, accuracies in %."""
    table = Table(title="results (best epoch on validation; accuracies in %)", title_justify="left")
    table.add_column("")
    for r in records:
        table.add_column(Text(f"{r.id}: {method_text(r)}"), justify="right")
    rows: list[tuple[str, Callable[[Run], Any]]] = [
        ("status", lambda r: status_text(r.status)),
        ("best epoch", lambda r: number(r.best_epoch)),
        ("val SA", lambda r: pct(r.best_val_clean)),
        ("val AA (PGD)", lambda r: pct(r.best_val_adv)),
        ("test SA", lambda r: pct(r.best_test_clean)),
        ("test AA (PGD)", lambda r: pct(r.best_test_adv)),
        ("last φ", lambda r: number(r.last_phi, 3)),
        ("last μ", lambda r: number(r.last_mu, 3)),
    ]
    for label, get in rows:
        table.add_row(label, *[get(r) for r in records])
    return table


RUN_COLUMNS = ("id", "name", "status", "method", "data", "ε", "epoch", "SA", "PGD", "φ", "μ")
NARROW_DROPS = ("μ", "φ", "ε", "epoch", "data")
"""What a narrow terminal loses first, in order: never the id, the name or the numbers."""


def runs_table(rows: Sequence[Run], url: str, *, drop: Collection[str] = ()) -> Table:
    """`caat runs`: one line per run, newest first (without the columns in `drop`)."""
    table = Table(
        title=Text(f"runs in {url} (SA, per-epoch PGD: best epoch on validation, %)"),
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    shown = [col for col in RUN_COLUMNS if col not in drop]
    for col in shown:
        left = col in {"name", "status", "method", "data"}
        table.add_column(
            col,
            justify="left" if left else "right",
            no_wrap=col != "name",
            min_width=12 if col == "name" else None,
        )
    for r in rows:
        cells = {
            "id": str(r.id),
            "name": Text(visible(r.name)),
            "status": status_text(r.status),
            "method": Text(method_text(r)),
            "data": Text(model_text(r)),
            "ε": number(r.eps, 3),
            "epoch": f"{r.epochs_done}/{r.epochs_total}",
            "SA": pct(r.best_val_clean),
            "PGD": pct(r.best_val_adv),
            "φ": number(r.last_phi, 2),
            "μ": number(r.last_mu, 2),
        }
        table.add_row(*(cells[col] for col in shown))
    return table


def run_parts(run: Run) -> list[RenderableType]:
    """`caat show`: the run's fields, its stored config, and its error if it has one."""
    table = Table(
        title=Text(f"run {run.id}: {visible(run.name)}"), title_justify="left", show_header=False
    )
    table.add_column("field", style="bold")
    table.add_column("value")
    table.add_row("status", status_text(run.status))
    for key in RUN_FIELDS:
        table.add_row(key, Text(number(getattr(run, key))))
    for key in RUN_TIMES:
        value = getattr(run, key)
        table.add_row(key, Text(value.isoformat(timespec="seconds") if value else "-"))
    table.add_row("run_dir", Text(run.run_dir))
    cfg = Table(title="config", title_justify="left", show_header=False)
    cfg.add_column("option", style="bold")
    cfg.add_column("value")
    for key, value in options_of(run).items():
        cfg.add_row(visible(key), value_cell(value))
    parts: list[RenderableType] = [table, cfg]
    if run.error:
        parts += [Text("error:", style="bold red"), Text(visible(run.error, keep="\n\t"))]
    return parts


def sweep_table(name: str, rows: Sequence[SweepRow]) -> Table:
    """A sweep's runs after it ran: each config and seed, its status and test accuracies."""
    table = Table(
        title=Text(f"sweep {name} (best epoch on validation; test accuracies in %)"),
        title_justify="left",
    )
    for col in ("id", "run", "seed", "status", "test SA", "test AA (PGD)"):
        table.add_column(col, justify="left" if col in {"run", "status"} else "right")
    for row in rows:
        r = row.run
        table.add_row(
            str(r.id),
            Text(visible(row.label)),
            number(row.seed),
            status_text(r.status),
            pct(r.best_test_clean),
            pct(r.best_test_adv),
        )
    return table


# --------------------------------------------------------------------------- evaluations


def eval_parts(tables: Sequence[tuple[Run, EvalTable]]) -> list[RenderableType]:
    """The paper's layout, attacks as columns and budgets as rows, runs side by side,
    then each run's gradient-masking report."""
    from caat_app.evaluation.tables import report_lines

    several = len(tables) > 1
    samples = sorted({t.samples for _, t in tables})
    if several:
        title = f"accuracy in % on {', '.join(map(str, samples))} test images, runs side by side"
    else:
        record = tables[0][0]
        title = f"run {run_label(record)}: accuracy in % on {samples[0]} test images"
    parts: list[RenderableType] = [Text(title)]
    if any(t.budgets for _, t in tables):
        parts.append(_eval_grid(tables))
    for record, t in tables:
        batchstats = option(record, "bn") == "batchstats"
        for k, (line, _) in enumerate(report_lines(t, batchstats=batchstats)):
            lead = f"run {run_label(record)}: " if several and k == 0 else ""
            parts.append(Text(lead + line))
    return parts


def _eval_grid(tables: Sequence[tuple[Run, EvalTable]]) -> Table:
    several = len(tables) > 1
    attacks = list(dict.fromkeys(a for _, t in tables for a in t.attacks))
    budgets = sorted({e for _, t in tables for e in t.budgets})
    table = Table()
    table.add_column("ε")
    if several:
        table.add_column("run")
    table.add_column("SA", justify="right")
    for name in attacks:
        table.add_column(name, justify="right")
    for i, budget in enumerate(budgets):
        mine = [(r, t) for r, t in tables if budget in t.budgets]
        for j, (record, t) in enumerate(mine):
            who = [Text(f"{record.id} {visible(record.name)}")] if several else []
            table.add_row(
                format_budget(budget) if j == 0 else "",
                *who,
                pct(t.clean),
                *[pct(t.cell(a, budget)) for a in attacks],
                end_section=several and j == len(mine) - 1 and i < len(budgets) - 1,
            )
    return table


# --------------------------------------------------------------------------- comparisons


def config_table(
    records: Sequence[Run], rows: Sequence[dict[str, Any]], *, show_all: bool
) -> tuple[Table, int]:
    """The options of runs side by side, differences highlighted; also how many are equal
    in every run (left out unless `show_all`)."""
    table = Table(title="config (differences highlighted)", title_justify="left")
    table.add_column("option", style="bold")
    for r in records:
        table.add_column(Text(f"{r.id}: {visible(r.name)}"), justify="right")
    equal = 0
    for row in rows:
        if not row["differs"] and not show_all:
            equal += 1
            continue
        style = "bold yellow" if row["differs"] else ""
        cells = [Text(visible(number(v)), style=style) for v in row["values"]]
        table.add_row(row["option"], *cells)
    return table, equal


def metrics_table(records: Sequence[Run], rows: Sequence[dict[str, Any]]) -> Table:
    """The metrics each run reached, side by side."""
    table = Table(title="metrics (accuracies in %)", title_justify="left")
    table.add_column("metric", style="bold")
    for r in records:
        table.add_column(Text(f"{r.id}: {visible(r.name)}"), justify="right")
    for row in rows:
        percent = "SA" in row["metric"] or "AA" in row["metric"]
        cells = [
            status_text(v) if row["key"] == "status" else (pct(v) if percent else number(v, 3))
            for v in row["values"]
        ]
        table.add_row(row["metric"], *cells)
    return table


def front_table(report: dict[str, Any], scope: str) -> Table:
    """The SA-AA points; which of them make each family's front is its `on front` column."""
    from caat_app.analysis.front import POINT_COLUMNS, point_cells

    table = Table(title=Text(f"SA-AA points ({scope}, %)"), title_justify="left")
    for col in POINT_COLUMNS:
        table.add_column(col, justify="left" if col in {"family", "setting", "runs"} else "right")
    for p in report["points"]:
        table.add_row(*[Text(cell) for cell in point_cells(p)])
    return table


def front_csv(report: dict[str, Any]) -> str:
    """The points of a front as CSV, one row per setting (and AA source)."""
    return rows_csv(
        {
            "family": p["family"],
            "label": p["label"],
            "sa": p["sa"],
            "aa": p["aa"],
            "sa_std": p["sa_std"],
            "aa_std": p["aa_std"],
            "seeds": p["seeds"],
            "runs": " ".join(str(i) for i in p["run_ids"]),
            "aa_source": p["aa_source"],
        }
        for p in report["points"]
    )
