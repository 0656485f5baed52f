"""Runs on the SA-AA plane: their points, the axes' titles, and the front both show.

Torch-free. By default each run's AA is the strongest evaluation `caat eval` stored for
it at its own ε and norm (`STRONGEST`: AutoAttack standard, then fast), SA then measured
on the same test images; a run with neither falls back to training's per-epoch PGD at
the best epoch (chosen on validation), a training-time check, and says so. An explicit
`EvalAxis` takes one attack for every run instead. Every point carries its source.
`front_view` is what the CLI's `caat front` and the dashboard's front screen both draw,
so they agree on every case, the empty one included.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from caat_app.errors import CaatError
from caat_app.present import NORM_TEXT, format_budget
from caat_app.runs.stored import config_of, options_of
from caat_storage import RunStatus

if TYPE_CHECKING:
    from caat_app.analysis.front import RunPoint
    from caat_storage import EvalResult, Run

SPLITS = ("test", "val")

EPOCH_PGD = "epoch-pgd"
"""A point's `aa_source` when its AA is training's per-epoch PGD (a training-time check)."""

STRONGEST = ("autoattack", "autoattack-fast")
"""The stored evaluations the default AA axis takes, strongest first. A lone attack (FGSM,
PGD-20) is never taken silently: it can be weaker than training's own PGD check."""

SOURCE_NAMES = {
    "autoattack": "AutoAttack (standard)",
    "autoattack-fast": "AutoAttack (fast: APGD-CE, APGD-T)",
    EPOCH_PGD: "per-epoch PGD (training-time check)",
}
SOURCE_TAGS = {"autoattack": "AutoAttack", "autoattack-fast": "AutoAttack-fast", EPOCH_PGD: "PGD"}
"""What a point's label gets appended when the sources of a front differ."""


def _full_options(run: Run) -> dict[str, Any]:
    """Every option of the run, defaults filled in: a run stored before an option existed
    shares a setting with one stored after, when the new option is at its default."""
    try:
        return config_of(run).model_dump(mode="json")
    except CaatError:  # a config this version cannot read: compare what is stored
        return options_of(run)


def _point(run: Run, sa: float, aa: float, source: str) -> RunPoint:
    """A run on the SA-AA plane; runs equal in config but for seed and name share a setting,
    and a setting measured by another source is another point (never averaged together)."""
    from caat_app.analysis.front import RunPoint, family_of, label_of

    assert run.id is not None
    config = _full_options(run)
    setting = {k: v for k, v in config.items() if k not in {"seed", "name"}}
    return RunPoint(
        run_id=run.id,
        family=family_of(run.method, config.get("loss", "ce")),
        setting=json.dumps({**setting, "aa_source": source}, sort_keys=True),
        label=label_of(run.method, run.param),
        seed=int(config.get("seed", 0)),
        sa=sa,
        aa=aa,
        source=source,
    )


def _epoch_point(run: Run, split: str) -> RunPoint | None:
    sa = getattr(run, f"best_{split}_clean")
    aa = getattr(run, f"best_{split}_adv")
    if run.status != RunStatus.FINISHED or sa is None or aa is None or run.id is None:
        return None
    return _point(run, sa, aa, EPOCH_PGD)


