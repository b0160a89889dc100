"""What the conductor and both agents share about a vTPM migration.

Issue 12 (ISO/IEC 27070 6.6): a vTPM moves only to a destination attested
just before, its state confidential and intact on the way, and exactly one
copy may run afterwards. The shape follows the vTPM paper (Berger et al.,
2006): the destination's nonce, the source's lock, the state under a fresh
key wrapped to a key that lives in the destination's TPM.

Shared by both sides of the trust boundary, so it imports no oslo library
and no service. Everything here is hand-written because no library speaks
this protocol; the cryptography is pyca/cryptography's (AES-256-GCM,
RSA-OAEP through :mod:`trusted_pools.tpm.sealing`).

The pieces, in protocol order:

* :func:`transport_nonce`: the qualifying data of the destination's
  TPM2_Certify of its one-time transport key. It commits to the migration
  id and the destination's name (and a conductor salt), so a
  certification made for one migration or host passes for no other.
* :func:`check_transport_key`: the conductor's (and the source's) check of
  that certification against the destination's registered AK, plus one
  more rule than a binding key has: the certified *qualified* name must not
  be that of an object loaded into a hierarchy from outside (TPM2_LoadExternal
  of a public key whose private half the host knows would otherwise be
  certified by the real AK, attributes and all).
* :func:`associated_data`: the AES-GCM associated data: migration id,
  instance, source, destination, the vTPM epoch and the kind. A payload
  made for another migration, host pair or epoch does not authenticate.
* :func:`seal` / :func:`open_sealed`: a fresh AES-256-GCM key encrypts the
  payload; the key travels RSA-OAEP-wrapped to the transport key with a
  label that names the migration (:func:`transport_label`), so only that
  TPM and only for that migration unwraps it.
* :func:`encode_cold_state` / :func:`decode_cold_state`: the cold payload
  (the driver's state files, already encrypted at rest, the state key
  wrapped to the destination's binding key, the metadata, the epoch) with a
  digest of each file the destination checks.

Trust contract: nothing an agent sends is believed until checked here; the
conductor's requests to agents are signed
(:mod:`trusted_pools.protocol.agent_requests`), so an agent may believe the
arguments of a request it authenticated, but still re-checks the transport
key it encrypts to (cheap, and it never encrypts to a key it did not
verify itself).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from trusted_pools import exception
from trusted_pools.tpm import sealing
from trusted_pools.tpm import structures

__all__ = [
    "KINDS", "STEPS", "TERMINAL_STEPS", "ACTIVE_STEPS", "PRE_COMMIT_STEPS",
    "SealedPayload", "associated_data", "check_transport_key",
    "decode_cold_state", "decode_live_key", "encode_cold_state",
    "encode_live_key", "open_sealed", "seal",
    "transport_label", "transport_nonce", "EPOCH_METADATA_KEY",
    "MAX_PAYLOAD_BYTES",
]

#: ``cold``: a stopped vTPM's state moves between the agents. ``live``:
#: QEMU carries the state in its own stream; only swtpm's per-migration
#: ``--migration-key`` moves here.
KINDS = ("cold", "live")

#: The conductor's steps, in order. ``requested``: recorded, nothing asked
#: yet. ``attested``: both verdicts checked and the destination attested
#: again. ``key_certified``: the destination's transport key checked.
#: ``exported`` (cold): the source locked and sealed the state.
#: ``delivered`` (live): the destination holds the migration key and is
#: prepared. ``imported`` (cold): the destination opened, checked,
#: re-sealed and test-started the state. ``committed``: the database says
#: the destination's copy is the vTPM (the epoch moved). ``completed``:
#: the destination released its copy and the source erased its own.
#: ``aborted``: rolled back before commit (the source unlocked, the
#: destination discarded).
STEPS = ("requested", "attested", "key_certified", "exported", "delivered",
         "imported", "committed", "completed", "aborted")
TERMINAL_STEPS = ("completed", "aborted")
ACTIVE_STEPS = tuple(s for s in STEPS if s not in TERMINAL_STEPS)
#: A failure in these steps aborts; from ``committed`` on, only forward.
PRE_COMMIT_STEPS = ("requested", "attested", "key_certified", "exported",
                    "delivered", "imported")

#: Where an imported vTPM's metadata records the epoch it was committed at.
EPOCH_METADATA_KEY = "migration_epoch"

#: A cold payload larger than this is refused (a swtpm state is tens of KB).
MAX_PAYLOAD_BYTES = 4 * 1024 * 1024

_NONCE_DOMAIN = b"trusted-pools vtpm-migration transport-key\0"
_GCM_NONCE = 12
_KEY_BYTES = 32
# TPM_RH_OWNER, TPM_RH_NULL, TPM_RH_ENDORSEMENT, TPM_RH_PLATFORM: where a
# public key loaded from outside the TPM lives.
_HIERARCHIES = (0x40000001, 0x40000007, 0x4000000B, 0x4000000C)


def _text(value: Any, name: str, limit: int = 255) -> str:
    if not isinstance(value, str) or not value or len(value) > limit:
        raise exception.InvalidParameterValue(
            name=name, reason="a non-empty string of at most %d characters"
            % limit)
    return value


def _epoch(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or \
            not 0 < value < 2 ** 62:
        raise exception.InvalidParameterValue(
            name="epoch", reason="a positive integer")
    return value


def b64(data: bytes) -> str:
    return base64.b64encode(bytes(data)).decode("ascii")


def unb64(value: Any, name: str) -> bytes:
    if not isinstance(value, str):
        raise exception.MalformedEvidence(
            what=name, reason="expected base64 text")
    try:
        return base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise exception.MalformedEvidence(
            what=name, reason="not valid base64") from None


# --- the transport key -------------------------------------------------------

def transport_nonce(migration_id: str, destination: str, salt: bytes
                    ) -> bytes:
    """SHA-256 over a domain tag, the migration id, the destination and
    the conductor's random ``salt`` (kept with the migration, so a
    resumed migration asks for the same nonce)."""
    _text(migration_id, "migration_id")
    _text(destination, "destination")
    if not isinstance(salt, (bytes, bytearray)) or len(salt) < 16:
        raise exception.InvalidParameterValue(
            name="salt", reason="at least 16 random bytes")
    return hashlib.sha256(
        _NONCE_DOMAIN + migration_id.encode("utf-8") + b"\0"
        + destination.encode("utf-8") + b"\0" + bytes(salt)).digest()


def transport_label(migration_id: str) -> bytes:
    """The OAEP label of the payload key of ``migration_id``."""
    digest = hashlib.sha256(
        _text(migration_id, "migration_id").encode("utf-8")).hexdigest()
    return sealing.label("vtpm-migration.%s" % digest[:32])


def check_transport_key(public: bytes, certify_attest: bytes,
                        certify_signature: bytes, ak_public: bytes,
                        nonce: bytes) -> sealing.VerifiedBindingKey:
    """The destination's transport key, verified: TPM2_Certify by
    ``ak_public`` over ``nonce`` of a decrypt-only, non-duplicable key
    generated in the TPM (:func:`sealing.check_binding_key`), which is not
    an external public key loaded into a hierarchy (its qualified name is
    not ``H(hierarchy || Name)``). Raises an
    :class:`~trusted_pools.exception.EvidenceError`."""
    verified = sealing.check_binding_key(
        public, certify_attest, certify_signature, ak_public,
        qualifying_data=nonce)
    for hierarchy in _HIERARCHIES:
        if hmac.compare_digest(verified.qualified_name,
                               sealing.qualified_name(
                                   sealing.hierarchy_qualified_name(
                                       hierarchy), verified.public)):
            raise exception.BindingKeyRejected(
                reason="the transport key was not made in the TPM: it is "
                "an external key loaded into hierarchy %#x" % hierarchy)
    return verified


# --- the sealed payload --------------------------------------------------------

def associated_data(migration_id: str, instance: str, source: str,
                    destination: str, epoch: int, kind: str) -> bytes:
    """Canonical JSON of what a payload is for (AES-GCM associated
    data)."""
    if kind not in KINDS:
        raise exception.InvalidParameterValue(
            name="kind", reason="one of %s" % ", ".join(KINDS))
    return json.dumps({
        "domain": "trusted-pools vtpm-migration payload",
        "migration": _text(migration_id, "migration_id"),
        "instance": _text(instance, "instance"),
        "source": _text(source, "source"),
        "destination": _text(destination, "destination"),
        "epoch": _epoch(epoch), "kind": kind},
        sort_keys=True, separators=(",", ":")).encode("utf-8")


@dataclass(frozen=True)
class SealedPayload:
    """A payload on the wire: ``wrapped_key`` (RSA-OAEP of the AES key to
    the transport key), ``nonce`` and ``ciphertext`` (AES-256-GCM, tag
    included). Nothing in it is readable without the destination's TPM."""

    wrapped_key: bytes
    nonce: bytes
    ciphertext: bytes

    def to_wire(self) -> dict[str, str]:
        return {"wrapped_key": b64(self.wrapped_key),
                "nonce": b64(self.nonce),
                "ciphertext": b64(self.ciphertext)}

    @classmethod
    def from_wire(cls, wire: Any) -> "SealedPayload":
        if not isinstance(wire, Mapping):
            raise exception.MalformedEvidence(
                what="migration payload", reason="not an object")
        payload = cls(unb64(wire.get("wrapped_key"), "wrapped key"),
                      unb64(wire.get("nonce"), "payload nonce"),
                      unb64(wire.get("ciphertext"), "payload ciphertext"))
        if len(payload.nonce) != _GCM_NONCE or not payload.wrapped_key or \
                len(payload.wrapped_key) > 512 or \
                not 16 < len(payload.ciphertext) <= MAX_PAYLOAD_BYTES:
            raise exception.MalformedEvidence(
                what="migration payload", reason="field sizes are wrong")
        return payload


