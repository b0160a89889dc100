"""What the key service and the compute host share about a release.

A released secret is sealed to the host's binding key: a fresh 256-bit
key is RSA-OAEP-SHA256 encrypted to the binding key
(:mod:`trusted_pools.tpm.sealing`), and the secret is encrypted under it
with AES-256-GCM (Nova's vTPM passphrases are 512 bytes, more than one
RSA-2048 block holds). Both carry a label naming the secret and the host
it was released to (the OAEP label, and the GCM associated data). The host's TPM decrypts only with the same
label, so a blob released for one secret cannot be passed off as another
one's, nor a blob released to one host name as another's (and a blob for
another host's TPM does not decrypt at all).

Shared by both sides of the trust boundary: belongs with the protocol
modules.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any, Callable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from trusted_pools.tpm import sealing

__all__ = ["PURPOSE", "release_label", "SECRET_TYPES", "MAX_SECRET_SIZE",
           "seal", "secret_metadata", "unseal"]

PURPOSE = "nova-vtpm-key"

#: The castellan object types the key service stores (by castellan's name).
SECRET_TYPES = ("passphrase", "symmetric", "opaque")

#: The largest secret the key service keeps (Nova's are 512 bytes).
MAX_SECRET_SIZE = 4096
_NONCE = 12


def release_label(secret_id: str, host: str) -> bytes:
    """The OAEP label of ``secret_id`` released to ``host``:
    ``trusted-pools nova-vtpm-key.<128 bits of SHA-256(id NUL host)>``."""
    if not isinstance(secret_id, str) or not secret_id:
        raise ValueError("secret_id must be a non-empty string")
    if not isinstance(host, str) or not host:
        raise ValueError("host must be a non-empty string")
    digest = hashlib.sha256(secret_id.encode("utf-8") + b"\0"
                            + host.encode("utf-8")).hexdigest()[:32]
    return sealing.label("%s.%s" % (PURPOSE, digest))


def seal(binding_key: Any, secret: bytes, label: bytes) -> dict[str, bytes]:
    """``{"wrapped": RSA-OAEP(key), "ciphertext": nonce || GCM(secret)}``
    for ``binding_key`` (a checked binding key, see
    :func:`trusted_pools.tpm.sealing.wrap_secret`)."""
    key = os.urandom(32)
    nonce = os.urandom(_NONCE)
    return {"wrapped": sealing.wrap_secret(binding_key, key, label),
            "ciphertext": nonce + AESGCM(key).encrypt(nonce, secret, label)}


def unseal(unwrap: Callable[[bytes, bytes], bytes], wrapped: bytes,
           ciphertext: bytes, label: bytes) -> bytes:
    """The secret: ``unwrap`` (TPM2_RSA_Decrypt by the host's binding key)
    recovers the data key, AES-GCM the secret. A blob sealed for another
    host or secret fails in the TPM or here (ValueError), never gives
    wrong bytes."""
    key = unwrap(wrapped, label)
    if len(key) != 32 or len(ciphertext) < _NONCE + 16:
        raise ValueError("not a sealed secret")
    try:
        return AESGCM(key).decrypt(ciphertext[:_NONCE], ciphertext[_NONCE:],
                                   label)
    except InvalidTag:
        raise ValueError("the sealed secret does not authenticate") from None


def secret_metadata(record: Any) -> dict[str, Any]:
    """A stored secret's metadata as the API and the conductor show it
    (never its value): ``record`` is a ``db.api.SecretRecord``."""
    return {"id": record.id, "project_id": record.project_id,
            "owner": record.owner, "name": record.name,
            "secret_type": record.secret_type,
            "algorithm": record.algorithm, "bit_length": record.bit_length,
            "min_level": record.min_level,
            "created_at": record.created_at.isoformat()}
