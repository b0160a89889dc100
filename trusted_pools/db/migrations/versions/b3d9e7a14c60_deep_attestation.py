"""Deep attestation as host operations, and instance verdicts (issue 11).

* ``host_operations.kind`` also takes ``certify`` (the binding key),
  ``deep_attest`` and ``list_vtpms``: the agent calls behind them run on
  the owning conductor's worker pool, like enroll, attest and capture.
* ``instance_verdicts``: the latest deep-attestation verdict of each
  instance, with the host's enrollment generation and the sequence of the
  host verdict it relied on (a reader judges it again against the host's
  later verdicts).

Revision ID: b3d9e7a14c60
Revises: e5a1f0c7b392
Create Date: 2026-12-03 16:00:00
"""

from __future__ import annotations

from alembic import op
import sqlalchemy as sa

from sqlalchemy.dialects import mysql

# revision identifiers, used by Alembic.
revision = "b3d9e7a14c60"
down_revision = "e5a1f0c7b392"
branch_labels = None
depends_on = None

_TABLE_ARGS = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4"}
_NEW_KINDS = ("kind IN ('enroll', 'attest', 'capture', 'certify', "
              "'deep_attest', 'list_vtpms')")


def _timestamp() -> sa.types.TypeEngine:
    """Naive UTC with microseconds (DATETIME(6) on MySQL/MariaDB)."""
    return sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql",
                                      "mariadb")


def _kinds(check: str) -> None:
    # batch_alter_table: SQLite cannot alter a constraint, so the table is
    # copied there; the other backends get ALTER TABLE.
    with op.batch_alter_table("host_operations") as batch:
        batch.drop_constraint("ck_host_operations_kind", type_="check")
        batch.create_check_constraint("ck_host_operations_kind",
                                      sa.text(check))


def upgrade() -> None:
    _kinds(_NEW_KINDS)
    op.create_table(
        "instance_verdicts",
        sa.Column("instance", sa.String(36), primary_key=True),
        sa.Column("host_id", sa.Integer,
                  sa.ForeignKey("hosts.id", ondelete="CASCADE",
                                name="instance_verdicts_host_id_fkey"),
                  nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("level", sa.Integer, nullable=False),
        sa.Column("host_level", sa.Integer, nullable=False),
        sa.Column("host_sequence", sa.BigInteger, nullable=True),
        sa.Column("registration_generation", sa.Integer, nullable=False),
        sa.Column("reasons", sa.Text, nullable=False),
        sa.Column("signed_result", sa.Text, nullable=True),
        sa.Column("issued_at", _timestamp(), nullable=False),
        sa.Column("expires_at", _timestamp(), nullable=False),
        sa.CheckConstraint("status IN ('trusted', 'untrusted', 'unknown')",
                           name="ck_instance_verdicts_status"),
        sa.CheckConstraint("level >= 0 AND host_level >= 0",
                           name="ck_instance_verdicts_level"),
        **_TABLE_ARGS)
    op.create_index("instance_verdicts_host_id_idx", "instance_verdicts",
                    ["host_id"])

