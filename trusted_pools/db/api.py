"""The database API the services call.

Everything the conductor persists goes through :class:`Connection`; services
get the process-wide one with :func:`get_instance`, configured from
``[database]`` in trusted-pools.conf. Tests and tools build their own with
:func:`make_context_manager`.

Contract:

* Each method is one short transaction (oslo.db enginefacade ``writer`` or
  ``reader``) and returns plain frozen records, never ORM objects, so nothing
  lazy-loads outside its transaction.
* Errors are the project's: :class:`~trusted_pools.exception.NotFound` and
  :class:`~trusted_pools.exception.Conflict` subclasses for state problems,
  :class:`~trusted_pools.exception.InvalidParameterValue` for bad arguments,
  :class:`~trusted_pools.exception.DatabaseUnavailable` when the server is
  away. Deadlocks are retried here before they surface.
* Timestamps are timezone-aware UTC ``datetime`` objects; naive ones given
  by callers are taken as UTC.
* On SQLite, writers take the write lock when they begin (``BEGIN
  IMMEDIATE``, WAL journal) so that two writers queue instead of failing
  with "database is locked" half-way.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import functools
import hashlib
import re
import threading
import uuid as uuid_lib
from typing import (Any, Callable, Iterable, Iterator, Mapping,
                    Sequence, TypeVar)

from oslo_db import api as oslo_db_api
from oslo_db import exception as db_exc
from oslo_db.sqlalchemy import enginefacade
import sqlalchemy as sa
from sqlalchemy import orm

from trusted_pools import exception
from trusted_pools.db import models

__all__ = [
    "BindingKeyRecord", "Connection", "ConductorRecord", "Host",
    "HostOperation", "IMAState", "InstanceChallengeRecord",
    "InstanceStanding",
    "InstanceVerdictRecord", "NewVerdict", "Policy", "PolicyAssignment",
    "Registration", "SecretRecord", "SignFunction", "Verdict",
    "UNCONDITIONAL", "VTPMMigrationRecord", "get_instance",
    "make_context_manager",
]

Clock = Callable[[], datetime.datetime]
_F = TypeVar("_F", bound=Callable[..., Any])

_SQLITE_IMMEDIATE = "trusted_pools_sqlite_immediate"

#: ``save_ima_state(state)`` without ``expected``: write whatever is stored.
UNCONDITIONAL = object()
# Rows per INSERT round trip in add_verdicts: large enough to amortize the
# statement, small enough for MySQL's max_allowed_packet with JWS payloads.
_VERDICT_CHUNK = 1000


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _as_utc(value: datetime.datetime, name: str) -> datetime.datetime:
    if not isinstance(value, datetime.datetime):
        raise exception.InvalidParameterValue(
            name=name, reason="must be a datetime, not %s"
            % type(value).__name__)
    return models._utc(value)


def _choice(value: str, choices: Sequence[str], name: str) -> str:
    if value not in choices:
        raise exception.InvalidParameterValue(
            name=name, reason="%r is not one of %s"
            % (value, ", ".join(choices)))
    return value


def _non_empty(value: str, name: str, limit: int = 255) -> str:
    if not isinstance(value, str) or not value or len(value) > limit:
        raise exception.InvalidParameterValue(
            name=name, reason="must be a non-empty string of at most %d "
            "characters" % limit)
    return value


def _sha256_hex(value: str, name: str) -> str:
    """A SHA-256 given as 64 hex digits (colons and case ignored)."""
    if isinstance(value, str):
        value = value.replace(":", "").strip().lower()
        if len(value) == 64 and all(c in "0123456789abcdef" for c in value):
            return value
    raise exception.InvalidParameterValue(
        name=name, reason="must be a SHA-256 as 64 hexadecimal digits")


def _newest_first(table: Any, limit: int, before_id: int | None,
                  host: str | None) -> Any:
    """SELECT of an audit table's records, newest first, one keyset page
    (``before_id``: the marker, older records only), of one host if
    named."""
    query = sa.select(table).order_by(table.id.desc()).limit(
        max(_count(limit, "limit"), 1))
    if before_id is not None:
        query = query.where(table.id < _count(before_id, "marker"))
    if host is not None:
        query = query.where(table.host == host)
    return query


def _count(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise exception.InvalidParameterValue(
            name=name, reason="must be a non-negative integer")
    return value


# --- Records returned to (and taken from) callers ----------------------------

@dataclasses.dataclass(frozen=True, slots=True)
class Host:
    id: int
    uuid: str
    hostname: str
    group: str
    state: str
    created_at: datetime.datetime
    updated_at: datetime.datetime | None
    #: SHA-256 hex of the approved EK's SubjectPublicKeyInfo DER, or None.
    approved_ek_sha256: str | None = None
    enrollment_generation: int = 0


@dataclasses.dataclass(frozen=True, slots=True)
class HostEnrollment:
    """The part of a host's row that says which TPM registration is in
    force: conductors compare it with what they cached, each cycle."""

    hostname: str
    state: str
    generation: int
    #: The host's group: a move changes which policies appraise it.
    group: str = "default"


@dataclasses.dataclass(frozen=True, slots=True)
class Registration:
    """The TPM identity of a host. ``ek_cert_fingerprint`` is SHA-256 hex of
    the DER certificate, computed here, never taken from the caller; it is
    informational (a certificate has more than one encoding). The EK's
    identity is ``ek_public_sha256`` (SHA-256 hex of its
    SubjectPublicKeyInfo DER), unique across hosts like the AK name.
    ``generation`` is the host's enrollment generation it was made in."""

    host_id: int
    ek_cert_fingerprint: str
    ek_certificate: bytes
    ak_public: bytes
    ak_name: bytes
    registered_at: datetime.datetime
    ek_public_sha256: str = ""
    generation: int = 0


@dataclasses.dataclass(frozen=True, slots=True)
class Policy:
    id: int
    name: str
    version: int
    kind: str
    body: dict[str, Any]
    created_at: datetime.datetime
    created_by: str


@dataclasses.dataclass(frozen=True, slots=True)
class PolicyAssignment:
    """``policy_version`` None means "always the latest version"."""

    group: str
    policy_name: str
    policy_version: int | None
    assigned_at: datetime.datetime


@dataclasses.dataclass(frozen=True, slots=True)
class NewVerdict:
    """A verdict to store; the constructor validates, so a bad one cannot
    reach the database half-way through a batch."""

    host_id: int
    status: str
    level: int
    issued_at: datetime.datetime
    expires_at: datetime.datetime
    vector: dict[str, Any] = dataclasses.field(default_factory=dict)
    reasons: list[Any] = dataclasses.field(default_factory=list)
    policy_versions: dict[str, int] = dataclasses.field(default_factory=dict)
    evidence_digest: str | None = None
    quote_clock: int | None = None
    reset_count: int | None = None
    restart_count: int | None = None
    signed_result: str | None = None
    registration_generation: int | None = None

    def __post_init__(self) -> None:
        _choice(self.status, models.VERDICT_STATUSES, "status")
        _count(self.level, "level")
        issued = _as_utc(self.issued_at, "issued_at")
        expires = _as_utc(self.expires_at, "expires_at")
        if expires < issued:
            raise exception.InvalidParameterValue(
                name="expires_at", reason="is before issued_at")
        object.__setattr__(self, "issued_at", issued)
        object.__setattr__(self, "expires_at", expires)
        for name in ("quote_clock", "reset_count", "restart_count",
                     "registration_generation"):
            if getattr(self, name) is not None:
                _count(getattr(self, name), name)
        for name, kind in (("vector", dict), ("reasons", list),
                           ("policy_versions", dict)):
            if not isinstance(getattr(self, name), kind):
                raise exception.InvalidParameterValue(
                    name=name, reason="must be a %s" % kind.__name__)

    def _row(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name)
                for f in dataclasses.fields(self)}


@dataclasses.dataclass(frozen=True, slots=True)
class Verdict:
    id: int
    host_id: int
    status: str
    level: int
    vector: dict[str, Any]
    reasons: list[Any]
    policy_versions: dict[str, int]
    evidence_digest: str | None
    quote_clock: int | None
    reset_count: int | None
    restart_count: int | None
    issued_at: datetime.datetime
    expires_at: datetime.datetime
    signed_result: str | None
    #: The verdict's place in the order of all verdicts (greater: stored
    #: later); the claim ``seq`` of ``signed_result``.
    sequence: int
    registration_generation: int | None = None


#: ``sign(index, sequence) -> token``: sign the ``index``-th verdict of a
#: batch as number ``sequence``; called inside the storing transaction.
SignFunction = Callable[[int, int], str]


@dataclasses.dataclass(frozen=True, slots=True)
class IMAState:
    """Where a host's IMA replay stopped: ``entries`` lines consumed, the
    PCR 10 value per bank (hex) they replay to, and the boot they belong to
    (a different reset/restart count means the host rebooted)."""

    host_id: int
    entries: int
    pcr_values: dict[str, str]
    reset_count: int
    restart_count: int
    updated_at: datetime.datetime | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class ConductorRecord:
    hostname: str
    online: bool
    created_at: datetime.datetime
    updated_at: datetime.datetime
    #: PEM of the conductor's public result-signing key, and its kid
    #: (RFC 7638 thumbprint); None until it registers with one.
    public_key: str | None = None
    key_id: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class HostOperation:
    """A management operation a conductor runs for trusted-pools-api."""

    id: str
    hostname: str
    kind: str
    state: str
    conductor: str
    request_id: str | None
    requested_by: str | None
    result: Any
    error_type: str | None
    error: dict[str, Any] | None
    created_at: datetime.datetime
    updated_at: datetime.datetime | None


@dataclasses.dataclass(frozen=True, slots=True)
class BindingKeyRecord:
    """A host's binding key as the conductor checked it: ``public`` is
    TPMT_PUBLIC, certified by the AK of enrollment ``generation``."""

    host_id: int
    generation: int
    public: bytes
    name_hex: str
    certified_at: datetime.datetime


@dataclasses.dataclass(frozen=True, slots=True)
class SecretRecord:
    """A stored secret: its owner, policy and ciphertext (AES-256-GCM
    under the KEK named by ``kek_id``; only a conductor can open it)."""

    id: str
    project_id: str
    owner: str | None
    name: str | None
    secret_type: str
    algorithm: str | None
    bit_length: int | None
    min_level: int | None
    kek_id: str
    ciphertext: bytes
    created_at: datetime.datetime


@dataclasses.dataclass(frozen=True, slots=True)
class KeyReleaseRecord:
    """One answer of the key service (see
    :class:`trusted_pools.db.models.KeyRelease`); ``id`` is None until
    stored. Never holds the key."""

    id: int | None
    secret_id: str
    project_id: str
    owner: str | None
    host: str
    outcome: str
    status: str
    level: int
    min_level: int | None
    reason_code: str
    reason: str
    conductor: str
    requested_by: str | None
    request_id: str | None
    created_at: datetime.datetime


@dataclasses.dataclass(frozen=True, slots=True)
class DistrustActionRecord:
    """One reported distrust action (see
    :class:`trusted_pools.db.models.DistrustAction`); ``id`` is None
    until stored."""

    id: int | None
    host: str
    action: str
    outcome: str
    detail: str
    items: list[Any]
    verdict: str | None
    status: str | None
    reported_by: str
    request_id: str | None
    created_at: datetime.datetime


@dataclasses.dataclass(frozen=True, slots=True)
class VTPMMigrationRecord:
    """One vTPM migration as the conductor recorded it (see
    :class:`trusted_pools.db.models.VTPMMigration`)."""

    id: str
    instance: str
    source: str
    destination: str
    kind: str
    step: str
    epoch: int
    min_level: int | None
    conductor: str
    salt: bytes
    transport_key: bytes | None
    outcome: str | None
    reason: str | None
    request_id: str | None
    requested_by: str | None
    created_at: datetime.datetime
    updated_at: datetime.datetime
    committed_at: datetime.datetime | None
    finished_at: datetime.datetime | None


