"""Signed attestation results: a verdict as a JWS the whole cloud can check.

The conductor signs every verdict with its key (ES256 or EdDSA, see
``keystore``); consumers (scheduler filter, migration, notification
listeners) verify with the conductor's public key(s) and get a
:class:`~trusted_pools.protocol.verdict.Verdict` back, or a typed error.

Token: JWS compact serialization made and checked by PyJWT (``jwt.PyJWS``),
protected header ``{"alg", "kid", "typ": "trusted-pools-result+jwt"}``
(sorted, no spaces; the explicit type keeps these tokens from being confused
with other JWTs, RFC 8725 section 3.11), payload = canonical JSON (sorted
keys, no spaces, UTF-8) of exactly these claims::

    ver              2 (the claim set version; unknown claims are refused)
    iss              conductor id
    sub              host
    seq              verdict sequence number, 1..2**63-1: allocated by the
                     verifier's database in the transaction that stores the
                     verdict, strictly increasing across every conductor
                     sharing that database; a greater ``seq`` is a later
                     verdict of the host (consumers order by it, never by
                     ``iat``, which is a conductor's wall clock)
    iat, exp         issue and expiry, UTC epoch seconds (the verdict's own;
                     for freshness and expiry only)
    jti              unique token id
    status           "trusted" | "untrusted" | "unknown"
    level            0..4 (levels.AssuranceLevel)
    vector           AR4SI trustworthiness vector, label -> int
    policy_versions  policy name -> version
    evidence_digest  SHA-256 hex of the canonical evidence ("" if unknown)
    reasons          list of strings

Verification fails closed on any anomaly: unknown kid, tampered header or
payload, algorithm not matching the key type, expired, not yet valid,
missing or extra claims, a non-canonical header or payload. A version 1
token (no ``seq``, from a conductor older than the sequence) is refused:
without a sequence it could only be ordered by its issuer's clock, which is
what the sequence replaces.

What PyJWT does, and what this module adds around it because PyJWT does
not:

* PyJWT signs, and verifies the signature (ES256 as the 64-byte R||S of
  RFC 7518, or Ed25519) with ``algorithms`` pinned to the one algorithm of
  the key that ``kid`` selects from the caller's own key set
  (:func:`keystore.algorithm_for_key`); the header's ``alg`` only has to
  agree with it, it never chooses. The ``PyJWS`` instance knows no other
  algorithm at all.
* Before PyJWT sees the token: a size bound, three non-empty unpadded
  base64url segments, and a header of ``alg``, ``kid``, ``typ`` only (read
  here to pick the key: PyJWT has no local key set by ``kid``). That
  refuses ``crit`` and ``b64`` (PyJWT implements RFC 7797 unencoded
  payloads, which a verdict never uses) and the key-carrying ``jwk``,
  ``jku``, ``x5c``, ``x5u``.
* After it: header, payload and signature must each have their one
  canonical spelling (sorted compact JSON, canonical base64url: older
  PyJWT releases, which ``PyJWT>=2.8`` admits, decode base64url leniently,
  and none refuses duplicate JSON members), so one verdict has one token.
* The claims are checked here, not by ``jwt.decode``: the set must be exact
  (PyJWT's ``require`` cannot refuse extra claims), the payload canonical,
  and the times are compared with the caller's ``now`` (PyJWT only reads the
  wall clock; the scheduler's cache passes its own clock) by PyJWT's own
  rule: expired when ``now >= exp + leeway``, not yet valid when
  ``iat > now + leeway``.
"""

from __future__ import annotations

import binascii
import dataclasses
import json
import re
import secrets
from typing import Any, Mapping

import jwt
from jwt import utils as jwt_utils
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from trusted_pools import exception
from trusted_pools.protocol import keystore
from trusted_pools.protocol.levels import TrustVector
from trusted_pools.protocol.verdict import Verdict, canonical_json

