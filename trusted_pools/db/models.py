"""SQLAlchemy models of the attestation service's state.

The models describe the schema the latest migration creates; the migrations
(``trusted_pools/db/migrations``) are what actually builds the database, and a
functional test checks that both agree on every backend.

Conventions that matter to callers:

* Every timestamp is stored as naive UTC with microseconds (``DATETIME(6)`` on
  MySQL/MariaDB, whose plain ``DATETIME`` would drop them and break "verdicts
  since T" queries) and read back as a timezone-aware UTC ``datetime``.
* JSON columns are text holding canonical JSON (sorted keys), so the same
  content always gives the same bytes on every backend.
* MySQL/MariaDB tables are InnoDB with ``utf8mb4``: foreign keys and
  transactions are required.
"""

from __future__ import annotations

import datetime
import json
from typing import Any

import sqlalchemy as sa
from sqlalchemy import orm
from sqlalchemy.dialects import mysql

HOST_STATES = ("enrolling", "enrolled", "disabled")
VERDICT_STATUSES = ("trusted", "untrusted", "unknown")
POLICY_KINDS = ("measured_boot", "ima")
#: What an instance policy can be assigned to (the instance's wins).
INSTANCE_POLICY_TARGETS = ("image", "instance")

_TABLE_ARGS = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4"}


def _utc(value: datetime.datetime) -> datetime.datetime:
    """Naive values are taken as UTC; aware ones are converted to UTC."""
    if value.tzinfo is None:
        return value.replace(tzinfo=datetime.timezone.utc)
    return value.astimezone(datetime.timezone.utc)


class UTCDateTime(sa.types.TypeDecorator):
    """A UTC timestamp with microseconds on every backend."""

    impl = sa.DateTime
    cache_ok = True

    def load_dialect_impl(self, dialect: sa.engine.Dialect) -> Any:
        if dialect.name in ("mysql", "mariadb"):
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        return dialect.type_descriptor(sa.DateTime())

    def process_bind_param(self, value: datetime.datetime | None,
                           dialect: sa.engine.Dialect
                           ) -> datetime.datetime | None:
        if value is None:
            return None
        return _utc(value).replace(tzinfo=None)

    def process_result_value(self, value: datetime.datetime | None,
                             dialect: sa.engine.Dialect
                             ) -> datetime.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=datetime.timezone.utc)


class CanonicalJSON(sa.types.TypeDecorator):
    """JSON in a text column, serialized with sorted keys.

    ``long=True`` makes it ``LONGTEXT`` on MySQL/MariaDB, whose ``TEXT`` stops
    at 64 KiB: policy bodies (IMA allowlists) are far larger.
    """

    impl = sa.Text
    cache_ok = True

    def __init__(self, long: bool = False) -> None:
        super().__init__()
        self.long = long
        if long:
            self.impl = sa.Text().with_variant(mysql.LONGTEXT(), "mysql",
                                               "mariadb")

    def process_bind_param(self, value: Any, dialect: sa.engine.Dialect
                           ) -> str | None:
        if value is None:
            return None
        return json.dumps(value, sort_keys=True, separators=(",", ":"))

    def process_result_value(self, value: str | None,
                             dialect: sa.engine.Dialect) -> Any:
        if value is None:
            return None
        return json.loads(value)


class Base(orm.DeclarativeBase):
    """Declarative base; its metadata is what the migrations must match."""


class Host(Base):
    """A compute host known to the verifier."""

    __tablename__ = "hosts"
    __table_args__ = (
        sa.UniqueConstraint("uuid", name="uniq_hosts0uuid"),
        sa.UniqueConstraint("hostname", name="uniq_hosts0hostname"),
        sa.UniqueConstraint("approved_ek_sha256",
                            name="uniq_hosts0approved_ek_sha256"),
        sa.Index("hosts_host_group_idx", "host_group"),
        sa.CheckConstraint(
            "state IN ('enrolling', 'enrolled', 'disabled')",
            name="ck_hosts_state"),
        _TABLE_ARGS,
    )

    id: orm.Mapped[int] = orm.mapped_column(sa.Integer, primary_key=True,
                                            autoincrement=True)
    uuid: orm.Mapped[str] = orm.mapped_column(sa.String(36), nullable=False)
    hostname: orm.Mapped[str] = orm.mapped_column(sa.String(255),
                                                  nullable=False)
    host_group: orm.Mapped[str] = orm.mapped_column(sa.String(255),
                                                    nullable=False)
    state: orm.Mapped[str] = orm.mapped_column(sa.String(16), nullable=False)
    created_at: orm.Mapped[datetime.datetime] = orm.mapped_column(
        UTCDateTime(), nullable=False)
    updated_at: orm.Mapped[datetime.datetime | None] = orm.mapped_column(
        UTCDateTime(), nullable=True)
    # SHA-256 (hex) of the SubjectPublicKeyInfo DER of the EK the operator
    # approved for this host; NULL before the first enrollment and after
    # an operator's reset. Unique: one TPM, one host name.
    approved_ek_sha256: orm.Mapped[str | None] = orm.mapped_column(
        sa.String(64), nullable=True)
    # How many times the host was enrolled; verdicts record it so a clock
    # baseline never outlives the registration (the TPM) it came from.
    enrollment_generation: orm.Mapped[int] = orm.mapped_column(
        sa.Integer, nullable=False, server_default="0")


