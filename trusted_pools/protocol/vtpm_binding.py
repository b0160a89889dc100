"""vRoT bound to RoT (ISO/IEC 27070 5.3): the verifier's side.

A verifier chains a VM's vTPM to the host it runs on in two links, both
checked here against nothing but the host's *registered* AK (from
enrollment, in the verifier's database):

1. **The host's vTPM CA** is a signing key that lives in the host's TPM
   (``fixedTPM|fixedParent|sensitiveDataOrigin|sign``, never ``decrypt``),
   certified by the host's AK with TPM2_Certify over the qualifying data
   :func:`ca_qualifying_data` (a digest naming the host and the purpose).
   :func:`verify_ca` checks the signature with the registered AK of the
   host the chain claims, the TPMS_ATTEST type and magic, that the
   certified Name is the CA public's Name, the attributes and the
   qualifying data.
2. **The vTPM certificate**: a compact claim set signed by that CA key
   with TPM2_Sign (see :class:`VTPMCertificate` and doc/source/
   vtpm-binding.md for why not X.509), binding the vTPM's attestation key
   (TPMT_PUBLIC), the SHA-256 of the vTPM EK's SubjectPublicKeyInfo, the
   instance UUID, the host name and the CA's Name.

:func:`verify_chain` returns a :class:`BoundVTPM` only when both links
verify and every name agrees; otherwise it raises a
:class:`VTPMBindingRefused` subclass naming the reason. A chain that leads
to another host than the one claimed (a certificate of host A's CA shown
for host B, a CA certified by another host's AK) is
:class:`VTPMChainForeignHost`.

Trust contract: a bound vTPM is as trustworthy as its host was when the
CA signed: a compromised host can use its own CA key to certify any key
as one of *its* vTPMs, never as another host's. So deep attestation
(:mod:`.deep`) never gives an instance more than its host's verdict.
The vTPM AK's attributes are checked here (restricted signing key): its
quotes' TPM_GENERATED_VALUE then means "made by that vTPM".
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import uuid
from dataclasses import dataclass
from typing import Any, Mapping

from cryptography.hazmat.primitives import serialization

from trusted_pools import exception
from trusted_pools.tpm import keys, quote as quotes, structures
from trusted_pools.tpm.constants import TPM_ALG, TPM_GENERATED_VALUE, TPM_ST
from trusted_pools.tpm.structures import ObjectAttributes, Public

__all__ = [
    "CERTIFICATE_TYPE", "CERTIFICATE_VERSION", "BoundVTPM",
    "CACertification", "VTPMBindingRefused", "VTPMCertificate",
    "VTPMCertificateMalformed", "VTPMChainForeignHost", "VTPMChain",
    "ca_qualifying_data", "certificate_message", "ek_sha256",
    "verify_ca", "verify_certificate", "verify_chain",
]

CERTIFICATE_TYPE = "trusted-pools-vtpm-cert"
CERTIFICATE_VERSION = 1
#: Prefix of every message the CA key signs: a TPMS_ATTEST starts with
#: TPM_GENERATED_VALUE (0xff544347), so no signed claim set can pass for a
#: TPM attestation structure, nor the reverse.
_CERT_TAG = b"trusted_pools vTPM certificate v1\0"
_CA_TAG = b"trusted_pools vTPM CA v1\0"
_MAX_TOKEN = 8192
_MAX_HOST = 255
_SEGMENT = re.compile(r"[A-Za-z0-9_-]+")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_CLAIMS = frozenset({"typ", "ver", "host", "instance", "vtpm_ak",
                     "vtpm_ek_sha256", "ca_name", "iat", "serial"})

# What a CA key must (and must not) be, in the order checked.
_CA_ATTRIBUTE_RULES: tuple[tuple[ObjectAttributes, str, bool], ...] = (
    (ObjectAttributes.FIXED_TPM, "fixedTPM", True),
    (ObjectAttributes.FIXED_PARENT, "fixedParent", True),
    (ObjectAttributes.SENSITIVE_DATA_ORIGIN, "sensitiveDataOrigin", True),
    (ObjectAttributes.SIGN_ENCRYPT, "sign", True),
    (ObjectAttributes.DECRYPT, "decrypt", False),
)


class VTPMBindingRefused(exception.EvidenceError):
    """The vTPM's chain to its host does not verify."""

    _msg_fmt = "vTPM binding refused for host %(host)s: %(reason)s"


