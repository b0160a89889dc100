"""A real guest on a vTPM: its firmware extends the vTPM's PCRs, and the
guest quotes them over the verifier's nonce from the inside.

One boot serves the whole module (TCG on a loaded 2-core machine: about
17 s; budget 150 s). The vTPM is a plain swtpm provisioned with EK and
platform certificates and given a persistent ECC AK by the project's own
``TPMDevice`` before QEMU attaches; the guest is OVMF + the Debian kernel +
a test initramfs whose /init runs the product's guest attester
(``trusted_pools/guest/attest.sh``). Everything that comes back over the
serial console is treated as the compute host's (attacker's) words: only
the project's own evidence library decides what counts.

A missing qemu-system-x86_64, OVMF, kernel or busybox FAILS these tests
with the package to install (tools/bootstrap.sh installs them).
"""

from __future__ import annotations

import hashlib
import os

import pytest

from tests.guest import image, plain_swtpm, qemu
from trusted_pools import exception
from trusted_pools import guest as product_guest
from trusted_pools.tpm import eventlog, keys, pcrs, quote, structures
from trusted_pools.tpm.constants import TPM_ALG
from trusted_pools.tpm.device import DEFAULT_AK_HANDLE

pytestmark = [pytest.mark.slow, pytest.mark.swtpm]

SHA256 = int(TPM_ALG.SHA256)
AK_HANDLE = DEFAULT_AK_HANDLE
OTHER_AK_HANDLE = DEFAULT_AK_HANDLE + 1
QUOTED_PCRS = set(range(10))


def _require_parts() -> None:
    try:
        qemu.find_qemu()
        qemu.find_ovmf()
        image.kernel()
        image.initramfs()
    except image.GuestPartMissing as exc:
        pytest.fail("the real-guest test cannot run: %s" % exc)


# Two boots: a vTPM with EK and platform certificates and an ECC P-256 AK,
# and a bare vTPM (no certificates) with an RSA-2048 AK.
VARIANTS = {"certified-ecc": (True, "ecc"), "bare-rsa": (False, "rsa")}


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def booted(request, swtpm_ca, tmp_path_factory):
    """One guest boot on a fresh vTPM; what the tests look at."""
    _require_parts()
    with_certs, alg = VARIANTS[request.param]
    base = tmp_path_factory.mktemp("guest")
    vtpm = plain_swtpm.PlainVTPM(
        base / "vtpm", ca=swtpm_ca if with_certs else None).provision()
    ak = vtpm.create_ak(AK_HANDLE, alg)
    other_ak = vtpm.create_ak(OTHER_AK_HANDLE, alg)
    nonce = os.urandom(32)
    sock = vtpm.start_for_qemu(log_level=20)
    try:
        result = qemu.boot_and_quote(sock, nonce, AK_HANDLE,
                                     workdir=base)
        swtpm_rc = vtpm.wait_exit(10)
    finally:
        vtpm.stop()
    print("%s: guest boot to power-off %.1f s"
          % (request.param, result.boot_seconds))
    return {"result": result, "ak": ak, "other_ak": other_ak,
            "nonce": nonce, "swtpm_rc": swtpm_rc,
            "commands": qemu.swtpm_log_commands(vtpm.log_text())}


def _verify(booted, nonce=None, ak=None, values=None):
    evidence = booted["result"].evidence
    public = structures.parse_public((ak or booted["ak"]).public)
    if values is None:
        values = pcrs.load_pcr_values(evidence.pcrs)
    return quote.verify_quote(public, evidence.quote, evidence.signature,
                              booted["nonce"] if nonce is None else nonce,
                              values)


