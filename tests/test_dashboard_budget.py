"""The dashboard's budget view: `B` on marked (or filtered) runs, its charts and verdict,
the hint when the runs form no budget group, and `escape` (headless, real stores)."""

from __future__ import annotations

import io
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import run_app, wait_for
from rich.console import Console
from textual.pilot import Pilot
from textual.widgets import DataTable, Static

import caat_screens.app
from caat_app.config import build_config
from caat_app.runs.manage import create_run
from caat_app.runs.service import Workbench
from caat_screens.app import CaatApp
from caat_screens.budget import NO_GROUP_HINT, BudgetScreen
from caat_screens.charts import MetricChart
from caat_screens.runs import RunsScreen
from caat_storage import Store

EPS = (2 / 255, 4 / 255, 8 / 255)
EPOCHS = 3
STEPS_PER_EPOCH = 4


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(f"sqlite:///{tmp_path / 'caat.db'}") as opened:
        yield opened


class App(CaatApp):
    """The dashboard, keeping every notification it showed."""

    CSS_PATH = str(Path(caat_screens.app.__file__).with_name("caat.tcss"))

    def __init__(self, store: Store) -> None:
        super().__init__(store, poll_interval=0.1, gpus=[])
        self.shown: list[str] = []

    def notify(self, message: str, **options: Any) -> None:  # type: ignore[override]
        self.shown.append(message)
        super().notify(message, **options)


def mu_of(method: str, eps: float, epoch: int, k: int) -> float:
    """Vanilla's μ grows with ε; CA-AT's falls (the verdict must tell them apart)."""
    scale = 255 * eps if method == "vanilla" else 10 - 255 * eps
    return scale * (1 + epoch / 10) + k / 100


def run_with_steps(store: Store, method: str, eps: float, name: str | None = None) -> int:
    """A run as a worker leaves it: its options, and step rows with μ."""
    options = {"name": name or f"{method}-{round(255 * eps)}", "method": method, "eps": eps}
    run_id = create_run(store, build_config({**options, "epochs": EPOCHS}))
    rows = [
        {"step": e * STEPS_PER_EPOCH + k, "epoch": e, "t": 0.1, "lr": 0.1, "phi": 0.2}
        | {"mu": mu_of(method, eps, e, k)}
        for e in range(1, EPOCHS + 1)
        for k in range(STEPS_PER_EPOCH)
    ]
    store.append_metrics(run_id, steps=rows)
    store.update_run(run_id, status="finished")
    return run_id


def text_of(widget: Static) -> str:
    console = Console(width=400, file=io.StringIO(), record=True)
    console.print(widget.content)
    return console.export_text()


async def open_budget(pilot: Pilot[None], app: App, rows: int, marks: int) -> BudgetScreen:
    """Mark the first `marks` runs of the table with space, press `B`, wait for the groups."""
    await wait_for(pilot, lambda: app.screen.query(DataTable).first().row_count == rows)
    for _ in range(marks):
        await pilot.press("space")
    await pilot.press("B")
    await wait_for(pilot, lambda: isinstance(app.screen, BudgetScreen))
    screen = app.screen
    assert isinstance(screen, BudgetScreen)
    await wait_for(pilot, lambda: screen.groups is not None)
    await pilot.pause()
    return screen


@pytest.mark.parametrize("size", [(80, 24), (120, 36)], ids=["80x24", "120x36"])
def test_budget_view_of_marked_runs(store: Store, size: tuple[int, int]) -> None:
    ids = [run_with_steps(store, m, e) for m in ("vanilla", "caat") for e in EPS]
    run_with_steps(store, "vanilla", 16 / 255, name="unmarked")  # newest: first row, skipped
    app = App(store)

    async def body(pilot: Pilot[None]) -> None:
        await wait_for(pilot, lambda: app.screen.query(DataTable).first().row_count == 7)
        await pilot.press("down")
        screen = await open_budget(pilot, app, rows=7, marks=6)
        assert screen.run_ids == sorted(ids)
        assert screen.groups is not None and len(screen.groups) == 1
        verdict = text_of(screen.query_one(".budget-verdict", Static))
        vanilla, caat = (s for s in verdict.splitlines() if s.strip())
        assert "Vanilla AT" in vanilla and "rises with ε" in vanilla
        assert "does not rise" not in vanilla and "16/255" not in vanilla
        assert "CA-AT" in caat and "does not rise with ε" in caat
        assert "2/255" in vanilla and "8/255" in vanilla
        charts = list(screen.query(MetricChart))
        assert len(charts) == 2
        for chart in charts:  # drawn, at full height even at 80×24 (the body scrolls)
            assert chart.last_error is None and chart.size.height >= 12
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, RunsScreen))

    run_app(app, body, size=size)


def test_budget_view_without_a_group_shows_the_hint(store: Store) -> None:
    run_with_steps(store, "vanilla", 8 / 255, name="a")
    run_with_steps(store, "vanilla", 8 / 255, name="b")  # same ε: no budget group
    app = App(store)

    async def body(pilot: Pilot[None]) -> None:
        screen = await open_budget(pilot, app, rows=2, marks=0)  # none marked: those shown
        assert len(screen.run_ids) == 2 and screen.groups == []
        assert text_of(screen.query_one("#budget-hint", Static)).strip() == NO_GROUP_HINT
        assert not list(screen.query(MetricChart))
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, RunsScreen))

    run_app(app, body, size=(80, 24))


def test_workbench_budget_groups_reads_stored_steps(store: Store) -> None:
    ids = [run_with_steps(store, "vanilla", e) for e in EPS]
    groups = Workbench(store, start_workers=False).budget_groups([*ids, 9999])  # 9999: gone
    (line,) = groups[0]["lines"]
    assert line["eps"] == list(EPS)
    # The last epoch's median of k/100 for k = 0..3 is 0.015.
    expected = [255 * e * (1 + EPOCHS / 10) + 0.015 for e in EPS]
    assert line["last_mu"] == pytest.approx(expected)


def test_budget_screen_does_not_import_torch() -> None:
    code = "import sys, caat_screens.budget; sys.exit('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr
