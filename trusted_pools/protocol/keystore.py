"""The conductor's result-signing key: load it, or create it on first start.

The private key lives in one PEM file (PKCS#8, unencrypted: the file mode is
the protection, as for an SSH host key). It is created with mode 0600 and
published atomically: written to a temporary file in the same directory,
flushed to disk, then linked into place only if no key exists yet - so two
conductors starting together never end up with different keys in one file,
and a crash never leaves a half-written key. A key file readable by group or
others is refused (as sshd does), because anyone who can read it can forge
"trusted" verdicts.

Consumers identify a key by its RFC 7638 JWK thumbprint (SHA-256), which is
the ``kid`` of every signed result and of every conductor -> agent request.

This module is also the one place that says which JWS algorithm a key is
used with (:func:`algorithm_for_key`): the key's type decides, never a
token's header. Signed results (``results``) and agent requests
(``agent_requests``) both sign and verify with PyJWT under that rule.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import tempfile
from typing import Any, Iterable, Mapping, Union

from cryptography.exceptions import UnsupportedAlgorithm as _CryptoUnsupported
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from jwt import utils as jwt_utils

from trusted_pools import exception

__all__ = [
    "ALG_ES256", "ALG_EDDSA", "SUPPORTED_ALGORITHMS", "PrivateKey",
    "PublicKey", "algorithm_for_key", "b64url_encode",
    "generate_signing_key", "load_signing_key", "load_or_create_signing_key",
    "public_key_of", "public_key_pem", "public_key_from_pem", "public_jwk",
    "public_key_from_jwk", "jwk_thumbprint", "key_id", "key_set",
]

#: A PEM private key for P-256 or Ed25519 is a few hundred bytes.
MAX_KEY_FILE_BYTES = 64 * 1024
_P256_BYTES = 32
_ED25519_BYTES = 32


#: The two JWS algorithms (RFC 7518 section 3.4, RFC 8037) and nothing else.
ALG_ES256 = "ES256"
ALG_EDDSA = "EdDSA"
SUPPORTED_ALGORITHMS = frozenset({ALG_ES256, ALG_EDDSA})

PrivateKey = Union[ec.EllipticCurvePrivateKey, ed25519.Ed25519PrivateKey]
PublicKey = Union[ec.EllipticCurvePublicKey, ed25519.Ed25519PublicKey]

_B64URL = re.compile(r"[A-Za-z0-9_-]*")


def _config_error(reason: str) -> exception.ConfigInvalid:
    return exception.ConfigInvalid(reason=reason)


def algorithm_for_key(key: Any) -> str:
    """The one JWS algorithm a key (public or private) may be used with.

    Verifiers pass exactly this to PyJWT's ``algorithms``, so a token's
    ``alg`` header can never choose another algorithm for the key (no
    ``none``, no HS256 keyed with the public key, no ES256/EdDSA swap).
    """
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
    """base64url without padding (RFC 7515 section 2), as text."""
    return jwt_utils.base64url_encode(data).decode("ascii")


def _b64url_decode_canonical(text: Any, what: str) -> bytes:
    """Strict inverse of :func:`b64url_encode`: the URL-safe alphabet only,
    no padding, no stray trailing bits (one value, one spelling). PyJWT's
    own decoder is lenient in the versions we support, hence this check."""
    if not isinstance(text, str) or not _B64URL.fullmatch(text) \
            or len(text) % 4 == 1:
        raise exception.InvalidParameterValue(
            name="jwk", reason="%s is not unpadded base64url" % what)
    data = jwt_utils.base64url_decode(text)
    if b64url_encode(data) != text:
        raise exception.InvalidParameterValue(
            name="jwk", reason="%s is not canonical base64url" % what)
    return data


def generate_signing_key(algorithm: str = ALG_EDDSA) -> PrivateKey:
    """A fresh private key for ``algorithm`` (``EdDSA`` or ``ES256``)."""
    if algorithm == ALG_EDDSA:
        return ed25519.Ed25519PrivateKey.generate()
    if algorithm == ALG_ES256:
        return ec.generate_private_key(ec.SECP256R1())
    raise exception.InvalidParameterValue(
        name="algorithm", reason="%r is not ES256 or EdDSA" % (algorithm,))


def public_key_of(key: Any) -> PublicKey:
    """The public half of a private key; a public key is returned as is."""
    if isinstance(key, (ec.EllipticCurvePrivateKey,
                        ed25519.Ed25519PrivateKey)):
        key = key.public_key()
    if not isinstance(key, (ec.EllipticCurvePublicKey,
                            ed25519.Ed25519PublicKey)):
        raise exception.InvalidParameterValue(
            name="key", reason="expected an ES256 or Ed25519 key")
    algorithm_for_key(key)      # P-256 only among EC curves
    return key


# --- Files -------------------------------------------------------------------

def _parse_private_pem(data: bytes, path: str) -> PrivateKey:
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, _CryptoUnsupported) as exc:
        raise _config_error("signing key %s is not an unencrypted PEM "
                            "private key (%s)" % (path, exc))
    if not isinstance(key, (ec.EllipticCurvePrivateKey,
                            ed25519.Ed25519PrivateKey)):
        raise _config_error("signing key %s is a %s; only ES256 (P-256) and "
                            "Ed25519 keys are supported"
                            % (path, type(key).__name__))
    try:
        algorithm_for_key(key)
    except exception.ResultAlgorithmRejected as exc:
        raise _config_error("signing key %s: %s" % (path, exc))
    return key


def load_signing_key(path: str | os.PathLike[str]) -> PrivateKey:
    """Load the private key from ``path``, refusing a too-open file mode."""
    path = os.fspath(path)
    try:
        # O_NONBLOCK: a FIFO planted at the path must not hang the service.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK
                     | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise _config_error("cannot open signing key %s: %s"
                            % (path, exc.strerror))
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise _config_error("signing key %s is not a regular file" % path)
    with os.fdopen(fd, "rb") as handle:
        if info.st_mode & 0o077:
            raise _config_error(
                "signing key %s has mode %03o and is readable by group or "
                "others; run 'chmod 600 %s'"
                % (path, stat.S_IMODE(info.st_mode), path))
        data = handle.read(MAX_KEY_FILE_BYTES + 1)
    if len(data) > MAX_KEY_FILE_BYTES:
        raise _config_error("signing key %s is larger than %d bytes"
                            % (path, MAX_KEY_FILE_BYTES))
    return _parse_private_pem(data, path)


def _private_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM,
                             serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _fsync_directory(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _publish_new_key(path: str, key: PrivateKey) -> bool:
    """Write ``key`` to ``path`` atomically unless a key is already there.

    Returns False when another process published first.
    """
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".signing-key-", dir=directory)
    try:
        # mkstemp creates 0600 already; chmod guards odd umask/ACL setups.
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(_private_pem(key))
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(tmp, path)          # fails if a key already exists
        except FileExistsError:
            return False
        _fsync_directory(directory)
        return True
    finally:
        try:
            os.unlink(tmp)
        except OSError:
            pass


def load_or_create_signing_key(path: str | os.PathLike[str],
                               algorithm: str = ALG_EDDSA
                               ) -> PrivateKey:
    """Load the key at ``path``; on first start create it (mode 0600).

    ``algorithm`` only applies to a key created now; an existing key keeps
    its own type (rotating means moving the old file away).
    """
    path = os.fspath(path)
    if os.path.lexists(path):
        return load_signing_key(path)
    key = generate_signing_key(algorithm)
    try:
        created = _publish_new_key(path, key)
    except OSError as exc:
        raise _config_error("cannot create signing key %s: %s"
                            % (path, exc.strerror or exc))
    if not created:
        return load_signing_key(path)
    return key


# --- Public forms ------------------------------------------------------------

def public_key_pem(key: Any) -> str:
    """SubjectPublicKeyInfo PEM of the (public half of the) key."""
    return public_key_of(key).public_bytes(
        serialization.Encoding.PEM,
        serialization.PublicFormat.SubjectPublicKeyInfo).decode("ascii")


def public_key_from_pem(pem: str | bytes) -> PublicKey:
    """Parse a public key PEM; only ES256 (P-256) and Ed25519 keys."""
    if isinstance(pem, str):
        pem = pem.encode("ascii", "replace")
    if not isinstance(pem, bytes):
        raise exception.InvalidParameterValue(name="pem",
                                              reason="expected PEM text")
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError, _CryptoUnsupported):
        raise exception.InvalidParameterValue(
            name="pem", reason="not a PEM public key")
    try:
        return public_key_of(key)
    except exception.ResultAlgorithmRejected as exc:
        raise exception.InvalidParameterValue(name="pem", reason=str(exc))


def _thumbprint_members(key: PublicKey) -> dict[str, str]:
    """The required JWK members (RFC 7638 section 3.2; RFC 8037 for OKP)."""
    if isinstance(key, ed25519.Ed25519PublicKey):
        raw = key.public_bytes(serialization.Encoding.Raw,
                               serialization.PublicFormat.Raw)
        return {"crv": "Ed25519", "kty": "OKP", "x": b64url_encode(raw)}
    numbers = key.public_numbers()
    return {"crv": "P-256", "kty": "EC",
            "x": b64url_encode(numbers.x.to_bytes(_P256_BYTES, "big")),
            "y": b64url_encode(numbers.y.to_bytes(_P256_BYTES, "big"))}


def jwk_thumbprint(key: Any) -> str:
    """RFC 7638 JWK thumbprint (SHA-256, base64url) of the public key."""
    members = _thumbprint_members(public_key_of(key))
    canonical = json.dumps(members, sort_keys=True, separators=(",", ":"))
    return b64url_encode(hashlib.sha256(canonical.encode()).digest())


#: The key id of signed results is the JWK thumbprint.
key_id = jwk_thumbprint


def public_jwk(key: Any) -> dict[str, str]:
    """Public JWK with ``kid`` (thumbprint), ``alg`` and ``use``."""
    public = public_key_of(key)
    jwk = _thumbprint_members(public)
    jwk.update(kid=jwk_thumbprint(public), alg=algorithm_for_key(public),
               use="sig")
    return jwk


def _jwk_coordinate(jwk: Mapping[str, Any], name: str, size: int) -> bytes:
    raw = _b64url_decode_canonical(jwk.get(name), "jwk %s" % name)
    if len(raw) != size:
        raise exception.InvalidParameterValue(
            name="jwk", reason="%s must be %d bytes" % (name, size))
    return raw


def public_key_from_jwk(jwk: Any) -> PublicKey:
    """Parse a public JWK strictly (no private members, kid must match)."""
    if not isinstance(jwk, Mapping):
        raise exception.InvalidParameterValue(name="jwk",
                                              reason="expected an object")
    if "d" in jwk:
        raise exception.InvalidParameterValue(
            name="jwk", reason="contains a private key; publish public keys "
            "only")
    kty, crv = jwk.get("kty"), jwk.get("crv")
    key: PublicKey
    if kty == "OKP" and crv == "Ed25519":
        try:
            key = ed25519.Ed25519PublicKey.from_public_bytes(
                _jwk_coordinate(jwk, "x", _ED25519_BYTES))
        except ValueError:
            raise exception.InvalidParameterValue(
                name="jwk", reason="not an Ed25519 public key")
    elif kty == "EC" and crv == "P-256":
        x = int.from_bytes(_jwk_coordinate(jwk, "x", _P256_BYTES), "big")
        y = int.from_bytes(_jwk_coordinate(jwk, "y", _P256_BYTES), "big")
        try:
            key = ec.EllipticCurvePublicNumbers(
                x, y, ec.SECP256R1()).public_key()
        except ValueError:
            raise exception.InvalidParameterValue(
                name="jwk", reason="point is not on the P-256 curve")
    else:
        raise exception.InvalidParameterValue(
            name="jwk", reason="only EC P-256 and OKP Ed25519 keys are "
            "supported")
    if "alg" in jwk and jwk["alg"] != algorithm_for_key(key):
        raise exception.InvalidParameterValue(
            name="jwk", reason="alg does not match the key type")
    if "kid" in jwk and jwk["kid"] != jwk_thumbprint(key):
        raise exception.InvalidParameterValue(
            name="jwk", reason="kid is not the key's RFC 7638 thumbprint")
    return key


def key_set(keys: Iterable[Any]) -> dict[str, PublicKey]:
    """Map kid (thumbprint) -> public key, for ``verify_result``."""
    return {jwk_thumbprint(key): public_key_of(key) for key in keys}
