"""Deep attestation: instance challenges kept in the database (issue 11).

* ``instance_challenges``: one row per nonce issued to an instance's
  guest (by its SHA-256), with the instance, the host if named, the
  issuing conductor, expiry and when it was spent. A conductor restart
  no longer forgets spent nonces, and any conductor can complete a
  challenge another issued.

Revision ID: d41c7a9e2b58
Revises: b7c2d9e4f130
Create Date: 2026-12-03 19:00:00
"""

from __future__ import annotations

from alembic import op
import sqlalchemy as sa

from sqlalchemy.dialects import mysql

# revision identifiers, used by Alembic.
revision = "d41c7a9e2b58"
down_revision = "b7c2d9e4f130"
branch_labels = None
depends_on = None


def _timestamp() -> sa.types.TypeEngine:
    """Naive UTC with microseconds (DATETIME(6) on MySQL/MariaDB)."""
    return sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql",
                                      "mariadb")


_TABLE_ARGS = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4"}


def upgrade() -> None:
    op.create_table(
        "instance_challenges",
        sa.Column("nonce_sha256", sa.String(64), primary_key=True),
        sa.Column("instance", sa.String(36), nullable=False),
        sa.Column("host", sa.String(255), nullable=True),
        sa.Column("conductor", sa.String(255), nullable=False),
        sa.Column("issued_at", _timestamp(), nullable=False),
        sa.Column("expires_at", _timestamp(), nullable=False),
        sa.Column("used_at", _timestamp(), nullable=True),
        **_TABLE_ARGS)
    op.create_index("instance_challenges_expires_at_idx",
                    "instance_challenges", ["expires_at"])
