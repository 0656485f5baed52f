"""The SA-AA front of finished runs: points, each family's Pareto front, a computed verdict."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static
from textual_plotext import PlotextPlot

from caat_app.compare import SPLITS, axis_labels, points_from_runs
from caat_app.front import POINT_COLUMNS, point_cells
from screens.messages import StoreFailed

if TYPE_CHECKING:
    from screens.app import CaatApp

COLORS = [(66, 135, 245), (245, 130, 48), (60, 180, 75), (220, 50, 120), (145, 30, 180)]
MAX_RUNS = 10_000


@dataclass
class FrontLoaded(Message):
    report: dict[str, Any]
    labels: tuple[str, str]


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

    def show(self, report: dict[str, Any], labels: tuple[str, str]) -> None:
        self.report, self.labels = report, labels
        self.refresh()

    def render(self) -> Any:
        plt = self.plt
        plt.clear_figure()
        plt.xlabel(self.labels[0])
        plt.ylabel(self.labels[1])
        report = self.report
        if not report or not report["points"]:
            plt.title("no finished runs yet")
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
        pad_y = max(max(aa) - min(aa), 1.0)
        plt.xlim(min(sa) - pad_x, max(sa) + pad_x)
        plt.ylim(min(aa) - 0.05 * pad_y, max(aa) + 0.25 * pad_y)  # room for the legend
        plt.title("SA-AA front (up and to the right is better)")
        return super().render()


class FrontScreen(Screen[None]):
    """Finished runs matching the runs table's filter; `v` switches test / validation."""

    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("v", "split", "Test/val"),
    ]

    def __init__(self, search: str = "") -> None:
        super().__init__()
        self.search = search
        self.split = "test"

    @property
    def caat(self) -> CaatApp:
        return self.app  # type: ignore[return-value]

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
        from caat_app.front import report

        try:
            runs = self.caat.store.list_runs(limit=MAX_RUNS, search=self.search or None)
            finished = [run for run in runs if run.status == "finished"]
            rep = report(points_from_runs(finished, split=self.split))
            labels = axis_labels(finished, split=self.split) if finished else ("SA", "AA")
        except Exception as exc:
            self.post_message(StoreFailed(f"cannot build the front: {exc}"))
            return
        self.post_message(FrontLoaded(rep, labels))

    def on_store_failed(self, message: StoreFailed) -> None:
        self.notify(message.error, severity="error", markup=False)

    def on_front_loaded(self, message: FrontLoaded) -> None:
        rep = message.report
        self.query_one(FrontChart).show(rep, message.labels)
        scope = f"runs matching '{self.search}'" if self.search else "all finished runs"
        verdict = Text(f"{scope}, {self.split} split. ", style="bold")
        verdict.append(" ".join(rep["verdict"]))
        self.query_one("#front-verdict", Static).update(verdict)
        table = self.query_one("#front-points", DataTable)
        table.clear(columns=True)
        table.add_columns(*POINT_COLUMNS)
        for point in rep["points"]:
            table.add_row(*[Text(cell) for cell in point_cells(point)])

    def action_split(self) -> None:
        self.split = SPLITS[(SPLITS.index(self.split) + 1) % len(SPLITS)]
        self.load()
