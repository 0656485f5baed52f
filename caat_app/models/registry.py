"""The model registry: every architecture a run can train, by its config name.

Add a model: a factory `(in_channels, num_classes, image_size, norm) -> nn.Module` in a
module of this package, one entry here, and its tests (tests/test_models.py; the
transformers in tests/test_transformers.py).

An entry also says which input normalisation its first layer applies (`data`: the data
set's own mean and std; otherwise the fixed statistics its weights were trained with, so
a pretrained file sees the inputs it expects) and its `family`: the transformer families
take weights from a file and the parameter-efficient fine-tuning modes of `PEFT_MODES`.
"""

from __future__ import annotations

from dataclasses import dataclass

from caat_app.registry import Entry, Registry, one_of

BN_MODES = ("standard", "batchstats")
"""BatchNorm with running statistics, or without (the paper's: batch statistics always)."""

PEFT_MODES = ("full", "head", "adapter", "lora")
"""What trains: everything; only the new head; bottleneck adapters and the head; LoRA and
the head (through the `peft` library)."""

TRANSFORMER_FAMILIES = ("vit", "swin")
"""Families with transformer blocks: weights files, PEFT modes and grad checkpointing."""

INPUT_NORMS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "inception": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
}
"""Fixed per-channel (mean, std) by name; a model naming one ignores the data set's."""


@dataclass(frozen=True)
class Model(Entry):
    """An architecture; `impl` names its factory."""

    family: str = "cnn"  # "vit" or "swin": a transformer (see TRANSFORMER_FAMILIES)
    normalization: str = "data"  # "data", or a key of INPUT_NORMS

    @property
    def transformer(self) -> bool:
        return self.family in TRANSFORMER_FAMILIES


_T = "caat_app.models.transformers:"

MODELS: Registry[Model] = Registry(
    "model",
    [
        Model("linear", "logistic regression", "caat_app.models.small:linear"),
        Model("cnn", "small CNN, for small images", "caat_app.models.small:small_cnn"),
        Model("resnet18", "ResNet-18, CIFAR stem", "caat_app.models.resnet:resnet18"),
        Model("resnet34", "ResNet-34, CIFAR stem", "caat_app.models.resnet:resnet34"),
        Model("wrn28-10", "WideResNet-28-10", "caat_app.models.wideresnet:wrn28_10"),
        Model("vit-b16", "ViT-B/16 (timm vit_base_patch16_224)", _T + "vit_b16", "vit", "imagenet"),
        Model(
            "vit-s16", "ViT-S/16 (timm vit_small_patch16_224)", _T + "vit_s16", "vit", "imagenet"
        ),
        Model(
            "vit-ti16", "ViT-Ti/16 (timm vit_tiny_patch16_224)", _T + "vit_ti16", "vit", "imagenet"
        ),
        Model(
            "vit-micro",
            "a CPU-sized ViT: patch 4, width 64, depth 4, 4 heads",
            _T + "vit_micro",
            "vit",
            "inception",
        ),
        Model(
            "swin-t",
            "Swin-T (timm swin_tiny_patch4_window7_224)",
            _T + "swin_t",
            "swin",
            "imagenet",
        ),
        Model(
            "swin-s",
            "Swin-S (timm swin_small_patch4_window7_224)",
            _T + "swin_s",
            "swin",
            "imagenet",
        ),
        Model(
            "swin-b",
            "Swin-B (timm swin_base_patch4_window7_224)",
            _T + "swin_b",
            "swin",
            "imagenet",
        ),
        Model(
            "swin-micro",
            "a CPU-sized Swin: patch 4, width 32, depths 2-2, window 4",
            _T + "swin_micro",
            "swin",
            "inception",
        ),
    ],
)

TRANSFORMERS: tuple[str, ...] = tuple(n for n, m in MODELS.items() if m.transformer)
"""The models that take `weights`, `peft` other than full and `grad_checkpointing`."""


def transformer_complaint(field: str, model: str) -> str:
    """Why `field` does not apply to a model that is not a transformer, in one line."""
    return f"{field}: only for the transformer models ({one_of(TRANSFORMERS)}); {model} is not one"
