"""Batched augmentation on the device: flip, shift and rotation in one resampling pass."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def augment(
    x: Tensor,
    *,
    flip: bool,
    translate: int,
    rotate_deg: float,
    translate_frac: float = 0.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Random per-sample flip, then shift and rotation in one resampling pass.

    Shifts are whole pixels with zero fill, i.e. pad-and-random-crop; the flip is an exact
    mirror. Everything stays on ``x``'s device and the batch is handled at once. The
    largest shift is ``translate`` pixels plus ``translate_frac`` of the shorter side,
    rounded: data sets decoded at the run's image size give it as a share of the side.
    """
    n, _, h, w = x.shape
    translate += round(translate_frac * min(h, w))
    out = x
    if flip:
        mirror = torch.rand(n, generator=generator, device=x.device) < 0.5
        out = torch.where(mirror.view(n, 1, 1, 1), x.flip(-1), x)
    if translate <= 0 and rotate_deg <= 0:
        return out
    shift = torch.randint(
        -translate, translate + 1, (n, 2), generator=generator, device=x.device
    ).to(x.dtype)
    angle = (torch.rand(n, generator=generator, device=x.device, dtype=x.dtype) * 2 - 1) * (
        math.radians(rotate_deg)
    )
    cos, sin = angle.cos(), angle.sin()
    # affine_grid maps output to input in [-1, 1] coordinates: rotate in pixel space
    # (hence the aspect factors) and shift by 2·pixels / size.
    theta = torch.stack(
        [
            torch.stack([cos, -sin * (h / w), shift[:, 0] * (2.0 / w)], dim=1),
            torch.stack([sin * (w / h), cos, shift[:, 1] * (2.0 / h)], dim=1),
        ],
        dim=1,
    )
    grid = F.affine_grid(theta, list(out.shape), align_corners=False)
    out = F.grid_sample(out, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.clamp_(0.0, 1.0)