def seal(transport_key: sealing.VerifiedBindingKey, plaintext: bytes, *,
         aad: bytes, label: bytes) -> SealedPayload:
    """``plaintext`` under a fresh AES-256-GCM key, the key wrapped to the
    verified transport key. The key is dropped when this returns."""
    if not isinstance(transport_key, sealing.VerifiedBindingKey):
        raise TypeError("transport_key must be verified "
                        "(check_transport_key) before anything is sealed "
                        "to it")
    if len(plaintext) > MAX_PAYLOAD_BYTES:
        raise exception.InvalidParameterValue(
            name="payload", reason="larger than %d bytes"
            % MAX_PAYLOAD_BYTES)
    key = AESGCM.generate_key(bit_length=256)
    nonce = os.urandom(_GCM_NONCE)
    return SealedPayload(sealing.wrap_secret(transport_key, key, label),
                         nonce, AESGCM(key).encrypt(nonce, plaintext, aad))


def open_sealed(unwrap: Callable[[bytes, bytes], bytes],
                sealed: SealedPayload, *, aad: bytes, label: bytes) -> bytes:
    """The plaintext: ``unwrap(wrapped_key, label)`` (TPM2_RSA_Decrypt by
    the transport key) gives the AES key, AES-GCM the payload. A payload for
    another TPM, migration, host pair or epoch fails here with
    :class:`MigrationPayloadRejected`, never gives wrong bytes."""
    try:
        key = unwrap(sealed.wrapped_key, label)
    except exception.TPMError as error:
        raise exception.MigrationPayloadRejected(
            reason="the transport key in this TPM does not unwrap it (%s): "
            "it was made for another TPM or migration"
            % (error.kwargs.get("name") or error)) from None
    if len(key) != _KEY_BYTES:
        raise exception.MigrationPayloadRejected(
            reason="the unwrapped key is not 256 bits")
    try:
        return AESGCM(key).decrypt(sealed.nonce, sealed.ciphertext, aad)
    except InvalidTag:
        raise exception.MigrationPayloadRejected(
            reason="it does not authenticate for this migration (another "
            "migration, host pair or epoch, or altered)") from None


