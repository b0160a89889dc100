"""Key releases and distrust actions, kept for the operator (issue 14).

* ``key_releases``: one row per vTPM secret released to, or refused to, a
  host (never the key): outcome, the host's standing, the reason, who
  asked, when. Deleted by age (``trusted-pools-manage db
  purge-key-releases``).
* ``distrust_actions``: one row per action trusted-pools-placement-sync
  reported taking on a host that stopped being trusted (notify,
  disable_compute, migrate_trusted_instances), with its outcome and the
  Keystone user that reported it. Deleted by age (``db
  purge-distrust-actions``).

Revision ID: d2f4a8c6e195
Revises: d41c7a9e2b58
Create Date: 2026-12-03 19:00:00
"""

from __future__ import annotations

from alembic import op
import sqlalchemy as sa

from sqlalchemy.dialects import mysql

# revision identifiers, used by Alembic.
revision = "d2f4a8c6e195"
down_revision = "d41c7a9e2b58"
branch_labels = None
depends_on = None


def _timestamp() -> sa.types.TypeEngine:
    """Naive UTC with microseconds (DATETIME(6) on MySQL/MariaDB)."""
    return sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql",
                                      "mariadb")


_TABLE_ARGS = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4"}


def upgrade() -> None:
    op.create_table(
        "key_releases",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"),
                  primary_key=True, autoincrement=True),
        sa.Column("secret_id", sa.String(36), nullable=False),
        sa.Column("project_id", sa.String(255), nullable=False),
        sa.Column("owner", sa.String(255), nullable=True),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("level", sa.Integer, nullable=False),
        sa.Column("min_level", sa.Integer, nullable=True),
        sa.Column("reason_code", sa.String(32), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("conductor", sa.String(255), nullable=False),
        sa.Column("requested_by", sa.String(255), nullable=True),
        sa.Column("request_id", sa.String(64), nullable=True),
        sa.Column("created_at", _timestamp(), nullable=False),
        sa.CheckConstraint("outcome IN ('released', 'refused')",
                           name="ck_key_releases_outcome"),
        **_TABLE_ARGS)
    op.create_index("key_releases_created_at_idx", "key_releases",
                    ["created_at"])
    op.create_index("key_releases_host_idx", "key_releases", ["host"])
    op.create_table(
        "distrust_actions",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"),
                  primary_key=True, autoincrement=True),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
        sa.Column("items", sa.Text, nullable=False),
        sa.Column("verdict", sa.String(64), nullable=True),
        sa.Column("status", sa.String(16), nullable=True),
        sa.Column("reported_by", sa.String(255), nullable=False),
        sa.Column("request_id", sa.String(64), nullable=True),
        sa.Column("created_at", _timestamp(), nullable=False),
        sa.CheckConstraint("outcome IN ('done', 'skipped', 'failed')",
                           name="ck_distrust_actions_outcome"),
        **_TABLE_ARGS)
    op.create_index("distrust_actions_created_at_idx", "distrust_actions",
                    ["created_at"])
    op.create_index("distrust_actions_host_idx", "distrust_actions",
                    ["host"])
