"""Robust accuracy of one run: its evaluation jobs, the paper's tables, the masking report.

The screen only reads the store; evaluations run in worker processes (`caat_app.runs.worker
--eval`), started by the app, so leaving the screen or the dashboard never stops one.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.screen import ModalScreen, Screen
from textual.widget import Widget
from textual.widgets import (
    Button,
    Checkbox,
    DataTable,
    Footer,
    Header,
    Input,
    Label,
    ProgressBar,
    Select,
    SelectionList,
    Static,
)

from caat_app.attacks.registry import NORMS
from caat_app.errors import CaatError
from caat_app.evaluation.plan import (
    ATTACK_HELP,
    CHECKPOINTS,
    DEFAULT_ATTACKS,
    EVAL_ATTACKS,
    EvalSpec,
    describe_spec,
    eval_spec,
)
from caat_app.evaluation.tables import EvalTable, report_lines, table_cells, tables_from_results
from caat_app.present import NORM_TEXT, format_budget
from caat_storage import EvalJob, Run

from .messages import StoreFailed
from .modals import ConfirmScreen
from .runs import STATUS_STYLE

if TYPE_CHECKING:
    from .app import CaatApp

ACTIVE = ("queued", "running")


@dataclass
class EvalLoaded(Message):
    """A run, its newest evaluation job and its tables; `key` tells whether anything changed."""

    run: Run
    job: EvalJob | None
    tables: list[EvalTable]
    key: tuple[Any, ...]


def run_config(run: Run) -> dict[str, Any]:
    """The run's stored config; an unreadable one is an empty dict, not a crash."""
    try:
        config = json.loads(run.config)
    except (TypeError, ValueError):
        return {}
    return config if isinstance(config, dict) else {}


def caption(table: EvalTable) -> str:
    """What a table measured, in the CLI's words."""
    return (
        f"accuracy in % on {table.samples} test images · checkpoint {table.checkpoint}"
        f"{f' ({table.weights})' if table.weights else ''} · "
        f"{NORM_TEXT.get(table.norm, table.norm)} · {table.seconds:.1f} s"
    )


def _cell(text: str, column: int) -> Text:
    """Budgets to the left, accuracies to the right, as the CLI prints them."""
    return Text(text, justify="left" if column == 0 else "right")


