"""TPM2_MakeCredential in software (TPM 2.0 Library Part 1, 24; Part 3, 12.6).

The verifier wraps ``secret`` so that only the TPM holding the EK's private
key, and only for a loaded object whose Name is ``object_name`` (the AK),
will release it through TPM2_ActivateCredential. That binds the AK to the
EK without trusting the host.

:func:`make_credential` returns the *contents* of the two TPM2B structures,
without their UINT16 size prefix:

* ``credential_blob``: TPM2B_ID_OBJECT.credential =
  TPM2B_DIGEST(outerHMAC) || encIdentity
* ``encrypted_secret``: TPM2B_ENCRYPTED_SECRET.secret = the RSA-OAEP
  ciphertext of the seed (RSA EK) or the marshalled ephemeral TPMS_ECC_POINT
  (ECC EK)

which is what tpm2-pytss takes (``TPM2B_ID_OBJECT(blob)``,
``TPM2B_ENCRYPTED_SECRET(secret)``). :func:`marshal_credential_b` gives the
size-prefixed TPM2B forms, and :func:`tpm2_tools_credential_file` the file
``tpm2_activatecredential -i`` reads (tpm2-tools' own header, then both
TPM2B structures).
"""

from __future__ import annotations

import hmac
import os
import struct

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

try:  # cryptography >= 43 keeps CFB among the "decrepit" modes.
    from cryptography.hazmat.decrepit.ciphers.modes import CFB
except ImportError:  # pragma: no cover - older cryptography
    from cryptography.hazmat.primitives.ciphers.modes import CFB

from trusted_pools import exception
from trusted_pools.tpm import constants, kdf
from trusted_pools.tpm.constants import TPM_ALG
from trusted_pools.tpm.structures import (
    ECC_COORDINATE_SIZE, ObjectAttributes, Public, marshal_tpm2b)

__all__ = ["make_credential", "marshal_credential_b",
           "tpm2_tools_credential_file"]

_CRYPTO_HASHES = {
    TPM_ALG.SHA1: hashes.SHA1, TPM_ALG.SHA256: hashes.SHA256,
    TPM_ALG.SHA384: hashes.SHA384, TPM_ALG.SHA512: hashes.SHA512,
}
# tpm2-tools' credential file header: magic and version, big-endian.
_TPM2_TOOLS_CREDENTIAL_HEADER = struct.pack(">II", 0xBADCC0DE, 1)


def _check_ek(ek: Public) -> tuple[int, int]:
    """The EK must be a restricted decryption key with an AES-CFB symmetric
    definition (the storage-key shape TPM2_ActivateCredential requires).
    Returns (AES key bits, nameAlg digest size)."""
    required = ObjectAttributes.RESTRICTED | ObjectAttributes.DECRYPT
    if ek.attributes & required != required:
        raise exception.InvalidParameterValue(
            name="ek", reason="not a restricted decryption key")
    sym = ek.symmetric
    if sym is None or sym.algorithm != TPM_ALG.AES or sym.mode != TPM_ALG.CFB:
        raise exception.UnsupportedAlgorithm(
            algorithm="EK symmetric definition %r" % (sym,),
            reason="credential protection needs AES in CFB mode")
    if sym.key_bits not in (128, 192, 256):
        raise exception.UnsupportedAlgorithm(
            algorithm="AES-%d" % sym.key_bits, reason="bad AES key size")
    return sym.key_bits, constants.hash_algorithm(ek.name_alg).digest_size


def _rsa_seed(ek: Public, seed_size: int) -> tuple[bytes, bytes]:
    """Random seed, and its RSA-OAEP encryption with label "IDENTITY\\0"."""
    public_key = ek.public_key()
    assert isinstance(public_key, rsa.RSAPublicKey)
    seed = os.urandom(seed_size)
    hash_cls = _CRYPTO_HASHES[ek.name_alg]
    encrypted = public_key.encrypt(seed, padding.OAEP(
        mgf=padding.MGF1(hash_cls()), algorithm=hash_cls(),
        label=b"IDENTITY\0"))
    return seed, encrypted


