"""`caat synth`: the closed-form inner maximisation against brute force, the per-sample
gradients against an autograd loop, Theorem 1's bound on the trained models, the MNIST
path on a tree of real IDX files, and the command line."""

from __future__ import annotations

import gzip
import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import run_cli
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from caat_app.data.splits import DataUnavailable
from caat_app.lab import synth
from caat_app.lab.synth import SynthConfig

F64 = torch.float64
FAST = settings(max_examples=60, deadline=None)


@st.composite
def small_problems(draw: st.DrawFn, max_d: int = 6) -> tuple[torch.Tensor, ...]:
    d = draw(st.integers(1, max_d))
    w = draw(arrays(np.float64, d, elements=st.floats(-3.0, 3.0, width=64)))
    x = draw(arrays(np.float64, d, elements=st.floats(0.0, 1.0, width=64)))
    b = draw(st.floats(-1.0, 1.0))
    y = draw(st.sampled_from([-1.0, 1.0]))
    delta = draw(st.floats(0.0, 1.0))
    t = torch.from_numpy
    return t(w), torch.tensor(b, dtype=F64), t(x)[None, :], torch.tensor([y], dtype=F64), delta


def _margin(w: torch.Tensor, b: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return y * (x @ w + b)


@FAST
@given(small_problems())
def test_linf_closed_form_is_the_worst_vertex_of_the_box(problem: tuple) -> None:
    """A linear loss peaks at a vertex of the L∞ box: enumerate all 2^d of them."""
    w, b, x, y, delta = problem
    vertices = torch.tensor(list(itertools.product((-delta, delta), repeat=len(w))), dtype=F64)
    brute = float(_margin(w, b, x + vertices, y).min())
    eps = synth.worst_perturbation(w, y, delta, "linf")
    assert float(eps.abs().max()) <= delta
    closed = float(_margin(w, b, x, y)[0] - delta * synth.dual_norm(w, "linf"))
    assert float(_margin(w, b, x + eps, y)[0]) == pytest.approx(brute, abs=1e-12)
    assert closed == pytest.approx(brute, abs=1e-12)


@FAST
@given(small_problems(max_d=2))
def test_l2_closed_form_against_a_dense_circle(problem: tuple) -> None:
    w, b, x, y, delta = problem
    angle = torch.linspace(0, 2 * math.pi, 20001, dtype=F64)
    ring = torch.stack([angle.cos(), angle.sin()], dim=1)[:, : len(w)] * delta
    if len(w) == 1:  # the L2 "sphere" in one dimension is {−δ, δ}
        ring = torch.tensor([[-delta], [delta]], dtype=F64)
    brute = float(_margin(w, b, x + ring, y).min())
    eps = synth.worst_perturbation(w, y, delta, "l2")
    assert float(torch.linalg.vector_norm(eps)) <= delta * (1 + 1e-12)
    closed = float(_margin(w, b, x + eps, y)[0])
    assert closed <= brute + 1e-12  # nothing on the circle does better
    slack = delta * float(torch.linalg.vector_norm(w)) * (1 - math.cos(math.pi / 20000))
    assert closed == pytest.approx(brute, abs=1e-12 + slack)
    assert closed == pytest.approx(
        float(_margin(w, b, x, y)[0]) - delta * float(synth.dual_norm(w, "l2")), abs=1e-12
    )


@FAST
@given(small_problems(max_d=6))
def test_l2_closed_form_beats_random_points_of_the_sphere(problem: tuple) -> None:
    w, b, x, y, delta = problem
    points = torch.randn(4000, len(w), dtype=F64, generator=torch.Generator().manual_seed(0))
    points = delta * points / torch.linalg.vector_norm(points, dim=1, keepdim=True)
    eps = synth.worst_perturbation(w, y, delta, "l2")
    assert float(_margin(w, b, x + eps, y)[0]) <= float(_margin(w, b, x + points, y).min()) + 1e-12


@pytest.fixture(scope="module")
def digits_task() -> synth.SynthData:
    return synth.load_task("digits")


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_per_sample_gradients_equal_an_autograd_loop(
    digits_task: synth.SynthData, norm: str
) -> None:
    """Each row against autograd of the loss at x + ε* (ε* held fixed, as AT does) and
    against autograd of Eq. 3's closed form (Danskin: the two agree)."""
    gen = torch.Generator().manual_seed(1)
    x, y = digits_task.x_train[:30], digits_task.y_train[:30]
    w = torch.randn(x.shape[1], dtype=F64, generator=gen) * 0.3
    b, delta = torch.tensor(0.2, dtype=F64), 0.15
    g_c, g_a = synth.per_sample_gradients(w, b, x, y, delta, norm)
    theta, z = torch.cat([w, b[None]]), synth.signed_rows(x, y)
    for mean, rows in zip(synth.mean_gradients(theta, z, delta, norm), (g_c, g_a), strict=True):
        torch.testing.assert_close(mean, rows.mean(0), rtol=1e-12, atol=1e-14)  # training's
    eps = synth.worst_perturbation(w, y, delta, norm)
    for i in range(len(y)):
        wr, br = w.clone().requires_grad_(), b.clone().requires_grad_()
        clean = F.softplus(-y[i] * (x[i] @ wr + br))
        adv = F.softplus(-y[i] * ((x[i] + eps[i]) @ wr + br))
        eq3 = F.softplus(-y[i] * (x[i] @ wr + br) + delta * synth.dual_norm(wr, norm))
        for loss, row in ((clean, g_c[i]), (adv, g_a[i]), (eq3, g_a[i])):
            gw, gb = torch.autograd.grad(loss, (wr, br))
            torch.testing.assert_close(row, torch.cat([gw, gb[None]]), rtol=1e-10, atol=1e-12)


def test_robust_accuracy_is_the_accuracy_on_attacked_points(digits_task: synth.SynthData) -> None:
    cfg = SynthConfig(epochs=3)
    w, b, _ = synth.train_at(digits_task, 0.2, cfg)
    x, y = digits_task.x_test, digits_task.y_test
    attacked = x + synth.worst_perturbation(w, y, 0.2, "linf")
    expected = float((_margin(w, b, attacked, y) > 0).to(F64).mean())
    assert synth.robust_accuracy(w, b, x, y, 0.2, "linf") == expected
    assert synth.robust_accuracy(w, b, x, y, 0.0, "linf") > expected  # the attack bites
    w2, b2, _ = synth.train_at(digits_task, 0.2, cfg)
    assert torch.equal(w, w2) and torch.equal(b, b2)  # seeded: the same model again


@pytest.mark.slow
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_theorem_bound_holds_at_every_budget_of_the_paper(
    digits_task: synth.SynthData, norm: str
) -> None:
    """The paper's grid and recipe: μ ≤ ½‖g_a − g_c‖² ≤ ½δ²K² at each δ, each step checked."""
    result = synth.run_synth(digits_task, SynthConfig(norm=norm))
    assert [r.delta for r in result.rows] == list(synth.PAPER_DELTAS)
    for r in result.rows:
        assert 0 < r.mu <= 0.5 * r.gap**2 * (1 + 1e-9)
        assert r.gap <= r.delta * r.constant
        assert r.mu <= r.bound
        assert r.aa <= r.sa
        assert r.mu == pytest.approx(r.norm_c * r.norm_a * r.one_minus_phi, rel=1e-9)
    assert result.rows[-1].aa < result.rows[0].aa
    rep = synth.as_report(result)
    assert rep["bound_holds"] is True
    assert result.fit is not None and rep["fit"]["exponent"] == result.fit.exponent
    json.dumps(rep)  # plain data


def _idx(path: Path, array: np.ndarray, gz: bool = False) -> None:
    """An array in MNIST's IDX format (big-endian header: magic, then each dimension)."""
    magic = 0x0800 | array.ndim
    data = np.array([magic, *array.shape], dtype=">i4").tobytes() + array.astype(np.uint8).tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data)
    path.write_bytes(data)


