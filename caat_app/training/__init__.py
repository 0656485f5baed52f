"""Training: `trainer` (the loop), `steps` (the recorded step fields and their recorder),
`sinks` (where the trainer reports), `measure` (per-epoch clean and PGD accuracy),
`checkpoint`, `schedule` (learning rate and momentum; torch-free, the config reads its
names) and `device`. The others import torch.
"""
