"""Runs as Slurm jobs through `submitit`: one array task per queued run, each the ordinary
worker pointed at the (shared) store.

A run stays `queued` until its task starts: the task claims it in the store's dispatch
transaction (as a dashboard or an agent would) and trains it, or, when something else
took it meanwhile (an agent serving the same store, a cancel), exits at once. So no run
trains twice, and a cancelled run's task ends without work. Each run's folder records its
job in `slurm.json`; `caat cancel` reads it to cancel the job (`scancel`), so a running
worker gets SIGTERM, checkpoints and ends `cancelled`.

Evaluation jobs go the same way (`submit_evals`): each task claims its queued job and
runs the eval worker. A job has no folder of its own, so it is recorded in its run's
folder, as `slurm-eval-<job id>.json` (`job_of(run_dir, eval_job=…)` finds it).

`CAAT_SLURM_CLUSTER=local` submits to submitit's local executor instead (the same
submission path, for tests and for trying it on a laptop).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from caat_app.errors import CaatError
from caat_storage import Store

JOB_FILE = "slurm.json"
CLUSTER_ENV = "CAAT_SLURM_CLUSTER"


def minutes(text: str) -> int:
    """Slurm's time formats (`M`, `M:S`, `H:M:S`, `D-H`, `D-H:M`, `D-H:M:S`) in minutes."""
    days, dash, rest = text.strip().rpartition("-") if "-" in text else ("0", "", text.strip())
    fields = rest.split(":")
    if dash:
        fields = [*fields, "0", "0"][:3] if len(fields) <= 3 else []
    else:
        fields = {1: ["0", *fields, "0"], 2: ["0", *fields], 3: fields}.get(len(fields), [])
    if not fields or not all(f.isdigit() for f in (days, *fields)):
        raise CaatError(f"--slurm: time={text!r} is not a Slurm time (e.g. 12:00:00)")
    hours, mins, secs = (int(f) for f in fields)
    total = ((int(days) * 24 + hours) * 60 + mins) * 60 + secs
    return max(1, -(-total // 60))


def parameters(text: str) -> dict[str, Any]:
    """`partition=gpu,time=12:00:00,gpus-per-task=1` as submitit's executor parameters."""
    params: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise CaatError(f"--slurm: expected key=value pairs, got {item!r}")
        key, value = key.strip().replace("-", "_"), value.strip()
        if key == "time":
            params["timeout_min"] = minutes(value)
        else:
            params[f"slurm_{key}"] = int(value) if value.isdigit() else value
    return params


def check_cluster() -> str | None:
    """The cluster to submit to (None: Slurm), or a one-line error when there is none."""
    try:
        import submitit  # noqa: F401
    except ImportError:
        raise CaatError("--slurm needs submitit: pip install 'caat[slurm]'") from None

    cluster = os.environ.get(CLUSTER_ENV) or None
    if cluster is None and shutil.which("sbatch") is None:
        raise CaatError(f"--slurm: sbatch is not on the PATH (set {CLUSTER_ENV}=local to try it)")
    return cluster


def _executor(folder: Path, params: dict[str, Any]) -> Any:
    cluster = check_cluster()  # first: it says so when submitit is missing
    import submitit

    executor = submitit.AutoExecutor(folder=folder, cluster=cluster)
    try:
        executor.update_parameters(name="caat", **params)
    except (ValueError, TypeError) as exc:
        raise CaatError(f"--slurm: {' '.join(str(exc).split())[:300]}") from None
    return executor


def limit_threads() -> None:
    """Torch would start a thread per core of the node; a task has `cpus-per-task` cores
    (Slurm says how many), and tasks sharing a node must not fight over the rest."""
    cpus = os.environ.get("SLURM_CPUS_PER_TASK", "")
    if cpus.isdecimal() and int(cpus) > 0 and "OMP_NUM_THREADS" not in os.environ:
        os.environ["OMP_NUM_THREADS"] = cpus


def task(db_url: str, ident: int, kind: str = "run") -> str:
    """One array task: claim the run (`kind` "eval": the evaluation job) if it is still
    queued, then run it as a worker; exit at once when something else took it."""
    from caat_app.runs.launcher import claim_run
    from caat_app.runs.worker import main

    limit_threads()
    what, flag = ("evaluation", "--eval") if kind == "eval" else ("run", "--run")
    with Store.open(db_url) as store:
        claimed = store.claim_eval_job(ident) if kind == "eval" else claim_run(store, ident)
    if not claimed:
        return f"{what} {ident}: taken or cancelled before this job started"
    return f"{what} {ident}: worker exit {main(['--db', db_url, flag, str(ident)])}"


def _submit(store: Store, ids: Sequence[int], slurm: str, kind: str) -> list[dict[str, str]]:
    """One job array of `task`s, one per id; each task's record (job id, cluster, logs)."""
    folder = Path(store.runs_root()) / "slurm" / "%j"
    executor = _executor(folder, parameters(slurm))
    jobs = executor.map_array(task, [store.url] * len(ids), list(ids), [kind] * len(ids))
    cluster = executor.cluster
    return [{"job_id": str(job.job_id), "cluster": cluster, "folder": str(folder)} for job in jobs]


def _record(run_dir: str, name: str, record: dict[str, str]) -> None:
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    (Path(run_dir) / name).write_text(json.dumps(record))


def submit(store: Store, run_ids: Sequence[int], slurm: str) -> list[str]:
    """Submit the runs as one job array; returns the job ids (recorded in each run folder)."""
    if not run_ids:
        return []
    records = _submit(store, run_ids, slurm, "run")
    for run_id, record in zip(run_ids, records, strict=True):
        run = store.get_run(run_id)
        if run is not None:
            _record(run.run_dir, JOB_FILE, record)
    return [record["job_id"] for record in records]


def eval_job_file(job_id: int) -> str:
    """The file in its run's folder that records an evaluation job's Slurm job."""
    return f"slurm-eval-{job_id}.json"


def submit_evals(store: Store, job_ids: Sequence[int], slurm: str) -> list[str]:
    """Submit queued evaluation jobs as one job array; returns the Slurm job ids (each
    recorded in its run's folder, `eval_job_file`)."""
    if not job_ids:
        return []
    records = _submit(store, job_ids, slurm, "eval")
    for job_id, record in zip(job_ids, records, strict=True):
        job = store.get_eval_job(job_id)
        run = store.get_run(job.run_id) if job is not None else None
        if run is not None:
            _record(run.run_dir, eval_job_file(job_id), record)
    return [record["job_id"] for record in records]


def job_of(run_dir: str | Path, eval_job: int | None = None) -> dict[str, str] | None:
    """The Slurm job a run (or its evaluation job `eval_job`) was submitted as, if it was."""
    path = Path(run_dir) / (JOB_FILE if eval_job is None else eval_job_file(eval_job))
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return None


# Slurm states in which a job may still start its task, or is running it.
_LIVE_STATES = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED"}


def job_alive(job: dict[str, str]) -> bool:
    """Whether a recorded job is pending or running: its process on the local executor,
    `squeue` on Slurm (True when squeue is not here to ask: it is not known ended)."""
    from caat_app.runs.manage import pid_alive

    job_id = job.get("job_id", "")
    if job.get("cluster") == "local":
        return job_id.isdigit() and pid_alive(int(job_id))
    if shutil.which("squeue") is None:
        return True
    done = subprocess.run(
        ["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True, check=False
    )
    if done.returncode:  # ended long ago (purged), or squeue could not ask: say so only then
        return "invalid job id" not in done.stderr.lower()
    return bool(set(done.stdout.split()) & _LIVE_STATES)


def cancel_job(job: dict[str, str]) -> str:
    """Cancel a run's job: `scancel` on Slurm (SIGTERM to the worker, which checkpoints),
    SIGINT to the task's process on the local executor. Returns what was done."""
    job_id = job.get("job_id", "")
    if job.get("cluster") == "local":
        try:
            os.kill(int(job_id), signal.SIGINT)
        except (ValueError, ProcessLookupError):
            return f"local job {job_id} had ended"
        return f"local job {job_id} interrupted"
    if shutil.which("scancel") is None:
        raise CaatError(f"Slurm job {job_id}: scancel is not on the PATH here")
    done = subprocess.run(["scancel", job_id], capture_output=True, text=True, check=False)
    if done.returncode:
        raise CaatError(f"scancel {job_id}: {' '.join(done.stderr.split()) or 'failed'}")
    return f"Slurm job {job_id} cancelled"
