"""Training: `trainer` (the loop), `steps` (the recorded step fields and their recorder),
`sinks` (where the trainer reports), `measure` (per-epoch clean and PGD accuracy),
`checkpoint`, `schedule` (the learning rate) and `device`. Imports torch.
"""
