"""Conductor -> agent requests signed with the conductor's key.

Every compute host holds bus credentials, so "it came over the bus" proves
nothing: without this, any host could ask another host's agent for its
identity, relay a MakeCredential challenge to it, have it quote over nonces
of its choosing, or announce a spoofed (or replayed) epoch to every agent.

So each request a conductor sends to an agent carries a short-lived compact
JWS (a JWT made with PyJWT) signed with the conductor's result-signing key
(:mod:`trusted_pools.protocol.keystore`; ``kid`` is the key's RFC 7638
thumbprint, as in signed results). Its claims bind the request:

* ``method``: the agent endpoint called;
* ``host``: the agent's host, or ``"*"`` for the epoch fanout only;
* ``args``: SHA-256 (hex) of the canonical JSON of the call's keyword
  arguments as sent (without the token itself);
* ``iss``: the conductor's name; ``iat``, ``exp`` (a short lifetime);
  ``jti`` (random, single use); ``seq`` (grows with every token a signer
  makes, so agents can refuse an epoch that is not newer than the last
  one they accepted from that conductor).

Agents verify strictly: only pinned keys, the algorithm the pinned key's
type implies (never the header's say), the exact method, their own host
name, matching arguments, within the lifetime plus a small clock leeway, a
``jti`` never seen before, and for epochs a ``seq`` above the last accepted.
Any failure is one typed error, :class:`~trusted_pools.exception.
AgentRequestRefused`, raised before the agent does anything.

This module is shared by both sides and imports no oslo library.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

import jwt

from trusted_pools import exception
from trusted_pools.protocol import keystore

__all__ = [
    "ALL_HOSTS", "EPOCH_METHOD", "TOKEN_TYPE", "MAX_LIFETIME",
    "DEFAULT_LIFETIME", "DEFAULT_LEEWAY", "RequestSigner", "RequestVerifier",
    "VerifiedRequest", "args_digest", "load_pinned_keys", "parse_pinned_keys",
]

#: The ``host`` claim of the epoch fanout, which every agent receives.
ALL_HOSTS = "*"
#: The only method that may be addressed to :data:`ALL_HOSTS`.
EPOCH_METHOD = "start_epoch"
#: ``typ`` header: a request token can never pass for a signed result.
TOKEN_TYPE = "tp-agent-request+jwt"
#: Seconds a token lives by default, and the longest lifetime an agent
#: accepts (bounds how long a captured token could be replayed, and the
#: size of the agent's memory of used token ids).
DEFAULT_LIFETIME = 60
MAX_LIFETIME = 600
#: Seconds of clock difference tolerated between conductor and agent.
DEFAULT_LEEWAY = 5
#: Longest token accepted, in characters (a real one is about 500).
MAX_TOKEN_CHARS = 4096

_REQUIRED_CLAIMS = ("iss", "iat", "exp", "jti", "method", "host", "args",
                    "seq")
_PEM_BLOCK = re.compile(
    rb"-----BEGIN PUBLIC KEY-----.+?-----END PUBLIC KEY-----", re.DOTALL)
#: A file of pinned public keys is a few kilobytes at most.
MAX_KEYS_FILE_BYTES = 1024 * 1024


def _algorithm(key: Any) -> str:
    """The JWS algorithm a key is used with: its type decides (the same rule
    as signed results, :func:`keystore.algorithm_for_key`)."""
    try:
        return keystore.algorithm_for_key(key)
    except exception.ResultAlgorithmRejected:
        raise exception.InvalidParameterValue(
            name="key", reason="only Ed25519 and ECDSA P-256 keys sign agent "
            "requests")


def args_digest(args: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of the canonical JSON of a call's keyword arguments.

    Canonical: keys sorted, no spaces, ASCII only, no NaN. The agent hashes
    the arguments as they arrived (JSON-decoded), so both sides see the same
    values.
    """
    try:
        text = json.dumps(dict(args), sort_keys=True, separators=(",", ":"),
                          ensure_ascii=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise exception.InvalidParameterValue(
            name="args", reason="not canonical JSON (%s)" % exc)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


# --- Conductor side ----------------------------------------------------------

class RequestSigner:
    """Signs the requests one conductor sends to agents."""

    def __init__(self, key: Any, issuer: str,
                 lifetime: int = DEFAULT_LIFETIME,
                 clock: Callable[[], float] = time.time) -> None:
        if not 1 <= lifetime <= MAX_LIFETIME:
            raise exception.InvalidParameterValue(
                name="lifetime", reason="must be 1 to %d seconds"
                % MAX_LIFETIME)
        self._key = key
        self._alg = _algorithm(key)
        self.kid = keystore.jwk_thumbprint(key)
        self.issuer = issuer
        self.lifetime = lifetime
        self._clock = clock
        self._lock = threading.Lock()
        self._last_seq = 0

    def _next_seq(self) -> int:
        # Nanoseconds of wall time, forced upwards: survives a restart of
        # the conductor (unlike a counter) and orders tokens made within one
        # second (unlike iat).
        with self._lock:
            self._last_seq = max(self._last_seq + 1,
                                 int(self._clock() * 1e9))
            return self._last_seq

    def sign(self, method: str, host: str, args: Mapping[str, Any]) -> str:
        """A token for calling ``method`` on ``host`` with ``args``."""
        if host == ALL_HOSTS and method != EPOCH_METHOD:
            raise exception.InvalidParameterValue(
                name="host", reason="only %s goes to every agent"
                % EPOCH_METHOD)
        now = int(self._clock())
        claims = {"iss": self.issuer, "iat": now, "exp": now + self.lifetime,
                  "jti": os.urandom(16).hex(), "method": method,
                  "host": host, "args": args_digest(args),
                  "seq": self._next_seq()}
        return jwt.encode(claims, self._key, algorithm=self._alg,
                          headers={"kid": self.kid, "typ": TOKEN_TYPE})


# --- Agent side --------------------------------------------------------------

@dataclass(frozen=True)
class VerifiedRequest:
    """What a request token proved: who asked for what, and when."""

    kid: str
    issuer: str
    method: str
    host: str
    seq: int
    expires_at: int
    jti: str


def _pinned(keys: Mapping[str, Any] | Iterable[Any]) -> dict[str, Any]:
    if isinstance(keys, Mapping):
        keys = keys.values()
    pinned = {}
    for key in keys:
        public = keystore.public_key_of(key)
        _algorithm(public)
        pinned[keystore.jwk_thumbprint(public)] = public
    return pinned


class RequestVerifier:
    """Checks request tokens for the agent of one host.

    Keeps two memories against replay: token ids used (until they expire)
    and, per conductor and key, the ``seq`` of the newest epoch accepted.
    """

    def __init__(self, keys: Mapping[str, Any] | Iterable[Any], host: str,
                 leeway: int = DEFAULT_LEEWAY,
                 clock: Callable[[], float] = time.time) -> None:
        self._keys = _pinned(keys)
        if not self._keys:
            raise exception.ConfigInvalid(
                reason="no conductor public key is pinned: the agent would "
                       "refuse every request")
        self.host = host
        self.leeway = leeway
        self._clock = clock
        self._lock = threading.Lock()
        self._used: dict[str, int] = {}
        self._pruned_at = 0
        self._epochs: dict[tuple[str, str], int] = {}

    @property
    def key_ids(self) -> frozenset[str]:
        return frozenset(self._keys)

    def _refuse(self, method: str, reason: str
                ) -> exception.AgentRequestRefused:
        return exception.AgentRequestRefused(host=self.host, method=method,
                                             reason=reason)

    def verify(self, method: str, args: Mapping[str, Any], token: Any
               ) -> VerifiedRequest:
        """Check ``token`` for a call of ``method`` with ``args`` on this
        host, and remember it; :class:`AgentRequestRefused` otherwise."""
        request = self._check_token(method, args, token)
        self._check_replay(method, request)
        return request

    def _decode(self, method: str, token: Any) -> tuple[str, dict[str, Any]]:
        if not isinstance(token, str) or not token:
            raise self._refuse(method, "the request carries no conductor "
                               "signature")
        if len(token) > MAX_TOKEN_CHARS:
            raise self._refuse(method, "the request token is too long")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise self._refuse(method, "the request token is malformed")
        kid = header.get("kid")
        key = self._keys.get(kid) if isinstance(kid, str) else None
        if key is None:
            raise self._refuse(method, "signed with key %r, which this agent "
                               "does not pin" % (kid,))
        if header.get("typ") != TOKEN_TYPE:
            raise self._refuse(method, "the token is not an agent request")
        try:
            # Times are checked below against this verifier's clock.
            claims = jwt.decode(
                token, key, algorithms=[_algorithm(key)],
                options={"require": list(_REQUIRED_CLAIMS),
                         "verify_exp": False, "verify_iat": False,
                         "verify_nbf": False, "verify_aud": False})
        except jwt.InvalidSignatureError:
            raise self._refuse(method, "the signature does not verify")
        except jwt.PyJWTError as exc:
            raise self._refuse(method, "invalid request token (%s)" % exc)
        return kid, claims

    def _check_token(self, method: str, args: Mapping[str, Any], token: Any
                     ) -> VerifiedRequest:
        kid, claims = self._decode(method, token)
        if claims["method"] != method:
            raise self._refuse(method, "the token was issued for %r"
                               % (claims["method"],))
        target = claims["host"]
        if target == ALL_HOSTS and method != EPOCH_METHOD:
            raise self._refuse(method, "a token for every host is only valid "
                               "for %s" % EPOCH_METHOD)
        if target not in (self.host, ALL_HOSTS):
            raise self._refuse(method, "the token was issued for host %r"
                               % (target,))
        try:
            digest = args_digest(args)
        except exception.InvalidParameterValue:
            raise self._refuse(method, "the arguments are not canonical JSON")
        if claims["args"] != digest:
            raise self._refuse(method, "the arguments differ from those the "
                               "conductor signed")
        iat, exp, seq = claims["iat"], claims["exp"], claims["seq"]
        if not all(isinstance(v, int) and not isinstance(v, bool)
                   for v in (iat, exp, seq)):
            raise self._refuse(method, "iat, exp and seq must be integers")
        now = self._clock()
        if exp + self.leeway <= now:
            raise self._refuse(method, "the request token has expired")
        if iat - self.leeway > now:
            raise self._refuse(method, "the request token is issued in the "
                               "future (check the clocks)")
        if exp - iat > MAX_LIFETIME:
            raise self._refuse(method, "the token lives longer than %d s"
                               % MAX_LIFETIME)
        issuer = claims["iss"]
        if not isinstance(issuer, str) or not isinstance(claims["jti"], str):
            raise self._refuse(method, "iss and jti must be strings")
        if method == EPOCH_METHOD and args.get("conductor") != issuer:
            raise self._refuse(method, "conductor %r announced an epoch in "
                               "the name of %r"
                               % (issuer, args.get("conductor")))
        return VerifiedRequest(kid, issuer, method, target, seq, exp,
                               claims["jti"])

    def _check_replay(self, method: str, request: VerifiedRequest) -> None:
        jti = request.jti
        now = int(self._clock())
        with self._lock:
            if now != self._pruned_at:     # at most once a second
                self._used = {j: e for j, e in self._used.items()
                              if e + self.leeway >= now}
                self._pruned_at = now
            if jti in self._used:
                raise self._refuse(method, "the request token was already "
                                   "used (replayed)")
            if method == EPOCH_METHOD:
                source = (request.kid, request.issuer)
                newest = self._epochs.get(source)
                if newest is not None and request.seq <= newest:
                    raise self._refuse(method, "the epoch is not newer than "
                                       "the last one accepted from %s "
                                       "(replayed)" % request.issuer)
                self._epochs[source] = request.seq
            self._used[jti] = request.expires_at


# --- Pinned keys -------------------------------------------------------------

def parse_pinned_keys(data: bytes, where: str = "conductor keys"
                      ) -> dict[str, Any]:
    """kid -> public key from a JWKS (``{"keys": [...]}``) or from one or
    more PEM public keys (``-----BEGIN PUBLIC KEY-----`` blocks)."""
    text = data.strip()
    keys: list[Any] = []
    try:
        if text.startswith(b"{"):
            try:
                jwks = json.loads(text)
            except ValueError as exc:
                raise exception.ConfigInvalid(
                    reason="%s is not valid JSON (%s)" % (where, exc))
            members = jwks.get("keys") if isinstance(jwks, dict) else None
            if not isinstance(members, list):
                raise exception.ConfigInvalid(
                    reason="%s is JSON without a \"keys\" list (JWKS)"
                    % where)
            keys = [keystore.public_key_from_jwk(jwk) for jwk in members]
        else:
            keys = [keystore.public_key_from_pem(block)
                    for block in _PEM_BLOCK.findall(text)]
            _check_pem_blocks(text, len(keys), where)
        return _pinned(keys)
    except exception.InvalidParameterValue as exc:
        raise exception.ConfigInvalid(reason="%s: %s" % (where, exc))


def _check_pem_blocks(text: bytes, found: int, where: str) -> None:
    # A private key pasted by mistake must not pass unnoticed, and neither
    # may a file whose only content is something other than public keys.
    if b"PRIVATE KEY" in text:
        raise exception.ConfigInvalid(
            reason="%s contains a private key; copy the conductor's public "
                   "key only ('openssl pkey -pubout')" % where)
    if found == 0:
        raise exception.ConfigInvalid(
            reason="%s holds no conductor public key" % where)


def load_pinned_keys(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The conductor public keys an agent trusts, from ``path``.

    Fails closed: a missing, unreadable or empty file is an error, never
    "trust anyone".
    """
    path = os.fspath(path)
    where = "conductor keys file %s" % path
    if not path:
        raise exception.ConfigInvalid(
            reason="[agent] conductor_keys_file is not set; copy the "
                   "conductors' public keys to a file and name it there")
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_KEYS_FILE_BYTES + 1)
    except OSError as exc:
        raise exception.ConfigInvalid(
            reason="%s cannot be read (%s); copy the conductors' public keys "
                   "there" % (where, exc.strerror))
    if len(data) > MAX_KEYS_FILE_BYTES:
        raise exception.ConfigInvalid(
            reason="%s is larger than %d bytes" % (where,
                                                   MAX_KEYS_FILE_BYTES))
    return parse_pinned_keys(data, where)
