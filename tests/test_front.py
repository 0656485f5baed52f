"""SA-AA fronts: Pareto, hypervolume and verdict on hand-checked points, plus properties."""

from __future__ import annotations

import csv
import io
import json
import math
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from helpers import run_cli
from hypothesis import given, settings
from hypothesis import strategies as st

from caat_app.analysis.front import (
    Point,
    RunPoint,
    aggregate,
    dominated,
    family_of,
    front_dominates,
    hypervolume,
    label_of,
    pareto_front,
    report,
)
from caat_app.analysis.points import SPLITS, FrontView, front_view
from caat_app.config import build_config
from caat_app.evaluation.plan import settings_text
from caat_app.runs.manage import create_run
from caat_storage import RunStatus, Store

V, C = "Vanilla AT", "CA-AT"


def pt(sa: float, aa: float, setting: str = "", family: str = V, label: str = "") -> Point:
    setting = setting or f"{sa},{aa}"
    return Point(family=family, setting=setting, label=label or setting, sa=sa, aa=aa)


def rp(
    run_id: int, sa: float, aa: float, *, family: str = V, label: str = "λ=0.5", seed: int = 0
) -> RunPoint:
    return RunPoint(
        run_id=run_id,
        family=family,
        setting=f"{family}:{label}",
        label=label,
        seed=seed,
        sa=sa,
        aa=aa,
    )


def coords(points: list[Point]) -> list[tuple[float, float]]:
    return [(p.sa, p.aa) for p in points]


# -- helpers --------------------------------------------------------------------------------


def test_family_and_label() -> None:
    assert family_of("vanilla", "ce") == "Vanilla AT"
    assert family_of("caat", "ce") == "CA-AT"
    assert family_of("vanilla", "trades") == "Vanilla AT · trades"
    assert family_of("caat", "clp") == "CA-AT · clp"
    assert label_of("vanilla", 0.5) == "λ=0.5"
    assert label_of("caat", 0.8) == "γ=0.8"
    assert label_of("vanilla", 1.0) == "λ=1"
    with pytest.raises(ValueError, match="unknown method"):
        family_of("sgd", "ce")
    with pytest.raises(ValueError, match="unknown method"):
        label_of("sgd", 0.1)


def test_runpoint_rejects_non_accuracies() -> None:
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        rp(1, 93.0, 0.4)
    with pytest.raises(ValueError):
        rp(1, 0.5, math.nan)


# -- Pareto front ---------------------------------------------------------------------------

A, B, CC, D = pt(0.75, 0.25), pt(0.5, 0.5), pt(0.25, 0.75), pt(0.4, 0.3)


def test_staircase_front_and_hand_computed_hypervolume() -> None:
    front = pareto_front([D, A, CC, B])
    assert front == [CC, B, A]  # sa ascending
    # Sweep from the right: 0.75*0.25 + 0.5*(0.5-0.25) + 0.25*(0.75-0.5) = 0.375
    assert hypervolume(front) == 0.375
    assert hypervolume([D, A, CC, B]) == 0.375  # the dominated point adds nothing
    # Against (0.25, 0.25): A sits on aa = 0.25 and C on sa = 0.25, so only B's box counts.
    assert hypervolume(front, ref=(0.25, 0.25)) == 0.25 * 0.25
    assert dominated([D, A, CC, B]) == {D.setting: [B.setting]}


def test_ties_same_sa_lower_aa_is_dominated() -> None:
    hi, lo = pt(0.5, 0.6, "hi"), pt(0.5, 0.4, "lo")
    assert pareto_front([lo, hi]) == [hi]
    assert dominated([lo, hi]) == {"lo": ["hi"]}
    # and symmetrically on the other axis
    right, left = pt(0.7, 0.4, "right"), pt(0.5, 0.4, "left")
    assert pareto_front([left, right]) == [right]


