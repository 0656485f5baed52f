"""The paper's recipe: presets against the official values, the official schedule and
optimiser against PyTorch's own, TRADES' attack start, and γ = 1 as clean training."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from helpers import run_cli
from torch import nn

from caat_app.attacks.registry import run_attack
from caat_app.config import build_config, resolve_config
from caat_app.data.splits import load_dataset
from caat_app.method.losses import attack_objective
from caat_app.method.optim import FlatParams, FlatSGD
from caat_app.method.registry import LOSSES
from caat_app.presets import PRESETS, Preset
from caat_app.training.schedule import cosinew, rate
from caat_app.training.sinks import ListSink
from caat_app.training.trainer import train

# The released checkpoints' args.txt (chrisyxue/CA-AT, checkpoints/…/args.txt).
OFFICIAL = {
    "batch_size": 1024,
    "lr": 0.4,
    "weight_decay": 5e-4,
    "schedule": "cosinew",
    "nesterov": True,
    "epochs": 200,
    "attack": "pgd",
    "norm": "linf",
    "attack_steps": 10,
    "augment": True,
    "bn": "batchstats",  # the paper's §5: running statistics off
}


FROM_SCRATCH = [n for n in PRESETS if n.startswith("paper-") and not n.startswith("paper-peft-")]
"""The released checkpoints' recipe; the PEFT presets have their own (tests/test_paper_peft.py)."""


@pytest.mark.parametrize("name", FROM_SCRATCH)
def test_paper_presets_hold_the_official_values(name: str) -> None:
    cfg = build_config({"preset": name})
    for field, value in OFFICIAL.items():
        assert getattr(cfg, field) == value, field
    assert cfg.eps == pytest.approx(8 / 255) and cfg.step_size == pytest.approx(2 / 255)
    preset = PRESETS[name]
    assert set(preset.sources) == set(preset.values)
    assert all(source.strip() for source in preset.sources.values())


def test_a_preset_value_without_a_source_is_refused() -> None:
    with pytest.raises(ValueError, match="no source for lr"):
        Preset("p", "help", values={"lr": 0.1}, sources={})


def test_resolved_origins_follow_the_precedence(tmp_path) -> None:
    cfg, origins = resolve_config(
        {"preset": "paper-cifar10-r18", "lr": 0.1}, {"epochs": 3, "lr": 0.2}
    )
    assert (cfg.lr, cfg.epochs, cfg.batch_size) == (0.1, 3, 1024)
    assert origins["lr"] == "option"
    assert origins["epochs"] == "config file"
    assert origins["batch_size"].startswith("preset paper-cifar10-r18: official")
    assert origins["gamma"] == "default"
    _, digits = resolve_config({})
    assert digits["eps"] == "data set digits"


# ------------------------------------------------------------------ the official schedule


@pytest.mark.parametrize("epochs", [200, 41, 7, 2])
def test_cosinew_is_pytorch_one_cycle_stepped_per_epoch(epochs: int) -> None:
    """The official `cosinew`: OneCycleLR(pct_start=0.025, total_steps=epochs)."""
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.4, momentum=0.9, nesterov=True)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=0.4, pct_start=0.025, total_steps=epochs
    )
    for epoch in range(epochs):
        lr, momentum = cosinew(epoch, epochs, 0.4)
        group = opt.param_groups[0]
        assert lr == pytest.approx(group["lr"], rel=1e-12, abs=1e-15)
        assert momentum == pytest.approx(group["momentum"], rel=1e-12)
        opt.step()
        sched.step()


def test_cosinew_shape_at_a_few_epochs() -> None:
    """200 epochs: peak/25 at the start, the peak after 5 epochs, peak/25/1e4 at the end."""
    assert cosinew(0, 200, 0.4).lr == pytest.approx(0.4 / 25)
    assert cosinew(4, 200, 0.4) == (pytest.approx(0.4), pytest.approx(0.85))
    assert cosinew(199, 200, 0.4).lr == pytest.approx(0.4 / 25 / 1e4)
    assert cosinew(0, 200, 0.4).momentum == pytest.approx(0.95)
    assert cosinew(102, 200, 0.4).lr == pytest.approx(0.2, rel=0.02)  # half way down
    # The rate is constant within an epoch: stepped per epoch, not per batch.
    assert rate("cosinew", 10, 10, 200, 0.4) == rate("cosinew", 19, 10, 200, 0.4)
    assert rate("cosinew", 9, 10, 200, 0.4) != rate("cosinew", 10, 10, 200, 0.4)
    assert rate("linear", 0, 10, 2, 0.4).momentum is None


