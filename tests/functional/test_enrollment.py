"""Host enrollment end to end against real swtpm TPMs.

Several hosts enroll; an enrolled AK's quote over PCRs that replay a real
event log verifies with the evidence core; and each way enrollment must
fail does fail, with its reason, leaving nothing registered."""

from __future__ import annotations

import datetime

import pytest

from tests import swtpm_pool as sp
from trusted_pools import exception
from trusted_pools.agent import enrollment as agent_en
from trusted_pools.verifier import enrollment as en
from trusted_pools.tpm import eventlog, quote, structures
from trusted_pools.tpm.constants import TPM_ALG
from trusted_pools.tpm.device import DEFAULT_AK_HANDLE

pytestmark = pytest.mark.swtpm

SELECTION = {TPM_ALG.SHA256: list(range(24)), TPM_ALG.SHA1: list(range(24))}


@pytest.fixture(scope="module")
def hosts(swtpm_module_pool):
    """Three booted hosts (two log kinds) with ECC AKs, one with an RSA
    AK; shared by the module's tests, which never change their PCRs."""
    tpms = swtpm_module_pool(3)
    logs = [sp.BOOTED_HOST_LOGS["ubuntu-2104"],
            sp.BOOTED_HOST_LOGS["arch-linux"],
            sp.BOOTED_HOST_LOGS["ubuntu-2104"]]
    for tpm, log in zip(tpms, logs):
        tpm.boot_log = sp.boot_from_event_log(tpm, log).log_bytes
    with tpms[2].device() as dev:
        dev.create_ak("rsa", DEFAULT_AK_HANDLE)
    return tpms


@pytest.fixture
def store():
    return en.DictEnrollmentStore()


def enroll(tpm, host_id, store, ca_bundle, **identity_kw):
    """The whole protocol, both sides, as the services will run it."""
    with tpm.device() as dev:
        identity = agent_en.collect_identity(dev, **identity_kw)
        challenge = en.start_enrollment(
            host_id, identity.ek_certificate, identity.ek_public,
            identity.ak_public, ca_bundle=ca_bundle, store=store)
        secret = agent_en.answer_challenge(
            dev, challenge.credential_blob, challenge.encrypted_secret,
            ak_handle=identity_kw.get("ak_handle"),
            ek_kind=identity_kw.get("ek_kind", "rsa2048"))
    return en.complete_enrollment(store, challenge.challenge_id, secret)


def assert_nothing_registered(store, host_id):
    with pytest.raises(exception.HostNotFound):
        store.get_registration(host_id)
    assert store.registrations() == []


def test_several_hosts_enroll_and_their_quotes_verify(hosts, store,
                                                      swtpm_ca):
    for index, tpm in enumerate(hosts):
        reg = enroll(tpm, "compute-%d" % index, store, swtpm_ca.bundle_pem)
        assert reg.host_id == "compute-%d" % index
    registrations = store.registrations()
    assert len(registrations) == 3
    assert len({r.ek_certificate_fingerprint for r in registrations}) == 3
    assert store.pending_challenges() == []

    # The verifier side of a later attestation: quote checked with the
    # REGISTERED AK, then the host's event log replayed against it.
    for index, tpm in enumerate(hosts):
        reg = store.get_registration("compute-%d" % index)
        ak = structures.load_public(reg.ak_public)
        assert ak.name() == reg.ak_name
        nonce = ("attest-%d" % index).encode()
        with tpm.device() as dev:
            attest, signature = dev.quote(DEFAULT_AK_HANDLE, nonce,
                                          SELECTION)
            values = dev.pcr_read(SELECTION)
        verified = quote.verify_quote(ak, attest, signature, nonce, values)
        log = eventlog.verify_event_log(
            eventlog.parse_event_log(tpm.boot_log), verified.pcrs)
        assert 4 in log.checked_pcrs[TPM_ALG.SHA256]
        assert any(e.pcr == 4 for e in log.events)


def test_rsa_ak_and_ecc_p384_ek_enroll(hosts, store, swtpm_ca):
    reg = enroll(hosts[0], "ecc-ek-host", store, swtpm_ca.bundle_pem,
                 ek_kind="ecc384-high", ak_handle=0x81008020)
    assert structures.load_public(reg.ak_public).type == TPM_ALG.ECC
    rsa_host = structures.load_public(
        enroll(hosts[2], "rsa-ak-host", store, swtpm_ca.bundle_pem).ak_public)
    assert rsa_host.type == TPM_ALG.RSA


