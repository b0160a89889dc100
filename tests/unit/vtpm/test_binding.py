"""The vTPM chain (host vTPM CA certified by the host AK, vTPM certificate
signed by the CA) as a verifier sees it, with software keys shaped like
TPM output. Every refusal is typed and names the reason."""

from __future__ import annotations

import base64
import json

import pytest

from tests.unit.verifier.test_deep_soft import (SoftCAKey, SoftHost, SoftVTPM,
                                                certify_attest)
from trusted_pools import exception
from trusted_pools.protocol import vtpm_binding as vb
from trusted_pools.tpm import structures
from trusted_pools.tpm.constants import TPM_ST
from trusted_pools.tpm.structures import ObjectAttributes


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_chain_round_trips_through_its_wire_form():
    host, vtpm = SoftHost(), SoftVTPM()
    wire = json.loads(json.dumps(host.chain(vtpm).to_wire()))
    bound = vb.verify_chain(host.name, host.ak_public, wire, vtpm.instance)
    assert bound.instance == vtpm.instance and bound.host == host.name


def test_payload_is_canonical_json_of_exactly_the_claims():
    host, vtpm = SoftHost(), SoftVTPM()
    token = host.certificate(vtpm)
    payload = base64.urlsafe_b64decode(token.split(".")[0] + "==")
    claims = json.loads(payload)
    assert set(claims) == {"typ", "ver", "host", "instance", "vtpm_ak",
                           "vtpm_ek_sha256", "ca_name", "iat", "serial"}
    assert claims["typ"] == vb.CERTIFICATE_TYPE and claims["ver"] == 1
    assert payload == json.dumps(claims, sort_keys=True,
                                 separators=(",", ":")).encode()


def test_signed_message_is_domain_separated_from_tpm_attestations():
    message = vb.certificate_message(b"{}")
    assert not message.startswith(b"\xffTCG")


# --- a vTPM that claims a host it does not run on ---------------------------

def test_certificate_of_host_a_presented_for_host_b():
    """Host A's CA certified A's vTPM; the chain is shown as B's (with B's
    genuine CA certification): the certificate's signature is A's CA's."""
    a, b, vtpm = SoftHost("compute-a"), SoftHost("compute-b"), SoftVTPM()
    chain = vb.VTPMChain(b.certification, a.certificate(vtpm))
    with pytest.raises(vb.VTPMChainForeignHost, match="compute-b"):
        vb.verify_chain("compute-b", b.ak_public, chain)


def test_host_a_ca_signs_a_certificate_naming_host_b():
    """A compromised host A uses its own CA key to claim that a vTPM runs
    on host B: the CA is certified by A's AK, not B's."""
    a, b, vtpm = SoftHost("compute-a"), SoftHost("compute-b"), SoftVTPM()
    chain = vb.VTPMChain(a.certification,
                         a.certificate(vtpm, host="compute-b"))
    with pytest.raises(vb.VTPMChainForeignHost) as caught:
        vb.verify_chain("compute-b", b.ak_public, chain)
    assert "not certified by the registered AK of compute-b" in \
        caught.value.message


def test_ca_certified_by_another_hosts_ak():
    a, b, vtpm = SoftHost("compute-a"), SoftHost("compute-b"), SoftVTPM()
    # B's CA key, certified (with B's qualifying data) by A's AK.
    attest = certify_attest(b.ca.name, vb.ca_qualifying_data("compute-b"))
    forged = vb.CACertification(b.ca.public, attest, a.ak.sign(attest))
    chain = vb.VTPMChain(forged, b.certificate(vtpm))
    with pytest.raises(vb.VTPMChainForeignHost, match="registered AK"):
        vb.verify_chain("compute-b", b.ak_public, chain)


def test_certificate_naming_another_host_under_the_right_ca():
    """Host B's own CA signed a certificate that names host A."""
    b, vtpm = SoftHost("compute-b"), SoftVTPM()
    chain = b.chain(vtpm, host="compute-a")
    with pytest.raises(vb.VTPMChainForeignHost, match="names host"):
        vb.verify_chain("compute-b", b.ak_public, chain)


def test_ca_certified_for_another_host_name():
    """B's AK certified its CA with qualifying data naming host A."""
    b, vtpm = SoftHost("compute-b"), SoftVTPM()
    certification = b.certify(b.ca, vb.ca_qualifying_data("compute-a"))
    chain = vb.VTPMChain(certification, b.certificate(vtpm))
    with pytest.raises(vb.VTPMChainForeignHost, match="qualifying data"):
        vb.verify_chain("compute-b", b.ak_public, chain)


def test_certificate_naming_another_ca_key():
    host, vtpm = SoftHost(), SoftVTPM()
    other = SoftCAKey()
    token = host.certificate(vtpm, ca=host.ca)
    payload = json.loads(base64.urlsafe_b64decode(token.split(".")[0]
                                                  + "=="))
    payload["ca_name"] = other.name.hex()
    raw = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    chain = vb.VTPMChain(host.certification,
                         host.certificate(vtpm, payload=raw))
    with pytest.raises(vb.VTPMChainForeignHost, match="another CA"):
        vb.verify_chain(host.name, host.ak_public, chain)


# --- the CA key and its certification ---------------------------------------