__all__ = [
    "RESULT_TYPE", "RESULT_VERSION", "DEFAULT_LEEWAY", "MAX_LEEWAY",
    "MAX_SEQUENCE", "MAX_TOKEN_CHARS", "MAX_KID_CHARS", "SignedResult",
    "ResultSigner", "result_claims",
    "sign_verdict",
    "verify_signed_result", "verify_result",
]

RESULT_TYPE = "trusted-pools-result+jwt"
#: Version 2 added ``seq``; version 1 tokens are refused.
RESULT_VERSION = 2
#: Largest verdict sequence (a signed 64-bit database column).
MAX_SEQUENCE = 2 ** 63 - 1
#: Default clock leeway, seconds, between conductor and consumer.
DEFAULT_LEEWAY = 5
#: A larger leeway would quietly extend every verdict's life.
MAX_LEEWAY = 300
#: Longest token accepted, in characters; bounds the work done on input.
MAX_TOKEN_CHARS = 256 * 1024
#: Longest key id accepted (a thumbprint is 43).
MAX_KID_CHARS = 128
_MAX_ISSUER_CHARS = 255
_MAX_JTI_CHARS = 128

#: PyJWT restricted to the two algorithms; per token, ``algorithms`` is
#: further pinned to the one the selected key implies.
_JWS = jwt.PyJWS(algorithms=sorted(keystore.SUPPORTED_ALGORITHMS))
_HEADER_PARAMETERS = frozenset({"alg", "kid", "typ"})
_SEGMENT = re.compile(r"[A-Za-z0-9_-]+")
_JSON = json.JSONDecoder()

_CLAIMS = frozenset({
    "ver", "iss", "sub", "seq", "iat", "exp", "jti", "status", "level",
    "vector",
    "policy_versions", "evidence_digest", "reasons",
})


@dataclasses.dataclass(frozen=True)
class SignedResult:
    """A verified token: the verdict plus who signed it and with what."""

    verdict: Verdict
    issuer: str
    jti: str
    kid: str
    alg: str
    #: The verifier's order of this host's verdicts (claim ``seq``).
    sequence: int


def _check_issuer(issuer: Any) -> str:
    if not isinstance(issuer, str) or not 0 < len(
            issuer) <= _MAX_ISSUER_CHARS or not issuer.isprintable():
        raise exception.InvalidParameterValue(
            name="issuer", reason="must be a string of 1 to %d characters"
            % _MAX_ISSUER_CHARS)
    return issuer


def _check_sequence(sequence: Any) -> int:
    if type(sequence) is not int or not 0 < sequence <= MAX_SEQUENCE:
        raise exception.InvalidParameterValue(
            name="sequence", reason="must be an integer from 1 to 2**63-1 "
            "allocated by the database")
    return sequence


def result_claims(verdict: Verdict, issuer: str, jti: str,
                  sequence: int) -> dict[str, Any]:
    """The claim set signed for ``verdict``, the ``sequence``-th verdict
    the database allocated."""
    if not isinstance(verdict, Verdict):
        raise exception.InvalidParameterValue(name="verdict",
                                              reason="expected a Verdict")
    _check_sequence(sequence)
    if (not isinstance(jti, str) or not 0 < len(jti) <= _MAX_JTI_CHARS
            or not jti.isascii() or not jti.isprintable()):
        raise exception.InvalidParameterValue(
            name="jti", reason="must be a string of 1 to %d characters"
            % _MAX_JTI_CHARS)
    return {
        "ver": RESULT_VERSION,
        "iss": _check_issuer(issuer),
        "sub": verdict.host,
        "seq": sequence,
        "iat": verdict.issued_at,
        "exp": verdict.expires_at,
        "jti": jti,
        "status": verdict.status.value,
        "level": int(verdict.level),
        "vector": verdict.vector.to_json(),
        "policy_versions": dict(verdict.policy_versions),
        "evidence_digest": verdict.evidence_digest,
        "reasons": list(verdict.reasons),
    }


