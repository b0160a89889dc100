"""Minimal, strict JWS compact serialization (RFC 7515) for ES256 and EdDSA.

Only what signed attestation results need, written on pyca/cryptography:

* algorithms: ``ES256`` (ECDSA P-256 + SHA-256, RFC 7518 section 3.4) and
  ``EdDSA`` with Ed25519 (RFC 8037). Nothing else, ``none`` above all.
* the algorithm is pinned by the verifying key's type, never taken from the
  token: an ES256 header verified with an Ed25519 key fails, and so does the
  reverse (no algorithm confusion).
* the key is chosen by ``kid`` from the caller's own key set; header
  parameters that carry keys or URLs (``jwk``, ``jku``, ``x5c``, ``x5u``)
  are refused, as is every parameter other than ``alg``, ``kid``, ``typ``,
  and any ``crit`` (we implement no extension, so every critical one is
  unknown).
* base64url without padding, canonical only (no stray bits, so one token has
  one spelling); header JSON without duplicate names or NaN; bounded size.
* ES256 signatures are the exact 64-byte R||S of RFC 7518, converted to and
  from the DER form cryptography uses.

Errors are the ``SignedResultError`` family of ``trusted_pools.exception``.
A bad signature is :class:`~trusted_pools.exception.ResultSignatureInvalid`
with no detail.

Constant time: verification uses public keys only, so no comparison here
depends on a secret; the private-key operations are cryptography's (OpenSSL)
constant-time implementations.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import re
from typing import Any, Mapping, Union

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric import utils as asym_utils

from trusted_pools import exception

__all__ = [
    "ALG_ES256", "ALG_EDDSA", "SUPPORTED_ALGORITHMS", "MAX_TOKEN_CHARS",
    "MAX_KID_CHARS", "PrivateKey", "PublicKey", "VerifiedJWS",
    "algorithm_for_key", "b64url_encode", "b64url_decode",
    "parse_json_object", "sign_compact", "verify_compact",
]

ALG_ES256 = "ES256"
ALG_EDDSA = "EdDSA"
SUPPORTED_ALGORITHMS = frozenset({ALG_ES256, ALG_EDDSA})

#: Longest token accepted, in characters; bounds the work done on input.
MAX_TOKEN_CHARS = 256 * 1024
#: Longest key id accepted.
MAX_KID_CHARS = 128

PrivateKey = Union[ec.EllipticCurvePrivateKey, ed25519.Ed25519PrivateKey]
PublicKey = Union[ec.EllipticCurvePublicKey, ed25519.Ed25519PublicKey]

_ALLOWED_HEADER = frozenset({"alg", "kid", "typ"})
_P256_BYTES = 32
_SIGNATURE_BYTES = 64        # ES256 R||S and Ed25519 are both 64 bytes
_B64URL = re.compile(r"[A-Za-z0-9_-]*")


@dataclasses.dataclass(frozen=True)
class VerifiedJWS:
    """A token whose signature verified with the key named by ``kid``."""

    alg: str
    kid: str
    typ: str
    payload: bytes


def algorithm_for_key(key: Any) -> str:
    """The one JWS algorithm a key may be used with (public or private)."""
    if isinstance(key, (ed25519.Ed25519PrivateKey, ed25519.Ed25519PublicKey)):
        return ALG_EDDSA
    if isinstance(key, (ec.EllipticCurvePrivateKey,
                        ec.EllipticCurvePublicKey)):
        if isinstance(key.curve, ec.SECP256R1):
            return ALG_ES256
        raise exception.ResultAlgorithmRejected(
            alg="ECDSA/%s" % key.curve.name,
            reason="only the P-256 curve (ES256) is supported")
    raise exception.ResultAlgorithmRejected(
        alg=type(key).__name__,
        reason="only ES256 (P-256) and EdDSA (Ed25519) keys are supported")


def b64url_encode(data: bytes) -> str:
    """base64url without padding (RFC 7515 section 2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str, what: str) -> bytes:
    """Strict inverse of :func:`b64url_encode`.

    Rejects padding, characters outside the URL-safe alphabet, impossible
    lengths and non-zero trailing bits (so each byte string has exactly one
    accepted encoding).
    """
    if not isinstance(text, str) or not _B64URL.fullmatch(text):
        raise exception.ResultMalformed(
            reason="%s is not unpadded base64url" % what)
    if len(text) % 4 == 1:
        raise exception.ResultMalformed(
            reason="%s has an impossible base64url length" % what)
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise exception.ResultMalformed(
            reason="%s is not valid base64url" % what)
    if b64url_encode(data) != text:
        raise exception.ResultMalformed(
            reason="%s is not canonical base64url" % what)
    return data


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for name, value in pairs:
        if name in result:
            raise exception.ResultMalformed(
                reason="duplicate JSON member %r" % name[:64])
        result[name] = value
    return result


