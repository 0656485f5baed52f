"""Per-sample conflict: torch.func's per-image gradients against plain per-image loops (with
and without BatchNorm, batch statistics included), φ_i and μ_i against `conflict_stats`, and
the report's statistics against scipy and closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

from caat_app.attacks.common import own_gradients
from caat_app.config import RunConfig
from caat_app.lab.conflict_report import (
    ablation_drops,
    ablation_summary,
    build_report,
    gap,
    halfblock,
    histogram,
    ranks,
    shares,
    spearman,
    top_order,
)
from caat_app.lab.persample import (
    chunk_statistics,
    gradient_chunk,
    margins,
    per_sample_conflict,
    sample_gradients,
)
from caat_app.method.conflict import conflict_stats
from caat_app.method.losses import adversarial_loss, clean_loss
from caat_app.models.build import build_model
from caat_app.training.adversary import training_examples

B = 6


def _model(name: str, bn: str = "standard") -> nn.Module:
    """A digits-sized model; BatchNorm's running statistics moved off their defaults."""
    torch.manual_seed(0)
    model = build_model(
        name, in_channels=1, num_classes=10, image_size=8, mean=(0.3,), std=(0.4,), bn=bn
    )
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.rand(32, 1, 8, 8))
    return model.eval()


def _batch(seed: int = 1) -> tuple[Tensor, Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(B, 1, 8, 8, generator=g)
    x_adv = (x + 0.3 * torch.rand(B, 1, 8, 8, generator=g).sign()).clamp(0, 1)
    return x, x_adv, torch.randint(0, 10, (B,), generator=g)


def _flat_grad(loss: Tensor, model: nn.Module) -> Tensor:
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.cat([g.flatten() for g in torch.autograd.grad(loss, params)])


def _loop(model: nn.Module, x: Tensor, x_adv: Tensor, y: Tensor, loss: str, beta: float) -> tuple:
    """The reference: each image alone, through autograd, in eval mode."""
    rows_c, rows_a = [], []
    for i in range(len(y)):
        sl = slice(i, i + 1)
        rows_c.append(_flat_grad(clean_loss(model(x[sl]), y[sl]), model))
        logits_c, logits_a = model(x[sl]), model(x_adv[sl])
        rows_a.append(
            _flat_grad(adversarial_loss(loss, logits_c, logits_a, y[sl], beta=beta), model)
        )
    return torch.stack(rows_c), torch.stack(rows_a)


@pytest.mark.parametrize("name", ["linear", "cnn"])
@pytest.mark.parametrize(("loss", "beta"), [("ce", 0.0), ("trades", 1.0), ("alp", 0.5)])
def test_per_sample_gradients_equal_a_loop_over_images(name: str, loss: str, beta: float) -> None:
    model = _model(name)  # cnn: BatchNorm with running statistics, in eval mode
    x, x_adv, y = _batch()
    g_c, g_a, value, logits_c, _ = sample_gradients(model, x, x_adv, y, loss=loss, beta=beta)
    ref_c, ref_a = _loop(model, x, x_adv, y, loss, beta)
    assert g_c.shape == ref_c.shape == (B, sum(p.numel() for p in model.parameters()))
    torch.testing.assert_close(g_c, ref_c, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(g_a, ref_a, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(value[:, 0], F.cross_entropy(model(x), y, reduction="none"))
    torch.testing.assert_close(logits_c, model(x))


def test_batch_statistics_are_the_chunks_held_as_constants() -> None:
    """A `batchstats` model: each image sees its chunk's statistics (the forward values are
    the model's own on the chunk), and its gradient treats them as constants."""
    model = _model("cnn", bn="batchstats")
    x, x_adv, y = _batch()
    stats_c, stats_a = chunk_statistics(model, x), chunk_statistics(model, x_adv)
    assert stats_c and set(stats_c) == set(stats_a)
    g_c, g_a, _, logits_c, logits_a = sample_gradients(
        model, x, x_adv, y, stats_c=stats_c, stats_a=stats_a
    )
    torch.testing.assert_close(logits_c, model(x), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(logits_a, model(x_adv), atol=1e-5, rtol=1e-4)
    with own_gradients(model):  # the whole chunk in each pass, statistics as constants
        ref_c = [
            _flat_grad(F.cross_entropy(model(x)[i : i + 1], y[i : i + 1]), model) for i in range(B)
        ]
        ref_a = [
            _flat_grad(F.cross_entropy(model(x_adv)[i : i + 1], y[i : i + 1]), model)
            for i in range(B)
        ]
    torch.testing.assert_close(g_c, torch.stack(ref_c), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(g_a, torch.stack(ref_a), atol=1e-5, rtol=1e-4)


def test_a_model_with_running_statistics_has_none_to_hold() -> None:
    assert chunk_statistics(_model("cnn"), torch.rand(4, 1, 8, 8)) == {}


def test_mean_of_per_sample_gradients_is_the_batch_gradient() -> None:
    """Training's g_c is the batch mean of the per-image g_c,i (no BatchNorm to mix them)."""
    model = _model("linear")
    x, x_adv, y = _batch()
    g_c, _, _, _, _ = sample_gradients(model, x, x_adv, y)
    torch.testing.assert_close(g_c.mean(0), _flat_grad(clean_loss(model(x), y), model))


def test_phi_and_mu_per_image_are_conflict_stats_of_the_loop() -> None:
    model = _model("cnn")
    model.train()  # per_sample_conflict analyses in eval mode and puts the mode back
    cfg = RunConfig(eps=0.3, attack_steps=3, seed=5)
    data_gen = torch.Generator().manual_seed(2)
    x, y = (
        torch.rand(20, 1, 8, 8, generator=data_gen),
        torch.randint(0, 10, (20,), generator=data_gen),
    )
    result = per_sample_conflict(model, cfg, x, y, seed=5)
    assert model.training
    model.eval()
    torch.manual_seed(5)  # the same start the analysis drew
    x_adv = training_examples(model, cfg, x, y)
    ref_c, ref_a = _loop(model, x, x_adv, y, "ce", 0.0)
    for i in range(len(y)):
        c = conflict_stats(ref_c[i], ref_a[i])
        assert result.phi[i] == pytest.approx(float(c.phi), abs=1e-4)
        assert result.mu[i] == pytest.approx(float(c.mu), rel=1e-4, abs=1e-6)
    whole = conflict_stats(ref_c.mean(0), ref_a.mean(0))
    assert float(result.whole.phi) == pytest.approx(float(whole.phi), abs=1e-4)
    assert result.index.tolist() == list(range(20)) and result.label.tolist() == y.tolist()
    torch.testing.assert_close(result.margin, margins(model(x).detach(), y))


@given(st.integers(1, 10**8), st.integers(2**20, 2**32))
def test_a_gradient_chunk_fits_its_budget(params: int, budget: int) -> None:
    chunk = gradient_chunk(params, budget)
    assert chunk >= 1
    assert chunk == 1 or chunk * params * 4 * 2 * 3 <= budget


@settings(max_examples=50, deadline=None)
@given(st.lists(st.lists(st.floats(-5, 5), min_size=4, max_size=4), min_size=1, max_size=12))
def test_margin_is_true_logit_minus_the_best_other(rows: list[list[float]]) -> None:
    logits = torch.tensor(rows)
    y = torch.arange(len(rows)) % 4
    m = margins(logits, y)
    for i, row in enumerate(rows):
        others = [v for j, v in enumerate(row) if j != int(y[i])]
        assert float(m[i]) == pytest.approx(row[int(y[i])] - max(others), abs=1e-5)


# --------------------------------------------------------------------------- the report


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 6), st.integers(0, 6)), min_size=3, max_size=40))
def test_spearman_equals_scipys_with_ties(pairs: list[tuple[int, int]]) -> None:
    from scipy.stats import spearmanr

    a, b = [p[0] for p in pairs], [p[1] for p in pairs]
    mine = spearman(a, b)
    if len(set(a)) < 2 or len(set(b)) < 2:
        assert mine is None
    else:
        assert mine == pytest.approx(float(spearmanr(a, b).statistic), abs=1e-9)


@given(st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=30))
def test_ranks_are_a_permutation_average_for_ties(values: list[float]) -> None:
    r = ranks(values)
    assert r.sum() == pytest.approx(len(values) * (len(values) + 1) / 2)
    for i, v in enumerate(values):  # the average of the positions its ties take
        below = sum(u < v for u in values)
        equal = sum(u == v for u in values)
        assert r[i] == pytest.approx(below + (equal + 1) / 2)