class Registration(Base):
    """The TPM identity bound to a host: one active row per host.

    The EK public key (``ek_public_sha256``) and the AK name are unique
    across hosts: one TPM claimed by two hostnames means one of them is
    impersonating the other. ``ek_cert_fingerprint`` (SHA-256 of the DER)
    is kept for operators but not unique: a certificate has more than one
    valid encoding.
    """

    __tablename__ = "registrations"
    __table_args__ = (
        sa.UniqueConstraint("ek_public_sha256",
                            name="uniq_registrations0ek_public_sha256"),
        sa.UniqueConstraint("ak_name_hex",
                            name="uniq_registrations0ak_name_hex"),
        _TABLE_ARGS,
    )

    host_id: orm.Mapped[int] = orm.mapped_column(
        sa.Integer, sa.ForeignKey("hosts.id", ondelete="CASCADE",
                                  name="registrations_host_id_fkey"),
        primary_key=True, autoincrement=False)
    ek_cert_fingerprint: orm.Mapped[str] = orm.mapped_column(
        sa.String(64), nullable=False)
    ek_certificate: orm.Mapped[bytes] = orm.mapped_column(
        sa.LargeBinary, nullable=False)
    ak_public: orm.Mapped[bytes] = orm.mapped_column(sa.LargeBinary,
                                                     nullable=False)
    ak_name: orm.Mapped[bytes] = orm.mapped_column(sa.LargeBinary,
                                                   nullable=False)
    ek_public_sha256: orm.Mapped[str] = orm.mapped_column(sa.String(64),
                                                          nullable=False)
    ak_name_hex: orm.Mapped[str] = orm.mapped_column(sa.String(132),
                                                     nullable=False)
    generation: orm.Mapped[int] = orm.mapped_column(
        sa.Integer, nullable=False, server_default="0")
    registered_at: orm.Mapped[datetime.datetime] = orm.mapped_column(
        UTCDateTime(), nullable=False)


class Policy(Base):
    """One immutable version of a named golden-measurement policy."""

    __tablename__ = "policies"
    __table_args__ = (
        sa.UniqueConstraint("name", "version",
                            name="uniq_policies0name0version"),
        sa.CheckConstraint("kind IN ('measured_boot', 'ima')",
                           name="ck_policies_kind"),
        sa.CheckConstraint("version >= 1", name="ck_policies_version"),
        _TABLE_ARGS,
    )

    id: orm.Mapped[int] = orm.mapped_column(sa.Integer, primary_key=True,
                                            autoincrement=True)
    name: orm.Mapped[str] = orm.mapped_column(sa.String(255), nullable=False)
    version: orm.Mapped[int] = orm.mapped_column(sa.Integer, nullable=False)
    kind: orm.Mapped[str] = orm.mapped_column(sa.String(32), nullable=False)
    body: orm.Mapped[dict] = orm.mapped_column(CanonicalJSON(long=True),
                                               nullable=False)
    created_at: orm.Mapped[datetime.datetime] = orm.mapped_column(
        UTCDateTime(), nullable=False)
    created_by: orm.Mapped[str] = orm.mapped_column(sa.String(255),
                                                    nullable=False)


class PolicyAssignment(Base):
    """Which policy a host group is held to; NULL version means latest."""

    __tablename__ = "policy_assignments"
    __table_args__ = (
        sa.CheckConstraint("policy_version IS NULL OR policy_version >= 1",
                           name="ck_policy_assignments_version"),
        _TABLE_ARGS,
    )

    host_group: orm.Mapped[str] = orm.mapped_column(sa.String(255),
                                                    primary_key=True)
    policy_name: orm.Mapped[str] = orm.mapped_column(sa.String(255),
                                                     primary_key=True)
    policy_version: orm.Mapped[int | None] = orm.mapped_column(
        sa.Integer, nullable=True)
    assigned_at: orm.Mapped[datetime.datetime] = orm.mapped_column(
        UTCDateTime(), nullable=False)


