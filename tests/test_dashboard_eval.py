"""The dashboard's robustness evaluation: the eval screen, its form, the app's launching and
housekeeping of eval workers, and the front on an evaluated axis (headless, real stores)."""

from __future__ import annotations

import contextlib
import json
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
from textual.widgets import Button, DataTable, Input, OptionList, ProgressBar, SelectionList, Static

import caat_screens.app
from caat_app.config import build_config
from caat_app.evaluation.plan import DEFAULT_ATTACKS, eval_spec, plan, settings_text
from caat_app.runs.manage import create_run
from caat_screens.app import CaatApp
from caat_screens.eval_form import EvalForm
from caat_screens.evals import EvalScreen
from caat_screens.modals import ConfirmScreen
from caat_storage import Store

T0 = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    with Store.open(f"sqlite:///{tmp_path / 'caat.db'}") as opened:
        yield opened
        for job in opened.eval_jobs(active=True):  # a failed test must not leave a worker
            if job.pid and job.pid != os.getpid():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(job.pid, signal.SIGKILL)


def finished_run(
    store: Store, name: str = "robust", sa: float = 0.9, aa: float = 0.3, **options: Any
) -> int:
    """A finished run with fixed times and best-epoch accuracies."""
    cfg = build_config({"name": name, "epochs": 2, **options})
    run_id = create_run(store, cfg)
    store.update_run(
        run_id,
        status="finished",
        started_at=T0,
        finished_at=T0 + timedelta(minutes=3),
        heartbeat_at=T0 + timedelta(minutes=3),
        epochs_done=2,
        best_val_clean=sa,
        best_val_adv=aa,
        best_test_clean=sa,
        best_test_adv=aa,
    )
    return run_id


def add_results(
    store: Store,
    run_id: int,
    accuracies: dict[tuple[str, float], float],
    *,
    samples: int = 500,
    checkpoint: str = "best",
    norm: str = "linf",
) -> None:
    """EvalResult rows as a worker stores them; (attack, ε) → accuracy, clean at ε 0."""
    store.add_evals(
        run_id,
        [
            {
                "checkpoint": checkpoint,
                "attack": attack,
                "norm": norm,
                "eps": eps,
                "samples": samples,
                "accuracy": acc,
                "seconds": 1.5,
                "settings": settings_text(attack, eps),
            }
            for (attack, eps), acc in accuracies.items()
        ],
    )


def text_of(app: App, selector: str) -> str:
    return str(app.screen.query_one(selector, Static).render())


def grid_rows(table: DataTable[Any]) -> list[list[str]]:
    return [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]


class App(CaatApp):
    """The dashboard, keeping every notification it showed."""

    CSS_PATH = str(Path(caat_screens.app.__file__).with_name("caat.tcss"))

    def __init__(self, store: Store, **options: Any) -> None:
        super().__init__(store, poll_interval=0.1, gpus=[], **options)
        self.shown: list[str] = []

    def notify(self, message: str, **options: Any) -> None:  # type: ignore[override]
        self.shown.append(message)
        super().notify(message, **options)


def notes(app: App) -> list[str]:
    return list(app.shown)


async def open_eval(pilot: Pilot[None], app: App, run_id: int) -> EvalScreen:
    app.open_evaluation(run_id)
    await wait_for(pilot, lambda: isinstance(app.screen, EvalScreen))
    screen = app.screen
    assert isinstance(screen, EvalScreen)
    await wait_for(pilot, lambda: screen.key is not None)
    return screen


# --------------------------------------------------------------------------- the eval screen


