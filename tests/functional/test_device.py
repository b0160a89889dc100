"""trusted_pools.tpm.device against real swtpm TPMs.

Everything the device returns is checked with the evidence library
(structures, quote, keys), never against hard-coded bytes."""

from __future__ import annotations

import hashlib

import pytest
from cryptography import x509
from hypothesis import HealthCheck, given, settings, strategies as st
from tpm2_pytss import ESYS_TR

from trusted_pools import exception
from trusted_pools.verifier import enrollment
from trusted_pools.tpm import device as device_module
from trusted_pools.tpm import keys, quote, rc, structures
from trusted_pools.tpm.constants import TPM_ALG, TPM_ST
from trusted_pools.tpm.device import DEFAULT_AK_HANDLE, TPMDevice

pytestmark = pytest.mark.swtpm

SHA256, SHA1 = TPM_ALG.SHA256, TPM_ALG.SHA1
RSA_AK_HANDLE = 0x81008002


@pytest.fixture(scope="module")
def tpm(swtpm_module_pool):
    """One TPM shared by this module, with an ECC and an RSA AK."""
    instance = swtpm_module_pool(1)[0]
    with instance.device() as dev:
        dev.create_ak("ecc", DEFAULT_AK_HANDLE)
        dev.create_ak("rsa", RSA_AK_HANDLE)
    return instance


@pytest.fixture
def dev(tpm):
    with tpm.device() as device:
        yield device
        # Every test leaves the three transient slots empty.
        assert device.transient_handles() == []


@pytest.mark.parametrize("kind", ["rsa2048", "ecc384-high"])
def test_ek_certificate_certifies_the_ek_public(dev, kind):
    cert = dev.read_ek_certificate(kind)
    parsed = x509.load_der_x509_certificate(cert)
    ek = structures.parse_public(dev.ek_public(kind))
    enrollment.ek_matches_certificate(ek, parsed)
    assert ek.attributes & structures.ObjectAttributes.RESTRICTED
    assert ek.attributes & structures.ObjectAttributes.DECRYPT


def test_missing_ek_certificate_index_is_none(dev):
    assert dev.read_ek_certificate("ecc256") is None
    assert "ecc256" not in dev.read_ek_certificates()


@pytest.mark.parametrize("handle,alg,key_type", [
    (DEFAULT_AK_HANDLE, "ecc", TPM_ALG.ECC),
    (RSA_AK_HANDLE, "rsa", TPM_ALG.RSA)])
def test_ak_is_a_strict_restricted_signing_key(dev, handle, alg, key_type):
    ak = dev.load_ak(handle)
    public = structures.parse_public(ak.public)
    keys.check_ak_attributes(public)
    assert public.type == key_type
    assert public.name() == ak.name
    assert public.attributes & structures.ObjectAttributes.NO_DA


@pytest.mark.parametrize("handle", [DEFAULT_AK_HANDLE, RSA_AK_HANDLE])
def test_quote_verifies_with_the_evidence_core(dev, handle):
    ak = structures.parse_public(dev.load_ak(handle).public)
    nonce = b"n" * 32
    selection = {SHA256: list(range(24)), SHA1: [0, 7]}  # > 8 PCRs
    attest, signature = dev.quote(handle, nonce, selection)
    values = dev.pcr_read(selection)
    assert len(values[SHA256]) == 24 and set(values[SHA1]) == {0, 7}
    verified = quote.verify_quote(ak, attest, signature, nonce, values)
    assert verified.pcrs == values
    with pytest.raises(exception.NonceMismatch):
        quote.verify_quote(ak, attest, signature, b"m" * 32, values)


def test_extend_changes_exactly_that_pcr(dev):
    before = dev.pcr_read({SHA256: [16, 23]})[SHA256]
    digest = b"\x11" * 32
    dev.pcr_extend(16, {SHA256: digest, SHA1: b"\x22" * 20})
    after = dev.pcr_read({SHA256: [16, 23]})[SHA256]
    assert after[16] == hashlib.sha256(before[16] + digest).digest()
    assert after[23] == before[23]