class ResultSigner:
    """Signs verdicts with one key; computes the key id once."""

    def __init__(self, key: keystore.PrivateKey, issuer: str) -> None:
        if not isinstance(key, (ec.EllipticCurvePrivateKey,
                                ed25519.Ed25519PrivateKey)):
            raise exception.InvalidParameterValue(
                name="key", reason="expected an ES256 or Ed25519 private key")
        self._key = key
        self.issuer = _check_issuer(issuer)
        self.alg = keystore.algorithm_for_key(key)
        self.kid = keystore.jwk_thumbprint(key)
        self._headers = {"kid": self.kid, "typ": RESULT_TYPE}

    def sign(self, verdict: Verdict, *, sequence: int,
             jti: str | None = None) -> str:
        """Sign ``verdict`` as the ``sequence``-th verdict (allocated by
        the database when the verdict is stored, see
        ``db.api.Connection.record_verdicts``)."""
        claims = result_claims(verdict, self.issuer,
                               jti if jti is not None
                               else secrets.token_urlsafe(16), sequence)
        # PyJWS (not jwt.encode) so that the payload is our canonical JSON
        # byte for byte; PyJWT writes the header sorted and without spaces.
        token = _JWS.encode(canonical_json(claims), self._key,
                            algorithm=self.alg, headers=dict(self._headers))
        if len(token) > MAX_TOKEN_CHARS:
            raise exception.InvalidParameterValue(
                name="verdict", reason="token would exceed %d characters and "
                "could not be verified" % MAX_TOKEN_CHARS)
        return token


def sign_verdict(verdict: Verdict, key: keystore.PrivateKey, issuer: str,
                 *, sequence: int, jti: str | None = None) -> str:
    """Sign one verdict (use :class:`ResultSigner` to sign many)."""
    return ResultSigner(key, issuer).sign(verdict, sequence=sequence,
                                          jti=jti)


def _malformed(reason: str) -> exception.ResultMalformed:
    return exception.ResultMalformed(reason=reason)


def _int_claim(claims: Mapping[str, Any], name: str) -> int:
    value = claims[name]
    if type(value) is not int:
        raise _malformed("claim %s must be an integer" % name)
    return value


def _str_claim(claims: Mapping[str, Any], name: str, limit: int) -> str:
    value = claims[name]
    if not isinstance(value, str) or not 0 < len(value) <= limit:
        raise _malformed("claim %s must be a string of 1 to %d characters"
                         % (name, limit))
    return value


def _check_arguments(now: Any, leeway: Any) -> None:
    if type(now) is not int or now < 0:
        raise exception.InvalidParameterValue(
            name="now", reason="expected integer epoch seconds")
    if type(leeway) is not int or not 0 <= leeway <= MAX_LEEWAY:
        raise exception.InvalidParameterValue(
            name="leeway", reason="must be 0 to %d seconds" % MAX_LEEWAY)