# --- the cold payload ------------------------------------------------------------

def encode_cold_state(*, instance: str, driver: str,
                      metadata: Mapping[str, Any],
                      files: Mapping[str, bytes], wrapped_state_key: bytes,
                      epoch: int) -> bytes:
    """The cold payload's plaintext (JSON): the driver's state files as
    stored (encrypted by the state key), the state key wrapped to the
    destination's binding key, the metadata with the new epoch, and the
    SHA-256 of each file."""
    meta = dict(metadata)
    meta[EPOCH_METADATA_KEY] = _epoch(epoch)
    return json.dumps({
        "instance": instance, "driver": driver, "metadata": meta,
        "epoch": epoch, "wrapped_state_key": b64(wrapped_state_key),
        "files": {name: b64(data) for name, data in files.items()},
        "digests": {name: hashlib.sha256(data).hexdigest()
                    for name, data in files.items()}},
        sort_keys=True, separators=(",", ":")).encode("utf-8")


@dataclass(frozen=True)
class ColdState:
    instance: str
    driver: str
    metadata: Mapping[str, Any]
    files: Mapping[str, bytes]
    wrapped_state_key: bytes
    epoch: int


def decode_cold_state(plaintext: bytes, *, instance: str, epoch: int
                      ) -> ColdState:
    """Parse and check an opened cold payload: the instance and epoch the
    conductor named, each file's digest."""
    try:
        body = json.loads(plaintext)
    except ValueError:
        raise exception.MigrationPayloadRejected(
            reason="the payload is not JSON") from None
    if not isinstance(body, dict) or not isinstance(body.get("files"), dict) \
            or not isinstance(body.get("digests"), dict) or \
            not isinstance(body.get("metadata"), dict):
        raise exception.MigrationPayloadRejected(
            reason="the payload lacks its files, digests or metadata")
    if body.get("instance") != instance or body.get("epoch") != epoch or \
            body["metadata"].get(EPOCH_METADATA_KEY) != epoch:
        raise exception.MigrationPayloadRejected(
            reason="the payload is for instance %r at epoch %r, not %s at "
            "%d" % (body.get("instance"), body.get("epoch"), instance,
                    epoch))
    files = {}
    for name, value in body["files"].items():
        data = unb64(value, "state file %s" % name)
        want = body["digests"].get(name)
        if not isinstance(want, str) or not hmac.compare_digest(
                hashlib.sha256(data).hexdigest(), want):
            raise exception.MigrationPayloadRejected(
                reason="state file %s does not match its digest" % name)
        files[name] = data
    if set(body["digests"]) != set(files):
        raise exception.MigrationPayloadRejected(
            reason="the digests name other files than the payload holds")
    return ColdState(instance, str(body.get("driver")), body["metadata"],
                     files, unb64(body.get("wrapped_state_key"),
                                  "wrapped state key"), epoch)


