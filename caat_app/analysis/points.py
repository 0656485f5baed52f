"""Runs on the SA-AA plane: their points, the axes' titles, and the front both show.

Torch-free. AA is training's per-epoch PGD accuracy at the best epoch (chosen on
validation), or an attack `caat eval` measured (`EvalAxis`), SA then measured on the
same test images. `front_view` is what the CLI's `caat front` and the dashboard's front
screen both draw, so they agree on every case, the empty one included.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from caat_app.present import NORM_TEXT, format_budget
from caat_app.runs.stored import options_of
from caat_storage import RunStatus

if TYPE_CHECKING:
    from caat_storage import EvalResult, Run

SPLITS = ("test", "val")


def _point(run: Run, sa: float, aa: float) -> Any:
    """A run on the SA-AA plane; runs equal in config but for seed and name share a setting."""
    from caat_app.analysis.front import RunPoint, family_of, label_of

    assert run.id is not None
    config = options_of(run)
    setting = {k: v for k, v in config.items() if k not in {"seed", "name"}}
    return RunPoint(
        run_id=run.id,
        family=family_of(run.method, config.get("loss", "ce")),
        setting=json.dumps(setting, sort_keys=True),
        label=label_of(run.method, run.param),
        seed=int(config.get("seed", 0)),
        sa=sa,
        aa=aa,
    )


def points_from_runs(runs: list[Run], *, split: str = "test") -> list[Any]:
    """Finished runs as SA-AA points: best epoch (chosen on validation), PGD accuracy.

    Runs with the same config but for the seed (and name) form one setting, which the
    front aggregates over seeds.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    points = []
    for run in runs:
        sa = getattr(run, f"best_{split}_clean")
        aa = getattr(run, f"best_{split}_adv")
        if run.status != RunStatus.FINISHED or sa is None or aa is None or run.id is None:
            continue
        points.append(_point(run, sa, aa))
    return points


def axis_labels(runs: list[Run], *, split: str = "test") -> tuple[str, str]:
    """Axis titles naming the split, the attack and the budget (when the runs share them)."""
    configs = [options_of(run) for run in runs]
    budgets = {(c.get("norm"), c.get("eps"), c.get("eval_steps")) for c in configs}
    where = "test" if split == "test" else "validation"
    if len(budgets) == 1:
        norm, eps, steps = budgets.pop()
        eps_text = format_budget(eps or 0.0)
        norm_text = NORM_TEXT.get(str(norm), str(norm))
        aa = f"PGD-{steps} {norm_text} accuracy at ε = {eps_text}, {where} (%)"
    else:
        aa = f"PGD accuracy, {where} (%) (mixed budgets!)"
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


def points_from_evals(
    runs: Sequence[Run], results: Mapping[int, Sequence[EvalResult]], axis: EvalAxis
) -> tuple[list[Any], list[int]]:
    """SA-AA points with AA from stored evaluations; also the run ids that lack one.

    SA is the clean accuracy measured on the same images (the same sample count) as
    the attack, so both axes describe one test subset. Of several sample counts the
    largest wins (the most precise), then the newest.
    """
    points, missing = [], []
    for run in runs:
        if run.id is None:
            continue
        mine = results.get(run.id, [])
        clean = {
            r.samples: r.accuracy
            for r in mine
            if r.attack == "clean" and r.norm == axis.norm and r.checkpoint == axis.checkpoint
        }
        hits = sorted(
            (r for r in mine if axis.matches(r) and r.samples in clean),
            key=lambda r: (r.samples, r.id or 0),
        )
        if not hits:
            missing.append(run.id)
            continue
        best = hits[-1]
        points.append(_point(run, clean[best.samples], best.accuracy))
    return points, missing


def eval_axis_labels(axis: EvalAxis, samples: Iterable[int]) -> tuple[str, str]:
    """Axis titles for a front on evaluated accuracy: the attack, budget and subset size."""
    norm_text = NORM_TEXT.get(axis.norm, axis.norm)
    sizes = sorted(set(samples))
    on = f"{sizes[0]} test images" if len(sizes) == 1 else "test subsets of mixed sizes!"
    return (
        f"standard accuracy, {on} (%)",
        f"{axis.attack} {norm_text} accuracy at ε = {format_budget(axis.eps)}, {on} (%)",
    )


@dataclass
class FrontView:
    """A front as people see it: the report, the axis titles, the runs left out of it."""

    report: dict[str, Any]
    labels: tuple[str, str]
    missing: list[int] = field(default_factory=list)


def front_view(
    runs: Sequence[Run],
    *,
    split: str = "test",
    axis: EvalAxis | None = None,
    results: Mapping[int, Sequence[EvalResult]] | None = None,
    ref: tuple[float, float] = (0.0, 0.0),
) -> FrontView:
    """The SA-AA front of the finished ones among `runs`.

    With `axis`, AA is that evaluated attack (`results`: the runs' stored evaluations);
    runs never evaluated with it are left out and named in `missing`. Axis titles say
    what was measured, and plain `SA` and `AA` when there is nothing to say it of.
    """
    from caat_app.analysis.front import report

    finished = [r for r in runs if r.status == RunStatus.FINISHED]
    missing: list[int] = []
    if axis is None:
        points = points_from_runs(finished, split=split)
        labels = axis_labels(finished, split=split) if finished else ("SA", "AA")
        axes: dict[str, Any] = {"split": split}
    else:
        stored = results or {}
        points, missing = points_from_evals(finished, stored, axis)
        samples = [r.samples for p in points for r in stored[p.run_id] if axis.matches(r)]
        labels = eval_axis_labels(axis, samples) if samples else ("SA", "AA")
        axes = {"attack": axis.text, "missing": missing}
    rep = report(points, ref=ref)
    rep["axes"] = {"sa": labels[0], "aa": labels[1], **axes}
    return FrontView(rep, labels, missing)
