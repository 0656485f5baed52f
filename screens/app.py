"""CaatApp: the dashboard. It reads the store, starts workers, and never imports torch."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from textual import work
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Input

from caat_app.errors import CaatError
from caat_app.runs.launcher import Gpu, Scheduler, list_gpus
from caat_storage import EvalJob, Run, Store, StoreError

from .modals import HelpScreen

if TYPE_CHECKING:
    from caat_app.evaluation.plan import EvalSpec

# A worker writes a heartbeat at least every 5 s; a minute of silence means it died.
HEARTBEAT_TIMEOUT = 60.0


def one_line(exc: BaseException) -> str:
    """An error as one line for a notification: an OS error's text may span lines."""
    return " ".join(str(exc).split()) or type(exc).__name__


class CaatApp(App[None]):
    """Runs, a launch form and live monitors over one store."""

    CSS_PATH = "caat.tcss"
    TITLE = "caat"
    SUB_TITLE = "Conflict-Aware Adversarial Training"
    BINDINGS = [
        Binding("q", "quit", "Quit"),
        Binding("question_mark", "help", "Help"),
        Binding("ctrl+t", "toggle_dark", "Theme", show=False),
    ]

    def __init__(
        self,
        store: Store,
        *,
        poll_interval: float = 1.0,
        gpus: list[Gpu] | None = None,
        per_gpu: int = 1,
        max_cpu: int = 1,
        start_workers: bool = True,
    ) -> None:
        super().__init__()
        self.start_workers = (
            start_workers  # False: never start workers (a read-only look at a store)
        )
        self.store = store
        self.poll_interval = poll_interval
        self.gpus = gpus
        self.per_gpu = per_gpu
        self.max_cpu = max_cpu
        self.scheduler: Scheduler | None = None
        self.eval_children: list[Any] = []  # evaluation workers' Popens, waited for (no zombies)
        self._children_lock = threading.Lock()

    def on_mount(self) -> None:
        from .runs import RunsScreen

        self.push_screen(RunsScreen())
        self.start_housekeeping()
        self.set_interval(max(self.poll_interval, 1.0), self.housekeeping)

    @work(thread=True, exclusive=True, group="housekeeping")
    def start_housekeeping(self) -> None:
        """nvidia-smi takes a moment: ask it off the UI thread, once."""
        gpus = self.gpus if self.gpus is not None else list_gpus()
        self.gpus = gpus
        self.scheduler = Scheduler(
            self.store, gpus=gpus, per_gpu=self.per_gpu, max_cpu=self.max_cpu
        )
        self._housekeep()

    @work(thread=True, exclusive=True, group="housekeeping")
    def housekeeping(self) -> None:
        self._housekeep()

    def _housekeep(self) -> None:
        """Mark silent workers failed, then start queued runs where there is room."""
        from caat_app.runs.manage import pid_alive

        self._wait_eval_children()
        try:
            for run_id in self.store.reap_stale(timeout=HEARTBEAT_TIMEOUT, is_alive=pid_alive):
                self.call_from_thread(
                    self.notify, f"run {run_id}: its worker died", severity="error"
                )
            for job_id in self.store.reap_stale_evals(
                timeout=HEARTBEAT_TIMEOUT, is_alive=pid_alive
            ):
                self.call_from_thread(
                    self.notify, f"evaluation {job_id}: its worker died", severity="error"
                )
            if self.scheduler is not None and self.start_workers:
                self.scheduler.dispatch()
        except (StoreError, CaatError) as exc:
            self.call_from_thread(self.notify, str(exc), severity="error", markup=False)

    def _wait_eval_children(self) -> None:
        """Reap finished evaluation workers, so none stays a zombie (and looks alive)."""
        with self._children_lock:
            self.eval_children = [p for p in self.eval_children if p.poll() is None]

    def _launch_eval(
        self, db_url: str, run_id: int, run_dir: Path, *, env: dict[str, str] | None = None
    ) -> Any:
        """`launch_eval_worker`, keeping the Popen so housekeeping can wait for it."""
        from caat_app.runs import launcher

        proc = launcher.launch_eval_worker(db_url, run_id, run_dir, env=env)
        with self._children_lock:
            self.eval_children.append(proc)
        return proc

    # ------------------------------------------------------------------ navigation

    def open_monitor(self, run_id: int) -> None:
        from .monitor import MonitorScreen

        self.push_screen(MonitorScreen(run_id))

    def open_evaluation(self, run_id: int) -> None:
        from .evals import EvalScreen

        self.push_screen(EvalScreen(run_id))

    def open_launch(self, values: dict[str, Any] | None = None) -> None:
        from .launch import LaunchScreen

        self.push_screen(LaunchScreen(values, gpus=self.gpus or []))

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def action_toggle_dark(self) -> None:
        self.theme = "textual-light" if self.theme == "textual-dark" else "textual-dark"

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield SystemCommand("New run", "Open the launch form", self.open_launch)
        yield SystemCommand("Help", "Keys and what they do", self.action_help)
        yield SystemCommand("Toggle theme", "Light or dark", self.action_toggle_dark)
        from .evals import EvalScreen
        from .front import FrontScreen
        from .monitor import MonitorScreen
        from .runs import RunsScreen

        if isinstance(screen, MonitorScreen):
            yield SystemCommand(
                "Evaluate run",
                "Robust accuracy under the attack zoo, with a masking report",
                screen.action_evaluate,
            )
        if isinstance(screen, EvalScreen):
            yield SystemCommand("New evaluation", "Open the evaluation form", screen.action_new)
            yield SystemCommand(
                "Cancel evaluation",
                "Stop the running evaluation (asks first)",
                screen.action_cancel_eval,
            )
        if isinstance(screen, FrontScreen):
            yield SystemCommand(
                "Front AA axis", "Training's PGD or an evaluated attack", screen.action_axis
            )
        if isinstance(screen, RunsScreen):
            for title, action, help_text in (
                ("Monitor run", "open", "Live charts of the selected run"),
                (
                    "Evaluate run",
                    "evaluate",
                    "Robust accuracy under the attack zoo, masking report",
                ),
                ("Cancel run", "cancel_run", "Stop the selected run (asks first)"),
                ("Delete run", "delete", "Delete the selected run (asks first)"),
                ("Rename run", "rename", "Give the selected run a new name"),
                ("Re-launch run", "relaunch", "Open the selected run's config in the form"),
                ("Compare marked runs", "compare", "Marked runs side by side (space marks)"),
                ("SA-AA front", "front", "The front of the finished runs the filter shows"),
            ):
                yield SystemCommand(title, help_text, getattr(screen, f"action_{action}"))

    # ------------------------------------------------------------------ changes to runs

    @work(thread=True, group="edit")
    def cancel_run(self, run: Run) -> None:
        from caat_app.runs.manage import cancel_run

        try:
            cancel_run(self.store, run)
        except (StoreError, CaatError) as exc:
            self.call_from_thread(self.notify, str(exc), severity="error", markup=False)
            return
        self.call_from_thread(self.notify, f"run {run.id}: asked to stop", markup=False)

    @work(thread=True, group="edit")
    def delete_run(self, run: Run) -> None:
        from caat_app.runs.manage import delete_run

        try:
            delete_run(self.store, run)
        except (StoreError, CaatError, OSError) as exc:
            self.call_from_thread(self.notify, str(exc), severity="error", markup=False)
            return
        self.call_from_thread(self.notify, f"run {run.id} deleted", markup=False)

    @work(thread=True, group="edit")
    def edit_run(self, run: Run, method: str, value: Any) -> None:
        """rename_run / set_tags / set_notes, with the store's one-line refusal shown."""
        assert run.id is not None
        try:
            getattr(self.store, method)(run.id, value)
        except (StoreError, ValueError) as exc:
            self.call_from_thread(self.notify, str(exc), severity="error", markup=False)

    @work(thread=True, group="edit")
    def submit_run(self, config: Any) -> None:
        """Record a launch-form config as a queued run, start it if there is room, monitor it."""
        from caat_app.runs.manage import create_run

        try:
            run_id = create_run(self.store, config)
            if self.scheduler is not None and self.start_workers:
                self.scheduler.dispatch()
        except (StoreError, CaatError) as exc:
            self.call_from_thread(self.notify, str(exc), severity="error", markup=False)
            return
        self.call_from_thread(self._show_new_run, run_id)

    @work(thread=True, group="edit")
    def submit_sweep(self, name: str, configs: list[Any]) -> None:
        """Queue a grid in sweep `name` (what it already holds is not queued again)."""
        from caat_app.runs.sweep import plan_sweep

        try:
            new, held = plan_sweep(self.store, name, configs)
            if self.scheduler is not None and self.start_workers:
                self.scheduler.dispatch()
        except (StoreError, CaatError) as exc:
            self.call_from_thread(self.notify, str(exc), severity="error", markup=False)
            return
        self.call_from_thread(self._show_sweep, name, len(new), len(held))

    @work(thread=True, group="edit")
    def start_evaluation(self, run_id: int, spec: EvalSpec) -> None:
        """Record an evaluation of a run and start its worker now.

        Evaluations are not queued (asking is starting), so a dashboard whose workers are
        off refuses instead of leaving a job that nothing would ever start.
        """
        from caat_app.runs.manage import start_eval

        if not self.start_workers:
            self.call_from_thread(
                self.notify,
                "workers are off in this dashboard: no evaluation started",
                severity="warning",
            )
            return
        try:
            run = self.store.get_run(run_id)
            if run is None:
                raise CaatError(f"run {run_id} no longer exists")
            job_id = start_eval(self.store, run, spec, launch=self._launch_eval)
        except (StoreError, CaatError, OSError) as exc:
            self.call_from_thread(self.notify, one_line(exc), severity="error", markup=False)
            return
        self.call_from_thread(
            self.notify, f"evaluation {job_id} of run {run_id} started", markup=False
        )

    @work(thread=True, group="edit")
    def cancel_evaluation(self, job: EvalJob) -> None:
        from caat_app.runs.manage import cancel_eval

        try:
            cancel_eval(self.store, job)
        except (StoreError, CaatError) as exc:
            self.call_from_thread(self.notify, one_line(exc), severity="error", markup=False)
            return
        self.call_from_thread(self.notify, f"evaluation {job.id}: asked to stop", markup=False)

    def _show_sweep(self, name: str, new: int, held: int) -> None:
        from .runs import RunsScreen

        self.pop_screen()
        self.notify(f"sweep {name}: {new} runs queued, {held} already there", markup=False)
        if isinstance(self.screen, RunsScreen):
            self.screen.query_one("#filter", Input).value = name

    def _show_new_run(self, run_id: int) -> None:
        self.pop_screen()
        self.open_monitor(run_id)


def run_dashboard(db_url: str, *, per_gpu: int = 1, max_cpu: int = 1) -> None:
    """Open the store (one clear line if it cannot be), then the dashboard."""
    store = Store.open(db_url)
    try:
        CaatApp(store, per_gpu=per_gpu, max_cpu=max_cpu).run()
    finally:
        store.close()
