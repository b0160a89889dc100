"""Host enrollment, the verifier's half: registering a host's attestation
key (AK). The attester's half (reading the identity, activating the
credential) is :mod:`trusted_pools.agent.enrollment`.

Before the verifier believes anything an AK signs it must know that the AK
lives in a genuine TPM of a known host (ETSI GR NFV-SEC 007, 7.1.2 "mutual
key registration"). Enrollment establishes that in one round trip:

1. The host (attester) sends its EK certificate, EK public area and AK
   public area (``trusted_pools.agent.enrollment.collect_identity``).
2. The verifier (:func:`start_enrollment`) checks that the EK certificate
   chains to a configured CA bundle (:func:`validate_ek_certificate`),
   that the EK public is the certified key (:func:`ek_matches_certificate`),
   and that the AK is a restricted signing key fixed to its TPM
   (``check_ak_attributes``). It then wraps a fresh one-time secret with
   TPM2_MakeCredential *to the key in the certificate*, for the AK's Name.
3. Only a TPM holding that EK's private key, with an object of exactly that
   Name loaded, releases the secret (TPM2_ActivateCredential,
   ``trusted_pools.agent.enrollment.answer_challenge``).
4. The verifier checks the returned secret (:func:`finish_enrollment`) and
   only then creates a :class:`Registration`.

Trust contract: the EK certificate and the AK attributes are checked by the
verifier; the host's EK *public area* is trusted only for its name
algorithm and symmetric parameters, and only after its key was matched to
the certificate. Nothing the host says is registered until the secret came
back: every failure leaves no registration and consumes the challenge.

Challenges are one-time and short-lived; starting a new enrollment for a
host drops its older pending challenges, so a response to an old challenge
is rejected (:class:`~trusted_pools.exception.ChallengeNotFound`).
"""

from __future__ import annotations

import abc
import datetime
import hashlib
import hmac
import os
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any, Sequence

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.x509 import verification
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID
from cryptography.x509.oid import ObjectIdentifier

from trusted_pools import exception
from trusted_pools.tpm import credential, keys, structures

__all__ = [
    "Challenge", "DictEnrollmentStore", "EnrollmentChallenge",
    "EnrollmentStore", "Registration",
    "complete_enrollment", "ek_matches_certificate",
    "finish_enrollment", "ek_public_sha256", "load_ca_bundle",
    "start_enrollment", "validate_ek_certificate",
]

DEFAULT_CHALLENGE_TTL = datetime.timedelta(seconds=120)
SECRET_SIZE = 32  # fits TPM2B_DIGEST of every SHA-256 (or larger) EK
MAX_CHAIN_DEPTH = 8

# Critical extensions this chain walk understands. RFC 5280 requires
# rejecting a certificate with any other critical extension. EK
# certificates mark SubjectAlternativeName (the TPM manufacturer/model
# directory name) critical when the subject is empty.
_UNDERSTOOD_CRITICAL = frozenset({
    ExtensionOID.BASIC_CONSTRAINTS, ExtensionOID.KEY_USAGE,
    ExtensionOID.SUBJECT_ALTERNATIVE_NAME,
    ExtensionOID.EXTENDED_KEY_USAGE, ExtensionOID.CERTIFICATE_POLICIES,
    ExtensionOID.SUBJECT_DIRECTORY_ATTRIBUTES,
    ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
    ExtensionOID.SUBJECT_KEY_IDENTIFIER,
})


#: TCG EK Credential Profile: the EK certificate's key purpose
#: (tcg-kp-EKCertificate) in ExtendedKeyUsage.
TCG_KP_EK_CERTIFICATE = ObjectIdentifier("2.23.133.8.1")
#: The TPM manufacturer directory name in the subject alternative name:
#: tcg-at-tpmManufacturer, tcg-at-tpmModel, tcg-at-tpmVersion.
TCG_TPM_SAN_ATTRIBUTES = (ObjectIdentifier("2.23.133.2.1"),
                          ObjectIdentifier("2.23.133.2.2"),
                          ObjectIdentifier("2.23.133.2.3"))


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _aware(now: datetime.datetime | None) -> datetime.datetime:
    if now is None:
        return _utcnow()
    if now.tzinfo is None:
        raise TypeError("now must be timezone-aware (UTC)")
    return now


