"""Short real trainings on the embedded digits data set."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest
import torch

from caat_app.config import build_config
from caat_app.data.splits import load_dataset
from caat_app.errors import ConfigError
from caat_app.training.schedule import one_cycle
from caat_app.training.sinks import ListSink
from caat_app.training.steps import STEP_FIELDS
from caat_app.training.trainer import TrainResult, train


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _train(digits, tmp_path: Path | None = None, **options) -> tuple[TrainResult, ListSink]:
    sink = ListSink()
    cfg = build_config({"epochs": 2, **options})
    result = train(cfg, sink, data=digits, run_dir=tmp_path)
    return result, sink


@pytest.mark.parametrize(
    "options",
    [{"method": "vanilla", "lam": 0.5}, {"method": "caat", "gamma": 0.8}],
    ids=["vanilla", "caat"],
)
def test_short_training_records_every_step_and_epoch(digits, tmp_path, options) -> None:
    result, sink = _train(digits, tmp_path, **options)
    steps_per_epoch = len(digits.y_train) // 128
    assert result.status == "finished"
    assert result.steps_done == len(sink.step_rows) == 2 * steps_per_epoch
    assert [r["step"] for r in sink.step_rows] == list(range(result.steps_done))
    for row in sink.step_rows:
        assert set(STEP_FIELDS) | {"step", "epoch", "t", "lr"} == set(row)
        assert all(math.isfinite(row[k]) for k in STEP_FIELDS if k != "skipped")
        assert -1.0 <= row["phi"] <= 1.0 and row["mu"] >= 0.0
        assert row["skipped"] is False
    if options["method"] == "vanilla":
        for r in sink.step_rows:
            assert r["coef_c"] == pytest.approx(0.5) and r["projected"] == 0
    else:
        for r in sink.step_rows:  # the projection fires exactly when φ < γ
            assert r["projected"] == float(r["phi"] < 0.8)
    assert [e["epoch"] for e in sink.epoch_rows] == [1, 2]
    last = sink.epoch_rows[-1]
    for key in ("val_clean", "val_adv", "test_clean", "test_adv"):
        assert 0.0 <= last[key] <= 1.0
    assert last["val_adv"] <= last["val_clean"]
    assert last["val_clean"] > 0.5  # well above chance (0.1) after two epochs
    assert last["images_per_sec"] > 0
    summary = result.summary
    best = max(sink.epoch_rows, key=lambda e: (e["val_adv"], e["val_clean"]))
    assert summary["best_epoch"] == best["epoch"]  # chosen on validation, not on test
    assert summary["best_test_adv"] == best["test_adv"]
    for name in ("best.pt", "last.pt"):
        state = torch.load(tmp_path / name, weights_only=True)
        assert state["epoch"] >= 1 and "model" in state


def test_same_seed_same_numbers(digits) -> None:
    _, first = _train(digits, epochs=1, method="caat", seed=3)
    _, second = _train(digits, epochs=1, method="caat", seed=3)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "t"} for r in rows]  # noqa: E731
    assert strip(first.step_rows) == strip(second.step_rows)
    keep = ("val_clean", "val_adv", "test_clean", "test_adv", "train_loss_c", "train_loss_a")
    assert [{k: e[k] for k in keep} for e in first.epoch_rows] == [
        {k: e[k] for k in keep} for e in second.epoch_rows
    ]
    _, other = _train(digits, epochs=1, method="caat", seed=4)
    assert strip(other.step_rows) != strip(first.step_rows)


def test_non_finite_steps_are_skipped_then_the_run_diverges(digits) -> None:
    result, sink = _train(digits, model="linear", lr=1e30, max_nonfinite=3)
    assert result.status == "diverged"
    skipped = [r for r in sink.step_rows if r["skipped"]]
    assert len(skipped) == result.nonfinite_steps > 3
    assert result.summary["nonfinite_steps"] == result.nonfinite_steps


def test_stop_request_ends_cancelled_with_a_checkpoint(digits, tmp_path) -> None:
    sink = ListSink(stop_after_steps=3)
    result = train(build_config({"epochs": 5, "log_every": 1}), sink, data=digits, run_dir=tmp_path)
    assert result.status == "cancelled"
    assert result.steps_done == 3
    assert (tmp_path / "last.pt").exists()


@pytest.mark.parametrize(
    "options",
    [
        {"loss": "trades"},
        {"loss": "clp"},
        {"loss": "alp"},
        {"schedule": "cosinew", "nesterov": True},
        {"projection": "layer"},
        {"attack": "fgsm", "norm": "l2", "eps": 1.0},
        {"bn": "batchstats", "augment": True},
        {"gamma": 1.0},
        {"attack": "mifgsm"},
        {"attack": "apgd-ce"},
        {"attack": "apgd-t", "loss": "clp"},
    ],
    ids=[
        "trades",
        "clp",
        "alp",
        "cosinew-nesterov",
        "layer",
        "fgsm-l2",
        "batchstats-augment",
        "gamma-1",
        "mifgsm",
        "apgd-ce",
        "apgd-t-clp",
    ],
)
def test_variants_train(digits, options) -> None:
    result, sink = _train(digits, epochs=1, attack_steps=2, eval_steps=2, **options)
    assert result.status == "finished"
    assert all(not r["skipped"] for r in sink.step_rows)
    if options.get("gamma") == 1.0:  # γ = 1 steps along g_c: never projected
        assert all(r["projected"] == 0 and r["coef_c"] == 1 for r in sink.step_rows)


def test_one_cycle_rises_then_falls_to_zero() -> None:
    lrs = [one_cycle(s, 100, 0.4) for s in range(100)]
    peak = max(range(100), key=lrs.__getitem__)
    assert 35 <= peak <= 40 and max(lrs) <= 0.4
    assert lrs[0] < 0.01 and lrs[-1] < 0.01
    assert all(a <= b for a, b in itertools.pairwise(lrs[: peak + 1]))
    assert all(a >= b for a, b in itertools.pairwise(lrs[peak:]))


def test_stop_request_during_evaluation_is_honoured(digits, tmp_path) -> None:
    steps_per_epoch = len(digits.y_train) // 128
    sink = ListSink(stop_after_steps=steps_per_epoch)
    cfg = build_config({"epochs": 3, "log_every": 100})
    result = train(cfg, sink, data=digits, run_dir=tmp_path)
    assert result.status == "cancelled"
    assert result.steps_done == steps_per_epoch and sink.epoch_rows == []
    assert (tmp_path / "last.pt").exists() and not (tmp_path / "best.pt").exists()


def test_dropped_images_are_left_out_of_training(digits) -> None:
    n = len(digits.y_train)
    drop = tuple(range(0, n, 2))  # every other image: half the batches
    result, _ = _train(digits, epochs=1, attack_steps=1, eval_steps=1, drop=drop)
    assert result.steps_done == (n - len(drop)) // 128
    with pytest.raises(ConfigError, match=f"index {n} is past the training split"):
        _train(digits, epochs=1, drop=(n,))
