"""One run on several processes (GPUs, or CPU ranks with gloo): PyTorch's own data parallelism.

Every rank holds the whole model (same seed, same weights) and sees the same global
batch order and augmentation; it takes its shard of each global batch, attacks it and
fills its (2, P) gradient buffer with g_c and g_a of its shard. One all-reduce averages
the buffer, and the projection (and φ, μ) is computed after it, so with equal shards a
step is the single-process step on the global batch. The step's recorded means (losses,
accuracies) are averaged the same way.

Rank 0 is the run: it writes to the store, saves checkpoints and measures each epoch;
the other ranks follow, with a sink that drops everything. They agree on stopping every
`log_every` steps and at each epoch's end (rank 0's decision, broadcast), never on a
timer, so every rank takes the same number of steps. BatchNorm in a rank's forward pass
uses that rank's shard statistics, as PyTorch's plain (non-sync) BatchNorm does in
DistributedDataParallel and as the official code's `batchstats` trick does per GPU.

Start: `caat train --gpus N` spawns N − 1 followers from the worker (`spawned`); under
`torchrun` every process is started already and `from_env` joins the group.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import Tensor

from caat_app.errors import ConfigError


@dataclass(frozen=True)
class Ranks:
    """This process's place in the run: rank 0 of 1 when not distributed."""

    rank: int = 0
    world: int = 1

    @property
    def lead(self) -> bool:
        return self.rank == 0

    @property
    def split(self) -> bool:
        return self.world > 1

    def shard(self, xb: Tensor, yb: Tensor) -> tuple[Tensor, Tensor]:
        """This rank's equal share of a global batch (the config checks divisibility)."""
        if not self.split:
            return xb, yb
        if len(yb) % self.world:
            raise ConfigError(f"a batch of {len(yb)} does not split over {self.world} ranks")
        per = len(yb) // self.world
        part = slice(self.rank * per, (self.rank + 1) * per)
        return xb[part], yb[part]

    def average(self, tensor: Tensor) -> Tensor:
        """All-reduce `tensor` in place to its mean over the ranks (one collective)."""
        if self.split:
            dist.all_reduce(tensor)
            tensor.div_(self.world)
        return tensor

    def agree(self, lead_says: bool, device: torch.device) -> bool:
        """Rank 0's decision on every rank: a broadcast and one host read."""
        if not self.split:
            return lead_says
        flag = torch.tensor([1.0 if lead_says else 0.0], device=device)
        dist.broadcast(flag, src=0)
        return bool(flag.item())


def current() -> Ranks:
    """The ranks of the process group this process is in, if any."""
    if dist.is_available() and dist.is_initialized():
        return Ranks(dist.get_rank(), dist.get_world_size())
    return Ranks()


def rank_device(device: torch.device, ranks: Ranks) -> torch.device:
    """A rank's own GPU when the run trains on CUDA: its local rank's, counted from the
    GPU the config names (`cuda:2` with 4 ranks: GPUs 2 to 5)."""
    if device.type != "cuda" or not ranks.split:
        return device
    local = (device.index or 0) + int(os.environ.get("LOCAL_RANK", ranks.rank))
    torch.cuda.set_device(local)
    return torch.device("cuda", local)


def backend(device_type: str) -> str:
    return "nccl" if device_type == "cuda" else "gloo"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def join(rank: int, world: int, port: int, device_type: str) -> None:
    """Join the run's group on this machine (rank 0 is listening on `port`)."""
    dist.init_process_group(
        backend(device_type),
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world,
    )


def from_env(device_type: str) -> Ranks:
    """Join a group `torchrun` set up (WORLD_SIZE, RANK, MASTER_ADDR, MASTER_PORT)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group(backend(device_type))
    return current()


def _follower(rank: int, world: int, port: int, device_type: str, work: Callable[[], Any]) -> None:
    join(rank, world, port, device_type)
    try:
        work()
        dist.barrier()  # every rank done before any leaves: gloo aborts on a vanished peer
    finally:
        dist.destroy_process_group()


@contextlib.contextmanager
def spawned(world: int, device_type: str, follow: Callable[[], Any]) -> Iterator[None]:
    """Rank 0 here, ranks 1..world−1 as spawned processes running `follow`.

    `follow` must be picklable (a module-level function or a `functools.partial` of
    one). Leaving the block waits for the followers and leaves the group.
    """
    if world <= 1:
        yield
        return
    port = free_port()
    ctx = mp.start_processes(
        _rank_entry,
        args=(world, port, device_type, follow),
        nprocs=world - 1,
        join=False,
        start_method="spawn",
    )
    join(0, world, port, device_type)
    done = False
    try:
        yield
        dist.barrier()  # the followers' own barrier: all leave the group together
        done = True
    finally:
        if not done:  # rank 0 failed: its followers would wait for it forever
            for proc in ctx.processes:
                if proc.is_alive():
                    proc.terminate()
        dist.destroy_process_group()
    while not ctx.join():
        pass


def _rank_entry(index: int, world: int, port: int, device_type: str, work: Any) -> None:
    """A spawned follower: `index` 0 is rank 1 (rank 0 is the process that spawned)."""
    _follower(index + 1, world, port, device_type, work)
