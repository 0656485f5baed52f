"""CaatApp: the dashboard. It reads the store, starts workers, and never imports torch.

The app owns the workbench (the service over the store) and hands it to the screens; it
does nothing to runs itself. Given a URL, it paints its frame and the first page of runs
before the store is open, then opens it in a thread: the store's imports cost about as
much as the whole first paint may.
"""

from __future__ import annotations

import gc
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from textual import work
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.screen import Screen

from .calls import call_service, start_evaluation
from .keys import Key, help_markdown, palette_commands
from .messages import StoreReach
from .runs import RunsScreen

if TYPE_CHECKING:
    from textual.timer import Timer

    from caat_app.evaluation.plan import EvalSpec
    from caat_app.runs.launcher import Gpu
    from caat_app.runs.service import Workbench
    from caat_storage import Store


@dataclass
class Housekeeping:
    """One round's outcome: workers found dead, and whether the store's file moved."""

    runs: list[int] = field(default_factory=list)
    jobs: list[int] = field(default_factory=list)
    moved: str = ""  # "deleted" or "replaced" when the file is no longer the one opened


HELP_INTRO = """\
# caat dashboard

Runs train in **worker processes**: quitting the dashboard leaves them training,
and opening it again shows them live. Everything shown comes from the store.
"""


class CaatApp(App[None]):
    """Runs, a launch form and live monitors over one store."""

    CSS_PATH = "caat.tcss"
    TITLE = "caat"
    SUB_TITLE = "Conflict-Aware Adversarial Training"
    BINDINGS = [
        Key("q", "quit", "Quit", tooltip="workers keep training"),
        Key("question_mark", "help", "Help", title="Help", tooltip="Keys and what they do"),
        Key(
            "ctrl+t",
            "toggle_dark",
            "Theme",
            show=False,
            title="Toggle theme",
            tooltip="Light or dark",
        ),
    ]

    def __init__(
        self,
        store: Store | str,
        *,
        poll_interval: float = 1.0,
        gpus: list[Gpu] | None = None,
        per_gpu: int = 1,
        max_cpu: int = 1,
        start_workers: bool = True,
    ) -> None:
        """`store`: an open Store (kept open), or a URL opened after the first paint.

        `gpus` None asks nvidia-smi; `start_workers` False never starts a worker.
        """
        super().__init__()
        self.poll_interval = poll_interval
        self.gpus = gpus
        self.options: dict[str, Any] = {
            "per_gpu": per_gpu,
            "max_cpu": max_cpu,
            "start_workers": start_workers,
        }
        self.url = store if isinstance(store, str) else None
        self.bench: Workbench | None = None
        self.open_error: Exception | None = None  # why the store at `url` could not open
        self.opening = False
        self.gc_paused = False  # `run_dashboard` pauses the cyclic GC until the first page
        self.housekeeper: Timer | None = None
        self.store_file: tuple[int, int] | None = None  # the store file's (device, inode)
        self.store_moved = False  # its file was deleted or replaced under us
        self.unreachable: str | None = None  # why the store's server cannot be reached
        if not isinstance(store, str):
            from caat_app.runs.service import Workbench

            self.bench = Workbench(store, gpus=gpus, **self.options)

    def on_mount(self) -> None:
        self.home = RunsScreen(self.bench, poll=self.poll_interval, url=self.url)
        self.push_screen(self.home)
        if self.bench is not None:
            self.start_housekeeping()

    # ------------------------------------------------------------------ the store

    def on_runs_screen_first_page(self) -> None:
        """The first page is painted: now the store may take the CPU to open."""
        if self.gc_paused:  # what start-up built lives on: keep it out of later collections
            gc.freeze()
            gc.enable()
            self.gc_paused = False
        if self.bench is None and not self.opening:
            self.opening = True
            self.open_store()

    @work(thread=True, exclusive=True, group="open")
    def open_store(self) -> None:
        from caat_app.runs.service import Workbench
        from caat_storage import StoreError

        assert self.url is not None
        try:
            bench = Workbench.open(self.url, gpus=self.gpus, **self.options)
        except StoreError as exc:
            self.call_from_thread(self.cannot_open, exc)
            return
        try:
            self.call_from_thread(self.opened, bench)
        except RuntimeError:  # the person quit while the store opened
            bench.close()

    def opened(self, bench: Workbench) -> None:
        if not self.is_running:
            bench.close()
            return
        self.bench = bench
        self.home.attach(bench)
        self.start_housekeeping()

    def cannot_open(self, error: Exception) -> None:
        """Leave, and let `run_dashboard` raise the store's one-line reason."""
        self.open_error = error
        self.exit(return_code=2)

    def close(self) -> None:
        """Close the store if this app opened it."""
        if self.bench is not None:
            self.bench.close()

    def on_store_reach(self, message: StoreReach) -> None:
        """A server store went away or came back: say so once each way; the polls go on
        and the screens fill in what they missed once it is back."""
        was, self.unreachable = self.unreachable, message.unreachable
        if was is None and message.unreachable is not None:
            self.sub_title = "STORE UNREACHABLE: retrying"
            self.notify(
                f"{message.unreachable}; retrying, nothing is lost",
                title="store unreachable",
                severity="error",
                timeout=15,
                markup=False,
            )
        elif was is not None and message.unreachable is None:
            self.sub_title = self.SUB_TITLE
            self.notify("store reachable again", markup=False)

    # ------------------------------------------------------------------ housekeeping

    def start_housekeeping(self) -> None:
        assert self.bench is not None
        self.store_file = self.bench.file_identity()  # what "the store" is, on disk
        self.store_moved = False
        self.housekeeping()
        if self.housekeeper is None:
            interval = max(self.poll_interval, 1.0)
            self.housekeeper = self.set_interval(interval, self.housekeeping)

    def housekeeping(self) -> None:
        """Mark silent workers failed, then start queued runs where there is room."""
        call_service(self, self.housekeep, self.report_reaped, group="housekeeping", exclusive=True)

    def housekeep(self) -> Housekeeping:
        bench = self.bench
        assert bench is not None
        now = bench.file_identity() if self.store_file is not None else None
        if self.store_file is not None and now != self.store_file:
            return Housekeeping(moved="deleted" if now is None else "replaced")
        if self.store_moved:
            return Housekeeping()  # the person chose the old store: start nothing in it
        if bench.gpus is None:
            bench.detect_gpus()  # nvidia-smi takes a moment: once, off the UI thread
        runs, jobs = bench.reap()
        bench.dispatch()
        return Housekeeping(runs, jobs)

    def report_reaped(self, done: Housekeeping) -> None:
        for run_id in done.runs:
            self.notify(f"run {run_id}: its worker died", severity="error")
        for job_id in done.jobs:
            self.notify(f"evaluation {job_id}: its worker died", severity="error")
        if done.moved and not self.store_moved:
            self.store_moved = True
            self.offer_reopen(done.moved)

    def offer_reopen(self, how: str) -> None:
        """The store's file went away under the dashboard: say so, and offer to reopen."""
        from .modals import ConfirmScreen

        assert self.bench is not None
        url = self.bench.store.url
        question = (
            f"The store file was {how} while the dashboard showed it: what you see is no "
            f"longer what is on disk ({url}). Reopen the store at that path?"
        )

        def answer(yes: bool | None) -> None:
            if yes:
                call_service(self, lambda: self.reopen(url), self.reopened, group="open")
            else:
                self.notify(
                    f"still showing the {how} store; nothing new is started in it",
                    severity="warning",
                    timeout=30,
                    markup=False,
                )

        self.push_screen(ConfirmScreen(question, confirm="Reopen"), answer)

    def reopen(self, url: str) -> Workbench:
        from caat_app.runs.service import Workbench

        return Workbench.open(url, gpus=self.gpus, **self.options)

    def reopened(self, bench: Workbench) -> None:
        """Show the store now at the path: back to the runs, all of them read anew."""
        old, self.bench = self.bench, bench
        while len(self.screen_stack) > 2:  # the default screen and the runs
            self.pop_screen()
        self.home.attach(bench)
        self.start_housekeeping()
        self.notify(f"reopened the store at {bench.store.url}", markup=False)
        if old is not None and old.owns_store:
            old.close()

    @property
    def eval_children(self) -> list[Any]:
        """The evaluation workers this dashboard started and has not yet waited for."""
        return [] if self.bench is None else self.bench.eval_workers.running()

    # ------------------------------------------------------------------ screens, help, palette

    def open_monitor(self, run_id: int) -> None:
        from .monitor import MonitorScreen

        if self.bench is not None:
            self.push_screen(MonitorScreen(self.bench, run_id, poll=self.poll_interval))

    def open_evaluation(self, run_id: int) -> None:
        from .evals import EvalScreen

        if self.bench is not None:
            self.push_screen(EvalScreen(self.bench, run_id, poll=self.poll_interval))

    def start_evaluation(self, run_id: int, spec: EvalSpec) -> None:
        if self.bench is not None:
            start_evaluation(self, self.bench, run_id, spec)

    def action_help(self) -> None:
        """The help, written from the screens' own bindings."""
        from .budget import BudgetScreen
        from .compare import CompareScreen
        from .conflict import ConflictScreen
        from .evals import EvalScreen
        from .front import FrontScreen
        from .modals import HelpScreen
        from .monitor import MonitorScreen

        palette = Binding(self.COMMAND_PALETTE_BINDING, "command_palette", "Command palette")
        sections = [
            ("Runs", "", RunsScreen.BINDINGS),
            ("Monitor", "", MonitorScreen.BINDINGS),
            ("Compare", "", CompareScreen.BINDINGS),
            ("Front", "", FrontScreen.BINDINGS),
            ("Evaluation", EvalScreen.HELP or "", EvalScreen.BINDINGS),
            ("Conflict lab", ConflictScreen.HELP or "", ConflictScreen.BINDINGS),
            ("Budget view", BudgetScreen.HELP or "", BudgetScreen.BINDINGS),
            ("Everywhere", "", [*self.BINDINGS, palette]),
        ]
        self.push_screen(HelpScreen(help_markdown(HELP_INTRO, sections)))

    def action_toggle_dark(self) -> None:
        self.theme = "textual-light" if self.theme == "textual-dark" else "textual-dark"

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        """Textual's own, then a command per key of the app and of the screen that has a title."""
        yield from super().get_system_commands(screen)
        yield from palette_commands(self, self.BINDINGS)
        yield from palette_commands(screen, type(screen).BINDINGS)


def run_dashboard(db_url: str, *, per_gpu: int = 1, max_cpu: int = 1) -> None:
    """The dashboard over the store at `db_url`; a StoreError if it cannot be opened."""
    app = CaatApp(db_url, per_gpu=per_gpu, max_cpu=max_cpu)
    # Start-up builds many long-lived objects (widgets, styles, caches) and little garbage:
    # the cyclic GC would cost about a tenth of the first paint, so it waits until then.
    app.gc_paused = enabled = gc.isenabled()
    gc.disable()
    try:
        app.run()
    finally:
        if enabled:
            gc.enable()
        app.close()
    if app.open_error is not None:
        raise app.open_error
