"""Managing runs: cancel, delete, re-launch. Torch-free: the CLI and the dashboard call it.

Every operation re-reads the run from the store and changes it with a conditional
write, so a worker that reports at the same moment is never overwritten.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from caat_app.errors import CaatError
from caat_app.evaluation.plan import EvalSpec, plan
from caat_app.runs import launcher
from caat_app.runs.launcher import Launch, request_cancel
from caat_app.runs.stored import options_of
from caat_app.training.resume_point import ResumePoint, read_resume_point
from caat_storage import RunStatus, StoreError, lost_worker_error
from caat_storage.status import this_host

if TYPE_CHECKING:
    from caat_app.config import RunConfig
    from caat_storage import EvalJob, Run, Store

_ACTIVE = (RunStatus.RUNNING.value, RunStatus.QUEUED.value)


def run_fields(cfg: RunConfig) -> dict[str, Any]:
    """The `Store.create_run` keywords for a config: one mapping, so every caller agrees."""
    return {
        "name": cfg.default_name(),
        "config": cfg.model_dump(mode="json"),
        "method": cfg.method,
        "param": cfg.param,
        "dataset": cfg.dataset,
        "model": cfg.model,
        "eps": cfg.eps,
        "epochs_total": cfg.epochs,
    }


def create_run(store: Store, cfg: RunConfig, *, sweep: str | None = None) -> int:
    """Record a validated config as a queued run (the form, the CLI and sweeps share it)."""
    return store.create_run(**run_fields(cfg), sweep=sweep)


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists and is not a zombie.

    A worker that exited while its launcher (say, the dashboard) has not waited for it
    stays a zombie: `kill(pid, 0)` still succeeds, but it will never report again.
    """
    if pid <= 0:
        return False  # 0 and negatives name process groups, not one process
    if sys.platform == "win32":
        return True  # os.kill(pid, 0) would terminate it there; the heartbeat decides
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, it is just not ours
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return not Path("/proc/self/stat").exists()  # /proc is there, the pid is not
    except OSError:
        return True
    # "pid (comm) state ...": comm may hold spaces and parentheses, so split at the last ")".
    fields = stat.rpartition(")")[2].split()
    return not fields or fields[0] not in ("Z", "X")


def _current(store: Store, run: Run) -> Run:
    assert run.id is not None
    current = store.get_run(run.id)
    if current is None:
        raise CaatError(f"run {run.id} no longer exists")
    return current


def _owned_folder(store: Store, run: Run) -> Path | None:
    """The run's folder if it is certainly caat's: `<runs root>/<run id>`, else None.

    A run made before stores had ids has its folder directly in the shared runs root.
    """
    if not run.run_dir:
        return None
    folder = Path(run.run_dir)
    if not folder.is_absolute() or folder.name != str(run.id):
        return None
    try:
        roots = {store.runs_root().resolve(), store.shared_runs_root().resolve()}
        if folder.parent.resolve() not in roots:
            return None
    except OSError:
        return None
    return folder


def delete_run(store: Store, run: Run) -> Path | None:
    """Delete a finished run: its rows, then its folder; returns the folder removed, if any.

    A running or queued run is refused (cancel it first). The folder path comes from
    the database, which anyone may have edited or pointed elsewhere, so only a folder
    named by the run's id directly inside this store's runs folder is removed, and a
    symbolic link there is unlinked, never followed.
    """
    current = _current(store, run)
    assert current.id is not None
    if current.status in _ACTIVE:
        raise CaatError(f"run {current.id} is {current.status}; cancel it before deleting it")
    try:
        store.delete_run(current.id, refuse=_ACTIVE)
    except StoreError as exc:
        raise CaatError(f"cannot delete: {exc}") from None
    folder = _owned_folder(store, current)
    if folder is None:
        return None
    try:
        if folder.is_symlink():
            folder.unlink()
        elif folder.is_dir():
            shutil.rmtree(folder)
        else:
            return None
    except OSError as exc:
        raise CaatError(
            f"run {current.id} deleted, but its folder {folder} could not be removed: "
            f"{exc.strerror or exc}"
        ) from None
    return folder


