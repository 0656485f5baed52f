"""Expected errors: each carries one line meant for the person at the terminal.

Torch-free, so the CLI can catch them without importing the training stack.
"""


class CaatError(Exception):
    """An expected failure; the CLI prints its message as one line and exits with 2."""


class ConfigError(CaatError, ValueError):
    """A bad configuration, explained in one line."""
