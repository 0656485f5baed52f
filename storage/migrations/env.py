"""Alembic's entry point for caat: migrations run on the connection `caat_storage.migrate`
hands over (already inside its write transaction, foreign keys off on SQLite), never on
a URL of their own, so the store's locking rules hold during an upgrade too."""

from alembic import context

connection = context.config.attributes["connection"]
# Batch mode: SQLite cannot ALTER most things in place; batch operations rebuild the
# table (copy, drop, rename) there and are plain ALTERs elsewhere.
context.configure(connection=connection, render_as_batch=True, transactional_ddl=True)
with context.begin_transaction():
    context.run_migrations()
