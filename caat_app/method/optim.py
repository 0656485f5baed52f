"""Flat parameter and gradient buffers, and optimisers (SGD, AdamW) that skip a step on the device.

The model's trainable parameters become views into one flat vector, and their `.grad`
tensors views into one of two rows of a (2, P) gradient buffer (row 0: g_c, row 1: g_a).
Autograd accumulates in place into an existing `.grad`, so the two backward passes fill
the rows with no per-step `torch.cat`. The optimiser works on whole vectors and takes
its "skip this step" decision (non-finite gradients) with `torch.where`, never `.item()`.

SGD is the paper's optimiser; AdamW is what vision transformers train with (plain SGD
leaves a ViT trained adversarially from scratch at chance), so the smoke scale's base
model and any run that asks for it (`--optimizer adamw`) use it.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor, nn

from caat_app.method.registry import OPTIMIZERS

ADAMW_BETA2 = 0.999
ADAMW_EPS = 1e-8


def _slot(buffer: Tensor, offset: int, like: Tensor) -> Tensor:
    """`like`'s place in a flat `buffer`, in `like`'s memory layout when that is dense.

    A channels_last convolution weight (the CUDA fast path) keeps its strides, so cuDNN
    sees the layout it was given; the flat slice then holds its elements in memory order.
    """
    dense = like.is_contiguous() or (
        like.dim() == 4 and like.is_contiguous(memory_format=torch.channels_last)
    )
    if not dense:
        return buffer[offset : offset + like.numel()].view_as(like)
    return buffer.as_strided(like.shape, like.stride(), buffer.storage_offset() + offset)


class FlatParams:
    """One flat parameter vector and a (2, P) gradient buffer for a model."""

    def __init__(self, model: nn.Module) -> None:
        self.params = [p for p in model.parameters() if p.requires_grad]
        if not self.params:
            raise ValueError("the model has no trainable parameters")
        first = self.params[0]
        self.sizes = [p.numel() for p in self.params]
        numel = sum(self.sizes)
        self.flat = torch.empty(numel, dtype=first.dtype, device=first.device)
        self.grads = torch.zeros(2, numel, dtype=first.dtype, device=first.device)
        self._rows: list[list[Tensor]] = [[], []]
        offset = 0
        for p, n in zip(self.params, self.sizes, strict=True):
            view = _slot(self.flat, offset, p)
            view.copy_(p.detach())
            p.data = view
            for row in (0, 1):
                self._rows[row].append(_slot(self.grads[row], offset, p))
            offset += n

    @property
    def numel(self) -> int:
        return self.flat.numel()

    def zero_grads(self) -> None:
        self.grads.zero_()

    def grad_views(self, row: int) -> tuple[Tensor, ...]:
        """Each parameter's view into `row` of the gradient buffer, in `params` order.

        These are the very tensors `grad_into` hands to autograd, so a caller can check
        that a backward pass wrote into the buffer rather than into a fresh `.grad`.
        """
        return tuple(self._rows[row])

    def grad_into(self, row: int) -> None:
        """Point every parameter's `.grad` at `row` of the buffer before a backward pass."""
        for p, view in zip(self.params, self._rows[row], strict=True):
            p.grad = view

    def grads_in_buffer(self) -> bool:
        """True when autograd kept writing into the buffer (a check for tests)."""
        lo = self.grads.data_ptr()
        hi = lo + self.grads.numel() * self.grads.element_size()
        return all(p.grad is not None and lo <= p.grad.data_ptr() < hi for p in self.params)