@given(st.lists(st.floats(0, 1e4), min_size=1, max_size=50), st.integers(0, 60))
def test_top_order_takes_the_largest_first(mu: list[float], k: int) -> None:
    order = top_order(mu, k)
    assert len(order) == min(k, len(mu)) and len(set(order)) == len(order)
    picked = [mu[i] for i in order]
    assert picked == sorted(picked, reverse=True)
    rest = [v for i, v in enumerate(mu) if i not in order]
    assert not rest or not picked or max(rest) <= min(picked)


@given(st.lists(st.floats(0, 1e4), min_size=1, max_size=200))
def test_shares_and_histogram_account_for_every_image(mu: list[float]) -> None:
    share = shares(mu)
    assert 0.0 <= share["0.01"] <= share["0.1"] <= 1.0 + 1e-12
    hist = histogram(mu)
    assert sum(hist["counts"]) + hist["zeros"] == len(mu)
    assert hist["zeros"] == sum(v == 0 for v in mu)


def test_shares_of_a_closed_form() -> None:
    mu = [1.0] * 90 + [10.0] * 10  # the top 10% hold 100 of 190
    assert shares(mu)["0.1"] == pytest.approx(100 / 190)
    assert shares(mu)["0.01"] == pytest.approx(10 / 190)


def _columns(n: int = 40) -> dict[str, list]:
    rng = np.random.default_rng(0)
    mu = rng.exponential(5.0, n)
    margin = 3.0 - mu / 3.0 + rng.normal(0, 0.1, n)
    label = [i % 4 for i in range(n)]
    return {
        "index": [100 + i for i in range(n)],
        "label": label,
        "pred_c": [lab if m > 0 else (lab + 1) % 4 for lab, m in zip(label, margin, strict=True)],
        "pred_a": label,
        "margin": margin.tolist(),
        "loss_c": (mu / 10).tolist(),
        "loss_a": (mu / 5).tolist(),
        "phi": rng.uniform(-1, 1, n).tolist(),
        "mu": mu.tolist(),
        "norm_c": [1.0] * n,
        "norm_a": [1.0] * n,
    }


