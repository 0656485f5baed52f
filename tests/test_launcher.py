"""Workers: GPU discovery, the scheduler's slots and queue, and a torch-free launcher."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from caat_app.runs.launcher import Gpu, Scheduler, list_gpus, parse_nvidia_smi
from caat_storage import RunStatus, Store

ROOT = Path(__file__).resolve().parents[1]

H100_X2 = "0, NVIDIA H100 80GB HBM3, 81559\n1, NVIDIA H100 80GB HBM3, 81559\n"
GPUS = [Gpu(0, "NVIDIA H100 80GB HBM3", 81559), Gpu(1, "NVIDIA H100 80GB HBM3", 81559)]


# -- nvidia-smi -----------------------------------------------------------------------------


def test_parse_nvidia_smi() -> None:
    assert parse_nvidia_smi(H100_X2) == GPUS
    odd = (
        "0, Tesla T4, 15360\r\n"
        "\n"
        "1, NVIDIA RTX A6000, Ada, 49140\n"  # a comma in the name
        "2, NVIDIA A100-SXM4-40GB MIG, [N/A]\n"
        "No devices were found\n"
        "garbage\n"
    )
    assert parse_nvidia_smi(odd) == [
        Gpu(0, "Tesla T4", 15360),
        Gpu(1, "NVIDIA RTX A6000, Ada", 49140),
        Gpu(2, "NVIDIA A100-SXM4-40GB MIG", 0),
    ]
    assert parse_nvidia_smi("") == []


def _fake_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, script: str) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    smi = bin_dir / "nvidia-smi"
    smi.write_text(f"#!/bin/sh\n{script}\n")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))


def test_list_gpus_asks_nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_smi(tmp_path, monkeypatch, f"printf '{H100_X2}'")
    assert list_gpus() == GPUS


def test_list_gpus_without_a_usable_nvidia_smi(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert list_gpus() == []
    _fake_smi(tmp_path, monkeypatch, "echo 'NVIDIA-SMI has failed' >&2; exit 9")
    assert list_gpus() == []
    _fake_smi(tmp_path, monkeypatch, "exec sleep 30")
    assert list_gpus(timeout=0.2) == []


# -- the scheduler --------------------------------------------------------------------------


@dataclass
class FakeProc:
    pid: int


@dataclass
class FakeLaunch:
    """Records each launch as (run id, env) and hands out pids; can be told to fail."""

    calls: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    fail_for: set[int] = field(default_factory=set)

    def __call__(
        self, db_url: str, run_id: int, run_dir: Path, *, env: dict[str, str] | None = None
    ) -> FakeProc:
        assert db_url.startswith("sqlite:///") and run_dir.name == str(run_id)
        if run_id in self.fail_for:
            raise OSError(f"no such file: python for run {run_id}")
        self.calls.append((run_id, dict(env or {})))
        return FakeProc(pid=50000 + run_id)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(f"sqlite:///{tmp_path / 'caat.db'}") as opened:
        yield opened


def _queue(store: Store, device: str = "auto", name: str = "run") -> int:
    return store.create_run(
        name=name,
        config={"device": device, "dataset": "digits"},
        method="caat",
        param=0.8,
        dataset="digits",
        model="cnn",
        eps=0.3,
        epochs_total=1,
    )


def _status(store: Store, run_id: int) -> str:
    run = store.get_run(run_id)
    assert run is not None
    return run.status


def _end(store: Store, run_id: int) -> None:
    store.finish(run_id, RunStatus.FINISHED)


def test_nothing_to_do(store: Store) -> None:
    launch = FakeLaunch()
    assert Scheduler(store, gpus=GPUS, launch=launch).dispatch() == []
    done = _queue(store)
    store.finish(done, RunStatus.CANCELLED)
    assert Scheduler(store, gpus=GPUS, launch=launch).dispatch() == []
    assert launch.calls == []


def test_cpu_slot_limit(store: Store) -> None:
    launch = FakeLaunch()
    scheduler = Scheduler(store, gpus=[], max_cpu=2, launch=launch)
    ids = [_queue(store, device) for device in ("cpu", "auto", "cpu", "auto")]
    assert scheduler.dispatch() == ids[:2]
    assert [call[0] for call in launch.calls] == ids[:2]
    # CPU runs share the cores: each worker gets its share of threads, and nothing else.
    assert launch.calls[0][1] == {"OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // 2))}
    run = store.get_run(ids[0])
    assert run is not None
    assert (run.status, run.gpu, run.pid) == ("running", None, 50000 + ids[0])
    assert scheduler.dispatch() == []  # full
    assert [_status(store, i) for i in ids[2:]] == ["queued", "queued"]
    _end(store, ids[0])
    assert scheduler.dispatch() == [ids[2]]
    assert scheduler.dispatch() == []


def test_cpu_runs_on_a_gpu_machine_take_cpu_slots(store: Store) -> None:
    launch = FakeLaunch()
    cpu = [_queue(store, "cpu") for _ in range(2)]
    gpu = _queue(store, "auto")
    assert Scheduler(store, gpus=GPUS, launch=launch).dispatch() == [cpu[0], gpu]
    assert _status(store, cpu[1]) == "queued"


def test_per_gpu_limit(store: Store) -> None:
    launch = FakeLaunch()
    scheduler = Scheduler(store, gpus=GPUS, per_gpu=2, launch=launch)
    ids = [_queue(store, "cuda") for _ in range(5)]
    assert scheduler.dispatch() == ids[:4]
    gpus = [store.get_run(i).gpu for i in ids[:4]]  # type: ignore[union-attr]
    assert gpus == [0, 1, 0, 1]  # least loaded, lowest index on a tie
    assert launch.calls[0][1] == {"CUDA_VISIBLE_DEVICES": "0", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    assert launch.calls[1][1]["CUDA_VISIBLE_DEVICES"] == "1"
    assert scheduler.dispatch() == []
    _end(store, ids[1])  # GPU 1 has room again
    assert scheduler.dispatch() == [ids[4]]
    run = store.get_run(ids[4])
    assert run is not None and run.gpu == 1


def test_least_loaded_gpu(store: Store) -> None:
    gpus = [Gpu(0, "a", 1), Gpu(1, "b", 1), Gpu(2, "c", 1)]
    launch = FakeLaunch()
    scheduler = Scheduler(store, gpus=gpus, per_gpu=3, launch=launch)
    busy = [_queue(store, "cuda:0"), _queue(store, "cuda:0"), _queue(store, "cuda:2")]
    assert scheduler.dispatch() == busy
    new = _queue(store, "auto")
    assert scheduler.dispatch() == [new]
    run = store.get_run(new)
    assert run is not None and run.gpu == 1
    assert launch.calls[-1][1]["CUDA_VISIBLE_DEVICES"] == "1"


def test_a_named_gpu_waits_for_that_gpu(store: Store) -> None:
    launch = FakeLaunch()
    scheduler = Scheduler(store, gpus=GPUS, launch=launch)
    on_one = _queue(store, "cuda:1", name="holds GPU 1")
    assert scheduler.dispatch() == [on_one]
    # A cuda:N worker sees every GPU, numbered as nvidia-smi numbers them: its config
    # says cuda:1, which would not exist if only one GPU were visible.
    assert launch.calls[-1][1] == {"CUDA_DEVICE_ORDER": "PCI_BUS_ID"}

    waits = _queue(store, "cuda:1", name="wants GPU 1")
    later = _queue(store, "auto", name="anything")
    assert scheduler.dispatch() == [later]  # the later run takes GPU 0; cuda:1 waits
    later_run = store.get_run(later)
    assert later_run is not None and later_run.gpu == 0
    assert _status(store, waits) == "queued"
    assert scheduler.dispatch() == []

    _end(store, on_one)
    assert scheduler.dispatch() == [waits]
    run = store.get_run(waits)
    assert run is not None and run.gpu == 1


def test_a_gpu_the_machine_lacks_fails_the_run(store: Store) -> None:
    launch = FakeLaunch()
    missing = _queue(store, "cuda:7")
    fine = _queue(store, "cuda:0")
    assert Scheduler(store, gpus=GPUS, launch=launch).dispatch() == [fine]
    run = store.get_run(missing)
    assert run is not None and run.status == "failed"
    assert run.error == "device cuda:7: this machine has GPU(s) 0, 1"


def test_cuda_without_listed_gpus_takes_a_cpu_slot(store: Store) -> None:
    launch = FakeLaunch()
    first, second = _queue(store, "cuda"), _queue(store, "cuda:1")
    assert Scheduler(store, gpus=[], launch=launch).dispatch() == [first]
    # the worker's own device check decides; as a CPU run it gets every core
    assert launch.calls == [(first, {"OMP_NUM_THREADS": str(os.cpu_count() or 1)})]
    assert _status(store, second) == "queued"


def test_queue_order_is_oldest_first(store: Store) -> None:
    launch = FakeLaunch()
    ids = [_queue(store, "cpu", name=f"q{i}") for i in range(4)]
    scheduler = Scheduler(store, gpus=[], launch=launch)
    started = []
    for run_id in ids:
        started += scheduler.dispatch()
        _end(store, run_id)
    assert started == ids
    assert [call[0] for call in launch.calls] == ids


def test_runs_started_elsewhere_count(store: Store) -> None:
    """Runs another dashboard or a foreground CLI started occupy their slots too."""
    launch = FakeLaunch()
    foreground = _queue(store, "auto")
    store.mark_running(foreground, pid=1)  # `caat train` in a terminal: no gpu recorded
    cpu = _queue(store, "cpu")
    store.mark_running(cpu, pid=2)
    gpu_run, cpu_run = _queue(store, "cuda"), _queue(store, "cpu")
    assert Scheduler(store, gpus=GPUS, launch=launch).dispatch() == [gpu_run]
    run = store.get_run(gpu_run)
    assert run is not None and run.gpu == 1  # GPU 0 holds the foreground run
    assert _status(store, cpu_run) == "queued"


def test_two_schedulers_share_the_limits(store: Store, tmp_path: Path) -> None:
    launch = FakeLaunch()
    with Store.open(store.url) as other_store:
        ids = [_queue(store, "cuda") for _ in range(3)]
        first = Scheduler(store, gpus=GPUS, launch=launch).dispatch()
        second = Scheduler(other_store, gpus=GPUS, launch=launch).dispatch()
    assert first == ids[:2] and second == []
    assert sorted(call[0] for call in launch.calls) == ids[:2]


def test_a_launch_that_raises_fails_its_run(store: Store) -> None:
    bad, good = _queue(store, "cpu"), _queue(store, "cpu")
    launch = FakeLaunch(fail_for={bad})
    scheduler = Scheduler(store, gpus=[], max_cpu=2, launch=launch)
    assert scheduler.dispatch() == [good]
    run = store.get_run(bad)
    assert run is not None and run.status == "failed"
    assert run.error == f"could not start its worker: no such file: python for run {bad}"
    assert _status(store, good) == "running"


def test_the_stored_config_is_not_rewritten(store: Store) -> None:
    run_id = _queue(store, "cuda")
    before = store.get_run(run_id)
    Scheduler(store, gpus=GPUS, launch=FakeLaunch()).dispatch()
    after = store.get_run(run_id)
    assert before is not None and after is not None
    assert after.config == before.config and json.loads(after.config)["device"] == "cuda"


def test_bad_limits_are_refused(store: Store) -> None:
    for kwargs in ({"per_gpu": 0}, {"max_cpu": 0}):
        with pytest.raises(ValueError, match="at least 1"):
            Scheduler(store, gpus=GPUS, **kwargs)  # type: ignore[arg-type]


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_ended_workers_are_waited_for(store: Store) -> None:
    """The scheduler keeps its Popens and polls them, so an ended worker is no zombie."""
    procs: list[subprocess.Popen[bytes]] = []

    def launch(db_url: str, run_id: int, run_dir: Path, *, env: Any = None) -> Any:
        procs.append(subprocess.Popen([sys.executable, "-c", "pass"]))
        return procs[-1]

    scheduler = Scheduler(store, gpus=[], launch=launch)
    run_id = _queue(store, "cpu")
    assert scheduler.dispatch() == [run_id]
    stat = Path(f"/proc/{procs[0].pid}/stat")
    deadline = time.monotonic() + 10
    while stat.read_text().rpartition(")")[2].split()[0] != "Z":  # exited, not waited for
        assert time.monotonic() < deadline
        time.sleep(0.01)
    _end(store, run_id)
    assert scheduler.dispatch() == []
    assert procs[0].returncode == 0 and not stat.exists()


# -- no torch -------------------------------------------------------------------------------


def test_the_manage_modules_do_not_import_torch() -> None:
    code = (
        "import caat_app.runs.manage, caat_app.runs.launcher, caat_storage; import sys; "
        "print('torch' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def _queue_wide(store: Store, gpus: int, device: str = "auto") -> int:
    return store.create_run(
        name=f"on {gpus}",
        config={"device": device, "dataset": "digits", "gpus": gpus},
        method="caat",
        param=0.8,
        dataset="digits",
        model="cnn",
        eps=0.3,
        epochs_total=1,
    )


def test_a_run_on_several_gpus_gets_that_many_consecutive_ones(store: Store) -> None:
    gpus = [Gpu(i, "h", 1) for i in range(4)]
    launch = FakeLaunch()
    scheduler = Scheduler(store, gpus=gpus, launch=launch)
    single = _queue(store, "cuda:1", name="holds GPU 1")
    assert scheduler.dispatch() == [single]
    wide = _queue_wide(store, 2)
    assert scheduler.dispatch() == [wide]  # GPUs 0-1 are busy at 1: it takes 2 and 3
    run = store.get_run(wide)
    assert run is not None and run.gpu == 2
    assert launch.calls[-1][1]["CUDA_VISIBLE_DEVICES"] == "2,3"
    after = _queue(store, "auto", name="anything")
    assert scheduler.dispatch() == [after]
    after_run = store.get_run(after)
    assert after_run is not None and after_run.gpu == 0  # the only free GPU left
    another = _queue_wide(store, 2)
    assert scheduler.dispatch() == []  # no two free GPUs side by side
    _end(store, wide)
    assert scheduler.dispatch() == [another]


def test_a_run_wanting_more_gpus_than_the_machine_has_fails(store: Store) -> None:
    too_wide = _queue_wide(store, 3)
    assert Scheduler(store, gpus=GPUS, launch=FakeLaunch()).dispatch() == []
    run = store.get_run(too_wide)
    assert run is not None and run.status == "failed"
    assert run.error == "gpus 3: this machine has 2 GPU(s)"


def test_a_multi_rank_run_without_gpus_takes_one_cpu_slot(store: Store) -> None:
    on_cpu = _queue_wide(store, 2, "cpu")
    assert Scheduler(store, gpus=GPUS, launch=FakeLaunch()).dispatch() == [on_cpu]
