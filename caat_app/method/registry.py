"""The method's choices: methods, projections, and the loss registry (torch-free).

Add a loss: its g_a function (and, if the attack should ascend it, its objective) in
`losses.py`, one entry here, and its tests (tests/test_losses.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from caat_app.registry import Entry, Registry

METHODS = ("vanilla", "caat")
PROJECTIONS = ("global", "layer")
OPTIMIZERS = ("sgd", "adamw")
OPTIMIZER_HELP = {
    "sgd": "SGD with momentum (the paper's)",
    "adamw": "AdamW, β₁ = --momentum, β₂ = 0.999 (what vision transformers train with)",
}


@dataclass(frozen=True)
class Loss(Entry):
    """An adversarial loss: `impl(logits_clean, logits_adv, y, beta)` is the loss of g_a."""

    beta: float = 0.0  # default weight of its extra term (unused by plain CE)
    # Builds what the training attack ascends from the clean logits; "": summed CE.
    objective: str = ""
    # The attack's start: x + start_noise·N(0, 1) (TRADES: 0.001); 0: the attack's own.
    start_noise: float = 0.0


LOSSES: Registry[Loss] = Registry(
    "loss",
    [
        Loss("ce", "cross-entropy on x′ (Madry AT)", "caat_app.method.losses:ce"),
        Loss(
            "trades",
            "β·KL(p(x) ‖ p(x′)) alone, as the official code; the attack ascends that KL",
            "caat_app.method.losses:trades",
            beta=1.0,
            objective="caat_app.method.losses:kl_to_clean",
            start_noise=0.001,
        ),
        Loss(
            "clp",
            "β·‖softmax(x′) − softmax(x)‖₂, the official CLP (no CE term)",
            "caat_app.method.losses:clp",
            beta=1.0,
        ),
        Loss(
            "alp",
            "CE on x′ plus β·‖z(x) − z(x′)‖² (adversarial logit pairing)",
            "caat_app.method.losses:alp",
            beta=0.5,
        ),
    ],
)

DEFAULT_BETA = {name: loss.beta for name, loss in LOSSES.items()}
