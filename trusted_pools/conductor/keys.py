"""The key service: Nova vTPM secrets, released only to attested hosts.

Secrets are stored encrypted at rest under the conductors' key-encryption
key (KEK, AES-256-GCM, read from ``[key_service] kek_path`` like the
signing key; the secret's id, project and type are the associated data, so
a ciphertext moved to another row does not open). Each secret has an owner
(project, instance) and a policy: the level a host must reach; none means
"trusted at its pool's level" (the host group's own threshold, which a
trusted verdict already met).

A release for host H is answered only if, at that moment:

1. H is enrolled;
2. H's newest verdict was made under its current enrollment, is
   ``trusted``, has not expired (fresh) and reaches the secret's level;
3. H has a binding key certified by its current AK
   (:meth:`ConductorManager.certify_binding_key`).

Then the secret comes back RSA-OAEP encrypted to that binding key, a key
that lives in H's TPM and never leaves it, with a label naming the secret
and H (:func:`trusted_pools.protocol.key_release.release_label`). Whoever
asks in H's name gets only what H's TPM can open: a reply captured on the
bus, or a request another host forges in H's name, is useless.

Every release and every refusal is logged, notified (event types
:data:`RELEASE_EVENT`, :data:`REFUSED_EVENT`) and recorded in the database
(``key_releases``: host, secret id, owner, outcome, the host's standing,
a reason code from :data:`REASON_CODES` and the reason text, who asked;
never the key), where ``GET /v1/key-releases`` and the dashboard read it.
A release is recorded before it is answered: if the record cannot be
written, no key leaves. Refusals are recorded within a budget
(:mod:`trusted_pools.conductor.refusal_budget`: no repeat of the same
refusal within a minute, at most 60 a minute per conductor, and 60 more
for names that are no registered host), since any compute host's Nova
may ask, as often as it likes, in any host's name.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import logging
import os
import stat
import time
import uuid
from typing import Any, Callable, NamedTuple

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from trusted_pools import exception
from trusted_pools.conductor import refusal_budget
from trusted_pools.db import api as db_api
from trusted_pools.protocol import key_release as release
from trusted_pools.tpm import sealing
from trusted_pools.tpm import structures

LOG = logging.getLogger(__name__)

__all__ = ["KeyEncryptionKey", "KeyService", "RELEASE_EVENT",
           "REFUSED_EVENT", "REASON_CODES", "Reason", "load_or_create_kek"]

RELEASE_EVENT = "trusted_pools.secret.release"
REFUSED_EVENT = "trusted_pools.secret.release.refused"

#: Why a release was answered as it was: a bounded set fixed here (the
#: metrics label and the record's ``reason_code``); the text says more.
REASON_CODES = ("released", "not_registered", "not_enrolled", "no_verdict",
                "old_enrollment", "not_trusted", "stale", "below_level",
                "no_binding_key", "binding_key_unusable")


class Reason(NamedTuple):
    """Why a release was refused (or, ``released``, granted)."""

    code: str
    text: str


_KEK_BYTES = 32
_NONCE_BYTES = 12


class KeyEncryptionKey:
    """AES-256-GCM under a 256-bit key; ``kek_id`` names it in each row
    (a short SHA-256 of the key, so rows written under another KEK are
    recognised, not mis-decrypted)."""

    def __init__(self, key: bytes) -> None:
        if not isinstance(key, bytes) or len(key) != _KEK_BYTES:
            raise ValueError("a key-encryption key is %d bytes" % _KEK_BYTES)
        self._aead = AESGCM(key)
        self.kek_id = hashlib.sha256(b"trusted-pools kek\0" + key
                                     ).hexdigest()[:32]

    @staticmethod
    def _aad(secret_id: str, project_id: str, secret_type: str) -> bytes:
        return b"\0".join(part.encode("utf-8") for part in (
            "trusted-pools secret", secret_id, project_id, secret_type))

    def encrypt(self, secret_id: str, project_id: str, secret_type: str,
                payload: bytes) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        return nonce + self._aead.encrypt(
            nonce, payload, self._aad(secret_id, project_id, secret_type))

    def decrypt(self, record: db_api.SecretRecord) -> bytes:
        if record.kek_id != self.kek_id:
            raise exception.SecretUndecryptable(
                secret=record.id, kek_id=self.kek_id,
                reason="it was stored under key-encryption key %s"
                % record.kek_id)
        data = bytes(record.ciphertext)
        try:
            return self._aead.decrypt(
                data[:_NONCE_BYTES], data[_NONCE_BYTES:],
                self._aad(record.id, record.project_id, record.secret_type))
        except (InvalidTag, ValueError):
            raise exception.SecretUndecryptable(
                secret=record.id, kek_id=self.kek_id,
                reason="authentication failed (altered or moved row)"
            ) from None


def load_or_create_kek(path: str) -> KeyEncryptionKey:
    """The KEK in ``path`` (32 random bytes), created with mode 0600 if
    the file does not exist. A file readable by others, or of another
    size, is refused."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    except OSError as error:
        raise exception.KeyEncryptionKeyInvalid(
            path=path, reason=error.strerror) from None
    else:
        with os.fdopen(fd, "wb") as handle:
            handle.write(os.urandom(_KEK_BYTES))
        LOG.warning("Created a new key-encryption key in %s: copy it to "
                    "every conductor (secrets stored under it open only "
                    "with it)", path)
    try:
        info = os.stat(path)
        if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise exception.KeyEncryptionKeyInvalid(
                path=path, reason="its mode %o lets others read it; chmod "
                "600" % stat.S_IMODE(info.st_mode))
        with open(path, "rb") as handle:
            key = handle.read(_KEK_BYTES + 1)
    except OSError as error:
        raise exception.KeyEncryptionKeyInvalid(
            path=path, reason=error.strerror) from None
    if len(key) != _KEK_BYTES:
        raise exception.KeyEncryptionKeyInvalid(
            path=path, reason="it holds %d bytes, not %d"
            % (len(key), _KEK_BYTES))
    return KeyEncryptionKey(key)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _utc(ts: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc)


