"""Starting, scheduling and stopping workers. Torch-free: the CLI and the dashboard use it."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from caat_app.runs.stored import option
from caat_storage import RunStatus, StoreError
from caat_storage.status import this_host

if TYPE_CHECKING:
    from caat_storage import Run, Store


def worker_command(db_url: str, run_id: int, *, kind: str = "run") -> list[str]:
    """The worker's command line; `kind` "run" trains, "eval" runs an evaluation job."""
    return [sys.executable, "-m", "caat_app.runs.worker", "--db", db_url, f"--{kind}", str(run_id)]


def _die_with_parent() -> None:
    """In the child before exec: the kernel SIGKILLs it when its parent dies (Linux)."""
    import ctypes

    pr_set_pdeathsig = 1
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(pr_set_pdeathsig, signal.SIGKILL)


def _spawn(
    command: list[str], log_path: Path, env: dict[str, str] | None, die_with_parent: bool = False
) -> Any:
    """Start a worker in its own session, output to `log_path`. It outlives its launcher
    (a dashboard may close), unless `die_with_parent` (an agent's workers die with it)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    linux = sys.platform.startswith("linux")
    with log_path.open("ab") as log:
        return subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **(env or {})},
            preexec_fn=_die_with_parent if die_with_parent and linux else None,
        )


def launch_worker(
    db_url: str,
    run_id: int,
    run_dir: Path,
    *,
    env: dict[str, str] | None = None,
    die_with_parent: bool = False,
) -> subprocess.Popen[bytes]:
    """Start a training worker; its stdout and stderr go to `worker.log` in the run's folder."""
    command = worker_command(db_url, run_id)
    return _spawn(command, run_dir / "worker.log", env, die_with_parent)  # type: ignore[no-any-return]


def eval_log(run_dir: Path, job_id: int) -> Path:
    """Where an evaluation job's worker writes its output: next to the run's own log."""
    return run_dir / f"eval-{job_id}.log"


def launch_eval_worker(
    db_url: str,
    job_id: int,
    run_dir: Path,
    *,
    env: dict[str, str] | None = None,
    die_with_parent: bool = False,
) -> subprocess.Popen[bytes]:
    """Start an evaluation worker for a queued or claimed job; output in the run's
    `eval-<job>.log`. `die_with_parent`: as for `launch_worker` (an agent's workers)."""
    env = {"CUDA_DEVICE_ORDER": "PCI_BUS_ID", **(env or {})}
    command = worker_command(db_url, job_id, kind="eval")
    return _spawn(command, eval_log(run_dir, job_id), env, die_with_parent)  # type: ignore[no-any-return]


