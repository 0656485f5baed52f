"""Per-sample conflict: each training image's own g_c,i and g_a,i, its φ_i and μ_i.

Training's g_c is the batch mean of g_c,i = ∇θ L(x_i, y_i), and g_a that of
g_a,i = ∇θ L_a(x_i, x′_i, y_i), with x′_i from the run's own training attack. Here each
image's pair is computed with `torch.func` (`functional_call`, `grad` of each loss,
`vmap` over the images), chunk by chunk so memory stays bounded, and
φ_i, μ_i are `conflict_stats` row by row (the same formula as training's).

The protocol, which every report states:
- The checkpoint's weights in eval mode. Training took g_c and g_a in train mode, where
  BatchNorm normalises with the batch's statistics and no gradient is one image's own;
  with running statistics (`--bn standard`) each image is normalised by itself, so its
  gradient is well defined.
- A model without running statistics (`--bn batchstats`) normalises with its batch's
  statistics even in eval mode. Each image is then normalised with the statistics of its
  chunk (training's batch size; the clean chunk for the clean pass, the attacked chunk for
  the adversarial one), held as constants: the forward values are the model's own on that
  chunk, but the gradient does not flow through the statistics (the convention the
  attacks use, `attacks.common.own_gradients`).
- x′ is the run's training attack (attack, ε, step, steps, norm, the loss's objective and
  start) on each chunk, from a fixed seed; no augmentation; float32 (no bf16).

Pure: no store, no files, no printing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from caat_app.attacks.common import is_batch_dependent
from caat_app.config import RunConfig
from caat_app.method.conflict import Conflict, conflict_stats
from caat_app.method.losses import adversarial_loss, clean_loss
from caat_app.training.adversary import training_examples

GRADIENT_BYTES = 256 * 2**20
"""Memory one sub-chunk's per-sample gradients may take (both losses, with copies)."""
ATTACK_CHUNK = 256
"""Images attacked at once on a model whose predictions are per sample."""

Tensors = dict[str, Tensor]


@dataclass(frozen=True)
class PerSample:
    """Per-image results over the analysed images (CPU tensors, one entry per image).

    `index` is each image's position in the training split (what `--drop` takes);
    `whole` is the conflict of the mean gradients over all of them (training's g_c and g_a
    on one batch the size of the set).
    """

    index: Tensor
    label: Tensor
    pred_c: Tensor
    pred_a: Tensor
    margin: Tensor
    loss_c: Tensor
    loss_a: Tensor
    phi: Tensor
    mu: Tensor
    norm_c: Tensor
    norm_a: Tensor
    whole: Conflict
    params: int


def trainable(model: nn.Module) -> Tensors:
    """The parameters training updates (requires_grad), detached, by name."""
    return {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}


def _on_batch_statistics(module: nn.Module) -> bool:
    norms = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
    return isinstance(module, norms) and module.running_mean is None


def chunk_statistics(model: nn.Module, x: Tensor) -> Tensors:
    """Each batch-statistics BatchNorm's input mean and (biased) variance over the chunk `x`,
    named as the running buffers they stand in for; empty for any other model."""
    found: Tensors = {}
    hooks = []
    for name, module in model.named_modules():
        if not _on_batch_statistics(module):
            continue

        def record(m: nn.Module, inputs: tuple[Tensor, ...], out: Tensor, name: str = name) -> None:
            h = inputs[0].detach()
            dims = [0, *range(2, h.dim())]
            found[f"{name}.running_mean"] = h.mean(dims)
            found[f"{name}.running_var"] = h.var(dims, unbiased=False)

        hooks.append(module.register_forward_hook(record))
    if hooks:
        try:
            with torch.no_grad():
                model(x)
        finally:
            for hook in hooks:
                hook.remove()
    return found


def margins(logits: Tensor, y: Tensor) -> Tensor:
    """The logit of the true class minus the largest other one (negative: misclassified)."""
    true = logits.gather(1, y[:, None]).squeeze(1)
    others = logits.scatter(1, y[:, None], float("-inf"))
    return true - others.amax(1)


