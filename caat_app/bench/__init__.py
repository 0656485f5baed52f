"""`caat bench`: what a training step, an evaluation and the dashboard's start-up cost,
measured rather than asserted. `training` and `evaluation` import torch; `startup` does not.
"""
