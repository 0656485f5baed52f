"""Gradient-masking report: each check passing, flagged and not checkable, on hand-made tables."""

from __future__ import annotations

import json
from dataclasses import FrozenInstanceError

import pytest

from caat_app.evaluation.masking import Check, masking_report, summary, to_json

E8, E16, E24, E32 = 8 / 255, 16 / 255, 24 / 255, 32 / 255


def rec(attack: str, eps: float, accuracy: float, steps: int | None = None) -> dict:
    return {"attack": attack, "eps": eps, "accuracy": accuracy, "samples": 1000, "steps": steps}


def check(records: list[dict], name: str, *, clean: float = 0.8, **kw: float) -> Check:
    by_name = {c.name: c for c in masking_report(records, clean=clean, **kw)}
    return by_name[name]


# --------------------------------------------------------------------- (a) PGD ≤ FGSM


def test_iterative_vs_single_step() -> None:
    name = "iterative ≤ single-step"
    ok = check([rec("pgd", E8, 0.45), rec("fgsm", E8, 0.55)], name)
    assert ok.passed is True and "45.0%" in ok.detail and "55.0%" in ok.detail
    within = check([rec("pgd", E8, 0.56), rec("fgsm", E8, 0.55)], name)
    assert within.passed is True  # inside the tolerance
    bad = check(
        [rec("pgd", E8, 0.45), rec("fgsm", E8, 0.55), rec("pgd", E16, 0.40), rec("fgsm", E16, 0.3)],
        name,
    )
    assert bad.passed is False
    assert "16/255" in bad.detail and "40.0%" in bad.detail and "8/255" not in bad.detail
    assert check([rec("pgd", E8, 0.45), rec("fgsm", E16, 0.3)], name).passed is None
    assert check([rec("pgd", E8, 0.45)], name).passed is None


# ------------------------------------------------------------------- (b) APGD ≤ Square


def test_white_box_vs_black_box_uses_lower_apgd() -> None:
    name = "white-box ≤ black-box"
    # APGD-CE alone would be above Square; APGD-DLR is lower, so the check passes.
    ok = check([rec("apgd-ce", E8, 0.60), rec("apgd-dlr", E8, 0.40), rec("square", E8, 0.50)], name)
    assert ok.passed is True and "40.0%" in ok.detail
    bad = check([rec("apgd-ce", E8, 0.60), rec("square", E8, 0.50)], name)
    assert bad.passed is False and "60.0%" in bad.detail and "50.0%" in bad.detail
    assert check([rec("apgd-ce", E8, 0.60)], name).passed is None
    assert check([rec("apgd-t", E8, 0.3), rec("square", E8, 0.5)], name).passed is None


# ------------------------------------------------------------ (c) monotone, near zero


def test_accuracy_falls_as_eps_grows() -> None:
    name = "falls as ε grows"
    ok = check([rec("pgd", E8, 0.5), rec("pgd", E16, 0.3), rec("pgd", E24, 0.31)], name)
    assert ok.passed is True and "pgd" in ok.detail
    bad = check([rec("pgd", E8, 0.5), rec("pgd", E16, 0.3), rec("square", E8, 0.5),
                 rec("square", E16, 0.6)], name)  # fmt: skip
    assert bad.passed is False and "square" in bad.detail and "pgd" not in bad.detail
    assert "50.0%" in bad.detail and "60.0%" in bad.detail
    assert check([rec("pgd", E8, 0.5), rec("fgsm", E16, 0.6)], name).passed is None


def test_near_zero_at_a_very_large_eps() -> None:
    name = "near zero at large ε"
    ok = check([rec("pgd", E8, 0.5), rec("pgd", E32, 0.2), rec("autoattack", E32, 0.01)], name)
    assert ok.passed is True and "autoattack" in ok.detail and "32/255" in ok.detail
    bad = check([rec("pgd", E8, 0.5), rec("pgd", E32, 0.2)], name)
    assert bad.passed is False and "20.0%" in bad.detail
    small = check([rec("pgd", E8, 0.5), rec("pgd", E24, 0.2)], name)  # only 3× the smallest
    assert small.passed is None and "3.0×" in small.detail
    assert check([rec("pgd", E8, 0.5)], name).passed is None
    # L∞ at ε = 1 is the whole [0, 1] box: very large whatever the smallest budget
    box = [{**r, "norm": "linf"} for r in (rec("pgd", 0.3, 0.2), rec("pgd", 1.0, 0.0))]
    assert check(box, name).passed is True
    as_l2 = [{**r, "norm": "l2"} for r in box]  # an L2 ball of 1 is not the whole box
    assert check(as_l2, name).passed is None


# ----------------------------------------------------------------------- (d) converged


