"""Key service: host binding keys and secrets (issue 13).

* ``host_binding_keys``: each host's decrypt-only TPM key, certified by its
  enrolled AK (TPMT_PUBLIC, its Name, the enrollment generation whose AK
  certified it).
* ``secrets``: Nova vTPM secrets, AES-256-GCM under the conductors'
  key-encryption key (``kek_id`` names it), with their owner and the level
  a host must reach to be given them (NULL: trusted at its pool's level).

Revision ID: e5a1f0c7b392
Revises: e5a1f3c8b7d2
Create Date: 2026-12-03 00:00:00
"""

from __future__ import annotations

from alembic import op
import sqlalchemy as sa

from sqlalchemy.dialects import mysql

# revision identifiers, used by Alembic.
revision = "e5a1f0c7b392"
down_revision = "e5a1f3c8b7d2"
branch_labels = None
depends_on = None


def _timestamp() -> sa.types.TypeEngine:
    """Naive UTC with microseconds (DATETIME(6) on MySQL/MariaDB)."""
    return sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql",
                                      "mariadb")


_TABLE_ARGS = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4"}


def upgrade() -> None:
    op.create_table(
        "host_binding_keys",
        sa.Column("host_id", sa.Integer,
                  sa.ForeignKey("hosts.id", ondelete="CASCADE",
                                name="host_binding_keys_host_id_fkey"),
                  primary_key=True, autoincrement=False),
        sa.Column("generation", sa.Integer, nullable=False),
        sa.Column("public", sa.LargeBinary, nullable=False),
        sa.Column("name_hex", sa.String(132), nullable=False),
        sa.Column("certified_at", _timestamp(), nullable=False),
        **_TABLE_ARGS)
    op.create_table(
        "secrets",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("project_id", sa.String(255), nullable=False),
        sa.Column("owner", sa.String(255), nullable=True),
        sa.Column("name", sa.String(255), nullable=True),
        sa.Column("secret_type", sa.String(32), nullable=False),
        sa.Column("algorithm", sa.String(32), nullable=True),
        sa.Column("bit_length", sa.Integer, nullable=True),
        sa.Column("min_level", sa.Integer, nullable=True),
        sa.Column("kek_id", sa.String(64), nullable=False),
        sa.Column("ciphertext", sa.LargeBinary, nullable=False),
        sa.Column("created_at", _timestamp(), nullable=False),
        sa.CheckConstraint("min_level IS NULL OR "
                           "(min_level >= 1 AND min_level <= 4)",
                           name="ck_secrets_min_level"),
        **_TABLE_ARGS)
    op.create_index("secrets_project_id_idx", "secrets", ["project_id"])
