"""The paper's synthetic experiment (Section 3): digits 1 vs 2, logistic regression,
Vanilla AT (λ = 0.5) with the inner maximisation in closed form, one model per budget δ.

The model is the single-logit form of Eq. 3, f(x) = wᵀx + b with y ∈ {+1 (digit 1),
−1 (digit 2)} and the logistic loss log(1 + exp(−m)), m = y(wᵀx + b). The paper's
w ∈ R^{d×2} softmax model is the same classifier over-parameterised: its loss depends on
w₁ − w₂ only, its gradient is (g, −g), so φ is identical, ‖g_c‖ and ‖g_a‖ are √2 times
larger and μ twice, and SGD on it is SGD on w₁ − w₂ with twice the learning rate.

Inner maximisation: the loss falls with the margin, and over ‖ε‖_p ≤ δ the margin's
smallest value is m − δ‖w‖_* (Hölder, with equality): ε* = −yδ·sign(w) for L∞
(‖w‖_* = ‖w‖₁) and ε* = −yδ·w/‖w‖₂ for L2 (‖w‖_* = ‖w‖₂). No [0, 1] clipping, as in
Eq. 3; so AA is the exact robust accuracy of the linear model in that ball.

Gradients are closed forms (Danskin: the gradient at x + ε* with ε* held fixed), per
sample, for θ = (w, b): g_c,i = −σ(−m_i)·y_i(x_i, 1), g_a,i = −σ(−m_i + δ‖w‖_*)·
(y_i(x_i, 1) − δ(u, 0)), u = sign(w) or w/‖w‖₂. The bound on μ is in `theorem`.

Data: MNIST's IDX files when present (either split's pair is enough; what is there is
pooled and split 70/15/15, fixed and stratified; 28×28 resized bilinearly to the
paper's 32×32), else scikit-learn's embedded 8×8 digits (their fixed 70/15/15 split).
Pixels stay in [0, 1], unnormalised, so δ is in pixel units as in the paper.
"""

from __future__ import annotations

import gzip
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from caat_app.data.digits import digits_split_indices
from caat_app.data.registry import DATASETS
from caat_app.data.splits import DataUnavailable, default_data_root, load_dataset
from caat_app.lab import theorem
from caat_app.method.conflict import conflict_stats

NORMS = ("linf", "l2")
PAPER_DELTAS = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3)
PAPER_EPOCHS = 20  # Section 3: "for 20 epochs"
PAPER_LAMBDA = 0.5  # Fig. 2: "Vanilla AT with λ = 0.5"
PAPER_SIZE = 32  # Section 3: "with a resolution of 32 × 32"
DIGITS = (1, 2)  # digit 1 → y = +1, digit 2 → y = −1
SPLITS = ("train", "t10k")
F64 = torch.float64


@dataclass(frozen=True, eq=False)
class SynthData:
    """The two-digit task as flat float64 rows in [0, 1] and labels ±1, per split."""

    name: str
    note: str
    image_size: int
    x_train: Tensor
    y_train: Tensor
    x_val: Tensor
    y_val: Tensor
    x_test: Tensor
    y_test: Tensor


def read_idx(path: Path) -> np.ndarray:
    """An unsigned-byte IDX array (MNIST's format: magic, dims, bytes), gzipped or not."""
    broken = DataUnavailable(f"{path} is not an unsigned-byte IDX file (MNIST's format)")
    try:
        with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError):
        raise broken from None
    magic = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else 0
    head = 4 + 4 * (magic & 0xFF)
    if magic >> 8 != 0x08 or len(raw) < head:
        raise broken
    shape = tuple(int(s) for s in np.frombuffer(raw[4:head], dtype=">i4"))
    if len(raw) != head + math.prod(shape):
        raise broken
    return np.frombuffer(raw, dtype=np.uint8, offset=head).reshape(shape)


def mnist_folder(root: Path | None = None) -> Path:
    """Where MNIST lies: <data root>/mnist, the folder `caat train --dataset mnist` uses."""
    return (Path(root).expanduser() if root is not None else default_data_root()) / "mnist"


def _pick(raw: Path, stem: str) -> Path | None:
    for path in (raw / stem, raw / f"{stem}.gz"):
        if path.is_file():
            return path
    return None


def mnist_files(root: Path | None = None) -> list[tuple[Path, Path]]:
    """The (images, labels) pairs present under <folder>/MNIST/raw, train first."""
    raw = mnist_folder(root) / "MNIST" / "raw"
    pairs = []
    for split in SPLITS:
        images = _pick(raw, f"{split}-images-idx3-ubyte")
        labels = _pick(raw, f"{split}-labels-idx1-ubyte")
        if images is not None and labels is not None:
            pairs.append((images, labels))
    return pairs


