"""caat: Conflict-Aware Adversarial Training — the method, the trainer, the worker, the CLI."""

__version__ = "0.1.0"
