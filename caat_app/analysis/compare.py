"""Runs side by side: which options differ, and what each run reached. Torch-free."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from caat_app.runs.stored import options_of

if TYPE_CHECKING:
    from caat_storage import Run

# (label, Run attribute): the final metrics compared, best epoch first (chosen on validation);
# AA there is training's per-epoch PGD.
METRICS = [
    ("status", "status"),
    ("epochs done", "epochs_done"),
    ("best epoch", "best_epoch"),
    ("best val SA", "best_val_clean"),
    ("best val AA (PGD)", "best_val_adv"),
    ("best test SA", "best_test_clean"),
    ("best test AA (PGD)", "best_test_adv"),
    ("last val SA", "last_val_clean"),
    ("last val AA (PGD)", "last_val_adv"),
    ("last test SA", "last_test_clean"),
    ("last test AA (PGD)", "last_test_adv"),
    ("last φ", "last_phi"),
    ("last μ", "last_mu"),
    ("skipped steps", "nonfinite_steps"),
]

# Step series a person can overlay, and epoch series (plotted per epoch).
STEP_SERIES = ("phi", "mu", "loss_c", "loss_a", "acc_c", "acc_a", "coef_c", "lr")
EPOCH_SERIES = ("val_adv", "val_clean", "test_adv", "test_clean", "train_adv", "train_clean")


def compare(runs: list[Run]) -> dict[str, Any]:
    """The comparison as JSON-able data (what `caat compare --json` prints)."""
    configs = [options_of(run) for run in runs]
    options = list(dict.fromkeys(key for config in configs for key in config))
    config_rows = []
    for option in options:
        values = [config.get(option) for config in configs]
        config_rows.append(
            {"option": option, "values": values, "differs": any(v != values[0] for v in values)}
        )
    metric_rows = [
        {"metric": label, "key": key, "values": [getattr(run, key) for run in runs]}
        for label, key in METRICS
    ]
    return {
        "runs": [
            {"id": run.id, "name": run.name, "method": run.method, "param": run.param}
            for run in runs
        ],
        "config": config_rows,
        "metrics": metric_rows,
    }
