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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from caat_app.attacks.registry import ATTACKS, NORMS
from caat_app.config import parse_budget
from caat_app.errors import CaatError
from caat_app.evaluation.masking import VERY_LARGE_RATIO, Check, masking_report, pct, summary
from caat_app.evaluation.masking import to_json as masking_json
from caat_app.present import NORM_TEXT, format_budget

EVAL_ATTACKS = tuple(name for name, attack in ATTACKS.items() if attack.evaluation)
ATTACK_HELP = {name: ATTACKS[name].help for name in EVAL_ATTACKS}
CHECKPOINTS = ("best", "last")
DEFAULT_ATTACKS = ("fgsm", "pgd", "apgd-ce", "autoattack-fast")
PROBE_STEPS = "pgd-100"  # the convergence probe of `pgd`
EVAL_BATCH = 256  # fixed: a `batchstats` model's predictions depend on the batch
MARKS = {True: "ok  ", False: "FLAG", None: "n/a "}
BATCH_NOTE = (
    "note: BatchNorm in batchstats mode: predictions depend on the batch "
    f"(here the images in their fixed order, {EVAL_BATCH} at a time)"
)


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


# --------------------------------------------------------------------------- reading results


class EvalRow(Protocol):
    """What a stored result offers (storage's EvalResult, or a plain record in tests)."""

    checkpoint: str
    weights: str
    attack: str
    norm: str
    eps: float
    samples: int
    accuracy: float
    seconds: float
    settings: str


