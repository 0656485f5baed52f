"""Where one run's conflict lives: per layer over training, and per training image; and
the paper's synthetic experiment (Section 3) beside it.

The per-layer heatmap reads what a run trained with `--layer-stats N` stored; the
per-sample part reads the run's newest report that `caat conflict RUN` stored (`p`
starts it here), and the last part the newest `caat synth` report (`s` starts it).
Both computations run in their own processes: torch never enters the dashboard. The
screen polls the store every second, fetches a report only when its stamp changed, and
redraws only what changed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rich.console import Group, RenderableType
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer, Header, Static

from caat_app.analysis.layers import (
    METRICS,
    LayerMap,
    binned,
    cell_colour,
    layer_map,
    short_names,
    value_range,
)
from caat_app.present import visible
from caat_app.runs.service import CONFLICT_LOG

from .calls import call_service, one_line
from .keys import Key
from .messages import StoreFailed, StoreReach, read_failed

if TYPE_CHECKING:
    import subprocess
    from collections.abc import Callable

    from caat_app.runs.service import Workbench
    from caat_storage import Run
    from caat_storage.lab import Stamp

LAYER_HINT = "train with --layer-stats N to record per-layer conflict"
SAMPLE_HINT = "no per-sample conflict computed yet: p computes it (caat conflict RUN)"
SYNTH_HINT = "no synthetic experiment stored yet: s runs it (caat synth, about 30 s)"
KINDS = ("conflict", "synth")
"""The lab reports the screen shows: the run's per-sample one, the newest synthetic one."""
IMAGE_COLUMNS = 18
"""A top-k image's width with its gap: 16 columns of half blocks and 2 of padding."""


@dataclass
class ConflictLoaded(Message):
    """New per-layer rows since the last poll, and each report whose stamp changed."""

    run: Run
    names: list[str]
    sizes: list[int]
    rows: list[dict[str, Any]]
    reports: dict[str, Report]  # by lab kind: only the kinds whose stamp changed
    finished: dict[str, int]  # by lab kind: the exit code of a computation that ended


@dataclass
class Report:
    """A lab report as the screen holds it: its stamp and body (None: none stored)."""

    stamp: Stamp | None = None
    body: dict[str, Any] | None = None


@dataclass
class Computation:
    """A computation started from this screen, and how the last one failed."""

    proc: subprocess.Popen[bytes] | None = None
    failure: str = ""


def heatmap_text(lmap: LayerMap, width: int) -> Text:
    """One line per layer, one coloured cell per stretch of training, and its legend."""
    labels = short_names(lmap.names)
    label_width = max(len(label) for label in labels)
    shown = binned(lmap, max(8, width - label_width - 1))
    lo, hi = value_range(lmap)
    text = Text()
    for label, row in zip(labels, shown.values, strict=True):
        text.append(label.ljust(label_width) + " ")
        for value in row:
            text.append("█", style="rgb({},{},{})".format(*cell_colour(lmap.metric, value, lo, hi)))
        text.append("\n")
    span = f"steps {shown.steps[0]}…{lmap.steps[-1]} (epochs {shown.epochs[0]}…{lmap.epochs[-1]})"
    if lmap.metric == "phi":
        scale = "red φ = −1 (opposed), white 0, blue +1 (aligned)"
    else:
        scale = f"log scale, dark {lo:.3g} to yellow {hi:.3g}"
    text.append(f"{span}; {scale}; grey: not stored", style="dim")
    return text