def _missing_mnist(root: Path | None) -> DataUnavailable:
    folder = mnist_folder(root)
    fill = DATASETS["mnist"].fill.replace("{folder}", str(folder))
    return DataUnavailable(
        f"MNIST is not in {folder}: {fill} (for caat synth the two t10k files are enough), "
        "or use --dataset digits"
    )


def _as_task(name: str, note: str, size: int, x: Tensor, labels: np.ndarray) -> SynthData:
    """Split rows of digits 1 and 2 70/15/15 (fixed, stratified) into a SynthData."""
    y = torch.from_numpy(np.where(labels == DIGITS[0], 1.0, -1.0))
    train, val, test = digits_split_indices(labels)
    flat = x.reshape(len(x), -1).to(F64)
    parts = [t for idx in (train, val, test) for t in (flat[idx], y[idx])]
    return SynthData(name, note, size, *parts)


def load_mnist_task(root: Path | None = None) -> SynthData:
    """Digits 1 and 2 of every MNIST split present, pooled, at 32×32; DataUnavailable if none."""
    pairs = mnist_files(root)
    if not pairs:
        raise _missing_mnist(root)
    images, labels = [], []
    for image_file, label_file in pairs:
        x, y = read_idx(image_file), read_idx(label_file)
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise DataUnavailable(f"{image_file} and {label_file} do not match as MNIST files")
        keep = np.isin(y, DIGITS)
        images.append(x[keep])
        labels.append(y[keep].astype(np.int64))
    lab = np.concatenate(labels)
    if min(int(np.sum(lab == d)) for d in DIGITS) < 7:
        raise DataUnavailable(f"too few 1s and 2s in {mnist_folder(root)} to split 70/15/15")
    x = torch.from_numpy(np.concatenate(images)).to(F64).div_(255.0).unsqueeze(1)
    side = x.shape[-1]
    if side != PAPER_SIZE:
        x = torch.nn.functional.interpolate(x, size=PAPER_SIZE, mode="bilinear").clamp_(0, 1)
    which = " and ".join(p[0].name.split("-")[0] for p in pairs)
    note = (
        f"MNIST digits 1 vs 2 ({which} files, {len(lab)} images pooled and split 70/15/15, "
        f"fixed and stratified), {side}×{side} resized bilinearly to {PAPER_SIZE}×{PAPER_SIZE}"
    )
    return _as_task("mnist", note, PAPER_SIZE, x, lab)


def load_digits_task(why: str = "") -> SynthData:
    """Digits 1 and 2 of scikit-learn's embedded 8×8 digits, in their fixed split."""
    data = load_dataset("digits")
    x = torch.cat([data.x_train, data.x_val, data.x_test])
    y = torch.cat([data.y_train, data.y_val, data.y_test]).numpy()
    keep = np.isin(y, DIGITS)
    note = "scikit-learn's embedded 8×8 digits 1 vs 2, not the paper's 32×32 MNIST" + why
    return _as_task("digits", note, 8, x[torch.from_numpy(keep)], y[keep])


def load_task(dataset: str | None = None, root: Path | None = None) -> SynthData:
    """`mnist`, `digits`, or None: MNIST when its files are present, else the digits."""
    if dataset == "mnist":
        return load_mnist_task(root)
    if dataset == "digits":
        return load_digits_task()
    if dataset is not None:
        raise DataUnavailable(f"--dataset: unknown {dataset!r}; choose digits or mnist")
    if mnist_files(root):
        return load_mnist_task(root)
    return load_digits_task(f" (no MNIST files in {mnist_folder(root)}/MNIST/raw)")


def direction(w: Tensor, norm: str) -> Tensor:
    """u with uᵀw = ‖w‖_*: sign(w) for L∞, w/‖w‖₂ for L2 (zero for w = 0)."""
    if norm == "linf":
        return torch.sign(w)
    size = torch.linalg.vector_norm(w)
    return w / size if float(size) > 0 else torch.zeros_like(w)


def dual_norm(w: Tensor, norm: str) -> Tensor:
    """‖w‖₁ for an L∞ budget, ‖w‖₂ for an L2 one: the most a unit ε moves wᵀx."""
    return torch.linalg.vector_norm(w, ord=1 if norm == "linf" else 2)


def worst_perturbation(w: Tensor, y: Tensor, delta: float, norm: str) -> Tensor:
    """ε* = −yδu, the loss's argmax over ‖ε‖ ≤ δ for each row (closed form, Eq. 3)."""
    return -delta * y[:, None] * direction(w, norm)[None, :]


def margins(w: Tensor, b: Tensor, x: Tensor, y: Tensor) -> Tensor:
    """m_i = y_i(wᵀx_i + b); a point is classified correctly when m_i > 0."""
    return y * (x @ w + b)