class Verdict(Base):
    """One appraisal of one host: the verdict history."""

    __tablename__ = "verdicts"
    __table_args__ = (
        sa.Index("verdicts_host_id_issued_at_idx", "host_id", "issued_at"),
        sa.Index("verdicts_issued_at_idx", "issued_at"),
        sa.Index("verdicts_host_id_sequence_idx", "host_id", "sequence"),
        sa.UniqueConstraint("sequence", name="uniq_verdicts0sequence"),
        sa.CheckConstraint(
            "status IN ('trusted', 'untrusted', 'unknown')",
            name="ck_verdicts_status"),
        sa.CheckConstraint("level >= 0", name="ck_verdicts_level"),
        _TABLE_ARGS,
    )

    id: orm.Mapped[int] = orm.mapped_column(sa.BigInteger().with_variant(
        sa.Integer, "sqlite"), primary_key=True, autoincrement=True)
    host_id: orm.Mapped[int] = orm.mapped_column(
        sa.Integer, sa.ForeignKey("hosts.id", ondelete="CASCADE",
                                  name="verdicts_host_id_fkey"),
        nullable=False)
    status: orm.Mapped[str] = orm.mapped_column(sa.String(16),
                                                nullable=False)
    level: orm.Mapped[int] = orm.mapped_column(sa.Integer, nullable=False)
    vector: orm.Mapped[dict] = orm.mapped_column(CanonicalJSON(),
                                                 nullable=False)
    reasons: orm.Mapped[list] = orm.mapped_column(CanonicalJSON(),
                                                  nullable=False)
    policy_versions: orm.Mapped[dict] = orm.mapped_column(CanonicalJSON(),
                                                          nullable=False)
    evidence_digest: orm.Mapped[str | None] = orm.mapped_column(
        sa.String(128), nullable=True)
    quote_clock: orm.Mapped[int | None] = orm.mapped_column(sa.BigInteger,
                                                            nullable=True)
    reset_count: orm.Mapped[int | None] = orm.mapped_column(sa.BigInteger,
                                                            nullable=True)
    restart_count: orm.Mapped[int | None] = orm.mapped_column(sa.BigInteger,
                                                              nullable=True)
    issued_at: orm.Mapped[datetime.datetime] = orm.mapped_column(
        UTCDateTime(), nullable=False)
    expires_at: orm.Mapped[datetime.datetime] = orm.mapped_column(
        UTCDateTime(), nullable=False)
    signed_result: orm.Mapped[str | None] = orm.mapped_column(sa.Text,
                                                              nullable=True)
    # The host's enrollment generation the verdict was made under.
    registration_generation: orm.Mapped[int | None] = orm.mapped_column(
        sa.Integer, nullable=True)
    #: The order of verdicts (claim ``seq`` of ``signed_result``), from
    #: :class:`VerdictSequence`: a greater one is a later verdict, whatever
    #: the conductors' clocks said in ``issued_at``.
    sequence: orm.Mapped[int] = orm.mapped_column(sa.BigInteger,
                                                  nullable=False)


class VerdictSequence(Base):
    """One row (id 1): the last verdict sequence number handed out.

    A writer increments it with ``UPDATE ... SET last_value = last_value +
    n`` in the transaction that stores its verdicts; the row lock (the
    database lock on SQLite) keeps the order of the numbers the order in
    which the verdicts were stored, across every conductor. Never reset:
    a host deleted and enrolled again still gets greater numbers than any
    verdict a consumer may hold for its name.
    """

    __tablename__ = "verdict_sequence"
    __table_args__ = (
        sa.CheckConstraint("last_value >= 0",
                           name="ck_verdict_sequence_last_value"),
        _TABLE_ARGS,
    )

    id: orm.Mapped[int] = orm.mapped_column(sa.Integer, primary_key=True,
                                            autoincrement=False)
    last_value: orm.Mapped[int] = orm.mapped_column(sa.BigInteger,
                                                    nullable=False)


class IMAState(Base):
    """Where the incremental IMA replay of a host stopped."""

    __tablename__ = "ima_state"
    __table_args__ = (_TABLE_ARGS,)

    host_id: orm.Mapped[int] = orm.mapped_column(
        sa.Integer, sa.ForeignKey("hosts.id", ondelete="CASCADE",
                                  name="ima_state_host_id_fkey"),
        primary_key=True, autoincrement=False)
    entries: orm.Mapped[int] = orm.mapped_column(sa.BigInteger,
                                                 nullable=False)
    pcr_values: orm.Mapped[dict] = orm.mapped_column(CanonicalJSON(),
                                                     nullable=False)
    reset_count: orm.Mapped[int] = orm.mapped_column(sa.BigInteger,
                                                     nullable=False)
    restart_count: orm.Mapped[int] = orm.mapped_column(sa.BigInteger,
                                                       nullable=False)
    updated_at: orm.Mapped[datetime.datetime] = orm.mapped_column(
        UTCDateTime(), nullable=False)