def test_exact_duplicates_are_both_kept() -> None:
    a, b = pt(0.5, 0.5, "a"), pt(0.5, 0.5, "b", family=C)
    other = pt(0.8, 0.1, "c")
    front = pareto_front([other, b, a])
    assert front == [a, b, other]  # duplicates ordered by family (Vanilla AT first)
    assert dominated([a, b, other]) == {}
    assert hypervolume(front) == pytest.approx(0.5 * 0.5 + 0.8 * 0.1 - 0.5 * 0.1)
    # a duplicate of a dominated point is dominated too
    d1, d2 = pt(0.2, 0.2, "d1"), pt(0.2, 0.2, "d2")
    assert dominated([a, d1, d2]) == {"d1": ["a"], "d2": ["a"]}


def test_single_point_hypervolume_is_its_box() -> None:
    p = pt(0.8, 0.45)
    assert pareto_front([p]) == [p]
    assert hypervolume([p]) == pytest.approx(0.8 * 0.45)
    assert hypervolume([p], ref=(0.5, 0.25)) == pytest.approx(0.3 * 0.2)


def test_empty_family() -> None:
    assert pareto_front([]) == []
    assert hypervolume([]) == 0.0
    assert dominated([]) == {}
    assert front_dominates([pt(0.1, 0.1)], []) is True
    assert front_dominates([], [pt(0.1, 0.1)]) is False
    assert front_dominates([], []) is False


def test_points_not_beyond_reference_add_nothing() -> None:
    ref = (0.5, 0.3)
    assert hypervolume([pt(0.4, 0.9), pt(0.9, 0.2), pt(0.5, 0.8), pt(0.9, 0.3)], ref) == 0.0
    assert hypervolume([pt(0.4, 0.9), pt(0.7, 0.5)], ref) == pytest.approx(0.2 * 0.2)


def test_dominated_across_families() -> None:
    v = pt(0.5, 0.3, "λ=0.5", family=V)
    c1, c2 = pt(0.6, 0.4, "γ=0.8", family=C), pt(0.55, 0.35, "γ=0.9", family=C)
    assert dominated([v, c1, c2]) == {"λ=0.5": ["γ=0.9", "γ=0.8"], "γ=0.9": ["γ=0.8"]}


def test_front_dominates() -> None:
    a = [pt(0.5, 0.5), pt(0.8, 0.2)]
    b = [pt(0.5, 0.4), pt(0.7, 0.2)]
    assert front_dominates(a, b) and not front_dominates(b, a)
    # identical fronts dominate neither way, even from different families
    twin = [pt(0.5, 0.5, family=C), pt(0.8, 0.2, family=C)]
    assert not front_dominates(a, twin) and not front_dominates(twin, a)
    # a front that adds a point to another's is better
    assert front_dominates(a, [pt(0.5, 0.5)])
    # crossing fronts: neither
    cross = [pt(0.9, 0.1), pt(0.3, 0.6)]
    assert not front_dominates(a, cross) and not front_dominates(cross, a)


# -- aggregation ----------------------------------------------------------------------------


def test_seed_aggregation() -> None:
    runs = [
        rp(3, 0.6, 0.30, seed=2),
        rp(1, 0.5, 0.20, seed=0),
        rp(2, 0.7, 0.40, seed=1),
        rp(4, 0.9, 0.10, family=C, label="γ=0.8"),
    ]
    v, c = aggregate(runs)
    assert (v.family, v.label, v.seeds, v.run_ids) == (V, "λ=0.5", 3, (1, 2, 3))
    assert v.sa == pytest.approx(0.6) and v.aa == pytest.approx(0.3)
    # sample std (n - 1): deviations ±0.1 and 0 -> sqrt(0.02 / 2) = 0.1
    assert v.sa_std == pytest.approx(0.1) and v.aa_std == pytest.approx(0.1)
    assert v.sa_range == (0.5, 0.7) and v.aa_range == (0.2, 0.4)
    assert (c.seeds, c.sa_std, c.aa_std, c.sa_range, c.aa_range) == (
        1,
        0.0,
        0.0,
        (0.9, 0.9),
        (0.1, 0.1),
    )


