"""Two or more runs side by side: differing options, final metrics, overlaid curves."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static

from caat_app.analysis.compare import EPOCH_SERIES, STEP_SERIES, compare
from caat_app.present import number, pct

from .charts import MetricChart
from .keys import Key
from .messages import StoreFailed

if TYPE_CHECKING:
    from caat_app.runs.service import Workbench

SERIES = [*STEP_SERIES, *EPOCH_SERIES]


@dataclass
class CompareLoaded(Message):
    """The runs, their comparison, and every run's step and epoch series by name."""

    data: dict[str, Any]
    series: list[dict[str, tuple[list[float], list[float]]]]


class CompareScreen(Screen[None]):
    """`e` shows or hides the equal options; `m` picks the metric overlaid below."""

    BINDINGS = [
        Key("escape", "app.pop_screen", "Back", tooltip="back to the runs"),
        Key("m", "metric", "Metric", title="Next metric", tooltip="The metric overlaid below"),
        Key(
            "e",
            "toggle_equal",
            "Equal options",
            title="Equal options",
            tooltip="Show or hide the options the runs share",
        ),
    ]

    def __init__(self, bench: Workbench, run_ids: list[int]) -> None:
        super().__init__()
        self.bench = bench
        self.run_ids = run_ids
        self.data: dict[str, Any] | None = None
        self.series: list[dict[str, tuple[list[float], list[float]]]] = []
        self.metric = "phi"
        self.show_equal = False

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="compare-tables"):
            yield DataTable(id="compare-config", zebra_stripes=True, cursor_type="row")
            yield DataTable(id="compare-metrics", zebra_stripes=True, cursor_type="row")
        yield Static("", id="compare-info")
        yield MetricChart("", "", id="compare-chart")
        yield Footer()

    def on_mount(self) -> None:
        self.load()

    @work(thread=True, exclusive=True, group="compare")
    def load(self) -> None:
        store = self.bench.store
        try:
            runs = [store.get_run(run_id) for run_id in self.run_ids]
            present = [run for run in runs if run is not None]
            series = []
            for run in present:
                assert run.id is not None
                steps = store.steps(run.id)
                epochs = store.epochs(run.id)
                one: dict[str, tuple[list[float], list[float]]] = {}
                xs = [float(s.step) for s in steps]
                for key in STEP_SERIES:
                    one[key] = (xs, [getattr(s, key) for s in steps])
                ex = [float(e.epoch) for e in epochs]
                for key in EPOCH_SERIES:
                    values = [getattr(e, key) for e in epochs]
                    one[key] = (ex, [None if v is None else 100 * v for v in values])
                series.append(one)
        except Exception as exc:
            self.post_message(StoreFailed(f"cannot read the store: {exc}"))
            return
        self.post_message(CompareLoaded(compare(present), series))

    def on_store_failed(self, message: StoreFailed) -> None:
        self.notify(message.error, severity="error", markup=False)

    def on_compare_loaded(self, message: CompareLoaded) -> None:
        self.data, self.series = message.data, message.series
        self.fill_tables()
        self.redraw()

    def fill_tables(self) -> None:
        assert self.data is not None
        heads = [Text(f"{r['id']}: {r['name']}") for r in self.data["runs"]]
        config = self.query_one("#compare-config", DataTable)
        config.clear(columns=True)
        config.add_columns("option", *heads)
        equal = 0
        for row in self.data["config"]:
            if not row["differs"] and not self.show_equal:
                equal += 1
                continue
            style = "bold yellow" if row["differs"] else ""
            cells = [Text(number(v), style=style) for v in row["values"]]
            config.add_row(Text(row["option"]), *cells)
        metrics = self.query_one("#compare-metrics", DataTable)
        metrics.clear(columns=True)
        metrics.add_columns("metric", *heads)
        for row in self.data["metrics"]:
            percent = "SA" in row["metric"] or "AA" in row["metric"]
            cells = [pct(v, "-") if percent else number(v) for v in row["values"]]
            metrics.add_row(row["metric"], *cells)
        hidden = f"{equal} equal options hidden (e shows them)" if equal else "all options shown"
        self.query_one("#compare-info", Static).update(
            Text(f"{hidden}  ·  overlaid: {self.metric} (m for the next)")
        )

    def redraw(self) -> None:
        if self.data is None:
            return
        chart = self.query_one("#compare-chart", MetricChart)
        chart.title = self.metric
        lines = {
            f"{r['id']}: {r['name']}": one[self.metric]
            for r, one in zip(self.data["runs"], self.series, strict=True)
        }
        x_label = "epoch" if self.metric in EPOCH_SERIES else "step"
        chart.set_series(lines, x_label=x_label)

    def action_metric(self) -> None:
        self.metric = SERIES[(SERIES.index(self.metric) + 1) % len(SERIES)]
        if self.data is not None:
            self.fill_tables()
        self.redraw()

    def action_toggle_equal(self) -> None:
        self.show_equal = not self.show_equal
        if self.data is not None:
            self.fill_tables()
