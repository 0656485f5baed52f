"""Losses: each reduces to its plain part when the attack did nothing; gradients get through."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from caat_app.method.losses import adversarial_loss, attack_objective, clean_loss
from caat_app.method.registry import DEFAULT_BETA
from caat_app.method.registry import LOSSES as LOSS_REGISTRY

LOSSES = LOSS_REGISTRY.names  # the loss names, in the registry's order


def _batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    clean = torch.randn(16, 10, generator=g)
    adv = clean + 0.5 * torch.randn(16, 10, generator=g)
    y = torch.randint(0, 10, (16,), generator=g)
    return clean, adv, y


def test_names_and_defaults() -> None:
    assert LOSSES == ("ce", "trades", "clp", "alp")
    assert set(DEFAULT_BETA) == set(LOSSES)
    # The official code weighs the TRADES KL and the CLP pairing by 1 (it has no β).
    assert DEFAULT_BETA["trades"] == 1.0
    assert DEFAULT_BETA["clp"] == 1.0


def test_clean_loss_is_mean_ce() -> None:
    clean, _, y = _batch()
    torch.testing.assert_close(clean_loss(clean, y), F.cross_entropy(clean, y))


def test_equal_logits_reduce_to_plain_parts() -> None:
    clean, _, y = _batch()
    ce = F.cross_entropy(clean, y)
    assert adversarial_loss("trades", clean, clean.clone(), y, beta=6.0).item() == 0.0
    assert adversarial_loss("clp", clean, clean.clone(), y, beta=1.0).item() == 0.0
    torch.testing.assert_close(adversarial_loss("alp", clean, clean.clone(), y, beta=0.5), ce)
    torch.testing.assert_close(adversarial_loss("ce", clean, clean.clone(), y, beta=0.0), ce)


def test_values_match_definitions() -> None:
    clean, adv, y = _batch(1)
    kl = F.kl_div(F.log_softmax(adv, 1), F.softmax(clean, 1), reduction="batchmean")
    torch.testing.assert_close(adversarial_loss("trades", clean, adv, y, beta=6.0), 6.0 * kl)
    pairing = ((clean - adv) ** 2).sum(1).mean()
    torch.testing.assert_close(
        adversarial_loss("alp", clean, adv, y, beta=0.5), F.cross_entropy(adv, y) + 0.5 * pairing
    )
    # The official CLP: the mean L2 distance of the two softmaxes, no cross-entropy.
    gaps = [(F.softmax(adv[i], 0) - F.softmax(clean[i], 0)).pow(2).sum().sqrt() for i in range(16)]
    torch.testing.assert_close(
        adversarial_loss("clp", clean, adv, y, beta=2.0), 2.0 * torch.stack(gaps).mean()
    )
    torch.testing.assert_close(
        adversarial_loss("ce", clean, adv, y, beta=3.0), F.cross_entropy(adv, y)
    )


@pytest.mark.parametrize("kind", LOSSES)
def test_finite_on_extreme_logits(kind: str) -> None:
    clean, adv, y = _batch(2)
    value = adversarial_loss(kind, clean * 1e3, adv * 1e3, y, beta=DEFAULT_BETA[kind])
    assert torch.isfinite(value) and value >= 0


@pytest.mark.parametrize("kind", ["trades", "clp", "alp"])
def test_gradient_reaches_both_logits(kind: str) -> None:
    clean, adv, y = _batch(3)
    clean.requires_grad_(True)
    adv.requires_grad_(True)
    adversarial_loss(kind, clean, adv, y, beta=DEFAULT_BETA[kind]).backward()
    assert clean.grad is not None and clean.grad.abs().sum() > 0
    assert adv.grad is not None and adv.grad.abs().sum() > 0


def test_attack_objective() -> None:
    clean, adv, y = _batch(4)
    assert attack_objective("ce", clean) is None
    assert attack_objective("clp", clean) is None  # the official CLP attack ascends CE
    assert attack_objective("alp", clean) is None
    clean.requires_grad_(True)
    objective = attack_objective("trades", clean)
    assert objective is not None
    adv.requires_grad_(True)
    value = objective(adv, y)
    expected = F.kl_div(F.log_softmax(adv, 1), F.softmax(clean, 1), reduction="sum")
    torch.testing.assert_close(value, expected)
    value.backward()
    assert clean.grad is None  # the attack target is the fixed clean prediction
    assert adv.grad is not None and adv.grad.abs().sum() > 0
    assert objective(clean.detach(), y).item() == pytest.approx(0.0, abs=1e-6)


def test_unknown_kind() -> None:
    clean, adv, y = _batch()
    with pytest.raises(ValueError, match="ce, trades, clp, alp"):
        adversarial_loss("mart", clean, adv, y, beta=1.0)
    with pytest.raises(ValueError, match="ce, trades, clp, alp"):
        attack_objective("mart", clean)


def test_clp_gradient_is_finite_when_the_attack_did_nothing() -> None:
    clean, _, y = _batch(5)
    adv = clean.clone().requires_grad_(True)
    adversarial_loss("clp", clean, adv, y, beta=1.0).backward()
    assert adv.grad is not None and torch.isfinite(adv.grad).all()