def test_aggregation_keeps_families_apart_with_the_same_setting() -> None:
    a = RunPoint(1, V, "same", "x", 0, 0.5, 0.5)
    b = RunPoint(2, C, "same", "x", 0, 0.6, 0.6)
    assert [p.family for p in aggregate([b, a])] == [V, C]


# -- report and verdict ---------------------------------------------------------------------


def test_report_when_one_front_dominates() -> None:
    runs = [
        rp(1, 0.50, 0.30, label="λ=0.5"),
        rp(2, 0.52, 0.32, label="λ=0.5", seed=1),
        rp(3, 0.70, 0.10, label="λ=0"),
        rp(4, 0.71, 0.11, label="λ=0", seed=1),
        rp(5, 0.60, 0.40, family=C, label="γ=0.8"),
        rp(6, 0.62, 0.42, family=C, label="γ=0.8", seed=1),
        rp(7, 0.80, 0.20, family=C, label="γ=0.9"),
        rp(8, 0.82, 0.22, family=C, label="γ=0.9", seed=1),
    ]
    rep = report(runs)
    json.dumps(rep)  # JSON-able
    assert rep["reference"] == [0.0, 0.0]
    assert list(rep["families"]) == [V, C]
    assert rep["families"][C]["front"] == ["γ=0.8", "γ=0.9"]
    assert rep["families"][V]["front"] == ["λ=0.5", "λ=0"]
    assert rep["families"][V]["points"] == 2
    hv_c = 0.81 * 0.21 + 0.61 * (0.41 - 0.21)
    assert rep["families"][C]["hypervolume"] == pytest.approx(hv_c)
    verdict = rep["verdict"]
    assert "CA-AT's front dominates Vanilla AT's." in verdict
    assert "λ=0.5 (Vanilla AT) is dominated by γ=0.8 (CA-AT)." in verdict
    assert "λ=0 (Vanilla AT) is dominated by γ=0.9 (CA-AT)." in verdict
    assert not any("single seed" in s for s in verdict)
    by_label = {p["label"]: p for p in rep["points"]}
    assert by_label["λ=0.5"]["run_ids"] == [1, 2]
    assert by_label["λ=0.5"]["dominated"] and by_label["λ=0.5"]["on_front"]
    assert by_label["γ=0.8"]["seeds"] == 2 and not by_label["γ=0.8"]["dominated"]
    dom = {d["point"]: d for d in rep["dominated"]}
    assert dom["λ=0.5"]["family"] == V
    assert dom["λ=0.5"]["by"] == [{"point": "γ=0.8", "family": C, "setting": f"{C}:γ=0.8"}]


def test_report_when_neither_dominates_names_the_larger_hypervolume() -> None:
    runs = [
        rp(1, 0.9, 0.1, label="λ=0"),
        rp(2, 0.5, 0.5, family=C, label="γ=0.8"),
        rp(3, 0.5, 0.5, family=C, label="γ=0.8", seed=1),
    ]
    verdict = report(runs)["verdict"]
    assert (
        "Neither front dominates the other: CA-AT has the larger hypervolume (0.250 vs 0.090)."
        in verdict
    )
    assert "No point is dominated by another." in verdict
    assert "Some points come from a single seed (λ=0): their spread is unknown." in verdict


def test_hypervolumes_close_together_get_enough_digits() -> None:
    runs = [rp(1, 0.9, 0.1, label="λ=0"), rp(2, 0.5, 0.1804, family=C, label="γ=0.8")]
    verdict = report(runs)["verdict"]
    assert any("CA-AT has the larger hypervolume (0.0902 vs 0.0900)." in s for s in verdict)


def test_single_seed_sentence_lists_the_points() -> None:
    runs = [
        rp(1, 0.5, 0.3, label="λ=1"),
        rp(2, 0.6, 0.2, label="λ=0"),
        rp(3, 0.6, 0.2, label="λ=0", seed=1),
        rp(4, 0.7, 0.1, family=C, label="γ=0.9"),
    ]
    verdict = report(runs)["verdict"]
    assert "Some points come from a single seed (λ=1, γ=0.9): their spread is unknown." in verdict
    only = report([rp(1, 0.5, 0.3), rp(2, 0.6, 0.4, family=C, label="γ=0.8")])["verdict"]
    assert "All points come from a single seed: their spread is unknown." in only


