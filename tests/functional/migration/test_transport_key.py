"""The one-time transport key of a vTPM migration on a real swtpm: made
in the TPM, certified by the AK, decrypts only there, and a conductor's
checks refuse what a compromised host could pass off instead."""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from trusted_pools import exception
from trusted_pools.protocol import vtpm_migration as proto
from trusted_pools.tpm import sealing
from trusted_pools.tpm.device import TPMDevice

pytestmark = [pytest.mark.swtpm]


def test_transport_key_round_trip_and_checks(swtpm_pool):
    first, second = swtpm_pool(2)
    with TPMDevice(first.tcti) as dev, TPMDevice(second.tcti) as other:
        ak = dev.create_ak("ecc")
        other_ak = other.create_ak("ecc")
        nonce = proto.transport_nonce("m-1", "compute-01", b"s" * 32)
        key = dev.create_transport_key(ak.handle, qualifying_data=nonce)
        assert dev.transient_handles() == []
        verified = proto.check_transport_key(
            key.public, key.certify_attest, key.certify_signature,
            ak.public, nonce)
        label = proto.transport_label("m-1")
        secret = os.urandom(32)
        wrapped = sealing.wrap_secret(verified, secret, label)
        assert dev.transport_decrypt(key.public, key.private, wrapped,
                                     label) == secret
        # Another migration's label, or another TPM: refused in the TPM.
        with pytest.raises(exception.TPMError):
            dev.transport_decrypt(key.public, key.private, wrapped,
                                  proto.transport_label("m-2"))
        with pytest.raises(exception.TPMError):
            other.transport_decrypt(key.public, key.private, wrapped, label)
        # Certified by another host's AK, or over another nonce.
        with pytest.raises(exception.EvidenceError):
            proto.check_transport_key(key.public, key.certify_attest,
                                      key.certify_signature,
                                      other_ak.public, nonce)
        with pytest.raises(exception.EvidenceError):
            proto.check_transport_key(
                key.public, key.certify_attest, key.certify_signature,
                ak.public, proto.transport_nonce("m-2", "compute-01",
                                                 b"s" * 32))
        # A software key the host knows the private part of, loaded into
        # its TPM with TPM2_LoadExternal and certified by its real AK: the
        # TPM makes such a key fixedTPM-clear, and that is refused. (A
        # public-only external key cannot be certified at all: the TPM has
        # no authValue for it.)
        soft = rsa.generate_private_key(public_exponent=65537,
                                        key_size=2048)
        attest, signature, public = _certify_external(dev, ak.handle, soft,
                                                      nonce)
        with pytest.raises(exception.BindingKeyRejected,
                           match="fixedTPM"):
            proto.check_transport_key(public, attest, signature, ak.public,
                                      nonce)
        assert dev.transient_handles() == []


def _certify_external(dev, ak_handle, soft, nonce):
    from tpm2_pytss import (ESYS_TR, TPM2_ALG, TPM2B_PUBLIC,
                            TPM2B_SENSITIVE, TPMA_OBJECT, TPMT_SENSITIVE)
    numbers = soft.private_numbers()
    template = TPM2B_PUBLIC.parse(
        "rsa2048:oaep-sha256:null",
        objectAttributes=TPMA_OBJECT.DECRYPT | TPMA_OBJECT.USERWITHAUTH
        | TPMA_OBJECT.NODA, nameAlg=TPM2_ALG.SHA256)
    template.publicArea.unique.rsa = \
        numbers.public_numbers.n.to_bytes(256, "big")
    sensitive = TPMT_SENSITIVE(sensitiveType=TPM2_ALG.RSA)
    sensitive.sensitive.rsa = numbers.p.to_bytes(128, "big")
    handle = dev.esapi.load_external(template, TPM2B_SENSITIVE(sensitive),
                                     ESYS_TR.RH_NULL)
    try:
        attest, signature = dev._certify(handle, dev._object(ak_handle),
                                         nonce)
    finally:
        dev.esapi.flush_context(handle)
    return attest, signature, template.publicArea.marshal()
