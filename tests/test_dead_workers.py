"""A worker that dies is shown `failed`, with the reason, by every command that shows
runs, and the reaper checks a pid only on the worker's own machine."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from helpers import run_cli

from caat_app.config import build_config
from caat_app.runs.manage import create_run, reap_dead
from caat_storage import Store
from caat_storage.status import this_host


@pytest.fixture
def db(tmp_path: Path) -> str:
    return str(tmp_path / "caat.db")


def running(store: Store, pid: int, host: str | None = None, age: float = 1.0) -> int:
    run_id = create_run(store, build_config({"name": f"r{pid}", "epochs": 1}))
    store.mark_running(run_id, pid, host)
    beat = datetime.now(UTC) - timedelta(seconds=age)
    store.update_run(run_id, heartbeat_at=beat, started_at=beat)
    return run_id


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_pid_is_judged_only_on_its_own_machine(db: str) -> None:
    gone = dead_pid()
    with Store.open(f"sqlite:///{db}") as store:
        here = running(store, gone)
        elsewhere = running(store, gone, host="gpu-node-7")
        silent = running(store, gone, host="gpu-node-8", age=600)
        assert store.get_run(here).host == this_host()  # type: ignore[union-attr]
        assert reap_dead(store) == ([here, silent], [])
        statuses = {r.id: (r.status, r.error or "") for r in store.list_runs()}
    assert statuses[elsewhere][0] == "running"  # a fresh heartbeat from another machine
    assert statuses[here][0] == "failed" and "died without reporting" in statuses[here][1]
    assert statuses[silent][0] == "failed" and "no heartbeat" in statuses[silent][1]


def test_every_command_shows_a_killed_worker_failed(
    db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    with Store.open(f"sqlite:///{db}") as store:
        run_id = running(store, sleeper.pid)
    assert run_cli("runs", "--db", db) == 0
    assert "running" in capsys.readouterr().out  # alive: left alone
    os.kill(sleeper.pid, signal.SIGKILL)
    sleeper.wait()
    assert run_cli("runs", "--db", db) == 0
    listed = capsys.readouterr().out
    assert "failed" in listed and "running" not in listed
    assert run_cli("show", str(run_id), "--db", db) == 0
    assert "worker died without reporting" in capsys.readouterr().out
    assert run_cli("delete", str(run_id), "--yes", "--db", db) == 0  # no longer refused
    assert f"run {run_id} deleted" in capsys.readouterr().out