class FlatSGD:
    """SGD with momentum, weight decay and optional Nesterov (PyTorch's rule) on a flat vector.

    The momentum may change from step to step (a schedule that cycles it, as the
    official code's OneCycleLR does); it is written into a device scalar, never read back.
    """

    def __init__(
        self,
        flat: Tensor,
        *,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        nesterov: bool = False,
    ) -> None:
        self.flat = flat
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.nesterov = nesterov
        self.buf = torch.zeros_like(flat)
        self._started = torch.zeros((), dtype=torch.bool, device=flat.device)

        # Scalars in the parameters' dtype: a float32 0.9 would round a float64 update.
        def scalar(x: float) -> Tensor:
            return torch.tensor(x, dtype=flat.dtype, device=flat.device)

        self._one, self._zero, self._momentum = scalar(1.0), scalar(0.0), scalar(momentum)

    def step(self, direction: Tensor, lr: float, ok: Tensor, momentum: float | None = None) -> None:
        """Apply `direction` (overwritten) when `ok`; leave every state untouched otherwise.

        `d = direction + wd·θ`, `buf = m·buf + d` (the first applied step: `buf = d`),
        then `θ -= lr·buf`, or with Nesterov `θ -= lr·(d + m·buf)`, as torch.optim.SGD.
        `momentum` replaces the momentum from this step on.
        """
        if momentum is not None and momentum != self.momentum:
            self.momentum = momentum
            self._momentum.fill_(momentum)
        if self.weight_decay:
            direction.add_(self.flat, alpha=self.weight_decay)
        direction.masked_fill_(~ok, 0.0)
        one, zero = self._one, self._zero
        m = torch.where(ok & self._started, self._momentum, torch.where(ok, zero, one))
        self.buf.mul_(m).add_(direction)
        update = direction.addcmul_(self.buf, self._momentum) if self.nesterov else self.buf
        self.flat.addcmul_(update, torch.where(ok, -lr * one, zero))
        self._started |= ok

    def state_dict(self) -> dict[str, Tensor]:
        return {"momentum_buffer": self.buf, "started": self._started}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.buf.copy_(state["momentum_buffer"])
        self._started.copy_(state["started"])


class FlatAdamW:
    """AdamW (PyTorch's rule: decoupled weight decay, bias-corrected moments) on a flat vector.

    β₂ and ε are PyTorch's defaults. β₁ is the `momentum` (0.9 by default) and, as
    PyTorch's `OneCycleLR` does for Adam, a schedule that cycles momentum cycles β₁. A
    skipped step changes nothing, its step count included.
    """

    def __init__(self, flat: Tensor, *, momentum: float = 0.9, weight_decay: float = 0.01) -> None:
        self.flat = flat
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.exp_avg = torch.zeros_like(flat)
        self.exp_avg_sq = torch.zeros_like(flat)
        self.steps = torch.zeros((), dtype=flat.dtype, device=flat.device)  # applied steps

        def scalar(x: float) -> Tensor:
            return torch.tensor(x, dtype=flat.dtype, device=flat.device)

        self._one, self._zero, self._beta1 = scalar(1.0), scalar(0.0), scalar(momentum)

    def step(self, direction: Tensor, lr: float, ok: Tensor, momentum: float | None = None) -> None:
        """Apply `direction` (overwritten) when `ok`; leave every state untouched otherwise."""
        if momentum is not None and momentum != self.momentum:
            self.momentum = momentum
            self._beta1.fill_(momentum)
        one, zero = self._one, self._zero
        direction.masked_fill_(~ok, 0.0)
        self.steps.add_(torch.where(ok, one, zero))
        t = self.steps.clamp(min=1.0)  # never 0 in the corrections; unused while nothing applied
        self.flat.mul_(torch.where(ok, one - lr * self.weight_decay, one))
        self.exp_avg.lerp_(direction, torch.where(ok, one - self._beta1, zero))
        self.exp_avg_sq.mul_(torch.where(ok, one * ADAMW_BETA2, one))
        self.exp_avg_sq.addcmul_(direction.square_(), torch.where(ok, one - ADAMW_BETA2, zero))
        bias1 = one - self._beta1.pow(t)
        bias2_sqrt = (one - torch.pow(one * ADAMW_BETA2, t)).sqrt()
        denom = torch.sqrt(self.exp_avg_sq, out=direction).div_(bias2_sqrt).add_(ADAMW_EPS)
        update = torch.div(self.exp_avg, denom, out=direction)
        self.flat.addcmul_(update, torch.where(ok, -lr / bias1, zero))

    def state_dict(self) -> dict[str, Tensor]:
        return {"exp_avg": self.exp_avg, "exp_avg_sq": self.exp_avg_sq, "steps": self.steps}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.exp_avg.copy_(state["exp_avg"])
        self.exp_avg_sq.copy_(state["exp_avg_sq"])
        self.steps.copy_(state["steps"])


class FlatOptimizer(Protocol):
    """What the trainer and the checkpoints need of an optimiser on the flat vector."""

    def step(
        self, direction: Tensor, lr: float, ok: Tensor, momentum: float | None = None
    ) -> None: ...

    def state_dict(self) -> dict[str, Tensor]: ...

    def load_state_dict(self, state: dict[str, Tensor]) -> None: ...


def make_optimizer(
    name: str, flat: Tensor, *, momentum: float, weight_decay: float, nesterov: bool
) -> FlatOptimizer:
    """The optimiser `name` (one of `OPTIMIZERS`) on `flat`."""
    if name == "sgd":
        return FlatSGD(flat, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)
    if name == "adamw":
        return FlatAdamW(flat, momentum=momentum, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")