def test_report_no_points() -> None:
    rep = report([])
    assert rep == {
        "points": [],
        "families": {},
        "reference": [0.0, 0.0],
        "dominated": [],
        "verdict": ["No finished runs to compare."],
    }


def test_report_one_family() -> None:
    rep = report([rp(1, 0.8, 0.2, label="λ=0"), rp(2, 0.5, 0.4, label="λ=1")], ref=(0.1, 0.1))
    assert list(rep["families"]) == [V]
    assert rep["reference"] == [0.1, 0.1]
    verdict = rep["verdict"]
    assert verdict[0] == "Only one family (Vanilla AT): there is no other front to compare with."
    hv = 0.7 * 0.1 + 0.4 * 0.2
    assert (
        verdict[1]
        == f"Vanilla AT's front has hypervolume {hv:.3f} against the reference (0.1, 0.1)."
    )


def test_report_mentions_front_points_outside_the_reference() -> None:
    rep = report(
        [rp(1, 0.9, 0.05, label="λ=0"), rp(2, 0.5, 0.4, family=C, label="γ=0.8")], ref=(0.0, 0.1)
    )
    assert rep["families"][V]["hypervolume"] == 0.0
    assert any("not beyond the reference (0, 0.1)" in s and "(λ=0)" in s for s in rep["verdict"])


def test_report_disambiguates_labels_shared_by_families() -> None:
    runs = [
        rp(1, 0.5, 0.3, family=V, label="λ=0.5"),
        rp(2, 0.6, 0.4, family="Vanilla AT · trades", label="λ=0.5"),
        rp(3, 0.9, 0.1, family=C, label="γ=0.8"),
        rp(4, 0.9, 0.1, family=C, label="γ=0.8", seed=1),
    ]
    verdict = report(runs)["verdict"]
    assert "λ=0.5 (Vanilla AT) is dominated by λ=0.5 (Vanilla AT · trades)." in verdict
    assert any("(λ=0.5 (Vanilla AT), λ=0.5 (Vanilla AT · trades))" in s for s in verdict)


def test_report_names_same_label_settings_by_their_runs() -> None:
    # two Vanilla AT settings that differ outside the label (say, eps) share "λ=0.5"
    runs = [
        RunPoint(1, V, '{"eps": 0.1}', "λ=0.5", 0, 0.5, 0.3),
        RunPoint(2, V, '{"eps": 0.2}', "λ=0.5", 0, 0.6, 0.4),
        RunPoint(3, V, '{"eps": 0.2}', "λ=0.5", 1, 0.6, 0.4),
    ]
    rep = report(runs)
    assert (
        "λ=0.5 (Vanilla AT; run 1) is dominated by λ=0.5 (Vanilla AT; runs 2, 3)." in rep["verdict"]
    )
    # the front is identified per point, not by its (ambiguous) label
    assert [p["on_front"] for p in rep["points"]] == [False, True]
    assert rep["families"][V]["front_settings"] == ['{"eps": 0.2}']


# -- properties -----------------------------------------------------------------------------

coord = st.one_of(st.integers(0, 8).map(lambda i: i / 8), st.floats(0.0, 1.0))
point_lists = st.lists(st.tuples(coord, coord), max_size=25).map(
    lambda cs: [pt(sa, aa, f"s{i}") for i, (sa, aa) in enumerate(cs)]
)


def brute_hypervolume(points: list[Point], ref: tuple[float, float]) -> float:
    """Sum of the grid cells (on the points' own coordinates) that some box [ref, p] covers."""
    xs = sorted({ref[0], *(p.sa for p in points if p.sa > ref[0])})
    ys = sorted({ref[1], *(p.aa for p in points if p.aa > ref[1])})
    area = 0.0
    for x0, x1 in pairwise(xs):
        for y0, y1 in pairwise(ys):
            mx, my = (x0 + x1) / 2, (y0 + y1) / 2
            if any(p.sa >= mx and p.aa >= my for p in points):
                area += (x1 - x0) * (y1 - y0)
    return area


