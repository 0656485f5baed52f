"""Where one run's conflict lives: per layer over training, and per training image.

The per-layer heatmap reads what a run trained with `--layer-stats N` stored; the
per-sample part reads the run's `conflict.json`, which `caat conflict RUN` writes (`p`
starts it here, in its own process: torch never enters the dashboard). The screen polls
both every second and redraws only what changed.
"""

from __future__ import annotations

import os
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
from caat_app.runs.service import CONFLICT_LOG

from .calls import call_service, one_line
from .keys import Key
from .messages import StoreFailed

if TYPE_CHECKING:
    import subprocess

    from caat_app.runs.service import Workbench
    from caat_storage import Run

LAYER_HINT = "train with --layer-stats N to record per-layer conflict"
SAMPLE_HINT = "no per-sample conflict computed yet: p computes it (caat conflict RUN)"
IMAGE_COLUMNS = 18
"""A top-k image's width with its gap: 16 columns of half blocks and 2 of padding."""


@dataclass
class ConflictLoaded(Message):
    """New per-layer rows since the last poll, and the report when its file changed."""

    run: Run
    names: list[str]
    sizes: list[int]
    rows: list[dict[str, Any]]
    report: dict[str, Any] | None
    stamp: float | None  # the report file's mtime (None: no file)
    finished: int | None  # the computation's exit code, once it has ended


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
    """One run's conflict lab: the layer × time heatmap and the per-sample report."""

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
            "Per-sample",
            title="Compute per-sample conflict",
            tooltip="Run caat conflict on the run's training images, in its own process",
        ),
    ]
    HELP = "Per-sample conflict runs in its own process: leaving the screen leaves it going."

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
        self.report: dict[str, Any] | None = None
        self.stamp: float | None = None
        self.proc: subprocess.Popen[bytes] | None = None  # a computation started here
        self.outcome = ""  # how the last computation ended, when it failed

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("loading…", id="conflict-head")
        with VerticalScroll(id="conflict-body"):
            yield Static("", id="layers-title")
            yield Static("", id="layers-map")
            yield Static("", id="samples-title")
            yield Static("", id="samples-view")
        yield Footer()

    def on_mount(self) -> None:
        self.poll()
        self.set_interval(self.poll_interval, self.poll)

    @work(thread=True, exclusive=True, group="conflict")
    def poll(self) -> None:
        """Read the run, its new layer rows and (when its file changed) its report."""
        bench = self.bench
        after = int(self.rows[-1]["step"]) if self.rows else -1
        try:
            run = bench.run(self.run_id)
            names, sizes, rows = bench.layer_conflict(self.run_id, after_step=after)
            path = bench.conflict_file(run)
            stamp = os.stat(path).st_mtime if path.exists() else None
            report = bench.conflict_report(run) if stamp != self.stamp and stamp else None
        except Exception as exc:  # a locked store or a broken file must not kill the UI
            self.post_message(StoreFailed(one_line(exc)))
            return
        proc = self.proc
        finished = proc.poll() if proc is not None else None
        self.post_message(ConflictLoaded(run, names, sizes, rows, report, stamp, finished))

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
        if message.stamp != self.stamp:
            self.stamp = message.stamp
            self.report = message.report
            changed = True
        if message.finished is not None:
            self.proc = None
            if message.finished != 0:
                self.outcome = f"caat conflict failed (exit {message.finished}): see conflict.log"
            changed = True
        if changed:
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
        head = Text(f"run {run.id} ({run.name}) · {run.status} · conflict lab")
        self.query_one("#conflict-head", Static).update(head)
        self.draw_layers()
        self.draw_samples(run)

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

    def draw_samples(self, run: Run) -> None:
        title = self.query_one("#samples-title", Static)
        view = self.query_one("#samples-view", Static)
        title.update(Text("\nper-sample conflict (caat conflict)", style="bold"))
        if self.report is not None:
            try:
                view.update(samples_view(self.report, self.width()))
            except (KeyError, TypeError, ValueError) as exc:
                view.update(Text(f"conflict.json cannot be shown: {one_line(exc)}", style="red"))
            return
        if self.proc is not None:
            log = self.bench.conflict_file(run).with_name(CONFLICT_LOG)
            view.update(Text(f"computing per-sample conflict… (output in {log})", style="yellow"))
            return
        hint = Text(SAMPLE_HINT, style="dim")
        if self.outcome:
            hint = Text(self.outcome, style="red")
        view.update(hint)

    # ------------------------------------------------------------------ actions

    def action_metric(self) -> None:
        self.metric = "mu" if self.metric == "phi" else "phi"
        self.draw_layers()

    def action_compute(self) -> None:
        run = self.run
        if run is None:
            return
        if self.proc is not None:
            self.notify("per-sample conflict is already being computed", markup=False)
            return
        bench = self.bench

        def started(proc: subprocess.Popen[bytes]) -> None:
            self.proc, self.outcome = proc, ""
            self.notify(f"run {run.id}: computing per-sample conflict", markup=False)
            self.redraw()

        call_service(self, lambda: bench.start_conflict(run), started)
