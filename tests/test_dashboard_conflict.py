"""The dashboard's Conflict screen: per-layer heatmap, per-sample report, the hints when
either is missing, and `p` starting `caat conflict` in its own process (headless, real stores)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from helpers import run_app, wait_for
from rich.console import Console
from textual.containers import VerticalScroll
from textual.pilot import Pilot
from textual.widgets import DataTable, Static

import caat_screens.app
from caat_app.config import build_config
from caat_app.errors import CaatError
from caat_app.lab.conflict_report import build_report
from caat_app.runs.manage import create_run
from caat_app.runs.service import CONFLICT_FILE, Workbench
from caat_screens.app import CaatApp
from caat_screens.conflict import LAYER_HINT, SAMPLE_HINT, ConflictScreen
from caat_screens.runs import RunsScreen
from caat_storage import Store

T0 = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
LAYERS = ["net.conv1.weight", "net.conv1.bias", "net.fc.weight"]


@pytest.fixture
def store(tmp_path: Path) -> Store:
    with Store.open(f"sqlite:///{tmp_path / 'caat.db'}") as opened:
        yield opened


class App(CaatApp):
    """The dashboard, keeping every notification it showed."""

    CSS_PATH = str(Path(caat_screens.app.__file__).with_name("caat.tcss"))

    def __init__(self, store: Store, **options: Any) -> None:
        super().__init__(store, poll_interval=0.1, gpus=[], **options)
        self.shown: list[str] = []

    def notify(self, message: str, **options: Any) -> None:  # type: ignore[override]
        self.shown.append(message)
        super().notify(message, **options)


def finished_run(store: Store, name: str = "robust") -> int:
    run_id = create_run(store, build_config({"name": name, "epochs": 2}))
    store.update_run(
        run_id, status="finished", started_at=T0, finished_at=T0 + timedelta(minutes=3)
    )
    return run_id


def add_layers(store: Store, run_id: int, steps: int = 5) -> None:
    """Per-layer rows as a worker with `--layer-stats` stores them."""
    store.set_run_layers(run_id, LAYERS, [72, 8, 640])
    rows = [
        {"step": s, "layer": i, "epoch": s // 3, "phi": 0.5 - 0.2 * i, "mu": 0.01 * (i + 1)}
        for s in range(0, steps * 10, 10)
        for i in range(len(LAYERS))
    ]
    store.append_metrics(run_id, layers=rows)


def write_report(store: Store, run_id: int, n: int = 12) -> dict[str, Any]:
    """A conflict.json as `caat conflict` writes it (the same report builder, 4×4 images)."""
    columns: dict[str, list[Any]] = {
        "index": list(range(100, 100 + n)),
        "label": [i % 2 for i in range(n)],
        "pred_c": [i % 2 for i in range(n)],
        "pred_a": [(i + 1) % 2 for i in range(n)],
        "margin": [0.5 + i / 10 for i in range(n)],
        "loss_c": [0.1 * (i + 1) for i in range(n)],
        "loss_a": [0.2 * (i + 1) for i in range(n)],
        "phi": [1 - i / n for i in range(n)],
        "mu": [10.0 ** (i / 3 - 3) for i in range(n)],
        "norm_c": [1.0] * n,
        "norm_a": [2.0] * n,
    }
    meta = {"run": run_id, "name": "robust", "checkpoint": "best", "weights": "epoch 2"}
    pixels = lambda row: [[[(row * 20 + r * 4 + c) % 256 for c in range(4)] for r in range(4)]]  # noqa: E731
    report = build_report(columns, top=4, pixels=pixels, meta=meta)
    folder = Path(store.get_run(run_id).run_dir)  # type: ignore[union-attr]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CONFLICT_FILE).write_text(json.dumps(report))
    return report


def text_of(screen: Any, selector: str) -> str:
    """What a Static shows, as plain text (a Group of tables and images included)."""
    console = Console(width=200, file=io.StringIO(), record=True)
    console.print(screen.query_one(selector, Static).content)
    return console.export_text().rstrip("\n")


async def open_conflict(pilot: Pilot[None], app: App) -> ConflictScreen:
    """`k` on the runs table's selected run, once the run is listed and drawn."""
    await wait_for(pilot, lambda: app.screen.query(DataTable).first().row_count == 1)
    await pilot.press("k")
    await wait_for(pilot, lambda: isinstance(app.screen, ConflictScreen))
    screen = app.screen
    assert isinstance(screen, ConflictScreen)
    await wait_for(pilot, lambda: screen.run is not None)
    return screen


def test_conflict_screen_shows_heatmap_and_per_sample_report(store: Store) -> None:
    run_id = finished_run(store)
    add_layers(store, run_id)
    report = write_report(store, run_id)
    app = App(store, start_workers=False)

    async def body(pilot: Pilot[None]) -> None:
        screen = await open_conflict(pilot, app)
        title = text_of(screen, "#layers-title")
        assert "per-layer φ = cos(g_c, g_a)" in title and "3 layers, 5 recorded steps" in title
        heatmap = text_of(screen, "#layers-map").splitlines()
        assert [line.split(" ")[0] for line in heatmap[:3]] == [
            "conv1.weight",
            "conv1.bias",
            "fc.weight",
        ]
        assert heatmap[0].count("█") == 5  # one cell per recorded step (fewer than fit)
        assert "steps 0…40" in heatmap[3] and "red φ = −1" in heatmap[3]
        shown = text_of(screen, "#samples-view")
        assert "12 training images, best checkpoint (epoch 2)" in shown
        assert "the 4 most conflicting training images" in shown
        largest = report["top"][0]
        assert largest["index"] == 111  # the largest μ_i, first
        assert f"#{largest['index']}  y={largest['label']}" in shown
        assert f"margin {largest['margin']:+.2f}" in shown and f"μ {largest['mu']:.3g}" in shown
        assert "▀" in shown  # the images, as half blocks
        assert "μ_i histogram" in shown and "q50" in shown
        assert report["findings"][0] in shown.replace("\n", " ")
        await pilot.press("m")
        assert "per-layer μ = ‖g_c‖·‖g_a‖·(1 − φ)" in text_of(screen, "#layers-title")
        assert "log scale, dark 0.01 to yellow 0.03" in text_of(screen, "#layers-map")
        await pilot.press("m")
        assert "per-layer φ" in text_of(screen, "#layers-title")
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, RunsScreen))

    run_app(app, body)