def test_converged() -> None:
    name = "converged"
    ok = check([rec("pgd", E8, 0.50, steps=20), rec("pgd", E8, 0.48, steps=100)], name)
    assert ok.passed is True and "20 steps" in ok.detail and "100 steps" in ok.detail
    bad = check([rec("pgd", E8, 0.50, steps=20), rec("pgd", E8, 0.40, steps=100)], name)
    assert bad.passed is False and "10 points" in bad.detail
    # Different budgets, or no step counts, cannot be compared.
    assert (
        check([rec("pgd", E8, 0.5, steps=20), rec("pgd", E16, 0.3, steps=100)], name).passed is None
    )
    assert check([rec("fgsm", E8, 0.5), rec("fgsm", E8, 0.3)], name).passed is None
    # a variant run longer belongs to its family's check (pgd-100 is PGD with 100 steps)
    kin = [rec("pgd", E8, 0.50, steps=20), {**rec("pgd-100", E8, 0.30, steps=100), "family": "pgd"}]
    assert check(kin, name).passed is False


# ----------------------------------------------------------------- (e) PGD vs AutoAttack


def test_pgd_gap_published_ca_at_pattern() -> None:
    name = "PGD vs AutoAttack"
    bad = check([rec("pgd", E8, 0.50), rec("autoattack", E8, 0.39)], name)
    assert bad.passed is False
    assert "PGD overestimates robustness by 11 points" in bad.detail
    ok = check([rec("pgd", E8, 0.50), rec("autoattack", E8, 0.47)], name)
    assert ok.passed is True and "47.0%" in ok.detail
    # Without AutoAttack, the lowest APGD is the reference.
    apgd = check([rec("pgd", E8, 0.50), rec("apgd-ce", E8, 0.46), rec("apgd-dlr", E8, 0.42)], name)
    assert apgd.passed is False and "8 points" in apgd.detail and "APGD 42.0%" in apgd.detail
    assert check([rec("pgd", E8, 0.50), rec("square", E8, 0.3)], name).passed is None


# ------------------------------------------------------------------- (f) attack helps


def test_attack_above_clean() -> None:
    name = "attacks ≤ clean"
    ok = check([rec("pgd", E8, 0.5), rec("fgsm", E8, 0.81)], name, clean=0.8)
    assert ok.passed is True and "81.0%" in ok.detail
    bad = check([rec("pgd", E8, 0.5), rec("fgsm", E8, 0.9)], name, clean=0.8)
    assert bad.passed is False and "fgsm" in bad.detail and "90.0%" in bad.detail
    assert check([], name).passed is None


# ------------------------------------------------------------- report, summary, json


def paper_like() -> list[dict]:
    """A CA-AT-shaped table: everything sane except the PGD-to-AutoAttack gap."""
    return [
        rec("fgsm", E8, 0.58, steps=1),
        rec("pgd", E8, 0.50, steps=20),
        rec("pgd", E8, 0.495, steps=100),
        rec("apgd-ce", E8, 0.45, steps=100),
        rec("apgd-dlr", E8, 0.42, steps=100),
        rec("square", E8, 0.48),
        rec("autoattack", E8, 0.39),
        rec("fgsm", E32, 0.20, steps=1),
        rec("pgd", E32, 0.05, steps=20),
        rec("autoattack", E32, 0.0),
    ]


def test_report_on_a_paper_like_table() -> None:
    checks = masking_report(paper_like(), clean=0.82)
    outcome = {c.name: c.passed for c in checks}
    assert outcome == {
        "iterative ≤ single-step": True,
        "white-box ≤ black-box": True,
        "falls as ε grows": True,
        "near zero at large ε": True,
        "converged": True,
        "PGD vs AutoAttack": False,
        "attacks ≤ clean": True,
    }
    line = summary(checks)
    assert line.startswith("6 checks passed, 1 flagged: PGD vs AutoAttack")
    assert "by 10.5 points" in line and "\n" not in line  # the stronger PGD run counts


def test_summary_counts_not_checkable() -> None:
    checks = masking_report([rec("pgd", E8, 0.5)], clean=0.8)
    line = summary(checks)
    assert line == "1 check passed, 0 flagged, 6 not checkable"


def test_to_json_round_trips() -> None:
    checks = masking_report(paper_like(), clean=0.82)
    data = to_json(checks)
    assert json.loads(json.dumps(data)) == data
    assert data[0].keys() == {"name", "passed", "detail"}
    assert [Check(**d) for d in data] == checks
    with pytest.raises(FrozenInstanceError):
        checks[0].passed = False  # type: ignore[misc]


def test_tolerance_and_float_budgets() -> None:
    # 8/255 computed two ways is the same budget; a larger tolerance forgives more.
    records = [rec("pgd", 8 / 255, 0.56), rec("fgsm", 0.03137254901960784, 0.50)]
    assert check(records, "iterative ≤ single-step").passed is False
    assert check(records, "iterative ≤ single-step", tolerance=0.1).passed is True