class Conductor(Base):
    """A conductor's heartbeat, for the hash ring over live conductors."""

    __tablename__ = "conductors"
    __table_args__ = (
        sa.UniqueConstraint("hostname", name="uniq_conductors0hostname"),
        _TABLE_ARGS,
    )

    id: orm.Mapped[int] = orm.mapped_column(sa.Integer, primary_key=True,
                                            autoincrement=True)
    hostname: orm.Mapped[str] = orm.mapped_column(sa.String(255),
                                                  nullable=False)
    online: orm.Mapped[bool] = orm.mapped_column(
        sa.Boolean(create_constraint=False), nullable=False)
    created_at: orm.Mapped[datetime.datetime] = orm.mapped_column(
        UTCDateTime(), nullable=False)
    updated_at: orm.Mapped[datetime.datetime] = orm.mapped_column(
        UTCDateTime(), nullable=False)
    # The public half of the conductor's result-signing key (PEM) and its
    # RFC 7638 thumbprint (the kid of its signed results), stored when it
    # registers: trusted-pools-api serves them as a JWKS.
    public_key: orm.Mapped[str | None] = orm.mapped_column(sa.Text,
                                                           nullable=True)
    key_id: orm.Mapped[str | None] = orm.mapped_column(sa.String(64),
                                                       nullable=True)


#: ``certify`` (the binding key), ``deep_attest`` and ``list_vtpms`` from
#: migration b3d9e7a14c60 on (issue 11).
OPERATION_KINDS = ("enroll", "attest", "capture", "certify", "deep_attest",
                   "list_vtpms")
OPERATION_STATES = ("pending", "done", "failed")


class HostOperation(Base):
    """A management operation on a host, run by its owning conductor off
    the RPC thread (``enroll``, ``attest``, ``capture``, ``certify``,
    ``deep_attest``, ``list_vtpms``): what the API
    polls. Keyed by host name, not id: an enrollment may create the host.

    ``lock`` is set while the operation is pending to a key that must be
    unique among pending operations (``enroll:<host>``: one enrollment of
    a host at a time) and cleared when it ends; NULLs do not collide, so
    the unique constraint works on every backend (MySQL has no partial
    indexes).
    """

    __tablename__ = "host_operations"
    __table_args__ = (
        sa.UniqueConstraint("lock", name="uniq_host_operations0lock"),
        sa.Index("host_operations_hostname_idx", "hostname"),
        sa.CheckConstraint("kind IN ('enroll', 'attest', 'capture', "
                           "'certify', 'deep_attest', 'list_vtpms')",
                           name="ck_host_operations_kind"),
        sa.CheckConstraint("state IN ('pending', 'done', 'failed')",
                           name="ck_host_operations_state"),
        _TABLE_ARGS,
    )

    id: orm.Mapped[str] = orm.mapped_column(sa.String(36), primary_key=True)
    hostname: orm.Mapped[str] = orm.mapped_column(sa.String(255),
                                                  nullable=False)
    kind: orm.Mapped[str] = orm.mapped_column(sa.String(16), nullable=False)
    state: orm.Mapped[str] = orm.mapped_column(sa.String(16), nullable=False)
    conductor: orm.Mapped[str] = orm.mapped_column(sa.String(255),
                                                   nullable=False)
    lock: orm.Mapped[str | None] = orm.mapped_column(sa.String(300),
                                                     nullable=True)
    request_id: orm.Mapped[str | None] = orm.mapped_column(sa.String(64),
                                                           nullable=True)
    requested_by: orm.Mapped[str | None] = orm.mapped_column(
        sa.String(255), nullable=True)
    # What the operation returned (done), e.g. captured policy bodies.
    result: orm.Mapped[dict | None] = orm.mapped_column(
        CanonicalJSON(long=True), nullable=True)
    # Why it failed: the trusted_pools.exception class name, its message
    # and its keyword arguments (so a caller can raise the same error).
    error_type: orm.Mapped[str | None] = orm.mapped_column(sa.String(255),
                                                           nullable=True)
    error: orm.Mapped[dict | None] = orm.mapped_column(CanonicalJSON(),
                                                       nullable=True)
    created_at: orm.Mapped[datetime.datetime] = orm.mapped_column(
        UTCDateTime(), nullable=False)
    updated_at: orm.Mapped[datetime.datetime | None] = orm.mapped_column(
        UTCDateTime(), nullable=True)


