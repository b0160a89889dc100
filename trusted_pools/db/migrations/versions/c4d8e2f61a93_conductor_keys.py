"""Conductor public keys: each conductor stores the public half of its
result-signing key when it registers, so that trusted-pools-api can serve
every conductor's key as a JWKS (``GET /v1/keys``) and consumers never take
a key from the message bus.

* ``conductors.public_key``: SubjectPublicKeyInfo PEM (Ed25519 or P-256);
  NULL for a conductor that registered before this migration (it fills the
  column at its next start).
* ``conductors.key_id``: the key's RFC 7638 JWK thumbprint, the ``kid`` of
  every result it signs.

Revision ID: c4d8e2f61a93
Revises: 8c4e2b7d1a93
Create Date: 2026-11-27 00:00:00
"""

from __future__ import annotations

from alembic import op
import sqlalchemy as sa

# revision identifiers, used by Alembic.
revision = "c4d8e2f61a93"
down_revision = "8c4e2b7d1a93"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("conductors") as batch:
        batch.add_column(sa.Column("public_key", sa.Text, nullable=True))
        batch.add_column(sa.Column("key_id", sa.String(64), nullable=True))