class VTPMChainForeignHost(VTPMBindingRefused):
    """The chain verifies to, or names, another host than the one asked."""

    _msg_fmt = ("vTPM chain leads to another host than %(host)s: "
                "%(reason)s")


class VTPMCertificateMalformed(VTPMBindingRefused):
    _msg_fmt = "Malformed vTPM certificate for host %(host)s: %(reason)s"


def _b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64d(text: Any, what: str, host: str) -> bytes:
    if not isinstance(text, str) or (text and not _SEGMENT.fullmatch(text)):
        raise VTPMCertificateMalformed(host=host,
                                       reason="%s is not base64url" % what)
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise VTPMCertificateMalformed(
            host=host, reason="%s is not base64url" % what) from None
    if _b64e(data) != text:
        raise VTPMCertificateMalformed(
            host=host, reason="%s is not canonical base64url" % what)
    return data


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False, allow_nan=False).encode("utf-8")


def ca_qualifying_data(host: str) -> bytes:
    """What the host's AK certifies its vTPM CA over: SHA-256 of a domain
    tag and the host name, so the certification names both the purpose
    and the host."""
    return hashlib.sha256(_CA_TAG + host.encode("utf-8")).digest()


def ek_sha256(ek_public: bytes | Public) -> str:
    """SHA-256 (hex) of the EK's SubjectPublicKeyInfo DER, the same hash an
    operator approves host EKs by."""
    public = ek_public if isinstance(ek_public, Public) \
        else structures.parse_public(ek_public)
    der = public.public_key().public_bytes(
        serialization.Encoding.DER,
        serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


# --- the CA certification ----------------------------------------------------

@dataclass(frozen=True)
class CACertification:
    """The host's vTPM CA key (TPMT_PUBLIC) and its TPM2_Certify by the
    host's AK (TPMS_ATTEST, TPMT_SIGNATURE). Unverified until
    :func:`verify_ca`."""

    public: bytes
    certify_attest: bytes
    certify_signature: bytes

    def to_wire(self) -> dict[str, str]:
        return {"public": _b64e(self.public),
                "certify_attest": _b64e(self.certify_attest),
                "certify_signature": _b64e(self.certify_signature)}

    @classmethod
    def from_wire(cls, wire: Any, host: str = "?") -> "CACertification":
        if not isinstance(wire, dict) or set(wire) != {
                "public", "certify_attest", "certify_signature"}:
            raise VTPMCertificateMalformed(
                host=host, reason="CA certification must hold exactly "
                "public, certify_attest and certify_signature")
        return cls(*(_b64d(wire[k], k, host) for k in (
            "public", "certify_attest", "certify_signature")))


def _check_ca_attributes(host: str, public: Public) -> None:
    for flag, name, must in _CA_ATTRIBUTE_RULES:
        if bool(public.attributes & flag) != must:
            raise VTPMBindingRefused(
                host=host, reason="the vTPM CA key must have %s %s"
                % (name, "set" if must else "clear"))
    if public.type not in (TPM_ALG.RSA, TPM_ALG.ECC):
        raise VTPMBindingRefused(host=host, reason="the vTPM CA key is "
                                 "neither RSA nor ECC")
    try:
        keys.check_ak_scheme(public)
    except exception.EvidenceError as error:
        raise VTPMBindingRefused(host=host, reason="the vTPM CA key has no "
                                 "fixed signing scheme (%s)" % error) \
            from None


def verify_ca(host: str, host_ak: Public,
              certification: CACertification) -> Public:
    """The CA public key, once ``host``'s registered AK is shown to have
    certified it as a key of its own TPM for this purpose and host."""
    try:
        ca = structures.parse_public(certification.public)
        attest = structures.parse_attest(certification.certify_attest)
    except exception.EvidenceError as error:
        raise VTPMCertificateMalformed(
            host=host, reason="CA certification: %s" % error) from None
    try:
        quotes.verify_signature(host_ak, certification.certify_attest,
                                certification.certify_signature)
    except exception.InvalidSignature:
        raise VTPMChainForeignHost(
            host=host, reason="the vTPM CA is not certified by the "
            "registered AK of %s" % host) from None
    except exception.EvidenceError as error:
        raise VTPMBindingRefused(
            host=host, reason="CA certification signature: %s" % error) \
            from None
    if attest.magic != TPM_GENERATED_VALUE or \
            attest.type != TPM_ST.ATTEST_CERTIFY or \
            not isinstance(attest.attested, structures.CertifyInfo):
        raise VTPMBindingRefused(
            host=host, reason="the CA certification is not a TPM2_Certify "
            "made by the TPM")
    if not hmac.compare_digest(attest.attested.name, ca.name()):
        raise VTPMBindingRefused(
            host=host, reason="the AK certified another key than the CA "
            "public key presented")
    if not hmac.compare_digest(attest.extra_data, ca_qualifying_data(host)):
        raise VTPMChainForeignHost(
            host=host, reason="the CA certification's qualifying data "
            "does not name %s as the CA's host" % host)
    _check_ca_attributes(host, ca)
    return ca


# --- the vTPM certificate ----------------------------------------------------

def certificate_message(payload: bytes) -> bytes:
    """The bytes the CA key signs (its TPM hashes the SHA-256 of them)."""
    return _CERT_TAG + payload


@dataclass(frozen=True)
class VTPMCertificate:
    """A vTPM certificate's claims (see the module docstring). The token
    is ``base64url(payload) "." base64url(TPMT_SIGNATURE)``, the payload
    canonical JSON."""

    host: str
    instance: str
    vtpm_ak: bytes          # TPMT_PUBLIC of the vTPM's attestation key
    vtpm_ek_sha256: str     # hex SHA-256 of the vTPM EK's SPKI DER
    ca_name: bytes          # Name of the CA key that signs
    issued_at: int
    serial: str

    def payload(self) -> bytes:
        return _canonical({
            "typ": CERTIFICATE_TYPE, "ver": CERTIFICATE_VERSION,
            "host": self.host, "instance": self.instance,
            "vtpm_ak": _b64e(self.vtpm_ak),
            "vtpm_ek_sha256": self.vtpm_ek_sha256,
            "ca_name": self.ca_name.hex(), "iat": self.issued_at,
            "serial": self.serial})

    @staticmethod
    def token(payload: bytes, signature: bytes) -> str:
        return _b64e(payload) + "." + _b64e(signature)


def _parse_token(token: Any, host: str) -> tuple[bytes, bytes, dict]:
    if not isinstance(token, str) or len(token) > _MAX_TOKEN:
        raise VTPMCertificateMalformed(
            host=host, reason="the certificate is not a string of at most "
            "%d characters" % _MAX_TOKEN)
    parts = token.split(".")
    if len(parts) != 2 or not all(parts):
        raise VTPMCertificateMalformed(
            host=host, reason="the certificate is not two base64url parts")
    payload = _b64d(parts[0], "payload", host)
    signature = _b64d(parts[1], "signature", host)
    try:
        claims = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise VTPMCertificateMalformed(host=host,
                                       reason="payload is not JSON") \
            from None
    if not isinstance(claims, dict) or set(claims) != _CLAIMS:
        raise VTPMCertificateMalformed(
            host=host, reason="payload must hold exactly %s"
            % ", ".join(sorted(_CLAIMS)))
    try:
        canonical = _canonical(claims)
    except (TypeError, ValueError):
        canonical = b""
    if canonical != payload:
        raise VTPMCertificateMalformed(host=host,
                                       reason="payload is not canonical")
    return payload, signature, claims


def _claims_certificate(claims: dict, host: str) -> VTPMCertificate:
    if claims["typ"] != CERTIFICATE_TYPE or \
            claims["ver"] != CERTIFICATE_VERSION or \
            type(claims["ver"]) is not int:
        raise VTPMCertificateMalformed(
            host=host, reason="not a %s version %d" % (CERTIFICATE_TYPE,
                                                      CERTIFICATE_VERSION))
    for name in ("host", "instance", "vtpm_ak", "vtpm_ek_sha256",
                 "ca_name", "serial"):
        if not isinstance(claims[name], str) or not claims[name]:
            raise VTPMCertificateMalformed(
                host=host, reason="claim %s must be a non-empty string"
                % name)
    if type(claims["iat"]) is not int or claims["iat"] < 0:
        raise VTPMCertificateMalformed(host=host,
                                       reason="claim iat must be epoch "
                                       "seconds")
    if not _HEX64.fullmatch(claims["vtpm_ek_sha256"]):
        raise VTPMCertificateMalformed(
            host=host, reason="vtpm_ek_sha256 is not 64 lowercase hex")
    try:
        instance = str(uuid.UUID(claims["instance"]))
        ca_name = bytes.fromhex(claims["ca_name"])
    except ValueError:
        raise VTPMCertificateMalformed(
            host=host, reason="instance is not a UUID or ca_name not hex") \
            from None
    if instance != claims["instance"]:
        raise VTPMCertificateMalformed(
            host=host, reason="instance is not a canonical UUID")
    return VTPMCertificate(
        host=claims["host"], instance=instance,
        vtpm_ak=_b64d(claims["vtpm_ak"], "vtpm_ak", host),
        vtpm_ek_sha256=claims["vtpm_ek_sha256"], ca_name=ca_name,
        issued_at=claims["iat"], serial=claims["serial"])


@dataclass(frozen=True)
class BoundVTPM:
    """A vTPM proven to belong to ``host`` (see the trust contract)."""

    host: str
    instance: str
    ak: Public
    ek_sha256: str
    issued_at: int
    serial: str


def verify_certificate(token: str, ca: Public, host: str,
                       instance: str | None = None) -> BoundVTPM:
    """Verify a vTPM certificate with the (verified) CA key of ``host``."""
    payload, signature, claims = _parse_token(token, host)
    try:
        quotes.verify_signature(ca, certificate_message(payload), signature)
    except exception.InvalidSignature:
        raise VTPMChainForeignHost(
            host=host, reason="the vTPM certificate is not signed by the "
            "vTPM CA of %s" % host) from None
    except exception.EvidenceError as error:
        raise VTPMBindingRefused(
            host=host, reason="certificate signature: %s" % error) from None
    cert = _claims_certificate(claims, host)
    if cert.host != host:
        raise VTPMChainForeignHost(
            host=host, reason="the certificate names host %r"
            % cert.host[:_MAX_HOST])
    if not hmac.compare_digest(cert.ca_name, ca.name()):
        raise VTPMChainForeignHost(
            host=host, reason="the certificate names another CA key")
    if instance is not None and cert.instance != instance:
        raise VTPMBindingRefused(
            host=host, reason="the certificate is for instance %s, not %s"
            % (cert.instance, instance))
    try:
        ak = structures.parse_public(cert.vtpm_ak)
        keys.check_ak_attributes(ak)
    except exception.EvidenceError as error:
        raise VTPMBindingRefused(
            host=host, reason="the certified vTPM AK is not a restricted "
            "TPM signing key: %s" % error) from None
    return BoundVTPM(host=cert.host, instance=cert.instance, ak=ak,
                     ek_sha256=cert.vtpm_ek_sha256,
                     issued_at=cert.issued_at, serial=cert.serial)


# --- the whole chain ---------------------------------------------------------

@dataclass(frozen=True)
class VTPMChain:
    """What an instance presents: its host's CA certification and its
    vTPM certificate (the provisioner's output, kept with the instance)."""

    ca: CACertification
    certificate: str

    def to_wire(self) -> dict[str, Any]:
        return {"ca": self.ca.to_wire(), "certificate": self.certificate}

    @classmethod
    def from_wire(cls, wire: Any, host: str = "?") -> "VTPMChain":
        if not isinstance(wire, dict) or set(wire) != {"ca", "certificate"}:
            raise VTPMCertificateMalformed(
                host=host, reason="a vTPM chain holds exactly ca and "
                "certificate")
        if not isinstance(wire["certificate"], str):
            raise VTPMCertificateMalformed(
                host=host, reason="certificate must be a string")
        return cls(CACertification.from_wire(wire["ca"], host),
                   wire["certificate"])


def verify_chain(host: str, host_ak: Public, chain: VTPMChain | Mapping,
                 instance: str | None = None) -> BoundVTPM:
    """Verify ``chain`` against the registered AK of ``host``: the
    (host, instance, vTPM AK) it binds, or a :class:`VTPMBindingRefused`."""
    if not isinstance(chain, VTPMChain):
        chain = VTPMChain.from_wire(chain, host)
    ca = verify_ca(host, host_ak, chain.ca)
    return verify_certificate(chain.certificate, ca, host, instance)
