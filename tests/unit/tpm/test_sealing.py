"""trusted_pools.tpm.sealing: the binding-key checks and wrapping, with
software keys standing in for the TPM (the real TPM path is in
tests/functional/vtpm/test_sealing.py).

The attacker is the compute host: it chooses the public area, the attest
and the signature it sends; it does not hold the AK's private key."""

from __future__ import annotations

import hashlib
import struct

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tests import soft_tpm
from trusted_pools import exception
from trusted_pools.tpm import sealing
from trusted_pools.tpm.constants import TPM_ALG, TPM_GENERATED_VALUE, TPM_ST
from trusted_pools.tpm.structures import (ObjectAttributes, PCRSelection,
                                          load_public, marshal_tpm2b)

A = ObjectAttributes
BINDING_ATTRIBUTES = (A.FIXED_TPM | A.FIXED_PARENT | A.SENSITIVE_DATA_ORIGIN
                      | A.NO_DA | A.DECRYPT | A.USER_WITH_AUTH)
EK_QN = sealing.hierarchy_qualified_name(0x4000000B)  # stands in for a parent
NONCE = b"verifier nonce 0123456789abcdef"


def binding_public(key, attributes=BINDING_ATTRIBUTES, policy=b"",
                   scheme=TPM_ALG.OAEP, scheme_hash=TPM_ALG.SHA256,
                   symmetric=None):
    raw = soft_tpm.rsa_public(key.public_key(), attributes=attributes,
                              scheme=scheme, scheme_hash=scheme_hash,
                              symmetric=symmetric)
    # rsa_public writes an empty authPolicy right after the attributes.
    head = struct.calcsize(">HHI")
    return raw[:head] + marshal_tpm2b(policy) + raw[head + 2:]


def certify(ak, public: bytes, nonce=NONCE, magic=TPM_GENERATED_VALUE,
            st=TPM_ST.ATTEST_CERTIFY, name=None, qualified=None):
    parsed = load_public(public)
    name = parsed.name() if name is None else name
    qualified = (sealing.qualified_name(EK_QN, parsed)
                 if qualified is None else qualified)
    attest = (struct.pack(">IH", magic, st)
              + marshal_tpm2b(b"\x00\x0b" + b"\x22" * 32)
              + marshal_tpm2b(nonce)
              + struct.pack(">QIIB", 1000, 4, 2, 1)
              + struct.pack(">Q", 0x2019102300163636)
              + marshal_tpm2b(name) + marshal_tpm2b(qualified))
    return attest, ak.sign(attest)


@pytest.fixture(scope="module")
def host_key():
    return rsa.generate_private_key(65537, 2048)


@pytest.fixture(scope="module")
def ak():
    return soft_tpm.SoftAK.ecc()


def check(public, attest, signature, ak, **kw):
    kw.setdefault("qualifying_data", NONCE)
    kw.setdefault("parent_qualified_name", EK_QN)
    return sealing.check_binding_key(public, attest, signature,
                                     ak.public_bytes, **kw)


def decrypt(key, ciphertext, label):
    return key.decrypt(ciphertext, padding.OAEP(
        mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(),
        label=label))


def test_valid_key_verifies_and_wraps(host_key, ak):
    public = binding_public(host_key)
    verified = check(public, *certify(ak, public), ak)
    assert verified.name == load_public(public).name()
    assert verified.auth_policy == b""
    secret = sealing.new_secret()
    wrapped = sealing.wrap_secret(verified, secret, sealing.LABEL_VTPM_STATE)
    assert decrypt(host_key, wrapped, sealing.LABEL_VTPM_STATE) == secret


def test_wrapped_secret_is_bound_to_its_label(host_key, ak):
    """A key wrapped for one purpose does not open as another: the label
    is part of OAEP."""
    public = binding_public(host_key)
    verified = check(public, *certify(ak, public), ak)
    wrapped = sealing.wrap_secret(verified, b"k" * 32,
                                  sealing.LABEL_VTPM_MIGRATION)
    with pytest.raises(ValueError):
        decrypt(host_key, wrapped, sealing.LABEL_VTPM_STATE)


