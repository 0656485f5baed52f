"""The worker process: `python -m caat_app.runs.worker --db URL --run ID` (or `--eval JOB`).

It trains one stored run, streams its metrics into the store through one batched
writer, keeps a heartbeat, and ends the run `finished`, `cancelled` (SIGTERM, SIGINT,
or SIGUSR2, Slurm's time-limit warning: a checkpoint is written first), `diverged` or
`failed` (with the traceback).
`execute_run` is also what `caat train` runs in the foreground. With `--eval` it runs
one evaluation job instead (`execute_eval`, which `caat eval` runs in the foreground).
A run with `gpus` > 1 spawns its other ranks from here (`training.distributed`); under
`torchrun --nproc-per-node N -m caat_app.runs.worker --db URL --run-id ID` (torchrun would
take `--run` for its own `--run-path`) rank 0 is this
process as usual and the other ranks follow the stored run, writing nothing.

A queued run that has steps done was resumed (`Store.prepare_resume` set them to its
checkpoint's): the worker continues it from the checkpoint in its folder. A run that
ends finished or diverged has its resume checkpoint removed; nothing will continue it.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from caat_app.errors import CaatError
from caat_app.runs.diskfull import DiskReserve, disk_full_reason
from caat_app.runs.stored import config_of
from caat_app.training.resume_point import discard_resume
from caat_storage import BatchWriter, RunStatus, Store, StoreError
from caat_storage.writer import patiently

RESERVE_FILE = ".disk-reserve"
"""Held in the run's folder while it trains (`DiskReserve`)."""
_LIVE_FIELDS = ("val_clean", "val_adv", "test_clean", "test_adv")


class StopFlag:
    """Set from a signal handler, read by the trainer once per step."""

    def __init__(self) -> None:
        self.stop = False

    def set(self, *_: Any) -> None:
        self.stop = True

    def install(self, *signals: signal.Signals) -> None:
        for sig in signals:
            signal.signal(sig, self.set)


class StoreSink:
    """Feeds the trainer's reports into the store's batched writer.

    Per-layer rows ride in the writer's batches; the layers' names are written once,
    with the run's first per-layer rows.
    """

    def __init__(self, writer: BatchWriter, flag: StopFlag, *extra: Any) -> None:
        self.writer = writer
        self.flag = flag
        self.extra = extra
        self.layers_named = False

    def steps(self, rows: list[dict[str, Any]]) -> None:
        last = rows[-1]
        self.writer.add_steps(rows)
        self.writer.set_run_fields(
            steps_done=last["step"] + 1, last_phi=last["phi"], last_mu=last["mu"]
        )
        self.writer.maybe_flush()
        for sink in self.extra:
            sink.steps(rows)

    def layers(
        self, names: Sequence[str], sizes: Sequence[int], rows: list[dict[str, Any]]
    ) -> None:
        if not self.layers_named:
            self.writer.name_layers(names, sizes)
            self.layers_named = True
        self.writer.add_layers(rows)

    def epoch(self, row: dict[str, Any], summary: dict[str, Any]) -> None:
        self.writer.add_epoch(row)
        self.writer.set_run_fields(**summary)
        self.writer.flush()
        for sink in self.extra:
            sink.epoch(row, summary)

    def should_stop(self) -> bool:
        self.writer.maybe_flush()  # keeps the heartbeat through long evaluations
        return self.flag.stop or any(sink.should_stop() for sink in self.extra)


class LogSink:
    """One line per epoch on stdout: the worker's log, which the dashboard tails."""

    def steps(self, rows: list[dict[str, Any]]) -> None:
        pass

    def epoch(self, row: dict[str, Any], summary: dict[str, Any]) -> None:
        print(
            f"epoch {row['epoch']}: "
            + "  ".join(f"{k} {row[k]:.4f}" for k in _LIVE_FIELDS)
            + f"  {row['images_per_sec']:.0f} img/s",
            flush=True,
        )

    def should_stop(self) -> bool:
        return False