def samples_view(report: Mapping[str, Any], width: int) -> RenderableType:
    """The report as the CLI prints it: distribution, histogram, top-k images, findings."""
    from caat_app.lab.conflict_report import histogram_text, quantile_table, top_grid

    weights = f" ({report['weights']})" if report.get("weights") else ""
    head = Text(
        f"{report.get('n', '?')} training images, "
        f"{report.get('checkpoint', '?')} checkpoint{weights}"
    )
    parts: list[RenderableType] = [head, quantile_table(report), Text("")]
    parts += [Text("μ_i histogram (log scale):"), histogram_text(report["histogram"], width=30)]
    top = report.get("top") or []
    if top:
        parts += [Text(""), top_grid(top, per_row=max(1, (width - 2) // IMAGE_COLUMNS))]
    findings: Sequence[str] = report.get("findings") or []
    parts += [Text(""), *(Text(sentence) for sentence in findings)]
    return Group(*parts)


class ConflictScreen(Screen[None]):
    """One run's conflict lab: the layer × time heatmap, the per-sample report, and the
    synthetic experiment."""

    BINDINGS = [
        Key("escape", "app.pop_screen", "Back", tooltip="back to where you came from"),
        Key(
            "m",
            "metric",
            "φ/μ",
            title="Heatmap metric",
            tooltip="Show φ or μ in the per-layer heatmap",
        ),
        Key(
            "p",
            "compute",
            "Samples",
            title="Compute per-sample conflict",
            tooltip="Run caat conflict on the run's training images, in its own process",
        ),
        Key(
            "b",
            "budget",
            "Budget",
            title="Budget view of this run's group",
            tooltip="μ against ε for the runs that differ from this one only in ε and method",
        ),
        Key(
            "s",
            "synth",
            "Synth",
            title="Run the synthetic experiment",
            tooltip="Run caat synth (Section 3: the paper's grid and recipe) in its own process",
        ),
    ]
    HELP = "Computations run in their own processes: leaving the screen leaves them going."

    def __init__(self, bench: Workbench, run_id: int, *, poll: float = 1.0) -> None:
        super().__init__()
        self.bench = bench
        self.run_id = run_id
        self.poll_interval = poll
        self.metric = "phi"
        self.run: Run | None = None
        self.names: list[str] = []
        self.sizes: list[int] = []
        self.rows: list[dict[str, Any]] = []
        self.reports = {kind: Report() for kind in KINDS}
        self.computations = {kind: Computation() for kind in KINDS}

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("loading…", id="conflict-head")
        with VerticalScroll(id="conflict-body"):
            yield Static("", id="layers-title")
            yield Static("", id="layers-map")
            yield Static("", id="samples-title")
            yield Static("", id="samples-view")
            yield Static("", id="synth-title")
            yield Static("", id="synth-view")
        yield Footer()

    def on_mount(self) -> None:
        self.poll()
        self.set_interval(self.poll_interval, self.poll)

    @work(thread=True, exclusive=True, group="conflict")
    def poll(self) -> None:
        """Read the run, its new layer rows, and each lab report whose stamp changed."""
        bench = self.bench
        after = int(self.rows[-1]["step"]) if self.rows else -1
        reports: dict[str, Report] = {}
        try:
            run = bench.run(self.run_id)
            names, sizes, rows = bench.layer_conflict(self.run_id, after_step=after)
            for kind in KINDS:
                stamp = bench.lab_stamp(kind, self.run_id if kind == "conflict" else None)
                if stamp != self.reports[kind].stamp:
                    body = bench.lab_body(stamp[0]) if stamp is not None else None
                    reports[kind] = Report(stamp, body)
        except Exception as exc:  # a locked store or a broken report must not kill the UI
            self.post_message(read_failed(exc, "cannot read the conflict lab"))
            return
        self.post_message(StoreReach())
        finished = {}
        for kind, computation in self.computations.items():
            code = computation.proc.poll() if computation.proc is not None else None
            if code is not None:
                finished[kind] = code
        self.post_message(ConflictLoaded(run, names, sizes, rows, reports, finished))

    def on_conflict_loaded(self, message: ConflictLoaded) -> None:
        changed = self.run is None or (self.run.name, self.run.status) != (
            message.run.name,
            message.run.status,
        )
        self.run = message.run
        if message.names != self.names or message.rows:
            self.names, self.sizes = message.names, message.sizes
            self.rows += message.rows
            changed = True
        self.reports.update(message.reports)
        for kind, code in message.finished.items():
            failure = f"caat {kind} failed (exit {code}): see {self.log_path(kind)}" if code else ""
            self.computations[kind] = Computation(None, failure)
        if changed or message.reports or message.finished:
            self.redraw()

    def on_resize(self) -> None:
        """The heatmap's cells and the images per row follow the width."""
        self.redraw()

    def on_store_failed(self, message: StoreFailed) -> None:
        self.query_one("#conflict-head", Static).update(Text(message.error, style="red"))

    # ------------------------------------------------------------------ drawing

    def redraw(self) -> None:
        run = self.run
        if run is None:
            return
        head = Text(f"run {run.id} ({visible(run.name)}) · {run.status} · conflict lab")
        self.query_one("#conflict-head", Static).update(head)
        self.draw_layers()
        self.draw_report("conflict", "samples", "\nper-sample conflict (caat conflict)")
        self.draw_report("synth", "synth", "\nsynthetic experiment, Section 3 (caat synth)")

    def width(self) -> int:
        return max(40, self.size.width - 4)

    def draw_layers(self) -> None:
        title = self.query_one("#layers-title", Static)
        body = self.query_one("#layers-map", Static)
        if not self.rows:
            title.update(Text("per-layer conflict", style="bold"))
            body.update(Text(LAYER_HINT, style="dim"))
            return
        lmap = layer_map(self.names, self.sizes, self.rows, self.metric)
        other = "μ" if self.metric == "phi" else "φ"
        title.update(
            Text(
                f"per-layer {METRICS[self.metric]} · {len(lmap.names)} layers, "
                f"{len(lmap.steps)} recorded steps (m: {other})",
                style="bold",
            )
        )
        body.update(heatmap_text(lmap, self.width()))

    def draw_report(self, kind: str, part: str, heading: str) -> None:
        """A stored report drawn; else what is being computed, how it failed, or a hint."""
        from caat_app.lab.synth_view import synth_view

        self.query_one(f"#{part}-title", Static).update(Text(heading, style="bold"))
        view = self.query_one(f"#{part}-view", Static)
        body, computation = self.reports[kind].body, self.computations[kind]
        if computation.proc is not None:
            message = f"computing… (caat {kind}; output in {self.log_path(kind)})"
            view.update(Text(message, style="yellow"))
        elif body is not None:
            draw = samples_view if kind == "conflict" else synth_view
            try:
                view.update(draw(body, self.width()))
            except (KeyError, TypeError, ValueError) as exc:
                view.update(Text(f"the stored report cannot be shown: {one_line(exc)}", "red"))
        elif computation.failure:
            view.update(Text(computation.failure, style="red"))
        else:
            view.update(Text(SAMPLE_HINT if kind == "conflict" else SYNTH_HINT, style="dim"))

    def log_path(self, kind: str) -> str:
        if kind == "synth":
            return str(self.bench.synth_log())
        return str(self.bench.conflict_log(self.run)) if self.run is not None else CONFLICT_LOG

    # ------------------------------------------------------------------ actions

    def action_metric(self) -> None:
        self.metric = "mu" if self.metric == "phi" else "phi"
        self.draw_layers()

    def action_compute(self) -> None:
        run = self.run
        if run is not None:
            bench = self.bench
            self.start("conflict", lambda: bench.start_conflict(run), f"run {run.id}: ")

    def action_budget(self) -> None:
        from .budget import BudgetScreen

        bench, run_id = self.bench, self.run_id

        def show(mates: list[int]) -> None:
            self.app.push_screen(BudgetScreen(bench, mates))

        call_service(self, lambda: bench.budget_mates(run_id), show)

    def action_synth(self) -> None:
        self.start("synth", self.bench.start_synth, "")

    def start(self, kind: str, begin: Callable[[], subprocess.Popen[bytes]], prefix: str) -> None:
        """Start a computation in its own process, unless one of its kind is running."""
        if self.computations[kind].proc is not None:
            self.notify(f"caat {kind} is already running", markup=False)
            return

        def started(proc: subprocess.Popen[bytes]) -> None:
            self.computations[kind] = Computation(proc)
            self.notify(f"{prefix}caat {kind} started in its own process", markup=False)
            self.redraw()

        call_service(self, begin, started)
