"""Alembic environment: runs migrations on the connection it is handed.

``trusted_pools.db.migration`` passes an open connection in
``config.attributes["connection"]`` so that migrations run inside the same
engine (and oslo.db's engine settings) as the service. Offline (``--sql``)
mode is not supported: operators upgrade online with ``db sync``.
"""

from __future__ import annotations

from alembic import context
import sqlalchemy as sa

from trusted_pools.db import models

target_metadata = models.Base.metadata


def _run(connection: sa.engine.Connection) -> None:
    context.configure(connection=connection,
                      target_metadata=target_metadata,
                      render_as_batch=connection.dialect.name == "sqlite",
                      transaction_per_migration=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = context.config.get_main_option("sqlalchemy.url")
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            _run(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("Offline migrations are not supported; run "
                     "'trusted-pools-manage db sync' against the database.")
run_migrations_online()