def test_labels_are_distinct_and_terminated():
    labels = {sealing.LABEL_VTPM_STATE, sealing.LABEL_VTPM_MIGRATION,
              sealing.LABEL_NOVA_VTPM}
    assert len(labels) == 3
    assert all(lb.endswith(b"\0") and len(lb) <= 64 for lb in labels)
    assert sealing.label("vtpm-state") == b"trusted-pools vtpm-state\0"
    for bad in ("", "Upper", "a b", "x" * 60, "a\0"):
        with pytest.raises(ValueError):
            sealing.label(bad)


def test_signature_by_another_key_is_rejected(host_key, ak):
    public = binding_public(host_key)
    attest, _ = certify(ak, public)
    forged = soft_tpm.SoftAK.ecc().sign(attest)
    with pytest.raises(exception.InvalidSignature):
        check(public, attest, forged, ak)


def test_tampered_attest_is_rejected(host_key, ak):
    public = binding_public(host_key)
    attest, signature = certify(ak, public)
    with pytest.raises(exception.InvalidSignature):
        check(public, attest[:-1] + bytes([attest[-1] ^ 1]), signature, ak)


def test_attacker_key_swapped_in_is_rejected(host_key, ak):
    """The host sends its own (software) key's public with the TPM's
    certification of the real binding key."""
    real = binding_public(host_key)
    attacker = binding_public(rsa.generate_private_key(65537, 2048))
    attest, signature = certify(ak, real)
    with pytest.raises(exception.BindingKeyRejected, match="Name"):
        check(attacker, attest, signature, ak)


def test_wrong_qualified_name_is_rejected(host_key, ak):
    """A key loaded outside the expected parent (an external key in the
    NULL hierarchy, say) has another qualified Name."""
    public = binding_public(host_key)
    null_qn = sealing.qualified_name(
        sealing.hierarchy_qualified_name(0x40000007), load_public(public))
    attest, signature = certify(ak, public, qualified=null_qn)
    with pytest.raises(exception.BindingKeyRejected, match="qualified"):
        check(public, attest, signature, ak)
    # Without a parent to compare with, the caller chose not to check it.
    check(public, attest, signature, ak, parent_qualified_name=None)


def test_nonce_mismatch_is_rejected(host_key, ak):
    public = binding_public(host_key)
    attest, signature = certify(ak, public, nonce=b"an old nonce")
    with pytest.raises(exception.NonceMismatch):
        check(public, attest, signature, ak)


@pytest.mark.parametrize("st", [TPM_ST.ATTEST_QUOTE, TPM_ST.ATTEST_CREATION])
def test_other_attestation_types_are_rejected(host_key, ak, st):
    public = binding_public(host_key)
    if st == TPM_ST.ATTEST_QUOTE:
        attest = soft_tpm.attest_quote(
            [PCRSelection(TPM_ALG.SHA256, frozenset({0}))], b"\0" * 32,
            NONCE)
        signature = ak.sign(attest)
    else:
        attest, signature = certify(ak, public, st=st)
    with pytest.raises(exception.BindingKeyRejected, match="type"):
        check(public, attest, signature, ak)


def test_bad_magic_is_rejected(host_key, ak):
    public = binding_public(host_key)
    attest, signature = certify(ak, public, magic=0xDEADBEEF)
    with pytest.raises(exception.BindingKeyRejected, match="magic"):
        check(public, attest, signature, ak)


