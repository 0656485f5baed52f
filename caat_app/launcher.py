"""Starting and stopping worker processes. Torch-free: the CLI and the dashboard use it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path


def worker_command(db_url: str, run_id: int) -> list[str]:
    return [sys.executable, "-m", "caat_app.worker", "--db", db_url, "--run", str(run_id)]


def launch_worker(
    db_url: str, run_id: int, run_dir: Path, *, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start a worker in its own session so it outlives the process that launched it.

    Its stdout and stderr go to `worker.log` in the run's folder.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    with (run_dir / "worker.log").open("ab") as log:
        return subprocess.Popen(
            worker_command(db_url, run_id),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **(env or {})},
        )


def request_cancel(pid: int) -> bool:
    """Ask a worker to stop (it checkpoints and ends `cancelled`); False if it is gone."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    return True
