"""The GPU fast path's pieces, checked on the CPU: channels_last and torch.compile change
how a step runs, never what it computes."""

from __future__ import annotations

from typing import Any

import pytest
import torch

import caat_app.training.trainer as trainer_module
from caat_app.config import build_config
from caat_app.data.splits import load_dataset
from caat_app.training.device import memory_format
from caat_app.training.sinks import ListSink
from caat_app.training.trainer import train

BASE: dict[str, Any] = {
    "dataset": "digits",
    "epochs": 1,
    "batch_size": 64,
    "attack_steps": 2,
    "eval_steps": 2,
    "eval_n": 32,
    "device": "cpu",
    "method": "caat",
    "gamma": 0.9,
}


@pytest.fixture(scope="module")
def digits() -> Any:
    return load_dataset("digits")


def _steps(digits: Any, **options: Any) -> list[dict[str, Any]]:
    sink = ListSink()
    assert train(build_config({**BASE, **options}), sink, data=digits).status == "finished"
    return sink.step_rows


def test_channels_last_is_the_cuda_cnn_layout_only() -> None:
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert memory_format(cuda, transformer=False) == torch.channels_last
    assert memory_format(cuda, transformer=True) == torch.contiguous_format
    assert memory_format(cpu, transformer=False) == torch.contiguous_format


def test_a_channels_last_cnn_trains_to_the_same_numbers(
    digits: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    reference = _steps(digits, model="cnn")
    monkeypatch.setattr(trainer_module, "memory_format", lambda *_: torch.channels_last)
    nhwc = _steps(digits, model="cnn")
    assert len(nhwc) == len(reference) > 5
    for got, want in zip(nhwc, reference, strict=True):
        for key in ("loss_c", "loss_a", "phi", "mu"):
            assert got[key] == pytest.approx(want[key], rel=1e-3, abs=1e-5), key


@pytest.mark.slow
def test_a_compiled_model_trains_to_the_same_numbers(digits: Any) -> None:
    reference = _steps(digits, model="linear")
    compiled = _steps(digits, model="linear", compile=True)
    assert len(compiled) == len(reference) > 5
    for got, want in zip(compiled, reference, strict=True):
        for key in ("loss_c", "loss_a", "phi", "mu"):
            assert got[key] == pytest.approx(want[key], rel=1e-3, abs=1e-5), key


def _forbid_host_sync(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("host synchronisation inside a training step")

    for name in ("item", "__bool__", "__float__", "__int__", "tolist", "cpu", "numpy"):
        monkeypatch.setattr(torch.Tensor, name, boom)


@pytest.mark.parametrize(
    "options",
    [
        {"method": "vanilla", "lam": 0.5, "attack": "pgd"},
        {"method": "caat", "gamma": 0.9, "projection": "layer", "attack": "pgd"},
        {"method": "caat", "gamma": 0.8, "loss": "trades", "attack": "pgd"},
        {"method": "caat", "gamma": 0.8, "optimizer": "adamw", "attack": "mifgsm"},
        {"method": "vanilla", "lam": 1.0, "attack": "fgsm", "augment": True},
    ],
    ids=["vanilla-pgd", "caat-layer", "caat-trades", "caat-adamw-mifgsm", "vanilla-fgsm-augment"],
)
def test_a_training_step_and_its_attack_never_read_the_device(
    digits: Any, monkeypatch: pytest.MonkeyPatch, options: dict[str, Any]
) -> None:
    """The CPU stand-in for `torch.cuda.set_sync_debug_mode("error")` (the GPU check runs
    that): no value leaves the device inside a step, so a GPU never waits for the host.
    APGD is left out here: it draws its seed from the CPU generator, a host value that
    this stand-in cannot tell from a device read."""
    trainer = trainer_module.Trainer(build_config({**BASE, **options}), ListSink(), data=digits)
    batches = trainer.batches()
    xb, yb = next(batches)
    with monkeypatch.context() as m:
        _forbid_host_sync(m)
        metrics = trainer.train_step(xb, yb, 0.05, 0.9)
        xb, yb = next(batches)  # gathering and augmenting the next batch too
        trainer.train_step(xb, yb, 0.05)
    assert torch.isfinite(metrics).all()