def sample_gradients(
    model: nn.Module,
    x: Tensor,
    x_adv: Tensor,
    y: Tensor,
    *,
    loss: str = "ce",
    beta: float = 0.0,
    stats_c: Tensors | None = None,
    stats_a: Tensors | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Per-image flat (g_c,i, g_a,i), each (B, P), with the losses (B, 2) and both logits.

    The model must be in eval mode. `stats_c` / `stats_a`: constant BatchNorm statistics
    for the clean and the adversarial pass (`chunk_statistics`), for batch-statistics models.
    """
    params = trainable(model)
    buffers = dict(model.named_buffers())
    state_c = {**buffers, **(stats_c or {})}
    state_a = {**buffers, **(stats_a or {})}

    def clean(p: Tensors, xi: Tensor, xa: Tensor, yi: Tensor) -> tuple[Tensor, Any]:
        logits = functional_call(model, {**state_c, **p}, (xi[None],), strict=False)
        value = clean_loss(logits, yi[None])
        return value, (value.detach(), logits[0].detach())

    def robust(p: Tensors, xi: Tensor, xa: Tensor, yi: Tensor) -> tuple[Tensor, Any]:
        logits_c = functional_call(model, {**state_c, **p}, (xi[None],), strict=False)
        logits_a = functional_call(model, {**state_a, **p}, (xa[None],), strict=False)
        value = adversarial_loss(loss, logits_c, logits_a, yi[None], beta=beta)
        return value, (value.detach(), logits_a[0].detach())

    # Two vmapped `grad`s: faster on the CPU than one `jacrev` of both losses.
    dims = (None, 0, 0, 0)
    g_c, (loss_c, logits_c) = vmap(grad(clean, has_aux=True), in_dims=dims)(params, x, x_adv, y)
    g_a, (loss_a, logits_a) = vmap(grad(robust, has_aux=True), in_dims=dims)(params, x, x_adv, y)
    return _flat(g_c), _flat(g_a), torch.stack((loss_c, loss_a), 1), logits_c, logits_a


def _flat(grads: Tensors) -> Tensor:
    """Per-image gradients by parameter name → one (B, P) matrix, in the parameters' order."""
    return torch.cat([g.flatten(1) for g in grads.values()], dim=1)


@contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    """The global generator (the training attack's random start) seeded, then put back."""
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def gradient_chunk(n_params: int, budget: int = GRADIENT_BYTES) -> int:
    """How many images' gradients fit in `budget` bytes (two losses, float32, with copies)."""
    return max(1, budget // (n_params * 4 * 2 * 3))


class _Totals:
    """The running sums of g_c,i and g_a,i (for the conflict of the mean gradients)."""

    def __init__(self) -> None:
        self.g_c: Tensor | None = None
        self.g_a: Tensor | None = None

    def add(self, g_c: Tensor, g_a: Tensor) -> None:
        s_c, s_a = g_c.sum(0, dtype=torch.float64), g_a.sum(0, dtype=torch.float64)
        self.g_c = s_c if self.g_c is None else self.g_c + s_c
        self.g_a = s_a if self.g_a is None else self.g_a + s_a

    def conflict(self, n: int) -> Conflict:
        assert self.g_c is not None and self.g_a is not None
        c = conflict_stats(self.g_c / n, self.g_a / n)
        return Conflict(*(t.float().cpu() for t in c))


def _chunk_rows(
    model: nn.Module, cfg: RunConfig, x: Tensor, y: Tensor, totals: _Totals
) -> dict[str, Tensor]:
    """One attack chunk: x′, then per-image gradients in sub-chunks; its per-image rows."""
    x_adv = training_examples(model, cfg, x, y).detach()
    stats_c, stats_a = chunk_statistics(model, x), chunk_statistics(model, x_adv)
    step = gradient_chunk(sum(p.numel() for p in trainable(model).values()))
    parts: list[dict[str, Tensor]] = []
    for s in range(0, len(y), step):
        sl = slice(s, s + step)
        g_c, g_a, value, logits_c, logits_a = sample_gradients(
            model, x[sl], x_adv[sl], y[sl], loss=cfg.loss, beta=cfg.loss_beta,
            stats_c=stats_c, stats_a=stats_a,
        )  # fmt: skip
        totals.add(g_c, g_a)
        c = vmap(conflict_stats)(g_c, g_a)
        parts.append(
            {
                "pred_c": logits_c.argmax(1),
                "pred_a": logits_a.argmax(1),
                "margin": margins(logits_c, y[sl]),
                "loss_c": value[:, 0],
                "loss_a": value[:, 1],
                **c._asdict(),
            }
        )
    return {k: torch.cat([p[k] for p in parts]).cpu() for k in parts[0]}


def per_sample_conflict(
    model: nn.Module,
    cfg: RunConfig,
    x: Tensor,
    y: Tensor,
    *,
    index: Tensor | None = None,
    seed: int = 0,
    on_chunk: Callable[[int, int], None] | None = None,
) -> PerSample:
    """φ_i, μ_i and their parts for each image of (x, y) under the run's training attack.

    `index`: the images' positions in the training split (default 0..N−1). Attack chunks
    hold `cfg.batch_size` images on a batch-statistics model (the statistics training
    normalised with), else `ATTACK_CHUNK`. `on_chunk(done, total)` reports progress.
    """
    device = next(model.parameters()).device
    was = model.training
    model.eval()
    chunk = cfg.batch_size if is_batch_dependent(model) else ATTACK_CHUNK
    totals, rows = _Totals(), []
    try:
        with _seeded(seed, device):
            for s in range(0, len(y), chunk):
                xb, yb = x[s : s + chunk].to(device), y[s : s + chunk].to(device)
                rows.append(_chunk_rows(model, cfg, xb, yb, totals))
                if on_chunk is not None:
                    on_chunk(min(s + chunk, len(y)), len(y))
    finally:
        model.train(was)
    cat = {k: torch.cat([r[k] for r in rows]) for k in rows[0]}
    return PerSample(
        index=torch.arange(len(y)) if index is None else index.cpu(),
        label=y.cpu(),
        whole=totals.conflict(len(y)),
        params=sum(p.numel() for p in trainable(model).values()),
        **cat,
    )
