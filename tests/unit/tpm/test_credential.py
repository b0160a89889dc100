"""make_credential and the KDFs, software only (the swtpm proof is in
tests/functional/test_swtpm_credential.py)."""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.kdf.concatkdf import ConcatKDFHash
from cryptography.hazmat.primitives.kdf.kbkdf import (
    KBKDFHMAC, CounterLocation, Mode)

from tests import soft_tpm
from trusted_pools import exception
from trusted_pools.tpm import credential, kdf, structures
from trusted_pools.tpm.constants import TPM_ALG

AES128_CFB = (TPM_ALG.AES, 128, TPM_ALG.CFB)
AES256_CFB = (TPM_ALG.AES, 256, TPM_ALG.CFB)


@pytest.mark.parametrize("alg,h", [(TPM_ALG.SHA1, hashes.SHA1),
                                   (TPM_ALG.SHA256, hashes.SHA256),
                                   (TPM_ALG.SHA384, hashes.SHA384)])
@pytest.mark.parametrize("bits", [128, 256, 520])
def test_kdfa_is_sp800_108_counter_mode(alg, h, bits):
    key, u, v = os.urandom(32), os.urandom(7), os.urandom(5)
    independent = KBKDFHMAC(
        algorithm=h(), mode=Mode.CounterMode, length=bits // 8, rlen=4,
        llen=4, location=CounterLocation.BeforeFixed, label=b"STORAGE",
        context=u + v, fixed=None).derive(key)
    assert kdf.kdfa(alg, key, "STORAGE", u, v, bits) == independent
    assert kdf.kdfa(alg, key, b"STORAGE\0", u, v, bits) == independent


@pytest.mark.parametrize("alg,h", [(TPM_ALG.SHA256, hashes.SHA256),
                                   (TPM_ALG.SHA384, hashes.SHA384)])
def test_kdfe_is_sp800_56a_concat(alg, h):
    z, u, v = os.urandom(32), os.urandom(32), os.urandom(32)
    independent = ConcatKDFHash(algorithm=h(), length=80,
                                otherinfo=b"IDENTITY\0" + u + v).derive(z)
    assert kdf.kdfe(alg, z, "IDENTITY", u, v, 640) == independent


@pytest.mark.parametrize("bits", [0, -8, 12])
def test_kdf_bits_must_be_bytes(bits):
    with pytest.raises(exception.InvalidParameterValue):
        kdf.kdfa(TPM_ALG.SHA256, b"k", "L", b"", b"", bits)


def _rsa_ek():
    key = rsa.generate_private_key(65537, 2048)
    return key, structures.load_public(soft_tpm.rsa_public(
        key.public_key(), attributes=soft_tpm.EK_ATTRIBUTES,
        scheme=TPM_ALG.NULL, scheme_hash=None, symmetric=AES128_CFB))


def _ecc_ek(curve, name_alg, sym):
    key = ec.generate_private_key(curve())
    return key, structures.load_public(soft_tpm.ecc_public(
        key.public_key(), attributes=soft_tpm.EK_ATTRIBUTES,
        scheme=TPM_ALG.NULL, scheme_hash=None, name_alg=name_alg,
        symmetric=sym))


@pytest.fixture(scope="module", params=["rsa2048", "p256", "p384"])
def ek(request):
    if request.param == "rsa2048":
        return _rsa_ek()
    if request.param == "p256":
        return _ecc_ek(ec.SECP256R1, TPM_ALG.SHA256, AES128_CFB)
    return _ecc_ek(ec.SECP384R1, TPM_ALG.SHA384, AES256_CFB)


def test_round_trip_through_software_activation(ek):
    private, public = ek
    name = b"\x00\x0b" + os.urandom(32)
    secret = os.urandom(16)
    blob, encrypted = credential.make_credential(public, name, secret)
    digest_size = soft_tpm.HASHLIB[public.name_alg]().digest_size
    # TPM2B_DIGEST(outerHMAC) || encIdentity(TPM2B_DIGEST(secret)).
    assert len(blob) == 2 + digest_size + 2 + len(secret)
    assert blob[:2] == digest_size.to_bytes(2, "big")
    assert soft_tpm.activate_credential(
        private, public.name_alg, public.symmetric.key_bits, name, blob,
        encrypted) == secret
    with pytest.raises(ValueError, match="integrity"):
        soft_tpm.activate_credential(
            private, public.name_alg, public.symmetric.key_bits,
            name[:-1] + b"\0", blob, encrypted)


def test_each_call_uses_a_fresh_seed(ek):
    _, public = ek
    first = credential.make_credential(public, b"\0\x0b" + b"1" * 32, b"s")
    second = credential.make_credential(public, b"\0\x0b" + b"1" * 32, b"s")
    assert first != second


def test_encoded_forms():
    _, public = _ecc_ek(ec.SECP256R1, TPM_ALG.SHA256, AES128_CFB)
    blob, encrypted = credential.make_credential(public, b"\0\x0bname", b"s")
    # The ephemeral point: TPM2B x || TPM2B y, 32 bytes each.
    assert len(encrypted) == 2 + 32 + 2 + 32
    blob_b, encrypted_b = credential.marshal_credential_b(blob, encrypted)
    assert blob_b == len(blob).to_bytes(2, "big") + blob
    assert encrypted_b == len(encrypted).to_bytes(2, "big") + encrypted
    assert credential.tpm2_tools_credential_file(blob, encrypted) == (
        b"\xba\xdc\xc0\xde\x00\x00\x00\x01" + blob_b + encrypted_b)


def test_secret_size_limits():
    _, public = _ecc_ek(ec.SECP256R1, TPM_ALG.SHA256, AES128_CFB)
    credential.make_credential(public, b"\0\x0bn", b"x" * 32)
    for bad in (b"", b"x" * 33):
        with pytest.raises(exception.InvalidParameterValue):
            credential.make_credential(public, b"\0\x0bn", bad)


def test_ek_must_be_a_restricted_decryption_key():
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    signing = structures.load_public(soft_tpm.ecc_public(
        key, symmetric=AES128_CFB))
    with pytest.raises(exception.InvalidParameterValue, match="ek"):
        credential.make_credential(signing, b"\0\x0bn", b"s")
    no_sym = structures.load_public(soft_tpm.ecc_public(
        key, attributes=soft_tpm.EK_ATTRIBUTES, scheme=TPM_ALG.NULL,
        scheme_hash=None))
    with pytest.raises(exception.UnsupportedAlgorithm):
        credential.make_credential(no_sym, b"\0\x0bn", b"s")
