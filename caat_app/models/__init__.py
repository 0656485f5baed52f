"""Classifiers that take images in [0, 1] and normalise them in their first layer.

`registry` names every architecture (torch-free); `build.build_model` builds one.
"""

from caat_app.models.registry import BN_MODES, MODELS, Model

__all__ = ["BN_MODES", "MODELS", "Model"]
