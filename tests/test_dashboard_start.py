"""The dashboard's start: the first page read without the store (held to the store's own
answer, cell by cell), the app built from a URL, the help and the palette written from
the screens' bindings, and the one helper every service call goes through."""

from __future__ import annotations

import sqlite3
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from helpers import run_app, wait_for
from textual.app import App, ComposeResult
from textual.pilot import Pilot
from textual.widgets import DataTable, Static

from caat_app.config import build_config
from caat_app.errors import CaatError
from caat_app.runs.manage import create_run
from caat_app.runs.service import Workbench
from caat_screens.app import CaatApp
from caat_screens.calls import call_service
from caat_screens.keys import Key, help_markdown, key_table, palette_commands
from caat_screens.runs import RunsScreen
from caat_screens.runs_table import PAGE_SIZE, run_cells
from caat_storage import Run, Store
from caat_storage.firstpage import first_page

T0 = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def filled(tmp_path: Path, count: int = 3) -> str:
    """A store with runs in every state the table shows: times, metrics, tags, a note."""
    url = f"sqlite:///{tmp_path / 'caat.db'}"
    with Store.open(url) as store:
        for i in range(count):
            method = "caat" if i % 2 else "vanilla"
            run_id = create_run(store, build_config({"method": method, "name": f"run-{i}"}))
            if i % 3 == 0:
                continue  # queued: no times, no metrics
            start = T0 + timedelta(minutes=i, microseconds=1234 * i)
            store.update_run(
                run_id,
                status="finished" if i % 3 == 1 else "running",
                started_at=start,
                finished_at=start + timedelta(seconds=97) if i % 3 == 1 else None,
                heartbeat_at=start + timedelta(seconds=95),
                epochs_done=2,
                best_val_clean=0.91 + i / 1000,
                best_val_adv=0.33,
                last_phi=-0.12,
                last_mu=1.5e-3,
            )
            store.set_tags(run_id, ["digits", f"t{i}"])
            store.set_notes(run_id, "a note\nof two lines")
    return url


def test_first_page_matches_the_store_cell_by_cell(tmp_path: Path) -> None:
    url = filled(tmp_path, count=PAGE_SIZE + 7)
    page = first_page(url, PAGE_SIZE)
    assert page is not None
    rows, total = page
    with Store.open(url) as store:
        runs = store.list_runs(limit=PAGE_SIZE)
        assert total == store.count_runs() == PAGE_SIZE + 7
    assert [r.id for r in rows] == [r.id for r in runs]
    now = T0 + timedelta(hours=1)
    for row, run in zip(rows, runs, strict=True):
        assert vars(row) == run.model_dump()  # every column, times aware and in UTC
        for marked in (False, True):
            quick, stored = run_cells(row, now, marked), run_cells(run, now, marked)  # type: ignore[arg-type]
            assert [str(c) for c in quick] == [str(c) for c in stored]
            assert [getattr(c, "style", None) for c in quick] == [
                getattr(c, "style", None) for c in stored
            ]


def test_first_page_reads_only_what_it_knows_and_never_creates_a_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.db"
    assert first_page(f"sqlite:///{missing}", 10) is None
    assert not missing.exists()
    assert first_page("sqlite://", 10) is None  # in memory
    assert first_page("postgresql://host/caat", 10) is None
    assert first_page(f"sqlite:///{tmp_path / 'x.db'}?mode=ro", 10) is None
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE notes (id INTEGER)")
    assert first_page(f"sqlite:///{other}", 10) is None  # not a store
    empty = f"sqlite:///{tmp_path / 'empty.db'}"
    Store.open(empty).close()
    assert first_page(empty, 10) == ([], 0)


def info(app: CaatApp) -> str:
    return str(app.screen.query_one("#runs-info", Static).render())


def names(app: CaatApp) -> list[str]:
    table = app.screen.query_one(DataTable)
    return [str(table.get_row_at(i)[0]) for i in range(table.row_count)]


def test_the_app_from_a_url_shows_the_page_then_reads_the_store(tmp_path: Path) -> None:
    url = filled(tmp_path, count=5)
    app = CaatApp(url, poll_interval=0.1, gpus=[], start_workers=False)

    async def body(pilot: Pilot[None]) -> None:
        screen = app.screen
        assert isinstance(screen, RunsScreen)
        assert names(app) == [f"run-{i}" for i in range(4, -1, -1)]  # in the first frame
        await wait_for(pilot, lambda: app.bench is not None and screen.bench is app.bench)
        await wait_for(pilot, lambda: all(isinstance(r, Run) for r in screen.runs.values()))
        assert names(app) == [f"run-{i}" for i in range(4, -1, -1)]
        assert "1–5 of 5 runs" in info(app)

    try:
        run_app(app, body)
    finally:
        app.close()
    assert app.open_error is None


