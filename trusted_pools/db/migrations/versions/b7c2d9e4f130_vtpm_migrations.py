"""vTPM migrations: the conductor's persisted state machine (issue 12).

* ``vtpm_migrations``: one row per move of an instance's vTPM; ``lock``
  (unique, NULL once ended) allows one active migration per instance;
  ``epoch`` is the instance epoch the migration commits.

Revision ID: b7c2d9e4f130
Revises: e5a1f0c7b392
Create Date: 2026-12-03 16:00:00
"""

from __future__ import annotations

from alembic import op
import sqlalchemy as sa

from sqlalchemy.dialects import mysql

# revision identifiers, used by Alembic.
revision = "b7c2d9e4f130"
down_revision = "e5a1f0c7b392"
branch_labels = None
depends_on = None


def _timestamp() -> sa.types.TypeEngine:
    """Naive UTC with microseconds (DATETIME(6) on MySQL/MariaDB)."""
    return sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql",
                                      "mariadb")


_TABLE_ARGS = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4"}


def upgrade() -> None:
    op.create_table(
        "vtpm_migrations",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("instance", sa.String(36), nullable=False),
        sa.Column("source", sa.String(255), nullable=False),
        sa.Column("destination", sa.String(255), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("step", sa.String(16), nullable=False),
        sa.Column("epoch", sa.Integer, nullable=False),
        sa.Column("min_level", sa.Integer, nullable=True),
        sa.Column("conductor", sa.String(255), nullable=False),
        sa.Column("lock", sa.String(300), nullable=True),
        sa.Column("salt", sa.LargeBinary, nullable=False),
        sa.Column("transport_key", sa.LargeBinary, nullable=True),
        sa.Column("outcome", sa.String(16), nullable=True),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("request_id", sa.String(64), nullable=True),
        sa.Column("requested_by", sa.String(255), nullable=True),
        sa.Column("created_at", _timestamp(), nullable=False),
        sa.Column("updated_at", _timestamp(), nullable=False),
        sa.Column("committed_at", _timestamp(), nullable=True),
        sa.Column("finished_at", _timestamp(), nullable=True),
        sa.UniqueConstraint("lock", name="uniq_vtpm_migrations0lock"),
        sa.CheckConstraint("kind IN ('cold', 'live')",
                           name="ck_vtpm_migrations_kind"),
        sa.CheckConstraint(
            "step IN ('requested', 'attested', 'key_certified', "
            "'exported', 'delivered', 'imported', 'committed', "
            "'completed', 'aborted')", name="ck_vtpm_migrations_step"),
        **_TABLE_ARGS)
    op.create_index("vtpm_migrations_instance_idx", "vtpm_migrations",
                    ["instance"])
    op.create_index("vtpm_migrations_step_idx", "vtpm_migrations", ["step"])