def test_eval_screen_shows_the_paper_table_masking_flags_and_progress(store: Store) -> None:
    run_id = finished_run(store, bn="batchstats")
    add_results(
        store,
        run_id,
        {
            ("clean", 0.0): 0.95,
            ("fgsm", 0.3): 0.60,
            ("pgd", 0.3): 0.70,  # PGD above FGSM: the iterative check flags it
            ("autoattack-fast", 0.3): 0.40,
        },
    )
    asked = eval_spec(attacks="fgsm,pgd,autoattack-fast", budgets="0.3", n=500)
    job = store.create_eval_job(run_id, asked.to_json(), total=5)
    store.start_eval_job(job, os.getpid(), total=5)
    store.eval_progress(job, done=3, current="pgd at ε=0.3")
    app = App(store, start_workers=False)

    async def body(pilot: Pilot[None]) -> None:
        await wait_for(pilot, lambda: app.screen.query(DataTable).first().row_count == 1)
        await pilot.press("e")  # from the runs table, on the selected run
        await wait_for(pilot, lambda: isinstance(app.screen, EvalScreen))
        screen = app.screen
        await wait_for(pilot, lambda: bool(screen.query(".eval-table")))
        grid = screen.query_one("#eval-table-0", DataTable)
        assert [str(c.label) for c in grid.columns.values()] == [
            "ε",
            "SA",
            "fgsm",
            "pgd",
            "autoattack-fast",
        ]
        assert grid_rows(grid) == [["0.3", "95.0", "60.0", "70.0", "40.0"]]
        caption = str(screen.query_one(".eval-caption", Static).render())
        assert "500 test images" in caption and "checkpoint best" in caption and "L∞" in caption
        flagged = [str(w.render()) for w in screen.query(".eval-check.flag")]
        assert any("FLAG iterative ≤ single-step" in line for line in flagged)
        assert any("FLAG PGD vs AutoAttack" in line for line in flagged)
        assert "flagged" in flagged[0]  # the summary line heads the report, flagged too
        checks = [str(w.render()) for w in screen.query(".eval-check")]
        assert any("ok   attacks ≤ clean" in line for line in checks)
        assert any("batchstats" in line for line in checks)  # the batch-dependence note
        bar = screen.query_one("#eval-progress", ProgressBar)
        assert (bar.total, bar.progress) == (5, 3)
        job_text = text_of(app, "#eval-job-text")
        assert "running" in job_text and "3/5" in job_text and "pgd at ε=0.3" in job_text
        store.eval_progress(job, done=4, current="pgd-100 at ε=0.3")
        await wait_for(pilot, lambda: bar.progress == 4)
        assert "pgd-100 at ε=0.3" in text_of(app, "#eval-job-text")
        before = screen.query_one("#eval-table-0")
        store.eval_progress(job, done=4, current="pgd-100 at ε=0.3")  # a heartbeat only
        await pilot.pause(0.4)
        assert screen.query_one("#eval-table-0") is before  # nothing changed: no redraw
        add_results(store, run_id, {("pgd", 0.3): 0.35})  # a new result: the table follows
        # The tables are rebuilt: for a moment there is none, so wait for one showing 35.0.
        await wait_for(
            pilot,
            lambda: any("35.0" in str(grid_rows(t)) for t in screen.query("#eval-table-0")),
        )
        store.finish_eval_job(job, "finished")  # type: ignore[arg-type]
        await wait_for(pilot, lambda: "finished" in text_of(app, "#eval-job-text"))

    run_app(app, body)


def test_eval_screen_empty_state_literal_name_and_failed_job(store: Store) -> None:
    run_id = finished_run(store, name="[bold]x[/]")
    app = App(store, start_workers=False)

    async def body(pilot: Pilot[None]) -> None:
        screen = await open_eval(pilot, app, run_id)
        await wait_for(pilot, lambda: bool(screen.query("#eval-empty")))
        assert "[bold]x[/]" in text_of(app, "#eval-head")  # shown as written, not as markup
        assert "press n" in text_of(app, "#eval-empty")
        assert not screen.query_one("#eval-job").display  # no job: no progress shown
        job = store.create_eval_job(run_id, {"attacks": ["fgsm"]}, total=2)
        store.finish_eval_job(job, "failed", error="Traceback…\nRuntimeError: [red]boom[/]")  # type: ignore[arg-type]
        await wait_for(pilot, lambda: "failed" in text_of(app, "#eval-job-text"))
        shown = text_of(app, "#eval-job-text")
        assert "RuntimeError: [red]boom[/]" in shown and f"eval-{job}.log" in shown
        add_results(store, run_id, {("clean", 0.0): 0.9})  # it failed before any attack
        await wait_for(pilot, lambda: bool(screen.query(".eval-check")))
        lines = [str(w.render()) for w in screen.query(".eval-check")]
        assert lines == ["clean accuracy 90.0%; no attack measured yet"]
        assert not screen.query(".eval-table")  # no empty grid

    run_app(app, body)