@dataclasses.dataclass(frozen=True, slots=True)
class InstanceVerdictRecord:
    """An instance's deep-attestation verdict as stored (see
    :class:`trusted_pools.db.models.InstanceVerdict`); the constructor
    validates."""

    instance: str
    host_id: int
    status: str
    level: int
    host_level: int
    host_sequence: int | None
    registration_generation: int
    reasons: list[Any]
    signed_result: str | None
    issued_at: datetime.datetime
    expires_at: datetime.datetime
    #: The vTPM PCR values the verdict verified (bank name -> PCR ->
    #: hex), None when not recorded.
    pcrs: dict[str, dict[str, str]] | None = None

    def __post_init__(self) -> None:
        _non_empty(self.instance, "instance", limit=36)
        _choice(self.status, models.VERDICT_STATUSES, "status")
        if self.pcrs is not None and not isinstance(self.pcrs, dict):
            raise exception.InvalidParameterValue(
                name="pcrs", reason="must be a dict or None")
        for name in ("level", "host_level", "registration_generation"):
            _count(getattr(self, name), name)
        if self.host_sequence is not None:
            _count(self.host_sequence, "host_sequence")
        if not isinstance(self.reasons, list):
            raise exception.InvalidParameterValue(
                name="reasons", reason="must be a list")
        issued = _as_utc(self.issued_at, "issued_at")
        expires = _as_utc(self.expires_at, "expires_at")
        if expires < issued:
            raise exception.InvalidParameterValue(
                name="expires_at", reason="is before issued_at")
        object.__setattr__(self, "issued_at", issued)
        object.__setattr__(self, "expires_at", expires)


@dataclasses.dataclass(frozen=True, slots=True)
class InstanceChallengeRecord:
    """A nonce issued to an instance's guest, as stored (see
    :class:`trusted_pools.db.models.InstanceChallenge`)."""

    nonce_sha256: str
    instance: str
    host: str | None
    conductor: str
    issued_at: datetime.datetime
    expires_at: datetime.datetime
    used_at: datetime.datetime | None
    #: The image the trusted caller named (None: not named).
    image: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class InstancePolicyRecord:
    """One stored version of an instance policy (see
    :class:`trusted_pools.db.models.InstancePolicy`); ``pcrs`` is the
    body the verifier validated (bank name -> PCR -> allowed hex)."""

    id: int
    name: str
    version: int
    level: int
    pcrs: dict[str, dict[str, list[str]]]
    created_at: datetime.datetime
    created_by: str


@dataclasses.dataclass(frozen=True, slots=True)
class InstancePolicyAssignmentRecord:
    """``kind`` image or instance; ``policy_version`` None follows the
    latest version."""

    kind: str
    target: str
    policy_name: str
    policy_version: int | None
    assigned_at: datetime.datetime


@dataclasses.dataclass(frozen=True, slots=True)
class InstanceStanding:
    """An instance's stored verdict with what its host became since: the
    host's name, state and enrollment generation now, and the first host
    verdict other than trusted stored after the one the instance verdict
    relied on (``host_fell``: (status, sequence) or None), read in one
    transaction. :mod:`trusted_pools.verifier.instance_standing` judges
    it."""

    verdict: InstanceVerdictRecord
    hostname: str
    host_state: str
    enrollment_generation: int
    host_fell: tuple[str, int] | None


def _record(cls: type, row: Any, **renamed: str) -> Any:
    """Copy an ORM row into a record; ``renamed`` maps field -> column."""
    return cls(**{f.name: getattr(row, renamed.get(f.name, f.name))
                  for f in dataclasses.fields(cls)})


def _host(row: models.Host) -> Host:
    return _record(Host, row, group="host_group")


# Verdicts are read and written in bulk: through Core, in the column order
# of the record, which skips the ORM's per-row identity bookkeeping.
_VERDICTS = models.Verdict.__table__
_VERDICT_COLUMNS = [_VERDICTS.c[f.name] for f in dataclasses.fields(Verdict)]


def _instance_verdict_rows(records: Sequence[InstanceVerdictRecord]
                           ) -> list[dict[str, Any]]:
    """Rows for ``records``; the last record of an instance wins."""
    latest: dict[str, InstanceVerdictRecord] = {}
    for record in records:
        if not isinstance(record, InstanceVerdictRecord):
            raise exception.InvalidParameterValue(
                name="records", reason="expected InstanceVerdictRecord, "
                "got %s" % type(record).__name__)
        latest[record.instance] = record
    names = _INSTANCE_VERDICT_FIELDS
    return [dict(zip(names, map(record.__getattribute__, names)))
            for record in latest.values()]


def _replace_instance_verdicts(session: orm.Session,
                               rows: list[dict[str, Any]]) -> None:
    """Each row replaces its instance's stored verdict: a delete and a
    bulk insert through Core (a batch is up to thousands of rows; the
    ORM's per-row get-and-update cost more than verifying them)."""
    table = models.InstanceVerdict.__table__
    instances = sorted(row["instance"] for row in rows)
    for start in range(0, len(instances), 500):
        session.execute(_DELETE_INSTANCE_VERDICTS,
                        {"instances": instances[start:start + 500]})
    for start in range(0, len(rows), _VERDICT_CHUNK):
        session.execute(sa.insert(table), rows[start:start + _VERDICT_CHUNK])


_INSTANCE_VERDICT_FIELDS = tuple(
    f.name for f in dataclasses.fields(InstanceVerdictRecord))
_CHALLENGE_COLUMNS = [models.InstanceChallenge.__table__.c[f.name]
                      for f in dataclasses.fields(InstanceChallengeRecord)]
# Batch statements built once, their lists bound as expanding parameters:
# an ``in_(list)`` built per call coerces every element (100s per batch).
_CHALLENGES = models.InstanceChallenge.__table__
_SELECT_CHALLENGES = sa.select(*_CHALLENGE_COLUMNS).where(
    _CHALLENGES.c.nonce_sha256.in_(sa.bindparam("nonces", expanding=True))
).with_for_update()
_SPEND_CHALLENGES = sa.update(_CHALLENGES).where(
    _CHALLENGES.c.nonce_sha256.in_(sa.bindparam("nonces", expanding=True)),
    _CHALLENGES.c.used_at.is_(None)).values(used_at=sa.bindparam("now"))
_DELETE_INSTANCE_VERDICTS = sa.delete(models.InstanceVerdict.__table__).where(
    models.InstanceVerdict.__table__.c.instance.in_(
        sa.bindparam("instances", expanding=True)))


def _policy(row: models.Policy) -> Policy:
    return _record(Policy, row)


# --- Error translation -------------------------------------------------------

