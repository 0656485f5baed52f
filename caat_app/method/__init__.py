"""The method itself: the conflict arithmetic (Eq. 2 and 4), flat buffers and SGD, losses.

`registry` (methods, projections, losses) is torch-free; the rest is pure torch, no I/O.
"""