class HostBindingKey(Base):
    """A host's binding key (decrypt-only, TPM-resident), as its enrolled
    AK certified it and the conductor checked: secrets released to the
    host are wrapped to it. ``generation`` is the host's enrollment
    generation the certifying AK belonged to; a key of another generation
    is never used (re-certified after every enrollment)."""

    __tablename__ = "host_binding_keys"
    __table_args__ = (_TABLE_ARGS,)

    host_id: orm.Mapped[int] = orm.mapped_column(
        sa.Integer, sa.ForeignKey("hosts.id", ondelete="CASCADE",
                                  name="host_binding_keys_host_id_fkey"),
        primary_key=True, autoincrement=False)
    generation: orm.Mapped[int] = orm.mapped_column(sa.Integer,
                                                    nullable=False)
    public: orm.Mapped[bytes] = orm.mapped_column(sa.LargeBinary,
                                                  nullable=False)
    name_hex: orm.Mapped[str] = orm.mapped_column(sa.String(132),
                                                  nullable=False)
    certified_at: orm.Mapped[datetime.datetime] = orm.mapped_column(
        UTCDateTime(), nullable=False)


class Secret(Base):
    """A secret of the key service (a Nova vTPM passphrase), encrypted at
    rest under the conductors' key-encryption key (AES-256-GCM; the row's
    id and project are its associated data)."""

    __tablename__ = "secrets"
    __table_args__ = (
        sa.Index("secrets_project_id_idx", "project_id"),
        sa.CheckConstraint("min_level IS NULL OR "
                           "(min_level >= 1 AND min_level <= 4)",
                           name="ck_secrets_min_level"),
        _TABLE_ARGS,
    )

    id: orm.Mapped[str] = orm.mapped_column(sa.String(36), primary_key=True)
    project_id: orm.Mapped[str] = orm.mapped_column(sa.String(255),
                                                    nullable=False)
    owner: orm.Mapped[str | None] = orm.mapped_column(sa.String(255),
                                                      nullable=True)
    name: orm.Mapped[str | None] = orm.mapped_column(sa.String(255),
                                                     nullable=True)
    secret_type: orm.Mapped[str] = orm.mapped_column(sa.String(32),
                                                     nullable=False)
    algorithm: orm.Mapped[str | None] = orm.mapped_column(sa.String(32),
                                                          nullable=True)
    bit_length: orm.Mapped[int | None] = orm.mapped_column(sa.Integer,
                                                           nullable=True)
    min_level: orm.Mapped[int | None] = orm.mapped_column(sa.Integer,
                                                          nullable=True)
    kek_id: orm.Mapped[str] = orm.mapped_column(sa.String(64),
                                                nullable=False)
    ciphertext: orm.Mapped[bytes] = orm.mapped_column(sa.LargeBinary,
                                                      nullable=False)
    created_at: orm.Mapped[datetime.datetime] = orm.mapped_column(
        UTCDateTime(), nullable=False)


VTPM_MIGRATION_KINDS = ("cold", "live")
VTPM_MIGRATION_STEPS = ("requested", "attested", "key_certified",
                        "exported", "delivered", "imported", "committed",
                        "completed", "aborted")