def _reject_constant(name: str) -> Any:
    raise exception.ResultMalformed(reason="JSON constant %s" % name)


# One decoder for all calls (json.loads with hooks builds one per call).
_STRICT_DECODER = json.JSONDecoder(object_pairs_hook=_reject_duplicates,
                                   parse_constant=_reject_constant)


def parse_json_object(data: bytes, what: str) -> dict[str, Any]:
    """Strict JSON object from UTF-8 bytes: no duplicates, NaN or Infinity."""
    try:
        value = _STRICT_DECODER.decode(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise exception.ResultMalformed(reason="%s is not JSON" % what)
    if not isinstance(value, dict):
        raise exception.ResultMalformed(
            reason="%s is not a JSON object" % what)
    return value


def _check_kid(kid: Any) -> str:
    if not isinstance(kid, str) or not 0 < len(kid) <= MAX_KID_CHARS:
        raise exception.ResultMalformed(
            reason="kid must be a string of 1 to %d characters"
            % MAX_KID_CHARS)
    return kid


def _sign_raw(key: PrivateKey, data: bytes) -> bytes:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(data)
    der = key.sign(data, ec.ECDSA(hashes.SHA256()))
    r, s = asym_utils.decode_dss_signature(der)
    return r.to_bytes(_P256_BYTES, "big") + s.to_bytes(_P256_BYTES, "big")


def _verify_raw(key: PublicKey, signature: bytes, data: bytes) -> None:
    if len(signature) != _SIGNATURE_BYTES:
        raise exception.ResultSignatureInvalid()
    try:
        if isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, data)
            return
        r = int.from_bytes(signature[:_P256_BYTES], "big")
        s = int.from_bytes(signature[_P256_BYTES:], "big")
        if r == 0 or s == 0:
            raise exception.ResultSignatureInvalid()
        key.verify(asym_utils.encode_dss_signature(r, s), data,
                   ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise exception.ResultSignatureInvalid()


def sign_compact(payload: bytes, key: PrivateKey, *, kid: str,
                 typ: str) -> str:
    """Sign ``payload`` and return the compact serialization.

    The protected header is ``{"alg", "kid", "typ"}`` in canonical JSON; the
    algorithm follows from the key.
    """
    if not isinstance(payload, bytes):
        raise exception.InvalidParameterValue(name="payload",
                                              reason="expected bytes")
    if not isinstance(key, (ec.EllipticCurvePrivateKey,
                            ed25519.Ed25519PrivateKey)):
        raise exception.InvalidParameterValue(
            name="key", reason="expected an ES256 or Ed25519 private key")
    if not isinstance(typ, str) or not typ:
        raise exception.InvalidParameterValue(name="typ",
                                              reason="expected a string")
    if not isinstance(kid, str) or not 0 < len(kid) <= MAX_KID_CHARS:
        raise exception.InvalidParameterValue(
            name="kid", reason="must be a string of 1 to %d characters"
            % MAX_KID_CHARS)
    alg = algorithm_for_key(key)
    header = {"alg": alg, "kid": kid, "typ": typ}
    header_json = json.dumps(header, sort_keys=True, separators=(",", ":"))
    signing_input = (b64url_encode(header_json.encode("utf-8")) + "."
                     + b64url_encode(payload))
    signature = _sign_raw(key, signing_input.encode("ascii"))
    token = signing_input + "." + b64url_encode(signature)
    if len(token) > MAX_TOKEN_CHARS:
        raise exception.InvalidParameterValue(
            name="payload", reason="token would exceed %d characters and "
            "could not be verified" % MAX_TOKEN_CHARS)
    return token


def _split(token: Any) -> tuple[str, str, str]:
    if not isinstance(token, str):
        raise exception.ResultMalformed(reason="token is not a string")
    if len(token) > MAX_TOKEN_CHARS:
        raise exception.ResultMalformed(
            reason="token is longer than %d characters" % MAX_TOKEN_CHARS)
    if not token.isascii():
        raise exception.ResultMalformed(reason="token is not ASCII")
    parts = token.split(".")
    if len(parts) != 3 or not all(parts):
        raise exception.ResultMalformed(
            reason="token is not three non-empty dot-separated parts")
    return parts[0], parts[1], parts[2]


def _checked_header(header: dict[str, Any], typ: str) -> tuple[str, str]:
    """Validate the protected header; return (alg, kid)."""
    if "crit" in header:
        raise exception.ResultMalformed(
            reason="critical header extensions are not understood")
    unknown = set(header) - _ALLOWED_HEADER
    if unknown:
        raise exception.ResultMalformed(
            reason="unsupported header parameter(s) %s"
            % ", ".join(sorted(repr(name[:32]) for name in unknown)))
    alg = header.get("alg")
    if not isinstance(alg, str):
        raise exception.ResultMalformed(reason="header has no alg string")
    if alg.lower() == "none":
        raise exception.ResultAlgorithmRejected(
            alg="none", reason="unsigned tokens are never accepted")
    if alg not in SUPPORTED_ALGORITHMS:
        raise exception.ResultAlgorithmRejected(
            alg=repr(alg[:32]), reason="only ES256 and EdDSA are accepted")
    if header.get("typ") != typ:
        raise exception.ResultMalformed(
            reason="header typ is not %r" % typ)
    return alg, _check_kid(header.get("kid"))


def verify_compact(token: str, public_keys: Mapping[str, PublicKey], *,
                   typ: str) -> VerifiedJWS:
    """Verify a compact JWS against the caller's keys, selected by ``kid``.

    Fails closed: anything unexpected raises a ``SignedResultError``.
    """
    if type(public_keys) is not dict and not isinstance(public_keys,
                                                         Mapping):
        raise exception.InvalidParameterValue(
            name="public_keys", reason="expected a mapping of kid to key")
    header_b64, payload_b64, signature_b64 = _split(token)
    header = parse_json_object(b64url_decode(header_b64, "header"),
                               "header")
    alg, kid = _checked_header(header, typ)
    key = public_keys.get(kid)
    if key is None:
        raise exception.ResultKeyUnknown(kid=repr(kid[:MAX_KID_CHARS]))
    pinned = algorithm_for_key(key)
    if pinned != alg:
        raise exception.ResultAlgorithmRejected(
            alg=alg, reason="key %r is pinned to %s" % (kid, pinned))
    if not isinstance(key, (ec.EllipticCurvePublicKey,
                            ed25519.Ed25519PublicKey)):
        raise exception.InvalidParameterValue(
            name="public_keys", reason="key %r is not a public key" % kid)
    payload = b64url_decode(payload_b64, "payload")
    signature = b64url_decode(signature_b64, "signature")
    signing_input = (header_b64 + "." + payload_b64).encode("ascii")
    _verify_raw(key, signature, signing_input)
    return VerifiedJWS(alg=alg, kid=kid, typ=typ, payload=payload)