# --- EK certificate ----------------------------------------------------------

def load_ca_bundle(ca_bundle_pem: bytes) -> list[x509.Certificate]:
    """Parse the operator's CA bundle (PEM, one or more certificates)."""
    if isinstance(ca_bundle_pem, str):
        ca_bundle_pem = ca_bundle_pem.encode()
    try:
        certs = x509.load_pem_x509_certificates(ca_bundle_pem)
    except ValueError as exc:
        raise exception.ConfigInvalid(
            reason="the EK CA bundle is not PEM certificates: %s" % exc) \
            from None
    if not certs:
        raise exception.ConfigInvalid(reason="the EK CA bundle is empty")
    for cert in certs:
        try:
            _parsed_fully(cert)
        except (ValueError, UnsupportedAlgorithm, x509.DuplicateExtension,
                x509.UnsupportedGeneralNameType) as exc:
            raise exception.ConfigInvalid(
                reason="a certificate in the EK CA bundle does not parse: "
                "%s" % exc) from None
    return certs


def _load_certificate(cert_der: bytes, host: str) -> x509.Certificate:
    if not isinstance(cert_der, (bytes, bytearray)):
        raise TypeError("cert_der must be bytes")
    try:
        return _parsed_fully(x509.load_der_x509_certificate(bytes(cert_der)))
    except (ValueError, UnsupportedAlgorithm, x509.DuplicateExtension,
            x509.InvalidVersion, x509.UnsupportedGeneralNameType) as exc:
        # UnsupportedGeneralNameType: a name form cryptography does not
        # model (x400Address, EDIPartyName), which is not a ValueError.
        raise exception.MalformedEvidence(
            what="EK certificate of host %s" % host, reason=str(exc)) \
            from None


def _parsed_fully(cert: x509.Certificate) -> x509.Certificate:
    """cryptography parses fields lazily, so a corrupt name or extension
    would only raise ValueError deep inside the walk: touch every field
    the walk uses now, where the error can be typed."""
    _ = (cert.issuer, cert.subject, cert.serial_number,
         cert.not_valid_before_utc, cert.not_valid_after_utc,
         list(cert.extensions), cert.public_key(),
         cert.signature_hash_algorithm)
    return cert


def _name(cert: x509.Certificate, issuer: bool = False) -> str:
    try:
        return (cert.issuer if issuer else cert.subject).rfc4514_string() \
            or "<empty name>"
    except ValueError:
        return "<unprintable name>"


def _check_validity(cert: x509.Certificate, now: datetime.datetime,
                    host: str) -> None:
    if now < cert.not_valid_before_utc or now > cert.not_valid_after_utc:
        raise exception.EKCertificateUntrusted(
            host=host, issuer=_name(cert, issuer=True),
            reason="certificate %s is valid from %s to %s, not at %s"
            % (_name(cert), cert.not_valid_before_utc.isoformat(),
               cert.not_valid_after_utc.isoformat(), now.isoformat()))


def _check_critical_extensions(cert: x509.Certificate, host: str) -> None:
    try:
        extensions = list(cert.extensions)
    except (ValueError, x509.DuplicateExtension,
            x509.UnsupportedGeneralNameType) as exc:
        raise exception.MalformedEvidence(
            what="certificate %s" % _name(cert),
            reason="bad extensions: %s" % exc) from None
    for ext in extensions:
        if ext.critical and ext.oid not in _UNDERSTOOD_CRITICAL:
            raise exception.EKCertificateUntrusted(
                host=host, issuer=_name(cert, issuer=True),
                reason="certificate %s has an unknown critical extension "
                "%s" % (_name(cert), ext.oid.dotted_string))