def _translate_errors(fn: _F) -> _F:
    """Turn oslo.db errors that escaped a method into the project's."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except db_exc.DBConnectionError as exc:
            raise exception.DatabaseUnavailable(
                reason="cannot connect (%s)" % type(exc.inner_exception
                                                    ).__name__) from exc
        except db_exc.DBDeadlock as exc:
            raise exception.TemporaryFailure(
                reason="database deadlock persisted after retries") from exc
        except db_exc.DBDuplicateEntry as exc:
            raise exception.Conflict(
                reason="duplicate value for %s"
                % ", ".join(exc.columns or ["a unique column"])) from exc
        except db_exc.DBReferenceError as exc:
            raise exception.NotFound(
                reason="a referenced row does not exist (%s)"
                % (exc.key or "foreign key")) from exc
        except db_exc.DBNonExistentTable as exc:
            raise exception.DatabaseSchemaMissing(
                table=exc.table) from exc
        except (db_exc.DBConstraintError, db_exc.DBDataError) as exc:
            raise exception.Invalid(
                reason="the database rejected a value: %s"
                % type(exc).__name__) from exc
        except db_exc.DBError as exc:
            table = _missing_table(exc.inner_exception)
            if table is not None:
                raise exception.DatabaseSchemaMissing(table=table) from exc
            if isinstance(exc.inner_exception, sa.exc.IntegrityError):
                raise exception.Invalid(
                    reason="the database rejected a value (integrity "
                    "constraint)") from exc
            raise exception.DatabaseError(
                reason=type(exc.inner_exception).__name__) from exc
        except sa.exc.ProgrammingError as exc:
            # oslo.db passes MySQL's 1146 (no such table) through as is.
            table = _missing_table(exc)
            if table is None:
                raise
            raise exception.DatabaseSchemaMissing(table=table) from exc
        except sa.exc.OperationalError as exc:
            # oslo.db passes these through unwrapped: connection refused
            # with newer libpq messages, SQLite's "database is locked"
            # after the busy timeout, server shutdown, lock timeouts.
            if _mysql_errno(exc) == _MYSQL_CHECK_VIOLATED:
                raise exception.Invalid(
                    reason="the database rejected a value (check "
                    "constraint)") from exc
            first_line = str(exc.orig).strip().splitlines()[:1]
            raise exception.DatabaseUnavailable(
                reason=first_line[0] if first_line else type(exc.orig
                                                             ).__name__
            ) from exc
    return wrapper  # type: ignore[return-value]


_MYSQL_CHECK_VIOLATED = 4025  # MariaDB: CONSTRAINT ... failed


def _mysql_errno(exc: sa.exc.DBAPIError) -> int | None:
    args = getattr(exc.orig, "args", ())
    return args[0] if args and isinstance(args[0], int) else None


_MYSQL_NO_SUCH_TABLE = 1146
_PG_UNDEFINED_TABLE = "42P01"
_NO_SUCH_TABLE = (re.compile(r"no such table: (\S+)"),  # SQLite
                  re.compile(r"Table '(?:[^'.]+\.)?([^'.]+)' doesn't exist"),
                  re.compile(r'relation "([^"]+)" does not exist'))


def _missing_table(exc: Any) -> str | None:
    """The table a query missed, when the schema was never created (oslo.db
    recognises this only for DROP TABLE)."""
    if not isinstance(exc, sa.exc.DBAPIError):
        return None
    if not (_mysql_errno(exc) == _MYSQL_NO_SUCH_TABLE
            or getattr(exc.orig, "pgcode", None) == _PG_UNDEFINED_TABLE
            or isinstance(exc, sa.exc.OperationalError)):  # SQLite
        return None
    for pattern in _NO_SUCH_TABLE:
        found = pattern.search(str(exc.orig))
        if found:
            return found.group(1)
    return None


def _retry_on_duplicate(exc: Exception) -> bool:
    return isinstance(exc, db_exc.DBDuplicateEntry)


_retry_deadlock = oslo_db_api.wrap_db_retry(
    max_retries=5, retry_interval=0.05, max_retry_interval=1,
    inc_retry_interval=True, retry_on_deadlock=True, jitter=True)

# Version numbers are allocated as max + 1; two writers racing for the same
# name make one of them hit the unique constraint, and it simply retries.
_retry_allocation = oslo_db_api.wrap_db_retry(
    max_retries=10, retry_interval=0.01, max_retry_interval=0.2,
    inc_retry_interval=True, retry_on_deadlock=True, jitter=True,
    exception_checker=_retry_on_duplicate)


# --- Engine setup ------------------------------------------------------------

def _sqlite_engine_hook(engine: sa.engine.Engine) -> None:
    """WAL journal and BEGIN IMMEDIATE for writers on SQLite engines."""
    if engine.dialect.name != "sqlite":
        return

    @sa.event.listens_for(engine, "connect")
    def _wal(dbapi_connection: Any, record: Any) -> None:
        if engine.url.database not in (None, "", ":memory:"):
            dbapi_connection.execute("PRAGMA journal_mode=WAL")

    def _begin(conn: sa.engine.Connection) -> None:
        if (conn.get_execution_options().get(_SQLITE_IMMEDIATE)
                and "in_transaction" not in conn.info):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            conn.info["in_transaction"] = True

    # Must run before oslo.db's own listener, which emits a plain BEGIN
    # unless a transaction is already marked as open; ``insert=True`` is
    # not honoured for engine "begin" events, so re-add theirs after ours.
    others = list(engine.dispatch.begin)
    for listener in others:
        sa.event.remove(engine, "begin", listener)
    sa.event.listen(engine, "begin", _begin)
    for listener in others:
        sa.event.listen(engine, "begin", listener)


def make_context_manager(connection: str | None = None, **options: Any
                         ) -> enginefacade._TransactionContextManager:
    """A new enginefacade transaction context for this schema.

    ``connection`` None reads ``[database]`` from the global configuration
    on first use; otherwise it is a SQLAlchemy URL and ``options`` are
    further enginefacade settings (``max_pool_size``, ...). SQLite foreign
    keys are always on: the schema relies on them for cascades.
    """
    context_manager = enginefacade.transaction_context()
    settings: dict[str, Any] = {"sqlite_fk": True}
    if connection is not None:
        settings["connection"] = connection
    settings.update(options)
    context_manager.configure(**settings)
    context_manager.append_on_engine_create(_sqlite_engine_hook)
    return context_manager


# --- The API -----------------------------------------------------------------

class Connection:
    """The persistence API; one instance per database, shared by threads."""

    def __init__(self, context_manager: enginefacade._TransactionContextManager
                 | None = None, clock: Clock = _utcnow) -> None:
        self._context_manager = context_manager or make_context_manager()
        self._clock = clock
        # enginefacade keeps the current transaction on this object; a
        # thread-local one gives each thread its own transaction.
        self._local = threading.local()
        self._sqlite: bool | None = None

    # -- plumbing

    def get_engine(self) -> sa.engine.Engine:
        """The writer engine (for migrations and diagnostics)."""
        return self._context_manager.writer.get_engine()

    def dispose(self) -> None:
        """Close pooled connections (tests, forked workers)."""
        self._context_manager.dispose_pool()

    def _is_sqlite(self) -> bool:
        if self._sqlite is None:
            self._sqlite = self.get_engine().dialect.name == "sqlite"
        return self._sqlite

    @contextlib.contextmanager
    def _writer(self) -> Iterator[orm.Session]:
        sqlite = self._is_sqlite()
        with self._context_manager.writer.using(self._local) as session:
            if sqlite:
                session.connection(execution_options={_SQLITE_IMMEDIATE:
                                                      True})
            yield session

    @contextlib.contextmanager
    def _reader(self) -> Iterator[orm.Session]:
        with self._context_manager.reader.using(self._local) as session:
            yield session

    # -- hosts

    @_translate_errors
    @_retry_deadlock
    def create_host(self, hostname: str, group: str = "default",
                    state: str = "enrolling", uuid: str | None = None
                    ) -> Host:
        """Add a host; :class:`HostAlreadyExists` if the name is taken."""
        _non_empty(hostname, "hostname")
        _non_empty(group, "group")
        _choice(state, models.HOST_STATES, "state")
        host_uuid = uuid or str(uuid_lib.uuid4())
        try:
            with self._writer() as session:
                row = models.Host(uuid=host_uuid, hostname=hostname,
                                  host_group=group, state=state,
                                  created_at=self._clock())
                session.add(row)
                session.flush()
                return _host(row)
        except db_exc.DBDuplicateEntry as exc:
            if any("uuid" in column for column in exc.columns or []):
                raise exception.Conflict(
                    reason="a host with UUID %s already exists"
                    % host_uuid) from exc
            raise exception.HostAlreadyExists(host=hostname) from exc

    def _host_row(self, session: orm.Session, host_id: int) -> models.Host:
        row = session.get(models.Host, host_id)
        if row is None:
            raise exception.HostNotFound(host=host_id)
        return row

    @_translate_errors
    def get_host(self, host_id: int) -> Host:
        with self._reader() as session:
            return _host(self._host_row(session, host_id))

    @_translate_errors
    def get_host_by_name(self, hostname: str) -> Host:
        return self._get_host_where(models.Host.hostname == hostname,
                                    hostname)

    @_translate_errors
    def get_host_by_uuid(self, uuid: str) -> Host:
        return self._get_host_where(models.Host.uuid == uuid, uuid)

    def _get_host_where(self, condition: Any, shown: str) -> Host:
        with self._reader() as session:
            row = session.scalars(sa.select(models.Host).where(condition)
                                  ).one_or_none()
            if row is None:
                raise exception.HostNotFound(host=shown)
            return _host(row)

    @_translate_errors
    def list_hosts(self, group: str | None = None, state: str | None = None
                   ) -> list[Host]:
        """Hosts ordered by id, optionally of one group and/or state."""
        query = sa.select(models.Host).order_by(models.Host.id)
        if group is not None:
            query = query.where(models.Host.host_group == group)
        if state is not None:
            query = query.where(models.Host.state ==
                                _choice(state, models.HOST_STATES, "state"))
        with self._reader() as session:
            return [_host(row) for row in session.scalars(query)]

    @_translate_errors
    def host_enrollments(self) -> dict[str, HostEnrollment]:
        """hostname -> state, enrollment generation and group of every host.

        Four narrow columns, no registration blobs: cheap enough for each
        conductor to read once per attestation interval.
        """
        query = sa.select(models.Host.hostname, models.Host.state,
                          models.Host.enrollment_generation,
                          models.Host.host_group)
        with self._reader() as session:
            return {name: HostEnrollment(name, state, generation or 0, group)
                    for name, state, generation, group
                    in session.execute(query)}

    @_translate_errors
    @_retry_deadlock
    def update_host_state(self, host_id: int, state: str) -> Host:
        _choice(state, models.HOST_STATES, "state")
        return self._update_host(host_id, state=state)

    @_translate_errors
    @_retry_deadlock
    def update_host_group(self, host_id: int, group: str) -> Host:
        """Move a host to another group (and so to its policies)."""
        return self._update_host(host_id, host_group=_non_empty(group,
                                                                "group"))

    def _update_host(self, host_id: int, **values: Any) -> Host:
        with self._writer() as session:
            row = self._host_row(session, host_id)
            for name, value in values.items():
                setattr(row, name, value)
            row.updated_at = self._clock()
            session.flush()
            return _host(row)

    @_translate_errors
    @_retry_deadlock
    def delete_host(self, host_id: int) -> None:
        """Remove a host with its registration, verdicts and IMA state."""
        with self._writer() as session:
            # Delete dependants explicitly: cascades are declared, but
            # SQLite only honours them with foreign keys on.
            for model in (models.Registration, models.IMAState,
                          models.Verdict):
                session.execute(sa.delete(model).where(
                    model.host_id == host_id))
            deleted = session.execute(sa.delete(models.Host).where(
                models.Host.id == host_id)).rowcount
            if not deleted:
                raise exception.HostNotFound(host=host_id)

    # -- registrations

    @_translate_errors
    @_retry_deadlock
    def set_registration(self, host_id: int, ek_certificate: bytes,
                         ak_public: bytes, ak_name: bytes,
                         ek_public_sha256: str | None = None
                         ) -> Registration:
        """Bind a host to its TPM and AK, replacing any previous
        registration in the same transaction: readers see the old or the
        new identity, never a mix. A low-level write for tools and tests:
        enrollment goes through :meth:`enroll`, which enforces the
        operator's EK approval. ``ek_public_sha256`` defaults to the
        certificate's hash.

        :raises EKAlreadyRegistered: the EK is bound to another host.
        :raises AKAlreadyRegistered: the AK is registered to another host.
        """
        self._check_registration_values(ek_certificate, ak_public, ak_name)
        ek_hash = _sha256_hex(ek_public_sha256 or
                              hashlib.sha256(ek_certificate).hexdigest(),
                              "ek_public_sha256")
        with self._registration_conflicts(ek_hash, ak_name,
                                          host_id=host_id):
            with self._writer() as session:
                host = self._host_row(session, host_id)
                return self._write_registration(
                    session, host, ek_certificate, ek_hash, ak_public,
                    ak_name)

    @staticmethod
    def _check_registration_values(ek_certificate: bytes, ak_public: bytes,
                                   ak_name: bytes) -> None:
        for name, value in (("ek_certificate", ek_certificate),
                            ("ak_public", ak_public), ("ak_name", ak_name)):
            if not isinstance(value, bytes) or not value:
                raise exception.InvalidParameterValue(
                    name=name, reason="must be non-empty bytes")

    @contextlib.contextmanager
    def _registration_conflicts(self, ek_hash: str, ak_name: bytes, *,
                                hostname: str | None = None,
                                host_id: int | None = None
                                ) -> Iterator[None]:
        """Translate a unique-constraint race into the typed conflict,
        naming the host that won it (the writer is ``hostname`` or
        ``host_id``)."""
        try:
            yield
        except db_exc.DBDuplicateEntry as exc:
            named = self._holder_conflict(ek_hash, ak_name, hostname,
                                          host_id)
            if named is not None:
                raise named from exc
            columns = " ".join(exc.columns or [])
            if "ak_name" in columns:
                raise exception.AKAlreadyRegistered(
                    ak_name=ak_name.hex(), other="?") from exc
            if "ek" in columns:
                raise exception.EKAlreadyRegistered(
                    fingerprint=ek_hash, other="?") from exc
            raise exception.ConcurrentUpdate(
                what="registration with EK %s" % ek_hash,
                reason="registered concurrently") from exc

    def _holder_conflict(self, ek_hash: str, ak_name: bytes,
                         hostname: str | None, host_id: int | None
                         ) -> exception.Conflict | None:
        """After a lost race the winner has committed: the conflict the
        check would have raised, naming it (None if it cannot be read)."""
        try:
            with self._reader() as session:
                if host_id is None and hostname is not None:
                    host_id = session.scalars(sa.select(models.Host.id).where(
                        models.Host.hostname == hostname)).first()
                probe = models.Host(id=-1 if host_id is None else host_id)
                self._refuse_taken_identity(session, probe, ek_hash, ak_name)
        except exception.Conflict as conflict:
            return conflict
        except db_exc.DBError:
            pass  # the conflict is raised all the same, without the name
        return None

    def _write_registration(self, session: orm.Session, host: models.Host,
                            ek_certificate: bytes, ek_hash: str,
                            ak_public: bytes, ak_name: bytes
                            ) -> Registration:
        """Upsert the host's registration under a new generation."""
        self._refuse_taken_identity(session, host, ek_hash, ak_name)
        host.enrollment_generation = (host.enrollment_generation or 0) + 1
        host.approved_ek_sha256 = ek_hash
        host.updated_at = self._clock()
        row = session.get(models.Registration, host.id)
        if row is None:
            row = models.Registration(host_id=host.id)
            session.add(row)
        row.ek_cert_fingerprint = hashlib.sha256(ek_certificate).hexdigest()
        row.ek_certificate = ek_certificate
        row.ek_public_sha256 = ek_hash
        row.ak_public = ak_public
        row.ak_name = ak_name
        row.ak_name_hex = ak_name.hex()
        row.generation = host.enrollment_generation
        row.registered_at = self._clock()
        session.flush()
        return _record(Registration, row)

    @staticmethod
    def _refuse_taken_identity(session: orm.Session, host: models.Host,
                               ek_hash: str, ak_name: bytes) -> None:
        """Name the other host when the EK or AK is bound elsewhere (the
        unique constraints are the backstop for a concurrent writer)."""
        reg = models.Registration
        other = session.execute(
            sa.select(models.Host.hostname).join(
                reg, reg.host_id == models.Host.id, isouter=True).where(
                models.Host.id != host.id,
                sa.or_(reg.ek_public_sha256 == ek_hash,
                       models.Host.approved_ek_sha256 == ek_hash))
        ).scalars().first()
        if other is not None:
            raise exception.EKAlreadyRegistered(fingerprint=ek_hash,
                                                other=other)
        other = session.execute(
            sa.select(models.Host.hostname).join(
                reg, reg.host_id == models.Host.id).where(
                models.Host.id != host.id,
                reg.ak_name_hex == ak_name.hex())).scalars().first()
        if other is not None:
            raise exception.AKAlreadyRegistered(ak_name=ak_name.hex(),
                                                other=other)

    @staticmethod
    def _check_ek_approval(host: models.Host | None, hostname: str,
                           ek_hash: str, approve: str | None) -> None:
        """The operator's approval rule (see :meth:`enroll`)."""
        approved = host.approved_ek_sha256 if host is not None else None
        if approved is not None:
            if ek_hash != approved or (approve is not None
                                       and approve != approved):
                raise exception.EKChanged(
                    host=hostname, approved=approved,
                    presented=ek_hash if ek_hash != approved else approve)
            return
        if approve is None:
            raise exception.EKNotApproved(
                host=hostname, presented=ek_hash,
                reason="and no EK is approved for this host yet")
        if approve != ek_hash:
            raise exception.EKNotApproved(
                host=hostname, presented=ek_hash,
                reason="not the approved %s" % approve)

    @_translate_errors
    def check_enrollment(self, hostname: str, ek_public_sha256: str,
                         ak_name: bytes, approve: str | None = None) -> None:
        """Raise what :meth:`enroll` would raise for this EK and AK, without
        writing: lets the conductor refuse before it challenges the TPM."""
        ek_hash = _sha256_hex(ek_public_sha256, "ek_public_sha256")
        approve = None if approve is None else _sha256_hex(approve,
                                                           "approve")
        with self._reader() as session:
            host = session.scalars(sa.select(models.Host).where(
                models.Host.hostname == hostname)).one_or_none()
            self._check_ek_approval(host, hostname, ek_hash, approve)
            probe = host if host is not None else models.Host(id=-1)
            self._refuse_taken_identity(session, probe, ek_hash, ak_name)

    @_translate_errors
    @_retry_deadlock
    def enroll(self, hostname: str, group: str, ek_certificate: bytes,
               ek_public_sha256: str, ak_public: bytes, ak_name: bytes,
               approve: str | None = None) -> tuple[Host, Registration]:
        """Register a verified TPM identity for ``hostname`` in one
        transaction (the host row is created when new): all or nothing, a
        refusal leaves the previous registration untouched.

        The EK rule: a host without an approved EK needs ``approve`` equal
        to the EK's hash (the operator's approval); a host with one must
        present that EK (``approve``, if given, must name it too): another
        EK raises :class:`EKChanged` until :meth:`reset_enrollment`. The
        same EK with a new AK re-enrolls. The EK and the AK name are unique
        across hosts. Each enrollment starts a new generation.

        :raises EKNotApproved, EKChanged, EKAlreadyRegistered,
            AKAlreadyRegistered:
        """
        _non_empty(hostname, "hostname")
        _non_empty(group, "group")
        self._check_registration_values(ek_certificate, ak_public, ak_name)
        ek_hash = _sha256_hex(ek_public_sha256, "ek_public_sha256")
        approve = None if approve is None else _sha256_hex(approve,
                                                           "approve")
        with self._registration_conflicts(ek_hash, ak_name,
                                          hostname=hostname):
            with self._writer() as session:
                host = session.scalars(sa.select(models.Host).where(
                    models.Host.hostname == hostname)).one_or_none()
                self._check_ek_approval(host, hostname, ek_hash, approve)
                if host is None:
                    host = models.Host(uuid=str(uuid_lib.uuid4()),
                                       hostname=hostname, host_group=group,
                                       state="enrolling",
                                       enrollment_generation=0,
                                       created_at=self._clock())
                    session.add(host)
                    session.flush()
                registration = self._write_registration(
                    session, host, ek_certificate, ek_hash, ak_public,
                    ak_name)
                host.state = "enrolled"
                session.flush()
                return _host(host), registration

    @_translate_errors
    @_retry_deadlock
    def reset_enrollment(self, hostname: str) -> Host:
        """The operator's reset after a TPM or motherboard swap: drop the
        host's registration, EK approval and IMA replay state; the host is
        'enrolling' (not attested) until it enrolls again. Its verdict
        history stays; the next enrollment starts a new generation, so no
        clock baseline of the old TPM is used again."""
        with self._writer() as session:
            host = session.scalars(sa.select(models.Host).where(
                models.Host.hostname == hostname)).one_or_none()
            if host is None:
                raise exception.HostNotFound(host=hostname)
            for model in (models.Registration, models.IMAState):
                session.execute(sa.delete(model).where(
                    model.host_id == host.id))
            host.approved_ek_sha256 = None
            host.state = "enrolling"
            host.updated_at = self._clock()
            session.flush()
            return _host(host)

    @_translate_errors
    def get_registration(self, host_id: int) -> Registration:
        with self._reader() as session:
            row = session.get(models.Registration, host_id)
            if row is None:
                self._host_row(session, host_id)
                raise exception.RegistrationNotFound(host=host_id)
            return _record(Registration, row)

    @_translate_errors
    def get_registration_by_fingerprint(self, fingerprint: str
                                        ) -> Registration:
        """Which host an EK certificate (SHA-256 hex) is registered to."""
        with self._reader() as session:
            row = session.scalars(sa.select(models.Registration).where(
                models.Registration.ek_cert_fingerprint ==
                fingerprint.lower())).one_or_none()
            if row is None:
                raise exception.RegistrationNotFound(host=fingerprint)
            return _record(Registration, row)

    @_translate_errors
    @_retry_deadlock
    def delete_registration(self, host_id: int) -> None:
        with self._writer() as session:
            deleted = session.execute(sa.delete(models.Registration).where(
                models.Registration.host_id == host_id)).rowcount
            if not deleted:
                raise exception.RegistrationNotFound(host=host_id)

    # -- policies

    @_translate_errors
    @_retry_allocation
    def create_policy_version(self, name: str, kind: str,
                              body: dict[str, Any], created_by: str
                              ) -> Policy:
        """Store ``body`` as the next version of policy ``name`` (1 for a
        new name). Versions are immutable; concurrent writers get distinct
        consecutive versions."""
        _non_empty(name, "name")
        _choice(kind, models.POLICY_KINDS, "kind")
        _non_empty(created_by, "created_by")
        if not isinstance(body, dict):
            raise exception.InvalidParameterValue(name="body",
                                                  reason="must be a dict")
        with self._writer() as session:
            current = session.scalar(
                sa.select(sa.func.max(models.Policy.version)).where(
                    models.Policy.name == name))
            if current is not None:
                existing = session.scalar(sa.select(models.Policy.kind).where(
                    models.Policy.name == name).limit(1))
                if existing != kind:
                    raise exception.Conflict(
                        reason="policy %s is of kind %s, not %s"
                        % (name, existing, kind))
            row = models.Policy(name=name, version=(current or 0) + 1,
                                kind=kind, body=body,
                                created_at=self._clock(),
                                created_by=created_by)
            session.add(row)
            session.flush()
            return _policy(row)

    @_translate_errors
    def get_policy(self, name: str, version: int | None = None) -> Policy:
        """One version of a policy; ``version`` None gives the latest."""
        query = sa.select(models.Policy).where(models.Policy.name == name)
        if version is None:
            query = query.order_by(models.Policy.version.desc()).limit(1)
        else:
            query = query.where(models.Policy.version == version)
        with self._reader() as session:
            row = session.scalars(query).first()
            if row is None:
                raise exception.PolicyNotFound(
                    policy=name, version="latest" if version is None
                    else version)
            return _policy(row)

    @_translate_errors
    def list_policies(self, name: str | None = None) -> list[Policy]:
        """Every stored version, by name then version."""
        query = sa.select(models.Policy).order_by(models.Policy.name,
                                                  models.Policy.version)
        if name is not None:
            query = query.where(models.Policy.name == name)
        with self._reader() as session:
            return [_policy(row) for row in session.scalars(query)]

    @_translate_errors
    @_retry_deadlock
    def assign_policy(self, group: str, policy_name: str,
                      version: int | None = None) -> PolicyAssignment:
        """Hold ``group`` to a policy, pinned to ``version`` or following
        its latest version; replaces an earlier assignment of that name."""
        _non_empty(group, "group")
        # The column is a 32-bit INTEGER: a larger version is no version
        # (SQLite's driver raised OverflowError, a 500 at the API).
        if version is not None and (isinstance(version, bool) or
                                    not isinstance(version, int) or
                                    not 1 <= version < 2 ** 31):
            raise exception.InvalidParameterValue(
                name="version", reason="must be a positive 32-bit integer "
                "or None")
        with self._writer() as session:
            exists = sa.select(models.Policy.id).where(
                models.Policy.name == policy_name)
            if version is not None:
                exists = exists.where(models.Policy.version == version)
            if session.scalar(exists.limit(1)) is None:
                raise exception.PolicyNotFound(
                    policy=policy_name,
                    version="any" if version is None else version)
            row = session.get(models.PolicyAssignment, (group, policy_name))
            if row is None:
                row = models.PolicyAssignment(host_group=group,
                                              policy_name=policy_name)
                session.add(row)
            row.policy_version = version
            row.assigned_at = self._clock()
            session.flush()
            return _record(PolicyAssignment, row, group="host_group")

    @_translate_errors
    @_retry_deadlock
    def unassign_policy(self, group: str, policy_name: str) -> None:
        with self._writer() as session:
            deleted = session.execute(sa.delete(models.PolicyAssignment).where(
                models.PolicyAssignment.host_group == group,
                models.PolicyAssignment.policy_name == policy_name)).rowcount
            if not deleted:
                raise exception.PolicyNotFound(
                    policy="%s (assigned to %s)" % (policy_name, group),
                    version="any")

    @_translate_errors
    def list_assignments(self, group: str | None = None
                         ) -> list[PolicyAssignment]:
        query = sa.select(models.PolicyAssignment).order_by(
            models.PolicyAssignment.host_group,
            models.PolicyAssignment.policy_name)
        if group is not None:
            query = query.where(models.PolicyAssignment.host_group == group)
        with self._reader() as session:
            return [_record(PolicyAssignment, row, group="host_group")
                    for row in session.scalars(query)]

    @_translate_errors
    def policies_for_group(self, group: str) -> list[Policy]:
        """The policy versions a group is held to now, by name: the pinned
        version, or the latest one for unpinned assignments."""
        assignment = models.PolicyAssignment
        policy = models.Policy
        other = orm.aliased(models.Policy)
        latest = (sa.select(sa.func.max(other.version))
                  .where(other.name == assignment.policy_name)
                  .correlate(assignment)
                  .scalar_subquery())
        query = (sa.select(policy)
                 .join(assignment, policy.name == assignment.policy_name)
                 .where(assignment.host_group == group)
                 .where(policy.version == sa.func.coalesce(
                     assignment.policy_version, latest))
                 .order_by(policy.name))
        with self._reader() as session:
            return [_policy(row) for row in session.scalars(query)]

    # -- instance policies (golden guest measurements, deep attestation)

    @_translate_errors
    @_retry_allocation
    def create_instance_policy_version(self, name: str, level: int,
                                       pcrs: dict[str, Any],
                                       created_by: str
                                       ) -> InstancePolicyRecord:
        """Store ``pcrs`` (a body the verifier validated) as the next
        version of instance policy ``name`` (1 for a new name)."""
        _non_empty(name, "name")
        _non_empty(created_by, "created_by")
        if level not in (2, 3) or isinstance(level, bool):
            raise exception.InvalidParameterValue(
                name="level", reason="an instance policy stands for level "
                "2 or 3")
        if not isinstance(pcrs, dict) or not pcrs:
            raise exception.InvalidParameterValue(
                name="pcrs", reason="must be a non-empty dict")
        table = models.InstancePolicy
        with self._writer() as session:
            current = session.scalar(
                sa.select(sa.func.max(table.version)).where(
                    table.name == name))
            row = table(name=name, version=(current or 0) + 1, level=level,
                        pcrs=pcrs, created_at=self._clock(),
                        created_by=created_by)
            session.add(row)
            session.flush()
            return _record(InstancePolicyRecord, row)

    @_translate_errors
    def get_instance_policy(self, name: str, version: int | None = None
                            ) -> InstancePolicyRecord:
        """One version of an instance policy; None gives the latest."""
        table = models.InstancePolicy
        query = sa.select(table).where(table.name == name)
        if version is None:
            query = query.order_by(table.version.desc()).limit(1)
        else:
            query = query.where(table.version == version)
        with self._reader() as session:
            row = session.scalars(query).first()
            if row is None:
                raise exception.InstancePolicyNotFound(
                    policy=name, version="latest" if version is None
                    else version)
            return _record(InstancePolicyRecord, row)

    @_translate_errors
    def list_instance_policies(self, name: str | None = None
                               ) -> list[InstancePolicyRecord]:
        """Every stored version, by name then version."""
        table = models.InstancePolicy
        query = sa.select(table).order_by(table.name, table.version)
        if name is not None:
            query = query.where(table.name == name)
        with self._reader() as session:
            return [_record(InstancePolicyRecord, row)
                    for row in session.scalars(query)]

    @_translate_errors
    @_retry_deadlock
    def delete_instance_policy(self, name: str,
                               version: int | None = None) -> int:
        """Delete one version (or all versions) of an instance policy.
        Refused (:class:`InstancePolicyInUse`) while anything is held to
        the policy: an instance must never fall back to "no policy"
        (a lower bar) because its policy was deleted under it. Returns
        the number of versions deleted."""
        table = models.InstancePolicy
        assignments = models.InstancePolicyAssignment
        with self._writer() as session:
            # The policy's rows are locked before its assignments are
            # read, and assign locks them before it writes: a concurrent
            # assign either lands first (and is seen here) or finds the
            # policy gone. Otherwise both could commit, leaving an
            # assignment to nothing (read as "no policy").
            session.execute(sa.select(table.id).where(
                table.name == name).with_for_update()).all()
            held = session.execute(
                sa.select(assignments.target_kind, assignments.target_id)
                .where(assignments.policy_name == name)
                .order_by(assignments.target_kind, assignments.target_id)
                .limit(5)).all()
            if held:
                raise exception.InstancePolicyInUse(
                    policy=name, targets=", ".join(
                        "%s %s" % (k, t) for k, t in held))
            query = sa.delete(table).where(table.name == name)
            if version is not None:
                query = query.where(table.version == version)
            deleted = session.execute(query).rowcount
            if not deleted:
                raise exception.InstancePolicyNotFound(
                    policy=name, version="any" if version is None
                    else version)
            return deleted

    @_translate_errors
    @_retry_deadlock
    def assign_instance_policy(self, kind: str, target: str,
                               policy_name: str, version: int | None = None
                               ) -> InstancePolicyAssignmentRecord:
        """Hold the image or instance ``target`` to a policy, pinned to
        ``version`` or following its latest; replaces the target's
        earlier assignment (one policy per target)."""
        _choice(kind, models.INSTANCE_POLICY_TARGETS, "kind")
        _non_empty(target, "target", limit=36)
        # The column is a 32-bit INTEGER: a larger version is no version
        # (SQLite's driver raised OverflowError, a 500 at the API).
        if version is not None and (isinstance(version, bool) or
                                    not isinstance(version, int) or
                                    not 1 <= version < 2 ** 31):
            raise exception.InvalidParameterValue(
                name="version", reason="must be a positive 32-bit integer "
                "or None")
        table = models.InstancePolicy
        assignments = models.InstancePolicyAssignment
        with self._writer() as session:
            exists = sa.select(table.id).where(table.name == policy_name)
            if version is not None:
                exists = exists.where(table.version == version)
            # Locked: see delete_instance_policy.
            if session.scalar(exists.limit(1).with_for_update()) is None:
                raise exception.InstancePolicyNotFound(
                    policy=policy_name,
                    version="any" if version is None else version)
            row = session.get(assignments, (kind, target))
            if row is None:
                row = assignments(target_kind=kind, target_id=target)
                session.add(row)
            row.policy_name = policy_name
            row.policy_version = version
            row.assigned_at = self._clock()
            session.flush()
            return _record(InstancePolicyAssignmentRecord, row,
                           kind="target_kind", target="target_id")

    @_translate_errors
    @_retry_deadlock
    def unassign_instance_policy(self, kind: str, target: str) -> None:
        assignments = models.InstancePolicyAssignment
        with self._writer() as session:
            deleted = session.execute(sa.delete(assignments).where(
                assignments.target_kind == kind,
                assignments.target_id == target)).rowcount
            if not deleted:
                raise exception.InstancePolicyAssignmentNotFound(
                    kind=kind, target=target)

    @_translate_errors
    def list_instance_policy_assignments(
            self, kind: str | None = None, target: str | None = None
    ) -> list[InstancePolicyAssignmentRecord]:
        assignments = models.InstancePolicyAssignment
        query = sa.select(assignments).order_by(assignments.target_kind,
                                                assignments.target_id)
        if kind is not None:
            query = query.where(assignments.target_kind == kind)
        if target is not None:
            query = query.where(assignments.target_id == target)
        with self._reader() as session:
            return [_record(InstancePolicyAssignmentRecord, row,
                            kind="target_kind", target="target_id")
                    for row in session.scalars(query)]

    @_translate_errors
    def instance_policies_for(
            self, subjects: Sequence[tuple[str, str | None]]
    ) -> list[InstancePolicyRecord | None]:
        """The policy version each ``(instance, image)`` is held to now,
        in order: the instance's own assignment if it has one, else its
        image's (``image`` as the trusted caller named it; None: no
        image), else None. One read transaction."""
        assignments = models.InstancePolicyAssignment
        table = models.InstancePolicy
        instances = sorted({i for i, _image in subjects})
        images = sorted({m for _i, m in subjects if m is not None})
        chosen: dict[tuple[str, str], tuple[str, int | None]] = {}
        with self._reader() as session:
            for kind, targets in (("instance", instances),
                                  ("image", images)):
                for start in range(0, len(targets), 500):
                    for row in session.execute(
                            sa.select(assignments.target_id,
                                      assignments.policy_name,
                                      assignments.policy_version)
                            .where(assignments.target_kind == kind,
                                   assignments.target_id.in_(
                                       targets[start:start + 500]))):
                        chosen[(kind, row[0])] = (row[1], row[2])
            versions: dict[tuple[str, int | None], InstancePolicyRecord] = {}
            for name, version in set(chosen.values()):
                query = sa.select(table).where(table.name == name)
                if version is None:
                    query = query.order_by(table.version.desc()).limit(1)
                else:
                    query = query.where(table.version == version)
                row = session.scalars(query).first()
                if row is not None:
                    versions[(name, version)] = _record(
                        InstancePolicyRecord, row)
        out: list[InstancePolicyRecord | None] = []
        for instance, image in subjects:
            pick = chosen.get(("instance", instance))
            if pick is None and image is not None:
                pick = chosen.get(("image", image))
            if pick is not None and pick not in versions:
                # An assignment to a policy (version) that is gone must
                # not read as "no policy", a lower bar: fail closed.
                raise exception.InstancePolicyNotFound(
                    policy=pick[0],
                    version="latest" if pick[1] is None else pick[1])
            out.append(None if pick is None else versions.get(pick))
        return out

    @_translate_errors
    def instance_challenges(self, nonces: Sequence[str]
                            ) -> dict[str, InstanceChallengeRecord]:
        """The stored challenges of ``nonces`` (SHA-256s), read only (to
        learn the image their caller named before they are spent)."""
        wanted = sorted({n for n in nonces if isinstance(n, str)})
        table = models.InstanceChallenge.__table__
        found: dict[str, InstanceChallengeRecord] = {}
        with self._reader() as session:
            for start in range(0, len(wanted), 500):
                for row in session.execute(
                        sa.select(*_CHALLENGE_COLUMNS).where(
                            table.c.nonce_sha256.in_(
                                wanted[start:start + 500]))).tuples():
                    found[row[0]] = InstanceChallengeRecord(*row)
        return found

    # -- verdicts

    @_translate_errors
    @_retry_deadlock
    def add_verdicts(self, verdicts: Sequence[NewVerdict],
                     ima_states: Sequence[IMAState] = ()) -> int:
        """Store a batch of verdicts as they are (unsigned ones, or tokens
        signed elsewhere); returns the number stored. Each gets the next
        sequence number, as in :meth:`record_verdicts`."""
        return len(self._store_verdicts(verdicts, ima_states, None))

    @_translate_errors
    @_retry_deadlock
    def record_verdicts(self, verdicts: Sequence[NewVerdict],
                        ima_states: Sequence[IMAState],
                        sign: SignFunction) -> list[tuple[int, str]]:
        """Store a batch of verdicts in one transaction (all or none), each
        signed by ``sign(index, sequence)`` with the sequence number the
        database allocated for it in this transaction; returns (sequence,
        token) per verdict, in order.

        Numbers come from the one-row ``verdict_sequence`` table, taken
        with an atomic increment whose lock lasts until the commit: of two
        batches that store verdicts for one host (two conductors after a
        ring change), the one stored later has the greater numbers, on
        SQLite, PostgreSQL and MariaDB alike. Consumers order a host's
        verdicts by this number, never by a conductor's clock. On a retry
        (deadlock) ``sign`` is called again with new numbers.

        ``ima_states`` are the IMA replay states the same attestations
        moved their hosts to, written unconditionally (last writer wins,
        as :meth:`save_ima_state` without ``expected``) in the same
        transaction: a conductor's batch costs one commit, and a stored
        verdict never runs ahead of, or behind, the replay state it used.

        :raises HostNotFound: a verdict or a state names a host that does
            not exist.
        """
        if not callable(sign):
            raise exception.InvalidParameterValue(
                name="sign", reason="must be a function (index, sequence) "
                "-> signed result")
        return self._store_verdicts(verdicts, ima_states, sign)

    def _store_verdicts(self, verdicts: Sequence[NewVerdict],
                        ima_states: Sequence[IMAState],
                        sign: SignFunction | None
                        ) -> list[tuple[int, str]]:
        rows = []
        for verdict in verdicts:
            if not isinstance(verdict, NewVerdict):
                raise exception.InvalidParameterValue(
                    name="verdicts", reason="items must be NewVerdict")
            rows.append(verdict._row())
        states = self._ima_state_rows(ima_states)
        if not rows and not states:
            return []
        stored: list[tuple[int, str]] = []
        try:
            with self._writer() as session:
                if states:
                    self._upsert_ima_states(session, states)
                # Last before the inserts: the sequence row stays locked
                # until the commit, so hold it as briefly as possible.
                first = self._allocate_sequences(session, len(rows))
                for index, row in enumerate(rows):
                    row["sequence"] = first + index
                    if sign is not None:
                        row["signed_result"] = sign(index, row["sequence"])
                    stored.append((row["sequence"], row["signed_result"]))
                for start in range(0, len(rows), _VERDICT_CHUNK):
                    session.execute(_VERDICTS.insert(),
                                    rows[start:start + _VERDICT_CHUNK])
        except db_exc.DBReferenceError as exc:
            raise exception.HostNotFound(
                host=self._missing_hosts(
                    {r["host_id"] for r in rows}
                    | {s["host_id"] for s in states.values()})) from exc
        return stored

    @staticmethod
    def _allocate_sequences(session: orm.Session, count: int) -> int:
        """Take ``count`` sequence numbers; returns the first."""
        if not count:
            return 0
        table = models.VerdictSequence.__table__
        updated = session.execute(
            sa.update(table).where(table.c.id == 1)
            .values(last_value=table.c.last_value + count))
        if updated.rowcount != 1:
            raise exception.DatabaseError(
                reason="the verdict_sequence row is missing: run "
                "'trusted-pools-manage db sync'")
        last = session.scalar(sa.select(table.c.last_value)
                              .where(table.c.id == 1))
        return int(last) - count + 1

    def _ima_state_rows(self, states: Sequence[IMAState]
                        ) -> dict[int, dict[str, Any]]:
        """Validated rows by host id (the last state of a host wins)."""
        now = self._clock()
        rows: dict[int, dict[str, Any]] = {}
        for state in states:
            if not isinstance(state, IMAState):
                raise exception.InvalidParameterValue(
                    name="ima_states", reason="items must be IMAState")
            for name in ("entries", "reset_count", "restart_count"):
                _count(getattr(state, name), name)
            rows[state.host_id] = {
                "host_id": state.host_id, "entries": state.entries,
                "pcr_values": dict(state.pcr_values),
                "reset_count": state.reset_count,
                "restart_count": state.restart_count, "updated_at": now}
        return rows

    @staticmethod
    def _upsert_ima_states(session: orm.Session,
                           rows: dict[int, dict[str, Any]]) -> None:
        """Update the hosts that have a state, insert the others: two
        executemany statements instead of one round trip per host."""
        table = models.IMAState.__table__
        ids = list(rows)
        existing: set[int] = set()
        for start in range(0, len(ids), _VERDICT_CHUNK):
            existing.update(session.scalars(
                sa.select(table.c.host_id).where(table.c.host_id.in_(
                    ids[start:start + _VERDICT_CHUNK]))))
        columns = ("entries", "pcr_values", "reset_count", "restart_count",
                   "updated_at")
        # Bind names must differ from the column names they set.
        updates = [{"b_" + name: row[name]
                    for name in ("host_id",) + columns}
                   for i, row in rows.items() if i in existing]
        inserts = [rows[i] for i in ids if i not in existing]
        if updates:
            session.execute(
                sa.update(table)
                .where(table.c.host_id == sa.bindparam("b_host_id"))
                .values({name: sa.bindparam("b_" + name,
                                            type_=table.c[name].type)
                         for name in columns}),
                updates)
        if inserts:
            session.execute(table.insert(), inserts)

    def _missing_hosts(self, host_ids: set[int]) -> str:
        with self._reader() as session:
            known = set(session.scalars(sa.select(models.Host.id).where(
                models.Host.id.in_(host_ids))))
        return ", ".join(str(i) for i in sorted(host_ids - known)) or "?"

    @_translate_errors
    def latest_verdicts(self, host_ids: Iterable[int] | None = None
                        ) -> list[Verdict]:
        """The newest verdict (by sequence: stored last) of each host that
        has one, ordered by host id; all hosts when ``host_ids`` is None."""
        # Driven from hosts: one index probe on (host_id, sequence) per
        # host, whatever the length of the history.
        host = models.Host
        newer = orm.aliased(models.Verdict)
        newest_id = (sa.select(newer.id)
                     .where(newer.host_id == host.id)
                     .order_by(newer.sequence.desc())
                     .limit(1)
                     .correlate(host)
                     .scalar_subquery())
        query = (sa.select(*_VERDICT_COLUMNS)
                 .select_from(host)
                 .join(_VERDICTS, _VERDICTS.c.id == newest_id))
        if host_ids is not None:
            wanted = sorted(set(host_ids))
            if not wanted:
                return []
            query = query.where(host.id.in_(wanted))
        query = query.order_by(host.id)
        with self._reader() as session:
            return [Verdict(*row) for row in session.execute(query)]

    @_translate_errors
    def latest_clock_verdict(self, host_id: int, generation: int
                             ) -> Verdict | None:
        """The newest verdict of ``host_id`` made under enrollment
        ``generation`` that carries a TPM clock, or None: a conductor's
        replay baseline must come from the TPM registered now."""
        query = (sa.select(*_VERDICT_COLUMNS)
                 .where(_VERDICTS.c.host_id == host_id,
                        _VERDICTS.c.registration_generation == generation,
                        _VERDICTS.c.quote_clock.is_not(None))
                 .order_by(_VERDICTS.c.sequence.desc())
                 .limit(1))
        with self._reader() as session:
            row = session.execute(query).first()
            return None if row is None else Verdict(*row)

    @_translate_errors
    def verdicts_since(self, since: datetime.datetime,
                       after_id: int | None = None,
                       limit: int | None = None) -> list[Verdict]:
        """Verdicts issued after ``since``, oldest first.

        Pages are exact with keyset pagination: pass the last verdict's
        ``issued_at`` as ``since`` and its ``id`` as ``after_id`` to get
        the verdicts issued at that same instant that did not fit.
        """
        since = _as_utc(since, "since")
        verdict = models.Verdict
        if after_id is None:
            condition = verdict.issued_at > since
        else:
            condition = sa.or_(verdict.issued_at > since,
                               sa.and_(verdict.issued_at == since,
                                       verdict.id > after_id))
        query = (sa.select(*_VERDICT_COLUMNS).where(condition)
                 .order_by(verdict.issued_at, verdict.id))
        if limit is not None:
            query = query.limit(max(_count(limit, "limit"), 1))
        with self._reader() as session:
            return [Verdict(*row) for row in session.execute(query)]

    @_translate_errors
    def verdict_history(self, host_id: int, limit: int = 100,
                        before_sequence: int | None = None
                        ) -> list[Verdict]:
        """A host's verdicts, newest (greatest sequence) first;
        ``before_sequence`` (keyset pagination: the last sequence of the
        previous page) gives the older ones."""
        verdict = models.Verdict
        query = (sa.select(*_VERDICT_COLUMNS)
                 .where(verdict.host_id == host_id)
                 .order_by(verdict.sequence.desc())
                 .limit(max(_count(limit, "limit"), 1)))
        if before_sequence is not None:
            query = query.where(verdict.sequence < _count(
                before_sequence, "marker"))
        with self._reader() as session:
            return [Verdict(*row) for row in session.execute(query)]

    @_translate_errors
    @_retry_deadlock
    def purge_verdicts(self, before: datetime.datetime) -> int:
        """Delete verdicts issued before ``before``; returns how many.

        The newest verdict (greatest sequence) of each host is kept
        whatever its age, so :meth:`latest_verdicts` still answers for
        every host.
        """
        before = _as_utc(before, "before")
        verdict = models.Verdict
        newer = orm.aliased(models.Verdict)
        has_newer = (sa.select(newer.id)
                     .where(newer.host_id == verdict.host_id)
                     .where(newer.sequence > verdict.sequence)
                     .exists())
        with self._writer() as session:
            ids = list(session.scalars(sa.select(verdict.id).where(
                verdict.issued_at < before).where(has_newer)))
            for start in range(0, len(ids), _VERDICT_CHUNK):
                session.execute(sa.delete(verdict).where(
                    verdict.id.in_(ids[start:start + _VERDICT_CHUNK])))
            return len(ids)

    # -- IMA replay state

    @_translate_errors
    def get_ima_state(self, host_id: int) -> IMAState | None:
        """Where the host's IMA replay stopped, or None (replay from 0)."""
        with self._reader() as session:
            row = session.get(models.IMAState, host_id)
            return None if row is None else _record(IMAState, row)

    @_translate_errors
    @_retry_deadlock
    def save_ima_state(self, state: IMAState,
                       expected: IMAState | None | object = UNCONDITIONAL
                       ) -> IMAState:
        """Store the IMA replay state of a host, as compare-and-set.

        ``expected`` is the state the caller's replay started from (None:
        there was none). The write only happens if the stored state is
        still that one (same entries, reset and restart counts), so two
        conductors that both attested the host cannot move it backwards.
        Left out (:data:`UNCONDITIONAL`), the state is written whatever is
        stored: last writer wins.

        :raises ConcurrentUpdate: the stored state changed meanwhile.
        :raises HostNotFound: no such host.
        """
        for name in ("entries", "reset_count", "restart_count"):
            _count(getattr(state, name), name)
        if expected is not None and expected is not UNCONDITIONAL and (
                not isinstance(expected, IMAState)
                or expected.host_id != state.host_id):
            raise exception.InvalidParameterValue(
                name="expected", reason="is the state of another host")
        values = {"entries": state.entries,
                  "pcr_values": dict(state.pcr_values),
                  "reset_count": state.reset_count,
                  "restart_count": state.restart_count,
                  "updated_at": self._clock()}
        what = "IMA state of host %s" % state.host_id
        try:
            with self._writer() as session:
                if expected is UNCONDITIONAL:
                    self._host_row(session, state.host_id)
                    row = session.get(models.IMAState, state.host_id)
                    if row is None:
                        session.add(models.IMAState(host_id=state.host_id,
                                                    **values))
                    else:
                        for name, value in values.items():
                            setattr(row, name, value)
                    session.flush()
                elif expected is None:
                    self._host_row(session, state.host_id)
                    session.add(models.IMAState(host_id=state.host_id,
                                                **values))
                    session.flush()
                else:
                    ima = models.IMAState
                    updated = session.execute(
                        sa.update(ima)
                        .where(ima.host_id == state.host_id,
                               ima.entries == expected.entries,
                               ima.reset_count == expected.reset_count,
                               ima.restart_count == expected.restart_count)
                        .values(**values)).rowcount
                    if updated != 1:
                        self._host_row(session, state.host_id)
                        raise exception.ConcurrentUpdate(
                            what=what, reason="expected %d entries at "
                            "reset %d restart %d" % (
                                expected.entries, expected.reset_count,
                                expected.restart_count))
        except db_exc.DBDuplicateEntry as exc:
            raise exception.ConcurrentUpdate(
                what=what, reason="a first state was stored "
                "concurrently") from exc
        return dataclasses.replace(state, updated_at=values["updated_at"])

    @_translate_errors
    @_retry_deadlock
    def delete_ima_state(self, host_id: int) -> None:
        """Forget the replay state: the next appraisal replays from 0."""
        with self._writer() as session:
            session.execute(sa.delete(models.IMAState).where(
                models.IMAState.host_id == host_id))

    # -- conductors (heartbeats for the hash ring)

    @_translate_errors
    @_retry_deadlock
    def register_conductor(self, hostname: str,
                           update_existing: bool = False,
                           public_key: str | None = None,
                           key_id: str | None = None
                           ) -> ConductorRecord:
        """Mark a conductor online. An online row of the same name is a
        :class:`ConductorAlreadyRegistered` unless ``update_existing``
        (a restart after a crash that left the row online).

        ``public_key`` (PEM) and ``key_id`` publish the conductor's
        result-signing key for trusted-pools-api's JWKS; given together or
        not at all (a registration without them keeps the stored ones)."""
        _non_empty(hostname, "hostname")
        if (public_key is None) != (key_id is None):
            raise exception.InvalidParameterValue(
                name="public_key", reason="public_key and key_id go together")
        if key_id is not None:
            _non_empty(key_id, "key_id", limit=64)
            _non_empty(public_key, "public_key", limit=4096)
        now = self._clock()
        try:
            with self._writer() as session:
                row = session.scalars(sa.select(models.Conductor).where(
                    models.Conductor.hostname == hostname)).one_or_none()
                if row is None:
                    row = models.Conductor(hostname=hostname,
                                           created_at=now)
                    session.add(row)
                elif row.online and not update_existing:
                    raise exception.ConductorAlreadyRegistered(
                        conductor=hostname)
                row.online = True
                row.updated_at = now
                if key_id is not None:
                    row.public_key = public_key
                    row.key_id = key_id
                session.flush()
                return _record(ConductorRecord, row)
        except db_exc.DBDuplicateEntry as exc:
            raise exception.ConductorAlreadyRegistered(
                conductor=hostname) from exc

    @_translate_errors
    @_retry_deadlock
    def touch_conductor(self, hostname: str) -> None:
        """Heartbeat: the conductor is alive now."""
        conductor = models.Conductor
        with self._writer() as session:
            updated = session.execute(
                sa.update(conductor)
                .where(conductor.hostname == hostname,
                       conductor.online == sa.true())
                .values(updated_at=self._clock())).rowcount
            if updated != 1:
                raise exception.ConductorNotFound(conductor=hostname)

    @_translate_errors
    def list_alive_conductors(self, timeout: float) -> list[str]:
        """Online conductors whose last heartbeat is younger than
        ``timeout`` seconds, sorted (input to the hash ring)."""
        if timeout <= 0:
            raise exception.InvalidParameterValue(
                name="timeout", reason="must be positive (seconds)")
        oldest = self._clock() - datetime.timedelta(seconds=timeout)
        conductor = models.Conductor
        query = (sa.select(conductor.hostname)
                 .where(conductor.online == sa.true(),
                        conductor.updated_at >= oldest)
                 .order_by(conductor.hostname))
        with self._reader() as session:
            return list(session.scalars(query))

    @_translate_errors
    def list_conductors(self) -> list[ConductorRecord]:
        with self._reader() as session:
            return [_record(ConductorRecord, row) for row in session.scalars(
                sa.select(models.Conductor).order_by(
                    models.Conductor.hostname))]

    @_translate_errors
    @_retry_deadlock
    def unregister_conductor(self, hostname: str) -> None:
        """Graceful stop: mark offline so the ring drops it at once."""
        conductor = models.Conductor
        with self._writer() as session:
            updated = session.execute(
                sa.update(conductor)
                .where(conductor.hostname == hostname,
                       conductor.online == sa.true())
                .values(online=False, updated_at=self._clock())).rowcount
            if updated != 1:
                raise exception.ConductorNotFound(conductor=hostname)

    # -- host operations (management work the owning conductor runs)

    @_translate_errors
    @_retry_deadlock
    def create_operation(self, hostname: str, kind: str, conductor: str, *,
                         request_id: str | None = None,
                         requested_by: str | None = None,
                         exclusive: bool = False) -> HostOperation:
        """Record a pending operation. ``exclusive``: refuse it with
        :class:`OperationInProgress` while another pending operation of
        the same kind on the host exists (the unique ``lock`` column
        decides, so two conductors or threads cannot both pass)."""
        _non_empty(hostname, "hostname")
        _choice(kind, models.OPERATION_KINDS, "kind")
        _non_empty(conductor, "conductor")
        lock = "%s:%s" % (kind, hostname) if exclusive else None
        row = models.HostOperation(
            id=str(uuid_lib.uuid4()), hostname=hostname, kind=kind,
            state="pending", conductor=conductor, lock=lock,
            request_id=(request_id[:64] if isinstance(request_id, str)
                        else None),
            requested_by=(requested_by[:255]
                          if isinstance(requested_by, str) else None),
            created_at=self._clock())
        try:
            with self._writer() as session:
                session.add(row)
                session.flush()
                return _record(HostOperation, row)
        except db_exc.DBDuplicateEntry as exc:
            with self._reader() as session:
                other = session.scalars(sa.select(models.HostOperation.id)
                                        .where(models.HostOperation.lock
                                               == lock)).first()
            raise exception.OperationInProgress(
                host=hostname, kind=kind, operation=other or "?") from exc

    @_translate_errors
    @_retry_deadlock
    def finish_operation(self, operation_id: str, *, result: Any = None,
                         error_type: str | None = None,
                         error: dict[str, Any] | None = None
                         ) -> HostOperation:
        """End a pending operation: ``done`` with ``result``, or
        ``failed`` when ``error_type`` is given. An operation that already
        ended is a :class:`ConcurrentUpdate` (it is never rewritten)."""
        state = "failed" if error_type is not None else "done"
        with self._writer() as session:
            row = session.get(models.HostOperation, operation_id)
            if row is None:
                raise exception.OperationNotFound(host="?",
                                                  operation=operation_id)
            if row.state != "pending":
                raise exception.ConcurrentUpdate(
                    what="operation %s" % operation_id,
                    reason="it already ended (%s)" % row.state)
            row.state = state
            row.lock = None
            row.result = result if state == "done" else None
            row.error_type = error_type
            row.error = error
            row.updated_at = self._clock()
            session.flush()
            return _record(HostOperation, row)

    @_translate_errors
    def get_operation(self, operation_id: str,
                      hostname: str | None = None) -> HostOperation:
        """One operation (of ``hostname``, when given)."""
        with self._reader() as session:
            row = session.get(models.HostOperation, operation_id) \
                if isinstance(operation_id, str) else None
            if row is None or (hostname is not None
                               and row.hostname != hostname):
                raise exception.OperationNotFound(host=hostname or "?",
                                                  operation=operation_id)
            return _record(HostOperation, row)

    @_translate_errors
    def list_operations(self, hostname: str, limit: int = 100
                        ) -> list[HostOperation]:
        """A host's operations, newest first."""
        table = models.HostOperation
        with self._reader() as session:
            return [_record(HostOperation, row) for row in session.scalars(
                sa.select(table).where(table.hostname == hostname)
                .order_by(table.created_at.desc(), table.id)
                .limit(_count(limit, "limit")))]

    @_translate_errors
    def latest_done_operation(self, hostname: str, kind: str
                              ) -> HostOperation | None:
        """The newest operation of ``kind`` on ``hostname`` that ended
        done (e.g. the last vTPM report), or None."""
        _choice(kind, models.OPERATION_KINDS, "kind")
        table = models.HostOperation
        with self._reader() as session:
            row = session.scalars(
                sa.select(table).where(table.hostname == hostname,
                                       table.kind == kind,
                                       table.state == "done")
                .order_by(table.updated_at.desc(), table.id).limit(1)
            ).first()
            return None if row is None else _record(HostOperation, row)

    @_translate_errors
    @_retry_deadlock
    def purge_operations(self, before: datetime.datetime) -> int:
        """Delete operations that ended before ``before``; returns how
        many. Pending ones are kept whatever their age (their conductor
        fails them if it restarted)."""
        before = _as_utc(before, "before")
        table = models.HostOperation
        with self._writer() as session:
            return session.execute(sa.delete(table).where(
                table.state != "pending",
                sa.func.coalesce(table.updated_at, table.created_at)
                < before)).rowcount

    @_translate_errors
    @_retry_deadlock
    def fail_pending_operations(self, conductor: str, reason: str) -> int:
        """Fail every operation ``conductor`` left pending (it restarted:
        the work died with the old process); frees their locks."""
        table = models.HostOperation
        # Recorded as the conductor records a raised error (class name,
        # message, kwargs), so the API renders it the same way.
        error = exception.TemporaryFailure(reason=reason)
        with self._writer() as session:
            return session.execute(
                sa.update(table)
                .where(table.conductor == conductor,
                       table.state == "pending")
                .values(state="failed", lock=None,
                        error_type=type(error).__name__,
                        error={"message": error.message,
                               "kwargs": {"reason": reason}},
                        updated_at=self._clock())).rowcount

    # -- instance verdicts (deep attestation)

    @_translate_errors
    @_retry_deadlock
    def save_instance_verdicts(self, records: Sequence[InstanceVerdictRecord]
                               ) -> None:
        """Store each instance's latest verdict (replacing its previous
        one, whichever host that was on) in one transaction: a delete and
        a bulk insert through Core (a batch is up to thousands of rows;
        the ORM's per-row get-and-update cost more than verifying them).
        The last record of an instance given twice wins."""
        rows = _instance_verdict_rows(records)
        if rows:
            with self._writer() as session:
                _replace_instance_verdicts(session, rows)

    # -- instance challenges (deep attestation nonces)

    @_translate_errors
    @_retry_deadlock
    def add_instance_challenge(self, nonce_sha256: str, instance: str,
                               host: str | None, conductor: str,
                               issued_at: datetime.datetime,
                               expires_at: datetime.datetime,
                               limit: int, image: str | None = None) -> None:
        """Keep a nonce issued to ``instance`` (on ``host``, if named; of
        ``image``, if the trusted caller named it).
        Expired challenges are deleted first; past ``limit`` outstanding
        ones, :class:`TemporaryFailure` (nothing stored)."""
        _non_empty(nonce_sha256, "nonce_sha256", limit=64)
        _non_empty(instance, "instance", limit=36)
        if host is not None:
            _non_empty(host, "host", limit=255)
        if image is not None:
            _non_empty(image, "image", limit=36)
        _non_empty(conductor, "conductor", limit=255)
        issued = _as_utc(issued_at, "issued_at")
        expires = _as_utc(expires_at, "expires_at")
        if expires <= issued:
            raise exception.InvalidParameterValue(
                name="expires_at", reason="is not after issued_at")
        _count(limit, "limit")
        table = models.InstanceChallenge.__table__
        with self._writer() as session:
            session.execute(sa.delete(table).where(
                table.c.expires_at <= issued))
            outstanding = session.execute(
                sa.select(sa.func.count()).select_from(table)).scalar_one()
            if outstanding >= limit:
                raise exception.TemporaryFailure(
                    reason="%d instance challenges are outstanding"
                    % outstanding)
            session.execute(sa.insert(table).values(
                nonce_sha256=nonce_sha256, instance=instance, host=host,
                conductor=conductor, issued_at=issued, expires_at=expires,
                used_at=None, image=image))

    @_translate_errors
    @_retry_deadlock
    def spend_instance_challenges(
            self, nonces: Sequence[str], now: datetime.datetime,
            decide: Callable[[int, InstanceChallengeRecord | None], bool],
            verdicts: Mapping[int, InstanceVerdictRecord] | None = None
    ) -> list[bool]:
        """Spend a batch's nonces (their SHA-256s) and store the verdicts
        they earned, in one transaction.

        ``decide(index, challenge)`` is asked for each nonce with its
        stored challenge (None if there is none or it expired by ``now``)
        and says whether it may be spent now; the rows are locked
        (``SELECT ... FOR UPDATE``; SQLite's writer holds the database),
        so two conductors cannot both spend one nonce. ``verdicts``
        (index -> record) are stored for the nonces spent, and only for
        them. Returns, per nonce, whether it was spent."""
        if not isinstance(nonces, (list, tuple)) or not all(
                isinstance(n, str) for n in nonces):
            raise exception.InvalidParameterValue(
                name="nonces", reason="expected a list of digests")
        now = _as_utc(now, "now")
        table = models.InstanceChallenge.__table__
        wanted = sorted(set(nonces))
        spent = [False] * len(nonces)
        with self._writer() as session:
            found: dict[str, InstanceChallengeRecord] = {}
            for start in range(0, len(wanted), 500):
                for row in session.execute(_SELECT_CHALLENGES, {
                        "nonces": wanted[start:start + 500]}).tuples():
                    found[row[0]] = InstanceChallengeRecord(*row)
            spending: set[str] = set()
            for index, digest in enumerate(nonces):
                challenge = found.get(digest)
                if challenge is not None and challenge.expires_at <= now:
                    challenge = None
                elif challenge is not None and digest in spending:
                    # Given twice in one batch: the second use is a
                    # replay of the first.
                    challenge = dataclasses.replace(challenge, used_at=now)
                if decide(index, challenge):
                    spent[index] = True
                    spending.add(digest)
            ordered = sorted(spending)
            for start in range(0, len(ordered), 500):
                chunk = ordered[start:start + 500]
                result = session.execute(_SPEND_CHALLENGES, {
                    "nonces": chunk, "now": now})
                if result.rowcount != len(chunk):
                    # Only a backend that did not lock the rows gets here:
                    # spend nothing, let the caller try again.
                    raise exception.TemporaryFailure(
                        reason="instance challenges were spent concurrently")
            rows = _instance_verdict_rows(
                [record for index, record in sorted((verdicts or {}).items())
                 if spent[index]])
            if rows:
                _replace_instance_verdicts(session, rows)
        return spent

    @_translate_errors
    def instance_verdict(self, instance: str) -> InstanceStanding:
        """The instance's stored verdict and its host's standing since.

        :raises InstanceVerdictNotFound: the instance was never attested
            (or its host was removed, with its instances' verdicts).
        """
        verdicts = models.Verdict
        with self._reader() as session:
            row = session.get(models.InstanceVerdict, instance) \
                if isinstance(instance, str) else None
            if row is None:
                raise exception.InstanceVerdictNotFound(instance=instance)
            record = _record(InstanceVerdictRecord, row)
            host = self._host_row(session, row.host_id)
            fell = session.execute(
                sa.select(verdicts.status, verdicts.sequence)
                .where(verdicts.host_id == row.host_id,
                       verdicts.sequence > (row.host_sequence or 0),
                       verdicts.status != "trusted")
                .order_by(verdicts.sequence).limit(1)).first()
            return InstanceStanding(
                verdict=record, hostname=host.hostname,
                host_state=host.state,
                enrollment_generation=host.enrollment_generation,
                host_fell=None if fell is None else (fell[0], fell[1]))

    @_translate_errors
    def instance_hosts(self, instances: Sequence[str]) -> dict[str, str]:
        """Where each instance's stored verdict was made: {instance: host
        name}, for those of ``instances`` that have one."""
        table, hosts = models.InstanceVerdict, models.Host
        wanted = sorted({i for i in instances if isinstance(i, str)})
        found: dict[str, str] = {}
        with self._reader() as session:
            for start in range(0, len(wanted), 500):
                found.update(session.execute(
                    sa.select(table.instance, hosts.hostname)
                    .join(hosts, hosts.id == table.host_id)
                    .where(table.instance.in_(wanted[start:start + 500])))
                    .tuples().all())
        return found

    # -- host binding keys and secrets (the key service)

    @_translate_errors
    @_retry_deadlock
    def set_binding_key(self, host_id: int, generation: int, public: bytes,
                        name: bytes) -> BindingKeyRecord:
        """Store (or replace) the host's checked binding key. Refused when
        the host's enrollment moved past ``generation`` meanwhile: a key
        certified by an AK that is no longer the host's is never kept."""
        with self._writer() as session:
            host = self._host_row(session, host_id)
            if host.state != "enrolled" or \
                    host.enrollment_generation != generation:
                raise exception.Conflict(
                    reason="host %s is %s under enrollment generation %d, "
                    "not %d: its binding key must be certified again"
                    % (host.hostname, host.state,
                       host.enrollment_generation, generation))
            row = session.get(models.HostBindingKey, host_id)
            if row is None:
                row = models.HostBindingKey(host_id=host_id)
                session.add(row)
            row.generation = generation
            row.public = bytes(public)
            row.name_hex = bytes(name).hex()
            row.certified_at = self._clock()
            session.flush()
            return _record(BindingKeyRecord, row)

    @_translate_errors
    def get_binding_key(self, host_id: int) -> BindingKeyRecord | None:
        with self._reader() as session:
            row = session.get(models.HostBindingKey, host_id)
            return None if row is None else _record(BindingKeyRecord, row)

    @_translate_errors
    @_retry_deadlock
    def create_secret(self, record: SecretRecord) -> SecretRecord:
        _non_empty(record.id, "id", limit=36)
        _non_empty(record.project_id, "project_id")
        with self._writer() as session:
            row = models.Secret(**{f.name: getattr(record, f.name)
                                   for f in dataclasses.fields(record)})
            session.add(row)
            session.flush()
            return _record(SecretRecord, row)

    @_translate_errors
    def get_secret(self, secret_id: str) -> SecretRecord:
        with self._reader() as session:
            row = session.get(models.Secret, secret_id)
            if row is None:
                raise exception.SecretNotFound(secret=secret_id)
            return _record(SecretRecord, row)

    @_translate_errors
    @_retry_deadlock
    def delete_secret(self, secret_id: str) -> None:
        with self._writer() as session:
            deleted = session.execute(sa.delete(models.Secret).where(
                models.Secret.id == secret_id)).rowcount
            if not deleted:
                raise exception.SecretNotFound(secret=secret_id)

    # -- key releases (trusted_pools.conductor.keys)

    @_translate_errors
    @_retry_deadlock
    def record_key_release(self, record: KeyReleaseRecord
                           ) -> KeyReleaseRecord:
        """Store one release or refusal; returns it with its id."""
        _choice(record.outcome, models.KEY_RELEASE_OUTCOMES, "outcome")
        _non_empty(record.secret_id, "secret_id", limit=36)
        values = {f.name: getattr(record, f.name)
                  for f in dataclasses.fields(record) if f.name != "id"}
        # Text the request carried is cut to the columns, not refused:
        # the answer (release or refusal) stands without a perfect record.
        for name, limit in (("host", 255), ("owner", 255),
                            ("requested_by", 255), ("request_id", 64),
                            ("project_id", 255), ("conductor", 255)):
            if isinstance(values[name], str):
                values[name] = values[name][:limit]
        values["reason"] = values["reason"][:4000]
        values["created_at"] = _as_utc(record.created_at, "created_at")
        with self._writer() as session:
            row = models.KeyRelease(**values)
            session.add(row)
            session.flush()
            return _record(KeyReleaseRecord, row)

    @_translate_errors
    def list_key_releases(self, *, limit: int = 100,
                          before_id: int | None = None,
                          host: str | None = None,
                          outcome: str | None = None,
                          secret_id: str | None = None
                          ) -> list[KeyReleaseRecord]:
        """Releases and refusals, newest first; ``before_id`` (keyset
        pagination) gives those older than that record."""
        table = models.KeyRelease
        query = _newest_first(table, limit, before_id, host)
        if outcome is not None:
            query = query.where(table.outcome == _choice(
                outcome, models.KEY_RELEASE_OUTCOMES, "outcome"))
        if secret_id is not None:
            query = query.where(table.secret_id == secret_id)
        with self._reader() as session:
            return [_record(KeyReleaseRecord, row)
                    for row in session.scalars(query)]

    @_translate_errors
    @_retry_deadlock
    def purge_key_releases(self, before: datetime.datetime) -> int:
        """Delete release and refusal records made before ``before``;
        returns how many."""
        return self._purge_created_before(models.KeyRelease, before)

    # -- distrust actions (reported through the API)

    @_translate_errors
    @_retry_deadlock
    def record_distrust_actions(self, records: Sequence[DistrustActionRecord]
                                ) -> list[DistrustActionRecord]:
        """Store reported actions in one transaction; returns them with
        their ids."""
        rows = []
        for record in records:
            _choice(record.outcome, models.DISTRUST_OUTCOMES, "outcome")
            _non_empty(record.host, "host")
            _non_empty(record.action, "action", limit=64)
            _non_empty(record.reported_by, "reported_by")
            values = {f.name: getattr(record, f.name)
                      for f in dataclasses.fields(record) if f.name != "id"}
            values["created_at"] = _as_utc(record.created_at, "created_at")
            rows.append(models.DistrustAction(**values))
        with self._writer() as session:
            session.add_all(rows)
            session.flush()
            return [_record(DistrustActionRecord, row) for row in rows]

    @_translate_errors
    def list_distrust_actions(self, *, limit: int = 100,
                              before_id: int | None = None,
                              host: str | None = None
                              ) -> list[DistrustActionRecord]:
        """Reported actions, newest first (keyset pages by id)."""
        query = _newest_first(models.DistrustAction, limit, before_id, host)
        with self._reader() as session:
            return [_record(DistrustActionRecord, row)
                    for row in session.scalars(query)]

    @_translate_errors
    @_retry_deadlock
    def purge_distrust_actions(self, before: datetime.datetime) -> int:
        """Delete reported actions made before ``before``; returns how
        many."""
        return self._purge_created_before(models.DistrustAction, before)

    def _purge_created_before(self, table: Any,
                              before: datetime.datetime) -> int:
        """Delete ``table``'s rows whose ``created_at`` is before
        ``before`` (audit records: no row is kept whatever its age)."""
        before = _as_utc(before, "before")
        with self._writer() as session:
            return session.execute(sa.delete(table).where(
                table.created_at < before)).rowcount

    # -- vTPM migrations (trusted_pools.conductor.migration)

    @_translate_errors
    @_retry_deadlock
    def create_vtpm_migration(self, instance: str, source: str,
                              destination: str, kind: str, conductor: str,
                              salt: bytes, *, min_level: int | None = None,
                              request_id: str | None = None,
                              requested_by: str | None = None
                              ) -> VTPMMigrationRecord:
        """Record a requested migration at the instance's next epoch (the
        last committed one + 1). One active migration per instance: a
        second is :class:`MigrationInProgress` (the unique ``lock``)."""
        _non_empty(instance, "instance", limit=36)
        _non_empty(source, "source")
        _non_empty(destination, "destination")
        _choice(kind, models.VTPM_MIGRATION_KINDS, "kind")
        lock = "vtpm:%s" % instance
        now = self._clock()
        try:
            with self._writer() as session:
                epoch = self._vtpm_epoch(session, instance) + 1
                row = models.VTPMMigration(
                    id=str(uuid_lib.uuid4()), instance=instance,
                    source=source, destination=destination, kind=kind,
                    step="requested", epoch=epoch, min_level=min_level,
                    conductor=conductor, lock=lock, salt=bytes(salt),
                    request_id=(request_id[:64] if isinstance(
                        request_id, str) else None),
                    requested_by=(requested_by[:255] if isinstance(
                        requested_by, str) else None),
                    created_at=now, updated_at=now)
                session.add(row)
                session.flush()
                return _record(VTPMMigrationRecord, row)
        except db_exc.DBDuplicateEntry as exc:
            with self._reader() as session:
                other = session.scalars(
                    sa.select(models.VTPMMigration.id).where(
                        models.VTPMMigration.lock == lock)).first()
            raise exception.MigrationInProgress(
                instance=instance, migration=other or "?") from exc

    @staticmethod
    def _vtpm_epoch(session: orm.Session, instance: str) -> int:
        table = models.VTPMMigration
        value = session.scalar(
            sa.select(sa.func.max(table.epoch)).where(
                table.instance == instance,
                table.step.in_(("committed", "completed"))))
        return int(value or 0)

    @_translate_errors
    def vtpm_epoch(self, instance: str) -> int:
        """The instance's current epoch: that of its last committed
        migration (0 if it never moved)."""
        with self._reader() as session:
            return self._vtpm_epoch(session, instance)

    @_translate_errors
    def get_vtpm_migration(self, migration_id: str) -> VTPMMigrationRecord:
        with self._reader() as session:
            row = session.get(models.VTPMMigration, migration_id) \
                if isinstance(migration_id, str) else None
            if row is None:
                raise exception.MigrationNotFound(migration=migration_id)
            return _record(VTPMMigrationRecord, row)

    @_translate_errors
    def list_vtpm_migrations(self, *, instance: str | None = None,
                             active: bool | None = None,
                             conductor: str | None = None,
                             limit: int = 100) -> list[VTPMMigrationRecord]:
        """Migrations, newest first; ``active``: only those not ended (or,
        False, only ended ones)."""
        table = models.VTPMMigration
        query = sa.select(table)
        if instance is not None:
            query = query.where(table.instance == instance)
        if conductor is not None:
            query = query.where(table.conductor == conductor)
        if active is True:
            query = query.where(table.lock.is_not(None))
        elif active is False:
            query = query.where(table.lock.is_(None))
        with self._reader() as session:
            return [_record(VTPMMigrationRecord, row) for row in
                    session.scalars(query.order_by(
                        table.created_at.desc(), table.id)
                        .limit(_count(limit, "limit")))]

    @_translate_errors
    @_retry_deadlock
    def advance_vtpm_migration(self, migration_id: str,
                               expected: Sequence[str], step: str, *,
                               conductor: str | None = None,
                               **values: Any) -> VTPMMigrationRecord:
        """Move a migration to ``step`` if it is in one of ``expected``
        now (compare and set: two conductors, or a worker and the resume
        job, never both move it); else :class:`ConcurrentUpdate`.
        ``conductor``: who must hold it (None: anyone). ``values``:
        ``transport_key``, ``reason``, ``conductor_to`` (take it over).

        ``committed`` also checks that no other migration of the instance
        committed this epoch or a later one; ``completed`` and ``aborted``
        end it (outcome set, lock freed)."""
        _choice(step, models.VTPM_MIGRATION_STEPS, "step")
        now = self._clock()
        with self._writer() as session:
            row = session.get(models.VTPMMigration, migration_id)
            if row is None:
                raise exception.MigrationNotFound(migration=migration_id)
            if row.step not in expected or (
                    conductor is not None and row.conductor != conductor):
                raise exception.ConcurrentUpdate(
                    what="vTPM migration %s" % migration_id,
                    reason="it is at step %s on conductor %s, not %s on %s"
                    % (row.step, row.conductor, "/".join(expected),
                       conductor or "any"))
            if step == "committed":
                if self._vtpm_epoch(session, row.instance) >= row.epoch:
                    raise exception.ConcurrentUpdate(
                        what="vTPM migration %s" % migration_id,
                        reason="epoch %d of instance %s is already "
                        "committed" % (row.epoch, row.instance))
                row.committed_at = now
            if step in ("completed", "aborted"):
                row.lock = None
                row.outcome = step
                row.finished_at = now
            if "transport_key" in values:
                row.transport_key = values["transport_key"]
            if "reason" in values:
                row.reason = values["reason"]
            if values.get("conductor_to"):
                row.conductor = values["conductor_to"]
            row.step = step
            row.updated_at = now
            session.flush()
            return _record(VTPMMigrationRecord, row)

    @_translate_errors
    @_retry_deadlock
    def claim_vtpm_migration(self, migration_id: str, conductor: str,
                             expected_conductor: str) -> VTPMMigrationRecord:
        """Take over an active migration whose conductor
        (``expected_conductor``) is gone; ConcurrentUpdate if someone
        else did first."""
        now = self._clock()
        with self._writer() as session:
            row = session.get(models.VTPMMigration, migration_id)
            if row is None:
                raise exception.MigrationNotFound(migration=migration_id)
            if row.lock is None or row.conductor != expected_conductor:
                raise exception.ConcurrentUpdate(
                    what="vTPM migration %s" % migration_id,
                    reason="it ended or was taken over")
            row.conductor = conductor
            row.updated_at = now
            session.flush()
            return _record(VTPMMigrationRecord, row)


_INSTANCE: Connection | None = None
_INSTANCE_LOCK = threading.Lock()


def get_instance() -> Connection:
    """The process-wide :class:`Connection`, configured from cfg.CONF."""
    global _INSTANCE
    with _INSTANCE_LOCK:
        if _INSTANCE is None:
            from trusted_pools.conf import database as database_conf
            from oslo_config import cfg
            database_conf.register_opts(cfg.CONF)
            _INSTANCE = Connection(make_context_manager())
        return _INSTANCE
