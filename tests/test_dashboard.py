"""The dashboard, headless (App.run_test and the Pilot), over real stores and real workers."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from helpers import run_app, wait_for
from textual.pilot import Pilot
from textual.widgets import Button, DataTable, Input, Static

from caat_app.config import build_config
from caat_app.runs.manage import create_run
from caat_screens.app import CaatApp
from caat_screens.launch import LaunchScreen
from caat_screens.monitor import MonitorScreen
from caat_screens.runs import RunsScreen
from caat_storage import RunStatus, Store

T0 = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def fill(store: Store, specs: list[dict[str, Any]]) -> list[int]:
    """Finished runs with fixed times and metrics (deterministic for snapshots)."""
    ids = []
    for i, spec in enumerate(specs):
        cfg = build_config({k: v for k, v in spec.items() if k not in {"sa", "aa", "status"}})
        run_id = create_run(store, cfg)
        start = T0 + timedelta(minutes=10 * i)
        store.update_run(
            run_id,
            status=spec.get("status", "finished"),
            started_at=start,
            finished_at=start + timedelta(minutes=3, seconds=7),
            heartbeat_at=start + timedelta(minutes=3, seconds=7),
            epochs_done=cfg.epochs,
            steps_done=9 * cfg.epochs,
            best_val_clean=spec.get("sa"),
            best_val_adv=spec.get("aa"),
            best_test_clean=spec["sa"] - 0.01 if "sa" in spec else None,
            best_test_adv=spec["aa"] - 0.02 if "aa" in spec else None,
            last_phi=0.1 * i - 0.2,
            last_mu=0.5 + i,
        )
        ids.append(run_id)
    return ids


SPECS = [
    {"name": "vanilla-half", "method": "vanilla", "lam": 0.5, "epochs": 30, "sa": 0.97, "aa": 0.37},
    {"name": "caat-0.8", "method": "caat", "gamma": 0.8, "epochs": 30, "sa": 0.985, "aa": 0.33},
    {
        "name": "[red]markup?[/red]",
        "method": "caat",
        "gamma": 0.9,
        "epochs": 10,
        "sa": 0.95,
        "aa": 0.2,
        "status": "failed",
    },
    {
        "name": "linear-probe",
        "method": "vanilla",
        "lam": 1.0,
        "model": "linear",
        "epochs": 5,
        "sa": 0.9,
        "aa": 0.41,
        "status": "cancelled",
    },
]


@pytest.fixture
def store(tmp_path: Path) -> Store:
    with Store.open(f"sqlite:///{tmp_path / 'caat.db'}") as opened:
        yield opened
        for run in opened.list_runs():  # a failed test must not leave a worker training
            if run.pid and run.status == "running":
                with contextlib.suppress(ProcessLookupError):
                    os.kill(run.pid, signal.SIGKILL)


def table_names(app: CaatApp) -> list[str]:
    table = app.screen.query_one(DataTable)
    return [str(table.get_row_at(i)[0]) for i in range(table.row_count)]


def test_runs_table_filters_sorts_and_shows_names_as_text(store: Store) -> None:
    fill(store, SPECS)
    app = CaatApp(store, poll_interval=0.2, gpus=[])

    async def body(pilot: Pilot[None]) -> None:
        screen = app.screen
        assert isinstance(screen, RunsScreen)
        await wait_for(pilot, lambda: len(table_names(app)) == 4)
        assert table_names(app) == [
            "linear-probe",
            "[red]markup?[/red]",
            "caat-0.8",
            "vanilla-half",
        ]  # newest first, names as text
        await pilot.press("slash")
        await pilot.press(*"caat")
        await wait_for(pilot, lambda: len(table_names(app)) == 2)
        assert set(table_names(app)) == {"caat-0.8", "[red]markup?[/red]"}
        await pilot.press("escape")  # clears the filter
        await wait_for(pilot, lambda: len(table_names(app)) == 4)
        await pilot.press("s")  # sort by the first column: name
        await wait_for(pilot, lambda: table_names(app)[0] == "vanilla-half")
        await pilot.press("S")  # reversed
        await wait_for(pilot, lambda: table_names(app)[0] == "[red]markup?[/red]")
        info = str(screen.query_one("#runs-info", Static).render())
        assert "of 4 runs" in info and "sorted by name" in info

    run_app(app, body)


def test_selection_survives_refresh(store: Store) -> None:
    fill(store, SPECS)
    app = CaatApp(store, poll_interval=0.1, gpus=[])

    async def body(pilot: Pilot[None]) -> None:
        await wait_for(pilot, lambda: len(table_names(app)) == 4)
        await pilot.press("down", "down")
        screen = app.screen
        assert isinstance(screen, RunsScreen)
        chosen = screen.selected_id()
        fill(store, [{"name": "newcomer", "epochs": 1, "sa": 0.5, "aa": 0.1}])
        await wait_for(pilot, lambda: len(table_names(app)) == 5)
        assert screen.selected_id() == chosen  # the same run, though a row came in above

    run_app(app, body)


def test_form_rejects_bad_input_and_writes_nothing(store: Store) -> None:
    app = CaatApp(store, poll_interval=0.2, gpus=[])

    async def body(pilot: Pilot[None]) -> None:
        await pilot.press("n")
        await wait_for(pilot, lambda: isinstance(app.screen, LaunchScreen))
        form = app.screen
        gamma = form.query_one("#f-gamma", Input)
        gamma.value = "1.5"
        eps = form.query_one("#f-eps", Input)
        eps.value = "8/zero"
        await pilot.pause()
        assert "less than or equal to 1" in str(form.query_one("#err-gamma", Static).render())
        assert "8/255" in str(form.query_one("#err-eps", Static).render())
        assert form.query_one("#launch", Button).disabled
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert isinstance(app.screen, LaunchScreen)
        assert store.list_runs() == []
        gamma.value = "0.7"
        eps.value = "8/255"
        await pilot.pause()
        preview = str(form.query_one("#preview", Static).render())
        assert "--gamma 0.7" in preview and "--eps 8/255" in preview
        assert not form.query_one("#launch", Button).disabled
        method = form.query_one("#f-method")
        method.value = "vanilla"  # type: ignore[attr-defined]
        await pilot.pause()
        assert not form.query_one("#row-gamma").display and form.query_one("#row-lam").display

    run_app(app, body)


def test_form_presets_and_data_set_budgets(store: Store) -> None:
    app = CaatApp(store, poll_interval=0.2, gpus=[])

    async def body(pilot: Pilot[None]) -> None:
        await pilot.press("n")
        await wait_for(pilot, lambda: isinstance(app.screen, LaunchScreen))
        form = app.screen
        assert isinstance(form, LaunchScreen)
        assert form.values()["device"] == "cpu"  # no GPU here: the CPU by default
        form.query_one("#f-dataset").value = "cifar10"  # type: ignore[attr-defined]
        await pilot.pause()
        assert build_config(form.values()).eps == pytest.approx(8 / 255)
        form.query_one("#f-preset").value = "paper-cifar100-r34"  # type: ignore[attr-defined]
        await pilot.pause()
        cfg = build_config(form.values())
        assert (cfg.dataset, cfg.model, cfg.epochs, cfg.lr) == ("cifar100", "resnet34", 200, 0.4)
        form.query_one("#f-epochs", Input).value = "3"  # a preset is a start, not a lock
        await pilot.pause()
        assert build_config(form.values()).epochs == 3

    run_app(app, body)


def test_relaunch_fills_the_form_with_the_runs_config(store: Store) -> None:
    fill(
        store,
        [
            {
                "name": "original",
                "method": "vanilla",
                "lam": 0.3,
                "eps": "0.2",
                "epochs": 7,
                "sa": 0.9,
                "aa": 0.2,
            }
        ],
    )
    app = CaatApp(store, poll_interval=0.2, gpus=[])

    async def body(pilot: Pilot[None]) -> None:
        await wait_for(pilot, lambda: len(table_names(app)) == 1)
        await pilot.press("l")
        await wait_for(pilot, lambda: isinstance(app.screen, LaunchScreen))
        cfg = build_config(app.screen.values())  # type: ignore[attr-defined]
        assert (cfg.method, cfg.lam, cfg.eps, cfg.epochs) == ("vanilla", 0.3, 0.2, 7)
        assert cfg.name is None  # a re-launch gets a name of its own

    run_app(app, body)


def test_rename_tag_note_and_delete_from_the_table(store: Store) -> None:
    (run_id,) = fill(store, [{"name": "before", "epochs": 1, "sa": 0.9, "aa": 0.2}])
    run_dir = Path(store.get_run(run_id).run_dir)
    run_dir.mkdir(parents=True)
    app = CaatApp(store, poll_interval=0.1, gpus=[])

    async def body(pilot: Pilot[None]) -> None:
        await wait_for(pilot, lambda: table_names(app) == ["before"])
        await pilot.press("r")
        prompt = app.screen.query_one(Input)
        prompt.value = "[b]after[/b]"
        await pilot.press("enter")
        await wait_for(pilot, lambda: table_names(app) == ["[b]after[/b]"])
        await pilot.press("t")
        app.screen.query_one(Input).value = "baseline, digits"
        await pilot.press("enter")
        await wait_for(pilot, lambda: store.get_run(run_id).tags == "baseline,digits")
        await pilot.press("o")
        await pilot.pause()
        app.screen.query_one("TextArea").text = "a note\nwith two lines"  # type: ignore[attr-defined]
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: store.get_run(run_id).notes == "a note\nwith two lines")
        await pilot.press("slash", *"baseline", "enter")
        await wait_for(pilot, lambda: app.screen.total == 1)  # type: ignore[attr-defined]
        await pilot.press("d")
        await pilot.press("n")  # the confirmation says no: nothing happens
        await pilot.pause(0.3)
        assert store.get_run(run_id) is not None
        await pilot.press("d")
        await pilot.click("#yes")
        await wait_for(pilot, lambda: store.get_run(run_id) is None)
        await wait_for(pilot, lambda: table_names(app) == [])
        assert not run_dir.exists()

    run_app(app, body)


def test_sweep_form_queues_a_grid_once(store: Store) -> None:
    app = CaatApp(store, poll_interval=0.2, gpus=[], start_workers=False)

    async def body(pilot: Pilot[None]) -> None:
        for attempt in range(2):
            await pilot.press("n")
            await wait_for(pilot, lambda: isinstance(app.screen, LaunchScreen))
            form = app.screen
            form.query_one("#f-sweep", Input).value = "grid"
            form.query_one("#f-method").value = "vanilla,caat"  # type: ignore[attr-defined]
            await pilot.pause()
            form.query_one("#f-lam", Input).value = "0,1"
            form.query_one("#f-gamma", Input).value = "0.8,2"
            await pilot.pause()
            assert "less than or equal to 1" in str(form.query_one("#err-gamma", Static).render())
            form.query_one("#f-gamma", Input).value = "0.8,0.9"
            form.query_one("#f-seed", Input).value = "0,1"
            await pilot.pause()
            assert "8 runs" in str(form.query_one("#preview", Static).render())
            await pilot.press("ctrl+s")
            await wait_for(pilot, lambda: isinstance(app.screen, RunsScreen))
            await wait_for(pilot, lambda: len(store.sweep_runs("grid")) == 8)
            if attempt == 0:
                assert app.screen.query_one("#filter", Input).value == "grid"
        runs = store.sweep_runs("grid")
        assert len(runs) == 8  # the second submission queued nothing new
        assert sorted({(r.method, r.param) for r in runs}) == [
            ("caat", 0.8),
            ("caat", 0.9),
            ("vanilla", 0.0),
            ("vanilla", 1.0),
        ]

    run_app(app, body)


@pytest.mark.slow
def test_launch_watch_and_cancel_a_real_run(store: Store) -> None:
    app = CaatApp(store, poll_interval=0.3, gpus=[])

    async def body(pilot: Pilot[None]) -> None:
        await pilot.press("n")
        await wait_for(pilot, lambda: isinstance(app.screen, LaunchScreen))
        app.screen.query_one("#f-epochs", Input).value = "200"
        app.screen.query_one("#f-name", Input).value = "from the form"
        await pilot.pause()
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: isinstance(app.screen, MonitorScreen))
        monitor = app.screen
        assert isinstance(monitor, MonitorScreen)
        await wait_for(pilot, lambda: len(monitor.columns["step"]) >= 20, timeout=90)
        assert monitor.run is not None and monitor.run.status == "running"
        assert monitor.gamma == pytest.approx(0.8)
        for chart in ("loss", "phi", "mu", "acc"):
            assert monitor.chart(chart).last_error is None
        await pilot.press("x")
        assert monitor.axis == "epoch"
        await pilot.press("c")
        await pilot.press("y")
        await wait_for(
            pilot, lambda: monitor.run is not None and monitor.run.status == "cancelled", timeout=60
        )
        run = store.get_run(monitor.run_id)
        assert run is not None and run.name == "from the form"
        assert (Path(run.run_dir) / "last.pt").exists()

    run_app(app, body)


@pytest.mark.slow
def test_workers_outlive_the_dashboard_and_a_killed_one_shows_as_failed(store: Store) -> None:
    from caat_app.runs.manage import pid_alive

    run_id = create_run(store, build_config({"epochs": 200}))

    async def first(pilot: Pilot[None]) -> None:  # the dashboard starts the queued run
        await wait_for(pilot, lambda: (store.get_run(run_id).steps_done or 0) > 0, timeout=90)

    run_app(CaatApp(store, poll_interval=0.3, gpus=[]), first)
    run = store.get_run(run_id)
    assert run.status == "running" and pid_alive(run.pid)  # quitting left it training
    steps = run.steps_done
    app = CaatApp(store, poll_interval=0.3, gpus=[])

    async def second(pilot: Pilot[None]) -> None:  # opened again: it is there, live
        await wait_for(
            pilot, lambda: "running" in str(app.screen.query_one(DataTable).get_row_at(0))
        )
        await wait_for(pilot, lambda: store.get_run(run_id).steps_done > steps)
        os.kill(run.pid, signal.SIGKILL)
        await wait_for(pilot, lambda: store.get_run(run_id).status == RunStatus.FAILED, timeout=30)
        assert "died" in (store.get_run(run_id).error or "")
        await wait_for(
            pilot, lambda: "failed" in str(app.screen.query_one(DataTable).get_row_at(0))
        )

    run_app(app, second)


def test_thousands_of_runs_come_a_page_at_a_time(store: Store) -> None:
    config = build_config({}).model_dump(mode="json")
    for i in range(250):
        run_id = store.create_run(
            name=f"run-{i:03d}",
            config=config,
            method="caat",
            param=0.8,
            dataset="digits",
            model="cnn",
            eps=0.3,
            epochs_total=1,
        )
        store.finish(run_id, RunStatus.FINISHED)
    app = CaatApp(store, poll_interval=0.2, gpus=[])

    def info() -> str:
        return str(app.screen.query_one("#runs-info", Static).render())

    async def body(pilot: Pilot[None]) -> None:
        await wait_for(pilot, lambda: "1–100 of 250" in info())
        assert len(table_names(app)) == 100 and table_names(app)[0] == "run-249"
        await pilot.press("right_square_bracket", "right_square_bracket", "right_square_bracket")
        await wait_for(pilot, lambda: "201–250 of 250" in info())
        assert table_names(app)[-1] == "run-000"
        await pilot.press("left_square_bracket")
        await wait_for(pilot, lambda: "101–200 of 250" in info())

    run_app(app, body)


def test_dashboard_never_imports_torch() -> None:
    code = (
        "import sys\n"
        "import caat_screens.app, caat_screens.runs, caat_screens.launch\n"
        "import caat_screens.monitor, caat_screens.modals\n"
        "import caat_app.cli\n"
        "print('torch' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"


@pytest.mark.parametrize("size", [(80, 24), (160, 48)], ids=["80x24", "160x48"])
def test_snapshot_runs_screen(snap_compare: Any, tmp_path: Path, size: tuple[int, int]) -> None:
    with Store.open(f"sqlite:///{tmp_path / 's.db'}") as snap_store:
        fill(snap_store, SPECS)
        app = CaatApp(snap_store, poll_interval=60, gpus=[])
        assert snap_compare(app, terminal_size=size, run_before=_settle)


@pytest.mark.parametrize("size", [(80, 24), (160, 48)], ids=["80x24", "160x48"])
def test_snapshot_launch_form(snap_compare: Any, tmp_path: Path, size: tuple[int, int]) -> None:
    with Store.open(f"sqlite:///{tmp_path / 's.db'}") as snap_store:
        app = CaatApp(snap_store, poll_interval=60, gpus=[])

        async def open_form(pilot: Pilot[None]) -> None:
            await _settle(pilot)
            await pilot.press("n")
            await pilot.pause()
            for field in app.screen.query(Input):  # a blinking cursor is caught on or off
                field.cursor_blink = False
            app.screen.query_one("#f-gamma", Input).value = "2"
            await pilot.pause()

        assert snap_compare(app, terminal_size=size, run_before=open_form)


async def _settle(pilot: Pilot[None]) -> None:
    await pilot.pause(0.3)
    await pilot.pause()


def _fill_metrics(store: Store, run_id: int, steps: int = 90, per_epoch: int = 9) -> None:
    import math

    rows = [
        {
            "step": s,
            "epoch": s // per_epoch + 1,
            "t": 0.05 * s,
            "lr": 0.2 * (1 - s / steps),
            "loss_c": 2.3 * math.exp(-s / 30) + 0.1,
            "loss_a": 2.6 - s / 100,
            "acc_c": min(0.99, s / 60),
            "acc_a": s / 300,
            "phi": math.sin(s / 9) * 0.5,
            "mu": 1 + math.cos(s / 7) * 0.5,
            "norm_c": 1.0,
            "norm_a": 1.2,
            "coef_c": 1.0,
            "projected": float(math.sin(s / 9) * 0.5 <= 0.8),
            "skipped": False,
        }
        for s in range(steps)
    ]
    epochs = [
        {
            "epoch": e,
            "train_clean": 0.5 + e / 25,
            "train_adv": e / 40,
            "val_clean": 0.55 + e / 25,
            "val_adv": e / 35,
            "test_clean": 0.5 + e / 26,
            "test_adv": e / 38,
            "images_per_sec": 3800.0,
            "epoch_seconds": 0.45,
            "elapsed": 0.45 * e,
            "lr": 0.1,
        }
        for e in range(1, steps // per_epoch + 1)
    ]
    store.append_metrics(run_id, steps=rows, epochs=epochs)


@pytest.mark.parametrize("size", [(80, 24), (160, 48)], ids=["80x24", "160x48"])
def test_snapshot_monitor(snap_compare: Any, tmp_path: Path, size: tuple[int, int]) -> None:
    with Store.open(f"sqlite:///{tmp_path / 's.db'}") as snap_store:
        (run_id,) = fill(snap_store, [{"name": "watched", "epochs": 20, "sa": 0.9, "aa": 0.3}])
        _fill_metrics(snap_store, run_id)
        app = CaatApp(snap_store, poll_interval=60, gpus=[])

        async def open_monitor(pilot: Pilot[None]) -> None:
            await _settle(pilot)
            await pilot.press("enter")
            await _settle(pilot)

        assert snap_compare(app, terminal_size=size, run_before=open_monitor)


@pytest.mark.parametrize(("size", "log_rows"), [((80, 24), 3), ((120, 40), 6)])
def test_monitor_gives_a_short_terminal_to_the_charts(
    store: Store, size: tuple[int, int], log_rows: int
) -> None:
    (run_id,) = fill(store, [{"name": "watched", "epochs": 20, "sa": 0.9, "aa": 0.3}])
    _fill_metrics(store, run_id)
    app = CaatApp(store, poll_interval=0.1, gpus=[])

    async def body(pilot: Pilot[None]) -> None:
        from caat_screens.charts import MetricChart

        app.open_monitor(run_id)
        await wait_for(pilot, lambda: isinstance(app.screen, MonitorScreen))
        monitor = app.screen
        await wait_for(pilot, lambda: len(monitor.columns["step"]) > 0)  # type: ignore[attr-defined]
        await pilot.pause()
        assert monitor.query_one("#log").outer_size.height == log_rows
        chart = monitor.query_one("#chart-loss", MetricChart)
        lines = str(chart.render()).splitlines()
        canvas = [line for line in lines if "┤" in line or line.rstrip().endswith("│")]
        assert len(canvas) >= 4  # rows that can hold data
        labelled = any(line.startswith("loss ") for line in lines)  # the axis-label line
        assert labelled == (chart.size.height >= 12)

    run_app(app, body, size=size)


def test_monitor_polls_only_new_rows(store: Store) -> None:
    (run_id,) = fill(store, [{"name": "watched", "epochs": 20, "sa": 0.9, "aa": 0.3}])
    _fill_metrics(store, run_id, steps=45)
    app = CaatApp(store, poll_interval=0.1, gpus=[])

    async def body(pilot: Pilot[None]) -> None:
        app.open_monitor(run_id)
        await wait_for(pilot, lambda: isinstance(app.screen, MonitorScreen))
        monitor = app.screen
        assert isinstance(monitor, MonitorScreen)
        await wait_for(pilot, lambda: len(monitor.columns["step"]) == 45)
        more = [dict(step=s, epoch=6, t=3.0, lr=0.1) for s in range(45, 50)]
        store.append_metrics(run_id, steps=more)
        await wait_for(pilot, lambda: len(monitor.columns["step"]) == 50)
        assert monitor.columns["step"] == [float(s) for s in range(50)]  # no row twice
        for key in ("x", "m", "g", "x", "x"):
            await pilot.press(key)
        assert (monitor.axis, monitor.smooth, monitor.log_mu) == ("step", True, True)
        for chart in ("loss", "phi", "mu", "acc"):
            assert monitor.chart(chart).last_error is None

    run_app(app, body)


def test_compare_marked_runs(store: Store) -> None:
    ids = fill(store, SPECS[:3])
    for run_id in ids:
        _fill_metrics(store, run_id, steps=18)
    app = CaatApp(store, poll_interval=0.2, gpus=[])

    async def body(pilot: Pilot[None]) -> None:
        from caat_screens.compare import CompareScreen

        await wait_for(pilot, lambda: len(table_names(app)) == 3)
        await pilot.press("C")  # nothing marked: a warning, no screen
        await pilot.pause()
        assert isinstance(app.screen, RunsScreen)
        await pilot.press("space", "space")
        assert app.screen.marked == {ids[2], ids[1]}  # type: ignore[attr-defined]
        await pilot.press("C")
        await wait_for(pilot, lambda: isinstance(app.screen, CompareScreen))
        screen = app.screen
        assert isinstance(screen, CompareScreen)
        await wait_for(pilot, lambda: screen.data is not None)
        config = screen.query_one("#compare-config", DataTable)
        shown = {str(config.get_row_at(i)[0]) for i in range(config.row_count)}
        assert {"gamma", "name", "epochs"} <= shown and "lr" not in shown  # equal ones hidden
        await pilot.press("e")
        assert config.row_count > len(shown)
        await pilot.press("m")
        assert screen.metric == "mu"
        assert screen.query_one("#compare-chart").last_error is None  # type: ignore[attr-defined]

    run_app(app, body)


@pytest.mark.parametrize("height", [10, 11, 14, 24])
def test_front_chart_keeps_every_point_clear_of_the_legend(height: int) -> None:
    # plotext draws the legend over the top-left rows; the best-AA point of the
    # lowest-SA run sits exactly there unless the y range leaves room.
    from textual.app import App, ComposeResult

    from caat_screens.front import FrontChart

    families = ["Vanilla AT", "CA-AT", "Vanilla AT + TRADES"]
    report = {
        "families": families,
        "points": [
            {"family": families[0], "sa": 0.975, "aa": 0.230, "on_front": True},
            {"family": families[1], "sa": 0.980, "aa": 0.175, "on_front": True},
            {"family": families[2], "sa": 0.990, "aa": 0.120, "on_front": True},
        ],
    }

    class One(App[None]):
        def compose(self) -> ComposeResult:
            yield FrontChart()

    app = One()

    async def body(pilot: Pilot[None]) -> None:
        chart = app.query_one(FrontChart)
        chart.show(report, ("SA (%)", "AA (%)"))
        await pilot.pause()
        lines = str(chart.render()).splitlines()
        legend = [line for line in lines if any(f"● {f}" in line for f in families)]
        assert len(legend) == len(families)
        shown = sum(line.count("●") for line in lines if line not in legend)
        assert shown == len(report["points"])

    run_app(app, body, size=(80, height))


def test_front_screen_shows_points_and_a_verdict(store: Store) -> None:
    fill(store, SPECS)
    app = CaatApp(store, poll_interval=0.2, gpus=[])

    async def body(pilot: Pilot[None]) -> None:
        from caat_screens.front import FrontScreen

        await wait_for(pilot, lambda: len(table_names(app)) == 4)
        await pilot.press("F")
        await wait_for(pilot, lambda: isinstance(app.screen, FrontScreen))
        points = app.screen.query_one("#front-points", DataTable)
        await wait_for(pilot, lambda: points.row_count == 2)  # the two finished runs
        verdict = str(app.screen.query_one("#front-verdict", Static).render())
        assert "single seed" in verdict
        await pilot.press("v")
        await wait_for(
            pilot,
            lambda: "val split" in str(app.screen.query_one("#front-verdict", Static).render()),
        )

    run_app(app, body)


def test_front_screen_defaults_to_stored_autoattack_and_the_table_names_its_pgd(
    store: Store,
) -> None:
    from caat_app.evaluation.plan import settings_text

    vanilla, caat = fill(store, SPECS[:2])  # digits: trained at ε = 0.3
    store.add_evals(
        vanilla,
        [
            {
                "checkpoint": "best",
                "attack": attack,
                "norm": "linf",
                "eps": eps,
                "samples": 500,
                "accuracy": accuracy,
                "seconds": 1.0,
                "settings": settings_text(attack, eps),
            }
            for attack, eps, accuracy in (("clean", 0.0, 0.96), ("autoattack", 0.3, 0.21))
        ],
    )
    app = CaatApp(store, poll_interval=0.2, gpus=[])

    async def body(pilot: Pilot[None]) -> None:
        from caat_screens.front import FrontChart, FrontScreen

        await wait_for(pilot, lambda: len(table_names(app)) == 2)
        runs = app.screen.query_one(DataTable)
        headers = [str(column.label) for column in runs.columns.values()]
        assert "PGD" in headers and "AA" not in headers  # the per-epoch number is PGD's
        await pilot.press("F")
        await wait_for(pilot, lambda: isinstance(app.screen, FrontScreen))
        points = app.screen.query_one("#front-points", DataTable)
        await wait_for(pilot, lambda: points.row_count == 2)
        rows = {str(points.get_row_at(i)[1]): points.get_row_at(i) for i in range(2)}
        assert set(rows) == {"λ=0.5 [AutoAttack]", "γ=0.8 [PGD]"}
        assert (str(rows["λ=0.5 [AutoAttack]"][2]), str(rows["λ=0.5 [AutoAttack]"][3])) == (
            "96.0",
            "21.0",
        )
        assert str(rows["γ=0.8 [PGD]"][3]) == "31.0"  # best test PGD of the unevaluated run
        verdict = str(app.screen.query_one("#front-verdict", Static).render())
        assert "test split, AA: mixed sources" in verdict
        assert f"per-epoch PGD (training-time check) for run {caat}" in verdict
        labels = app.screen.query_one(FrontChart).labels
        assert labels[1].startswith("AA: mixed sources")

    run_app(app, body)
