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