class EvalScreen(Screen[None]):
    """One run's evaluations; polls the store and redraws only when something changed."""

    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("n", "new", "New evaluation"),
        Binding("c", "cancel_eval", "Cancel"),
    ]

    def __init__(self, run_id: int) -> None:
        super().__init__()
        self.run_id = run_id
        self.run: Run | None = None
        self.job: EvalJob | None = None
        self.tables: list[EvalTable] = []
        self.key: tuple[Any, ...] | None = None

    @property
    def caat(self) -> CaatApp:
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("loading…", id="eval-head")
        with Vertical(id="eval-job"):
            yield Static("", id="eval-job-text")
            yield ProgressBar(show_eta=False, id="eval-progress")
        yield VerticalScroll(id="eval-tables")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#eval-job").display = False
        self.poll()
        self.set_interval(self.caat.poll_interval, self.poll)

    @work(thread=True, exclusive=True, group="evals")
    def poll(self) -> None:
        """Read the run, its newest job and its results off the UI thread."""
        store = self.caat.store
        try:
            run = store.get_run(self.run_id)
            if run is None:
                self.post_message(StoreFailed(f"run {self.run_id} is no longer in the store"))
                return
            jobs = store.eval_jobs(self.run_id)
            results = store.evals(self.run_id)
        except Exception as exc:  # a locked or vanished store must not kill the UI
            self.post_message(StoreFailed(f"cannot read the store: {exc}"))
            return
        job = jobs[0] if jobs else None
        key = (
            (run.name, run.status, run.config),
            None
            if job is None
            else (job.id, job.status, job.done, job.total, job.current, job.error),
            (run.config, tuple((r.id, r.accuracy) for r in results)),
        )
        if key == self.key:
            return
        try:
            tables = tables_from_results(results)
        except Exception as exc:  # rows the tables cannot read: say so, keep the screen
            self.post_message(StoreFailed(f"cannot tabulate run {self.run_id}'s results: {exc}"))
            tables = []
        self.post_message(EvalLoaded(run, job, tables, key))

    def on_store_failed(self, message: StoreFailed) -> None:
        self.notify(message.error, severity="error", markup=False)

    async def on_eval_loaded(self, message: EvalLoaded) -> None:
        if message.key == self.key:
            return
        tables_changed = self.key is None or message.key[2] != self.key[2]
        self.key = message.key
        self.run, self.job = message.run, message.job
        self.show_head(message.run)
        self.show_job(message.job, message.run)
        if tables_changed:
            self.tables = message.tables
            await self.show_tables(message.tables, message.run)

    def show_head(self, run: Run) -> None:
        config = run_config(run)
        text = Text()
        text.append(f"run {run.id} ", style="bold")
        text.append(run.name)
        text.append("  ")
        text.append(run.status, style=STATUS_STYLE.get(run.status, ""))
        if "eps" in config:
            norm = NORM_TEXT.get(str(config.get("norm")), str(config.get("norm")))
            text.append(f"  trained at ε={format_budget(float(config['eps']))} {norm}")
        self.query_one("#eval-head", Static).update(text)

    def show_job(self, job: EvalJob | None, run: Run) -> None:
        box = self.query_one("#eval-job")
        box.display = job is not None
        if job is None:
            return
        text = Text()
        text.append(f"evaluation {job.id} ", style="bold")
        text.append(job.status, style=STATUS_STYLE.get(job.status, ""))
        text.append(f"  {job.done}/{job.total}")
        if job.current and job.status in ACTIVE:
            text.append("  now: ")
            text.append(job.current)
        text.append("\n" + describe_spec(job.spec), style="dim")
        if job.error:
            text.append("\n" + job.error.strip().splitlines()[-1], style="red")
            if run.run_dir:
                from caat_app.runs.launcher import eval_log

                text.append(f"\nlog: {eval_log(Path(run.run_dir), job.id or 0)}", style="dim")
        self.query_one("#eval-job-text", Static).update(text)
        bar = self.query_one("#eval-progress", ProgressBar)
        bar.update(total=max(job.total, 1), progress=min(job.done, max(job.total, 1)))
        bar.display = job.status in ACTIVE or job.done < job.total

    async def show_tables(self, tables: Sequence[EvalTable], run: Run) -> None:
        box = self.query_one("#eval-tables", VerticalScroll)
        scroll_y = box.scroll_y  # a new result must not send the reader back to the top
        await box.remove_children()
        if not tables:
            await box.mount(
                Static(Text("no evaluation of this run yet: press n to start one"), id="eval-empty")
            )
            return
        batchstats = run_config(run).get("bn") == "batchstats"
        widgets: list[Widget] = []
        for i, table in enumerate(tables):
            widgets.append(Static(Text(caption(table), style="bold"), classes="eval-caption"))
            header, rows = table_cells(table)
            if rows:
                grid: DataTable[Text] = DataTable(
                    id=f"eval-table-{i}",
                    classes="eval-table",
                    zebra_stripes=True,
                    cursor_type="row",
                    fixed_columns=2,  # ε and SA stay in view while the attacks scroll by
                )
                grid.add_columns(*[_cell(h, j) for j, h in enumerate(header)])
                for row in rows:
                    grid.add_row(*[_cell(cell, j) for j, cell in enumerate(row)])
                widgets.append(grid)
            for line, flagged in report_lines(table, batchstats=batchstats):
                widgets.append(
                    Static(Text(line), classes="eval-check flag" if flagged else "eval-check")
                )
        await box.mount_all(widgets)
        box.call_after_refresh(box.scroll_to, y=scroll_y, animate=False)

    # ------------------------------------------------------------------ actions

    def action_new(self) -> None:
        run = self.run
        if run is None or run.id is None:
            return
        run_id = run.id

        def done(spec: EvalSpec | None) -> None:
            if spec is not None:
                self.caat.start_evaluation(run_id, spec)

        self.app.push_screen(EvalForm(run), done)

    def action_cancel_eval(self) -> None:
        job = self.job
        if job is None or job.status not in ACTIVE:
            self.notify("no evaluation of this run is running", markup=False)
            return

        def done(yes: bool | None) -> None:
            if yes:
                self.caat.cancel_evaluation(job)

        self.app.push_screen(
            ConfirmScreen(
                f"Cancel evaluation {job.id} of run {self.run_id}? "
                "What it measured so far stays stored."
            ),
            done,
        )


