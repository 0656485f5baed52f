"""Functional adversarial attacks on models that take images in [0, 1].

One file per family: `fgsm`, `pgd`, `mifgsm`, `apgd` (AutoPGD with CE, DLR and targeted
DLR), `fab` (minimal-norm, untargeted and targeted), `square` (black-box) and the
`autoattack` ensemble; what two of them share (per-sample shapes and norms, projections,
random starts, losses and margins on logits, the tiny constant) is defined once, in `common`.
Each is `attack(model, x, y, *, eps, norm, ...) -> x_adv`. The `registry` names them all,
with their settings; this package's top level is torch-free, as the registry is.
"""

from caat_app.attacks.registry import (
    ATTACKS,
    NORMS,
    TRAINING_ATTACKS,
    Attack,
    attack_examples,
    run_attack,
)

__all__ = ["ATTACKS", "NORMS", "TRAINING_ATTACKS", "Attack", "attack_examples", "run_attack"]