class VTPMMigration(Base):
    """One move of an instance's vTPM between two hosts (issue 12): the
    conductor's state machine, the source of truth after any crash.

    ``lock`` is ``vtpm:<instance>`` while the migration is active and NULL
    once it ended (completed or aborted): the unique constraint allows one
    active migration per instance on every backend. ``epoch`` is the
    instance's epoch the migration commits (the last committed one + 1);
    a copy of the vTPM with a smaller epoch is stale. ``salt`` makes the
    transport-key nonce (random, not secret). ``transport_key`` is the
    destination's certified TPMT_PUBLIC (public, kept for the operator and
    a resumed migration). ``conductor`` drives it; another conductor takes
    it over when that one's heartbeat stops.
    """

    __tablename__ = "vtpm_migrations"
    __table_args__ = (
        sa.UniqueConstraint("lock", name="uniq_vtpm_migrations0lock"),
        sa.Index("vtpm_migrations_instance_idx", "instance"),
        sa.Index("vtpm_migrations_step_idx", "step"),
        sa.CheckConstraint("kind IN ('cold', 'live')",
                           name="ck_vtpm_migrations_kind"),
        sa.CheckConstraint(
            "step IN ('requested', 'attested', 'key_certified', "
            "'exported', 'delivered', 'imported', 'committed', "
            "'completed', 'aborted')", name="ck_vtpm_migrations_step"),
        _TABLE_ARGS,
    )

    id: orm.Mapped[str] = orm.mapped_column(sa.String(36), primary_key=True)
    instance: orm.Mapped[str] = orm.mapped_column(sa.String(36),
                                                  nullable=False)
    source: orm.Mapped[str] = orm.mapped_column(sa.String(255),
                                                nullable=False)
    destination: orm.Mapped[str] = orm.mapped_column(sa.String(255),
                                                     nullable=False)
    kind: orm.Mapped[str] = orm.mapped_column(sa.String(8), nullable=False)
    step: orm.Mapped[str] = orm.mapped_column(sa.String(16), nullable=False)
    epoch: orm.Mapped[int] = orm.mapped_column(sa.Integer, nullable=False)
    min_level: orm.Mapped[int | None] = orm.mapped_column(sa.Integer,
                                                          nullable=True)
    conductor: orm.Mapped[str] = orm.mapped_column(sa.String(255),
                                                   nullable=False)
    lock: orm.Mapped[str | None] = orm.mapped_column(sa.String(300),
                                                     nullable=True)
    salt: orm.Mapped[bytes] = orm.mapped_column(sa.LargeBinary,
                                                nullable=False)
    transport_key: orm.Mapped[bytes | None] = orm.mapped_column(
        sa.LargeBinary, nullable=True)
    outcome: orm.Mapped[str | None] = orm.mapped_column(sa.String(16),
                                                        nullable=True)
    reason: orm.Mapped[str | None] = orm.mapped_column(sa.Text,
                                                       nullable=True)
    request_id: orm.Mapped[str | None] = orm.mapped_column(sa.String(64),
                                                           nullable=True)
    requested_by: orm.Mapped[str | None] = orm.mapped_column(
        sa.String(255), nullable=True)
    created_at: orm.Mapped[datetime.datetime] = orm.mapped_column(
        UTCDateTime(), nullable=False)
    updated_at: orm.Mapped[datetime.datetime] = orm.mapped_column(
        UTCDateTime(), nullable=False)
    committed_at: orm.Mapped[datetime.datetime | None] = orm.mapped_column(
        UTCDateTime(), nullable=True)
    finished_at: orm.Mapped[datetime.datetime | None] = orm.mapped_column(
        UTCDateTime(), nullable=True)


class InstanceVerdict(Base):
    """The latest deep-attestation verdict of an instance (one row per
    instance, replaced by each attestation of it).

    The verdict leans on its host's: ``registration_generation`` is the
    host's enrollment it was made under and ``host_sequence`` the sequence
    of the host verdict it relied on. A reader judges it again against the
    host's verdicts since (:meth:`trusted_pools.db.api.Connection.
    instance_verdict`): once the host's enrollment moved on or the host had
    a verdict other than trusted after ``host_sequence``, it no longer
    reads as trusted.
    """

    __tablename__ = "instance_verdicts"
    __table_args__ = (
        sa.Index("instance_verdicts_host_id_idx", "host_id"),
        sa.CheckConstraint(
            "status IN ('trusted', 'untrusted', 'unknown')",
            name="ck_instance_verdicts_status"),
        sa.CheckConstraint("level >= 0 AND host_level >= 0",
                           name="ck_instance_verdicts_level"),
        _TABLE_ARGS,
    )

    instance: orm.Mapped[str] = orm.mapped_column(sa.String(36),
                                                  primary_key=True)
    host_id: orm.Mapped[int] = orm.mapped_column(
        sa.Integer, sa.ForeignKey("hosts.id", ondelete="CASCADE",
                                  name="instance_verdicts_host_id_fkey"),
        nullable=False)
    status: orm.Mapped[str] = orm.mapped_column(sa.String(16),
                                                nullable=False)
    level: orm.Mapped[int] = orm.mapped_column(sa.Integer, nullable=False)
    host_level: orm.Mapped[int] = orm.mapped_column(sa.Integer,
                                                    nullable=False)
    host_sequence: orm.Mapped[int | None] = orm.mapped_column(
        sa.BigInteger, nullable=True)
    registration_generation: orm.Mapped[int] = orm.mapped_column(
        sa.Integer, nullable=False)
    reasons: orm.Mapped[list] = orm.mapped_column(CanonicalJSON(),
                                                  nullable=False)
    signed_result: orm.Mapped[str | None] = orm.mapped_column(sa.Text,
                                                              nullable=True)
    issued_at: orm.Mapped[datetime.datetime] = orm.mapped_column(
        UTCDateTime(), nullable=False)
    expires_at: orm.Mapped[datetime.datetime] = orm.mapped_column(
        UTCDateTime(), nullable=False)
    #: The vTPM PCR values this verdict verified (bank name -> PCR ->
    #: hex): what an instance policy is captured from. NULL for verdicts
    #: stored before instance policies existed.
    pcrs: orm.Mapped[dict | None] = orm.mapped_column(CanonicalJSON(),
                                                      nullable=True)