def _check_level(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) \
            or not 1 <= value <= 4:
        raise exception.InvalidParameterValue(
            name="min_level", reason="a level of assurance from 1 to 4, or "
            "none (trusted at the pool's level)")
    return value


def _optional_text(value: Any, name: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 255:
        raise exception.InvalidParameterValue(
            name=name, reason="a string of at most 255 characters")
    return value


def _secret_id(value: Any) -> str:
    """A secret's id as the service makes them (a UUID string), or a typed
    error: a caller's id reaches the database only in that form. A name
    that cannot be an id is a secret that does not exist."""
    if not isinstance(value, str) or len(value) > 255:
        raise exception.InvalidParameterValue(
            name="secret_id", reason="a secret id (a UUID) is expected")
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise exception.SecretNotFound(secret=value) from None


def _who_asked(context: Any) -> tuple[str | None, str | None]:
    """(user, request id) of the API request behind a release: the
    context arrives as an oslo RequestContext (over RPC) or a dict."""
    if context is None:
        return None, None
    if not isinstance(context, dict):
        to_dict = getattr(context, "to_dict", None)
        context = to_dict() if callable(to_dict) else {}
    user = context.get("user_name") or context.get("user_id") \
        or context.get("user")
    request_id = context.get("request_id") \
        or context.get("global_request_id")
    return (user if isinstance(user, str) else None,
            request_id if isinstance(request_id, str) else None)


def _host_name(value: Any) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= 255:
        raise exception.InvalidParameterValue(
            name="host", reason="the compute host's name is required")
    return value


class KeyService:
    """Store, release and delete secrets (see the module's contract)."""

    def __init__(self, db: db_api.Connection, kek: KeyEncryptionKey,
                 notifier: Any, *, conductor: str = "",
                 clock: Callable[[], float] = time.time,
                 metrics: Any = None,
                 refusals: refusal_budget.RefusalBudget | None = None,
                 unregistered: refusal_budget.RefusalBudget | None = None
                 ) -> None:
        self.db = db
        #: Which refusals get a database row (a host asking again and
        #: again must not grow the table without bound; see the module).
        self.refusals = refusals or refusal_budget.RefusalBudget()
        #: The same for refusals to names that are no registered host
        #: (the cheapest flood: any name will do), kept apart so that
        #: such a flood does not use up the budget of the refusals to
        #: real hosts.
        self.unregistered = unregistered or refusal_budget.RefusalBudget()
        #: :class:`~trusted_pools.conductor.metrics.ConductorMetrics` (or
        #: None): releases and refusals are counted there.
        self.metrics = metrics
        self.kek = kek
        self.notifier = notifier
        self.conductor = conductor
        self.clock = clock

    # --- store and delete ----------------------------------------------------

    def store(self, project_id: str, payload: bytes, secret_type: str, *,
              owner: str | None = None, name: str | None = None,
              algorithm: str | None = None, bit_length: int | None = None,
              min_level: int | None = None, host: str | None = None,
              context: dict | None = None) -> dict[str, Any]:
        """Store a secret. With ``host`` (a compute host storing a secret
        it just made, as Nova does at a vTPM's first boot) the host must
        pass the release check first: an untrusted host is refused, so
        no vTPM starts with a key only an untrusted host ever held."""
        if not isinstance(project_id, str) or not 0 < len(project_id) <= 255:
            raise exception.InvalidParameterValue(
                name="project_id", reason="the owning project is required")
        if host is not None:
            host = _host_name(host)
        if secret_type not in release.SECRET_TYPES:
            raise exception.InvalidParameterValue(
                name="secret_type", reason="one of %s"
                % ", ".join(release.SECRET_TYPES))
        if not isinstance(payload, bytes) or \
                not 1 <= len(payload) <= release.MAX_SECRET_SIZE:
            raise exception.InvalidParameterValue(
                name="payload", reason="1 to %d bytes"
                % release.MAX_SECRET_SIZE)
        if bit_length is not None and (
                isinstance(bit_length, bool) or not isinstance(bit_length, int)
                or not 0 < bit_length <= 8 * release.MAX_SECRET_SIZE):
            raise exception.InvalidParameterValue(
                name="bit_length", reason="a positive number of bits")
        secret_id = str(uuid.uuid4())
        draft = db_api.SecretRecord(
            id=secret_id, project_id=project_id, owner=owner, name=name,
            secret_type=secret_type, algorithm=algorithm,
            bit_length=bit_length, min_level=_check_level(min_level),
            kek_id=self.kek.kek_id, ciphertext=b"",
            created_at=_utc(self.clock()))
        if host is not None:
            status, level, refusal, _ = self._judge(draft, host)
            if refusal is not None:
                self._announce(context, REFUSED_EVENT, draft, host, status,
                               level, refusal)
                raise exception.KeyReleaseRefused(host=host, status=status,
                                                  reason=refusal.text)
        record = db_api.SecretRecord(
            id=secret_id, project_id=project_id,
            owner=_optional_text(owner, "owner"),
            name=_optional_text(name, "name"), secret_type=secret_type,
            algorithm=_optional_text(algorithm, "algorithm"),
            bit_length=bit_length, min_level=_check_level(min_level),
            kek_id=self.kek.kek_id,
            ciphertext=self.kek.encrypt(secret_id, project_id, secret_type,
                                        payload),
            created_at=_utc(self.clock()))
        stored = self.db.create_secret(record)
        LOG.info("Stored secret %s of project %s (owner %s, policy %s)",
                 secret_id, project_id, owner or "-",
                 "level >= %d" % min_level if min_level else
                 "trusted at the pool's level")
        return release.secret_metadata(stored)

    def delete(self, secret_id: str) -> None:
        secret_id = _secret_id(secret_id)
        self.db.delete_secret(secret_id)
        LOG.info("Deleted secret %s", secret_id)

    # --- release -------------------------------------------------------------

    def release(self, secret_id: str, host: str,
                context: dict | None = None) -> dict[str, Any]:
        """The secret wrapped to ``host``'s binding key, or
        :class:`KeyReleaseRefused` with the reason (logged and notified)."""
        host = _host_name(host)
        record = self.db.get_secret(_secret_id(secret_id))
        status, level, refusal, key = self._judge(record, host)
        if refusal is not None:
            self._announce(context, REFUSED_EVENT, record, host, status,
                           level, refusal)
            raise exception.KeyReleaseRefused(host=host, status=status,
                                              reason=refusal.text)
        payload = self.kek.decrypt(record)
        sealed = release.seal(key, payload,
                              release.release_label(record.id, host))
        # Recorded before the answer leaves: no key without its record (a
        # database that cannot take the record fails the release).
        self._announce(context, RELEASE_EVENT, record, host, status, level,
                       Reason("released", "trusted at level %d" % level))
        return {"id": record.id, "host": host,
                "wrapped": _b64(sealed["wrapped"]),
                "ciphertext": _b64(sealed["ciphertext"]),
                "secret_type": record.secret_type,
                "algorithm": record.algorithm,
                "bit_length": record.bit_length, "name": record.name}

    def _judge(self, record: db_api.SecretRecord, hostname: str
               ) -> tuple[str, int, Reason | None, structures.Public | None]:
        """(status, level, why it is refused or None, binding key)."""
        try:
            host = self.db.get_host_by_name(hostname)
        except exception.NotFound:
            return "unknown", 0, Reason(
                "not_registered", "it is not a registered host"), None
        if host.state != "enrolled":
            return "unknown", 0, Reason("not_enrolled", (
                "it is %s, not enrolled: it is not attested"
                % host.state)), None
        latest = self.db.latest_verdicts([host.id])
        if not latest:
            return "unknown", 0, Reason("no_verdict",
                                        "it has no verdict yet"), None
        verdict = latest[0]
        if verdict.registration_generation != host.enrollment_generation:
            return "unknown", verdict.level, Reason("old_enrollment", (
                "its latest verdict was made under an earlier enrollment "
                "(generation %s, now %d)" % (verdict.registration_generation,
                                             host.enrollment_generation)
            )), None
        now = _utc(self.clock())
        if verdict.status != "trusted":
            reasons = "; ".join(str(r) for r in verdict.reasons) \
                or "no reason recorded"
            return verdict.status, verdict.level, Reason(
                "not_trusted", reasons), None
        if verdict.expires_at <= now:
            return "stale", verdict.level, Reason("stale", (
                "its last trusted verdict (level %d) expired at %s: no "
                "fresh evidence" % (verdict.level,
                                    verdict.expires_at.isoformat()))), None
        if record.min_level is not None and verdict.level < record.min_level:
            return "trusted", verdict.level, Reason("below_level", (
                "trusted at level %d, below level %d that secret %s "
                "requires" % (verdict.level, record.min_level, record.id)
            )), None
        binding = self.db.get_binding_key(host.id)
        if binding is None or binding.generation != \
                host.enrollment_generation:
            return "trusted", verdict.level, Reason("no_binding_key", (
                "it has no binding key certified by its current AK "
                "(enrollment generation %d); certify it with "
                "'trusted-pools-manage' or enroll the host again"
                % host.enrollment_generation)), None
        try:
            key = sealing.check_binding_key_attributes(binding.public)
        except exception.EvidenceError as error:
            return "trusted", verdict.level, Reason(
                "binding_key_unusable",
                "its stored binding key is unusable: %s" % error), None
        return "trusted", verdict.level, None, key

    def _announce(self, context: dict | None, event: str,
                  record: db_api.SecretRecord, host: str, status: str,
                  level: int, reason: Reason) -> None:
        """Count, record, log and notify one answer. The record is kept in
        the database (``key_releases``; never the key): a release whose
        record cannot be written raises (no key leaves unrecorded); a
        refusal stands whether or not its record could be written, and
        is recorded only within :attr:`refusals` (repeats and floods are
        logged and counted, not stored)."""
        released = event == RELEASE_EVENT
        # Kept first: a release whose record fails is no release, and
        # must not be counted as one.
        self._keep(context, record, host, released, status, level, reason)
        if self.metrics is not None:
            self.metrics.key_release(released, status, reason.code)
        payload = {"secret_id": record.id, "project_id": record.project_id,
                   "owner": record.owner, "host": host,
                   "released": released, "status": status, "level": level,
                   "min_level": record.min_level, "reason": reason.text,
                   "reason_code": reason.code,
                   "conductor": self.conductor}
        if released:
            LOG.info("Released secret %s (owner %s) to host %s, wrapped to "
                     "its TPM: %s", record.id, record.owner or "-", host,
                     reason.text)
        else:
            LOG.warning("Refused secret %s (owner %s) to host %s: %s is %s: "
                        "%s", record.id, record.owner or "-", host, host,
                        status, reason.text)
        if self.notifier is None:
            return
        try:
            if released:
                self.notifier.info(context or {}, event, payload)
            else:
                self.notifier.warn(context or {}, event, payload)
        except Exception:  # noqa: BLE001 - the answer stands without it
            LOG.exception("Could not notify %s for secret %s", event,
                          record.id)

    def _keep(self, context: dict | None, record: db_api.SecretRecord,
              host: str, released: bool, status: str, level: int,
              reason: Reason) -> None:
        budget = self.unregistered if reason.code == "not_registered" \
            else self.refusals
        if not released and not budget.admit(
                (record.id, host, reason.code), self.clock()):
            return
        asker, request_id = _who_asked(context)
        entry = db_api.KeyReleaseRecord(
            id=None, secret_id=record.id, project_id=record.project_id,
            owner=record.owner, host=host,
            outcome="released" if released else "refused", status=status,
            level=level, min_level=record.min_level, reason_code=reason.code,
            reason=reason.text, conductor=self.conductor or "-",
            requested_by=asker, request_id=request_id,
            created_at=_utc(self.clock()))
        try:
            self.db.record_key_release(entry)
        except exception.TrustedPoolsError:
            if released:
                raise
            LOG.exception("Could not record the refusal of secret %s to "
                          "host %s", record.id, host)