def points_from_runs(runs: list[Run], *, split: str = "test") -> list[RunPoint]:
    """Finished runs as SA-AA points: best epoch (chosen on validation), per-epoch PGD.

    Runs with the same config but for the seed (and name) form one setting, which the
    front aggregates over seeds.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    return [p for run in runs if (p := _epoch_point(run, split)) is not None]


def _budget_text(configs: Sequence[Mapping[str, Any]]) -> str | None:
    """`L∞ at ε = 8/255` when the runs share a budget, else None."""
    budgets = {(c.get("norm"), c.get("eps")) for c in configs}
    if len(budgets) != 1:
        return None
    norm, eps = budgets.pop()
    return f"{NORM_TEXT.get(str(norm), str(norm))} at ε = {format_budget(eps or 0.0)}"


def axis_labels(runs: list[Run], *, split: str = "test") -> tuple[str, str]:
    """Axis titles for training's per-epoch PGD: the split, the steps and the budget (when
    the runs share them), and that it is a training-time check."""
    configs = [options_of(run) for run in runs]
    steps = {c.get("eval_steps") for c in configs}
    where = "test" if split == "test" else "validation"
    budget = _budget_text(configs)
    name = f"PGD-{steps.pop()}" if len(steps) == 1 else "PGD"
    aa = f"AA: per-epoch {name} (training-time check)"
    aa += f", {budget}, {where} (%)" if budget else f", {where} (%) (mixed budgets!)"
    return f"standard accuracy, {where} (%)", aa


# --------------------------------------------------------------------------- evaluated axes


@dataclass(frozen=True)
class EvalAxis:
    """An evaluated attack as the front's AA axis: `caat eval` results, not training's PGD."""

    attack: str
    eps: float
    norm: str = "linf"
    checkpoint: str = "best"

    @property
    def text(self) -> str:
        """How a person names it, e.g. `autoattack at ε=8/255 (linf, best)`."""
        return f"{self.attack} at ε={format_budget(self.eps)} ({self.norm}, {self.checkpoint})"

    def matches(self, r: EvalResult) -> bool:
        return (
            r.attack == self.attack
            and r.norm == self.norm
            and r.checkpoint == self.checkpoint
            and abs(r.eps - self.eps) <= 1e-9 * max(1.0, abs(self.eps))
        )


def eval_axes(results: Iterable[EvalResult]) -> list[EvalAxis]:
    """Every attack, budget, norm and checkpoint some run was evaluated at (clean aside)."""
    axes = {
        EvalAxis(r.attack, round(r.eps, 12), r.norm, r.checkpoint)
        for r in results
        if r.attack != "clean"
    }
    return sorted(axes, key=lambda a: (a.checkpoint, a.norm, a.attack, a.eps))


def evaluated(mine: Sequence[EvalResult], axis: EvalAxis) -> tuple[float, EvalResult] | None:
    """A run's clean accuracy and its result of `axis`, measured on the same images.

    Of several sample counts the largest wins (the most precise), then the newest; None
    when the run has no such result with a clean one beside it.
    """
    clean = {
        r.samples: r.accuracy
        for r in mine
        if r.attack == "clean" and r.norm == axis.norm and r.checkpoint == axis.checkpoint
    }
    hits = sorted(
        (r for r in mine if axis.matches(r) and r.samples in clean),
        key=lambda r: (r.samples, r.id or 0),
    )
    return (clean[hits[-1].samples], hits[-1]) if hits else None


def points_from_evals(
    runs: Sequence[Run], results: Mapping[int, Sequence[EvalResult]], axis: EvalAxis
) -> tuple[list[RunPoint], list[int]]:
    """SA-AA points with AA from stored evaluations; also the run ids that lack one.

    SA is the clean accuracy measured on the same images (the same sample count) as
    the attack, so both axes describe one test subset.
    """
    points, missing = [], []
    for run in runs:
        if run.id is None:
            continue
        found = evaluated(results.get(run.id, []), axis)
        if found is None:
            missing.append(run.id)
            continue
        points.append(_point(run, found[0], found[1].accuracy, axis.attack))
    return points, missing


def eval_axis_labels(axis: EvalAxis, samples: Iterable[int]) -> tuple[str, str]:
    """Axis titles for a front on evaluated accuracy: the attack, budget and subset size."""
    norm_text = NORM_TEXT.get(axis.norm, axis.norm)
    on = _subset_text(samples)
    return (
        f"standard accuracy, {on} (%)",
        f"{axis.attack} {norm_text} accuracy at ε = {format_budget(axis.eps)}, {on} (%)",
    )


def _subset_text(samples: Iterable[int]) -> str:
    sizes = sorted(set(samples))
    return f"{sizes[0]} test images" if len(sizes) == 1 else "test subsets of mixed sizes!"


# --------------------------------------------------------------------------- the default axis


def strongest(run: Run, mine: Sequence[EvalResult]) -> tuple[str, float, EvalResult] | None:
    """The first of `STRONGEST` stored for the run's best checkpoint at its own ε and norm:
    its attack, the clean accuracy on the same images, and its result."""
    config = options_of(run)
    eps, norm = float(config.get("eps") or 0.0), str(config.get("norm", "linf"))
    for attack in STRONGEST:
        found = evaluated(mine, EvalAxis(attack, eps, norm))
        if found is not None:
            return attack, *found
    return None


def points_by_default(
    runs: Sequence[Run], results: Mapping[int, Sequence[EvalResult]], *, split: str = "test"
) -> tuple[list[RunPoint], list[int]]:
    """Each finished run's point from its strongest stored evaluation, else from training's
    per-epoch PGD; also the sample counts of the evaluated ones.

    Evaluations measure test images, so the validation split is always training's PGD.
    """
    points, samples = [], []
    for run in runs:
        if run.status != RunStatus.FINISHED or run.id is None:
            continue
        found = strongest(run, results.get(run.id, [])) if split == "test" else None
        if found is not None:
            attack, sa, result = found
            points.append(_point(run, sa, result.accuracy, attack))
            samples.append(result.samples)
        elif (point := _epoch_point(run, split)) is not None:
            points.append(point)
    return points, samples


def default_labels(
    runs: list[Run], points: Sequence[RunPoint], samples: Sequence[int], *, split: str
) -> tuple[str, str]:
    """Axis titles of the default front: training's PGD, one stored attack, or a mix."""
    sources = {p.source for p in points}
    if not points or sources == {EPOCH_PGD}:
        return axis_labels(runs, split=split)
    budget = _budget_text([options_of(run) for run in runs]) or "mixed budgets!"
    if len(sources) == 1:
        on = _subset_text(samples)
        return (
            f"standard accuracy, {on} (%)",
            f"AA: {SOURCE_NAMES[sources.pop()]}, {budget}, {on} (%)",
        )
    return (
        "standard accuracy, test (%) (mixed sources!)",
        f"AA: mixed sources (each point's in [ ]), {budget}, test (%)",
    )