def test_quote_over_a_tampered_boot_names_pcr4(swtpm_instance, store,
                                               swtpm_ca):
    path = sp.BOOTED_HOST_LOGS["ubuntu-2104"]
    raw = path.read_bytes()
    sp.boot_from_event_log(swtpm_instance, path,
                           tamper=sp.kernel_event_index(raw))
    reg = enroll(swtpm_instance, "tampered", store, swtpm_ca.bundle_pem)
    with swtpm_instance.device() as dev:
        attest, signature = dev.quote(DEFAULT_AK_HANDLE, b"n", SELECTION)
        values = dev.pcr_read(SELECTION)
    verified = quote.verify_quote(structures.load_public(reg.ak_public),
                                  attest, signature, b"n", values)
    with pytest.raises(exception.ReplayMismatch) as info:
        eventlog.verify_event_log(eventlog.parse_event_log(raw),
                                  verified.pcrs)
    assert info.value.kwargs["pcrs"] == [4]


# --- rejections --------------------------------------------------------------

def test_ak_with_wrong_attributes_is_rejected(hosts, store, swtpm_ca):
    with hosts[0].device() as dev:
        identity = agent_en.collect_identity(dev)
        # A TPM-resident signing key that is NOT restricted: it could sign
        # a forged TPMS_ATTEST, so it must never become an AK.
        unrestricted = dev.create_certified_key(DEFAULT_AK_HANDLE, "ecc")
    with pytest.raises(exception.AKAttributesRejected) as info:
        en.start_enrollment("h", identity.ek_certificate, identity.ek_public,
                            unrestricted.public,
                            ca_bundle=swtpm_ca.bundle_pem, store=store)
    assert info.value.kwargs["attribute"] == "restricted"
    assert "restricted" in str(info.value)
    assert store.pending_challenges() == []
    assert_nothing_registered(store, "h")


def test_ek_certificate_from_an_unknown_ca_is_rejected(
        swtpm_pool, swtpm_other_ca, swtpm_ca, store):
    stranger = swtpm_pool(1, ca=swtpm_other_ca)[0]
    with stranger.device() as dev:
        identity = agent_en.collect_identity(dev)
    with pytest.raises(exception.EKCertificateUntrusted) as info:
        en.start_enrollment("stranger", identity.ek_certificate,
                            identity.ek_public, identity.ak_public,
                            ca_bundle=swtpm_ca.bundle_pem, store=store)
    # Same CA names, other keys: the message names the issuer and says why.
    assert info.value.kwargs["issuer"] == "CN=swtpm-localca"
    assert "none of their keys verifies" in str(info.value)
    assert store.pending_challenges() == []
    assert_nothing_registered(store, "stranger")
    # ... and the same TPM enrolls once its CA is in the bundle.
    assert enroll(stranger, "stranger", store,
                  swtpm_other_ca.bundle_pem).host_id == "stranger"


def test_ek_certificate_not_matching_the_ek_public_is_rejected(
        hosts, store, swtpm_ca):
    with hosts[0].device() as dev:
        a = agent_en.collect_identity(dev)
    with hosts[1].device() as dev:
        b = agent_en.collect_identity(dev)
    with pytest.raises(exception.EKMismatch) as info:
        en.start_enrollment("mixed", a.ek_certificate, b.ek_public,
                            a.ak_public, ca_bundle=swtpm_ca.bundle_pem,
                            store=store)
    assert "does not match the EK certificate" in str(info.value)
    assert_nothing_registered(store, "mixed")


