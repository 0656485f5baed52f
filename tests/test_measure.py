"""The trainer's per-epoch measurement: robust only when also right clean, always float32."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

from caat_app.training.measure import epoch_accuracy, measure_splits

OPTIONS: dict[str, Any] = {"eps": 0.1, "alpha": 0.1, "steps": 2, "norm": "linf"}


class FixedByAnyMove(nn.Module):
    """Wrong on the `flips` among its clean images and right once they move at all (the
    case where an "attack" lands a wrong point on its class); the rest are right both ways.
    """

    def __init__(self, clean: Tensor, y: Tensor, flips: Tensor, classes: int = 3) -> None:
        super().__init__()
        self.clean, self.y, self.flips, self.classes = clean, y, flips, classes

    def forward(self, x: Tensor) -> Tensor:
        moved = (x - self.clean).flatten(1).abs().amax(1) > 0
        right = F.one_hot(self.y, self.classes).float()
        wrong = F.one_hot((self.y + 1) % self.classes, self.classes).float()
        logits = torch.where((self.flips & ~moved)[:, None], wrong, right)
        return logits + 0 * x.flatten(1).sum(1, keepdim=True)  # differentiable, zero gradient


def test_a_point_wrong_clean_is_not_robust_even_when_the_attack_lands_it_right() -> None:
    torch.manual_seed(0)
    x = torch.full((8, 4), 0.5)
    y = torch.arange(8) % 3
    flips = torch.tensor([True, False, True, True, False, False, True, False])
    model = FixedByAnyMove(x, y, flips)
    # the premise: the attack's random start moves every point, so the model gets all right
    with torch.no_grad():
        assert (model(x + 0.01).argmax(1) == y).all()
    clean, adv = epoch_accuracy(model, x, y, batch_size=8, **OPTIONS)
    assert clean == adv == 0.5  # the four flipping points count neither clean nor robust


class DtypeRecorder(nn.Module):
    """A linear model that records the dtype its layer computes in, on every forward."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(4, 3)
        self.seen: list[torch.dtype] = []

    def forward(self, x: Tensor) -> Tensor:
        out = self.layer(x)
        self.seen.append(out.dtype)
        return out


def test_measured_in_float32_inside_a_bf16_autocast() -> None:
    torch.manual_seed(0)
    model = DtypeRecorder()
    x, y = torch.rand(6, 4), torch.randint(0, 3, (6,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model(x)  # the premise: under the training's autocast the layer computes in bf16
        assert model.seen == [torch.bfloat16]
        model.seen.clear()
        result = epoch_accuracy(model, x, y, batch_size=4, **OPTIONS)
    assert result is not None
    # two batches: clean, two attack steps and the attacked forward each
    assert model.seen == [torch.float32] * 8


def test_measure_splits_names_each_split_and_stops_when_asked() -> None:
    torch.manual_seed(0)
    model = DtypeRecorder()
    x, y = torch.rand(6, 4), torch.randint(0, 3, (6,))
    splits = {"val": (x[:3], y[:3]), "test": (x, y)}
    measured = measure_splits(model, splits, batch_size=4, **OPTIONS)
    assert measured is not None and list(measured) == [
        "val_clean",
        "val_adv",
        "test_clean",
        "test_adv",
    ]
    with torch.no_grad():
        right = (model(x).argmax(1) == y).double().mean().item()
    assert measured["test_clean"] == right and measured["test_adv"] <= right
    asked: list[int] = []

    def stop_second() -> bool:
        asked.append(1)
        return len(asked) > 1

    assert measure_splits(model, splits, batch_size=4, should_stop=stop_second, **OPTIONS) is None


margins = st.floats(-1.0, 1.0).filter(lambda v: abs(v) > 1e-3)


@given(
    weights=st.lists(st.floats(-2.0, 2.0), min_size=3, max_size=3),
    offsets=st.lists(st.tuples(margins, st.integers(0, 1)), min_size=1, max_size=12),
    eps=st.floats(0.001, 0.1),
)
@settings(max_examples=60, deadline=None)
def test_linear_binary_model_matches_the_closed_form_worst_case(
    weights: list[float], offsets: list[tuple[float, int]], eps: float
) -> None:
    """Logits (0, w·x + b): the L∞ worst case moves w·x by ε‖w‖₁ against the label, which
    two PGD steps of size ε reach exactly (inside [0, 1], as every x here is 0.5 ± 0.2)."""
    w = torch.tensor(weights, dtype=torch.float64)
    l1 = float(w.abs().sum())
    rows, labels, worst_right, clean_right = [], [], [], []
    for k, (margin, label) in enumerate(offsets):
        x = 0.5 + 0.2 * torch.sin(torch.arange(3, dtype=torch.float64) + k)
        b = margin - float(w @ x)  # so that w·x + b = margin
        worst = margin - eps * l1 if label == 1 else margin + eps * l1
        if abs(worst) < 1e-4:  # too close to call in float32
            continue
        rows.append((x, b))
        labels.append(label)
        clean_right.append((margin > 0) == (label == 1))
        worst_right.append((worst > 0) == (label == 1))
    if not rows:
        return
    x = torch.stack([r[0] for r in rows]).float()
    bias = torch.tensor([r[1] for r in rows], dtype=torch.float32)

    class PerPointLinear(nn.Module):
        def forward(self, inp: Tensor) -> Tensor:
            z = inp @ w.float() + bias
            return torch.stack([torch.zeros_like(z), z], 1)

    y = torch.tensor(labels)
    options = {**OPTIONS, "eps": eps, "alpha": eps}
    clean, adv = epoch_accuracy(PerPointLinear(), x, y, batch_size=len(y), **options)
    n = len(labels)
    assert clean == sum(clean_right) / n
    assert adv == sum(r and c for r, c in zip(worst_right, clean_right, strict=True)) / n
