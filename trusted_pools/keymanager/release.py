"""What the key service and the compute host share about a release.

A released secret is RSA-OAEP-SHA256 encrypted to the host's binding key
(:mod:`trusted_pools.tpm.sealing`) with a label naming the secret and the
host it was released to. The host's TPM decrypts only with the same
label, so a blob released for one secret cannot be passed off as another
one's, nor a blob released to one host name as another's (and a blob for
another host's TPM does not decrypt at all).

Shared by both sides of the trust boundary: belongs with the protocol
modules.
"""

from __future__ import annotations

import hashlib

from trusted_pools.tpm import sealing

__all__ = ["PURPOSE", "release_label", "SECRET_TYPES", "MAX_SECRET_SIZE"]

PURPOSE = "nova-vtpm-key"

#: The castellan object types the key service stores (by castellan's name).
SECRET_TYPES = ("passphrase", "symmetric", "opaque")

#: What one RSA-2048 OAEP-SHA256 block holds.
MAX_SECRET_SIZE = sealing.MAX_SECRET_SIZE


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