def test_credential_activated_by_a_different_tpm_is_rejected(
        hosts, store, swtpm_ca):
    """Host A's genuine EK certificate presented with the AK of TPM B (an
    attacker who wants A's identity for a key it controls)."""
    with hosts[0].device() as dev:
        a = agent_en.collect_identity(dev)
    with hosts[1].device() as dev:
        b = agent_en.collect_identity(dev)
    challenge = en.start_enrollment(
        "relay", a.ek_certificate, a.ek_public, b.ak_public,
        ca_bundle=swtpm_ca.bundle_pem, store=store)
    # TPM B holds the AK but not A's EK; TPM A holds the EK but not that AK.
    for tpm in (hosts[1], hosts[0]):
        with tpm.device() as dev:
            with pytest.raises(exception.TPMError):
                agent_en.answer_challenge(dev, challenge.credential_blob,
                                    challenge.encrypted_secret)
            assert dev.transient_handles() == []
    # Whatever the attacker sends back instead fails, and uses it up.
    with pytest.raises(exception.CredentialActivationFailed):
        en.complete_enrollment(store, challenge.challenge_id, b"\0" * 32)
    with pytest.raises(exception.ChallengeNotFound):
        en.complete_enrollment(store, challenge.challenge_id, b"\0" * 32)
    assert_nothing_registered(store, "relay")


def test_response_to_an_old_challenge_is_rejected(hosts, store, swtpm_ca):
    with hosts[1].device() as dev:
        identity = agent_en.collect_identity(dev)
        args = ("h1", identity.ek_certificate, identity.ek_public,
                identity.ak_public)
        old = en.start_enrollment(*args, ca_bundle=swtpm_ca.bundle_pem,
                                  store=store)
        old_secret = agent_en.answer_challenge(dev, old.credential_blob,
                                         old.encrypted_secret)
        new = en.start_enrollment(*args, ca_bundle=swtpm_ca.bundle_pem,
                                  store=store)
        new_secret = agent_en.answer_challenge(dev, new.credential_blob,
                                         new.encrypted_secret)
    assert old_secret == old.challenge.secret
    # Superseded by the newer challenge: the correct old secret is useless.
    with pytest.raises(exception.ChallengeNotFound):
        en.complete_enrollment(store, old.challenge_id, old_secret)
    # Nor does the old secret answer the new challenge.
    with pytest.raises(exception.CredentialActivationFailed):
        en.complete_enrollment(store, new.challenge_id, old_secret)
    assert_nothing_registered(store, "h1")
    assert new_secret != old_secret


def test_expired_challenge_is_rejected(hosts, store, swtpm_ca):
    start = datetime.datetime.now(datetime.timezone.utc)
    with hosts[2].device() as dev:
        identity = agent_en.collect_identity(dev)
        challenge = en.start_enrollment(
            "late", identity.ek_certificate, identity.ek_public,
            identity.ak_public, ca_bundle=swtpm_ca.bundle_pem, store=store,
            now=start, ttl=datetime.timedelta(seconds=30))
        secret = agent_en.answer_challenge(dev, challenge.credential_blob,
                                     challenge.encrypted_secret)
    with pytest.raises(exception.ChallengeExpired) as info:
        en.complete_enrollment(store, challenge.challenge_id, secret,
                               now=start + datetime.timedelta(seconds=31))
    assert "late" in str(info.value)
    assert_nothing_registered(store, "late")


def test_tpm_errors_during_enrollment_leave_nothing_registered(
        hosts, store, swtpm_ca):
    with hosts[0].device() as dev:
        with pytest.raises(exception.TPMError):
            dev.load_ak(0x81008033)
        with pytest.raises(exception.NotFound):
            agent_en.collect_identity(dev, ak_handle=0x81008033,
                                      create_ak=False)
        identity = agent_en.collect_identity(dev)
        challenge = en.start_enrollment(
            "broken", identity.ek_certificate, identity.ek_public,
            identity.ak_public, ca_bundle=swtpm_ca.bundle_pem, store=store)
        with pytest.raises(exception.TPMError):  # AK handle does not exist
            agent_en.answer_challenge(dev, challenge.credential_blob,
                                challenge.encrypted_secret,
                                ak_handle=0x81008033)
    assert_nothing_registered(store, "broken")
    # The challenge is still answerable by the right AK: no state was lost.
    with hosts[0].device() as dev:
        secret = agent_en.answer_challenge(dev, challenge.credential_blob,
                                     challenge.encrypted_secret)
    assert en.complete_enrollment(store, challenge.challenge_id,
                                  secret).host_id == "broken"


def test_host_that_is_already_enrolled_is_a_conflict(hosts, store, swtpm_ca):
    enroll(hosts[1], "twice", store, swtpm_ca.bundle_pem)
    with pytest.raises(exception.HostAlreadyEnrolled):
        enroll(hosts[1], "twice", store, swtpm_ca.bundle_pem)
    assert len(store.registrations()) == 1