def test_conflict_screen_hints_literal_name_and_report_arriving(store: Store) -> None:
    run_id = finished_run(store, name="[bold]x[/]")
    app = App(store, start_workers=False)

    async def body(pilot: Pilot[None]) -> None:
        screen = await open_conflict(pilot, app)
        await wait_for(pilot, lambda: "conflict lab" in text_of(screen, "#conflict-head"))
        assert "[bold]x[/]" in text_of(screen, "#conflict-head")  # as written, not markup
        assert text_of(screen, "#layers-map") == LAYER_HINT
        assert text_of(screen, "#samples-view") == SAMPLE_HINT
        await pilot.press("p")  # workers are off: refused in one line, nothing started
        await wait_for(pilot, lambda: any("workers are off" in s for s in app.shown))
        write_report(store, run_id)  # the file appears: the next poll shows it
        await wait_for(pilot, lambda: "most conflicting" in text_of(screen, "#samples-view"))
        add_layers(store, run_id, steps=2)  # rows appear: the heatmap replaces the hint
        await wait_for(pilot, lambda: "2 recorded steps" in text_of(screen, "#layers-title"))

    run_app(app, body)


def test_conflict_screen_scrolls_at_80x24(store: Store) -> None:
    run_id = finished_run(store)
    add_layers(store, run_id, steps=200)  # more steps than columns: binned to fit
    write_report(store, run_id)
    app = App(store, start_workers=False)

    async def body(pilot: Pilot[None]) -> None:
        screen = await open_conflict(pilot, app)
        await wait_for(pilot, lambda: "most conflicting" in text_of(screen, "#samples-view"))
        lines = text_of(screen, "#layers-map").splitlines()
        assert all(len(line) <= 80 for line in lines[:3])  # the heatmap fits the width
        body_ = screen.query_one("#conflict-body", VerticalScroll)
        await pilot.pause(0.2)
        assert body_.max_scroll_y > 0  # more than fits: it scrolls instead of clipping
        body_.scroll_end(animate=False)
        await wait_for(pilot, lambda: body_.scroll_y == body_.max_scroll_y)

    run_app(app, body, size=(80, 24))


def test_conflict_is_a_command_in_the_palette(store: Store) -> None:
    finished_run(store)
    app = App(store, start_workers=False)

    async def body(pilot: Pilot[None]) -> None:
        commands = [c.title for c in app.get_system_commands(app.screen)]
        assert "Conflict lab" in commands
        screen = await open_conflict(pilot, app)
        commands = [c.title for c in app.get_system_commands(screen)]
        assert "Compute per-sample conflict" in commands and "Heatmap metric" in commands

    run_app(app, body)


def test_p_starts_caat_conflict_and_shows_its_failure(store: Store) -> None:
    """A finished run without a checkpoint: the real `caat conflict` process refuses it in
    one line (exit 2), and the screen says so, pointing at the log."""
    run_id = finished_run(store)
    app = App(store)

    async def body(pilot: Pilot[None]) -> None:
        screen = await open_conflict(pilot, app)
        await pilot.press("p")
        await wait_for(pilot, lambda: any("computing per-sample" in s for s in app.shown))
        await wait_for(pilot, lambda: "failed (exit 2)" in text_of(screen, "#samples-view"))
        log = Path(store.get_run(run_id).run_dir) / "conflict.log"  # type: ignore[union-attr]
        assert log.read_text().startswith("error: ")

    run_app(app, body)


def test_workbench_reads_layers_and_report_and_refuses_unfinished(store: Store) -> None:
    from caat_app.cli.conflict import REPORT_FILE

    assert CONFLICT_FILE == REPORT_FILE  # the dashboard reads what the CLI writes
    bench = Workbench(store, gpus=[])
    run_id = finished_run(store)
    run = bench.run(run_id)
    assert bench.layer_conflict(run_id) == ([], [], [])
    assert bench.conflict_report(run) is None
    add_layers(store, run_id, steps=3)
    names, sizes, rows = bench.layer_conflict(run_id, after_step=10)
    assert (names, sizes) == (LAYERS, [72, 8, 640])
    assert [(r["step"], r["layer"]) for r in rows] == [(20, 0), (20, 1), (20, 2)]
    written = json.loads(json.dumps(write_report(store, run_id)))
    assert bench.conflict_report(run) == written
    bench.conflict_file(run).write_text("{not json")
    with pytest.raises(CaatError, match="not a conflict report"):
        bench.conflict_report(run)
    queued = bench.run(create_run(store, build_config({"name": "q", "epochs": 1})))
    with pytest.raises(CaatError, match="needs it finished"):
        bench.start_conflict(queued)


def test_conflict_screen_does_not_import_torch() -> None:
    code = "import sys, caat_screens.conflict; sys.exit('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr
