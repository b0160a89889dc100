"""TCG TPM 2.0 constants (TPM 2.0 Library Part 2 and the algorithm registry).

Values are facts from the specifications; names follow the specification
with the ``TPM_`` prefix kept so they can be searched for in it.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass
from typing import Callable

from trusted_pools import exception

TPM_GENERATED_VALUE = 0xFF544347


class TPM_ALG(enum.IntEnum):  # noqa: N801 - spec name
    ERROR = 0x0000
    RSA = 0x0001
    SHA1 = 0x0004
    HMAC = 0x0005
    AES = 0x0006
    KEYEDHASH = 0x0008
    XOR = 0x000A
    SHA256 = 0x000B
    SHA384 = 0x000C
    SHA512 = 0x000D
    NULL = 0x0010
    SM3_256 = 0x0012
    RSASSA = 0x0014
    RSAES = 0x0015
    RSAPSS = 0x0016
    OAEP = 0x0017
    ECDSA = 0x0018
    ECDH = 0x0019
    ECDAA = 0x001A
    ECSCHNORR = 0x001C
    KDF1_SP800_56A = 0x0020
    KDF1_SP800_108 = 0x0022
    ECC = 0x0023
    SYMCIPHER = 0x0025
    CTR = 0x0040
    OFB = 0x0041
    CBC = 0x0042
    CFB = 0x0043
    ECB = 0x0044


class TPM_ST(enum.IntEnum):  # noqa: N801
    ATTEST_NV = 0x8014
    ATTEST_COMMAND_AUDIT = 0x8015
    ATTEST_SESSION_AUDIT = 0x8016
    ATTEST_CERTIFY = 0x8017
    ATTEST_QUOTE = 0x8018
    ATTEST_TIME = 0x8019
    ATTEST_CREATION = 0x801A
    ATTEST_NV_DIGEST = 0x801C


class TPM_ECC_CURVE(enum.IntEnum):  # noqa: N801
    NONE = 0x0000
    NIST_P192 = 0x0001
    NIST_P224 = 0x0002
    NIST_P256 = 0x0003
    NIST_P384 = 0x0004
    NIST_P521 = 0x0005
    BN_P256 = 0x0010
    BN_P638 = 0x0011
    SM2_P256 = 0x0020


@dataclass(frozen=True)
class HashAlgorithm:
    """A TPM hash algorithm with what is needed to compute it."""

    alg: int
    name: str
    digest_size: int
    new: Callable[..., "hashlib._Hash"]

    def digest(self, data: bytes) -> bytes:
        return self.new(data).digest()


HASH_ALGORITHMS: dict[int, HashAlgorithm] = {
    a.alg: a for a in (
        HashAlgorithm(TPM_ALG.SHA1, "sha1", 20, hashlib.sha1),
        HashAlgorithm(TPM_ALG.SHA256, "sha256", 32, hashlib.sha256),
        HashAlgorithm(TPM_ALG.SHA384, "sha384", 48, hashlib.sha384),
        HashAlgorithm(TPM_ALG.SHA512, "sha512", 64, hashlib.sha512),
    )
}

HASH_BY_NAME: dict[str, HashAlgorithm] = {
    a.name: a for a in HASH_ALGORITHMS.values()}

# Digest sizes of banks we can skip over but not compute (event logs may
# carry them next to banks we do check).
KNOWN_DIGEST_SIZES: dict[int, int] = {
    **{alg: a.digest_size for alg, a in HASH_ALGORITHMS.items()},
    TPM_ALG.SM3_256: 32,
}


def alg_name(alg: int) -> str:
    """'sha256' for a hash algorithm this verifier computes, else the
    TPM_ALG_ID in hex (for messages: never raises)."""
    known = HASH_ALGORITHMS.get(alg)
    return known.name if known else "%#06x" % alg


def hash_algorithm(alg: int) -> HashAlgorithm:
    """Return the :class:`HashAlgorithm` for a TPM_ALG_ID, or raise."""
    try:
        return HASH_ALGORITHMS[alg]
    except KeyError:
        raise exception.UnsupportedAlgorithm(
            algorithm="%#06x" % alg,
            reason="not a hash algorithm this verifier computes") from None


def hash_by_name(name: str) -> HashAlgorithm:
    """Return the :class:`HashAlgorithm` for 'sha1', 'sha256', ... or raise."""
    try:
        return HASH_BY_NAME[name.lower().replace("-", "").replace("_", "")]
    except KeyError:
        raise exception.UnsupportedAlgorithm(
            algorithm=name, reason="unknown hash name") from None
