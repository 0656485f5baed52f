"""Batch-statistics models are attacked and judged on whole fixed batches.

A model whose BatchNorm keeps no running statistics (`--bn batchstats`) predicts every
point with the statistics of its whole batch, so dropping a point that is already broken
changes the others' predictions. The evaluation keeps every point in every forward pass,
and the number it reports is the judgement of the very batch the attack returned.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from caat_app.attacks.apgd import apgd
from caat_app.attacks.autoattack import autoattack
from caat_app.attacks.common import is_batch_dependent, own_gradients
from caat_app.attacks.fab import fab
from caat_app.attacks.square import square
from caat_app.data.splits import load_dataset
from caat_app.evaluation import runner
from caat_app.models.build import build_model

N = 12  # one small fixed batch: every point weighs 1/12 in the statistics
EPS = 0.1
BROKEN = N - 1  # a blank white card, labelled as what the model does not call it


@pytest.fixture(scope="module")
def batch() -> tuple[nn.Module, Tensor, Tensor]:
    """A small MLP with batch-statistics BatchNorm on digits, and a fixed test batch whose
    last point is an outlier the model gets wrong from the start."""
    torch.manual_seed(0)
    data = load_dataset("digits")
    model = nn.Sequential(
        nn.Flatten(),
        nn.Linear(64, 16),
        nn.BatchNorm1d(16, track_running_stats=False),
        nn.ReLU(),
        nn.Linear(16, 10),
    )
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(100):
        idx = torch.randint(0, len(data.y_train), (64,))
        opt.zero_grad()
        F.cross_entropy(model(data.x_train[idx]), data.y_train[idx]).backward()
        opt.step()
    model.eval()
    x, y = data.x_test[:N].clone(), data.y_test[:N].clone()
    x[BROKEN] = 1.0
    with torch.no_grad():
        y[BROKEN] = (model(x).argmax(1)[BROKEN] + 1) % 10
    return model, x, y


class _Spy(nn.Module):
    """The model, recording every batch it is shown."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.seen: list[Tensor] = []

    def forward(self, z: Tensor) -> Tensor:
        self.seen.append(z.detach().clone())
        return self.model(z)  # type: ignore[no-any-return]


def _autoattack(model: nn.Module, x: Tensor, y: Tensor, **kw: Any) -> Tensor:
    return autoattack(model, x, y, steps=10, queries=100, target_classes=3, **kw)[0]


# The registry's attacks on budgets a unit test can afford; the code paths are the same.
CHEAP = {
    "apgd-ce": partial(apgd, loss="ce", steps=20),
    "fab": partial(fab, steps=20),
    "square": partial(square, queries=200),
    "autoattack": _autoattack,
}


def _cheap_examples(name: str, model: nn.Module, x: Tensor, y: Tensor, **kw: Any) -> Tensor:
    return CHEAP[name](model, x, y, **kw)  # type: ignore[no-any-return]


def _wrong(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    with torch.no_grad():
        return model(x).argmax(1) != y


def test_batch_statistics_are_recognised(batch) -> None:
    model, _, _ = batch
    assert is_batch_dependent(model)
    common: dict[str, Any] = {"in_channels": 1, "num_classes": 10, "image_size": 8}
    common.update(mean=(0.3,), std=(0.4,))
    assert is_batch_dependent(build_model("cnn", bn="batchstats", **common))
    assert not is_batch_dependent(build_model("cnn", bn="standard", **common))
    assert not is_batch_dependent(build_model("linear", bn="batchstats", **common))


@pytest.mark.parametrize("name", list(CHEAP))
def test_evaluation_judges_the_batch_it_attacked(
    batch, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    model, x, y = batch
    monkeypatch.setattr(runner, "attack_examples", _cheap_examples)
    clean_wrong = _wrong(model, x, y)
    assert clean_wrong[BROKEN] and clean_wrong.sum() < N // 2
    spy = _Spy(model)
    adv = runner.attack_batch(name, spy, x, y, eps=EPS, norm="linf")
    # Every forward pass saw the whole fixed batch, the broken points in it, and the
    # point wrong from the start stayed as it was.
    assert spy.seen and all(len(z) == N for z in spy.seen)
    assert torch.equal(adv[clean_wrong], x[clean_wrong])
    # The attack judged the very batch it returns, so its verdicts are the evaluation's.
    assert any(torch.equal(z, adv) for z in spy.seen)
    fooled = _wrong(model, adv, y)
    robust = ~clean_wrong & ~fooled
    assert 0 < robust.sum() < (~clean_wrong).sum()  # the attack broke some points, not all
    acc = runner.accuracy(model, x, y, name, eps=EPS, norm="linf", batch_dependent=True)
    assert acc == robust.sum().item() / N
    # Recognised from the model itself: the same number without being told.
    assert runner.accuracy(model, x, y, name, eps=EPS, norm="linf") == acc
    if name in ("fab", "autoattack"):  # their changed points are their successes
        moved = (adv != x).flatten(1).any(1)
        assert moved.any() and fooled[moved].all()
    # Why it matters: the same adversarial points, judged without the broken point, get
    # other predictions, and the robust accuracy moves with them.
    keep = torch.arange(N) != BROKEN
    fooled_without = _wrong(model, adv[keep], y[keep])
    assert (fooled_without != fooled[keep]).any()
    assert (~clean_wrong[keep] & ~fooled_without).sum() != robust.sum()


def test_registry_settings_in_the_runner(batch) -> None:
    """APGD-CE at the registry's own settings, through the runner: whole batches there too."""
    model, x, y = batch
    spy = _Spy(model)
    acc = runner.accuracy(spy, x, y, "apgd-ce", eps=EPS, norm="linf", batch_dependent=True)
    assert spy.seen and all(len(z) == N for z in spy.seen)
    assert acc is not None and 0 < acc < 1 - _wrong(model, x, y).float().mean().item()


def test_own_gradients_closed_form(batch) -> None:
    """Linear → BatchNorm: with the batch statistics as constants, ∂z_ic/∂x_i is
    γ_c / √(σ²_c + ε) · W_c for every point; through the statistics, Σ_i z_ic is the
    constant N·β_c and its gradient vanishes. The forward values are the same to the bit."""
    _, x, _ = batch
    torch.manual_seed(1)
    lin, bn = nn.Linear(64, 5), nn.BatchNorm1d(5, track_running_stats=False)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 2.0)
        bn.bias.uniform_(-1.0, 1.0)
    model = nn.Sequential(nn.Flatten(), lin, bn).eval()
    z = x.clone().requires_grad_(True)
    plain = model(z)
    (through,) = torch.autograd.grad(plain[:, 2].sum(), z)
    assert through.abs().max() < 1e-5
    with own_gradients(model):
        logits = model(z)
        (own,) = torch.autograd.grad(logits[:, 2].sum(), z)
    assert torch.equal(logits, plain)
    with torch.no_grad():
        h = lin(x.flatten(1))
        scale = bn.weight[2] / torch.sqrt(h[:, 2].var(unbiased=False) + bn.eps)
    expected = (scale * lin.weight[2]).expand(N, -1).reshape_as(x)
    torch.testing.assert_close(own, expected)
    (after,) = torch.autograd.grad(model(z)[:, 2].sum(), z)  # the hooks are gone afterwards
    assert after.abs().max() < 1e-5
