"""The workbench: what a person does to runs, for the CLI and the dashboard alike.

One torch-free object over one store. The dashboard's screens receive it instead of
reaching into the app; the CLI's commands build one per call. Every refusal is a
`CaatError` with one line for the person (the store's own `ValueError`s about names and
tags included), so callers catch one kind of error.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from caat_app.errors import CaatError
from caat_app.runs import launcher, manage
from caat_app.runs.launcher import Children, Gpu, Scheduler
from caat_storage import RunStatus

if TYPE_CHECKING:
    from caat_app.config import RunConfig
    from caat_app.evaluation.plan import EvalSpec
    from caat_storage import EvalJob, Run, Store
    from caat_storage.lab import Stamp
    from caat_storage.models import LabReport

CONFLICT_LOG = "conflict.log"
"""Where a per-sample computation started from the dashboard writes its output (the
run's folder)."""
SYNTH_LOG = "synth.log"
"""Where a synthetic experiment started from the dashboard writes its output (the
store's runs folder)."""


class Workbench:
    """Runs and evaluations of one store: create, start, stop, edit, delete."""

    def __init__(
        self,
        store: Store,
        *,
        gpus: list[Gpu] | None = None,
        per_gpu: int = 1,
        max_cpu: int = 1,
        start_workers: bool = True,
    ) -> None:
        self.store = store
        self.start_workers = start_workers  # False: a read-only look, no worker is started
        self.per_gpu, self.max_cpu = per_gpu, max_cpu
        self.scheduler: Scheduler | None = None
        self.eval_workers = Children()
        self.lab_workers = Children()  # `caat conflict` and `caat synth` processes started here
        self.owns_store = False  # True when `open` opened it: `close` closes it then
        if gpus is not None:
            self.use_gpus(gpus)

    @classmethod
    def open(cls, url: str, **options: Any) -> Workbench:
        """Open the store at `url` (a StoreError says why it cannot be) and work on it."""
        from caat_storage import Store

        store = Store.open(url)
        try:
            bench = cls(store, **options)
        except BaseException:
            store.close()
            raise
        bench.owns_store = True
        return bench

    def close(self) -> None:
        """Close the store if this workbench opened it; a store handed in stays open."""
        if self.owns_store:
            self.store.close()

    @property
    def gpus(self) -> list[Gpu] | None:
        """The GPUs workers are given; None until `use_gpus` (nvidia-smi takes a moment)."""
        return None if self.scheduler is None else self.scheduler.gpus

    def use_gpus(self, gpus: list[Gpu]) -> None:
        self.scheduler = Scheduler(
            self.store, gpus=gpus, per_gpu=self.per_gpu, max_cpu=self.max_cpu
        )

    def detect_gpus(self) -> list[Gpu]:
        """Give workers the GPUs nvidia-smi lists (none: CPU runs); slow, so off the UI thread."""
        gpus = launcher.list_gpus()
        self.use_gpus(gpus)
        return gpus

    # ------------------------------------------------------------------ workers

    def dispatch(self) -> list[int]:
        """Start the queued runs there is room for (none when workers are off)."""
        if self.scheduler is None or not self.start_workers:
            return []
        return self.scheduler.dispatch()

    def reap(self) -> tuple[list[int], list[int]]:
        """Mark failed the runs and evaluations whose worker died; (run ids, job ids)."""
        self.eval_workers.poll()
        self.lab_workers.poll()
        return manage.reap_dead(self.store)

    # ------------------------------------------------------------------ runs

    def create_run(self, config: RunConfig) -> int:
        """Queue a run and start it if there is room; its id."""
        run_id = manage.create_run(self.store, config)
        self.dispatch()
        return run_id

    def queue_sweep(self, name: str, configs: Sequence[RunConfig]) -> tuple[list[int], list[int]]:
        """Queue the grid's configs the sweep lacks, start what fits; (new ids, held ids)."""
        from caat_app.runs.sweep import plan_sweep

        new, held = plan_sweep(self.store, name, configs)
        self.dispatch()
        return new, held

    def run(self, run_id: int) -> Run:
        """The run as stored now, or a CaatError if it is gone."""
        run = self.store.get_run(run_id)
        if run is None:
            raise CaatError(f"run {run_id} no longer exists")
        return run

    def cancel_run(self, run: Run) -> None:
        manage.cancel_run(self.store, run)

    def resume(self, run: Run) -> int:
        """Queue a failed or cancelled run to continue from its checkpoint and start it if
        there is room; the step it continues from."""
        point = manage.resume_run(self.store, run)
        self.dispatch()
        return point.step

    def delete_run(self, run: Run) -> Path | None:
        return manage.delete_run(self.store, run)

    def rename_run(self, run_id: int, name: str) -> str:
        return _refusing(self.store.rename_run, run_id, name)  # type: ignore[no-any-return]

    def set_tags(self, run_id: int, tags: Sequence[str]) -> list[str]:
        return _refusing(self.store.set_tags, run_id, list(tags))  # type: ignore[no-any-return]

    def set_notes(self, run_id: int, text: str) -> None:
        _refusing(self.store.set_notes, run_id, text)

    def relaunch_config(self, run: Run) -> dict[str, Any]:
        return manage.relaunch_config(run)

    # ------------------------------------------------------------------ evaluations

    def start_eval(self, run_id: int, spec: EvalSpec, *, env: dict[str, str] | None = None) -> int:
        """Record an evaluation and start its worker now (evaluations do not queue)."""
        if not self.start_workers:
            raise CaatError("workers are off here: no evaluation started")

        def launch(db_url: str, job_id: int, run_dir: Path) -> Any:
            proc = launcher.launch_eval_worker(db_url, job_id, run_dir, env=env)
            self.eval_workers.add(proc)
            return proc

        return manage.start_eval(self.store, self.run(run_id), spec, launch=launch)

    def cancel_eval(self, job: EvalJob) -> None:
        manage.cancel_eval(self.store, job)

    def file_identity(self) -> tuple[int, int] | None:
        """(device, inode) of the store's SQLite file, None when it is gone (or the store
        is no file): a change means the file was deleted or replaced under us."""
        from caat_storage.engine import sqlite_path

        path = sqlite_path(self.store.url)
        try:
            info = path.stat() if path is not None else None
        except OSError:
            return None
        return None if info is None else (info.st_dev, info.st_ino)

    # ------------------------------------------------------------------ the conflict lab

    def layer_conflict(
        self, run_id: int, *, after_step: int = -1
    ) -> tuple[list[str], list[int], list[dict[str, Any]]]:
        """A run's layers (names, sizes) and its per-layer rows after `after_step`, as
        mappings `analysis.layers` reads; all empty when it recorded none."""
        layers = self.store.run_layers(run_id)
        rows = [r.model_dump() for r in self.store.layer_metrics(run_id, after_step=after_step)]
        return [s.name for s in layers], [s.size for s in layers], rows

    def lab_stamp(self, kind: str, run_id: int | None = None) -> Stamp | None:
        """The newest lab report's (id, last change): a poller fetches only on change."""
        return self.store.lab_stamp(kind, run_id=run_id)

    def lab_body(self, report_id: int) -> dict[str, Any] | None:
        """A lab report's body (None once it is gone); a broken one is a one-line error."""
        return _body(self.store.lab_report(report_id))

    def conflict_report(self, run: Run) -> dict[str, Any] | None:
        """The run's newest per-sample conflict report, or None when none was computed."""
        return _body(self.store.latest_lab_report("conflict", run_id=run.id))

    def synth_report(self) -> dict[str, Any] | None:
        """The newest synthetic experiment's report, or None when none was run."""
        return _body(self.store.latest_lab_report("synth"))

    @staticmethod
    def conflict_log(run: Run) -> Path:
        return Path(run.run_dir) / CONFLICT_LOG

    def synth_log(self) -> Path:
        return self.store.runs_root() / SYNTH_LOG

    def budget_groups(self, run_ids: Sequence[int]) -> list[dict[str, Any]]:
        """The budget view of these runs (`paper.budget_view`): groups that differ only in
        ε, with μ per epoch; a run gone or with an unreadable config is left out."""
        from caat_app.paper.budget_view import budget_groups, epoch_spread
        from caat_app.runs.stored import options_of

        runs = []
        for run_id in run_ids:
            run = self.store.get_run(run_id)
            try:
                options = options_of(run) if run is not None else None
            except CaatError:
                continue
            if options is not None and "eps" in options and "method" in options:
                runs.append((run_id, options, epoch_spread(self.store.steps(run_id))))
        return budget_groups(runs)

    def budget_mates(self, run_id: int) -> list[int]:
        """The runs of `run_id`'s budget group, itself included: those that differ from it
        only in ε, the method and its trade-off (and names and seeds)."""
        from caat_app.paper.budget_view import group_key
        from caat_app.runs.stored import options_of

        key = group_key(options_of(self.run(run_id)))
        mates = []
        for run in self.store.list_runs(descending=False):
            try:
                same = group_key(options_of(run)) == key
            except CaatError:  # an unreadable config belongs to no group
                continue
            if same and run.id is not None:
                mates.append(run.id)
        return mates

    def start_conflict(self, run: Run) -> subprocess.Popen[bytes]:
        """Start `caat conflict RUN` in its own process (it outlives the dashboard), its
        output in the run's `conflict.log`; its report lands in the store when done."""
        if run.status != RunStatus.FINISHED.value:
            raise CaatError(f"run {run.id} is {run.status}; per-sample conflict needs it finished")
        return self._start_lab(["conflict", str(run.id)], self.conflict_log(run))

    def start_synth(self) -> subprocess.Popen[bytes]:
        """Start `caat synth` (the paper's grid and recipe) in its own process; its report
        lands in the store when done, its output in `synth_log()`."""
        return self._start_lab(["synth"], self.synth_log())

    def _start_lab(self, args: list[str], log_path: Path) -> subprocess.Popen[bytes]:
        if not self.start_workers:
            raise CaatError("workers are off here: no computation started")
        log_path.parent.mkdir(parents=True, exist_ok=True)
        entry = "import sys; from caat_app.cli import main; main(sys.argv[1:])"
        command = [sys.executable, "-c", entry, *args, "--db", self.store.url]
        with log_path.open("ab") as log:
            proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.lab_workers.add(proc)
        return proc


def _body(report: LabReport | None) -> dict[str, Any] | None:
    """A lab report's JSON body; a broken one is a one-line error."""
    if report is None:
        return None
    try:
        body = json.loads(report.body)
    except ValueError as exc:
        raise CaatError(f"lab report {report.id} is not readable: {exc}") from None
    if not isinstance(body, dict):
        raise CaatError(f"lab report {report.id} is not a report")
    return body


def _refusing(method: Any, *args: Any) -> Any:
    """The store refuses bad names and tags with a ValueError: make it a one-line CaatError."""
    try:
        return method(*args)
    except ValueError as exc:
        raise CaatError(str(exc)) from None