def _ecc_seed(ek: Public, seed_size: int) -> tuple[bytes, bytes]:
    """Seed from one-pass ECDH with an ephemeral key, and the ephemeral
    point (TPMS_ECC_POINT) that lets the TPM compute the same seed."""
    public_key = ek.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    size = ECC_COORDINATE_SIZE[ek.curve]  # type: ignore[index]
    ephemeral = ec.generate_private_key(public_key.curve)
    z = ephemeral.exchange(ec.ECDH(), public_key)  # x coordinate, padded
    numbers = ephemeral.public_key().public_numbers()
    eph_x = numbers.x.to_bytes(size, "big")
    eph_y = numbers.y.to_bytes(size, "big")
    ek_x = public_key.public_numbers().x.to_bytes(size, "big")
    seed = kdf.kdfe(ek.name_alg, z, "IDENTITY", eph_x, ek_x, seed_size * 8)
    return seed, marshal_tpm2b(eph_x) + marshal_tpm2b(eph_y)


def make_credential(ek: Public, object_name: bytes,
                    secret: bytes) -> tuple[bytes, bytes]:
    """Wrap ``secret`` for TPM2_ActivateCredential by the EK's TPM.

    Returns ``(credential_blob, encrypted_secret)`` as TPM2B contents (no
    size prefix); see the module docstring. ``secret`` is at most the EK
    nameAlg's digest size (the TPM's TPM2B_DIGEST limit).
    """
    if not isinstance(secret, bytes) or not isinstance(object_name, bytes):
        raise TypeError("secret and object_name must be bytes")
    aes_bits, digest_size = _check_ek(ek)
    if not 0 < len(secret) <= digest_size:
        raise exception.InvalidParameterValue(
            name="secret", reason="must be 1 to %d bytes" % digest_size)
    if len(object_name) < 2:
        raise exception.InvalidParameterValue(
            name="object_name", reason="not a TPM Name")
    if ek.type == TPM_ALG.RSA:
        seed, encrypted_secret = _rsa_seed(ek, digest_size)
    elif ek.type == TPM_ALG.ECC:
        seed, encrypted_secret = _ecc_seed(ek, digest_size)
    else:
        raise exception.UnsupportedAlgorithm(
            algorithm="%#06x" % ek.type, reason="an EK must be RSA or ECC")

    sym_key = kdf.kdfa(ek.name_alg, seed, "STORAGE", object_name, b"",
                       aes_bits)
    encryptor = Cipher(algorithms.AES(sym_key),
                       CFB(b"\0" * 16)).encryptor()
    enc_identity = (encryptor.update(marshal_tpm2b(secret))
                    + encryptor.finalize())
    hmac_key = kdf.kdfa(ek.name_alg, seed, "INTEGRITY", b"", b"",
                        digest_size * 8)
    outer_hmac = hmac.digest(
        hmac_key, enc_identity + object_name,
        constants.hash_algorithm(ek.name_alg).name)
    return marshal_tpm2b(outer_hmac) + enc_identity, encrypted_secret


def marshal_credential_b(credential_blob: bytes,
                         encrypted_secret: bytes) -> tuple[bytes, bytes]:
    """(TPM2B_ID_OBJECT, TPM2B_ENCRYPTED_SECRET) with their size prefixes."""
    return marshal_tpm2b(credential_blob), marshal_tpm2b(encrypted_secret)


def tpm2_tools_credential_file(credential_blob: bytes,
                               encrypted_secret: bytes) -> bytes:
    """The file ``tpm2_makecredential -o`` writes and
    ``tpm2_activatecredential -i`` reads (tpm2-tools 5.x): magic 0xBADCC0DE,
    version 1, TPM2B_ID_OBJECT, TPM2B_ENCRYPTED_SECRET."""
    blob_b, secret_b = marshal_credential_b(credential_blob,
                                            encrypted_secret)
    return _TPM2_TOOLS_CREDENTIAL_HEADER + blob_b + secret_b