def robust_accuracy(w: Tensor, b: Tensor, x: Tensor, y: Tensor, delta: float, norm: str) -> float:
    """Accuracy under the exact worst case: m − δ‖w‖_* > 0 (δ = 0: clean accuracy)."""
    worst = margins(w, b, x, y) - delta * dual_norm(w, norm)
    return float((worst > 0).to(F64).mean())


def loss_weights(
    w: Tensor, b: Tensor, x: Tensor, y: Tensor, delta: float, norm: str
) -> tuple[Tensor, Tensor]:
    """s_i = σ(−m_i) and t_i = σ(−m_i + δ‖w‖_*): the logistic loss's slopes, clean and
    adversarial."""
    m = margins(w, b, x, y)
    return torch.sigmoid(-m), torch.sigmoid(-m + delta * dual_norm(w, norm))


def per_sample_gradients(
    w: Tensor, b: Tensor, x: Tensor, y: Tensor, delta: float, norm: str
) -> tuple[Tensor, Tensor]:
    """(g_c,i, g_a,i) for every row, each (n, d + 1): the w part, then b."""
    s, t = loss_weights(w, b, x, y, delta, norm)
    z = signed_rows(x, y)
    e = torch.cat([direction(w, norm), torch.zeros_like(w[:1])])
    return -s[:, None] * z, -t[:, None] * (z - delta * e[None, :])


@dataclass(frozen=True)
class SynthConfig:
    """One sweep over budgets: the paper's recipe by default (lr and batch are caat's)."""

    deltas: tuple[float, ...] = PAPER_DELTAS
    norm: str = "linf"
    epochs: int = PAPER_EPOCHS
    lam: float = PAPER_LAMBDA
    lr: float = 0.1
    batch_size: int = 32
    seed: int = 0
    tsne: int = 0  # training samples per t-SNE panel (0: no t-SNE)


def signed_rows(x: Tensor, y: Tensor) -> Tensor:
    """z_i = y_i(x_i, 1): then m = zθ for θ = (w, b), and every gradient is a sum of z_i."""
    return torch.cat([x, torch.ones_like(x[:, :1])], dim=1) * y[:, None]


def mean_gradients(theta: Tensor, z: Tensor, delta: float, norm: str) -> tuple[Tensor, Tensor]:
    """The rows' mean g_c and g_a at θ = (w, b) in two matrix-vector products: the mean
    of `per_sample_gradients` without building its rows (training's fast path)."""
    w = theta[:-1]
    m = z @ theta
    s, t = torch.sigmoid(-m), torch.sigmoid(-m + delta * dual_norm(w, norm))
    g_c, g_a = -(s @ z) / len(z), -(t @ z) / len(z)
    g_a[:-1] += delta * t.mean() * direction(w, norm)
    return g_c, g_a


def train_at(data: SynthData, delta: float, cfg: SynthConfig) -> tuple[Tensor, Tensor, list[float]]:
    """Vanilla AT by minibatch SGD from w = 0, b = 0; (w, b, μ of each last-epoch step)."""
    gen = torch.Generator().manual_seed(cfg.seed)
    z = signed_rows(data.x_train, data.y_train)
    theta = torch.zeros(z.shape[1], dtype=F64)
    steps_mu: list[float] = []
    for epoch in range(cfg.epochs):
        order = torch.randperm(len(z), generator=gen)
        for start in range(0, len(z), cfg.batch_size):
            g_c, g_a = mean_gradients(
                theta, z[order[start : start + cfg.batch_size]], delta, cfg.norm
            )
            if epoch == cfg.epochs - 1:
                steps_mu.append(float(conflict_stats(g_c, g_a).mu))
            theta = theta - cfg.lr * ((1.0 - cfg.lam) * g_c + cfg.lam * g_a)
    return theta[:-1], theta[-1], steps_mu


@dataclass(frozen=True)
class SynthRow:
    """One budget's numbers: accuracies, the last epoch's conflict, Theorem 1's bound."""

    delta: float
    sa: float
    aa: float
    val_sa: float
    val_aa: float
    mu: float
    norm_c: float
    norm_a: float
    one_minus_phi: float
    gap: float  # ‖g_a − g_c‖
    constant: float  # K of ‖g_a − g_c‖ ≤ δK
    bound: float  # ½δ²K²
    mu_steps: float  # mean μ over the last epoch's minibatch steps
    dual_norm_w: float


