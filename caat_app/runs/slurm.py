"""Runs as Slurm jobs through `submitit`: one array task per queued run, each the ordinary
worker pointed at the (shared) store.

A run stays `queued` until its task starts: the task claims it in the store's dispatch
transaction (as a dashboard or an agent would) and trains it, or, when something else
took it meanwhile (an agent serving the same store, a cancel), exits at once. So no run
trains twice, and a cancelled run's task ends without work. Each run's folder records its
job in `slurm.json`; `caat cancel` reads it to cancel the job (`scancel`), so a running
worker gets SIGTERM, checkpoints and ends `cancelled`.

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


def _executor(folder: Path, params: dict[str, Any]) -> Any:
    try:
        import submitit
    except ImportError:
        raise CaatError("--slurm needs submitit: pip install 'caat[slurm]'") from None

    cluster = os.environ.get(CLUSTER_ENV) or None
    if cluster is None and shutil.which("sbatch") is None:
        raise CaatError(f"--slurm: sbatch is not on the PATH (set {CLUSTER_ENV}=local to try it)")
    executor = submitit.AutoExecutor(folder=folder, cluster=cluster)
    try:
        executor.update_parameters(name="caat", **params)
    except (ValueError, TypeError) as exc:
        raise CaatError(f"--slurm: {' '.join(str(exc).split())[:300]}") from None
    return executor


def task(db_url: str, run_id: int) -> str:
    """One array task: claim the run if it is still queued, then train it as a worker."""
    from caat_app.runs.launcher import claim_run
    from caat_app.runs.worker import main

    with Store.open(db_url) as store:
        claimed = claim_run(store, run_id)
    if not claimed:
        return f"run {run_id}: taken or cancelled before this job started"
    return f"run {run_id}: worker exit {main(['--db', db_url, '--run', str(run_id)])}"


def submit(store: Store, run_ids: Sequence[int], slurm: str) -> list[str]:
    """Submit the runs as one job array; returns the job ids (recorded in each run folder)."""
    if not run_ids:
        return []
    folder = Path(store.runs_root()) / "slurm" / "%j"
    executor = _executor(folder, parameters(slurm))
    urls = [store.url] * len(run_ids)
    jobs = executor.map_array(task, urls, list(run_ids))
    cluster = executor.cluster
    for run_id, job in zip(run_ids, jobs, strict=True):
        run = store.get_run(run_id)
        if run is not None:
            record = {"job_id": str(job.job_id), "cluster": cluster, "folder": str(folder)}
            Path(run.run_dir).mkdir(parents=True, exist_ok=True)
            (Path(run.run_dir) / JOB_FILE).write_text(json.dumps(record))
    return [str(job.job_id) for job in jobs]


def job_of(run_dir: str | Path) -> dict[str, str] | None:
    """The Slurm job a run was submitted as, if it was."""
    path = Path(run_dir) / JOB_FILE
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return None


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
