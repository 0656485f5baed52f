"""Flat parameter and gradient buffers, and SGD with momentum that can skip a step on the device.

The model's trainable parameters become views into one flat vector, and their `.grad`
tensors views into one of two rows of a (2, P) gradient buffer (row 0: g_c, row 1: g_a).
Autograd accumulates in place into an existing `.grad`, so the two backward passes fill
the rows with no per-step `torch.cat`. The optimiser works on whole vectors and takes
its "skip this step" decision (non-finite gradients) with `torch.where`, never `.item()`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


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
            view = self.flat[offset : offset + n].view_as(p)
            view.copy_(p.detach())
            p.data = view
            for row in (0, 1):
                self._rows[row].append(self.grads[row, offset : offset + n].view_as(p))
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