def test_a_store_that_cannot_open_ends_the_app_with_its_reason(tmp_path: Path) -> None:
    url = filled(tmp_path, count=1)
    with sqlite3.connect(tmp_path / "caat.db") as conn:
        conn.execute("UPDATE caat_meta SET value = '99' WHERE key = 'schema_version'")
    app = CaatApp(url, poll_interval=0.1, gpus=[], start_workers=False)

    async def body(pilot: Pilot[None]) -> None:
        await wait_for(pilot, lambda: app.open_error is not None)

    run_app(app, body)
    assert "newer caat" in str(app.open_error)


# --------------------------------------------------------------------------- help and palette


def test_the_palette_offers_every_titled_key_of_the_screen_and_the_app(tmp_path: Path) -> None:
    with Store.open(f"sqlite:///{tmp_path / 's.db'}") as store:
        app = CaatApp(store, poll_interval=60, gpus=[], start_workers=False)

        async def body(pilot: Pilot[None]) -> None:
            titles = [c.title for c in app.get_system_commands(app.screen)]
            for title in (
                "New run",
                "Monitor run",
                "Evaluate run",
                "Cancel run",
                "Delete run",
                "Rename run",
                "Re-launch run",
                "Compare marked runs",
                "SA-AA front",
                "Help",
                "Toggle theme",
            ):
                assert title in titles
            assert len(titles) == len(set(titles))

        run_app(app, body)


def test_the_help_lists_every_key_of_every_screen() -> None:
    from caat_screens.compare import CompareScreen
    from caat_screens.evals import EvalScreen
    from caat_screens.front import FrontScreen
    from caat_screens.monitor import MonitorScreen

    sections = [
        (name, "", screen.BINDINGS)
        for name, screen in [
            ("Runs", RunsScreen),
            ("Monitor", MonitorScreen),
            ("Compare", CompareScreen),
            ("Front", FrontScreen),
            ("Evaluation", EvalScreen),
        ]
    ]
    text = help_markdown("# caat", sections)
    for key in ("`n`", "`enter`", "`/`", "`[`", "`]`", "`S`", "`space`", "`x`", "`g`", "`a`"):
        assert key in text
    assert "| `e` | Evaluate run: Robust accuracy" in text
    assert text.count("## ") == len(sections)


def test_keys_become_commands_and_rows() -> None:
    bindings = [
        Key("x", "axis", "X axis", title="X axis", tooltip="step, epoch or time"),
        Key("escape,q", "back", "Back"),  # no title: a help row, not a command
        ("y", "yes", "Yes"),
    ]
    node: Any = App()
    commands = list(palette_commands(node, bindings))
    assert [(c.title, c.help) for c in commands] == [("X axis", "step, epoch or time")]
    assert key_table(bindings)[2:] == [
        "| `x` | X axis: step, epoch or time |",
        "| `escape` `q` | Back |",
        "| `y` | Yes |",
    ]


# --------------------------------------------------------------------------- service calls


class Calls(App[None]):
    def __init__(self) -> None:
        super().__init__()
        self.shown: list[tuple[str, str]] = []
        self.results: list[int] = []

    def compose(self) -> ComposeResult:
        yield Static("calls")

    def notify(self, message: str, **options: Any) -> None:  # type: ignore[override]
        self.shown.append((message, options.get("severity", "information")))


def test_a_refused_call_is_one_error_line_and_a_done_call_reports() -> None:
    app = Calls()

    def refuse() -> int:
        raise CaatError("run 3 is\nrunning")

    async def body(pilot: Pilot[None]) -> None:
        call_service(app, refuse, app.results.append)
        call_service(app, lambda: 7, app.results.append)
        await wait_for(pilot, lambda: bool(app.shown) and bool(app.results))
        assert app.shown == [("run 3 is running", "error")]
        assert app.results == [7]

    run_app(app, body)


def test_workbench_open_closes_only_what_it_opened(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'w.db'}"
    bench = Workbench.open(url, gpus=[])
    assert bench.owns_store and bench.eval_workers.running() == []
    bench.close()
    with Store.open(url) as store:
        kept = Workbench(store)
        kept.close()  # handed in: stays open
        assert store.count_runs() == 0


def test_the_startup_probe_stops_the_clock_at_the_marker() -> None:
    pytest.importorskip("termios")
    from caat_app.bench.startup import first_page as probe

    code = "import sys, time; print('the-first-page', flush=True); sys.stdin.read(1)"
    seconds, cpu = probe([sys.executable, "-c", code], b"the-first-page", timeout=30)
    assert 0 < seconds < 30 and (cpu is None or cpu >= 0)
