"""Robust accuracy of one run: its evaluation jobs, the paper's tables, the masking report.

The screen only reads the store; evaluations run in worker processes (`caat_app.runs.worker
--eval`) that the workbench starts, so leaving the screen or the dashboard never stops one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import DataTable, Footer, Header, ProgressBar, Static

from caat_app.evaluation.plan import EvalSpec, describe_spec
from caat_app.evaluation.tables import EvalTable, report_lines, table_cells, tables_from_results
from caat_app.present import STATUS_STYLE, format_budget, norm_text, visible
from caat_app.runs.stored import option
from caat_storage import ACTIVE_STATUSES

from .calls import call_service, start_evaluation
from .eval_form import EvalForm
from .keys import Key
from .messages import StoreFailed, StoreReach, read_failed
from .modals import ConfirmScreen

if TYPE_CHECKING:
    from caat_app.runs.service import Workbench
    from caat_storage import EvalJob, Run

ACTIVE = ACTIVE_STATUSES


@dataclass
class EvalLoaded(Message):
    """A run, its newest evaluation job and its tables; `key` tells whether anything changed."""

    run: Run
    job: EvalJob | None
    tables: list[EvalTable]
    key: tuple[Any, ...]


def caption(table: EvalTable) -> str:
    """What a table measured, in the CLI's words."""
    return (
        f"accuracy in % on {table.samples} test images · checkpoint {table.checkpoint}"
        f"{f' ({table.weights})' if table.weights else ''} · "
        f"{norm_text(table.norm)} · {table.seconds:.1f} s"
    )


def _cell(text: str, column: int) -> Text:
    """Budgets to the left, accuracies to the right, as the CLI prints them."""
    return Text(text, justify="left" if column == 0 else "right")


class EvalScreen(Screen[None]):
    """One run's evaluations; polls the store and redraws only when something changed."""

    BINDINGS = [
        Key("escape", "app.pop_screen", "Back", tooltip="back to where you came from"),
        Key(
            "n",
            "new",
            "New evaluation",
            title="New evaluation",
            tooltip="Open the evaluation form: attacks, budgets, norm, images, checkpoint "
            "(ctrl+s starts)",
        ),
        Key(
            "c",
            "cancel_eval",
            "Cancel",
            title="Cancel evaluation",
            tooltip="Stop the running evaluation (asks first; what it measured stays stored)",
        ),
    ]
    HELP = (
        "Evaluations run in worker processes, like training: leaving the screen leaves them going."
    )

    def __init__(self, bench: Workbench, run_id: int, *, poll: float = 1.0) -> None:
        super().__init__()
        self.bench = bench
        self.poll_interval = poll
        self.run_id = run_id
        self.run: Run | None = None
        self.job: EvalJob | None = None
        self.tables: list[EvalTable] = []
        self.key: tuple[Any, ...] | None = None

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
        self.set_interval(self.poll_interval, self.poll)

    @work(thread=True, exclusive=True, group="evals")
    def poll(self) -> None:
        """Read the run, its newest job and its results off the UI thread."""
        store = self.bench.store
        try:
            run = store.get_run(self.run_id)
            if run is None:
                self.post_message(StoreFailed(f"run {self.run_id} is no longer in the store"))
                return
            jobs = store.eval_jobs(self.run_id)
            results = store.evals(self.run_id)
        except Exception as exc:  # a locked or vanished store must not kill the UI
            self.post_message(read_failed(exc))
            return
        self.post_message(StoreReach())
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
        text = Text()
        text.append(f"run {run.id} ", style="bold")
        text.append(visible(run.name))
        text.append("  ")
        text.append(run.status, style=STATUS_STYLE.get(run.status, ""))
        eps = option(run, "eps")
        if eps is not None:
            norm = norm_text(option(run, "norm"))
            text.append(f"  trained at ε={format_budget(float(eps))} {norm}")
        self.query_one("#eval-head", Static).update(text)

    def show_job(self, job: EvalJob | None, run: Run) -> None:
        box = self.query_one("#eval-job")
        box.display = job is not None
        if job is None:
            return
        text = Text()
        text.append(f"evaluation {job.id} ", style="bold")
        starting = job.status == "running" and job.pid is None  # claimed, worker not up yet
        status = f"starting on {job.host}" if starting else job.status
        text.append(status, style=STATUS_STYLE.get(job.status, ""))
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
        batchstats = option(run, "bn") == "batchstats"
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
                start_evaluation(self, self.bench, run_id, spec)

        self.app.push_screen(EvalForm(run), done)

    def action_cancel_eval(self) -> None:
        job = self.job
        if job is None or job.status not in ACTIVE:
            self.notify("no evaluation of this run is running", markup=False)
            return

        def done(yes: bool | None) -> None:
            if yes:
                call_service(
                    self,
                    lambda: self.bench.cancel_eval(job),
                    lambda _: self.notify(f"evaluation {job.id}: asked to stop", markup=False),
                )

        self.app.push_screen(
            ConfirmScreen(
                f"Cancel evaluation {job.id} of run {self.run_id}? "
                "What it measured so far stays stored."
            ),
            done,
        )