def measure(
    data: SynthData, w: Tensor, b: Tensor, delta: float, cfg: SynthConfig, steps_mu: list[float]
) -> tuple[SynthRow, Tensor, Tensor]:
    """The row for one trained model, and its per-sample training gradients."""
    x, y = data.x_train, data.y_train
    g_c, g_a = per_sample_gradients(w, b, x, y, delta, cfg.norm)
    mean_c, mean_a = g_c.mean(0), g_a.mean(0)
    c = conflict_stats(mean_c, mean_a)
    _, t = loss_weights(w, b, x, y, delta, cfg.norm)
    z_norm = torch.linalg.vector_norm(torch.cat([x, torch.ones_like(x[:, :1])], 1), dim=1)
    dual = float(dual_norm(w, cfg.norm))
    k = theorem.gap_constant(
        dual,
        float(z_norm.mean()),
        float(t.mean()),
        float(torch.linalg.vector_norm(direction(w, cfg.norm))),
    )
    row = SynthRow(
        delta=delta,
        sa=robust_accuracy(w, b, data.x_test, data.y_test, 0.0, cfg.norm),
        aa=robust_accuracy(w, b, data.x_test, data.y_test, delta, cfg.norm),
        val_sa=robust_accuracy(w, b, data.x_val, data.y_val, 0.0, cfg.norm),
        val_aa=robust_accuracy(w, b, data.x_val, data.y_val, delta, cfg.norm),
        mu=float(c.mu),
        norm_c=float(c.norm_c),
        norm_a=float(c.norm_a),
        one_minus_phi=float(1.0 - c.phi),
        gap=float(torch.linalg.vector_norm(mean_a - mean_c)),
        constant=k,
        bound=theorem.mu_bound(delta, k),
        mu_steps=float(np.mean(steps_mu)) if steps_mu else float("nan"),
        dual_norm_w=dual,
    )
    return row, g_c, g_a


def tsne_pair(g_c: Tensor, g_a: Tensor, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """t-SNE (scikit-learn) of n samples' g_c,i and g_a,i together; their 2-D points.

    On one thread: with 500 samples scikit-learn's OpenMP threads cost more than they
    give, and on a busy 2-core machine they spin (26 s a panel instead of 2 s).
    """
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(len(g_c), size=min(n, len(g_c)), replace=False))
    points = torch.cat([g_c[idx], g_a[idx]]).numpy()
    perplexity = float(min(30.0, (len(points) - 1) / 3.0))
    emb = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed)
    with threadpool_limits(1):
        out = emb.fit_transform(points)
    return out[: len(idx)], out[len(idx) :]


@dataclass
class SynthResult:
    """A whole sweep: the task, the rows, the fits and findings, the t-SNE points."""

    data: SynthData
    config: SynthConfig
    rows: list[SynthRow]
    fit: theorem.PowerLaw | None = None
    bound_fit: theorem.PowerLaw | None = None
    findings: list[str] = field(default_factory=list)
    embeddings: dict[float, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)


def run_synth(
    data: SynthData, cfg: SynthConfig, on_row: Callable[[SynthRow], None] | None = None
) -> SynthResult:
    """Train one model per δ and measure it; t-SNE of its gradients when cfg.tsne > 0.

    On one torch thread: a step is a few products of a 32×1025 matrix, far too small to
    share, and two threads on a busy 2-core machine made it 30 times slower.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _run(data, cfg, on_row)
    finally:
        torch.set_num_threads(threads)


def _run(
    data: SynthData, cfg: SynthConfig, on_row: Callable[[SynthRow], None] | None
) -> SynthResult:
    result = SynthResult(data, cfg, [])
    for delta in cfg.deltas:
        w, b, steps_mu = train_at(data, delta, cfg)
        row, g_c, g_a = measure(data, w, b, delta, cfg, steps_mu)
        result.rows.append(row)
        if cfg.tsne > 0:
            result.embeddings[delta] = tsne_pair(g_c, g_a, cfg.tsne, cfg.seed)
        if on_row is not None:
            on_row(row)
    deltas = [r.delta for r in result.rows]
    result.fit, result.bound_fit, result.findings = theorem.findings(
        deltas, [r.mu for r in result.rows], [r.bound for r in result.rows]
    )
    return result


def as_report(result: SynthResult) -> dict[str, Any]:
    """The sweep as plain data (the `--json` output): task, recipe, rows, fits, findings."""
    data, cfg = result.data, result.config

    def fit(law: theorem.PowerLaw | None) -> dict[str, float] | None:
        return None if law is None else law._asdict()

    return {
        "task": {
            "dataset": data.name,
            "note": data.note,
            "image_size": data.image_size,
            "n_train": len(data.y_train),
            "n_val": len(data.y_val),
            "n_test": len(data.y_test),
            "model": "logistic regression, one logit (Eq. 3), y = +1 for digit 1",
            "attack": "closed-form inner maximisation (exact, no [0, 1] clipping)",
        },
        "config": {k: v for k, v in asdict(cfg).items() if k != "tsne"},
        "rows": [asdict(r) for r in result.rows],
        "fit": fit(result.fit),
        "bound_fit": fit(result.bound_fit),
        "bound_holds": all(r.mu <= r.bound for r in result.rows),
        "findings": result.findings,
    }
