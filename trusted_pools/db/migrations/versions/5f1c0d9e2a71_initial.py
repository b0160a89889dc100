"""Initial schema: hosts, registrations, policies, verdicts, IMA state,
conductors.

Revision ID: 5f1c0d9e2a71
Revises:
Create Date: 2026-11-01 00:00:00
"""

from __future__ import annotations

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import mysql

# revision identifiers, used by Alembic.
revision = "5f1c0d9e2a71"
down_revision = None
branch_labels = None
depends_on = None

# Frozen copies of the column types of this revision: a migration must not
# change when the models do later.
_TABLE_ARGS = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4"}


def _timestamp() -> sa.types.TypeEngine:
    return sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql",
                                      "mariadb")


def _json() -> sa.types.TypeEngine:
    return sa.Text()


def _long_json() -> sa.types.TypeEngine:
    return sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")


def upgrade() -> None:
    op.create_table(
        "hosts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("uuid", sa.String(36), nullable=False),
        sa.Column("hostname", sa.String(255), nullable=False),
        sa.Column("host_group", sa.String(255), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("created_at", _timestamp(), nullable=False),
        sa.Column("updated_at", _timestamp(), nullable=True),
        sa.UniqueConstraint("uuid", name="uniq_hosts0uuid"),
        sa.UniqueConstraint("hostname", name="uniq_hosts0hostname"),
        sa.CheckConstraint("state IN ('enrolling', 'enrolled', 'disabled')",
                           name="ck_hosts_state"),
        **_TABLE_ARGS)
    op.create_index("hosts_host_group_idx", "hosts", ["host_group"])

    op.create_table(
        "registrations",
        sa.Column("host_id", sa.Integer,
                  sa.ForeignKey("hosts.id", ondelete="CASCADE",
                                name="registrations_host_id_fkey"),
                  primary_key=True, autoincrement=False),
        sa.Column("ek_cert_fingerprint", sa.String(64), nullable=False),
        sa.Column("ek_certificate", sa.LargeBinary, nullable=False),
        sa.Column("ak_public", sa.LargeBinary, nullable=False),
        sa.Column("ak_name", sa.LargeBinary, nullable=False),
        sa.Column("registered_at", _timestamp(), nullable=False),
        sa.UniqueConstraint("ek_cert_fingerprint",
                            name="uniq_registrations0ek_cert_fingerprint"),
        **_TABLE_ARGS)

    op.create_table(
        "policies",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("body", _long_json(), nullable=False),
        sa.Column("created_at", _timestamp(), nullable=False),
        sa.Column("created_by", sa.String(255), nullable=False),
        sa.UniqueConstraint("name", "version",
                            name="uniq_policies0name0version"),
        sa.CheckConstraint("kind IN ('measured_boot', 'ima')",
                           name="ck_policies_kind"),
        sa.CheckConstraint("version >= 1", name="ck_policies_version"),
        **_TABLE_ARGS)

    op.create_table(
        "policy_assignments",
        sa.Column("host_group", sa.String(255), primary_key=True),
        sa.Column("policy_name", sa.String(255), primary_key=True),
        sa.Column("policy_version", sa.Integer, nullable=True),
        sa.Column("assigned_at", _timestamp(), nullable=False),
        sa.CheckConstraint("policy_version IS NULL OR policy_version >= 1",
                           name="ck_policy_assignments_version"),
        **_TABLE_ARGS)

    op.create_table(
        "verdicts",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"),
                  primary_key=True, autoincrement=True),
        sa.Column("host_id", sa.Integer,
                  sa.ForeignKey("hosts.id", ondelete="CASCADE",
                                name="verdicts_host_id_fkey"),
                  nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("level", sa.Integer, nullable=False),
        sa.Column("vector", _json(), nullable=False),
        sa.Column("reasons", _json(), nullable=False),
        sa.Column("policy_versions", _json(), nullable=False),
        sa.Column("evidence_digest", sa.String(128), nullable=True),
        sa.Column("quote_clock", sa.BigInteger, nullable=True),
        sa.Column("reset_count", sa.BigInteger, nullable=True),
        sa.Column("restart_count", sa.BigInteger, nullable=True),
        sa.Column("issued_at", _timestamp(), nullable=False),
        sa.Column("expires_at", _timestamp(), nullable=False),
        sa.Column("signed_result", sa.Text, nullable=True),
        sa.CheckConstraint("status IN ('trusted', 'untrusted', 'unknown')",
                           name="ck_verdicts_status"),
        sa.CheckConstraint("level >= 0", name="ck_verdicts_level"),
        **_TABLE_ARGS)
    op.create_index("verdicts_host_id_issued_at_idx", "verdicts",
                    ["host_id", "issued_at"])
    op.create_index("verdicts_issued_at_idx", "verdicts", ["issued_at"])

    op.create_table(
        "ima_state",
        sa.Column("host_id", sa.Integer,
                  sa.ForeignKey("hosts.id", ondelete="CASCADE",
                                name="ima_state_host_id_fkey"),
                  primary_key=True, autoincrement=False),
        sa.Column("entries", sa.BigInteger, nullable=False),
        sa.Column("pcr_values", _json(), nullable=False),
        sa.Column("reset_count", sa.BigInteger, nullable=False),
        sa.Column("restart_count", sa.BigInteger, nullable=False),
        sa.Column("updated_at", _timestamp(), nullable=False),
        **_TABLE_ARGS)

    op.create_table(
        "conductors",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("hostname", sa.String(255), nullable=False),
        sa.Column("online", sa.Boolean(create_constraint=False),
                  nullable=False),
        sa.Column("created_at", _timestamp(), nullable=False),
        sa.Column("updated_at", _timestamp(), nullable=False),
        sa.UniqueConstraint("hostname", name="uniq_conductors0hostname"),
        **_TABLE_ARGS)