class EvalForm(ModalScreen[EvalSpec | None]):
    """An evaluation request, checked by `eval_spec` as the person types: what it accepts
    is exactly what the worker runs."""

    BINDINGS = [
        Binding("ctrl+s", "start", "Start"),
        Binding("escape", "dismiss(None)", "Cancel"),
    ]

    def __init__(self, run: Run) -> None:
        super().__init__(classes="modal")
        self.run = run
        config = run_config(run)
        try:
            self.budget = format_budget(float(config["eps"]))
        except (KeyError, TypeError, ValueError):
            self.budget = ""
        norm = config.get("norm")
        self.norm = norm if norm in NORMS else NORMS[0]
        self.spec: EvalSpec | None = None

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog eval-form"):
            title = Text(f"Evaluate run {self.run.id} ", style="bold")
            title.append(self.run.name, style="")
            yield Label(title, id="eval-title")
            yield SelectionList[str](
                *[
                    (
                        Text.assemble((name, "bold"), f"  {ATTACK_HELP.get(name, '')}"),
                        name,
                        name in DEFAULT_ATTACKS,
                    )
                    for name in EVAL_ATTACKS
                ],
                id="e-attacks",
                compact=True,
            )
            with Horizontal(classes="eval-field"):
                yield Label("budgets ε", classes="eval-label")
                yield Input(self.budget, placeholder="e.g. 8/255,16/255", id="e-eps", compact=True)
            with Horizontal(classes="eval-field"):
                yield Label("norm", classes="eval-label")
                yield Select(
                    [(n, n) for n in NORMS],
                    value=self.norm,
                    allow_blank=False,
                    id="e-norm",
                    compact=True,
                )
            with Horizontal(classes="eval-field"):
                yield Label("images (0: all)", classes="eval-label")
                yield Input("1000", id="e-n", compact=True)
            with Horizontal(classes="eval-field"):
                yield Label("checkpoint", classes="eval-label")
                yield Select(
                    [(c, c) for c in CHECKPOINTS],
                    value=CHECKPOINTS[0],
                    allow_blank=False,
                    id="e-checkpoint",
                    compact=True,
                )
            with Horizontal(classes="eval-field"):
                yield Label("", classes="eval-label")
                yield Checkbox("measure again (force)", id="e-force", compact=True)
            yield Static("", id="e-error")
            with Horizontal(classes="buttons"):
                yield Button("Start", variant="primary", id="e-start", compact=True)
                yield Button("Cancel", id="e-cancel", compact=True)

    def on_mount(self) -> None:
        self.validate()
        self.query_one("#e-attacks").focus()

    def validate(self) -> EvalSpec | None:
        """The checked request, or None with `eval_spec`'s one-line reason shown."""
        n_text = self.query_one("#e-n", Input).value.strip()
        n: Any = int(n_text) if n_text.isdecimal() else n_text  # else eval_spec says why
        try:
            spec: EvalSpec | None = eval_spec(
                attacks=list(self.query_one("#e-attacks", SelectionList).selected),
                budgets=self.query_one("#e-eps", Input).value,
                norm=str(self.query_one("#e-norm", Select).value),
                n=n,
                checkpoint=str(self.query_one("#e-checkpoint", Select).value),
                force=self.query_one("#e-force", Checkbox).value,
            )
            message = ""
        except CaatError as exc:
            spec, message = None, str(exc)
        note = self.query_one("#e-error", Static)
        if spec is None:
            note.update(Text(message))
        else:
            from caat_app.evaluation.plan import plan

            note.update(Text(f"{len(plan(spec))} measurements (clean and probes included)"))
        note.set_class(spec is None, "error")
        self.query_one("#e-eps", Input).set_class(message.startswith("--eps"), "invalid")
        self.query_one("#e-n", Input).set_class(message.startswith("--n"), "invalid")
        self.query_one("#e-start", Button).disabled = spec is None
        self.spec = spec
        return spec

    @on(Input.Changed)
    @on(Select.Changed)
    @on(Checkbox.Changed)
    @on(SelectionList.SelectedChanged)
    def changed(self) -> None:
        self.validate()

    @on(Input.Submitted)
    def submitted(self) -> None:
        self.action_start()

    def action_start(self) -> None:
        spec = self.validate()
        if spec is None:
            self.notify("fix the request first", severity="warning")
            return
        self.dismiss(spec)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "e-start":
            self.action_start()
        else:
            self.dismiss(None)
