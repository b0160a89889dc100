"""EK binding: operator-approved EK per host, uniqueness of the EK public
key and of the AK name across hosts, and a registration generation that
scopes the TPM clock baseline.

* ``hosts.approved_ek_sha256``: SHA-256 (hex) of the SubjectPublicKeyInfo
  DER of the EK the operator approved for the host; unique (one TPM, one
  host name). NULL until the first enrollment, and again after an
  operator's ``host reset-enrollment``.
* ``hosts.enrollment_generation``: counts the host's enrollments; each
  verdict records the generation it was made under
  (``verdicts.registration_generation``) so a conductor never takes a
  clock baseline from a verdict of an earlier registration (another TPM).
* ``registrations.ek_public_sha256`` and ``registrations.ak_name_hex``:
  unique. Uniqueness moves off ``ek_cert_fingerprint`` (the certificate's
  DER has more than one valid encoding, e.g. an ECDSA signature (r, n-s)).

Existing registrations get their EK hash and AK name filled in from the
stored certificate and AK name, and their host's approval from the EK
they were enrolled with.

Revision ID: a7e3c91b5d20
Revises: 5f1c0d9e2a71
Create Date: 2026-11-20 00:00:00
"""

from __future__ import annotations

import hashlib

from alembic import op
import sqlalchemy as sa

# revision identifiers, used by Alembic.
revision = "a7e3c91b5d20"
down_revision = "5f1c0d9e2a71"
branch_labels = None
depends_on = None


def _ek_public_sha256(certificate_der: bytes) -> str:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    key = x509.load_der_x509_certificate(certificate_der).public_key()
    return hashlib.sha256(key.public_bytes(
        serialization.Encoding.DER,
        serialization.PublicFormat.SubjectPublicKeyInfo)).hexdigest()


def upgrade() -> None:
    with op.batch_alter_table("hosts") as batch:
        batch.add_column(sa.Column("approved_ek_sha256", sa.String(64),
                                   nullable=True))
        batch.add_column(sa.Column("enrollment_generation", sa.Integer,
                                   nullable=False, server_default="0"))
    with op.batch_alter_table("registrations") as batch:
        batch.add_column(sa.Column("ek_public_sha256", sa.String(64),
                                   nullable=True))
        batch.add_column(sa.Column("ak_name_hex", sa.String(132),
                                   nullable=True))
        batch.add_column(sa.Column("generation", sa.Integer, nullable=False,
                                   server_default="0"))
    with op.batch_alter_table("verdicts") as batch:
        batch.add_column(sa.Column("registration_generation", sa.Integer,
                                   nullable=True))

    connection = op.get_bind()
    registrations = sa.table(
        "registrations", sa.column("host_id", sa.Integer),
        sa.column("ek_certificate", sa.LargeBinary),
        sa.column("ak_name", sa.LargeBinary),
        sa.column("ek_public_sha256", sa.String),
        sa.column("ak_name_hex", sa.String))
    hosts = sa.table("hosts", sa.column("id", sa.Integer),
                     sa.column("approved_ek_sha256", sa.String))
    for row in connection.execute(sa.select(
            registrations.c.host_id, registrations.c.ek_certificate,
            registrations.c.ak_name)).fetchall():
        ek_hash = _ek_public_sha256(bytes(row.ek_certificate))
        connection.execute(registrations.update().where(
            registrations.c.host_id == row.host_id).values(
            ek_public_sha256=ek_hash, ak_name_hex=bytes(row.ak_name).hex()))
        connection.execute(hosts.update().where(
            hosts.c.id == row.host_id).values(approved_ek_sha256=ek_hash))

    with op.batch_alter_table("registrations") as batch:
        batch.alter_column("ek_public_sha256", existing_type=sa.String(64),
                           nullable=False)
        batch.alter_column("ak_name_hex", existing_type=sa.String(132),
                           nullable=False)
        batch.drop_constraint("uniq_registrations0ek_cert_fingerprint",
                              type_="unique")
        batch.create_unique_constraint(
            "uniq_registrations0ek_public_sha256", ["ek_public_sha256"])
        batch.create_unique_constraint(
            "uniq_registrations0ak_name_hex", ["ak_name_hex"])
    with op.batch_alter_table("hosts") as batch:
        batch.create_unique_constraint(
            "uniq_hosts0approved_ek_sha256", ["approved_ek_sha256"])

