"""Table 1 of the paper, its numbers as printed, and the table that sets caat's beside them.

Torch-free and pure. The numbers are copied from the paper (CIFAR-10; CA-AT γ = 0.8 and
Vanilla AT λ = 0.5; ResNet-18 and ResNet-34), each row in the paper's column order, so a
reader can check them against the page line by line.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from caat_app.attacks.registry import ATTACKS
from caat_app.paper.catalogue import TABLE1_ATTACKS
from caat_app.present import format_budget, pct

PAPER_COLUMNS = ("PGD", "AutoPGD", "MIFGSM", "FAB", "T-FAB", "FGSM")
"""The paper's column names, in the order of `TABLE1_ATTACKS` (caat's names)."""

# Per model: SA (CA-AT, Vanilla), then per budget k/255 the pairs (CA-AT, Vanilla) of
# PGD, AutoPGD, MIFGSM, FAB, T-FAB, FGSM, as the paper prints them.
_SA = {"resnet18": (0.8659, 0.8239), "resnet34": (0.8753, 0.8305)}
_TEXT: dict[str, dict[int, str]] = {
    "resnet18": {
        8: "0.7442 0.4703 0.6301 0.3996 0.7419 0.4745 0.8177 0.809 0.6861 0.6538 0.7649 0.519",
        16: "0.7311 0.4248 0.5555 0.2486 0.7233 0.4225 0.7475 0.78 0.5445 0.5104 0.7435 0.4387",
        24: "0.7189 0.405 0.4886 0.1963 0.7182 0.413 0.6858 0.7333 0.4599 0.4783 0.7235 0.403",
        32: "0.7033 0.3877 0.4455 0.1589 0.7182 0.413 0.6402 0.6836 0.4044 0.4507 0.7066 0.379",
    },
    "resnet34": {
        8: "0.8098 0.5973 0.7285 0.4417 0.8111 0.5983 0.8247 0.8068 0.7274 0.6951 0.8149 0.5327",
        16: "0.8034 0.5756 0.6793 0.3395 0.8077 0.5791 0.7738 0.7613 0.6013 0.5762 0.7916 0.2762",
        24: "0.7957 0.5602 0.6445 0.2859 0.8067 0.5743 0.7307 0.6937 0.5142 0.5174 0.7743 0.1428",
        32: "0.785 0.5443 0.6165 0.2498 0.8067 0.5743 0.6918 0.6221 0.4424 0.4822 0.7616 0.088",
    },
}
_ROWS = {
    model: {k: tuple(float(x) for x in text.split()) for k, text in rows.items()}
    for model, rows in _TEXT.items()
}

MODELS = tuple(_ROWS)
PROTOCOL = (
    "protocol: the paper's evaluation used 10-step APGD and a fixed 2/255 MI-FGSM step (so "
    "its MI-FGSM cannot leave a 20/255 ball: its 24/255 and 32/255 columns repeat); caat "
    "uses the reference settings: "
)


def paper_cell(model: str, attack: str, eps: float) -> tuple[float, float] | None:
    """The paper's (Vanilla AT, CA-AT) accuracy for caat's attack name at ε; None if absent.

    `attack` "clean" is the standard accuracy (printed once per model, at any ε).
    """
    if model not in _ROWS:
        return None
    if attack == "clean":
        ca, vanilla = _SA[model]
        return vanilla, ca
    k = round(eps * 255)
    row = _ROWS[model].get(k)
    if row is None or abs(eps * 255 - k) > 1e-6 or attack not in TABLE1_ATTACKS:
        return None
    i = TABLE1_ATTACKS.index(attack)
    ca, vanilla = row[2 * i], row[2 * i + 1]
    return vanilla, ca


def protocol_text() -> str:
    """What the paper's protocol was and what caat's is, attack by attack (from the registry)."""
    settings = "; ".join(f"{name}: {ATTACKS[name].help}" for name in TABLE1_ATTACKS)
    return PROTOCOL + settings + "."


Cells = Mapping[tuple[str, str, float], float]
"""Measured accuracies by (method, attack, ε); attack "clean" for SA."""


def comparison_rows(
    model: str | None,
    measured: Cells,
    *,
    attacks: Sequence[str],
    budgets: Sequence[float],
    ratio: float = 1.0,
) -> list[dict[str, Any]]:
    """One row per (budget, attack), SA first: the paper's pair beside caat's pair.

    `model` picks the paper's rows (None: none, its columns stay empty); the paper's row
    of a budget ε is the one at ε / `ratio` (the smoke scale's 0.3 sits beside 8/255).
    Accuracies are fractions or None.
    """
    rows: list[dict[str, Any]] = []
    wanted = [("clean", budgets[0])] + [(a, e) for e in budgets for a in attacks]
    for attack, eps in wanted:
        paper = paper_cell(model, attack, eps / ratio) if model else None
        label = PAPER_COLUMNS[TABLE1_ATTACKS.index(attack)] if attack in TABLE1_ATTACKS else attack
        rows.append(
            {
                "attack": "SA" if attack == "clean" else label,
                "caat_attack": attack,
                "eps": None if attack == "clean" else eps,
                "paper_eps": None if attack == "clean" else eps / ratio,
                "paper_vanilla": paper[0] if paper else None,
                "paper_caat": paper[1] if paper else None,
                "caat_vanilla": measured.get(("vanilla", attack, _key(eps, attack))),
                "caat_caat": measured.get(("caat", attack, _key(eps, attack))),
            }
        )
    return rows


def _key(eps: float, attack: str) -> float:
    return 0.0 if attack == "clean" else round(eps, 9)


def cell_key(method: str, attack: str, eps: float) -> tuple[str, str, float]:
    """The key `comparison_rows` reads a measured accuracy under."""
    return (method, attack, _key(eps, attack))


def row_cells(row: Mapping[str, Any]) -> list[str]:
    """A comparison row as table cells: attack, ε, then the four accuracies in %."""
    eps = "" if row["eps"] is None else format_budget(row["eps"])
    if row["eps"] is not None and abs(row["paper_eps"] - row["eps"]) > 1e-12:
        eps += f" ↔ {format_budget(row['paper_eps'])}"  # the smoke budget beside the paper's
    keys = ("paper_vanilla", "paper_caat", "caat_vanilla", "caat_caat")
    return [row["attack"], eps, *[pct(row[k]) for k in keys]]


def wins(rows: Sequence[Mapping[str, Any]], left: str, right: str) -> tuple[int, int]:
    """In how many rows with both numbers `right` beats or ties `left`; and how many have both."""
    both = [r for r in rows if r[left] is not None and r[right] is not None]
    return sum(r[right] >= r[left] for r in both), len(both)
