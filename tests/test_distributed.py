"""One run on two CPU ranks (gloo) equals one process on the same global batch.

Each rank attacks its shard and fills g_c, g_a of it; one all-reduce averages the (2, P)
buffer, and the projection comes after, so the parameters after several steps agree with
a single process's. The attack is MI-FGSM, which starts at x, so both runs see the same
adversarial examples; PGD's random start is drawn per rank (the README says so). Rank 0
alone reports rows and writes checkpoints.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist

from caat_app.config import build_config
from caat_app.data.splits import load_dataset
from caat_app.errors import ConfigError
from caat_app.training.distributed import free_port
from caat_app.training.sinks import ListSink
from caat_app.training.trainer import train

BASE: dict[str, Any] = {
    "dataset": "digits",
    "model": "linear",
    "attack": "mifgsm",
    "attack_steps": 3,
    "eval_steps": 2,
    "eval_n": 16,
    "epochs": 2,
    "batch_size": 64,
    "lr": 0.05,
    "device": "cpu",
    "log_every": 4,
}
CASES = {
    "vanilla": {"method": "vanilla", "lam": 0.5},
    "caat-global": {"method": "caat", "gamma": 0.9, "projection": "global"},
    "caat-layer": {"method": "caat", "gamma": 0.9, "projection": "layer"},
    "vanilla-augment": {"method": "vanilla", "lam": 1.0, "augment": True},
}


class WorldSink(ListSink):
    """Also notes the process group's size whenever rows arrive (where they arrive)."""

    def __init__(self) -> None:
        super().__init__()
        self.worlds: set[int] = set()

    def steps(self, rows: list[dict[str, Any]]) -> None:
        self.worlds.add(dist.get_world_size() if dist.is_initialized() else 1)
        super().steps(rows)


@pytest.fixture(scope="module")
def digits() -> Any:
    return load_dataset("digits")


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    state = torch.load(run_dir / "last.pt", map_location="cpu", weights_only=True)
    return state["model"]


def _trained(digits: Any, tmp: Path, options: dict[str, Any]) -> tuple[WorldSink, Path]:
    tmp.mkdir()
    sink = WorldSink()
    result = train(build_config({**BASE, **options}), sink, run_dir=tmp, data=digits)
    assert result.status == "finished"
    return sink, tmp


@pytest.mark.parametrize("case", sorted(CASES))
def test_two_ranks_take_the_single_process_step_on_the_global_batch(
    digits: Any, tmp_path: Path, case: str
) -> None:
    one, one_dir = _trained(digits, tmp_path / "one", CASES[case])
    two, two_dir = _trained(digits, tmp_path / "two", {**CASES[case], "gpus": 2})
    ref, got = _weights(one_dir), _weights(two_dir)
    assert (one.worlds, two.worlds) == ({1}, {2})  # rank 0 reported, inside a group of two
    assert not dist.is_initialized()  # and left it
    assert ref.keys() == got.keys()
    for name in ref:
        torch.testing.assert_close(got[name], ref[name], rtol=1e-4, atol=1e-5)
    assert len(two.step_rows) == len(one.step_rows) > 10  # rank 0's rows, each step once
    assert [r["step"] for r in two.step_rows] == list(range(len(one.step_rows)))
    for mine, theirs in zip(two.step_rows, one.step_rows, strict=True):
        for key in ("phi", "mu", "loss_c", "loss_a", "coef_c", "projected"):
            assert mine[key] == pytest.approx(theirs[key], rel=1e-3, abs=1e-5), key
    assert len(two.epoch_rows) == len(one.epoch_rows) == BASE["epochs"]
    for mine, theirs in zip(two.epoch_rows, one.epoch_rows, strict=True):
        assert mine["val_clean"] == pytest.approx(theirs["val_clean"], abs=1e-6)


def test_a_transformer_trains_alike_on_two_ranks(digits: Any, tmp_path: Path) -> None:
    options = {"model": "vit-micro", "method": "caat", "gamma": 0.8, "epochs": 1, "batch_size": 32}
    _, one_dir = _trained(digits, tmp_path / "one", options)
    _, two_dir = _trained(digits, tmp_path / "two", {**options, "gpus": 2})
    ref, got = _weights(one_dir), _weights(two_dir)
    for name in ref:
        torch.testing.assert_close(got[name], ref[name], rtol=1e-4, atol=1e-5)
    assert any(not torch.equal(v, w) for v, w in zip(ref.values(), got.values(), strict=True))


def test_only_rank_0_writes_the_run_folder(digits: Any, tmp_path: Path) -> None:
    _, run_dir = _trained(digits, tmp_path / "run", {**CASES["vanilla"], "gpus": 2})
    names = sorted(p.name for p in run_dir.iterdir())
    assert "last.pt" in names and "best.pt" in names
    assert not [n for n in names if n.endswith(".tmp")]


def test_a_batch_that_does_not_split_over_the_ranks_is_refused_in_one_line() -> None:
    with pytest.raises(ConfigError, match="must split evenly over 3 ranks") as info:
        build_config({**BASE, "batch_size": 64, "gpus": 3})
    assert "\n" not in str(info.value)


@pytest.mark.slow
def test_torchrun_trains_a_stored_run_on_two_ranks(tmp_path: Path) -> None:
    """The multi-node path: torchrun starts every rank; rank 0 records, the other follows."""
    import subprocess
    import sys

    from caat_storage import Store

    db = f"sqlite:///{tmp_path / 'caat.db'}"
    cfg = build_config({**BASE, **CASES["caat-global"], "epochs": 1})
    with Store.open(db) as store:
        run_id = store.create_run(
            name="ddp", config=cfg.model_dump(mode="json"), method="caat", param=0.9,
            dataset="digits", model="linear", eps=cfg.eps, epochs_total=1,
        )  # fmt: skip
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]
    worker = ["-m", "caat_app.runs.worker", "--db", db, "--run-id", str(run_id)]
    done = subprocess.run(
        [*torchrun, "--master-port", str(free_port()), *worker],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    with Store.open(db) as store:
        run = store.get_run(run_id)
        assert run is not None and run.status == "finished"
        steps = [r.step for r in store.steps(run_id)]
    assert steps == list(range(len(steps))) and len(steps) > 10  # each step once
