"""Schema migrations through alembic's API (``trusted-pools-manage db ...``).

The migration scripts live in ``trusted_pools/db/migrations``; they run on a
connection from the same oslo.db engine the services use, so the options in
``[database]`` apply (and SQLite gets its foreign keys).
"""

from __future__ import annotations

import os

from alembic import command as alembic_command
from alembic import config as alembic_config
from alembic import migration as alembic_migration
from alembic import script as alembic_script
import sqlalchemy as sa

from trusted_pools import exception
from trusted_pools.db import api

_INI = os.path.join(os.path.dirname(__file__), "alembic.ini")


def _config(connection: sa.engine.Connection | None = None
            ) -> alembic_config.Config:
    config = alembic_config.Config(_INI)
    config.set_main_option("script_location", os.path.join(
        os.path.dirname(__file__), "migrations"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def _engine(engine: sa.engine.Engine | None) -> sa.engine.Engine:
    if engine is not None:
        return engine
    return api.get_instance().get_engine()


def head() -> str:
    """The newest revision the code knows."""
    heads = alembic_script.ScriptDirectory.from_config(_config()).get_heads()
    if len(heads) != 1:
        raise exception.ConfigInvalid(
            reason="the migrations have %d heads, expected one: %s"
            % (len(heads), ", ".join(heads)))
    return heads[0]


@api._translate_errors
def upgrade(revision: str = "head",
            engine: sa.engine.Engine | None = None) -> str | None:
    """Bring the schema to ``revision``; returns the version reached.

    Idempotent: at the target already, nothing runs. Downgrades are not
    supported (as in Nova and Ironic): restore a backup instead.
    """
    engine = _engine(engine)
    with engine.begin() as connection:  # one transaction where supported
        alembic_command.upgrade(_config(connection), revision)
    return version(engine)


@api._translate_errors
def version(engine: sa.engine.Engine | None = None) -> str | None:
    """The schema's current revision, or None for an empty database."""
    engine = _engine(engine)
    with engine.connect() as connection:
        context = alembic_migration.MigrationContext.configure(connection)
        return context.get_current_revision()
