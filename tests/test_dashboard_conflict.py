"""The dashboard's Conflict screen: per-layer heatmap, per-sample report, the synthetic
experiment, the hints when any is missing, and `p`/`s` starting `caat conflict`/`caat synth`
in their own processes (headless, real stores)."""

from __future__ import annotations

import io
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
from caat_app.cli.conflict import save_report
from caat_app.config import build_config
from caat_app.errors import CaatError
from caat_app.lab.conflict_report import build_report
from caat_app.runs.manage import create_run
from caat_app.runs.service import Workbench
from caat_screens.app import CaatApp
from caat_screens.budget import BudgetScreen
from caat_screens.conflict import LAYER_HINT, SAMPLE_HINT, SYNTH_HINT, ConflictScreen
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
    """A report stored as `caat conflict` stores it (the same builder and writer, 4×4 images)."""
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
    save_report(store, store.get_run(run_id), report, key="best checkpoint, n=all")  # type: ignore[arg-type]
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
        assert text_of(screen, "#synth-view") == SYNTH_HINT
        await pilot.press("p")  # workers are off: refused in one line, nothing started
        await wait_for(pilot, lambda: any("workers are off" in s for s in app.shown))
        write_report(store, run_id)  # the report is stored: the next poll shows it
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
        await wait_for(pilot, lambda: any("caat conflict started" in s for s in app.shown))
        await wait_for(pilot, lambda: "failed (exit 2)" in text_of(screen, "#samples-view"))
        log = Path(store.get_run(run_id).run_dir) / "conflict.log"  # type: ignore[union-attr]
        assert log.read_text().startswith("error: ")

    run_app(app, body)


def test_workbench_reads_layers_and_reports_and_refuses_unfinished(store: Store) -> None:
    bench = Workbench(store, gpus=[])
    run_id = finished_run(store)
    run = bench.run(run_id)
    assert bench.layer_conflict(run_id) == ([], [], [])
    assert bench.conflict_report(run) is None and bench.synth_report() is None
    add_layers(store, run_id, steps=3)
    names, sizes, rows = bench.layer_conflict(run_id, after_step=10)
    assert (names, sizes) == (LAYERS, [72, 8, 640])
    assert [(r["step"], r["layer"]) for r in rows] == [(20, 0), (20, 1), (20, 2)]
    written = write_report(store, run_id)
    stored = bench.conflict_report(run)
    assert stored == {k: v for k, v in written.items() if k != "samples"}  # rows hold those
    queued = bench.run(create_run(store, build_config({"name": "q", "epochs": 1})))
    with pytest.raises(CaatError, match="needs it finished"):
        bench.start_conflict(queued)


def store_synth(store: Store) -> dict[str, Any]:
    report = Workbench(store, gpus=[]).synth_report()
    assert report is not None
    return report


def synth_report() -> dict[str, Any]:
    """A real (short) synthetic experiment's report, as `caat synth` stores it."""
    from caat_app.lab.synth import SynthConfig, as_report, load_task, run_synth

    return as_report(run_synth(load_task("digits"), SynthConfig(deltas=(0.1, 0.3), epochs=2)))


def test_conflict_screen_shows_the_newest_synthetic_experiment(store: Store) -> None:
    finished_run(store)
    rep = synth_report()
    app = App(store, start_workers=False)

    async def body(pilot: Pilot[None]) -> None:
        screen = await open_conflict(pilot, app)
        await wait_for(pilot, lambda: text_of(screen, "#synth-view") == SYNTH_HINT)
        store.save_lab_report("synth", rep, key="a")  # stored by caat synth: shown next poll
        await wait_for(pilot, lambda: "μ ≤ bound" in text_of(screen, "#synth-view"))
        shown = text_of(screen, "#synth-view")
        assert "digits 1 vs 2, linf, Vanilla AT λ = 0.5, 2 epochs" in shown
        for row in rep["rows"]:
            assert f"{row['mu']:.3e}" in shown and f"{row['bound']:.3e}" in shown
        assert rep["findings"][0] in shown.replace("\n", " ")
        assert "‖g_c‖" not in shown  # 80 columns: μ's factors are left out
        store.save_lab_report("synth", {"rows": "not rows"}, key="b")  # newer, and broken
        await wait_for(pilot, lambda: "cannot be shown" in text_of(screen, "#synth-view"))

    run_app(app, body, size=(80, 24))


@pytest.mark.slow
def test_s_starts_caat_synth_and_its_report_arrives(store: Store) -> None:
    """`s` runs the real `caat synth` in its own process; its stored report is drawn."""
    finished_run(store)
    app = App(store)

    async def body(pilot: Pilot[None]) -> None:
        screen = await open_conflict(pilot, app)
        await pilot.press("s")
        await wait_for(pilot, lambda: any("caat synth started" in s for s in app.shown))
        assert "computing" in text_of(screen, "#synth-view")
        await pilot.press("s")  # one at a time
        await wait_for(pilot, lambda: any("already running" in s for s in app.shown))
        await wait_for(pilot, lambda: "μ ≤ bound" in text_of(screen, "#synth-view"), timeout=120)
        deltas = [row["delta"] for row in store_synth(store)["rows"]]
        assert deltas == [0.05, 0.1, 0.15, 0.2, 0.25, 0.3]  # the paper's grid

    run_app(app, body)


def test_conflict_screen_does_not_import_torch() -> None:
    code = "import sys, caat_screens.conflict; sys.exit('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_b_opens_the_budget_view_of_this_runs_group(store: Store) -> None:
    """Runs that differ only in ε and method share a group; another model does not."""
    ids = [
        create_run(store, build_config({"name": f"v{e}", "eps": e / 255, "epochs": 1}))
        for e in (2, 8)
    ]
    caat = {"name": "c", "method": "caat", "eps": 4 / 255, "epochs": 1}
    ids.append(create_run(store, build_config(caat)))
    create_run(store, build_config({"name": "other", "model": "linear", "eps": 4 / 255}))
    assert Workbench(store, gpus=[]).budget_mates(ids[1]) == ids
    for run_id in ids:
        store.update_run(run_id, status="finished")
    app = App(store, start_workers=False)

    async def body(pilot: Pilot[None]) -> None:
        await wait_for(pilot, lambda: app.screen.query(DataTable).first().row_count == 4)
        assert app.bench is not None
        app.push_screen(ConflictScreen(app.bench, ids[0], poll=0.1))
        await wait_for(pilot, lambda: isinstance(app.screen, ConflictScreen))
        await pilot.press("b")
        await wait_for(pilot, lambda: isinstance(app.screen, BudgetScreen))
        assert app.screen.run_ids == ids  # type: ignore[attr-defined]

    run_app(app, body)
