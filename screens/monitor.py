"""One run, live: losses, φ against γ, μ, accuracies per epoch, progress and the worker's log."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.containers import Grid
from textual.screen import Screen
from textual.widgets import Footer, Header, Log, Static

from caat_app.present import visible
from caat_app.runs.stored import option
from caat_storage import ACTIVE_STATUSES, RunStatus

from .calls import cancel_run
from .charts import MetricChart
from .keys import Key
from .messages import RunLoaded, StoreFailed, StoreReach, read_failed
from .modals import ConfirmScreen
from .series import eta_seconds

if TYPE_CHECKING:
    from caat_app.runs.service import Workbench
    from caat_storage import EpochMetric, Run

AXES = ("step", "epoch", "time")
STEP_KEYS = ("step", "epoch", "t", "loss_c", "loss_a", "phi", "mu", "lr")
# Legend names; val and test AA are the per-epoch PGD check, not an evaluation's AA.
EPOCH_SERIES = {
    "train SA": "train_clean",
    "train AA": "train_adv",
    "val SA": "val_clean",
    "val PGD": "val_adv",
    "test SA": "test_clean",
    "test PGD": "test_adv",
}
LOG_BYTES = 8192


def read_tail(path: Path, lines: int = 40) -> list[str]:
    """The last lines of a log without reading all of it."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(max(size - LOG_BYTES, 0))
            data = fh.read().decode("utf-8", errors="replace")
    except OSError:
        return []
    return data.splitlines()[-lines:]


def epoch_positions(epochs: list[int]) -> list[float]:
    """Fractional epochs for step rows: epoch e's k-th of n steps sits at e − 1 + k/n."""
    counts = Counter(epochs)
    full = max(counts.values(), default=1)
    seen: Counter[int] = Counter()
    out = []
    for e in epochs:
        n = counts[e] if e != epochs[-1] else max(counts[e], full)
        out.append(e - 1 + seen[e] / n)
        seen[e] += 1
    return out


def _fmt_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class MonitorScreen(Screen[None]):
    """Polls the store for rows newer than the ones it holds; never loads the series twice."""

    VERTICAL_BREAKPOINTS = [(0, "-short"), (34, "-tall")]  # a short terminal: charts first

    BINDINGS = [
        Key("escape", "app.pop_screen", "Back", tooltip="back to the runs"),
        Key("x", "axis", "X axis", title="X axis", tooltip="Step, epoch or time along x"),
        Key("m", "smooth", "Smooth", title="Smooth", tooltip="Smoothing on or off"),
        Key("g", "log_mu", "log μ", title="log μ", tooltip="μ on a log10 scale"),
        Key("c", "cancel_run", "Cancel", title="Cancel run", tooltip="Stop this run (asks first)"),
        Key(
            "e",
            "evaluate",
            "Eval",
            show=False,
            title="Evaluate run",
            tooltip="Robust accuracy under the attack zoo, with a masking report",
        ),
    ]

    def __init__(self, bench: Workbench, run_id: int, *, poll: float = 1.0) -> None:
        super().__init__()
        self.bench = bench
        self.poll_interval = poll
        self.run_id = run_id
        self.run: Run | None = None
        self.columns: dict[str, list[float]] = {k: [] for k in STEP_KEYS}
        self.epoch_rows: list[EpochMetric] = []
        self.axis = "step"
        self.smooth = False
        self.log_mu = False
        self.gamma: float | None = None
        self.log_lines: list[str] = []

    @property
    def last_step(self) -> int:
        steps = self.columns["step"]
        return int(steps[-1]) if steps else -1

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("loading…", id="run-head")
        with Grid(id="charts"):
            yield MetricChart("loss", "loss", id="chart-loss")
            yield MetricChart("φ = cos(g_c, g_a)", "φ", id="chart-phi")
            yield MetricChart("conflict μ", "μ", id="chart-mu")
            yield MetricChart("accuracy per epoch", "%", id="chart-acc")
        yield Log(id="log", max_lines=200)
        yield Footer()

    def on_mount(self) -> None:
        self.poll()
        self.set_interval(self.poll_interval, self.poll)

    @work(thread=True, exclusive=True, group="monitor")
    def poll(self) -> None:
        store = self.bench.store
        try:
            run = store.get_run(self.run_id)
            if run is None:
                self.post_message(StoreFailed(f"run {self.run_id} is no longer in the store"))
                return
            steps = store.steps(self.run_id, after_step=self.last_step)
            epochs = store.epochs(self.run_id)
        except Exception as exc:  # the UI survives a store hiccup
            self.post_message(read_failed(exc))
            return
        self.post_message(StoreReach())
        tail = read_tail(Path(run.run_dir) / "worker.log") if run.run_dir else []
        self.post_message(RunLoaded(run, steps, epochs, tail))

    def on_store_failed(self, message: StoreFailed) -> None:
        self.notify(message.error, severity="error", markup=False)

    def on_run_loaded(self, message: RunLoaded) -> None:
        fresh = self.run is None
        self.run = message.run
        if fresh:
            caat = option(message.run, "method") == "caat"
            self.gamma = option(message.run, "gamma") if caat else None
        new_steps = [s for s in message.steps if s.step > self.last_step]
        for row in new_steps:
            for key in STEP_KEYS:
                value = getattr(row, key)
                self.columns[key].append(float("nan") if value is None else float(value))
        epochs_changed = len(message.epochs) != len(self.epoch_rows)
        self.epoch_rows = message.epochs
        self.update_head()
        if message.log_tail != self.log_lines:
            self.log_lines = message.log_tail
            log = self.query_one(Log)
            log.clear()
            log.write_lines(message.log_tail)
        if fresh or new_steps or epochs_changed:
            self.redraw()

    def update_head(self) -> None:
        run = self.run
        if run is None:
            return
        steps = self.columns["step"]
        elapsed = self.columns["t"][-1] if steps else None
        per_epoch = Counter(int(e) for e in self.columns["epoch"]).get(1)
        total = per_epoch * run.epochs_total if per_epoch and run.epochs_done else None
        live = run.status == RunStatus.RUNNING
        eta = eta_seconds(len(steps), total, elapsed) if live and total and elapsed else None
        ips = self.epoch_rows[-1].images_per_sec if self.epoch_rows else None
        lr = self.columns["lr"][-1] if steps else None
        text = Text()
        text.append(f"run {run.id} ", style="bold")
        text.append(visible(run.name))
        text.append("  ")
        text.append(run.status, style="bold")
        text.append(
            f"  epoch {run.epochs_done}/{run.epochs_total}  step {run.steps_done}"
            f"  lr {'-' if lr is None else f'{lr:.3g}'}"
            f"  {'-' if ips is None else f'{ips:.0f}'} img/s"
            f"  elapsed {_fmt_seconds(elapsed)}  ETA {_fmt_seconds(eta)}"
            f"  x: {self.axis}{'  smoothed' if self.smooth else ''}"
        )
        if run.error:
            text.append("\n" + run.error.strip().splitlines()[-1], style="red")
        self.query_one("#run-head", Static).update(text)

    def x_values(self) -> list[float]:
        if self.axis == "epoch":
            return epoch_positions([int(e) for e in self.columns["epoch"]])
        if self.axis == "time":
            return self.columns["t"]
        return self.columns["step"]

    def redraw(self) -> None:
        xs = self.x_values()
        cols = self.columns
        smooth = 0.1 if self.smooth else None
        label = {"step": "step", "epoch": "epoch", "time": "seconds"}[self.axis]
        self.chart("loss").set_series(
            {"clean": (xs, cols["loss_c"]), "adversarial": (xs, cols["loss_a"])},
            x_label=label,
            smooth=smooth,
        )
        self.chart("phi").set_series(
            {"φ": (xs, cols["phi"])},
            hlines={"γ": self.gamma} if self.gamma is not None else None,
            x_label=label,
            smooth=smooth,
        )
        self.chart("mu").set_series(
            {"μ": (xs, cols["mu"])}, x_label=label, smooth=smooth, log_y=self.log_mu
        )
        if self.axis == "time":
            ex = [e.elapsed or 0.0 for e in self.epoch_rows]
        else:
            ex = [float(e.epoch) for e in self.epoch_rows]
        acc: dict[str, tuple[list[float], list[float]]] = {}
        for name, key in EPOCH_SERIES.items():
            values = [getattr(e, key) for e in self.epoch_rows]
            if any(v is not None for v in values):
                acc[name] = (ex, [float("nan") if v is None else 100 * v for v in values])
        self.chart("acc").set_series(acc, x_label="seconds" if self.axis == "time" else "epoch")

    def chart(self, name: str) -> MetricChart:
        return self.query_one(f"#chart-{name}", MetricChart)

    def action_axis(self) -> None:
        self.axis = AXES[(AXES.index(self.axis) + 1) % len(AXES)]
        self.update_head()
        self.redraw()

    def action_smooth(self) -> None:
        self.smooth = not self.smooth
        self.update_head()
        self.redraw()

    def action_log_mu(self) -> None:
        self.log_mu = not self.log_mu
        self.redraw()

    def action_evaluate(self) -> None:
        from .evals import EvalScreen

        self.app.push_screen(EvalScreen(self.bench, self.run_id, poll=self.poll_interval))

    def action_cancel_run(self) -> None:
        run = self.run
        if run is None or run.status not in ACTIVE_STATUSES:
            self.notify("this run is not running", markup=False)
            return

        def done(yes: bool | None) -> None:
            if yes:
                cancel_run(self, self.bench, run)

        self.app.push_screen(ConfirmScreen(f"Cancel run {run.id} ({visible(run.name)})?"), done)