def test_ak_survives_a_restart(tpm):
    with tpm.device() as device:
        created = device.load_ak(DEFAULT_AK_HANDLE)
    tpm.restart()
    with tpm.device() as device:
        reloaded = device.load_ak(DEFAULT_AK_HANDLE)
        attest, signature = device.quote(DEFAULT_AK_HANDLE, b"r",
                                         {SHA256: [0]})
        values = device.pcr_read({SHA256: [0]})
    assert reloaded == created
    quote.verify_quote(structures.parse_public(reloaded.public), attest,
                       signature, b"r", values)


def test_create_ak_on_a_used_handle_is_a_conflict(dev):
    with pytest.raises(exception.Conflict):
        dev.create_ak("ecc", DEFAULT_AK_HANDLE)


def test_replace_evicts_and_recreates(dev):
    first = dev.create_ak("ecc", 0x81008010)
    second = dev.create_ak("ecc", 0x81008010, replace=True)
    assert first.public != second.public
    dev.evict(0x81008010)
    assert 0x81008010 not in dev.persistent_handles()


def test_certified_key_is_certified_by_the_ak(dev):
    ak = structures.parse_public(dev.load_ak(DEFAULT_AK_HANDLE).public)
    key = dev.create_certified_key(DEFAULT_AK_HANDLE, "ecc",
                                   qualifying_data=b"bind-vtpm-1")
    public = structures.parse_public(key.public)
    assert public.name() == key.name
    assert not public.attributes & structures.ObjectAttributes.RESTRICTED
    assert public.attributes & structures.ObjectAttributes.FIXED_TPM
    for attest_bytes, signature, st in (
            (key.certify_attest, key.certify_signature,
             TPM_ST.ATTEST_CERTIFY),
            (key.creation_attest, key.creation_signature,
             TPM_ST.ATTEST_CREATION)):
        quote.verify_signature(ak, attest_bytes, signature)
        attest = structures.parse_attest(attest_bytes)
        assert attest.type == st
        assert attest.extra_data == b"bind-vtpm-1"
        if st == TPM_ST.ATTEST_CERTIFY:
            assert attest.attested.name == key.name
        else:
            assert attest.attested.object_name == key.name
            # creationHash covers the TPMS_CREATION_DATA the TPM returned
            assert attest.attested.creation_hash == hashlib.sha256(
                key.creation_data[2:]).digest()
    with pytest.raises(exception.InvalidSignature):
        quote.verify_signature(ak, key.certify_attest[:-1] + b"\0",
                               key.certify_signature)


def test_certify_a_persistent_object(dev):
    ak = structures.parse_public(dev.load_ak(DEFAULT_AK_HANDLE).public)
    other = dev.load_ak(RSA_AK_HANDLE)
    attest, signature = dev.certify(RSA_AK_HANDLE, DEFAULT_AK_HANDLE, b"q")
    quote.verify_signature(ak, attest, signature)
    assert structures.parse_attest(attest).attested.name == other.name


# --- errors become typed -----------------------------------------------------

def test_wrong_handle_is_a_decoded_tpm_error(dev):
    with pytest.raises(exception.TPMError) as info:
        dev.quote(0x81000077, b"", {SHA256: [0]})
    err = info.value
    assert err.kwargs["rc"] & 0xFFF == 0x18B
    assert rc.decode_rc(err.kwargs["rc"]).base == rc.TPM_RC_HANDLE
    assert "TPM_RC_HANDLE" in str(err) and "0x81000077" in str(err)


def test_activation_with_garbage_is_a_tpm_error_and_leaks_nothing(dev):
    with pytest.raises(exception.TPMError) as info:
        dev.activate_credential(DEFAULT_AK_HANDLE, b"\0" * 68, b"\1" * 256)
    assert info.value.kwargs["rc"] != 0
    # the dev fixture asserts no transient object or session leaked