def _lost(store: Store, current: Run) -> CaatError:
    """Record a dead worker's run as failed; the error to show the person."""
    assert current.id is not None
    last = current.heartbeat_at or current.started_at
    error = lost_worker_error("worker died without reporting", current.pid, last, current.host)
    when = {"status": RunStatus.RUNNING.value, "pid": current.pid}
    if store.finish_if(current.id, RunStatus.FAILED, when=when, error=error):
        return CaatError(
            f"run {current.id}: its worker (pid {current.pid}) had died without reporting; "
            "marked failed"
        )
    return CaatError(f"run {current.id} is {_current(store, current).status}, not running")


def cancel_run(store: Store, run: Run) -> None:
    """Stop a run: a queued one ends `cancelled` now, a running one is sent SIGTERM.

    On SIGTERM the worker checkpoints and ends the run `cancelled` itself. A worker
    that was launched but has not started yet (no `started_at`) may die of the signal
    before it can report, so its run is marked `cancelled` first. Run only where the
    worker runs: the pid is checked on this machine.
    """
    current = _current(store, run)
    assert current.id is not None
    if current.status == RunStatus.QUEUED:
        when = {"status": RunStatus.QUEUED.value}
        if store.finish_if(current.id, RunStatus.CANCELLED, when=when):
            return
        current = _current(store, current)  # claimed by a scheduler meanwhile
    if current.status != RunStatus.RUNNING:
        raise CaatError(f"run {current.id} is {current.status}, not running")
    pid = current.pid
    if pid is None:
        raise CaatError(f"run {current.id} is starting (no worker pid yet); try again in a moment")
    if not pid_alive(pid):
        raise _lost(store, current)
    marked = False
    if current.started_at is None:
        when = {"status": RunStatus.RUNNING.value, "pid": pid, "started_at": None}
        marked = store.finish_if(current.id, RunStatus.CANCELLED, when=when)
    if not request_cancel(pid) and not marked:
        raise _lost(store, current)


def relaunch_config(run: Run) -> dict[str, Any]:
    """The run's stored config for the launch form; without `name`, so a new one is made."""
    config = options_of(run)  # a fresh table: popping from it changes nothing stored
    config.pop("name", None)
    return config


RESUMABLE = (RunStatus.FAILED.value, RunStatus.CANCELLED.value)
"""A run stopped in one of these may continue from its checkpoint; a diverged one would
only diverge again, a finished one has nothing left to do."""


def resume_point(run: Run) -> ResumePoint | None:
    """Where the run can continue from (its folder's resume record), or None."""
    return read_resume_point(run.run_dir)


def resume_run(store: Store, run: Run) -> ResumePoint:
    """Queue a failed or cancelled run to continue from its checkpoint; where it will.

    The rows its last worker wrote after the checkpoint go in the same transaction
    (`Store.prepare_resume`); a launcher then starts it like any queued run, and its
    worker resumes. Refused (CaatError, one line) when the run is in another state or
    has no checkpoint to continue from.
    """
    current = _current(store, run)
    assert current.id is not None
    if current.status not in RESUMABLE:
        raise CaatError(
            f"run {current.id} is {current.status}; only a failed or cancelled run can be resumed"
        )
    point = resume_point(current)
    if point is None:
        raise CaatError(
            f"run {current.id} has no checkpoint to resume from in {current.run_dir}; "
            "re-launch it to train from the start"
        )
    fields = {k: v for k, v in point.fields.items() if k not in ("steps_done", "epochs_done")}
    if not store.prepare_resume(
        current.id,
        step=point.step,
        epochs_done=point.epochs_done,
        fields=fields,
        resumable=RESUMABLE,
    ):
        now = _current(store, current)
        raise CaatError(f"run {current.id} is {now.status} now; not resumed")
    return point


# --------------------------------------------------------------------------- evaluations