@pytest.mark.parametrize("change,reason", [
    (lambda a: a | A.SIGN_ENCRYPT, "sign"),
    (lambda a: a | A.RESTRICTED, "restricted"),
    (lambda a: a & ~A.DECRYPT, "decrypt"),
    (lambda a: a & ~A.FIXED_TPM, "fixedTPM"),
    (lambda a: a & ~A.FIXED_PARENT, "fixedParent"),
    (lambda a: a & ~A.SENSITIVE_DATA_ORIGIN, "sensitiveDataOrigin"),
    (lambda a: a | A.ENCRYPTED_DUPLICATION, "encryptedDuplication"),
    (lambda a: a & ~A.USER_WITH_AUTH, "unusable"),
])
def test_attributes_are_enforced(host_key, ak, change, reason):
    """Even a correctly certified key is refused when its attributes let
    it leave the TPM (duplicable), sign, or not decrypt."""
    public = binding_public(host_key, attributes=change(BINDING_ATTRIBUTES))
    with pytest.raises(exception.BindingKeyRejected, match=reason):
        check(public, *certify(ak, public), ak)
    with pytest.raises(exception.BindingKeyRejected, match=reason):
        sealing.wrap_secret(public, b"s" * 32, sealing.LABEL_VTPM_STATE)


@pytest.mark.parametrize("kw,reason", [
    (dict(scheme=TPM_ALG.RSASSA, scheme_hash=TPM_ALG.SHA256), "OAEP"),
    (dict(scheme=TPM_ALG.OAEP, scheme_hash=TPM_ALG.SHA1), "OAEP"),
    (dict(symmetric=(TPM_ALG.AES, 128, TPM_ALG.CFB)), "symmetric"),
])
def test_scheme_and_storage_keys_are_refused(host_key, ak, kw, reason):
    public = binding_public(host_key, **kw)
    with pytest.raises(exception.BindingKeyRejected, match=reason):
        check(public, *certify(ak, public), ak)


def test_small_and_non_rsa_keys_are_refused(ak):
    small = binding_public(rsa.generate_private_key(65537, 1024))
    with pytest.raises(exception.BindingKeyRejected, match="1024"):
        sealing.check_binding_key_attributes(small)
    with pytest.raises(exception.BindingKeyRejected, match="not RSA"):
        sealing.check_binding_key_attributes(ak.public_bytes)


def test_expected_pcr_policy(host_key, ak):
    values = {TPM_ALG.SHA256: {0: b"\1" * 32, 7: b"\7" * 32}}
    policy = sealing.policy_pcr_digest(values)
    public = binding_public(host_key, attributes=BINDING_ATTRIBUTES
                            & ~A.USER_WITH_AUTH, policy=policy)
    attest, signature = certify(ak, public)
    assert check(public, attest, signature, ak,
                 auth_policy=policy).auth_policy == policy
    other = sealing.policy_pcr_digest(
        {TPM_ALG.SHA256: {0: b"\1" * 32, 7: b"\x08" * 32}})
    with pytest.raises(exception.BindingKeyRejected, match="authPolicy"):
        check(public, attest, signature, ak, auth_policy=other)
    # A key without a policy is not one bound to the golden boot.
    plain = binding_public(host_key)
    with pytest.raises(exception.BindingKeyRejected, match="authPolicy"):
        check(plain, *certify(ak, plain), ak, auth_policy=policy)


def test_policy_pcr_digest_formula():
    values = {TPM_ALG.SHA256: {7: b"\7" * 32, 0: b"\0" * 32}}
    selection = (struct.pack(">IHB", 1, TPM_ALG.SHA256, 3)
                 + bytes([0x81, 0, 0]))
    expected = hashlib.sha256(
        bytes(32) + struct.pack(">I", 0x17F) + selection
        + hashlib.sha256(b"\0" * 32 + b"\7" * 32).digest()).digest()
    assert sealing.policy_pcr_digest(values) == expected


def test_wrap_refuses_bad_arguments(host_key):
    public = binding_public(host_key)
    with pytest.raises(ValueError):
        sealing.wrap_secret(public, b"", sealing.LABEL_VTPM_STATE)
    with pytest.raises(ValueError):
        sealing.wrap_secret(public, b"x" * 191, sealing.LABEL_VTPM_STATE)
    with pytest.raises(ValueError):
        sealing.wrap_secret(public, b"x" * 32, b"no terminator")
    with pytest.raises(TypeError):
        sealing.wrap_secret(12, b"x" * 32, sealing.LABEL_VTPM_STATE)