def test_flat_sgd_with_nesterov_and_the_cycled_momentum_follows_pytorch() -> None:
    torch.manual_seed(0)
    ref = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3)).double()
    model = copy.deepcopy(ref)
    flat = FlatParams(model)
    ours = FlatSGD(flat.flat, momentum=0.9, weight_decay=5e-4, nesterov=True)
    params = list(ref.parameters())
    opt = torch.optim.SGD(params, lr=0.4, momentum=0.9, weight_decay=5e-4, nesterov=True)
    epochs, per_epoch = 6, 3
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=0.4, pct_start=0.025, total_steps=epochs
    )
    g = torch.Generator().manual_seed(1)
    for step in range(epochs * per_epoch):
        d = torch.randn(flat.numel, generator=g, dtype=torch.float64)
        offset = 0
        for p in params:
            p.grad = d[offset : offset + p.numel()].view_as(p).clone()
            offset += p.numel()
        opt.step()
        if step % per_epoch == per_epoch - 1:
            sched.step()
        lr, momentum = rate("cosinew", step, per_epoch, epochs, 0.4)
        ours.step(d.clone(), lr, torch.tensor(True), momentum)
        want = torch.cat([p.detach().reshape(-1) for p in params])
        torch.testing.assert_close(flat.flat, want, rtol=1e-12, atol=1e-14)


# ------------------------------------------------------------------ TRADES' attack start


class _Recorder(nn.Module):
    """A linear model that remembers the first input an attack fed it."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(8, 3)
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.detach().clone())
        return self.linear(x)


@pytest.mark.parametrize("attack", ["pgd", "fgsm", "mifgsm"])
def test_the_kl_attack_starts_from_trades_small_gaussian(attack: str) -> None:
    torch.manual_seed(0)
    model = _Recorder()
    x = torch.full((64, 8), 0.5)
    y = torch.zeros(64, dtype=torch.long)
    with torch.no_grad():
        objective = attack_objective("trades", model(x))
    model.seen.clear()
    noise = LOSSES["trades"].start_noise
    assert noise == 0.001
    x_adv = run_attack(
        attack,
        model,
        x,
        y,
        eps=0.1,
        alpha=0.025,
        steps=3,
        norm="linf",
        loss_fn=objective,
        start_noise=noise,
    )
    start = model.seen[0] - x
    assert 0.0005 < float(start.std()) < 0.002  # 0.001·N(0, 1), not a uniform ε-ball draw
    # From there the KL grows: the attack moved to a point the clean prediction disagrees with.
    with torch.no_grad():
        assert objective(model.linear(x_adv), y) > 1e-6
    assert float((x_adv - x).abs().max()) <= 0.1 + 1e-6


def test_without_a_start_the_kl_attack_cannot_leave_x() -> None:
    """Why TRADES starts off x: the KL's gradient at x is zero, MI-FGSM stays put."""
    torch.manual_seed(0)
    model = _Recorder()
    x = torch.full((16, 8), 0.5)
    y = torch.zeros(16, dtype=torch.long)
    with torch.no_grad():
        objective = attack_objective("trades", model(x))
    x_adv = run_attack(
        "mifgsm", model, x, y, eps=0.1, alpha=0.025, steps=3, norm="linf", loss_fn=objective
    )
    with torch.no_grad():
        assert float(objective(model.linear(x_adv), y)) < 1e-9


# ------------------------------------------------------------------ γ = 1 and the CLI


def test_caat_gamma_one_trains_exactly_as_clean_training() -> None:
    """CA-AT γ = 1 steps along g_c, which is Vanilla AT with λ = 0: the same weights."""
    digits = load_dataset("digits")
    common = {"epochs": 1, "attack_steps": 2, "eval_steps": 1, "eval_n": 50, "model": "linear"}
    results = []
    for options in ({"method": "caat", "gamma": 1.0}, {"method": "vanilla", "lam": 0.0}):
        sink = ListSink()
        result = train(build_config({**common, **options}), sink, data=digits)
        results.append(([r["loss_c"] for r in sink.step_rows], result.summary["last_test_clean"]))
    assert results[0] == results[1]


def test_dry_run_prints_the_resolved_config_and_stores_nothing(
    tmp_path, monkeypatch, capsys
) -> None:
    monkeypatch.setenv("CAAT_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("CAAT_DB", raising=False)
    args = ["train", "--preset", "paper-cifar100-r34", "--method", "vanilla", "--lam", "0.25"]
    assert run_cli(*args, "--dry-run", "--json") == 0
    data = json.loads(capsys.readouterr().out)
    assert data["config"]["model"] == "resnet34" and data["config"]["lam"] == 0.25
    assert data["origins"]["lam"] == "option"
    assert data["origins"]["schedule"].startswith("preset paper-cifar100-r34")
    assert math.isclose(data["config"]["eps"], 8 / 255)
    assert data["command"].startswith("caat train")
    assert run_cli(*args, "--dry-run") == 0
    assert "official checkpoint args.txt" in capsys.readouterr().out
    assert not (tmp_path / "home").exists()
    assert run_cli("train", "--gamma", "2", "--dry-run") == 2
    assert capsys.readouterr().err.startswith("error:")