def evaluable(store: Store, run: Run, spec: EvalSpec) -> Run:
    """The run as stored now, if it has the checkpoint `spec` evaluates (else CaatError)."""
    current = _current(store, run)
    checkpoint = Path(current.run_dir) / f"{spec.checkpoint}.pt"
    if not checkpoint.is_file():
        raise CaatError(
            f"run {current.id} has no {spec.checkpoint} checkpoint yet ({checkpoint}); "
            "evaluate it once it has trained an epoch"
        )
    return current


def start_eval(store: Store, run: Run, spec: EvalSpec, *, launch: Launch | None = None) -> int:
    """Record an evaluation of a run and start its worker now; returns the job id.

    Only a run with a checkpoint can be evaluated. The job is recorded claimed by this
    host, so no agent takes it while its worker starts; a launch that fails ends it
    `failed` with the reason, so nothing stays claimed. `launch` defaults to
    `launcher.launch_eval_worker`, looked up at call time.
    """
    launch = launch or launcher.launch_eval_worker
    current = evaluable(store, run, spec)
    assert current.id is not None
    job_id = store.create_eval_job(current.id, spec.to_json(), total=len(plan(spec)), claim=True)
    try:
        launch(store.url, job_id, Path(current.run_dir))
    except Exception as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__  # one line, whatever the OS said
        store.finish_eval_job(
            job_id, RunStatus.FAILED, error=f"could not start its worker: {reason}"
        )
        raise CaatError(f"evaluation {job_id}: could not start its worker: {reason}") from None
    return job_id


def queue_eval(store: Store, run: Run, spec: EvalSpec) -> int:
    """Record an evaluation `queued` for a `caat agent` (any host's) to run; starts nothing.

    The same check as `start_eval`: only a run with the checkpoint can be evaluated.
    """
    current = evaluable(store, run, spec)
    assert current.id is not None
    return store.create_eval_job(current.id, spec.to_json(), total=len(plan(spec)))


def cancel_eval(store: Store, job: EvalJob) -> None:
    """Stop an evaluation: a queued one ends `cancelled` now, a running one gets SIGTERM.

    Its worker stops between two batches and ends the job `cancelled`; what it had
    measured by then stays stored. A claimed job whose worker has not started yet ends
    `cancelled` at once. A worker on another host is not signalled from here.
    """
    assert job.id is not None
    if store.finish_eval_job(job.id, RunStatus.CANCELLED, when=RunStatus.QUEUED.value):
        return
    if store.finish_eval_job(job.id, RunStatus.CANCELLED, unstarted=True):
        return  # claimed, its worker starting: it finds the job cancelled and exits
    current = store.get_eval_job(job.id)
    if current is None:
        raise CaatError(f"evaluation {job.id} no longer exists")
    if current.status != RunStatus.RUNNING:
        raise CaatError(f"evaluation {job.id} is {current.status}, not running")
    if current.host not in (None, this_host()):
        raise CaatError(
            f"evaluation {job.id} runs on {current.host}; cancel it there "
            "(or stop its agent, which cancels its workers)"
        )
    if current.pid is None or not pid_alive(current.pid) or not request_cancel(current.pid):
        store.finish_eval_job(
            job.id,
            RunStatus.FAILED,
            error="worker died without reporting",
            when=RunStatus.RUNNING.value,
        )
        raise CaatError(f"evaluation {job.id}: its worker had died; marked failed")


HEARTBEAT_TIMEOUT = 60.0
"""A worker beats at least every 5 s: a minute of silence means it died."""


def reap_dead(store: Store) -> tuple[list[int], list[int]]:
    """Mark failed the runs and evaluations whose worker died: on this machine a missing
    pid says so at once, elsewhere a minute without heartbeat. (run ids, job ids)."""
    runs = store.reap_stale(timeout=HEARTBEAT_TIMEOUT, is_alive=pid_alive)
    jobs = store.reap_stale_evals(timeout=HEARTBEAT_TIMEOUT, is_alive=pid_alive)
    return runs, jobs
