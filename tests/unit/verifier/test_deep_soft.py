"""Software hosts and vTPMs for the deep attestation unit tests: real
TPMT_PUBLIC / TPMS_ATTEST / TPMT_SIGNATURE bytes made with software keys
(tests/soft_tpm.py), in the shapes a host TPM and a vTPM produce. The
functional tests (tests/functional/vtpm/) do the same with swtpm."""

from __future__ import annotations

import struct
import uuid

from cryptography.hazmat.primitives.asymmetric import ec

from tests import soft_tpm
from trusted_pools.verifier import deep
from trusted_pools.protocol import vtpm_binding
from trusted_pools.tpm import structures
from trusted_pools.tpm.constants import TPM_ALG, TPM_GENERATED_VALUE, TPM_ST
from trusted_pools.tpm.structures import ObjectAttributes, marshal_tpm2b

CA_ATTRIBUTES = (ObjectAttributes.FIXED_TPM | ObjectAttributes.FIXED_PARENT
                 | ObjectAttributes.SENSITIVE_DATA_ORIGIN
                 | ObjectAttributes.USER_WITH_AUTH | ObjectAttributes.NO_DA
                 | ObjectAttributes.SIGN_ENCRYPT)
SHA256 = TPM_ALG.SHA256


def certify_attest(name: bytes, qualifying: bytes,
                   magic: int = TPM_GENERATED_VALUE,
                   st: int = TPM_ST.ATTEST_CERTIFY) -> bytes:
    """A TPMS_ATTEST of TPM2_Certify for the object ``name``."""
    return (struct.pack(">IH", magic, st)
            + marshal_tpm2b(b"\x00\x0b" + b"\x22" * 32)
            + marshal_tpm2b(qualifying)
            + struct.pack(">QIIB", 1000, 1, 0, 1)
            + struct.pack(">Q", 0x2019102300163636)
            + marshal_tpm2b(name) + marshal_tpm2b(name))


class SoftCAKey:
    """An unrestricted signing key standing in for the host TPM's CA key."""

    def __init__(self, attributes: int = CA_ATTRIBUTES) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.signer = soft_tpm.SoftAK(self.key, TPM_ALG.ECDSA, SHA256,
                                      soft_tpm.ecc_public(
                                          self.key.public_key(),
                                          attributes=attributes))
        self.public = self.signer.public_bytes
        self.name = structures.parse_public(self.public).name()


class SoftVTPM:
    def __init__(self, instance: str | None = None) -> None:
        self.instance = instance or str(uuid.uuid4())
        self.ak = soft_tpm.SoftAK.ecc()
        ek_key = ec.generate_private_key(ec.SECP256R1())
        self.ek_public = soft_tpm.ecc_public(
            ek_key.public_key(), attributes=soft_tpm.EK_ATTRIBUTES,
            scheme=TPM_ALG.NULL, scheme_hash=None)
        self.pcrs = soft_tpm.random_pcrs((SHA256,), range(10))

    def quote(self, nonce: bytes, **kw) -> tuple[bytes, bytes]:
        return self.ak.quote(nonce, self.pcrs, **kw)


class SoftHost:
    """A host: its registered AK, its vTPM CA (certified by the AK)."""

    def __init__(self, name: str = "compute-a") -> None:
        self.name = name
        self.ak = soft_tpm.SoftAK.ecc()
        self.ak_public = structures.parse_public(self.ak.public_bytes)
        self.ca = SoftCAKey()
        self.pcrs = soft_tpm.random_pcrs((SHA256,), range(8))
        self.certification = self.certify(self.ca)

    def certify(self, ca: SoftCAKey, qualifying: bytes | None = None,
                name: bytes | None = None
                ) -> vtpm_binding.CACertification:
        attest = certify_attest(
            ca.name if name is None else name,
            vtpm_binding.ca_qualifying_data(self.name)
            if qualifying is None else qualifying)
        return vtpm_binding.CACertification(ca.public, attest,
                                            self.ak.sign(attest))

    def certificate(self, vtpm: SoftVTPM, *, host: str | None = None,
                    instance: str | None = None, ca: SoftCAKey | None = None,
                    ak_public: bytes | None = None, issued_at: int = 1000,
                    payload: bytes | None = None) -> str:
        ca = ca or self.ca
        cert = vtpm_binding.VTPMCertificate(
            host=host or self.name, instance=instance or vtpm.instance,
            vtpm_ak=ak_public or vtpm.ak.public_bytes,
            vtpm_ek_sha256=vtpm_binding.ek_sha256(vtpm.ek_public),
            ca_name=ca.name, issued_at=issued_at, serial="s1")
        payload = cert.payload() if payload is None else payload
        signature = ca.signer.sign(vtpm_binding.certificate_message(payload))
        return vtpm_binding.VTPMCertificate.token(payload, signature)

    def chain(self, vtpm: SoftVTPM, **kw) -> vtpm_binding.VTPMChain:
        return vtpm_binding.VTPMChain(self.certification,
                                      self.certificate(vtpm, **kw))

    def evidence(self, vtpm: SoftVTPM, nonce: bytes,
                 chain: vtpm_binding.VTPMChain | None = None,
                 **quote_kw) -> deep.VMEvidence:
        attest, sig = vtpm.quote(nonce, **quote_kw)
        return deep.VMEvidence(vtpm.instance, attest, sig, vtpm.pcrs,
                               (chain or self.chain(vtpm)).to_wire())

    def host_quote(self, nonce: bytes, **kw) -> deep.HostQuote:
        attest, sig = self.ak.quote(nonce, self.pcrs, **kw)
        return deep.HostQuote(attest, sig, self.pcrs)


def standing(host: str = "compute-a", status: str = "trusted",
             level: int = 4, issued_at: int = 1000,
             expires_at: int = 2000) -> deep.HostStanding:
    return deep.HostStanding(host, status, level, issued_at, expires_at)


def test_soft_ca_certification_verifies():
    host = SoftHost()
    ca = vtpm_binding.verify_ca(host.name, host.ak_public,
                                host.certification)
    assert ca.name() == host.ca.name


def test_soft_chain_binds_host_instance_and_ak():
    host, vtpm = SoftHost(), SoftVTPM()
    bound = vtpm_binding.verify_chain(host.name, host.ak_public,
                                      host.chain(vtpm), vtpm.instance)
    assert (bound.host, bound.instance) == (host.name, vtpm.instance)
    assert bound.ak.raw == vtpm.ak.public_bytes
    assert bound.ek_sha256 == vtpm_binding.ek_sha256(vtpm.ek_public)