def masking_records(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Results as the masking report reads them: with step counts, and `pgd-100` as PGD's kin."""
    records = []
    for r in rows:
        if r["attack"] == "clean":
            continue
        settings = r.get("settings") or "{}"
        steps = json.loads(settings).get("steps") if isinstance(settings, str) else None
        family = "pgd" if r["attack"] == PROBE_STEPS else r["attack"]
        records.append({**r, "family": family, "steps": steps})
    return records


def _key(eps: float) -> float:
    return round(float(eps), 9)


@dataclass
class EvalTable:
    """One evaluation as the paper prints it: budgets as rows, attacks as columns, SA first.

    All results of one run that share a checkpoint (and its weights), a norm and a sample
    count form one table, whichever `caat eval` calls measured them; the masking report
    reads them all.
    """

    checkpoint: str
    weights: str
    norm: str
    samples: int
    clean: float | None
    attacks: list[str]
    budgets: list[float]
    cells: dict[tuple[str, float], float] = field(default_factory=dict)
    seconds: float = 0.0
    checks: list[Check] = field(default_factory=list)
    probes: list[dict[str, Any]] = field(default_factory=list)

    def cell(self, attack: str, eps: float) -> float | None:
        return self.cells.get((attack, _key(eps)))

    def to_json(self) -> dict[str, Any]:
        return {
            "checkpoint": self.checkpoint,
            "weights": self.weights,
            "norm": self.norm,
            "samples": self.samples,
            "clean": self.clean,
            "results": [
                {"attack": a, "eps": e, "accuracy": self.cells[(a, _key(e))]}
                for e in self.budgets
                for a in self.attacks
                if (a, _key(e)) in self.cells
            ],
            "probes": self.probes,
            "masking": masking_json(self.checks),
        }


def _row(r: EvalRow | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(r, Mapping):
        return dict(r)
    keys = ("checkpoint", "weights", "attack", "norm", "eps", "samples", "accuracy", "seconds")
    return {k: getattr(r, k) for k in keys} | {"settings": r.settings}


def build_table(
    rows: Iterable[EvalRow | Mapping[str, Any]],
    *,
    attacks: Sequence[str] | None = None,
    budgets: Sequence[float] | None = None,
) -> EvalTable:
    """One table from the results of one (checkpoint and weights, norm, samples).

    `attacks` and `budgets` choose the columns and rows (the CLI shows what was asked);
    by default every attack and budget present, probes included. Results outside the
    chosen grid become `probes`, listed under the masking report. The report always
    reads every result, since a probe is what makes some checks possible.
    """
    data = [_row(r) for r in rows]
    if not data:
        raise ValueError("no results to tabulate")
    first = data[0]
    clean = next((r["accuracy"] for r in data if r["attack"] == "clean"), None)
    measured = [r for r in data if r["attack"] != "clean"]
    order = {a: i for i, a in enumerate(EVAL_ATTACKS)}
    columns = (
        list(attacks)
        if attacks is not None
        else sorted({r["attack"] for r in measured}, key=lambda a: order.get(a, len(order)))
    )
    rows_eps = (
        [float(e) for e in budgets]
        if budgets is not None
        else sorted({float(r["eps"]) for r in measured}, key=_key)
    )
    wanted_eps = {_key(e) for e in rows_eps}
    table = EvalTable(
        checkpoint=first["checkpoint"],
        weights=first.get("weights", ""),
        norm=first["norm"],
        samples=int(first["samples"]),
        clean=clean,
        attacks=columns,
        budgets=rows_eps,
        seconds=sum(float(r.get("seconds") or 0.0) for r in data),
    )
    for r in measured:
        if r["attack"] in columns and _key(r["eps"]) in wanted_eps:
            table.cells[(r["attack"], _key(r["eps"]))] = float(r["accuracy"])
        else:
            table.probes.append(
                {"attack": r["attack"], "eps": float(r["eps"]), "accuracy": float(r["accuracy"])}
            )
    if clean is not None:
        table.checks = masking_report(masking_records(measured), clean=clean)
    return table


def _grid_of(rows: Sequence[EvalRow]) -> tuple[list[str], list[float]]:
    """Columns and rows for stored results, with what looks like `plan`'s probes left out.

    The store does not mark probes, so they are recognised by their shape: `pgd-100`
    only where `pgd` was run at the same ε, and a budget at which only `pgd` was run that
    is the very-large one for the others. Nothing is hidden: they become probe lines.
    """
    order = {a: i for i, a in enumerate(EVAL_ATTACKS)}
    measured = [r for r in rows if r.attack != "clean"]
    at: dict[str, set[float]] = {}
    for r in measured:
        at.setdefault(r.attack, set()).add(_key(r.eps))
    columns = sorted(at, key=lambda a: order.get(a, len(order)))
    if PROBE_STEPS in at and at[PROBE_STEPS] <= at.get("pgd", set()):
        columns.remove(PROBE_STEPS)
    budgets = sorted({_key(r.eps) for r in measured})
    others = sorted({_key(r.eps) for r in measured if r.attack != "pgd"})
    if others:
        norm = rows[0].norm
        big = large_budget(others, norm)
        budgets = [e for e in budgets if e in others or e < big - 1e-12]
    return columns, budgets


def tables_from_results(rows: Iterable[EvalRow]) -> list[EvalTable]:
    """A run's stored results as tables, newest first: one per checkpoint and its weights,
    norm and sample count."""
    groups: dict[tuple[str, str, str, int], list[EvalRow]] = {}
    for r in rows:
        groups.setdefault((r.checkpoint, r.weights, r.norm, r.samples), []).append(r)
    newest = sorted(
        groups.values(), key=lambda g: max(getattr(r, "id", 0) or 0 for r in g), reverse=True
    )
    tables = []
    for group in newest:
        columns, budgets = _grid_of(group)
        tables.append(build_table(group, attacks=columns, budgets=budgets))
    return tables


def table_cells(table: EvalTable) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the paper's layout, as text: the CLI and the dashboard share it."""
    header = ["ε", "SA", *table.attacks]
    body = [
        [format_budget(e), pct(table.clean), *[pct(table.cell(a, e)) for a in table.attacks]]
        for e in table.budgets
    ]
    return header, body


def probe_lines(table: EvalTable) -> list[str]:
    """The probes, one line each, for under the masking report."""
    return [
        f"probe {p['attack']} at ε={format_budget(p['eps'])}: {pct(p['accuracy'])}%"
        for p in table.probes
    ]


def report_lines(table: EvalTable, *, batchstats: bool = False) -> list[tuple[str, bool]]:
    """What follows a table, for the CLI and the dashboard alike: the masking report (its
    summary, one line per check), the probes, the batch note; True marks a flagged line.

    Clean accuracy alone (the attacks still running, or stopped before one finished) gets
    one line instead of a report whose every check says it cannot tell.
    """
    if table.attacks or table.probes:
        lines = [(summary(table.checks), any(c.passed is False for c in table.checks))]
        lines += [
            (f"  {MARKS[c.passed]} {c.name}: {c.detail}", c.passed is False) for c in table.checks
        ]
        lines += [(f"  {line}", False) for line in probe_lines(table)]
    else:
        lines = [(f"clean accuracy {pct(table.clean)}%; no attack measured yet", False)]
    if batchstats:
        lines.append((f"  {BATCH_NOTE}", False))
    return lines


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