def sources_note(points: Sequence[RunPoint]) -> str | None:
    """The verdict's warning when points took AA from different sources; None otherwise."""
    by: dict[str, list[int]] = {}
    for p in points:
        by.setdefault(p.source, []).append(p.run_id)
    if len(by) < 2:
        return None
    parts = [
        f"{SOURCE_NAMES.get(source, source)} for {_runs(sorted(ids))}"
        for source, ids in sorted(by.items(), key=lambda kv: _rank(kv[0]))
    ]
    rest = sorted(i for source, ids in by.items() if source != "autoattack" for i in ids)
    return (
        f"AA mixes sources: {'; '.join(parts)}. Points measured by different attacks do not "
        "compare fairly (training's PGD can overstate robustness next to AutoAttack): "
        f"evaluate {_runs(rest)} with AutoAttack too, or choose one attack as the AA axis."
    )


def _runs(ids: Sequence[int]) -> str:
    return f"run{'s' if len(ids) > 1 else ''} {', '.join(map(str, ids))}"


def _rank(source: str) -> int:
    order = [*STRONGEST, EPOCH_PGD]
    return order.index(source) if source in order else len(order)


def tagged(points: Sequence[RunPoint]) -> list[RunPoint]:
    """Points whose labels name their source (`γ=0.8 [PGD]`) when the sources differ."""
    if len({p.source for p in points}) < 2:
        return list(points)
    return [replace(p, label=f"{p.label} [{SOURCE_TAGS.get(p.source, p.source)}]") for p in points]


# --------------------------------------------------------------------------- the view


@dataclass
class FrontView:
    """A front as people see it: the report, the axis titles, the runs left out of it, and
    the AA axis's source in words (`AutoAttack (standard)`, `mixed sources`, an attack)."""

    report: dict[str, Any]
    labels: tuple[str, str]
    missing: list[int] = field(default_factory=list)
    source: str = SOURCE_NAMES[EPOCH_PGD]


def front_view(
    runs: Sequence[Run],
    *,
    split: str = "test",
    axis: EvalAxis | None = None,
    results: Mapping[int, Sequence[EvalResult]] | None = None,
    ref: tuple[float, float] = (0.0, 0.0),
) -> FrontView:
    """The SA-AA front of the finished ones among `runs`.

    Without `axis`, each run's strongest stored evaluation (`results`: the runs' stored
    evaluations; none given, none used), else training's per-epoch PGD; a mix is tagged
    on every point and warned of in the verdict. With `axis`, AA is that evaluated attack;
    runs never evaluated with it are left out and named in `missing`. Axis titles say
    what was measured, and plain `SA` and `AA` when there is nothing to say it of.
    """
    from caat_app.analysis.front import report

    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    finished = [r for r in runs if r.status == RunStatus.FINISHED]
    stored = results or {}
    missing: list[int] = []
    if axis is None:
        points, samples = points_by_default(finished, stored, split=split)
        labels = (
            default_labels(finished, points, samples, split=split) if finished else ("SA", "AA")
        )
        sources = sorted({p.source for p in points}, key=_rank)
        source = "mixed sources" if len(sources) > 1 else SOURCE_NAMES[(sources or [EPOCH_PGD])[0]]
        axes: dict[str, Any] = {"split": split, "sources": sources}
    else:
        points, missing = points_from_evals(finished, stored, axis)
        samples = [r.samples for p in points for r in stored[p.run_id] if axis.matches(r)]
        labels = eval_axis_labels(axis, samples) if samples else ("SA", "AA")
        source, axes = axis.text, {"attack": axis.text, "missing": missing}
    rep = report(tagged(points), ref=ref)
    if (note := sources_note(points)) is not None:
        rep["verdict"].insert(0, note)
    rep["axes"] = {"sa": labels[0], "aa": labels[1], **axes}
    return FrontView(rep, labels, missing, source)
