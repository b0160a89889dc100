"""Verdict sequence: a database-allocated order for verdicts.

Adds ``verdicts.sequence`` (the signed claim ``seq``; existing rows get
their id, which is the order they were stored in) and the one-row
``verdict_sequence`` table that hands out the next numbers.

Revision ID: 8c4e2b7d1a93
Revises: a7e3c91b5d20
Create Date: 2026-11-20 00:00:00
"""

from __future__ import annotations

from alembic import op
import sqlalchemy as sa

# revision identifiers, used by Alembic.
revision = "8c4e2b7d1a93"
down_revision = "a7e3c91b5d20"
branch_labels = None
depends_on = None

_TABLE_ARGS = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4"}


def upgrade() -> None:
    sequence_table = op.create_table(
        "verdict_sequence",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("last_value", sa.BigInteger, nullable=False),
        sa.CheckConstraint("last_value >= 0",
                           name="ck_verdict_sequence_last_value"),
        **_TABLE_ARGS)
    op.add_column("verdicts", sa.Column("sequence", sa.BigInteger,
                                        nullable=True))
    verdicts = sa.table("verdicts", sa.column("id", sa.BigInteger),
                        sa.column("sequence", sa.BigInteger))
    op.execute(verdicts.update().values(sequence=verdicts.c.id))
    op.execute(sequence_table.insert().from_select(
        ["id", "last_value"],
        sa.select(sa.literal(1), sa.func.coalesce(sa.func.max(
            verdicts.c.id), 0))))
    with op.batch_alter_table("verdicts") as batch:
        batch.alter_column("sequence", existing_type=sa.BigInteger,
                           nullable=False)
        batch.create_unique_constraint("uniq_verdicts0sequence",
                                       ["sequence"])
    op.create_index("verdicts_host_id_sequence_idx", "verdicts",
                    ["host_id", "sequence"])