def cpu_share(workers: int) -> dict[str, str]:
    """The environment that gives each of `workers` CPU workers its share of the cores."""
    return {"OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // workers))}


class Children:
    """The worker processes this process started, waited for so none stays a zombie.

    A zombie still answers `kill(pid, 0)`, so it would look alive to the reaper forever.
    """

    def __init__(self) -> None:
        self._procs: list[Any] = []
        self._lock = threading.Lock()  # the dashboard adds from one thread, polls from another

    def add(self, proc: Any) -> None:
        with self._lock:
            self._procs.append(proc)

    def running(self) -> list[Any]:
        """The workers started and not yet waited for, as of the last `poll`."""
        with self._lock:
            return list(self._procs)

    def poll(self) -> int:
        """Wait for the finished ones; how many are still running."""
        with self._lock:
            self._procs = [p for p in self._procs if getattr(p, "poll", lambda: 0)() is None]
            return len(self._procs)


def request_cancel(pid: int) -> bool:
    """Ask a worker to stop (it checkpoints and ends `cancelled`); False if it is gone."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    return True


# --------------------------------------------------------------------------- GPUs


@dataclass(frozen=True)
class Gpu:
    """One GPU as nvidia-smi numbers it (PCI bus order), which is what workers are given."""

    index: int
    name: str
    memory_mib: int


NVIDIA_SMI_QUERY = [
    "nvidia-smi",
    "--query-gpu=index,name,memory.total",
    "--format=csv,noheader,nounits",
]


def parse_nvidia_smi(text: str) -> list[Gpu]:
    """GPUs from `index, name, memory.total` CSV lines; lines that do not parse are skipped.

    The name is everything between the first and the last comma, so a name with a
    comma survives; a memory nvidia-smi cannot tell (`[N/A]`) is 0.
    """
    gpus = []
    for line in text.splitlines():
        index_text, _, rest = line.partition(",")
        name, _, memory_text = rest.rpartition(",")
        try:
            index = int(index_text.strip())
        except ValueError:
            continue
        try:
            memory = int(float(memory_text.strip()))
        except ValueError:
            memory = 0
        gpus.append(Gpu(index=index, name=name.strip() or "GPU", memory_mib=memory))
    return gpus


def list_gpus(timeout: float = 5.0) -> list[Gpu]:
    """This machine's NVIDIA GPUs, asked of nvidia-smi (never torch, which takes seconds).

    No nvidia-smi, an error or a hang: no GPUs, and runs go to the CPU.
    """
    if shutil.which(NVIDIA_SMI_QUERY[0]) is None:
        return []
    try:
        done = subprocess.run(
            NVIDIA_SMI_QUERY,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError):
        return []
    if done.returncode != 0:
        return []
    return parse_nvidia_smi(done.stdout)


# --------------------------------------------------------------------------- scheduling


class Launch(Protocol):
    """What starts a worker: `launch_worker`, or a fake in tests."""

    def __call__(
        self, db_url: str, run_id: int, run_dir: Path, *, env: dict[str, str] | None = None
    ) -> Any: ...


_CUDA_INDEX = re.compile(r"cuda:(\d+)")


def _device(run: Run) -> str:
    """The device a run's config asks for; `auto` when it is unreadable or not a name."""
    device = option(run, "device", "auto")
    return device if isinstance(device, str) else "auto"


def run_gpus(run: Run) -> int:
    """How many GPUs the run trains on (`--gpus`): 1 when unreadable."""
    count = option(run, "gpus", 1)
    return count if isinstance(count, int) and not isinstance(count, bool) and count > 0 else 1


def claim_run(store: Store, run_id: int) -> bool:
    """Take one queued run for this process (a foreground resume, a Slurm task), in the
    dispatch transaction every scheduler uses; False when it is not queued any more."""
    return bool(
        store.claim_runs(
            lambda running, queued: [(run_id, None)] if any(r.id == run_id for r in queued) else []
        )
    )


class Scheduler:
    """Starts queued runs while the machine has room: `max_cpu` CPU runs, `per_gpu` per GPU.

    Device rules, from the run's config:
    - `cpu`, or `auto` on a machine without GPUs: a CPU slot.
    - `auto` or `cuda`: the GPU with the fewest running runs (lowest index on a tie),
      given as `CUDA_VISIBLE_DEVICES=<index>`; inside the worker `cuda` (and `auto`)
      then means that one visible device.
    - `cuda:N`: waits for GPU N. The worker sees every GPU (its config names N, which
      would not exist if only one were visible); a GPU N the machine lacks fails the run.
    - any `cuda` with no GPU listed (no nvidia-smi): a CPU slot; the worker's own device
      check says what is wrong if there really is no GPU.
    - `gpus` N > 1 (one run data-parallel): N consecutive GPUs with room, starting at
      the one stored as the run's `gpu` (at N for `cuda:N`); more than the machine has
      fails the run.
    Workers get `CUDA_DEVICE_ORDER=PCI_BUS_ID`, so CUDA numbers GPUs as nvidia-smi does.

    Load is counted from the store (running runs and their `gpu`), so dashboards and CLIs
    on one machine agree; runs started outside a scheduler (gpu unset) are counted where
    their device says (`auto`/`cuda` on GPU 0). Runs whose worker records another host
    are not counted (that host's agent counts them); a claimed run whose worker has not
    started yet has no host and counts here, for a moment. Reap stale runs (Store.
    reap_stale) before dispatching, or a dead worker keeps its slot until then. `held`
    lists the slots of work that is no run (an agent's evaluations: a GPU index, or None
    for a CPU slot); they count as runs do.
    """

    def __init__(
        self,
        store: Store,
        *,
        gpus: list[Gpu],
        per_gpu: int = 1,
        max_cpu: int = 1,
        launch: Launch = launch_worker,
        share_cores: bool = True,
        held: Callable[[], Iterable[int | None]] | None = None,
    ) -> None:
        if per_gpu < 1 or max_cpu < 1:
            raise ValueError("per_gpu and max_cpu must be at least 1")
        self.store = store
        self.gpus = list(gpus)
        self.per_gpu = per_gpu
        self.max_cpu = max_cpu
        self.launch = launch
        self.share_cores = share_cores  # give each of `max_cpu` CPU workers its share of cores
        self.held = held  # slots taken by work that is no run (an agent's evaluations)
        self.children = Children()

    def _want(self, device: str) -> int | str:
        """`cpu`, `gpu` (any GPU) or a GPU index, for the device a run asks for."""
        match = _CUDA_INDEX.fullmatch(device)
        if not self.gpus or device == "cpu":
            return "cpu"
        if match:
            return int(match[1])
        return "gpu"  # auto, cuda

    def _plan(
        self,
        running: list[Run],
        queued: list[Run],
        rejected: list[tuple[int, str]],
        only: Collection[int] | None = None,
    ) -> list[tuple[int, int | None]]:
        load = {gpu.index: 0 for gpu in self.gpus}
        cpu = 0
        here = this_host()
        for run in running:
            if run.host not in (None, here):  # another host's GPUs and cores
                continue
            where: int | str = run.gpu if run.gpu is not None else self._want(_device(run))
            if where == "gpu":
                where = min(load)
            if where == "cpu":
                cpu += 1
                continue
            for index in range(int(where), int(where) + run_gpus(run)):  # consecutive GPUs
                if index in load:
                    load[index] += 1
        for slot in self.held() if self.held is not None else ():  # a GPU index, None: CPU
            if slot is None:
                cpu += 1
            elif slot in load:
                load[slot] += 1
        picks: list[tuple[int, int | None]] = []
        for run in queued:
            assert run.id is not None
            if only is not None and run.id not in only:
                continue
            want = self._want(_device(run))
            if want == "cpu":
                if cpu < self.max_cpu:
                    cpu += 1
                    picks.append((run.id, None))
                continue
            need = run_gpus(run)
            if isinstance(want, int) and want not in load:
                have = ", ".join(str(i) for i in load)
                rejected.append((run.id, f"device cuda:{want}: this machine has GPU(s) {have}"))
                continue
            if need > len(load):
                rejected.append((run.id, f"gpus {need}: this machine has {len(load)} GPU(s)"))
                continue
            index = self._window(load, need, None if want == "gpu" else int(want))
            if index is None:
                continue
            for i in range(index, index + need):
                load[i] += 1
            picks.append((run.id, index))
        return picks

    def _window(self, load: dict[int, int], need: int, start: int | None) -> int | None:
        """The first of `need` consecutive GPUs with room (the least loaded, lowest index
        on a tie; only `start` when the run names its GPU), or None while all are full."""
        starts = [start] if start is not None else sorted(load)
        fits = [
            s
            for s in starts
            if all(load.get(s + k, self.per_gpu) < self.per_gpu for k in range(need))
        ]
        if not fits:
            return None
        return min(fits, key=lambda s: (max(load[s + k] for k in range(need)), s))

    def _env(self, run: Run, gpu: int | None) -> dict[str, str]:
        if gpu is None:
            # CPU workers share the cores: more threads than cores makes PyTorch's
            # OpenMP pool spin against itself, several times slower than sharing fairly.
            return cpu_share(self.max_cpu) if self.share_cores else {}
        env = {"CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
        if not _CUDA_INDEX.fullmatch(_device(run)):
            env["CUDA_VISIBLE_DEVICES"] = ",".join(str(gpu + k) for k in range(run_gpus(run)))
        return env

    def dispatch(self, only: Collection[int] | None = None, limit: int | None = None) -> list[int]:
        """Start the queued runs (oldest first) that fit now; returns their ids.

        `only` limits it to some runs (`caat train --detach` starts its own, no other).

        A run is claimed in the store before its worker starts, so another dispatcher
        cannot start it too; a launch that fails ends the run `failed` with the reason.
        """
        self.children.poll()
        rejected: list[tuple[int, str]] = []
        claimed = self.store.claim_runs(
            lambda running, queued: self._plan(running, queued, rejected, only)[:limit]
        )
        for run_id, error in rejected:
            self.store.finish_if(
                run_id, RunStatus.FAILED, when={"status": RunStatus.QUEUED.value}, error=error
            )
        started = []
        for run_id, gpu in claimed:
            run = self.store.get_run(run_id)
            if run is None:  # deleted in the moment since the claim
                continue
            try:
                proc = self.launch(
                    self.store.url, run_id, Path(run.run_dir), env=self._env(run, gpu)
                )
            except Exception as exc:
                message = f"could not start its worker: {exc}"
                self.store.finish_if(
                    run_id,
                    RunStatus.FAILED,
                    when={"status": RunStatus.RUNNING.value, "pid": None},
                    error=message,
                )
                continue
            self.children.add(proc)
            try:
                self.store.update_run(run_id, pid=proc.pid, host=this_host())
            except StoreError:
                continue  # deleted meanwhile: the worker finds no run and exits
            started.append(run_id)
        return started