def test_firmware_extends_the_vtpm_pcrs(booted):
    commands = booted["commands"]
    extends = commands.count(qemu.TPM2_CC_PCR_EXTEND)
    # OVMF 2022.11 sends 29 before it boots anything; the kernel's EFI
    # stub adds its own (initrd, load options).
    assert extends >= 20, "only %d TPM2_PCR_Extend in swtpm's log" % extends
    # The guest's own quote came after the firmware's measurements.
    assert qemu.TPM2_CC_QUOTE in commands
    assert commands.index(qemu.TPM2_CC_QUOTE) > \
        max(i for i, c in enumerate(commands)
            if c == qemu.TPM2_CC_PCR_EXTEND)
    # QEMU shut the swtpm down when the guest powered off.
    assert booted["swtpm_rc"] == 0


def test_guest_quote_verifies_with_the_ak_recorded_before_boot(booted):
    keys.check_ak_attributes(structures.parse_public(booted["ak"].public))
    verified = _verify(booted)
    assert set(verified.pcrs) == {SHA256}
    assert set(verified.pcrs[SHA256]) == QUOTED_PCRS
    # The firmware PCRs hold measurements, not their reset value.
    for pcr in range(8):
        assert verified.pcrs[SHA256][pcr] != b"\0" * 32, pcr


def test_wrong_nonce_fails(booted):
    # A compromised host relaying this (genuine) quote for another
    # challenge: the nonce the verifier sent is not the one signed.
    with pytest.raises(exception.NonceMismatch):
        _verify(booted, nonce=os.urandom(32))


def test_edited_pcr_values_fail(booted):
    values = pcrs.load_pcr_values(booted["result"].evidence.pcrs)
    values[SHA256][4] = hashlib.sha256(b"a kernel nobody approved").digest()
    with pytest.raises(exception.PCRDigestMismatch):
        _verify(booted, values=values)


def test_quote_does_not_verify_under_another_ak(booted):
    # Another key of the same vTPM (or of another VM) is not this one.
    with pytest.raises(exception.InvalidSignature):
        _verify(booted, ak=booted["other_ak"])


def test_guest_event_log_replays_and_names_the_initrd(booted):
    evidence = booted["result"].evidence
    assert evidence.eventlog, "the guest kernel exposed no event log"
    verified = _verify(booted)
    log = eventlog.verify_event_log(eventlog.parse_event_log(
        evidence.eventlog), verified.pcrs)
    assert set(range(8)) <= set(log.checked_pcrs[SHA256])
    assert 9 in log.checked_pcrs[SHA256]
    # The kernel's EFI stub measured the very initramfs QEMU was given.
    initrd = hashlib.sha256(image.initramfs().read_bytes()).digest()
    pcr9 = [e.digests[SHA256] for e in log.events if e.pcr == 9]
    assert initrd in pcr9


def test_tampered_console_output_is_refused(booted):
    serial = booted["result"].run.serial
    begin = serial.index("TP-ATTEST-BEGIN quote-sig")
    cut = serial[:begin] + serial[serial.index("TP-ATTEST-END quote-sig")
                                  + len("TP-ATTEST-END quote-sig"):]
    with pytest.raises(exception.MalformedEvidence):
        product_guest.parse_output(cut)


def test_boot_time_is_recorded_and_within_budget(booted, record_property):
    seconds = booted["result"].boot_seconds
    record_property("guest_boot_seconds", round(seconds, 1))
    assert seconds < qemu.DEFAULT_TIMEOUT


def test_edited_event_log_does_not_replay(booted):
    # The host rewrites the guest's event log on its way out (hiding the
    # initrd it swapped): the log no longer replays to the signed PCRs.
    evidence = booted["result"].evidence
    initrd = hashlib.sha256(image.initramfs().read_bytes()).digest()
    assert evidence.eventlog.count(initrd) == 1
    edited = evidence.eventlog.replace(
        initrd, hashlib.sha256(b"the initrd the verifier expects").digest())
    with pytest.raises(exception.ReplayMismatch) as caught:
        eventlog.verify_event_log(eventlog.parse_event_log(edited),
                                  _verify(booted).pcrs)
    assert 9 in caught.value.kwargs["pcrs"]