class InstanceChallenge(Base):
    """A nonce a conductor issued to an instance's guest for deep
    attestation (issue 11): kept here, not in the conductor's memory, so a
    restart does not forget which nonces were spent (a replayed quote is
    still refused) and a challenge issued by one conductor can be
    completed on another.

    The nonce is known by its SHA-256 (it is public once issued; the
    digest keeps the key fixed-size). ``host`` is the instance's host if
    the caller named it (then only that host's batch may spend it).
    ``used_at`` is set once, by the batch that spends it; a spent row is
    kept until ``expires_at`` so that a replay is named as one, then
    deleted.
    """

    __tablename__ = "instance_challenges"
    __table_args__ = (
        sa.Index("instance_challenges_expires_at_idx", "expires_at"),
        _TABLE_ARGS,
    )

    nonce_sha256: orm.Mapped[str] = orm.mapped_column(sa.String(64),
                                                      primary_key=True)
    instance: orm.Mapped[str] = orm.mapped_column(sa.String(36),
                                                  nullable=False)
    host: orm.Mapped[str | None] = orm.mapped_column(sa.String(255),
                                                     nullable=True)
    conductor: orm.Mapped[str] = orm.mapped_column(sa.String(255),
                                                   nullable=False)
    issued_at: orm.Mapped[datetime.datetime] = orm.mapped_column(
        UTCDateTime(), nullable=False)
    expires_at: orm.Mapped[datetime.datetime] = orm.mapped_column(
        UTCDateTime(), nullable=False)
    used_at: orm.Mapped[datetime.datetime | None] = orm.mapped_column(
        UTCDateTime(), nullable=True)
    #: The instance's image as the trusted caller (the API user or Nova
    #: asking for the challenge) named it; picks the image's instance
    #: policy. Never taken from the host or the guest.
    image: orm.Mapped[str | None] = orm.mapped_column(sa.String(36),
                                                      nullable=True)


KEY_RELEASE_OUTCOMES = ("released", "refused")


class KeyRelease(Base):
    """One answer of the key service: a vTPM secret released to a host or
    refused to it, with the standing the host was judged by and why.

    Never the key: only the secret's id, owner (instance) and project.
    ``secret_id`` is not a foreign key: the record outlives a deleted
    secret (an audit trail). ``requested_by`` and ``request_id`` say who
    asked (the API's service user and request), since the ``host`` is the
    name the request gave. Deleted by age with ``trusted-pools-manage db
    purge-key-releases``.
    """

    __tablename__ = "key_releases"
    __table_args__ = (
        sa.Index("key_releases_created_at_idx", "created_at"),
        sa.Index("key_releases_host_idx", "host"),
        sa.CheckConstraint("outcome IN ('released', 'refused')",
                           name="ck_key_releases_outcome"),
        _TABLE_ARGS,
    )

    id: orm.Mapped[int] = orm.mapped_column(sa.BigInteger().with_variant(
        sa.Integer, "sqlite"), primary_key=True, autoincrement=True)
    secret_id: orm.Mapped[str] = orm.mapped_column(sa.String(36),
                                                   nullable=False)
    project_id: orm.Mapped[str] = orm.mapped_column(sa.String(255),
                                                    nullable=False)
    owner: orm.Mapped[str | None] = orm.mapped_column(sa.String(255),
                                                      nullable=True)
    host: orm.Mapped[str] = orm.mapped_column(sa.String(255),
                                              nullable=False)
    outcome: orm.Mapped[str] = orm.mapped_column(sa.String(16),
                                                 nullable=False)
    status: orm.Mapped[str] = orm.mapped_column(sa.String(16),
                                                nullable=False)
    level: orm.Mapped[int] = orm.mapped_column(sa.Integer, nullable=False)
    min_level: orm.Mapped[int | None] = orm.mapped_column(sa.Integer,
                                                          nullable=True)
    reason_code: orm.Mapped[str] = orm.mapped_column(sa.String(32),
                                                     nullable=False)
    reason: orm.Mapped[str] = orm.mapped_column(sa.Text, nullable=False)
    conductor: orm.Mapped[str] = orm.mapped_column(sa.String(255),
                                                   nullable=False)
    requested_by: orm.Mapped[str | None] = orm.mapped_column(
        sa.String(255), nullable=True)
    request_id: orm.Mapped[str | None] = orm.mapped_column(sa.String(64),
                                                           nullable=True)
    created_at: orm.Mapped[datetime.datetime] = orm.mapped_column(
        UTCDateTime(), nullable=False)


DISTRUST_OUTCOMES = ("done", "skipped", "failed")


