"""How long the dashboard takes to show its first page of runs, from a fresh interpreter."""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from caat_app.config import build_config
from caat_storage import RunStatus, Store

_STARTUP_PROBE = """
import sys
import caat_screens.runs
from caat_screens.app import CaatApp
from caat_storage import Store

show_page = caat_screens.runs.RunsScreen.on_runs_loaded


def first_page(screen, message):  # the moment a person sees the runs: stop the clock
    show_page(screen, message)
    screen.app.exit()


caat_screens.runs.RunsScreen.on_runs_loaded = first_page
with Store.open(sys.argv[1]) as store:
    CaatApp(store, gpus=[]).run(headless=True)
print("torch" in sys.modules)
"""


def dashboard_startup(*, runs: int = 1000, repeats: int = 5) -> dict[str, Any]:
    """Seconds from `python` starting to the runs table showing its first page, headless.

    A fresh interpreter each time, as a person's `caat` is, over a store of `runs` runs.
    """
    import subprocess
    import sys

    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'startup.db'}"
        with Store.open(url) as store:
            config = build_config({}).model_dump(mode="json")
            for i in range(runs):  # finished runs: queued ones would be started by the dashboard
                run_id = store.create_run(
                    name=f"run-{i}",
                    config=config,
                    method="caat",
                    param=0.8,
                    dataset="digits",
                    model="cnn",
                    eps=0.3,
                    epochs_total=30,
                )
                store.finish(run_id, RunStatus.FINISHED)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            proc = subprocess.run(
                [sys.executable, "-c", _STARTUP_PROBE, url],
                capture_output=True,
                text=True,
                timeout=120,
                check=True,
            )
            times.append(time.perf_counter() - start)
            if proc.stdout.split()[-1:] != ["False"]:
                raise RuntimeError("the dashboard imported torch")
    return {"seconds": statistics.median(times), "runs_in_store": runs, "repeats": repeats}