@given(point_lists, st.tuples(coord, coord))
@settings(max_examples=200, deadline=None)
def test_hypervolume_matches_brute_force(points: list[Point], ref: tuple[float, float]) -> None:
    hv = hypervolume(pareto_front(points), ref)
    assert hv == pytest.approx(brute_hypervolume(points, ref), abs=1e-12)
    assert hv == pytest.approx(hypervolume(points, ref), abs=1e-12)


@given(point_lists)
@settings(max_examples=200, deadline=None)
def test_front_is_the_set_of_undominated_points(points: list[Point]) -> None:
    front = pareto_front(points)
    on_front = {p.setting for p in front}
    expected = {p.setting for p in points if not any(_dom(q, p) for q in points)}
    assert on_front == expected
    # an antichain, in sa order
    assert not any(_dom(q, p) for q in front for p in front)
    assert [p.sa for p in front] == sorted(p.sa for p in front)
    # every point off the front is dominated by a point on it
    for p in points:
        if p.setting not in on_front:
            assert any(_dom(q, p) for q in front)
    assert set(dominated(points)) == {p.setting for p in points} - on_front


@given(point_lists.filter(bool), st.data())
@settings(max_examples=200, deadline=None)
def test_adding_a_dominated_point_keeps_the_hypervolume(
    points: list[Point], data: st.DataObject
) -> None:
    anchor = data.draw(st.sampled_from(points))
    sa = data.draw(st.floats(0.0, anchor.sa))
    aa = data.draw(st.floats(0.0, anchor.aa))
    ref = data.draw(st.tuples(coord, coord))
    extra = pt(sa, aa, "extra")
    assert hypervolume([*points, extra], ref) == hypervolume(points, ref)
    assert any(q.sa >= sa and q.aa >= aa for q in pareto_front(points))


def _dom(q: Point, p: Point) -> bool:
    return q.sa >= p.sa and q.aa >= p.aa and (q.sa > p.sa or q.aa > p.aa)


# -- the default AA axis, over a real store -------------------------------------------------

EPS = 8 / 255


def finished(
    store: Store, *, method: str, param: float, seed: int = 0, sa: float, aa: float
) -> int:
    """A finished run at ε = 8/255 (L∞, PGD-10 per epoch) with its best-epoch accuracies."""
    key = "gamma" if method == "caat" else "lam"
    cfg = build_config({"method": method, key: param, "seed": seed, "eps": "8/255"})
    run_id = create_run(store, cfg)
    fields = {f"best_{s}_{k}": v for s in SPLITS for k, v in (("clean", sa), ("adv", aa))}
    store.finish(run_id, RunStatus.FINISHED, fields=fields)
    return run_id


def evaluate(
    store: Store, run_id: int, accuracies: dict[tuple[str, float], float], samples: int = 500
) -> None:
    """Stored results as `caat eval` writes them; (attack, ε) → accuracy, clean at ε 0."""
    store.add_evals(
        run_id,
        [
            {
                "checkpoint": "best",
                "attack": attack,
                "norm": "linf",
                "eps": eps,
                "samples": samples,
                "accuracy": accuracy,
                "seconds": 1.0,
                "settings": settings_text(attack, eps),
            }
            for (attack, eps), accuracy in accuracies.items()
        ],
    )


@pytest.fixture
def db(tmp_path: Path) -> str:
    return str(tmp_path / "front.db")


def view_of(db: str, **options: Any) -> FrontView:
    with Store.open(f"sqlite:///{db}") as store:
        runs = store.list_runs()
        return front_view(runs, results=store.evals_of_runs([r.id for r in runs]), **options)


def by_run(view: FrontView) -> dict[int, dict[str, Any]]:
    return {i: p for p in view.report["points"] for i in p["run_ids"]}