def test_unallocated_bank_is_refused(dev):
    with pytest.raises(exception.InvalidParameterValue):
        dev.pcr_read({TPM_ALG.SHA384: [0]})


@pytest.mark.parametrize("selection", [{}, {SHA256: [24]}, {SHA256: [-1]},
                                       {0x0099: [0]}])
def test_bad_selection_is_refused_before_the_tpm(dev, selection):
    with pytest.raises((exception.InvalidParameterValue,
                        exception.UnsupportedAlgorithm)):
        dev.quote(DEFAULT_AK_HANDLE, b"", selection)


def test_oversized_nonce_is_refused(dev):
    with pytest.raises(exception.InvalidParameterValue):
        dev.quote(DEFAULT_AK_HANDLE, b"x" * 65, {SHA256: [0]})


def test_lockout_is_typed_and_not_retryable(swtpm_instance):
    with swtpm_instance.device() as dev:
        dev.esapi.hierarchy_change_auth(ESYS_TR.LOCKOUT, b"right")
        with pytest.raises(exception.TPMError) as first:
            dev.reset_dictionary_attack(b"wrong")
        assert rc.decode_rc(first.value.kwargs["rc"]).base == \
            rc.TPM_RC_AUTH_FAIL
        with pytest.raises(exception.TPMLockout) as locked:
            dev.reset_dictionary_attack(b"right")
        decoded = rc.decode_rc(locked.value.kwargs["rc"])
        assert decoded.is_lockout and not decoded.retryable
        assert "lockout" in str(locked.value).lower()


@pytest.mark.parametrize("tcti", ["swtpm:host=127.0.0.1,port=1",
                                  "nosuchtcti:foo"])
def test_unreachable_tpm(tcti):
    with pytest.raises(exception.TPMUnreachable) as info:
        TPMDevice(tcti)
    assert info.value.kwargs["tcti"] == tcti


def test_tpm_going_away_mid_session_is_unreachable(swtpm_instance):
    dev = swtpm_instance.device()
    try:
        swtpm_instance.stop()
        with pytest.raises(exception.TPMUnreachable):
            dev.pcr_read({SHA256: [0]})
    finally:
        dev.close()


def test_closed_device_refuses_commands(tpm):
    dev = tpm.device()
    dev.close()
    dev.close()
    with pytest.raises(exception.InvalidParameterValue):
        dev.pcr_read({SHA256: [0]})


# --- properties -------------------------------------------------------------

@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pcr=st.sampled_from([16, 23]),
       sha256=st.binary(min_size=32, max_size=32),
       sha1=st.binary(min_size=20, max_size=20))
def test_extend_matches_software_replay(dev, pcr, sha256, sha1):
    before = dev.pcr_read({SHA256: [pcr], SHA1: [pcr]})
    dev.pcr_extend(pcr, {SHA256: sha256, SHA1: sha1})
    after = dev.pcr_read({SHA256: [pcr], SHA1: [pcr]})
    assert after[SHA256][pcr] == hashlib.sha256(
        before[SHA256][pcr] + sha256).digest()
    assert after[SHA1][pcr] == hashlib.sha1(before[SHA1][pcr] + sha1).digest()


@given(st.binary(max_size=300))
def test_nv_padding_strip_returns_a_prefix(data):
    stripped = device_module._strip_nv_padding(data)
    assert data.startswith(stripped)
    assert stripped or not data


@given(st.binary(min_size=1, max_size=200), st.binary(max_size=50))
def test_nv_padding_strip_cuts_at_der_length(body, padding):
    length = len(body)
    header = (bytes([0x30, length]) if length < 0x80
              else bytes([0x30, 0x81, length]))
    assert device_module._strip_nv_padding(header + body + padding) == \
        header + body
