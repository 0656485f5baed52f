"""The store's expected error, apart from SQLAlchemy so that catching it costs no import."""


class StoreError(Exception):
    """A store problem worth showing to a person as is: one line, no traceback needed."""


class StoreUnreachable(StoreError):
    """The store's server could not be reached (down, restarting, the network gone).

    Worth waiting out: a worker keeps its rows until the server is back, a dashboard says
    so and polls on.
    """
