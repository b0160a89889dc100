"""A software stand-in for the parts of a TPM the verifier checks.

Builds real TPMT_PUBLIC / TPMS_ATTEST / TPMT_SIGNATURE bytes with software
keys, for unit tests and benchmarks. Test-only: the product never signs.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from dataclasses import dataclass
from typing import Mapping, Sequence

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature)
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from trusted_pools.tpm import kdf
from trusted_pools.tpm.constants import (TPM_ALG, TPM_ECC_CURVE,
                                         TPM_GENERATED_VALUE, TPM_ST)
from trusted_pools.tpm.structures import (ObjectAttributes, PCRSelection,
                                          marshal_pcr_selection_list,
                                          marshal_tpm2b)

try:
    from cryptography.hazmat.decrepit.ciphers.modes import CFB
except ImportError:  # pragma: no cover
    from cryptography.hazmat.primitives.ciphers.modes import CFB

AK_ATTRIBUTES = (ObjectAttributes.FIXED_TPM | ObjectAttributes.FIXED_PARENT
                 | ObjectAttributes.SENSITIVE_DATA_ORIGIN
                 | ObjectAttributes.USER_WITH_AUTH
                 | ObjectAttributes.RESTRICTED | ObjectAttributes.SIGN_ENCRYPT)
EK_ATTRIBUTES = (ObjectAttributes.FIXED_TPM | ObjectAttributes.FIXED_PARENT
                 | ObjectAttributes.SENSITIVE_DATA_ORIGIN
                 | ObjectAttributes.ADMIN_WITH_POLICY
                 | ObjectAttributes.RESTRICTED | ObjectAttributes.DECRYPT)

HASHES = {TPM_ALG.SHA1: hashes.SHA1, TPM_ALG.SHA256: hashes.SHA256,
          TPM_ALG.SHA384: hashes.SHA384, TPM_ALG.SHA512: hashes.SHA512}
HASHLIB = {TPM_ALG.SHA1: hashlib.sha1, TPM_ALG.SHA256: hashlib.sha256,
           TPM_ALG.SHA384: hashlib.sha384, TPM_ALG.SHA512: hashlib.sha512}
CURVES = {TPM_ECC_CURVE.NIST_P256: ec.SECP256R1,
          TPM_ECC_CURVE.NIST_P384: ec.SECP384R1,
          TPM_ECC_CURVE.NIST_P521: ec.SECP521R1}
CURVE_IDS = {cls.name: cid for cid, cls in CURVES.items()}
COORD = {TPM_ECC_CURVE.NIST_P256: 32, TPM_ECC_CURVE.NIST_P384: 48,
         TPM_ECC_CURVE.NIST_P521: 66}


def _scheme(scheme: int, hash_alg: int | None) -> bytes:
    if scheme == TPM_ALG.NULL:
        return struct.pack(">H", scheme)
    return struct.pack(">HH", scheme, hash_alg)


def _sym(sym: tuple[int, int, int] | None) -> bytes:
    if sym is None:
        return struct.pack(">H", TPM_ALG.NULL)
    return struct.pack(">HHH", *sym)


def rsa_public(key: rsa.RSAPublicKey, attributes: int = AK_ATTRIBUTES,
               scheme: int = TPM_ALG.RSASSA,
               scheme_hash: int | None = TPM_ALG.SHA256,
               name_alg: int = TPM_ALG.SHA256,
               symmetric: tuple[int, int, int] | None = None,
               exponent_field: int = 0) -> bytes:
    """TPMT_PUBLIC for an RSA key."""
    numbers = key.public_numbers()
    modulus = numbers.n.to_bytes(key.key_size // 8, "big")
    return (struct.pack(">HHI", TPM_ALG.RSA, name_alg, attributes)
            + marshal_tpm2b(b"") + _sym(symmetric)
            + _scheme(scheme, scheme_hash)
            + struct.pack(">HI", key.key_size, exponent_field)
            + marshal_tpm2b(modulus))


def ecc_public(key: ec.EllipticCurvePublicKey,
               attributes: int = AK_ATTRIBUTES,
               scheme: int = TPM_ALG.ECDSA,
               scheme_hash: int | None = TPM_ALG.SHA256,
               name_alg: int = TPM_ALG.SHA256,
               symmetric: tuple[int, int, int] | None = None) -> bytes:
    """TPMT_PUBLIC for an ECC key."""
    curve = CURVE_IDS[key.curve.name]
    size = COORD[curve]
    numbers = key.public_numbers()
    return (struct.pack(">HHI", TPM_ALG.ECC, name_alg, attributes)
            + marshal_tpm2b(b"") + _sym(symmetric)
            + _scheme(scheme, scheme_hash)
            + struct.pack(">HH", curve, TPM_ALG.NULL)
            + marshal_tpm2b(numbers.x.to_bytes(size, "big"))
            + marshal_tpm2b(numbers.y.to_bytes(size, "big")))


def pcr_digest(hash_alg: int, selection: Sequence[PCRSelection],
               values: Mapping[int, Mapping[int, bytes]]) -> bytes:
    h = HASHLIB[hash_alg]()
    for sel in selection:
        for pcr in sorted(sel.pcrs):
            h.update(values[sel.hash_alg][pcr])
    return h.digest()


def attest_quote(selection: Sequence[PCRSelection], digest: bytes,
                 nonce: bytes, magic: int = TPM_GENERATED_VALUE,
                 st: int = TPM_ST.ATTEST_QUOTE,
                 signer_name: bytes = b"\x00\x0b" + b"\x11" * 32,
                 clock: int = 123456789, reset_count: int = 7,
                 restart_count: int = 3) -> bytes:
    """A TPMS_ATTEST for a quote (``clock`` and the reboot counters are
    its TPMS_CLOCK_INFO)."""
    return (struct.pack(">IH", magic, st) + marshal_tpm2b(signer_name)
            + marshal_tpm2b(nonce)
            + struct.pack(">QIIB", clock, reset_count, restart_count, 1)
            + struct.pack(">Q", 0x2019102300163636)
            + marshal_pcr_selection_list(selection) + marshal_tpm2b(digest))


@dataclass
class SoftAK:
    """A software restricted signing key that makes TPM-shaped quotes."""

    private_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    sig_alg: int
    hash_alg: int
    public_bytes: bytes

    @classmethod
    def rsa(cls, sig_alg: int = TPM_ALG.RSASSA,
            hash_alg: int = TPM_ALG.SHA256, bits: int = 2048,
            **public_kw) -> "SoftAK":
        key = rsa.generate_private_key(65537, bits)
        return cls(key, sig_alg, hash_alg, rsa_public(
            key.public_key(), scheme=public_kw.pop("scheme", sig_alg),
            scheme_hash=public_kw.pop("scheme_hash", hash_alg), **public_kw))

    @classmethod
    def ecc(cls, curve: type = ec.SECP256R1,
            hash_alg: int = TPM_ALG.SHA256, **public_kw) -> "SoftAK":
        key = ec.generate_private_key(curve())
        return cls(key, TPM_ALG.ECDSA, hash_alg, ecc_public(
            key.public_key(), scheme_hash=public_kw.pop(
                "scheme_hash", hash_alg), **public_kw))

    def sign(self, message: bytes, sig_alg: int | None = None,
             hash_alg: int | None = None) -> bytes:
        """TPMT_SIGNATURE over ``message``."""
        sig_alg = self.sig_alg if sig_alg is None else sig_alg
        hash_alg = self.hash_alg if hash_alg is None else hash_alg
        h = HASHES[hash_alg]()
        if sig_alg == TPM_ALG.ECDSA:
            der = self.private_key.sign(message, ec.ECDSA(h))
            r, s = decode_dss_signature(der)
            size = COORD[CURVE_IDS[self.private_key.curve.name]]
            return (struct.pack(">HH", sig_alg, hash_alg)
                    + marshal_tpm2b(r.to_bytes(size, "big"))
                    + marshal_tpm2b(s.to_bytes(size, "big")))
        if sig_alg == TPM_ALG.RSASSA:
            pad = padding.PKCS1v15()
        else:
            pad = padding.PSS(padding.MGF1(h), padding.PSS.DIGEST_LENGTH)
        sig = self.private_key.sign(message, pad, h)
        return struct.pack(">HH", sig_alg, hash_alg) + marshal_tpm2b(sig)

    def quote(self, nonce: bytes, values: Mapping[int, Mapping[int, bytes]],
              **attest_kw) -> tuple[bytes, bytes]:
        """(TPMS_ATTEST, TPMT_SIGNATURE) quoting exactly ``values``."""
        selection = [PCRSelection(alg, frozenset(bank))
                     for alg, bank in values.items()]
        digest = pcr_digest(self.hash_alg, selection, values)
        attest = attest_quote(selection, digest, nonce, **attest_kw)
        return attest, self.sign(attest)


def random_pcrs(banks: Sequence[int] = (TPM_ALG.SHA256,),
                pcrs: Sequence[int] = tuple(range(24)),
                ) -> dict[int, dict[int, bytes]]:
    return {alg: {p: os.urandom(HASHES[alg].digest_size) for p in pcrs}
            for alg in banks}


# --- a software TPM2_ActivateCredential, to invert make_credential ---------

def activate_credential(ek_private, ek_name_alg: int, aes_bits: int,
                        object_name: bytes, blob: bytes,
                        encrypted_secret: bytes) -> bytes:
    """What the TPM does in TPM2_ActivateCredential (Part 1, 24.4-24.5)."""
    digest_size = HASHLIB[ek_name_alg]().digest_size
    if isinstance(ek_private, rsa.RSAPrivateKey):
        h = HASHES[ek_name_alg]()
        seed = ek_private.decrypt(encrypted_secret, padding.OAEP(
            padding.MGF1(h), h, b"IDENTITY\0"))
    else:
        size = COORD[CURVE_IDS[ek_private.curve.name]]
        xlen = int.from_bytes(encrypted_secret[:2], "big")
        x = encrypted_secret[2:2 + xlen]
        y = encrypted_secret[4 + xlen:]
        point = ec.EllipticCurvePublicNumbers(
            int.from_bytes(x, "big"), int.from_bytes(y, "big"),
            ek_private.curve).public_key()
        z = ek_private.exchange(ec.ECDH(), point)
        ek_x = ek_private.public_key().public_numbers().x.to_bytes(
            size, "big")
        seed = kdf.kdfe(ek_name_alg, z, "IDENTITY", x, ek_x,
                        digest_size * 8)
    hmac_len = int.from_bytes(blob[:2], "big")
    outer_hmac, enc_identity = blob[2:2 + hmac_len], blob[2 + hmac_len:]
    hmac_key = kdf.kdfa(ek_name_alg, seed, "INTEGRITY", b"", b"",
                        digest_size * 8)
    expected = hmac.new(hmac_key, enc_identity + object_name,
                        HASHLIB[ek_name_alg]).digest()
    if not hmac.compare_digest(expected, outer_hmac):
        raise ValueError("integrity check failed")
    sym_key = kdf.kdfa(ek_name_alg, seed, "STORAGE", object_name, b"",
                       aes_bits)
    decryptor = Cipher(algorithms.AES(sym_key), CFB(b"\0" * 16)).decryptor()
    plain = decryptor.update(enc_identity) + decryptor.finalize()
    size = int.from_bytes(plain[:2], "big")
    return plain[2:2 + size]