def _with_heartbeat(beat: Callable[[], object], work: Callable[[], Any], every: float = 5.0) -> Any:
    """Run slow work (a data set download, an attack) in a thread while this one beats.

    Without it a dashboard would take a worker that is still downloading CIFAR, or deep
    in one long attack, for dead. Signals still reach this (the main) thread.
    """
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = work()
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=target, name="caat-setup", daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(every)
        if thread.is_alive():
            beat()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def execute_run(store: Store, run_id: int, flag: StopFlag, *extra: Any) -> RunStatus:
    """Train a queued run to its end and record the outcome; returns the final status.

    A run with steps done continues from its resume checkpoint (see the module's text).
    """
    from caat_app.data.splits import load_for_run
    from caat_app.training.trainer import train

    run = store.get_run(run_id)
    if run is None:
        raise StoreError(f"no run {run_id} in {store.url}")
    resume_step = run.steps_done or None
    run_dir = Path(run.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    store.mark_running(run_id, os.getpid())
    writer = BatchWriter(store, run_id, on_outage=_say_outage)
    reserve = DiskReserve(run_dir, RESERVE_FILE)  # room to record a full disk
    try:
        config = config_of(run)
        (run_dir / "config.json").write_text(json.dumps(config.model_dump(mode="json"), indent=2))
        data = _with_heartbeat(writer.flush, lambda: load_for_run(config))
        sink = StoreSink(writer, flag, *extra)
        result = train(
            config, sink, run_dir=run_dir, data=data, resume_step=resume_step, flush=writer.flush
        )
    except BaseException as exc:
        full = disk_full_reason(exc)
        reserve.release()
        try:
            writer.drain()
        finally:
            error = str(exc) if isinstance(exc, CaatError) else traceback.format_exc()
            patiently(lambda: store.finish(run_id, RunStatus.FAILED, error=full or error))
        if full:
            raise CaatError(f"run {run_id}: {full}") from exc
        raise
    reserve.release()
    writer.drain()  # a store that went away meanwhile gets every buffered row first
    status = RunStatus(result.status)  # the trainer's stop reason names a run status
    patiently(lambda: store.finish(run_id, status, fields=result.summary))
    if status in (RunStatus.FINISHED, RunStatus.DIVERGED):
        discard_resume(run_dir)
    return status


def execute_eval(
    store: Store,
    job_id: int,
    flag: StopFlag,
    on_start: Callable[[int, int, Any], None] | None = None,
    on_result: Callable[[dict[str, Any]], None] | None = None,
) -> tuple[RunStatus, list[dict[str, Any]]]:
    """Run a queued evaluation job to its end; returns its final status and its rows.

    Every measurement is stored as it completes; progress and a heartbeat go to the job.
    Stopping (SIGTERM, SIGINT) takes effect between batches and ends it `cancelled`.
    """
    from caat_app.evaluation.plan import plan, spec_from_json
    from caat_app.evaluation.runner import evaluate_run

    job = store.get_eval_job(job_id)
    if job is None:
        raise StoreError(f"no evaluation {job_id} in {store.url}")
    spec = spec_from_json(json.loads(job.spec))
    run = store.get_run(job.run_id)
    if run is None:
        raise StoreError(f"no run {job.run_id} in {store.url}")
    store.start_eval_job(job_id, os.getpid(), total=len(plan(spec)))

    def started(index: int, total: int, measurement: Any) -> None:
        store.eval_progress(job_id, done=index, current=measurement.label)
        if on_start is not None:
            on_start(index, total, measurement)

    try:
        rows = _with_heartbeat(
            lambda: store.eval_progress(job_id),
            lambda: evaluate_run(
                store,
                run,
                spec,
                should_stop=lambda: flag.stop,
                on_start=started,
                on_result=on_result,
            ),
        )
    except BaseException as exc:
        error = str(exc) if isinstance(exc, CaatError) else traceback.format_exc()
        store.finish_eval_job(job_id, RunStatus.FAILED, error=error)
        raise
    if rows is None:
        store.finish_eval_job(job_id, RunStatus.CANCELLED)
        return RunStatus.CANCELLED, []
    store.eval_progress(job_id, done=len(rows))
    store.finish_eval_job(job_id, RunStatus.FINISHED)
    return RunStatus.FINISHED, rows


def _say_outage(reason: str | None) -> None:
    """Into the worker's log: training goes on while the store is away, rows wait."""
    if reason is None:
        print("store reachable again: buffered rows written", flush=True)
    else:
        print(f"{reason}; training on, rows kept until it is back", flush=True)


def _log_result(row: dict[str, Any]) -> None:
    where = "stored" if row["cached"] else f"{row['seconds']:.1f} s"
    print(
        f"{row['attack']} at eps={row['eps']:.4g}: {100 * row['accuracy']:.1f}% ({where})",
        flush=True,
    )


def follow_stored_run(store: Store, run_id: int) -> None:
    """A `torchrun` rank other than 0: the stored run's config and checkpoint, writing nothing
    (rank 0, the ordinary `execute_run`, records it)."""
    from caat_app.training.trainer import follow_run

    run = store.get_run(run_id)
    if run is None:
        raise StoreError(f"no run {run_id} in {store.url}")
    config = config_of(run).model_dump(mode="json")
    follow_run(config, Path(run.run_dir), None, run.steps_done or None)


def _join_torchrun(store: Store, run_id: int) -> int:
    """This process's rank when `torchrun` started it (WORLD_SIZE > 1), else 0."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0
    from caat_app.training import distributed
    from caat_app.training.device import resolve_device

    run = store.get_run(run_id)
    if run is None:
        raise StoreError(f"no run {run_id} in {store.url}")
    return distributed.from_env(resolve_device(config_of(run).device).type).rank


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m caat_app.runs.worker", description=__doc__)
    parser.add_argument("--db", required=True, help="SQLAlchemy URL of the store")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument(
        "--run", "--run-id", type=int, help="id of a queued run to train (--run-id under torchrun)"
    )
    what.add_argument("--eval", type=int, help="id of a queued evaluation job")
    args = parser.parse_args(argv)
    flag = StopFlag()
    # SIGUSR2: Slurm's warning before a job's time limit (submitit asks for it), so a run
    # out of time checkpoints and ends `cancelled`, to be resumed, as on SIGTERM.
    flag.install(signal.SIGTERM, signal.SIGINT, signal.SIGUSR2)
    subject = f"run {args.run}" if args.run is not None else f"evaluation {args.eval}"
    try:
        with Store.open(args.db) as store:
            print(f"worker pid {os.getpid()}: {subject} in {args.db}", flush=True)
            if args.run is not None and _join_torchrun(store, args.run):
                follow_stored_run(store, args.run)
                return 0
            if args.run is not None:
                status = execute_run(store, args.run, flag, LogSink())
            else:
                status, _ = execute_eval(store, args.eval, flag, on_result=_log_result)
    except (CaatError, StoreError) as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
    except Exception:
        traceback.print_exc()
        return 1
    print(f"{subject} {status}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
