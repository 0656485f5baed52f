"""The store's expected error, apart from SQLAlchemy so that catching it costs no import."""


class StoreError(Exception):
    """A store problem worth showing to a person as is: one line, no traceback needed."""