def test_the_report_names_the_top_k_and_the_relations() -> None:
    cols = _columns()
    whole = {"phi": -0.4, "mu": 0.5, "norm_c": 1.0, "norm_a": 1.0}
    report = build_report(cols, top=5, pixels=lambda row: [[[row] * 2] * 2], meta={"whole": whole})
    assert [s["index"] for s in report["top"]] == [100 + i for i in top_order(cols["mu"], 5)]
    assert report["top"][0]["mu"] == max(cols["mu"]) and report["top"][0]["pixels"]
    assert report["correlation"]["mu~margin"] < -0.9  # built to fall with the margin
    assert report["correlation"]["mu~loss_c"] == pytest.approx(1.0)
    assert sum(r["n"] for r in report["by_class"]) == 40
    assert sum(r["in_top"] for r in report["by_class"]) == 5
    text = " ".join(report["findings"])
    assert "strongly negatively related to the clean margin" in text
    assert "between images" in text  # φ of the means (−0.4) below the median φ_i
    assert report["samples"]["mu"] == cols["mu"]


def test_halfblock_puts_two_pixel_rows_in_one_line() -> None:
    img = [[[0, 255], [128, 64], [10, 20]]]  # 1 channel, 3 rows, 2 columns
    text = halfblock(img, width=2)
    lines = text.plain.split("\n")
    assert lines == ["▀▀", "▀▀"]  # three rows: two lines, the last half black
    first = text.spans[0].style
    assert str(first) == "rgb(0,0,0) on rgb(128,128,128)"
    assert str(text.spans[-1].style) == "rgb(20,20,20) on rgb(0,0,0)"


# --------------------------------------------------------------------------- ablation


def test_ablation_drops_the_top_and_as_many_random_ones() -> None:
    cols = _columns(50)
    drops = ablation_drops(cols, already=(100, 101), fraction=0.1)
    candidates = [i for i in cols["index"] if i not in (100, 101)]
    assert drops["count"] == round(0.1 * 48) == len(drops["top"]) == len(drops["random"])
    assert not {100, 101} & (set(drops["top"]) | set(drops["random"]))
    assert set(drops["random"]) <= set(candidates)
    by_index = dict(zip(cols["index"], cols["mu"], strict=True))
    kept = [by_index[i] for i in candidates if i not in drops["top"]]
    assert min(by_index[i] for i in drops["top"]) >= max(kept)
    assert drops == ablation_drops(cols, already=(100, 101), fraction=0.1)  # a fixed draw


def test_gap_of_a_closed_form() -> None:
    g = gap([0.01, 0.02, 0.03])
    assert g["mean"] == pytest.approx(0.02) and g["se"] == pytest.approx(0.01 / math.sqrt(3))
    assert (g["n"], g["agree"], g["beyond"]) == (3, 3, True)
    assert gap([0.01, -0.02, 0.02])["beyond"] is False
    assert gap([0.05])["beyond"] is None  # one seed: no spread to judge by


def test_ablation_summary_pairs_by_seed_and_says_when_it_is_noise() -> None:
    rows = [
        {"variant": v, "run": i, "seed": s, "sa": sa, "aa": aa}
        for i, (v, s, sa, aa) in enumerate(
            [
                ("unchanged", 0, 0.90, 0.40),
                ("unchanged", 1, 0.92, 0.44),
                ("top", 0, 0.91, 0.41),
                ("top", 1, 0.93, 0.43),
                ("random", 0, 0.90, 0.40),
                ("random", 1, 0.92, 0.44),
            ]
        )
    ]
    summary = ablation_summary(rows)
    top = next(v for v in summary["variants"] if v["variant"] == "top")
    assert top["d_sa"] == pytest.approx(0.01) and top["d_aa"] == pytest.approx(0.0)
    assert top["aa_std"] == pytest.approx(math.sqrt(2) * 0.01)
    assert summary["gap"]["sa"]["mean"] == pytest.approx(0.01)  # +1 pt at both seeds
    aa_line, sa_line = summary["findings"][-2:]
    assert aa_line.startswith("Targeted minus random removal, AA") and "within twice" in aa_line
    assert sa_line.startswith("Targeted minus random removal, SA") and "beyond twice" in sa_line
    one_seed = ablation_summary([r for r in rows if r["seed"] == 0])
    assert "One seed gives no spread" in one_seed["findings"][-1]
    assert "incomplete" in ablation_summary(rows[:4])["findings"][0]  # no random run
