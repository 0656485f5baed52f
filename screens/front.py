"""The SA-AA front of finished runs: points, each family's Pareto front, a computed verdict.

AA is each run's strongest stored evaluation (AutoAttack first) or else training's
per-epoch PGD, as `caat front` chooses it, or (`a`) one attack `caat eval` measured.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static
from textual_plotext import PlotextPlot

from caat_app.analysis.front import POINT_COLUMNS, point_cells
from caat_app.analysis.points import SPLITS, EvalAxis, eval_axes, front_view
from caat_storage import RunStatus

from .keys import Key
from .messages import StoreFailed
from .modals import AxisPicker

if TYPE_CHECKING:
    from caat_app.runs.service import Workbench

COLORS = [(66, 135, 245), (245, 130, 48), (60, 180, 75), (220, 50, 120), (145, 30, 180)]
MAX_RUNS = 10_000
FRAME_ROWS = 5  # a plot's rows that are not canvas: title, box top and bottom, ticks, label


@dataclass
class FrontLoaded(Message):
    """The front's report and axis titles; the evaluated axes there are; runs left out;
    the AA axis's source in words."""

    report: dict[str, Any]
    labels: tuple[str, str]
    axes: list[EvalAxis] = field(default_factory=list)
    missing: list[int] = field(default_factory=list)
    source: str = ""


def staircase(sa: list[float], aa: list[float]) -> tuple[list[float], list[float]]:
    """A front (SA ascending) as the edge of the area it dominates: down, then across."""
    xs, ys = sa[:1], aa[:1]
    for x, y in zip(sa[1:], aa[1:], strict=True):
        xs += [xs[-1], x]
        ys += [y, y]
    return xs, ys