def _parse_claims(payload: bytes) -> dict[str, Any]:
    try:
        claims = _JSON.decode(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise _malformed("payload is not JSON")
    if not isinstance(claims, dict):
        raise _malformed("payload is not a JSON object")
    if type(claims.get("ver")) is int and claims["ver"] == 1:
        raise _malformed("claim set version 1 carries no verdict sequence "
                         "(seq) and cannot be ordered; it comes from a "
                         "conductor older than this consumer: upgrade it")
    present = set(claims)
    if present != _CLAIMS:
        missing = sorted(_CLAIMS - present)
        extra = sorted(name[:32] for name in present - _CLAIMS)
        raise _malformed("claims missing %s, unexpected %s" % (missing, extra))
    # Canonical: one encoding per claim set. This also refuses duplicate
    # members (the parser kept one; the canonical form then differs) and
    # NaN/Infinity (no canonical encoding).
    try:
        canonical = canonical_json(claims)
    except (ValueError, TypeError):
        raise _malformed("payload holds values without a JSON encoding")
    if canonical != payload:
        raise _malformed("payload is not canonical JSON")
    if _int_claim(claims, "ver") != RESULT_VERSION:
        raise _malformed("claim set version %r is not %d"
                         % (claims["ver"], RESULT_VERSION))
    if not 0 < _int_claim(claims, "seq") <= MAX_SEQUENCE:
        raise _malformed("claim seq must be 1 to 2**63-1")
    return claims


def _check_times(iat: int, exp: int, now: int, leeway: int) -> None:
    if exp <= iat:
        raise _malformed("exp is not after iat")
    if iat > now + leeway:
        raise exception.ResultNotYetValid(issued_at=iat, now=now,
                                          leeway=leeway)
    if now >= exp + leeway:
        raise exception.ResultExpired(expires_at=exp, now=now, leeway=leeway)


def _verdict_from_claims(claims: Mapping[str, Any]) -> Verdict:
    for name, kind in (("status", str), ("vector", dict), ("reasons", list),
                       ("policy_versions", dict), ("evidence_digest", str),
                       ("sub", str)):
        if not isinstance(claims[name], kind):
            raise _malformed("claim %s must be a JSON %s"
                             % (name, kind.__name__))
    try:
        return Verdict(host=claims["sub"], status=claims["status"],
                       level=_int_claim(claims, "level"),
                       vector=TrustVector.from_json(claims["vector"]),
                       reasons=tuple(claims["reasons"]),
                       policy_versions=claims["policy_versions"],
                       evidence_digest=claims["evidence_digest"],
                       issued_at=claims["iat"], expires_at=claims["exp"])
    except exception.Invalid as exc:
        raise _malformed("claims do not form a valid verdict: %s"
                         % exc.message)


def _check_shape(token: Any) -> tuple[str, str]:
    """Size, three non-empty unpadded base64url segments (so ASCII only).

    Returns the header and signature segments.
    """
    if not isinstance(token, str):
        raise _malformed("token is not a string")
    if len(token) > MAX_TOKEN_CHARS:
        raise _malformed("token is longer than %d characters"
                         % MAX_TOKEN_CHARS)
    parts = token.split(".")
    if len(parts) != 3 or not all(_SEGMENT.fullmatch(p) for p in parts):
        raise _malformed("token is not three non-empty dot-separated "
                         "unpadded base64url parts")
    return parts[0], parts[2]


def _checked_header(segment: str) -> tuple[str, str]:
    """The unverified header's (alg, kid), after refusing anything else.

    Only selects the key; the signature that covers these bytes is checked
    next, by PyJWT, with the algorithm the key (not this header) implies.
    Read here rather than with ``jwt.get_unverified_header``, which decodes
    the whole token: PyJWT would then scan the payload twice per token.
    """
    try:
        header = _JSON.decode(jwt_utils.base64url_decode(segment)
                              .decode("utf-8"))
    except (binascii.Error, UnicodeDecodeError, ValueError, RecursionError):
        raise _malformed("header is not base64url JSON")
    if not isinstance(header, dict):
        raise _malformed("header is not a JSON object")
    if "crit" in header:
        raise _malformed("critical header extensions are not understood")
    unknown = set(header) - _HEADER_PARAMETERS
    if unknown:
        raise _malformed("unsupported header parameter(s) %s" % ", ".join(
            sorted(repr(str(name)[:32]) for name in unknown)))
    alg = header.get("alg")
    if not isinstance(alg, str):
        raise _malformed("header has no alg string")
    if alg.lower() == "none":
        raise exception.ResultAlgorithmRejected(
            alg="none", reason="unsigned tokens are never accepted")
    if alg not in keystore.SUPPORTED_ALGORITHMS:
        raise exception.ResultAlgorithmRejected(
            alg=repr(alg[:32]), reason="only ES256 and EdDSA are accepted")
    if header.get("typ") != RESULT_TYPE:
        raise _malformed("header typ is not %r" % RESULT_TYPE)
    kid = header.get("kid")
    if not isinstance(kid, str) or not 0 < len(kid) <= MAX_KID_CHARS:
        raise _malformed("kid must be a string of 1 to %d characters"
                         % MAX_KID_CHARS)
    return alg, kid


def _pinned_key(public_keys: Mapping[str, keystore.PublicKey], alg: str,
                kid: str) -> tuple[keystore.PublicKey, str]:
    """The caller's key for ``kid`` and the one algorithm it implies."""
    if not isinstance(public_keys, Mapping):
        raise exception.InvalidParameterValue(
            name="public_keys", reason="expected a mapping of kid to key")
    key = public_keys.get(kid)
    if key is None:
        raise exception.ResultKeyUnknown(kid=repr(kid))
    pinned = keystore.algorithm_for_key(key)
    if pinned != alg:
        raise exception.ResultAlgorithmRejected(
            alg=alg, reason="key %r is pinned to %s" % (kid, pinned))
    if not isinstance(key, (ec.EllipticCurvePublicKey,
                            ed25519.Ed25519PublicKey)):
        raise exception.InvalidParameterValue(
            name="public_keys", reason="key %r is not a public key" % kid)
    return key, pinned


def _verified_payload(token: str, key: keystore.PublicKey, alg: str,
                      signature_segment: str) -> bytes:
    """PyJWT checks the signature with ``alg`` only; the payload bytes."""
    try:
        decoded = _JWS.decode_complete(token, key=key, algorithms=[alg])
    except jwt.InvalidSignatureError:
        raise exception.ResultSignatureInvalid()
    except jwt.InvalidAlgorithmError as exc:
        raise exception.ResultAlgorithmRejected(alg=alg, reason=str(exc))
    except jwt.PyJWTError as exc:
        raise _malformed("token refused by the JWS layer: %s" % exc)
    if keystore.b64url_encode(decoded["signature"]) != signature_segment:
        raise _malformed("signature is not canonical base64url")
    # As for the payload, one header has one spelling (sorted, no spaces,
    # as PyJWT and the conductor write it): a duplicate member, which one
    # JSON parser reads differently from another, cannot pass.
    if _canonical_header(decoded["header"]) != token.split(".", 1)[0]:
        raise _malformed("header is not canonical JSON")
    return decoded["payload"]


def _canonical_header(header: Mapping[str, Any]) -> str:
    return keystore.b64url_encode(json.dumps(
        header, sort_keys=True, separators=(",", ":")).encode("utf-8"))


def verify_signed_result(token: str,
                         public_keys: Mapping[str, keystore.PublicKey],
                         now: int, leeway: int = DEFAULT_LEEWAY, *,
                         issuer: str | None = None) -> SignedResult:
    """Verify ``token`` and return the verdict with its signing details.

    ``public_keys`` maps kid (RFC 7638 thumbprint, see
    ``keystore.key_set``) to the conductor public keys to accept. With
    ``issuer`` set, a token from another conductor id is refused.
    Raises only ``SignedResultError`` subclasses for a bad token (and
    ``InvalidParameterValue`` for bad arguments).
    """
    _check_arguments(now, leeway)
    if issuer is not None:
        _check_issuer(issuer)
    header_segment, signature_segment = _check_shape(token)
    alg, kid = _checked_header(header_segment)
    key, alg = _pinned_key(public_keys, alg, kid)
    claims = _parse_claims(_verified_payload(token, key, alg,
                                             signature_segment))
    iss = _str_claim(claims, "iss", _MAX_ISSUER_CHARS)
    jti = _str_claim(claims, "jti", _MAX_JTI_CHARS)
    if issuer is not None and iss != issuer:
        raise exception.SignedResultError(
            reason="issued by %r, not by the expected %r"
            % (iss[:64], issuer))
    _check_times(_int_claim(claims, "iat"), _int_claim(claims, "exp"),
                 now, leeway)
    return SignedResult(verdict=_verdict_from_claims(claims), issuer=iss,
                        jti=jti, kid=kid, alg=alg,
                        sequence=claims["seq"])


def verify_result(token: str,
                  public_keys: Mapping[str, keystore.PublicKey],
                  now: int, leeway: int = DEFAULT_LEEWAY, *,
                  issuer: str | None = None) -> Verdict:
    """Verify ``token`` and return its verdict (see verify_signed_result).

    A verified verdict is authentic, not necessarily trusted: pass it to
    ``verdict.is_trusted`` for the scheduling decision.
    """
    return verify_signed_result(token, public_keys, now, leeway,
                                issuer=issuer).verdict