@pytest.mark.parametrize("attributes,what", [
    (ObjectAttributes.FIXED_TPM | ObjectAttributes.FIXED_PARENT
     | ObjectAttributes.SENSITIVE_DATA_ORIGIN | ObjectAttributes.SIGN_ENCRYPT
     | ObjectAttributes.DECRYPT, "decrypt clear"),
    (ObjectAttributes.FIXED_PARENT | ObjectAttributes.SENSITIVE_DATA_ORIGIN
     | ObjectAttributes.SIGN_ENCRYPT, "fixedTPM set"),
    (ObjectAttributes.FIXED_TPM | ObjectAttributes.SENSITIVE_DATA_ORIGIN
     | ObjectAttributes.SIGN_ENCRYPT, "fixedParent set"),
])
def test_ca_key_must_be_a_tpm_resident_signing_key(attributes, what):
    host = SoftHost()
    ca = SoftCAKey(attributes)
    with pytest.raises(vb.VTPMBindingRefused, match=what):
        vb.verify_ca(host.name, host.ak_public, host.certify(ca))


def test_certified_name_must_be_the_ca_public():
    host = SoftHost()
    other = SoftCAKey()
    certification = host.certify(host.ca, name=other.name)
    with pytest.raises(vb.VTPMBindingRefused, match="another key"):
        vb.verify_ca(host.name, host.ak_public, certification)


def test_certification_must_be_a_certify_made_by_the_tpm():
    host = SoftHost()
    for kw in ({"magic": 0}, {"st": TPM_ST.ATTEST_QUOTE}):
        attest = certify_attest(host.ca.name,
                                vb.ca_qualifying_data(host.name), **kw)
        certification = vb.CACertification(host.ca.public, attest,
                                           host.ak.sign(attest))
        with pytest.raises(vb.VTPMBindingRefused):
            vb.verify_ca(host.name, host.ak_public, certification)


# --- the certificate ---------------------------------------------------------

def test_certified_vtpm_ak_must_be_restricted():
    host, vtpm = SoftHost(), SoftVTPM()
    unrestricted = SoftCAKey()  # a plain signing key, not an AK
    chain = host.chain(vtpm, ak_public=unrestricted.public)
    with pytest.raises(vb.VTPMBindingRefused, match="restricted"):
        vb.verify_chain(host.name, host.ak_public, chain)


def test_certificate_for_another_instance():
    host, vtpm = SoftHost(), SoftVTPM()
    with pytest.raises(vb.VTPMBindingRefused, match="for instance"):
        vb.verify_chain(host.name, host.ak_public, host.chain(vtpm),
                        SoftVTPM().instance)


@pytest.mark.parametrize("edit", [
    lambda c: dict(c, extra=1),
    lambda c: {k: v for k, v in c.items() if k != "serial"},
    lambda c: dict(c, typ="trusted-pools-result+jwt"),
    lambda c: dict(c, ver=2),
    lambda c: dict(c, instance="not-a-uuid"),
    lambda c: dict(c, iat="yesterday"),
    lambda c: dict(c, vtpm_ek_sha256="AB" * 32),
])
def test_malformed_claims_are_refused_even_when_signed(edit):
    host, vtpm = SoftHost(), SoftVTPM()
    token = host.certificate(vtpm)
    claims = json.loads(base64.urlsafe_b64decode(token.split(".")[0]
                                                 + "=="))
    raw = json.dumps(edit(claims), sort_keys=True,
                     separators=(",", ":")).encode()
    chain = vb.VTPMChain(host.certification,
                         host.certificate(vtpm, payload=raw))
    with pytest.raises(vb.VTPMCertificateMalformed):
        vb.verify_chain(host.name, host.ak_public, chain)


def test_non_canonical_payload_is_refused():
    host, vtpm = SoftHost(), SoftVTPM()
    token = host.certificate(vtpm)
    claims = json.loads(base64.urlsafe_b64decode(token.split(".")[0]
                                                 + "=="))
    raw = json.dumps(claims, indent=1).encode()
    chain = vb.VTPMChain(host.certification,
                         host.certificate(vtpm, payload=raw))
    with pytest.raises(vb.VTPMCertificateMalformed, match="canonical"):
        vb.verify_chain(host.name, host.ak_public, chain)


@pytest.mark.parametrize("token", [
    "", "onlyone", "a.b.c", "a.", "!!.AA", 5, "A" * 9000 + ".AA"])
def test_garbage_tokens_are_malformed(token):
    host = SoftHost()
    ca = structures.parse_public(host.ca.public)
    with pytest.raises(vb.VTPMCertificateMalformed):
        vb.verify_certificate(token, ca, host.name)


def test_tampered_payload_fails_the_signature():
    host, vtpm = SoftHost(), SoftVTPM()
    payload_segment, signature_segment = host.certificate(vtpm).split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload_segment + "=="))
    claims["instance"] = SoftVTPM().instance
    raw = json.dumps(claims, sort_keys=True, separators=(",", ":")).encode()
    chain = vb.VTPMChain(host.certification,
                         _b64(raw) + "." + signature_segment)
    with pytest.raises(vb.VTPMChainForeignHost, match="not signed"):
        vb.verify_chain(host.name, host.ak_public, chain)


def test_refusals_are_evidence_errors():
    assert issubclass(vb.VTPMBindingRefused, exception.EvidenceError)
    assert issubclass(vb.VTPMChainForeignHost, vb.VTPMBindingRefused)
