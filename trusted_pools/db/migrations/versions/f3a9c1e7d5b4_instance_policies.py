"""Deep attestation: instance policies (golden guest measurements).

* ``instance_policies``: immutable versions of named instance policies
  (expected vTPM PCR values per bank, and the level a match stands for).
* ``instance_policy_assignments``: which policy an image or an instance
  is held to (an instance's assignment wins over its image's); a NULL
  version follows the policy's latest version.
* ``instance_challenges.image``: the image the trusted caller (the API
  user or Nova asking for the challenge) named for the instance; never
  taken from the host or the guest.
* ``instance_verdicts.pcrs``: the vTPM PCR values the verdict verified
  (what an instance policy is captured from).

Revision ID: f3a9c1e7d5b4
Revises: d2f4a8c6e195
Create Date: 2026-12-03 19:40:00
"""

from __future__ import annotations

from alembic import op
import sqlalchemy as sa

from sqlalchemy.dialects import mysql

# revision identifiers, used by Alembic.
revision = "f3a9c1e7d5b4"
down_revision = "d2f4a8c6e195"
branch_labels = None
depends_on = None


def _timestamp() -> sa.types.TypeEngine:
    """Naive UTC with microseconds (DATETIME(6) on MySQL/MariaDB)."""
    return sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql",
                                      "mariadb")


_TABLE_ARGS = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4"}


def upgrade() -> None:
    op.create_table(
        "instance_policies",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("level", sa.Integer, nullable=False),
        sa.Column("pcrs", sa.Text, nullable=False),
        sa.Column("created_at", _timestamp(), nullable=False),
        sa.Column("created_by", sa.String(255), nullable=False),
        sa.UniqueConstraint("name", "version",
                            name="uniq_instance_policies0name0version"),
        sa.CheckConstraint("version >= 1",
                           name="ck_instance_policies_version"),
        sa.CheckConstraint("level IN (2, 3)",
                           name="ck_instance_policies_level"),
        **_TABLE_ARGS)
    op.create_table(
        "instance_policy_assignments",
        sa.Column("target_kind", sa.String(16), primary_key=True),
        sa.Column("target_id", sa.String(36), primary_key=True),
        sa.Column("policy_name", sa.String(255), nullable=False),
        sa.Column("policy_version", sa.Integer, nullable=True),
        sa.Column("assigned_at", _timestamp(), nullable=False),
        sa.CheckConstraint("target_kind IN ('image', 'instance')",
                           name="ck_instance_policy_assignments_kind"),
        sa.CheckConstraint(
            "policy_version IS NULL OR policy_version >= 1",
            name="ck_instance_policy_assignments_version"),
        **_TABLE_ARGS)
    op.create_index("instance_policy_assignments_policy_name_idx",
                    "instance_policy_assignments", ["policy_name"])
    with op.batch_alter_table("instance_challenges") as batch:
        batch.add_column(sa.Column("image", sa.String(36), nullable=True))
    with op.batch_alter_table("instance_verdicts") as batch:
        batch.add_column(sa.Column("pcrs", sa.Text, nullable=True))
