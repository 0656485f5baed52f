"""Managing runs as the CLI and the dashboard do: cancel, delete, re-launch, pid checks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from caat_app.errors import CaatError
from caat_app.runs.manage import cancel_run, delete_run, pid_alive, relaunch_config
from caat_storage import Run, RunStatus, Store
from caat_storage.status import this_host

CONFIG = {"name": "orig", "method": "caat", "gamma": 0.7, "dataset": "digits", "device": "cpu"}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(f"sqlite:///{tmp_path / 'store' / 'caat.db'}") as opened:
        yield opened


def _new_run(store: Store, name: str = "run") -> Run:
    run_id = store.create_run(
        name=name,
        config=CONFIG,
        method="caat",
        param=0.7,
        dataset="digits",
        model="cnn",
        eps=0.3,
        epochs_total=2,
    )
    run = store.get_run(run_id)
    assert run is not None
    return run


def _reload(store: Store, run: Run) -> Run:
    assert run.id is not None
    fresh = store.get_run(run.id)
    assert fresh is not None
    return fresh


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A live process standing in for a worker."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()  # reaped: the pid names nothing now (barring reuse within milliseconds)
    return proc.pid


# -- pid_alive ------------------------------------------------------------------------------


def test_pid_alive(sleeper: subprocess.Popen[bytes]) -> None:
    assert pid_alive(os.getpid())
    assert pid_alive(sleeper.pid)
    assert not pid_alive(_dead_pid())
    assert not pid_alive(0) and not pid_alive(-1)
    assert not pid_alive(2**22 + 12345)  # above any pid_max


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_a_zombie_is_not_alive() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        deadline = time.monotonic() + 10
        while Path(f"/proc/{proc.pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z":
            assert time.monotonic() < deadline, "the child never exited"
            time.sleep(0.01)
        os.kill(proc.pid, 0)  # signal 0 still reaches a zombie...
        assert not pid_alive(proc.pid)  # ...but it is not alive
    finally:
        proc.wait()


def test_a_process_with_parentheses_in_its_name(tmp_path: Path) -> None:
    odd = tmp_path / "a) Z (b"
    odd.symlink_to(sys.executable)
    proc = subprocess.Popen([str(odd), "-c", "import time; time.sleep(30)"])
    try:
        assert pid_alive(proc.pid)
    finally:
        proc.kill()
        proc.wait()


# -- delete ---------------------------------------------------------------------------------


def _with_folder(store: Store, run: Run) -> Path:
    folder = Path(run.run_dir)
    (folder / "ckpt").mkdir(parents=True)
    (folder / "worker.log").write_text("log")
    (folder / "ckpt" / "last.pt").write_bytes(b"x")
    return folder


def test_delete_removes_rows_and_folder(store: Store) -> None:
    run = _new_run(store)
    keep = _new_run(store, name="keep")
    assert run.id is not None
    folder = _with_folder(store, run)
    kept_folder = _with_folder(store, keep)
    store.append_metrics(run.id, steps=[{"step": 0, "epoch": 0, "t": 0.0}])
    store.finish(run.id, RunStatus.FINISHED)

    assert delete_run(store, run) == folder
    assert store.get_run(run.id) is None and store.steps(run.id) == []
    assert not folder.exists()
    assert kept_folder.is_dir() and store.get_run(keep.id or 0) is not None
    with pytest.raises(CaatError, match="no longer exists"):
        delete_run(store, run)


def test_delete_without_a_folder(store: Store) -> None:
    run = _new_run(store)
    store.finish(run.id or 0, RunStatus.FAILED)
    assert delete_run(store, run) is None
    assert store.get_run(run.id or 0) is None


@pytest.mark.parametrize("status", ["queued", "running"])
def test_delete_refuses_an_active_run(store: Store, status: str) -> None:
    run = _new_run(store)
    folder = _with_folder(store, run)
    if status == "running":
        store.mark_running(run.id or 0, pid=os.getpid())
    with pytest.raises(CaatError, match=f"is {status}; cancel it before deleting it") as info:
        delete_run(store, run)
    assert "\n" not in str(info.value)
    assert store.get_run(run.id or 0) is not None and folder.is_dir()


def test_delete_uses_the_stored_status_not_a_stale_copy(store: Store) -> None:
    run = _new_run(store)
    store.finish(run.id or 0, RunStatus.FINISHED)
    finished_copy = _reload(store, run)
    store.update_run(run.id or 0, status="running")  # rerun since the copy was read
    with pytest.raises(CaatError, match="is running"):
        delete_run(store, finished_copy)


@pytest.mark.parametrize(
    "where",
    ["outside the runs folder", "named by another id", "a link to elsewhere", "relative"],
)
def test_delete_never_touches_a_folder_that_is_not_the_runs(
    store: Store, tmp_path: Path, where: str
) -> None:
    run = _new_run(store)
    assert run.id is not None
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    root = store.runs_root()
    if where == "outside the runs folder":
        target = tmp_path / str(run.id)  # right name, wrong place
        target.mkdir()
        run_dir = str(target)
    elif where == "named by another id":
        target = root / "999"
        target.mkdir(parents=True)
        run_dir = str(target)
    elif where == "a link to elsewhere":
        root.mkdir(parents=True)
        (root / str(run.id)).symlink_to(precious, target_is_directory=True)
        run_dir = str(root / str(run.id))
        target = precious
    else:
        run_dir = str(run.id)
        target = precious
    store.update_run(run.id, run_dir=run_dir, status="finished")

    delete_run(store, run)
    assert store.get_run(run.id) is None
    assert target.is_dir()
    assert (precious / "thesis.tex").read_text() == "years of work"
    if where == "a link to elsewhere":
        assert not (root / str(run.id)).exists()  # the link itself went, not what it points at


def test_delete_via_dotdot_is_refused(store: Store, tmp_path: Path) -> None:
    run = _new_run(store)
    assert run.id is not None
    elsewhere = store.runs_root() / ".." / "other" / str(run.id)
    elsewhere.mkdir(parents=True)
    store.update_run(run.id, run_dir=str(elsewhere), status="failed")
    delete_run(store, run)
    assert elsewhere.is_dir()


# -- cancel ---------------------------------------------------------------------------------


def test_cancel_a_queued_run(store: Store) -> None:
    run = _new_run(store)
    cancel_run(store, run)
    fresh = _reload(store, run)
    assert fresh.status == RunStatus.CANCELLED and fresh.finished_at is not None


def test_cancel_a_running_run_sends_sigterm(store: Store, sleeper: subprocess.Popen[bytes]) -> None:
    run = _new_run(store)
    store.mark_running(run.id or 0, pid=sleeper.pid)
    cancel_run(store, run)
    assert sleeper.wait(timeout=10) == -signal.SIGTERM
    assert _reload(store, run).status == RunStatus.RUNNING  # the worker records its own end


def test_cancel_a_launched_worker_that_has_not_started(
    store: Store, sleeper: subprocess.Popen[bytes]
) -> None:
    run = _new_run(store)
    assert store.claim_runs(lambda running, queued: [(run.id or 0, None)]) == [(run.id, None)]
    store.update_run(run.id or 0, pid=sleeper.pid)
    cancel_run(store, run)
    # It could die of the signal before installing its handler: the row already says so.
    assert _reload(store, run).status == RunStatus.CANCELLED
    assert sleeper.wait(timeout=10) == -signal.SIGTERM


def test_cancel_a_run_whose_worker_is_starting(store: Store) -> None:
    run = _new_run(store)
    store.claim_runs(lambda running, queued: [(run.id or 0, None)])
    with pytest.raises(CaatError, match="starting"):
        cancel_run(store, run)
    assert _reload(store, run).status == RunStatus.RUNNING


def test_cancel_a_run_whose_worker_died(store: Store) -> None:
    run = _new_run(store)
    pid = _dead_pid()
    store.mark_running(run.id or 0, pid=pid)
    with pytest.raises(CaatError, match=f"pid {pid}.*died without reporting; marked failed"):
        cancel_run(store, run)
    fresh = _reload(store, run)
    assert fresh.status == RunStatus.FAILED
    assert fresh.error is not None
    assert fresh.error.startswith(
        f"worker died without reporting (pid {pid} on {this_host()}, last heartbeat "
    )


@pytest.mark.parametrize("status", ["finished", "failed", "cancelled", "diverged"])
def test_cancel_an_ended_run_is_refused(store: Store, status: str) -> None:
    run = _new_run(store)
    store.finish(run.id or 0, RunStatus(status))
    with pytest.raises(CaatError, match=f"run {run.id} is {status}, not running") as info:
        cancel_run(store, run)
    assert "\n" not in str(info.value)
    assert _reload(store, run).status == status


def test_cancel_reads_the_store_not_the_copy(store: Store) -> None:
    run = _new_run(store)  # the copy says queued
    store.finish(run.id or 0, RunStatus.FINISHED)
    with pytest.raises(CaatError, match="is finished"):
        cancel_run(store, run)
    assert _reload(store, run).status == RunStatus.FINISHED


# -- re-launch ------------------------------------------------------------------------------


def test_relaunch_config_drops_only_the_name(store: Store) -> None:
    run = _new_run(store)
    config = relaunch_config(run)
    assert config == {k: v for k, v in CONFIG.items() if k != "name"}
    assert json.loads(run.config)["name"] == "orig"  # the stored run is untouched


def test_relaunch_config_of_a_broken_row(store: Store) -> None:
    run = _new_run(store)
    store.update_run(run.id or 0, config="{not json")
    with pytest.raises(CaatError, match="not valid JSON"):
        relaunch_config(_reload(store, run))