def _mnist_split(raw: Path, split: str, n: int, seed: int, gz: bool = False) -> None:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 28, 28))
    images[1] = 128  # a digit 1, flat: it stays flat through the bilinear resize
    labels = np.arange(n) % 10
    _idx(raw / f"{split}-images-idx3-ubyte", images, gz)
    _idx(raw / f"{split}-labels-idx1-ubyte", labels, gz)


def test_mnist_test_split_alone_is_enough(tmp_path: Path) -> None:
    raw = tmp_path / "mnist" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    _mnist_split(raw, "t10k", 200, seed=0)  # 20 ones (one flat), 20 twos
    data = synth.load_task(None, tmp_path)
    assert data.name == "mnist" and data.image_size == 32
    assert "t10k" in data.note and "32×32" in data.note and "stratified" in data.note
    assert (len(data.y_train), len(data.y_val), len(data.y_test)) == (28, 6, 6)
    for y in (data.y_train, data.y_val, data.y_test):
        assert int((y > 0).sum()) == int((y < 0).sum())  # stratified: as many 1s as 2s
    x = torch.cat([data.x_train, data.x_val, data.x_test])
    assert x.shape == (40, 1024) and float(x.min()) >= 0 and float(x.max()) <= 1
    assert bool(((x - 128 / 255).abs() < 1e-12).all(dim=1).any())


