"""Data sets as whole tensors in [0, 1] with fixed splits, and on-device augmentation.

`registry` names every data set (torch-free); `splits.load_dataset` loads one.
"""

from caat_app.data.registry import AUGMENT, DATASETS, Dataset

__all__ = ["AUGMENT", "DATASETS", "Dataset"]