def test_default_takes_stored_autoattack_first_at_the_runs_own_budget(db: str) -> None:
    with Store.open(f"sqlite:///{db}") as store:
        a = finished(store, method="vanilla", param=0.5, sa=0.97, aa=0.45)
        b = finished(store, method="caat", param=0.8, sa=0.98, aa=0.40)
        # a lower single attack, and AutoAttack at another budget, are not taken
        evaluate(store, a, {("clean", 0.0): 0.96, ("autoattack", EPS): 0.30, ("pgd", EPS): 0.2})
        evaluate(store, a, {("clean", 0.0): 0.9, ("autoattack", 2 * EPS): 0.1}, samples=100)
        evaluate(store, b, {("clean", 0.0): 0.95, ("autoattack-fast", EPS): 0.33})
        evaluate(store, b, {("clean", 0.0): 0.94, ("autoattack", EPS): 0.31}, samples=200)
    view = view_of(db)
    points = by_run(view)
    assert (points[a]["sa"], points[a]["aa"], points[a]["aa_source"]) == (0.96, 0.30, "autoattack")
    assert (points[b]["sa"], points[b]["aa"], points[b]["aa_source"]) == (0.94, 0.31, "autoattack")
    assert view.labels == (
        "standard accuracy, test subsets of mixed sizes! (%)",
        "AA: AutoAttack (standard), L∞ at ε = 8/255, test subsets of mixed sizes! (%)",
    )
    assert view.report["axes"]["sources"] == ["autoattack"]
    assert view.source == "AutoAttack (standard)"
    assert not any("mixes sources" in s for s in view.report["verdict"])
    assert [p["label"] for p in view.report["points"]] == ["λ=0.5", "γ=0.8"]  # no tags


def test_autoattack_fast_when_standard_is_missing(db: str) -> None:
    with Store.open(f"sqlite:///{db}") as store:
        a = finished(store, method="vanilla", param=0.5, sa=0.97, aa=0.45)
        evaluate(store, a, {("clean", 0.0): 0.95, ("autoattack-fast", EPS): 0.33})
    view = view_of(db)
    assert by_run(view)[a]["aa_source"] == "autoattack-fast"
    assert view.labels[1] == (
        "AA: AutoAttack (fast: APGD-CE, APGD-T), L∞ at ε = 8/255, 500 test images (%)"
    )


def test_without_autoattack_the_per_epoch_pgd_is_labelled_a_training_time_check(db: str) -> None:
    with Store.open(f"sqlite:///{db}") as store:
        a = finished(store, method="vanilla", param=0.5, sa=0.97, aa=0.45)
        b = finished(store, method="caat", param=0.8, sa=0.98, aa=0.40)
        evaluate(store, a, {("clean", 0.0): 0.96, ("fgsm", EPS): 0.5})  # a lone attack: not taken
    view = view_of(db)
    assert {i: (p["aa"], p["aa_source"]) for i, p in by_run(view).items()} == {
        a: (0.45, "epoch-pgd"),
        b: (0.40, "epoch-pgd"),
    }
    assert view.labels == (
        "standard accuracy, test (%)",
        "AA: per-epoch PGD-10 (training-time check), L∞ at ε = 8/255, test (%)",
    )
    assert view.report["axes"]["sources"] == ["epoch-pgd"]
    assert view.source == "per-epoch PGD (training-time check)"
    with Store.open(f"sqlite:///{db}") as store:
        evaluate(store, b, {("clean", 0.0): 0.96, ("autoattack", EPS): 0.3})
        assert by_run(front_view(store.list_runs()))[b]["aa"] == 0.40  # no results given: none used
    val = view_of(db, split="val")  # evaluations measure test images: val is training's PGD
    assert {p["aa_source"] for p in val.report["points"]} == {"epoch-pgd"}
    assert val.labels[1] == (
        "AA: per-epoch PGD-10 (training-time check), L∞ at ε = 8/255, validation (%)"
    )
    assert by_run(view_of(db))[b]["aa_source"] == "autoattack"


