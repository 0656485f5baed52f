"""The budget view: does the conflict μ grow with the training budget ε, on these runs?

Section 3 predicts it does. For the runs a person picked (marked, or those the filter
shows), each group of runs that differ only in ε gets two charts, μ per epoch (the
median of its steps) per run and the last epoch's median μ against ε per method, and
`paper.budget_view`'s verdict in words. The groups are built off the UI thread.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Header, Static

from caat_app.paper.budget_view import verdict
from caat_app.present import format_budget

from .calls import call_service
from .charts import MetricChart, Series
from .keys import Key

if TYPE_CHECKING:
    from caat_app.runs.service import Workbench

NO_GROUP_HINT = (
    "no budget group in this selection: runs must differ only in ε (method, γ/λ, seed and"
    " name aside), with at least two budgets per method"
)


def epoch_lines(group: Mapping[str, Any]) -> dict[str, Series]:
    """μ per epoch (its median) of every run of the group, one line per method and ε."""
    lines: dict[str, Series] = {}
    for line in group["lines"]:
        for run in line["runs"]:
            label = f"{line['label']} ε={format_budget(run['eps'])}"
            lines[label] = (run["epoch"], run["median"])
    return lines


def budget_lines(group: Mapping[str, Any]) -> dict[str, Series]:
    """The last epoch's median μ against ε, one line per method and trade-off."""
    lines: dict[str, Series] = {}
    for line in group["lines"]:
        pairs = [(e, m) for e, m in zip(line["eps"], line["last_mu"], strict=True) if m is not None]
        lines[line["label"]] = ([e for e, _ in pairs], [m for _, m in pairs])
    return lines


class BudgetScreen(Screen[None]):
    """Per budget group of the chosen runs: μ per epoch, last-epoch μ against ε, a verdict."""

    DEFAULT_CSS = """
    BudgetScreen #budget-body MetricChart {
        height: 14;
    }
    BudgetScreen .budget-title {
        margin-top: 1;
    }
    """

    BINDINGS = [Key("escape", "app.pop_screen", "Back", tooltip="back to the runs")]
    HELP = "μ is the median of each epoch's steps; the verdict reads the last epoch's."

    def __init__(self, bench: Workbench, run_ids: list[int]) -> None:
        super().__init__()
        self.bench = bench
        self.run_ids = run_ids
        self.groups: list[dict[str, Any]] | None = None  # None until loaded

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(Text(f"budget view of {self.runs_text()} · loading…"), id="budget-head")
        yield VerticalScroll(id="budget-body")
        yield Footer()

    def runs_text(self) -> str:
        count = len(self.run_ids)
        return f"{count} run" + ("" if count == 1 else "s")

    def on_mount(self) -> None:
        bench, ids = self.bench, self.run_ids
        call_service(self, lambda: bench.budget_groups(ids), self.show_groups, group="budget")

    def show_groups(self, groups: list[dict[str, Any]]) -> None:
        """One titled block per group: both charts and the verdict; the hint when none."""
        self.groups = groups
        plural = "" if len(groups) == 1 else "s"
        head = f"budget view of {self.runs_text()} · {len(groups)} budget group{plural}"
        self.query_one("#budget-head", Static).update(Text(head))
        body = self.query_one("#budget-body", VerticalScroll)
        if not groups:
            body.mount(Static(Text(NO_GROUP_HINT, style="dim"), id="budget-hint"))
            return
        widgets: list[Static | MetricChart] = []
        for i, group in enumerate(groups):
            widgets.append(Static(Text(group["group"], style="bold"), classes="budget-title"))
            per_epoch = MetricChart("μ per epoch (median)", "μ", id=f"budget-epochs-{i}")
            last = MetricChart("last epoch's median μ against ε", "μ", id=f"budget-eps-{i}")
            sentences = Text("\n").join(Text(s) for s in verdict([group]))
            widgets += [per_epoch, last, Static(sentences, classes="budget-verdict")]
            per_epoch.set_series(epoch_lines(group), x_label="epoch")
            last.set_series(budget_lines(group), x_label="ε")
        body.mount_all(widgets)
