"""Classifiers that take images in [0, 1] and normalise them in their first layer.

`registry` names every architecture (torch-free); `build.build_model` builds one;
`transformers` (timm), `adapters` (PEFT modes), `weights` (base weights from a file) and
`saved` (what a checkpoint keeps) serve the pretrained transformers.
"""

from caat_app.models.registry import BN_MODES, MODELS, PEFT_MODES, TRANSFORMERS, Model

__all__ = ["BN_MODES", "MODELS", "PEFT_MODES", "TRANSFORMERS", "Model"]