class FrontChart(PlotextPlot):
    """Points per family and their fronts; plotext's own scatter, redrawn on resize."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.report: dict[str, Any] | None = None
        self.labels = ("SA (%)", "AA (%)")
        self.empty = "no finished runs yet"

    def show(
        self, report: dict[str, Any], labels: tuple[str, str], empty: str = "no finished runs yet"
    ) -> None:
        self.report, self.labels, self.empty = report, labels, empty
        self.refresh()

    def render(self) -> Any:
        plt = self.plt
        plt.clear_figure()
        # plotext writes the y label over the x label's line: the y axis is named on top.
        plt.xlabel(f"→ {self.labels[0]}")
        report = self.report
        if not report or not report["points"]:
            plt.title(self.empty)
            return super().render()
        for i, family in enumerate(report["families"]):
            color = COLORS[i % len(COLORS)]
            mine = [p for p in report["points"] if p["family"] == family]
            front = sorted((p for p in mine if p["on_front"]), key=lambda p: p["sa"])
            xs, ys = staircase([100 * p["sa"] for p in front], [100 * p["aa"] for p in front])
            if len(xs) > 1:  # the boundary the hypervolume measures, under the points
                plt.plot(xs, ys, color=color)
            plt.scatter(
                [100 * p["sa"] for p in mine],
                [100 * p["aa"] for p in mine],
                color=color,
                label=family,
                marker="●",
            )
        sa = [100 * p["sa"] for p in report["points"]]
        aa = [100 * p["aa"] for p in report["points"]]
        pad_x = max(max(sa) - min(sa), 1.0) * 0.05
        bottom = min(aa) - 0.05 * max(max(aa) - min(aa), 1.0)
        plt.xlim(min(sa) - pad_x, max(sa) + pad_x)
        plt.ylim(bottom, legend_top(bottom, max(aa), len(report["families"]), self.size.height))
        plt.title(f"↑ {self.labels[1]}")
        return super().render()


def legend_top(bottom: float, highest: float, entries: int, height: int) -> float:
    """The y limit that keeps every point below the legend, which plotext draws over the
    top rows of the plot, one row per entry (the highest point would hide under it)."""
    rows = max(height - FRAME_ROWS, entries + 2)
    return bottom + (highest - bottom) * rows / (rows - entries - 0.5)


class FrontScreen(Screen[None]):
    """Finished runs matching the runs table's filter; `a` picks the AA axis, `v` the split."""

    BINDINGS = [
        Key("escape", "app.pop_screen", "Back", tooltip="back to the runs"),
        Key(
            "a",
            "axis",
            "AA axis",
            title="Front AA axis",
            tooltip="Each run's strongest evaluation (else training's PGD), or one attack",
        ),
        Key(
            "v",
            "split",
            "Test/val",
            title="Test or validation",
            tooltip="Training's accuracies on the test or the validation split",
        ),
    ]

    def __init__(self, bench: Workbench, search: str = "") -> None:
        super().__init__()
        self.bench = bench
        self.search = search
        self.split = "test"
        self.axis: EvalAxis | None = None  # None: strongest stored, else training's PGD
        self.axes: list[EvalAxis] = []

    def compose(self) -> ComposeResult:
        yield Header()
        yield FrontChart(id="front-chart")
        yield Static("", id="front-verdict")
        yield DataTable(id="front-points", zebra_stripes=True, cursor_type="row")
        yield Footer()

    def on_mount(self) -> None:
        self.load()

    @work(thread=True, exclusive=True, group="front")
    def load(self) -> None:
        """The front of the finished runs the filter shows, as `caat front` computes it."""
        axis = self.axis
        store = self.bench.store
        try:
            runs = store.list_runs(limit=MAX_RUNS, search=self.search or None)
            finished = [r.id for r in runs if r.status == RunStatus.FINISHED and r.id is not None]
            results = store.evals_of_runs(finished)
            axes = eval_axes(r for rows in results.values() for r in rows)
            view = front_view(runs, split=self.split, axis=axis, results=results)
        except Exception as exc:
            self.post_message(StoreFailed(f"cannot build the front: {exc}"))
            return
        self.post_message(FrontLoaded(view.report, view.labels, axes, view.missing, view.source))

    def on_store_failed(self, message: StoreFailed) -> None:
        self.notify(message.error, severity="error", markup=False)

    def on_front_loaded(self, message: FrontLoaded) -> None:
        rep = message.report
        self.axes = message.axes
        empty = "no finished runs yet" if self.axis is None else "no shown run has this evaluation"
        self.query_one(FrontChart).show(rep, message.labels, empty)
        scope = f"runs matching '{self.search}'" if self.search else "all finished runs"
        if self.axis is None:
            verdict = Text(f"{scope}, {self.split} split, AA: {message.source}. ", style="bold")
        else:
            verdict = Text(f"{scope}, AA: {self.axis.text}. ", style="bold")
        verdict.append(" ".join(rep["verdict"]))
        if message.missing:
            verdict.append(
                f" {len(message.missing)} run(s) left out, never evaluated with "
                f"{self.axis.text if self.axis else 'this attack'}: "
                + " ".join(map(str, message.missing)),
                style="yellow",
            )
        self.query_one("#front-verdict", Static).update(verdict)
        table = self.query_one("#front-points", DataTable)
        table.clear(columns=True)
        table.add_columns(*POINT_COLUMNS)
        for point in rep["points"]:
            table.add_row(*[Text(cell) for cell in point_cells(point)])

    def action_split(self) -> None:
        if self.axis is not None:
            self.notify(
                "test/val applies to the default axis; evaluations measure test images",
                markup=False,
            )
            return
        self.split = SPLITS[(SPLITS.index(self.split) + 1) % len(SPLITS)]
        self.load()

    def action_axis(self) -> None:
        axes = list(self.axes)

        def done(index: int | None) -> None:
            if index is None:
                return
            self.axis = axes[index - 1] if 0 < index <= len(axes) else None
            self.load()

        self.app.push_screen(AxisPicker(axes, self.axis), done)
