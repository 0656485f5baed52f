"""The home screen: every run in the store, live, one page at a time."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Input, Static

from caat_storage import Run

from .messages import RunsLoaded, StoreFailed
from .modals import ConfirmScreen, NoteScreen, TextPrompt

if TYPE_CHECKING:
    from .app import CaatApp

PAGE_SIZE = 100
STATUS_STYLE = {
    "queued": "cyan",
    "running": "bold yellow",
    "finished": "green",
    "failed": "bold red",
    "cancelled": "magenta",
    "diverged": "red",
}
# (column label, store sort key)
COLUMNS = [
    ("name", "name"),
    ("method", "param"),
    ("data", "dataset"),
    ("ε", "eps"),
    ("status", "status"),
    ("epoch", "epochs_done"),
    ("SA", "best_val_clean"),
    ("AA", "best_val_adv"),
    ("φ", "last_phi"),
    ("μ", "last_mu"),
    ("started", "started_at"),
    ("time", "started_at"),
]


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _duration(run: Run, now: datetime) -> str:
    if run.started_at is None:
        return "-"
    end = run.finished_at or (now if run.status == "running" else run.heartbeat_at or now)
    seconds = int(max((end - run.started_at).total_seconds(), 0))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def run_cells(run: Run, now: datetime, marked: bool = False) -> list[Any]:
    """One table row. User text (names) goes in as `Text`, never parsed as markup."""
    symbol = "γ" if run.method == "caat" else "λ"
    started = run.started_at.astimezone().strftime("%m-%d %H:%M") if run.started_at else "-"
    return [
        Text.assemble(("● " if marked else "", "bold"), run.name),
        Text(f"{run.method} {symbol}={_num(run.param, 'g')}"),
        Text(f"{run.dataset}/{run.model}"),
        _num(run.eps, ".3g"),
        Text(run.status, style=STATUS_STYLE.get(run.status, "")),
        f"{run.epochs_done}/{run.epochs_total}",
        "-" if run.best_val_clean is None else f"{100 * run.best_val_clean:.1f}",
        "-" if run.best_val_adv is None else f"{100 * run.best_val_adv:.1f}",
        _num(run.last_phi, "+.2f"),
        _num(run.last_mu, ".3g"),
        started,
        _duration(run, now),
    ]


class RunsScreen(Screen[None]):
    """Runs newest first; the table refreshes every second without losing its place."""

    BINDINGS = [
        # The footer keeps what fits at 80 columns with `q` and `?`; `?` lists every key.
        Binding("n", "new", "New"),
        Binding("enter", "open", "Monitor", show=False),
        Binding("e", "evaluate", "Eval"),
        Binding("slash", "filter", "Filter", show=False),  # the filter box says `/`
        Binding("s", "sort", "Sort", show=False),
        Binding("S", "reverse", "Reverse", show=False),
        Binding("c", "cancel_run", "Cancel"),
        Binding("d", "delete", "Delete", show=False),
        Binding("r", "rename", "Rename", show=False),
        Binding("t", "tags", "Tags", show=False),
        Binding("o", "note", "Note", show=False),
        Binding("l", "relaunch", "Relaunch", show=False),
        Binding("f", "folder", "Folder", show=False),
        Binding("left_square_bracket", "page(-1)", "Prev page", show=False),
        Binding("right_square_bracket", "page(1)", "Next page", show=False),
        Binding("escape", "clear_filter", "Clear filter", show=False),
        Binding("space", "mark", "Mark", show=False),
        Binding("C", "compare", "Compare"),
        Binding("F", "front", "Front"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.search = ""
        self.sort_index = 0  # into COLUMNS; the default order is newest first
        self.sort_key = "id"
        self.descending = True
        self.page = 0
        self.total = 0
        self.runs: dict[int, Run] = {}
        self.marked: set[int] = set()  # runs picked with space, for compare

    @property
    def caat(self) -> CaatApp:
        return self.app  # type: ignore[return-value]

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
        self.reload()
        self.set_interval(self.caat.poll_interval, self.reload)

    # ------------------------------------------------------------------ loading

    @work(thread=True, exclusive=True, group="runs")
    def reload(self) -> None:
        """Read one page of runs off the UI thread; the result arrives as a message."""
        store = self.caat.store
        try:
            runs = store.list_runs(
                limit=PAGE_SIZE,
                offset=self.page * PAGE_SIZE,
                search=self.search or None,
                sort=self.sort_key,
                descending=self.descending,
            )
            total = store.count_runs(search=self.search or None)
        except Exception as exc:  # a locked or vanished store must not kill the UI
            self.post_message(StoreFailed(f"cannot read the store: {exc}"))
            return
        self.post_message(RunsLoaded(runs, total))

    def on_runs_loaded(self, message: RunsLoaded) -> None:
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
        self.app.push_screen(CompareScreen(chosen))

    def action_front(self) -> None:
        from .front import FrontScreen

        self.app.push_screen(FrontScreen(self.search))

    def action_open(self) -> None:
        run = self.selected_run()
        if run is not None and run.id is not None:
            self.caat.open_monitor(run.id)

    def action_evaluate(self) -> None:
        run = self.selected_run()
        if run is not None and run.id is not None:
            self.caat.open_evaluation(run.id)

    def action_new(self) -> None:
        self.caat.open_launch()

    def action_relaunch(self) -> None:
        from caat_app.runs.manage import relaunch_config

        run = self.selected_run()
        if run is not None:
            self.caat.open_launch(relaunch_config(run))

    def action_cancel_run(self) -> None:
        run = self.selected_run()
        if run is None:
            return
        if run.status not in {"running", "queued"}:
            self.notify(f"run {run.id} is {run.status}: nothing to cancel", markup=False)
            return

        def done(yes: bool | None) -> None:
            if yes:
                self.caat.cancel_run(run)

        self.app.push_screen(
            ConfirmScreen(f"Cancel run {run.id} ({run.name})? It checkpoints and stops."), done
        )

    def action_delete(self) -> None:
        run = self.selected_run()
        if run is None:
            return
        if run.status in {"running", "queued"}:
            self.notify("cancel the run before deleting it", severity="warning")
            return

        def done(yes: bool | None) -> None:
            if yes:
                self.caat.delete_run(run)

        self.app.push_screen(
            ConfirmScreen(
                f"Delete run {run.id} ({run.name}), its metrics and its folder {run.run_dir}?",
                confirm="Delete",
            ),
            done,
        )

    def action_rename(self) -> None:
        run = self.selected_run()
        if run is None:
            return
        self.app.push_screen(
            TextPrompt(f"New name for run {run.id}", run.name),
            lambda name: self.caat.edit_run(run, "rename_run", name) if name else None,
        )

    def action_tags(self) -> None:
        run = self.selected_run()
        if run is None:
            return

        def done(text: str | None) -> None:
            if text is not None:
                tags = [t.strip() for t in text.split(",") if t.strip()]
                self.caat.edit_run(run, "set_tags", tags)

        self.app.push_screen(
            TextPrompt(f"Tags for run {run.id}", run.tags, placeholder="comma, separated"), done
        )

    def action_note(self) -> None:
        run = self.selected_run()
        if run is None:
            return
        self.app.push_screen(
            NoteScreen(f"Note on run {run.id} ({run.name})", run.notes),
            lambda text: self.caat.edit_run(run, "set_notes", text) if text is not None else None,
        )

    def action_folder(self) -> None:
        run = self.selected_run()
        if run is not None:
            self.app.copy_to_clipboard(run.run_dir)
            self.notify(f"{run.run_dir} (copied to the clipboard)", markup=False, timeout=8)
