"""TPM 2.0 key derivation functions (TPM 2.0 Library Part 1, 11.4.10).

KDFa is SP800-108 counter-mode KDF with HMAC; KDFe is the SP800-56A
concatenation KDF. Both take the label with its terminating zero octet, as
the TPM does (a label that already ends in zero is not given a second one).
"""

from __future__ import annotations

import hmac
import struct

from trusted_pools import exception
from trusted_pools.tpm import constants

__all__ = ["kdfa", "kdfe"]

_U32 = struct.Struct(">I")


def _label_bytes(label: bytes | str) -> bytes:
    if isinstance(label, str):
        label = label.encode("ascii")
    return label if label.endswith(b"\0") else label + b"\0"


def _check_bits(bits: int) -> None:
    if bits <= 0 or bits % 8:
        raise exception.InvalidParameterValue(
            name="bits", reason="%r is not a positive multiple of 8" % bits)


def kdfa(hash_alg: int, key: bytes, label: bytes | str, context_u: bytes,
         context_v: bytes, bits: int) -> bytes:
    """KDFa(hashAlg, key, label, contextU, contextV, bits)."""
    _check_bits(bits)
    name = constants.hash_algorithm(hash_alg).name
    fixed = _label_bytes(label) + context_u + context_v + _U32.pack(bits)
    out = bytearray()
    counter = 1
    while len(out) * 8 < bits:
        out += hmac.digest(key, _U32.pack(counter) + fixed, name)
        counter += 1
    return bytes(out[:bits // 8])


def kdfe(hash_alg: int, z: bytes, label: bytes | str, party_u: bytes,
         party_v: bytes, bits: int) -> bytes:
    """KDFe(hashAlg, Z, label, partyUInfo, partyVInfo, bits)."""
    _check_bits(bits)
    algorithm = constants.hash_algorithm(hash_alg)
    other_info = _label_bytes(label) + party_u + party_v
    out = bytearray()
    counter = 1
    while len(out) * 8 < bits:
        out += algorithm.digest(_U32.pack(counter) + z + other_info)
        counter += 1
    return bytes(out[:bits // 8])