# --- the live payload ---------------------------------------------------------

def encode_live_key(migration_key: bytes, metadata: Mapping[str, Any]
                    ) -> bytes:
    """The live payload's plaintext (JSON): swtpm's migration key and the
    source vTPM's metadata, which the destination driver's
    ``prepare_incoming`` takes (QEMU's stream carries the TPM state, not
    the driver's record of it)."""
    return json.dumps({"migration_key": b64(migration_key),
                       "metadata": dict(metadata)},
                      sort_keys=True, separators=(",", ":")).encode("utf-8")


def decode_live_key(plaintext: bytes) -> tuple[bytes, dict[str, Any]]:
    """The migration key and the source metadata of an opened live
    payload."""
    try:
        body = json.loads(plaintext)
    except ValueError:
        raise exception.MigrationPayloadRejected(
            reason="the payload is not JSON") from None
    if not isinstance(body, dict) or not isinstance(body.get("metadata"),
                                                    dict):
        raise exception.MigrationPayloadRejected(
            reason="the payload lacks its migration key or metadata")
    key = unb64(body.get("migration_key"), "migration key")
    if len(key) != _KEY_BYTES:
        raise exception.MigrationPayloadRejected(
            reason="the migration key is not 256 bits")
    return key, body["metadata"]


def public_area(data: bytes) -> structures.Public:
    """A TPMT_PUBLIC parsed (for names in logs and the operator view)."""
    return structures.load_public(data)