def test_eval_screen_is_reached_from_the_monitor(store: Store) -> None:
    run_id = finished_run(store)
    app = App(store, start_workers=False)

    async def body(pilot: Pilot[None]) -> None:
        from caat_screens.monitor import MonitorScreen

        app.open_monitor(run_id)
        await wait_for(pilot, lambda: isinstance(app.screen, MonitorScreen))
        await pilot.press("e")
        await wait_for(pilot, lambda: isinstance(app.screen, EvalScreen))
        assert app.screen.run_id == run_id  # type: ignore[attr-defined]
        commands = [c.title for c in app.get_system_commands(app.screen)]
        assert "New evaluation" in commands and "Cancel evaluation" in commands
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, MonitorScreen))

    run_app(app, body)


# --------------------------------------------------------------------------- the form


def test_form_checks_as_one_types_and_starts_the_job(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    import caat_app.runs.launcher

    run_id = finished_run(store, norm="l2", eps="0.5")
    run_dir = Path(store.get_run(run_id).run_dir)  # type: ignore[union-attr]
    run_dir.mkdir(parents=True)
    (run_dir / "last.pt").write_bytes(b"")
    launched: list[int] = []

    def fake_launch(db_url: str, job_id: int, where: Path, **_: Any) -> FakeProc:
        launched.append(job_id)
        return FakeProc(4_100_000 + job_id)  # never runs: the job stays queued

    monkeypatch.setattr(caat_app.runs.launcher, "launch_eval_worker", fake_launch)
    app = App(store)

    async def body(pilot: Pilot[None]) -> None:
        await open_eval(pilot, app, run_id)
        await pilot.press("n")
        await wait_for(pilot, lambda: isinstance(app.screen, EvalForm))
        form = app.screen
        attacks = form.query_one("#e-attacks", SelectionList)
        eps = form.query_one("#e-eps", Input)
        start = form.query_one("#e-start", Button)
        assert tuple(attacks.selected) == DEFAULT_ATTACKS
        assert eps.value == "0.5"  # the run's own budget and norm
        assert form.query_one("#e-norm").value == "l2"  # type: ignore[attr-defined]
        assert form.query_one("#e-n", Input).value == "1000"
        assert not start.disabled
        eps.value = "8/zero"
        await pilot.pause()
        assert start.disabled and text_of(app, "#e-error").startswith("--eps:")
        await pilot.press("ctrl+s")  # refused: nothing recorded, the form stays
        await pilot.pause()
        assert isinstance(app.screen, EvalForm) and store.eval_jobs(run_id) == []
        eps.value = "0.25,0.5"
        form.query_one("#e-n", Input).value = "many"
        await pilot.pause()
        assert start.disabled and text_of(app, "#e-error").startswith("--n:")
        form.query_one("#e-n", Input).value = "200"
        attacks.deselect_all()
        await pilot.pause()
        assert start.disabled and "at least one attack" in text_of(app, "#e-error")
        attacks.select("pgd")
        attacks.select("autoattack")
        form.query_one("#e-checkpoint").value = "last"  # type: ignore[attr-defined]
        await pilot.pause()
        assert not start.disabled and "measurements" in text_of(app, "#e-error")
        await pilot.click("#e-force")
        await pilot.pause()
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: isinstance(app.screen, EvalScreen))
        await wait_for(pilot, lambda: len(store.eval_jobs(run_id)) == 1)
        (job,) = store.eval_jobs(run_id)
        want = eval_spec(
            attacks=["pgd", "autoattack"],
            budgets="0.25,0.5",
            norm="l2",
            n=200,
            checkpoint="last",
            force=True,
        )
        assert json.loads(job.spec) == want.to_json()
        # claimed by this host as it is recorded, so no agent takes it before its worker
        assert (job.status, job.total, job.pid) == ("running", len(plan(want)), None)
        assert launched == [job.id]
        await wait_for(pilot, lambda: any(f"evaluation {job.id}" in n for n in notes(app)))
        await wait_for(pilot, lambda: "starting on" in text_of(app, "#eval-job-text"))
        await pilot.press("c")  # a job not started: cancelled at once, after asking
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        await wait_for(pilot, lambda: store.get_eval_job(job.id).status == "cancelled")  # type: ignore[arg-type, union-attr]

    run_app(app, body)