def _basic_constraints(cert: x509.Certificate) -> x509.BasicConstraints | None:
    try:
        return cert.extensions.get_extension_for_class(
            x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return None


def _check_issuer_may_sign(issuer: x509.Certificate, depth: int,
                           host: str) -> None:
    """An issuer must be a CA (basicConstraints cA), allowed to sign
    certificates (keyUsage keyCertSign when keyUsage is present), with a
    pathLenConstraint that admits ``depth`` intermediates below it."""
    bc = _basic_constraints(issuer)
    if bc is None or not bc.ca:
        raise exception.EKCertificateUntrusted(
            host=host, issuer=_name(issuer),
            reason="%s is not a CA certificate" % _name(issuer))
    if bc.path_length is not None and depth > bc.path_length:
        raise exception.EKCertificateUntrusted(
            host=host, issuer=_name(issuer),
            reason="path length %d exceeds the CA's limit %d"
            % (depth, bc.path_length))
    try:
        usage = issuer.extensions.get_extension_for_class(x509.KeyUsage)
    except x509.ExtensionNotFound:
        return
    if not usage.value.key_cert_sign:
        raise exception.EKCertificateUntrusted(
            host=host, issuer=_name(issuer),
            reason="%s may not sign certificates (keyUsage)"
            % _name(issuer))


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def _is_self_signed(cert: x509.Certificate) -> bool:
    return cert.issuer == cert.subject and _signed_by(cert, cert)


def _extension(cert: x509.Certificate, kind: type) -> Any:
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


def _eku_names(usage: x509.ExtendedKeyUsage) -> str:
    names = {ExtendedKeyUsageOID.SERVER_AUTH: "serverAuth",
             ExtendedKeyUsageOID.CLIENT_AUTH: "clientAuth",
             ExtendedKeyUsageOID.CODE_SIGNING: "codeSigning"}
    return ", ".join(names.get(oid, oid.dotted_string) for oid in usage)


def _has_tpm_manufacturer_san(cert: x509.Certificate) -> bool:
    san = _extension(cert, x509.SubjectAlternativeName)
    if san is None:
        return False
    for name in san.get_values_for_type(x509.DirectoryName):
        present = {attr.oid for attr in name}
        if all(oid in present for oid in TCG_TPM_SAN_ATTRIBUTES):
            return True
    return False


def _ek_key_usage_problem(usage: x509.KeyUsage | None) -> str | None:
    """An EK is a decryption key (RSA keyEncipherment, ECC keyAgreement);
    a key that may only sign is not one."""
    if usage is None:
        return None
    if usage.key_encipherment or usage.key_agreement:
        return None
    return ("its keyUsage allows neither keyEncipherment nor keyAgreement "
            "(an EK decrypts credentials; this key %s)"
            % ("signs" if usage.digital_signature else "has no EK use"))


def check_ek_profile(leaf: x509.Certificate, *, anchor_ek_only: bool,
                     host: str = "?") -> None:
    """The TCG EK Credential Profile, enough that no other certificate
    under a bundle CA passes for an EK certificate (a TLS server key's
    holder could answer MakeCredential in software and forge quotes).

    * ExtendedKeyUsage, when present, must hold tcg-kp-EKCertificate
      (2.23.133.8.1): serverAuth/clientAuth-only leaves are refused;
    * keyUsage, when present, must allow keyEncipherment or keyAgreement:
      digitalSignature-only leaves are refused;
    * without ExtendedKeyUsage (older vendor profiles) the leaf needs
      keyUsage keyEncipherment/keyAgreement *and* the TPM manufacturer
      directory name in its SAN, and its anchor must be one the operator
      marked EK-only (``[conductor] ek_only_anchors``): only a CA that
      signs nothing but EK certificates makes such a leaf an EK.
    """
    issuer = _name(leaf, issuer=True)
    eku = _extension(leaf, x509.ExtendedKeyUsage)
    usage = _extension(leaf, x509.KeyUsage)
    problem = _ek_key_usage_problem(usage)
    if problem is not None:
        raise exception.EKCertificateUntrusted(
            host=host, issuer=issuer,
            reason="the leaf is not an EK certificate: %s" % problem)
    if eku is not None:
        if TCG_KP_EK_CERTIFICATE not in eku:
            raise exception.EKCertificateUntrusted(
                host=host, issuer=issuer,
                reason="the leaf is not an EK certificate: its extended "
                "key usage (%s) lacks the EK purpose tcg-kp-EKCertificate "
                "(2.23.133.8.1)" % _eku_names(eku))
        return
    if usage is None or not _has_tpm_manufacturer_san(leaf):
        raise exception.EKCertificateUntrusted(
            host=host, issuer=issuer,
            reason="the leaf is not an EK certificate: no EK purpose "
            "tcg-kp-EKCertificate (2.23.133.8.1) in an extended key usage, "
            "nor keyEncipherment/keyAgreement with the TPM manufacturer "
            "subject alternative name (2.23.133.2.1/2/3)")
    if not anchor_ek_only:
        raise exception.EKCertificateUntrusted(
            host=host, issuer=issuer,
            reason="the leaf has no EK purpose tcg-kp-EKCertificate "
            "(2.23.133.8.1); such a certificate is accepted only under an "
            "anchor listed in [conductor] ek_only_anchors")


def _no_check(policy: Any, cert: x509.Certificate, ext: Any) -> None:
    return None


def _ek_eku_validator(policy: Any, cert: x509.Certificate,
                      eku: x509.ExtendedKeyUsage | None) -> None:
    if eku is not None and TCG_KP_EK_CERTIFICATE not in eku:
        raise ValueError("no tcg-kp-EKCertificate in extended key usage")


def _ek_key_usage_validator(policy: Any, cert: x509.Certificate,
                            usage: x509.KeyUsage | None) -> None:
    if _ek_key_usage_problem(usage) is not None:
        raise ValueError("keyUsage allows neither keyEncipherment nor "
                         "keyAgreement")


def _known_extensions(policy: verification.ExtensionPolicy,
                      kinds: tuple[type, ...]) -> verification.ExtensionPolicy:
    any_criticality = verification.Criticality.AGNOSTIC
    for kind in kinds:
        policy = policy.may_be_present(kind, any_criticality, None)
    return policy


# Extensions the library may see, critical or not, besides those with a
# rule of their own. The Subject Directory Attributes (TPM spec/security
# assertions) are not interpreted; some vendors mark them critical.
_SHARED_KINDS: tuple[type, ...] = tuple(
    kind for kind in (x509.CertificatePolicies, x509.AuthorityKeyIdentifier,
                      x509.SubjectKeyIdentifier,
                      getattr(x509, "SubjectDirectoryAttributes", None))
    if kind is not None)


def _ek_extension_policies() -> tuple[verification.ExtensionPolicy,
                                      verification.ExtensionPolicy]:
    """(CA policy, EK leaf policy) for ``cryptography.x509.verification``:
    not the web PKI's (an EK certificate has an empty subject, a critical
    SAN directory name and the TCG EKU), but the TCG EK profile's."""
    any_criticality = verification.Criticality.AGNOSTIC
    ca = verification.ExtensionPolicy.permit_all().require_present(
        x509.BasicConstraints, any_criticality, None)
    ca = _known_extensions(ca, _SHARED_KINDS + (
        x509.KeyUsage, x509.SubjectAlternativeName, x509.ExtendedKeyUsage))
    leaf = verification.ExtensionPolicy.permit_all()
    leaf = leaf.may_be_present(x509.ExtendedKeyUsage, any_criticality,
                               _ek_eku_validator)
    leaf = leaf.may_be_present(x509.KeyUsage, any_criticality,
                               _ek_key_usage_validator)
    leaf = _known_extensions(leaf, _SHARED_KINDS + (
        x509.SubjectAlternativeName, x509.BasicConstraints))
    return ca, leaf


def _library_verify(leaf: x509.Certificate,
                    anchors: list[x509.Certificate],
                    now: datetime.datetime, host: str) -> None:
    """The same chain through cryptography's own path validation (RFC
    5280 rules, allowed signature algorithms and key sizes, encoding
    checks), with the TCG EK extension policy."""
    ca_policy, leaf_policy = _ek_extension_policies()
    verifier = (verification.PolicyBuilder()
                .store(verification.Store(anchors))
                .time(now.replace(tzinfo=None))
                .max_chain_depth(MAX_CHAIN_DEPTH)
                .extension_policies(ca_policy=ca_policy,
                                    ee_policy=leaf_policy)
                .build_client_verifier())
    try:
        verifier.verify(leaf, [])
    except verification.VerificationError as exc:
        raise exception.EKCertificateUntrusted(
            host=host, issuer=_name(leaf, issuer=True),
            reason="path validation failed: %s" % exc) from None


def ek_public_sha256(key_or_cert: Any) -> str:
    """The EK's identity for approval and uniqueness: SHA-256 (hex) of its
    SubjectPublicKeyInfo DER. Compute it from the EK certificate with
    ``openssl x509 -in ek.pem -pubkey -noout | openssl pkey -pubin
    -outform DER | sha256sum``, or from the TPM with ``tpm2_createek -c
    ek.ctx -u ek.pub -f der`` hashed the same way (see README)."""
    if isinstance(key_or_cert, x509.Certificate):
        key_or_cert = key_or_cert.public_key()
    elif isinstance(key_or_cert, structures.Public):
        key_or_cert = key_or_cert.public_key()
    return hashlib.sha256(_spki(key_or_cert)).hexdigest()


def validate_ek_certificate(cert_der: bytes,
                            ca_bundle: bytes | list[x509.Certificate], *,
                            now: datetime.datetime | None = None,
                            host: str = "?",
                            ek_only_anchors: Sequence[str] = ()
                            ) -> list[x509.Certificate]:
    """Check that the EK certificate chains to the CA bundle; return the
    chain (leaf first, up to the trust anchor).

    A careful chain walk rather than ``cryptography.x509.verification``,
    whose web-PKI policy rejects EK certificates (empty subject with a
    critical SAN directory name, TCG EKUs). At each step the issuer is a
    bundle certificate whose subject equals the child's issuer *and* whose
    key verifies the child's signature (two CAs may share a name); every
    certificate must be valid at ``now``, issuers must be CAs allowed to
    sign certificates, and unknown critical extensions are refused. The
    walk ends at a self-signed bundle certificate or, when the bundle holds
    an intermediate without its root, at that intermediate: every
    certificate the operator put in the bundle is a trust anchor.

    The walk gives the operator a reason that names the certificate at
    fault; it is kept beside the library because
    ``cryptography.x509.verification`` only says "candidates exhausted".
    A chain the walk accepts must then also pass that library's path
    validation with the TCG EK extension policy (:func:`_library_verify`),
    and the leaf must match the EK profile (:func:`check_ek_profile`);
    ``ek_only_anchors`` lists SHA-256 fingerprints (hex of the DER) of
    bundle certificates marked EK-only.

    Raises :class:`EKCertificateUntrusted` naming the issuer that did not
    chain, :class:`MalformedEvidence` for bytes that are not a certificate.
    """
    now = _aware(now)
    anchors = (load_ca_bundle(ca_bundle)
               if isinstance(ca_bundle, (bytes, str)) else list(ca_bundle))
    leaf = _load_certificate(cert_der, host)
    _check_critical_extensions(leaf, host)
    bc = _basic_constraints(leaf)
    if bc is not None and bc.ca:
        raise exception.EKCertificateUntrusted(
            host=host, issuer=_name(leaf, issuer=True),
            reason="the EK certificate is a CA certificate")
    _check_validity(leaf, now, host)
    chain = [leaf]
    current = leaf
    for depth in range(MAX_CHAIN_DEPTH):
        candidates = [a for a in anchors if a.subject == current.issuer]
        issuer = next((a for a in candidates if _signed_by(current, a)),
                      None)
        if issuer is None:
            reason = ("no certificate named %s in the CA bundle"
                      if not candidates else
                      "certificates named %s are in the CA bundle, but none "
                      "of their keys verifies the signature")
            raise exception.EKCertificateUntrusted(
                host=host, issuer=_name(current, issuer=True),
                reason=reason % _name(current, issuer=True))
        _check_critical_extensions(issuer, host)
        _check_issuer_may_sign(issuer, depth, host)
        _check_validity(issuer, now, host)
        chain.append(issuer)
        if _is_self_signed(issuer) or not any(
                a.subject == issuer.issuer and a is not issuer
                for a in anchors):
            # A root, or an intermediate the operator trusts directly.
            return _accept_chain(chain, anchors, now, host, ek_only_anchors)
        current = issuer
    raise exception.EKCertificateUntrusted(
        host=host, issuer=_name(current, issuer=True),
        reason="chain longer than %d certificates" % MAX_CHAIN_DEPTH)


def _fingerprint(cert: x509.Certificate) -> str:
    return hashlib.sha256(
        cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def normalize_fingerprints(values: Sequence[str]) -> frozenset[str]:
    """SHA-256 fingerprints as lower-case hex without colons."""
    return frozenset(v.replace(":", "").strip().lower() for v in values)


def _accept_chain(chain: list[x509.Certificate],
                  anchors: list[x509.Certificate], now: datetime.datetime,
                  host: str, ek_only_anchors: Sequence[str]
                  ) -> list[x509.Certificate]:
    ek_only = normalize_fingerprints(ek_only_anchors)
    check_ek_profile(chain[0], host=host,
                     anchor_ek_only=_fingerprint(chain[-1]) in ek_only)
    _library_verify(chain[0], anchors, now, host)
    return chain


def _spki(key) -> bytes:
    return key.public_bytes(serialization.Encoding.DER,
                            serialization.PublicFormat.SubjectPublicKeyInfo)


def ek_matches_certificate(ek_public: structures.Public,
                           cert: x509.Certificate | bytes,
                           host: str = "?") -> None:
    """Raise :class:`EKMismatch` unless the EK public area holds the very
    key the certificate certifies (compared as SubjectPublicKeyInfo)."""
    if isinstance(cert, (bytes, bytearray)):
        cert = _load_certificate(cert, host)
    try:
        cert_key = cert.public_key()
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise exception.MalformedEvidence(
            what="EK certificate of host %s" % host,
            reason="unusable public key: %s" % exc) from None
    ek_key = ek_public.public_key()
    if not hmac.compare_digest(_spki(cert_key), _spki(ek_key)):
        raise exception.EKMismatch(
            host=host, reason="certificate key SHA-256 %s, EK public key "
            "SHA-256 %s" % (hashlib.sha256(_spki(cert_key)).hexdigest()[:16],
                            hashlib.sha256(_spki(ek_key)).hexdigest()[:16]))


# --- records and the store ---------------------------------------------------

@dataclass(frozen=True)
class Challenge:
    """A pending enrollment, kept by the verifier only.

    ``secret`` is the one-time value wrapped in the credential; the host
    never sees it unless its TPM can activate the credential.
    """

    challenge_id: str
    host_id: str
    secret: bytes = field(repr=False)
    ek_certificate_fingerprint: str
    ek_public: bytes
    ak_public: bytes
    ak_name: bytes
    created_at: datetime.datetime
    expires_at: datetime.datetime
    ek_public_sha256: str = ""  # the EK's identity (see ek_public_sha256)


@dataclass(frozen=True)
class EnrollmentChallenge:
    """What :func:`start_enrollment` returns. Send ``challenge_id``,
    ``credential_blob``, ``encrypted_secret`` and ``expires_at`` to the
    host; keep ``challenge`` (it holds the secret)."""

    challenge: Challenge
    credential_blob: bytes
    encrypted_secret: bytes

    @property
    def challenge_id(self) -> str:
        return self.challenge.challenge_id

    @property
    def expires_at(self) -> datetime.datetime:
        return self.challenge.expires_at


@dataclass(frozen=True)
class Registration:
    """An enrolled host: the AK the verifier checks its quotes with."""

    host_id: str
    ek_certificate_fingerprint: str  # SHA-256 of the DER, hex
    ak_public: bytes                 # TPMT_PUBLIC
    ak_name: bytes
    registered_at: datetime.datetime
    ek_public: bytes = b""
    ek_public_sha256: str = ""       # SHA-256 of the EK's SPKI DER, hex


class EnrollmentStore(abc.ABC):
    """Where pending challenges and registrations live.

    Contract: :meth:`take_challenge` removes and returns atomically, so a
    challenge is answered at most once; :meth:`add_challenge` drops the
    host's older pending challenges; :meth:`register` is all-or-nothing
    and refuses a second registration for a host, and an EK public key or
    AK name already registered to another host. The conductor's database
    (:meth:`trusted_pools.db.api.Connection.enroll`) adds the operator's
    EK approval.
    """

    @abc.abstractmethod
    def add_challenge(self, challenge: Challenge) -> None: ...

    @abc.abstractmethod
    def take_challenge(self, challenge_id: str) -> Challenge:
        """Remove and return, or raise :class:`ChallengeNotFound`."""

    @abc.abstractmethod
    def register(self, registration: Registration) -> None:
        """Store, or raise :class:`HostAlreadyEnrolled`."""

    @abc.abstractmethod
    def get_registration(self, host_id: str) -> Registration:
        """Return, or raise :class:`HostNotFound`."""

    @abc.abstractmethod
    def remove_registration(self, host_id: str) -> None: ...

    @abc.abstractmethod
    def registrations(self) -> list[Registration]: ...

    @abc.abstractmethod
    def pending_challenges(self) -> list[Challenge]: ...

    @abc.abstractmethod
    def purge_expired(self, now: datetime.datetime) -> int:
        """Drop expired challenges; return how many."""


class DictEnrollmentStore(EnrollmentStore):
    """In-memory store for tests and demos (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._challenges: dict[str, Challenge] = {}
        self._registrations: dict[str, Registration] = {}

    def add_challenge(self, challenge: Challenge) -> None:
        with self._lock:
            for cid in [c.challenge_id for c in self._challenges.values()
                        if c.host_id == challenge.host_id]:
                del self._challenges[cid]
            self._challenges[challenge.challenge_id] = challenge

    def take_challenge(self, challenge_id: str) -> Challenge:
        with self._lock:
            try:
                return self._challenges.pop(challenge_id)
            except KeyError:
                raise exception.ChallengeNotFound(
                    challenge=challenge_id, host="?",
                    reason="unknown challenge") from None

    def register(self, registration: Registration) -> None:
        with self._lock:
            if registration.host_id in self._registrations:
                raise exception.HostAlreadyEnrolled(host=registration.host_id)
            for other in self._registrations.values():
                if other.ek_public_sha256 == registration.ek_public_sha256:
                    raise exception.EKAlreadyRegistered(
                        fingerprint=other.ek_public_sha256,
                        other=other.host_id)
                if other.ak_name == registration.ak_name:
                    raise exception.AKAlreadyRegistered(
                        ak_name=other.ak_name.hex(), other=other.host_id)
            self._registrations[registration.host_id] = registration

    def get_registration(self, host_id: str) -> Registration:
        with self._lock:
            try:
                return self._registrations[host_id]
            except KeyError:
                raise exception.HostNotFound(host=host_id) from None

    def remove_registration(self, host_id: str) -> None:
        with self._lock:
            if self._registrations.pop(host_id, None) is None:
                raise exception.HostNotFound(host=host_id)

    def registrations(self) -> list[Registration]:
        with self._lock:
            return list(self._registrations.values())

    def pending_challenges(self) -> list[Challenge]:
        with self._lock:
            return list(self._challenges.values())

    def purge_expired(self, now: datetime.datetime) -> int:
        with self._lock:
            expired = [cid for cid, c in self._challenges.items()
                       if c.expires_at <= now]
            for cid in expired:
                del self._challenges[cid]
            return len(expired)


# --- verifier side -----------------------------------------------------------

def _parse_public(data: bytes, what: str, host: str) -> structures.Public:
    if not isinstance(data, (bytes, bytearray)):
        raise TypeError("%s must be bytes" % what)
    try:
        return structures.load_public(bytes(data))
    except exception.MalformedEvidence as exc:
        raise exception.MalformedEvidence(
            what="%s of host %s" % (what, host),
            reason=exc.message) from None


def start_enrollment(host_id: str, ek_cert: bytes, ek_public: bytes,
                     ak_public: bytes, *,
                     ca_bundle: bytes | list[x509.Certificate],
                     store: EnrollmentStore | None = None,
                     now: datetime.datetime | None = None,
                     ttl: datetime.timedelta = DEFAULT_CHALLENGE_TTL,
                     ek_only_anchors: Sequence[str] = (),
                     ) -> EnrollmentChallenge:
    """Check a host's identity and make its one-time credential challenge.

    Checks, in order: EK certificate chain, EK public = certified key, AK
    attributes. The credential is made to the EK public (now known to be the
    certified key) for the AK's Name. With ``store`` the challenge is kept
    there (replacing the host's older pending ones).
    """
    if not isinstance(host_id, str) or not host_id:
        raise exception.InvalidParameterValue(
            name="host_id", reason="a non-empty string is required")
    if ttl <= datetime.timedelta(0):
        raise exception.InvalidParameterValue(
            name="ttl", reason="must be positive")
    now = _aware(now)
    chain = validate_ek_certificate(ek_cert, ca_bundle, now=now,
                                    host=host_id,
                                    ek_only_anchors=ek_only_anchors)
    ek = _parse_public(ek_public, "EK public", host_id)
    ek_matches_certificate(ek, chain[0], host=host_id)
    ak = _parse_public(ak_public, "AK public", host_id)
    keys.check_ak_attributes(ak)
    secret = os.urandom(SECRET_SIZE)
    blob, encrypted_secret = credential.make_credential(ek, ak.name(), secret)
    challenge = Challenge(
        challenge_id=uuid.uuid4().hex, host_id=host_id, secret=secret,
        ek_certificate_fingerprint=hashlib.sha256(bytes(ek_cert)).hexdigest(),
        ek_public=ek.raw, ak_public=ak.raw, ak_name=ak.name(),
        created_at=now, expires_at=now + ttl,
        ek_public_sha256=ek_public_sha256(chain[0]))
    if store is not None:
        store.add_challenge(challenge)
    return EnrollmentChallenge(challenge, blob, encrypted_secret)


def finish_enrollment(challenge: Challenge, activated_secret: bytes,
                      now: datetime.datetime | None = None) -> Registration:
    """Check the host's answer to ``challenge``; return its registration.

    Pure: it does not know whether the challenge was used before; take it
    out of the store first (:func:`complete_enrollment` does).
    """
    now = _aware(now)
    if now >= challenge.expires_at:
        raise exception.ChallengeExpired(
            challenge=challenge.challenge_id, host=challenge.host_id,
            expired_at=challenge.expires_at.isoformat(),
            reason="expired")
    if not isinstance(activated_secret, (bytes, bytearray)) or \
            not hmac.compare_digest(bytes(activated_secret),
                                    challenge.secret):
        raise exception.CredentialActivationFailed(
            host=challenge.host_id, reason="secret mismatch")
    return Registration(
        host_id=challenge.host_id,
        ek_certificate_fingerprint=challenge.ek_certificate_fingerprint,
        ak_public=challenge.ak_public, ak_name=challenge.ak_name,
        registered_at=now, ek_public=challenge.ek_public,
        ek_public_sha256=challenge.ek_public_sha256)


def complete_enrollment(store: EnrollmentStore, challenge_id: str,
                        activated_secret: bytes,
                        now: datetime.datetime | None = None
                        ) -> Registration:
    """Take the challenge out of ``store`` (one use only), check the answer
    and register the host. Any failure registers nothing."""
    challenge = store.take_challenge(challenge_id)
    registration = finish_enrollment(challenge, activated_secret, now)
    store.register(registration)
    return registration
