"""What an evaluation is, without torch: its attacks and their settings, a checked request,
the measurements it plans, and the tables people read.

Torch-free on purpose: the dashboard's evaluation form and table, the CLI and the worker
share these rules, so what the form accepts is exactly what the worker runs.

Probes. The gradient-masking report needs two measurements nobody asks for by name: the
same PGD with 5× the steps (did the 20-step number converge?) and PGD at a very large
budget (does accuracy reach zero?). Whenever PGD is in an evaluation both are measured
too; they are stored like any result and listed under the report, not in the table.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from caat_app.attacks.registry import ATTACKS, NORMS
from caat_app.errors import CaatError
from caat_app.evaluation.masking import VERY_LARGE_RATIO
from caat_app.present import NORM_TEXT, format_budget, parse_budget

EVAL_ATTACKS = tuple(name for name, attack in ATTACKS.items() if attack.evaluation)
ATTACK_HELP = {name: ATTACKS[name].help for name in EVAL_ATTACKS}
CHECKPOINTS = ("best", "last")
DEFAULT_ATTACKS = ("fgsm", "pgd", "apgd-ce", "autoattack-fast")
PROBE_STEPS = "pgd-100"  # the convergence probe of `pgd`
EVAL_BATCH = 256  # fixed: a `batchstats` model's predictions depend on the batch


def settings_of(attack: str, eps: float) -> dict[str, Any]:
    """The settings an attack runs with (stored with its result, part of its identity)."""
    return {} if attack == "clean" else ATTACKS[attack].settings(eps)


def settings_text(attack: str, eps: float) -> str:
    """The settings as the store keeps them: canonical JSON, so equal settings compare equal."""
    return json.dumps(settings_of(attack, eps), sort_keys=True)


@dataclass(frozen=True)
class EvalSpec:
    """A checked evaluation request; build it with `eval_spec`, never by hand."""

    attacks: tuple[str, ...]
    budgets: tuple[float, ...]
    norm: str = "linf"
    n: int = 1000
    checkpoint: str = "best"
    force: bool = False
    device: str = "auto"

    def to_json(self) -> dict[str, Any]:
        return {
            "attacks": list(self.attacks),
            "budgets": list(self.budgets),
            "norm": self.norm,
            "n": self.n,
            "checkpoint": self.checkpoint,
            "force": self.force,
            "device": self.device,
        }


def parse_attacks(text: str | Sequence[str]) -> tuple[str, ...]:
    """Attack names from a comma list (or a list), known ones only, each once, in order."""
    items = text.split(",") if isinstance(text, str) else list(text)
    names = [a.strip().lower() for a in items if a.strip()]
    if not names:
        raise CaatError("--attacks: name at least one attack")
    unknown = [a for a in names if a not in EVAL_ATTACKS]
    if unknown:
        raise CaatError(
            f"--attacks: unknown {', '.join(unknown)}; choose from {', '.join(EVAL_ATTACKS)}"
        )
    return tuple(dict.fromkeys(names))


def parse_budgets(text: str | Sequence[float]) -> tuple[float, ...]:
    """Budgets from a comma list like `8/255,16/255` (or numbers), each finite and > 0."""
    if isinstance(text, str):
        try:
            values = [parse_budget(e) for e in text.split(",") if e.strip()]
        except ValueError as exc:
            raise CaatError(f"--eps: {exc}") from None
    else:
        values = [float(v) for v in text]
    if not values:
        raise CaatError("--eps: give at least one budget, e.g. 8/255")
    bad = [v for v in values if not (math.isfinite(v) and v > 0)]
    if bad:
        raise CaatError(f"--eps: budgets must be positive numbers, got {bad[0]:g}")
    return tuple(dict.fromkeys(values))


def eval_spec(
    *,
    attacks: str | Sequence[str],
    budgets: str | Sequence[float],
    norm: str = "linf",
    n: int = 1000,
    checkpoint: str = "best",
    force: bool = False,
    device: str = "auto",
) -> EvalSpec:
    """Check every part of a request; the first problem is a CaatError naming its option."""
    if norm not in NORMS:
        raise CaatError(f"--norm: unknown {norm!r}; choose one of {', '.join(NORMS)}")
    if checkpoint not in CHECKPOINTS:
        raise CaatError(f"--checkpoint: unknown {checkpoint!r}; choose one of best, last")
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise CaatError(f"--n: expected a whole number ≥ 0 (0: all), got {n!r}")
    if not device or not isinstance(device, str):
        raise CaatError("--device: expected auto, cpu, cuda or cuda:N")
    return EvalSpec(
        attacks=parse_attacks(attacks),
        budgets=parse_budgets(budgets),
        norm=norm,
        n=n,
        checkpoint=checkpoint,
        force=force,
        device=device,
    )


def spec_from_json(data: Mapping[str, Any]) -> EvalSpec:
    """A stored request back as a spec, checked again (the store is not trusted blindly)."""
    return eval_spec(
        attacks=data["attacks"],
        budgets=data["budgets"],
        norm=data["norm"],
        n=int(data["n"]),
        checkpoint=data["checkpoint"],
        force=bool(data.get("force", False)),
        device=data.get("device", "auto"),
    )


@dataclass(frozen=True)
class Measurement:
    """One (attack, ε) to measure; `probe` ones feed the masking report only."""

    attack: str
    eps: float
    probe: bool = False

    @property
    def label(self) -> str:
        if self.attack == "clean":
            return "clean"
        return f"{self.attack} at ε={format_budget(self.eps)}"


def large_budget(budgets: Sequence[float], norm: str) -> float:
    """The masking report's 'very large' ε: 4× the largest asked for (L∞: at most 1)."""
    top = VERY_LARGE_RATIO * max(budgets)
    return min(top, 1.0) if norm == "linf" else top  # L∞ at 1 is already all of [0, 1]


def plan(spec: EvalSpec) -> list[Measurement]:
    """Clean first, then each budget's attacks in the order asked, then the probes."""
    jobs = [Measurement("clean", 0.0)]
    jobs += [Measurement(a, e) for e in spec.budgets for a in spec.attacks]
    if "pgd" in spec.attacks:
        if PROBE_STEPS not in spec.attacks:
            jobs += [Measurement(PROBE_STEPS, e, probe=True) for e in spec.budgets]
        big = large_budget(spec.budgets, spec.norm)
        if big > max(spec.budgets):  # L∞ at 1 is very large too: its ball is the whole box
            jobs.append(Measurement("pgd", big, probe=True))
    return jobs


def describe_spec(text: str) -> str:
    """A stored job's request in one line; one that cannot be read is shown as it is."""
    try:
        spec = json.loads(text)
        budgets = ",".join(format_budget(float(e)) for e in spec["budgets"])
        n = int(spec["n"])
        norm = NORM_TEXT.get(spec["norm"], spec["norm"])
        return (
            f"{','.join(spec['attacks'])} · ε={budgets} {norm} · {n or 'all'} images · "
            f"{spec['checkpoint']}" + (" · measured again" if spec.get("force") else "")
        )
    except (TypeError, ValueError, KeyError):
        return text