def test_form_fits_80x24(store: Store) -> None:
    run_id = finished_run(store)
    app = App(store, start_workers=False)

    async def body(pilot: Pilot[None]) -> None:
        await open_eval(pilot, app, run_id)
        await pilot.press("n")
        await wait_for(pilot, lambda: isinstance(app.screen, EvalForm))
        await pilot.pause()
        screen_region = app.screen.region
        for selector in ("#e-attacks", "#e-eps", "#e-n", "#e-force", "#e-error", "#e-start"):
            region = app.screen.query_one(selector).region
            assert region.height >= 1 and screen_region.contains_region(region), selector
        assert app.screen.query_one("#e-attacks").region.height >= 4
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, EvalScreen))

    run_app(app, body, size=(80, 24))


# --------------------------------------------------------------------------- launching


class FakeProc:
    """A Popen that runs until told it exited."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        return self.returncode


def test_start_evaluation_launches_a_worker_and_waits_for_it(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    import caat_app.runs.launcher

    run_id = finished_run(store)
    run_dir = Path(store.get_run(run_id).run_dir)  # type: ignore[union-attr]
    run_dir.mkdir(parents=True)
    (run_dir / "best.pt").write_bytes(b"")
    calls: list[tuple[str, int, Path]] = []
    procs: list[FakeProc] = []

    def fake_launch(
        db_url: str, job_id: int, where: Path, *, env: dict[str, str] | None = None
    ) -> FakeProc:
        calls.append((db_url, job_id, where))
        procs.append(FakeProc(4_000_000 + job_id))
        return procs[-1]

    monkeypatch.setattr(caat_app.runs.launcher, "launch_eval_worker", fake_launch)
    app = App(store)
    spec = eval_spec(attacks="fgsm,pgd", budgets="0.3", n=100)

    async def body(pilot: Pilot[None]) -> None:
        app.start_evaluation(run_id, spec)
        await wait_for(pilot, lambda: len(calls) == 1)
        (job,) = store.eval_jobs(run_id)
        assert calls == [(store.url, job.id, run_dir)]
        assert json.loads(job.spec) == spec.to_json() and job.total == len(plan(spec))
        await wait_for(pilot, lambda: any(f"evaluation {job.id}" in n for n in notes(app)))
        assert app.eval_children == procs
        procs[0].returncode = 0  # the worker exits: housekeeping waits for it
        await wait_for(pilot, lambda: app.eval_children == [], timeout=5)
        # a run without the asked checkpoint is refused with one line, nothing recorded
        app.start_evaluation(run_id, eval_spec(attacks="fgsm", budgets="0.3", checkpoint="last"))
        await wait_for(pilot, lambda: any("no last checkpoint" in n for n in notes(app)))
        assert len(store.eval_jobs(run_id)) == 1 and len(calls) == 1

    run_app(app, body)


def test_a_launch_that_fails_ends_the_job_failed(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    import caat_app.runs.launcher

    run_id = finished_run(store)
    run_dir = Path(store.get_run(run_id).run_dir)  # type: ignore[union-attr]
    run_dir.mkdir(parents=True)
    (run_dir / "best.pt").write_bytes(b"")

    def broken(*_: Any, **__: Any) -> Any:
        raise OSError("no python\nhere")

    monkeypatch.setattr(caat_app.runs.launcher, "launch_eval_worker", broken)
    app = App(store)

    async def body(pilot: Pilot[None]) -> None:
        app.start_evaluation(run_id, eval_spec(attacks="fgsm", budgets="0.3"))
        await wait_for(pilot, lambda: any("could not start" in n for n in notes(app)))
        assert all("\n" not in n for n in notes(app))
        (job,) = store.eval_jobs(run_id)
        assert job.status == "failed" and "could not start" in (job.error or "")

    run_app(app, body)


def test_housekeeping_reaps_a_dead_eval_worker_and_cancel_signals_a_live_one(
    store: Store,
) -> None:
    run_id = finished_run(store)
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead_pid = int(gone.stdout)
    dead = store.create_eval_job(run_id, {"attacks": ["fgsm"]}, total=2)
    store.start_eval_job(dead, dead_pid, total=2)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    live = store.create_eval_job(run_id, {"attacks": ["pgd"]}, total=3)
    store.start_eval_job(live, sleeper.pid, total=3)
    app = App(store)

    async def body(pilot: Pilot[None]) -> None:
        await wait_for(
            pilot, lambda: any(f"evaluation {dead}: its worker died" in n for n in notes(app))
        )
        assert store.get_eval_job(dead).status == "failed"  # type: ignore[union-attr]
        screen = await open_eval(pilot, app, run_id)
        assert screen.job is not None and screen.job.id == live  # the newest job is shown
        await pilot.press("c")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("escape")  # no: nothing is sent
        await pilot.pause(0.2)
        assert sleeper.poll() is None
        await pilot.press("c")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        assert sleeper.wait(timeout=10) == -signal.SIGTERM
        await wait_for(pilot, lambda: any("asked to stop" in n for n in notes(app)))

    try:
        run_app(app, body)
    finally:
        if sleeper.poll() is None:
            sleeper.kill()
            sleeper.wait()


# --------------------------------------------------------------------------- the front


def test_front_switches_to_an_evaluated_axis(store: Store) -> None:
    a = finished_run(store, name="vanilla-run", method="vanilla", lam=0.5, sa=0.97, aa=0.37)
    b = finished_run(store, name="caat-run", method="caat", gamma=0.8, sa=0.98, aa=0.33)
    c = finished_run(store, name="never-evaluated", method="caat", gamma=0.9, sa=0.9, aa=0.2)
    add_results(store, a, {("clean", 0.0): 0.96, ("autoattack", 0.3): 0.21, ("pgd", 0.3): 0.3})
    add_results(store, b, {("clean", 0.0): 0.975, ("autoattack", 0.3): 0.28})
    app = App(store)

    async def body(pilot: Pilot[None]) -> None:
        from caat_screens.front import FrontScreen
        from caat_screens.modals import AxisPicker

        await wait_for(pilot, lambda: app.screen.query(DataTable).first().row_count == 3)
        await pilot.press("F")
        await wait_for(pilot, lambda: isinstance(app.screen, FrontScreen))
        front = app.screen
        assert isinstance(front, FrontScreen)
        points = front.query_one("#front-points", DataTable)
        await wait_for(pilot, lambda: points.row_count == 3 and len(front.axes) == 2)
        # The default axis: each run's stored AutoAttack, else training's PGD (run c).
        assert sorted(row[3] for row in grid_rows(points)) == ["20.0", "21.0", "28.0"]
        await pilot.press("a")
        await wait_for(pilot, lambda: isinstance(app.screen, AxisPicker))
        options = app.screen.query_one(OptionList)
        shown = [str(options.get_option_at_index(i).prompt) for i in range(options.option_count)]
        assert shown == [
            "default: AutoAttack when stored, else training PGD",
            "evaluated: autoattack at ε=0.3 (linf, best)",
            "evaluated: pgd at ε=0.3 (linf, best)",
        ]
        await pilot.press("down", "enter")
        await wait_for(pilot, lambda: isinstance(app.screen, FrontScreen))
        await wait_for(pilot, lambda: points.row_count == 2)
        rows = {row[6]: row for row in grid_rows(points)}
        assert (rows[str(a)][2], rows[str(a)][3]) == ("96.0", "21.0")  # SA and AA evaluated
        assert (rows[str(b)][2], rows[str(b)][3]) == ("97.5", "28.0")
        verdict = text_of(app, "#front-verdict")
        assert "autoattack at ε=0.3" in verdict
        assert (
            f"1 run(s) left out, never evaluated with autoattack at ε=0.3 (linf, best): {c}"
            in verdict
        )
        assert (
            "autoattack L∞ accuracy at ε = 0.3, 500 test images"
            in front.query_one("#front-chart").labels[1]
        )  # type: ignore[attr-defined]
        await pilot.press("v")  # the split is training's: refused with a note
        await pilot.pause()
        assert front.split == "test" and any("test/val" in n for n in notes(app))
        await pilot.press("a")
        await wait_for(pilot, lambda: isinstance(app.screen, AxisPicker))
        await pilot.press("home", "enter")  # back to training's PGD
        await wait_for(pilot, lambda: points.row_count == 3)
        assert front.axis is None and "test split" in text_of(app, "#front-verdict")

    run_app(app, body)


# --------------------------------------------------------------------------- 80×24, no torch


def test_the_evaluation_screens_never_import_torch() -> None:
    code = (
        "import sys\n"
        "import caat_screens.app, caat_screens.evals, caat_screens.front\n"
        "print('torch' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"


def test_snapshot_eval_screen_80x24(snap_compare: Any, tmp_path: Path) -> None:
    with Store.open(f"sqlite:///{tmp_path / 's.db'}") as snap_store:
        run_id = finished_run(snap_store, name="robust")
        add_results(
            snap_store,
            run_id,
            {
                ("clean", 0.0): 0.95,
                ("fgsm", 0.3): 0.6,
                ("pgd", 0.3): 0.7,
                ("autoattack-fast", 0.3): 0.4,
            },
        )
        asked = eval_spec(attacks="fgsm,pgd,autoattack-fast", budgets="0.3", n=500)
        job = snap_store.create_eval_job(run_id, asked.to_json(), total=6)
        snap_store.start_eval_job(job, os.getpid(), total=6)
        snap_store.eval_progress(job, done=4, current="pgd-100 at ε=0.3")
        app = CaatApp(snap_store, poll_interval=60, gpus=[])

        async def open_screen(pilot: Pilot[None]) -> None:
            await pilot.pause(0.3)
            await pilot.press("e")
            await pilot.pause(0.3)
            await pilot.pause()

        assert snap_compare(app, terminal_size=(80, 24), run_before=open_screen)


# --------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_a_real_evaluation_from_the_form_to_the_table(store: Store, tmp_path: Path) -> None:
    from caat_app.cli import main

    argv = ["train", "--db", store.url, "--epochs", "1", "--model", "linear"]
    argv += ["--attack-steps", "2", "--eval-steps", "2"]
    with contextlib.suppress(SystemExit):
        main(argv)
    (run,) = store.list_runs()
    assert run.status == "finished" and run.id is not None
    run_id = run.id
    app = CaatApp(store, poll_interval=0.2, gpus=[])

    async def body(pilot: Pilot[None]) -> None:
        screen = await open_eval(pilot, app, run_id)
        await pilot.press("n")
        await wait_for(pilot, lambda: isinstance(app.screen, EvalForm))
        form = app.screen
        attacks = form.query_one("#e-attacks", SelectionList)
        attacks.deselect_all()
        attacks.select("fgsm")
        attacks.select("pgd")
        form.query_one("#e-n", Input).value = "100"
        await pilot.pause()
        await pilot.click("#e-start")
        await wait_for(pilot, lambda: isinstance(app.screen, EvalScreen))
        await wait_for(pilot, lambda: bool(store.eval_jobs(run_id)))
        await wait_for(
            pilot,
            lambda: store.eval_jobs(run_id)[0].status not in {"queued", "running"},
            timeout=120,
        )
        (job,) = store.eval_jobs(run_id)
        assert job.status == "finished", job.error

        def lines() -> list[str]:
            return [str(w.render()) for w in screen.query(".eval-check")]

        await wait_for(pilot, lambda: any("probe pgd-100 at ε=0.3" in line for line in lines()))
        rows = grid_rows(screen.query_one("#eval-table-0", DataTable))
        assert len(rows) == 1 and rows[0][0] == "0.3"  # what was asked; probes listed below
        sa, fgsm, pgd = (float(x) for x in rows[0][1:])
        assert 0 <= pgd <= sa and 0 <= fgsm <= sa
        assert any("ok   converged" in line for line in lines())  # the probe made it checkable
        await wait_for(pilot, lambda: "finished" in text_of(app, "#eval-job-text"), timeout=10)
        await wait_for(pilot, lambda: app.eval_children == [], timeout=10)  # no zombie left

    run_app(app, body)


def test_with_workers_off_no_evaluation_is_recorded(store: Store) -> None:
    run_id = finished_run(store)
    app = App(store, start_workers=False)

    async def body(pilot: Pilot[None]) -> None:
        app.start_evaluation(run_id, eval_spec(attacks="fgsm", budgets="0.3"))
        await wait_for(pilot, lambda: any("workers are off" in n for n in notes(app)))
        assert store.eval_jobs() == []  # nothing queued that nothing would start

    run_app(app, body)
