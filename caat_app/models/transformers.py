"""Vision transformers through timm, built offline (`pretrained=False`, never a download).

Weights come from a file the user names (`models.weights`); adapters and LoRA are put in
by `models.adapters`. Every factory has the registry's signature
`(in_channels, num_classes, image_size, norm)`: a transformer always takes three
channels (a grey image is broadcast to RGB by the model's `Normalize`) and has no
BatchNorm, so `in_channels` and `norm` only matter to the CNNs.

Image sizes: a ViT takes any side divisible by its patch (a pretrained position
embedding is resampled to the new grid when loaded); a Swin needs every stage's grid to
tile into whole windows, so its side is a multiple of patch × 2^(stages − 1) × window
(224 for the ImageNet ones). Any other size is refused in one line.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from caat_app.errors import ConfigError

CHANNELS = 3
"""What every transformer's patch embedding takes."""


def _timm_model(name: str, num_classes: int, image_size: int, **kwargs: Any) -> nn.Module:
    """A timm architecture by its timm name, randomly initialised (weights: `models.weights`)."""
    import timm

    return timm.create_model(
        name, pretrained=False, num_classes=num_classes, img_size=image_size, **kwargs
    )


def check_vit_size(model: str, image_size: int, patch: int) -> None:
    if image_size % patch:
        raise ConfigError(
            f"{model} cuts images into {patch}×{patch} patches; a side of {image_size} is not "
            f"divisible by {patch} (use a data set whose images fit, e.g. {patch * 2}×{patch * 2})"
        )


def check_swin_size(model: str, image_size: int, patch: int, stages: int, window: int) -> None:
    side = patch * 2 ** (stages - 1) * window
    if image_size % side:
        raise ConfigError(
            f"{model} takes images whose side is a multiple of {side} (patch {patch}, "
            f"{stages - 1} merges, window {window}); these are {image_size}×{image_size}"
        )


def _vit(timm_name: str, model: str, patch: int) -> Callable[..., nn.Module]:
    def factory(in_channels: int, num_classes: int, image_size: int, norm: Any) -> nn.Module:
        check_vit_size(model, image_size, patch)
        return _timm_model(timm_name, num_classes, image_size)

    factory.__doc__ = f"{model}: timm's {timm_name} at the data's image size."
    return factory


def _swin(timm_name: str, model: str, depths: Sequence[int]) -> Callable[..., nn.Module]:
    def factory(in_channels: int, num_classes: int, image_size: int, norm: Any) -> nn.Module:
        check_swin_size(model, image_size, patch=4, stages=len(depths), window=7)
        return _timm_model(timm_name, num_classes, image_size)

    factory.__doc__ = f"{model}: timm's {timm_name}; sides of 224, 448, …"
    return factory


vit_b16 = _vit("vit_base_patch16_224", "vit-b16", 16)
vit_s16 = _vit("vit_small_patch16_224", "vit-s16", 16)
vit_ti16 = _vit("vit_tiny_patch16_224", "vit-ti16", 16)
swin_t = _swin("swin_tiny_patch4_window7_224", "swin-t", (2, 2, 6, 2))
swin_s = _swin("swin_small_patch4_window7_224", "swin-s", (2, 2, 18, 2))
swin_b = _swin("swin_base_patch4_window7_224", "swin-b", (2, 2, 18, 2))

MICRO_PATCH = 4
"""vit-micro's and swin-micro's patch: 8×8 digits give 2×2 tokens, 32×32 images 8×8."""


def vit_micro(in_channels: int, num_classes: int, image_size: int, norm: Any) -> nn.Module:
    """A ViT small enough to train on two CPU cores: width 64, depth 4, 4 heads, MLP ×4."""
    from timm.models.vision_transformer import VisionTransformer

    check_vit_size("vit-micro", image_size, MICRO_PATCH)
    return VisionTransformer(
        img_size=image_size,
        patch_size=MICRO_PATCH,
        in_chans=CHANNELS,
        num_classes=num_classes,
        embed_dim=64,
        depth=4,
        num_heads=4,
        mlp_ratio=4.0,
    )


def swin_micro(in_channels: int, num_classes: int, image_size: int, norm: Any) -> nn.Module:
    """A Swin small enough for the CPU: width 32, two stages of two blocks, window 4."""
    from timm.models.swin_transformer import SwinTransformer

    check_swin_size("swin-micro", image_size, MICRO_PATCH, stages=2, window=4)
    return SwinTransformer(
        img_size=image_size,
        patch_size=MICRO_PATCH,
        in_chans=CHANNELS,
        num_classes=num_classes,
        embed_dim=32,
        depths=(2, 2),
        num_heads=(2, 4),
        window_size=4,
    )