class DistrustAction(Base):
    """One action taken on a host that stopped being trusted, as
    trusted-pools-placement-sync (beside Nova) reported it through the API
    (``POST /v1/distrust-actions``): what it says it did, with the
    Keystone user that said so (``reported_by``). A report, not evidence:
    nothing here changes a verdict. ``items`` is the canonical JSON list
    of ``[what, result]`` pairs (service ids, server ids).
    """

    __tablename__ = "distrust_actions"
    __table_args__ = (
        sa.Index("distrust_actions_created_at_idx", "created_at"),
        sa.Index("distrust_actions_host_idx", "host"),
        sa.CheckConstraint("outcome IN ('done', 'skipped', 'failed')",
                           name="ck_distrust_actions_outcome"),
        _TABLE_ARGS,
    )

    id: orm.Mapped[int] = orm.mapped_column(sa.BigInteger().with_variant(
        sa.Integer, "sqlite"), primary_key=True, autoincrement=True)
    host: orm.Mapped[str] = orm.mapped_column(sa.String(255),
                                              nullable=False)
    action: orm.Mapped[str] = orm.mapped_column(sa.String(64),
                                                nullable=False)
    outcome: orm.Mapped[str] = orm.mapped_column(sa.String(16),
                                                 nullable=False)
    detail: orm.Mapped[str] = orm.mapped_column(sa.Text, nullable=False)
    items: orm.Mapped[list] = orm.mapped_column(CanonicalJSON(),
                                                nullable=False)
    verdict: orm.Mapped[str | None] = orm.mapped_column(sa.String(64),
                                                        nullable=True)
    status: orm.Mapped[str | None] = orm.mapped_column(sa.String(16),
                                                       nullable=True)
    reported_by: orm.Mapped[str] = orm.mapped_column(sa.String(255),
                                                     nullable=False)
    request_id: orm.Mapped[str | None] = orm.mapped_column(sa.String(64),
                                                           nullable=True)
    created_at: orm.Mapped[datetime.datetime] = orm.mapped_column(
        UTCDateTime(), nullable=False)


class InstancePolicy(Base):
    """One immutable version of a named instance policy: the vTPM PCR
    values a guest must quote (``pcrs``: bank name -> PCR -> allowed hex
    values) and the level a match stands for (2 or 3)."""

    __tablename__ = "instance_policies"
    __table_args__ = (
        sa.UniqueConstraint("name", "version",
                            name="uniq_instance_policies0name0version"),
        sa.CheckConstraint("version >= 1",
                           name="ck_instance_policies_version"),
        sa.CheckConstraint("level IN (2, 3)",
                           name="ck_instance_policies_level"),
        _TABLE_ARGS,
    )

    id: orm.Mapped[int] = orm.mapped_column(sa.Integer, primary_key=True,
                                            autoincrement=True)
    name: orm.Mapped[str] = orm.mapped_column(sa.String(255), nullable=False)
    version: orm.Mapped[int] = orm.mapped_column(sa.Integer, nullable=False)
    level: orm.Mapped[int] = orm.mapped_column(sa.Integer, nullable=False)
    pcrs: orm.Mapped[dict] = orm.mapped_column(CanonicalJSON(),
                                               nullable=False)
    created_at: orm.Mapped[datetime.datetime] = orm.mapped_column(
        UTCDateTime(), nullable=False)
    created_by: orm.Mapped[str] = orm.mapped_column(sa.String(255),
                                                    nullable=False)


class InstancePolicyAssignment(Base):
    """Which instance policy an image or an instance is held to; NULL
    version means latest. An instance's own assignment wins over its
    image's."""

    __tablename__ = "instance_policy_assignments"
    __table_args__ = (
        sa.Index("instance_policy_assignments_policy_name_idx",
                 "policy_name"),
        sa.CheckConstraint("target_kind IN ('image', 'instance')",
                           name="ck_instance_policy_assignments_kind"),
        sa.CheckConstraint(
            "policy_version IS NULL OR policy_version >= 1",
            name="ck_instance_policy_assignments_version"),
        _TABLE_ARGS,
    )

    target_kind: orm.Mapped[str] = orm.mapped_column(sa.String(16),
                                                     primary_key=True)
    target_id: orm.Mapped[str] = orm.mapped_column(sa.String(36),
                                                   primary_key=True)
    policy_name: orm.Mapped[str] = orm.mapped_column(sa.String(255),
                                                     nullable=False)
    policy_version: orm.Mapped[int | None] = orm.mapped_column(
        sa.Integer, nullable=True)
    assigned_at: orm.Mapped[datetime.datetime] = orm.mapped_column(
        UTCDateTime(), nullable=False)
