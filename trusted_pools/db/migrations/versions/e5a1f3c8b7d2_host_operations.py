"""Host operations: management work a conductor runs off its RPC thread.

Adds ``host_operations``: one row per enroll / attest / capture asked
through trusted-pools-api, with its state (pending, done, failed), its
result or typed error, and the API request id. ``lock`` is unique among
pending operations (``enroll:<host>``: one enrollment of a host at a time).

Revision ID: e5a1f3c8b7d2
Revises: c4d8e2f61a93
Create Date: 2026-12-03 00:00:00
"""

from __future__ import annotations

from alembic import op
import sqlalchemy as sa

from sqlalchemy.dialects import mysql

# revision identifiers, used by Alembic.
revision = "e5a1f3c8b7d2"
down_revision = "c4d8e2f61a93"
branch_labels = None
depends_on = None

# Frozen copies of the column types (a migration must not change when the
# models do later).
_TABLE_ARGS = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4"}


def _timestamp() -> sa.types.TypeEngine:
    return sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql",
                                      "mariadb")


def _long_json() -> sa.types.TypeEngine:
    return sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")


def upgrade() -> None:
    op.create_table(
        "host_operations",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("hostname", sa.String(255), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("conductor", sa.String(255), nullable=False),
        sa.Column("lock", sa.String(300), nullable=True),
        sa.Column("request_id", sa.String(64), nullable=True),
        sa.Column("requested_by", sa.String(255), nullable=True),
        sa.Column("result", _long_json(), nullable=True),
        sa.Column("error_type", sa.String(255), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", _timestamp(), nullable=False),
        sa.Column("updated_at", _timestamp(), nullable=True),
        sa.UniqueConstraint("lock", name="uniq_host_operations0lock"),
        sa.CheckConstraint("kind IN ('enroll', 'attest', 'capture')",
                           name="ck_host_operations_kind"),
        sa.CheckConstraint("state IN ('pending', 'done', 'failed')",
                           name="ck_host_operations_state"),
        **_TABLE_ARGS)
    op.create_index("host_operations_hostname_idx", "host_operations",
                    ["hostname"])
