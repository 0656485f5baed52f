"""The home screen: every run in the store, live, one page at a time.

Opened from a URL, it shows its first page before the store is open (`caat_storage.firstpage`), then
reads the store through the workbench the app hands it (`attach`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.message import Message
from textual.widgets import DataTable, Footer, Header, Input, Static

from .calls import call_service
from .keys import Key
from .messages import RunsLoaded, StoreFailed, StoreReach, read_failed
from .run_actions import RunActions
from .runs_table import COLUMNS, PAGE_SIZE, run_cells

if TYPE_CHECKING:
    from caat_app.runs.service import Workbench
    from caat_storage import Run

    from .launch import Launched


class RunsScreen(RunActions):
    """Runs newest first; the table refreshes every second without losing its place."""

    # The footer keeps what fits at 80 columns with `q` and `?`; `?` lists every key.
    BINDINGS = [
        Key("n", "new", "New", title="New run", tooltip="Open the launch form (ctrl+s queues)"),
        Key(
            "enter",
            "open",
            "Monitor",
            show=False,
            title="Monitor run",
            tooltip="Live charts of the selected run",
        ),
        Key(
            "e",
            "evaluate",
            "Eval",
            title="Evaluate run",
            tooltip="Robust accuracy under the attack zoo, masking report",
        ),
        Key("slash", "filter", "Filter", show=False, tooltip="name, method, data set, status, tag"),
        Key("s", "sort", "Sort", show=False, tooltip="by the next column (or click a header)"),
        Key("S", "reverse", "Reverse", show=False, tooltip="the sort order"),
        Key(
            "k",
            "conflict",
            "Conflict",
            show=False,
            title="Conflict lab",
            tooltip="Per-layer heatmap and per-sample conflict of the selected run",
        ),
        Key(
            "c",
            "cancel_run",
            "Cancel",
            title="Cancel run",
            tooltip="Stop the selected run (asks first)",
        ),
        Key(
            "d",
            "delete",
            "Delete",
            show=False,
            title="Delete run",
            tooltip="Delete the selected run, its rows and its folder (asks first)",
        ),
        Key(
            "r",
            "rename",
            "Rename",
            show=False,
            title="Rename run",
            tooltip="Give the selected run a new name",
        ),
        Key(
            "t", "tags", "Tags", show=False, title="Tag run", tooltip="Set the selected run's tags"
        ),
        Key(
            "o",
            "note",
            "Note",
            show=False,
            title="Note on run",
            tooltip="Write a note on the selected run",
        ),
        Key(
            "R",
            "resume",
            "Resume",
            show=False,
            title="Resume run",
            tooltip="Continue the selected failed or cancelled run from its last checkpoint",
        ),
        Key(
            "l",
            "relaunch",
            "Relaunch",
            show=False,
            title="Re-launch run",
            tooltip="Open the selected run's config in the form",
        ),
        Key(
            "f",
            "folder",
            "Folder",
            show=False,
            title="Run folder",
            tooltip="Show the selected run's folder (and copy it)",
        ),
        Key("left_square_bracket", "page(-1)", "Prev page", show=False, tooltip="100 runs a page"),
        Key("right_square_bracket", "page(1)", "Next page", show=False),
        Key("escape", "clear_filter", "Clear filter", show=False),
        Key("space", "mark", "Mark", show=False, tooltip="the selected run, for C (compare)"),
        Key(
            "C",
            "compare",
            "Compare",
            title="Compare marked runs",
            tooltip="Marked runs side by side (space marks)",
        ),
        Key(
            "B",
            "budget",
            "Budget",
            show=False,
            title="Budget view",
            tooltip="μ against ε for the marked runs (or those the filter shows)",
        ),
        Key(
            "F",
            "front",
            "Front",
            title="SA-AA front",
            tooltip="The front of the finished runs the filter shows",
        ),
    ]

    class FirstPage(Message):
        """A first page is on screen, or none can come before the store: open it now."""

    def __init__(
        self, bench: Workbench | None = None, *, poll: float = 1.0, url: str | None = None
    ) -> None:
        super().__init__()
        self.bench = bench  # None until the app has opened the store at `url`
        self.url = url
        self.poll_interval = poll
        self.search = ""
        self.sort_index = 0  # into COLUMNS; the default order is newest first
        self.sort_key = "id"
        self.descending = True
        self.page = 0
        self.total = 0
        self.runs: dict[int, Run] = {}
        self.marked: set[int] = set()  # runs picked with space, for compare

    def compose(self) -> ComposeResult:
        yield Header()
        yield Input(
            placeholder="/ filter: name, method, data set, status, tag", id="filter", compact=True
        )
        yield DataTable(id="runs", cursor_type="row", zebra_stripes=True)
        yield Static("", id="runs-info")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        for label, _ in COLUMNS:
            table.add_column(label, key=label)
        table.focus()
        if self.bench is None and self.url is not None:
            self.first_page(self.url)
        else:
            self.reload()
        self.set_interval(self.poll_interval, self.reload)

    def attach(self, bench: Workbench) -> None:
        """The store is open: read it from now on (the first poll replaces a quick page)."""
        self.bench = bench
        self.reload()

    # ------------------------------------------------------------------ loading

    def first_page(self, url: str) -> None:
        """The newest runs straight from a SQLite file, while the store still opens.

        Read here, on the UI thread (milliseconds, and no lock to wait for: the store
        writes in WAL mode), so the very first frame has them.
        """
        from caat_storage.firstpage import first_page

        page = first_page(url, PAGE_SIZE)
        if page is None:
            self.post_message(self.FirstPage())
        else:
            self.on_runs_loaded(RunsLoaded(*page, quick=True))

    @work(thread=True, exclusive=True, group="runs")
    def reload(self) -> None:
        """Read one page of runs off the UI thread; the result arrives as a message."""
        if self.bench is None:
            return
        store = self.bench.store
        try:
            runs = store.list_runs(
                limit=PAGE_SIZE,
                offset=self.page * PAGE_SIZE,
                search=self.search or None,
                sort=self.sort_key,
                descending=self.descending,
            )
            total = self.page * PAGE_SIZE + len(runs)
            if len(runs) == PAGE_SIZE or (self.page and not runs):
                # Only a full (or an empty later) page needs the count: a filtered count
                # is a second pass over the table (a fifth of a second at 100 000 runs).
                total = store.count_runs(search=self.search or None)
        except Exception as exc:  # a locked or vanished store must not kill the UI
            self.post_message(read_failed(exc))
            return
        self.post_message(StoreReach())
        self.post_message(RunsLoaded(runs, total))

    def on_runs_loaded(self, message: RunsLoaded) -> None:
        if message.quick:
            if self.bench is not None:
                return  # the store's own page is on its way: never show an older one
            self.call_after_refresh(self.post_message, self.FirstPage())
        table = self.query_one(DataTable)
        selected = self.selected_id()
        scroll_x, scroll_y = table.scroll_x, table.scroll_y
        now = datetime.now(UTC)
        self.runs = {run.id: run for run in message.runs if run.id is not None}
        self.total = message.total
        keys = [str(run_id) for run_id in self.runs]
        current = [row.value for row in table.rows]
        if keys == current:  # same rows in the same order: update the cells in place
            for run in message.runs:
                cells = run_cells(run, now, run.id in self.marked)
                for (label, _), cell in zip(COLUMNS, cells, strict=True):
                    table.update_cell(str(run.id), label, cell)
        else:
            table.clear()
            for run in message.runs:
                table.add_row(*run_cells(run, now, run.id in self.marked), key=str(run.id))
            if selected is not None and str(selected) in keys:
                table.move_cursor(row=keys.index(str(selected)), scroll=False)
            table.scroll_to(scroll_x, scroll_y, animate=False)
        self.update_info()

    def on_store_failed(self, message: StoreFailed) -> None:
        self.notify(message.error, severity="error", markup=False)

    def update_info(self) -> None:
        first = self.page * PAGE_SIZE
        shown = len(self.runs)
        order = "↓" if self.descending else "↑"
        label = "newest" if self.sort_key == "id" else COLUMNS[self.sort_index][0]
        text = (
            f"{first + 1 if shown else 0}–{first + shown} of {self.total} runs"
            f"  ·  sorted by {label} {order}"
        )
        if self.search:
            text += f"  ·  filter: {self.search}"
        if self.marked:
            text += f"  ·  {len(self.marked)} marked (C compares)"
        self.query_one("#runs-info", Static).update(Text(text))

    def selected_id(self) -> int | None:
        table = self.query_one(DataTable)
        if not table.row_count:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return int(key) if key is not None else None

    def selected_run(self) -> Run | None:
        run_id = self.selected_id()
        return self.runs.get(run_id) if run_id is not None else None

    # ------------------------------------------------------------------ filter, sort, page

    @on(Input.Changed, "#filter")
    def filter_changed(self, event: Input.Changed) -> None:
        self.search = event.value.strip()
        self.page = 0
        self.reload()

    @on(Input.Submitted, "#filter")
    def filter_done(self) -> None:
        self.query_one(DataTable).focus()

    def action_filter(self) -> None:
        self.query_one("#filter", Input).focus()

    def action_clear_filter(self) -> None:
        self.query_one("#filter", Input).value = ""
        self.query_one(DataTable).focus()

    def set_sort(self, index: int, descending: bool | None = None) -> None:
        self.sort_index = index % len(COLUMNS)
        self.sort_key = COLUMNS[self.sort_index][1]
        if descending is not None:
            self.descending = descending
        self.page = 0
        self.reload()

    def action_sort(self) -> None:
        self.set_sort(self.sort_index + 1 if self.sort_key != "id" else 0)

    def action_reverse(self) -> None:
        self.descending = not self.descending
        self.reload()

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        same = self.sort_key == COLUMNS[event.column_index][1]
        self.set_sort(event.column_index, (not self.descending) if same else True)

    def action_page(self, delta: int) -> None:
        pages = max((self.total - 1) // PAGE_SIZE + 1, 1)
        self.page = min(max(self.page + delta, 0), pages - 1)
        self.reload()

    # ------------------------------------------------------------------ actions on a run

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.action_open()

    def action_mark(self) -> None:
        run = self.selected_run()
        if run is None or run.id is None:
            return
        self.marked ^= {run.id}
        table = self.query_one(DataTable)
        table.update_cell(
            str(run.id), "name", run_cells(run, datetime.now(UTC), run.id in self.marked)[0]
        )
        table.action_cursor_down()
        self.update_info()

    def action_compare(self) -> None:
        from .compare import CompareScreen

        chosen = sorted(self.marked)
        if len(chosen) < 2:
            self.notify("mark two or more runs with space first", severity="warning")
            return
        if bench := self.ready():
            self.app.push_screen(CompareScreen(bench, chosen))

    def action_budget(self) -> None:
        from .budget import BudgetScreen

        chosen = sorted(self.marked) or sorted(self.runs)
        if not chosen:
            self.notify("no runs to show: mark some with space", severity="warning")
            return
        if bench := self.ready():
            self.app.push_screen(BudgetScreen(bench, chosen))

    def action_front(self) -> None:
        from .front import FrontScreen

        if bench := self.ready():
            self.app.push_screen(FrontScreen(bench, self.search))

    def action_open(self) -> None:
        from .monitor import MonitorScreen

        if chosen := self.chosen():
            bench, run = chosen
            self.app.push_screen(MonitorScreen(bench, run.id, poll=self.poll_interval))

    def action_evaluate(self) -> None:
        from .evals import EvalScreen

        if chosen := self.chosen():
            bench, run = chosen
            self.app.push_screen(EvalScreen(bench, run.id, poll=self.poll_interval))

    def action_conflict(self) -> None:
        from .conflict import ConflictScreen

        if chosen := self.chosen():
            bench, run = chosen
            self.app.push_screen(ConflictScreen(bench, run.id, poll=self.poll_interval))

    def action_new(self) -> None:
        self.launch()

    def action_relaunch(self) -> None:
        if chosen := self.chosen():
            bench, run = chosen
            call_service(self, lambda: bench.relaunch_config(run), self.launch)

    def launch(self, values: dict[str, Any] | None = None) -> None:
        """The launch form; a queued run opens its monitor, a sweep filters the table."""
        from .launch import LaunchScreen

        bench = self.ready()
        if bench is not None:
            form = LaunchScreen(bench, values, gpus=bench.gpus or [])
            self.app.push_screen(form, self.launched)

    def launched(self, result: Launched | None) -> None:
        from .monitor import MonitorScreen

        if result is None or self.bench is None:
            return
        if result.sweep is not None:
            self.query_one("#filter", Input).value = result.sweep
        elif result.run_id is not None:
            self.app.push_screen(MonitorScreen(self.bench, result.run_id, poll=self.poll_interval))