def test_mixed_sources_are_tagged_never_averaged_and_warned_of(db: str) -> None:
    with Store.open(f"sqlite:///{db}") as store:
        a0 = finished(store, method="vanilla", param=0.5, seed=0, sa=0.97, aa=0.45)
        a1 = finished(store, method="vanilla", param=0.5, seed=1, sa=0.96, aa=0.44)
        b = finished(store, method="caat", param=0.8, sa=0.98, aa=0.40)
        evaluate(store, a0, {("clean", 0.0): 0.96, ("autoattack", EPS): 0.30})
        evaluate(store, b, {("clean", 0.0): 0.97, ("autoattack", EPS): 0.35})
    view = view_of(db)
    points = by_run(view)
    assert points[a0] is not points[a1]  # the two seeds were measured differently
    assert (points[a0]["aa"], points[a0]["label"]) == (0.30, "λ=0.5 [AutoAttack]")
    assert (points[a1]["aa"], points[a1]["label"]) == (0.44, "λ=0.5 [PGD]")
    assert points[a1]["aa_source"] == "epoch-pgd" and points[a1]["seeds"] == 1
    assert view.report["axes"]["sources"] == ["autoattack", "epoch-pgd"]
    assert view.source == "mixed sources"
    assert view.labels[1] == "AA: mixed sources (each point's in [ ]), L∞ at ε = 8/255, test (%)"
    note = view.report["verdict"][0]
    assert note.startswith(
        f"AA mixes sources: AutoAttack (standard) for runs {a0}, {b}; "
        f"per-epoch PGD (training-time check) for run {a1}."
    )
    assert f"evaluate run {a1} with AutoAttack too" in note


def test_caat_front_prints_and_writes_each_points_source(
    db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with Store.open(f"sqlite:///{db}") as store:
        a = finished(store, method="vanilla", param=0.5, sa=0.97, aa=0.45)
        b = finished(store, method="caat", param=0.8, sa=0.98, aa=0.40)
        evaluate(store, a, {("clean", 0.0): 0.96, ("autoattack", EPS): 0.30, ("pgd", EPS): 0.4})
    assert run_cli("front", "--db", db, "--json") == 0
    rep = json.loads(capsys.readouterr().out)
    assert {p["run_ids"][0]: p["aa_source"] for p in rep["points"]} == {
        a: "autoattack",
        b: "epoch-pgd",
    }
    assert rep["axes"]["aa"].startswith("AA: mixed sources")
    csv_file = tmp_path / "points.csv"
    assert run_cli("front", "--db", db, "--csv", str(csv_file)) == 0
    rows = list(csv.DictReader(io.StringIO(csv_file.read_text())))
    assert sorted(r["aa_source"] for r in rows) == ["autoattack", "epoch-pgd"]
    assert "test split, AA: mixed sources" in capsys.readouterr().out
    # an explicit attack works as before: one attack for every run, the others left out
    assert run_cli("front", "--db", db, "--attack", "pgd", "--json") == 0
    captured = capsys.readouterr()
    rep = json.loads(captured.out)
    assert [(p["run_ids"], p["aa"], p["aa_source"]) for p in rep["points"]] == [([a], 0.4, "pgd")]
    assert rep["axes"]["missing"] == [b] and "1 run(s) left out" in captured.err


def test_caat_front_attack_epoch_pgd_ignores_stored_evaluations(
    db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with Store.open(f"sqlite:///{db}") as store:
        a = finished(store, method="vanilla", param=0.5, sa=0.97, aa=0.45)
        evaluate(store, a, {("clean", 0.0): 0.96, ("autoattack", EPS): 0.30})
    assert run_cli("front", "--db", db, "--attack", "epoch-pgd", "--json") == 0
    rep = json.loads(capsys.readouterr().out)
    assert [(p["run_ids"], p["aa"], p["aa_source"]) for p in rep["points"]] == [
        ([a], 0.45, "epoch-pgd")
    ]
    assert "training-time check" in rep["axes"]["aa"]
    assert run_cli("front", "--db", db, "--attack", "epoch-pgd", "--eps", "0.1") == 2