def test_mnist_pools_both_splits_gzipped_or_not(tmp_path: Path) -> None:
    raw = tmp_path / "mnist" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    _mnist_split(raw, "train", 300, seed=1, gz=True)
    _mnist_split(raw, "t10k", 100, seed=2)
    data = synth.load_task("mnist", tmp_path)
    assert len(data.y_train) + len(data.y_val) + len(data.y_test) == 80
    assert "train and t10k" in data.note


def test_mnist_missing_or_broken_is_one_line_naming_the_folder(tmp_path: Path) -> None:
    with pytest.raises(DataUnavailable) as info:
        synth.load_task("mnist", tmp_path)
    message = str(info.value)
    assert "\n" not in message and str(tmp_path / "mnist") in message and "t10k" in message
    fallback = synth.load_task(None, tmp_path)
    assert fallback.name == "digits" and str(tmp_path / "mnist") in fallback.note
    raw = tmp_path / "mnist" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    _mnist_split(raw, "t10k", 50, seed=0)
    (raw / "t10k-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03\x00")
    with pytest.raises(DataUnavailable, match="not an unsigned-byte IDX file"):
        synth.load_task("mnist", tmp_path)


def _one_error_line(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert run_cli("synth", *args) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), lines
    return lines[0]


@pytest.mark.parametrize(
    ("args", "mentions"),
    [
        (["--deltas", "0.1,abc"], "'abc' is not a number"),
        (["--deltas", "0.1,-0.2"], "> 0"),
        (["--deltas", "0.1,0.1"], "twice"),
        (["--norm", "l3"], "linf or l2"),
        (["--dataset", "cifar10"], "digits or mnist"),
        (["--plot", "fig.gif"], ".png, .svg or .pdf"),
        (["--lr", "0"], "--lr"),
        (["--epochs", "0"], "epochs"),
    ],
)
def test_bad_input_is_one_error_line(
    capsys: pytest.CaptureFixture[str], args: list[str], mentions: str
) -> None:
    assert mentions in _one_error_line(capsys, *args)


def test_explicit_mnist_without_files_names_the_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    line = _one_error_line(capsys, "--dataset", "mnist", "--data-dir", str(tmp_path))
    assert str(tmp_path / "mnist") in line


def test_table_json_and_csv(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("synth", "--deltas", "0.1,0.3", "--epochs", "2") == 0
    text = capsys.readouterr().out
    assert "μ ≤ bound" in text and "embedded 8×8 digits" in text and "δ^" in text
    csv_path = tmp_path / "synth.csv"
    assert (
        run_cli("synth", "--deltas", "0.1,0.3", "--epochs", "2", "--json", "--csv", str(csv_path))
        == 0
    )
    rep = json.loads(capsys.readouterr().out)
    assert [r["delta"] for r in rep["rows"]] == [0.1, 0.3]
    assert rep["config"]["epochs"] == 2 and rep["task"]["dataset"] == "digits"
    lines = csv_path.read_text().splitlines()
    assert lines[0].startswith("delta,sa,aa,") and len(lines) == 3
    assert float(lines[2].split(",")[0]) == 0.3


def test_plot_draws_both_halves_of_figure_2(tmp_path: Path) -> None:
    path = tmp_path / "fig2.svg"
    assert (
        run_cli(
            "synth", "--deltas", "0.1,0.3", "--epochs", "1", "--tsne", "20", "--plot", str(path)
        )
        == 0
    )
    svg = path.read_text()
    assert "δ = 0.3" in svg and "(a) t-SNE" in svg and "bound ½δ²K²" in svg
    png = tmp_path / "fig2b.png"
    assert (
        run_cli("synth", "--deltas", "0.1,0.3", "--epochs", "1", "--tsne", "0", "--plot", str(png))
        == 0
    )
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_report_lands_in_the_store_and_the_same_run_replaces_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from caat_storage import Store

    db = str(tmp_path / "caat.db")
    args = ("synth", "--deltas", "0.1,0.3", "--epochs", "1", "--db", db)
    assert run_cli(*args, "--json") == 0
    printed = json.loads(capsys.readouterr().out)
    assert run_cli(*args) == 0
    assert "stored as lab report 2" in capsys.readouterr().out
    assert run_cli("synth", "--deltas", "0.2", "--epochs", "1", "--db", db, "--json") == 0
    with Store.open(f"sqlite:///{db}") as store:
        reports = store.lab_reports("synth")
    assert len(reports) == 2  # the second identical experiment replaced the first
    assert json.loads(reports[1].body) == printed  # what was computed, as printed
    assert [r["delta"] for r in json.loads(reports[0].body)["rows"]] == [0.2]  # newest first
