"""Appraisal of real evidence against captured and edited policies.

The event logs are real (tests/data/eventlog); the "quote" of each test is
the log's own replay (plus reset values for the PCRs it never extends), as a
real TPM that booted that way would sign. Tampering rewrites an event's
digests in a copy of the log and replays again: what an attacker who booted
a different kernel on a real TPM would present - a log that replays, and
says so.
"""

from __future__ import annotations

import copy
import hashlib
import json
import pathlib
import struct

import pytest

from tests import ima_gen
from trusted_pools import exception
from trusted_pools.verifier import appraisal as ap
from trusted_pools.verifier import policy as pol
from trusted_pools.protocol.levels import AssuranceLevel, Claim, Outcome, Rung
from trusted_pools.protocol.verdict import Status
from trusted_pools.tpm import constants, ima
from trusted_pools.tpm import eventlog as el
from trusted_pools.tpm.quote import VerifiedQuote

DATA = pathlib.Path(__file__).resolve().parents[2] / "data"
EVENTLOG = DATA / "eventlog"
IMA_DIR = DATA / "ima" / "keylime"
UBUNTU = "go-attestation/ubuntu_2104_shielded_vm_no_secure_boot_eventlog"
KEYLIME_SB = "keylime/binary_bios_measurements-secureboot"
ARCH = "tpm2-tools/event-arch-linux.bin"
SB_CERT = "go-attestation/sb_cert_eventlog"
FEDORA = "tpm2-tools/event-sd-boot-fedora37.bin"
SHA256 = int(constants.TPM_ALG.SHA256)
DIGEST = "0" * 64


# --- helpers -------------------------------------------------------------------

def raw(name: str) -> bytes:
    return (EVENTLOG / name).read_bytes()


def quote_for(data: bytes, extra: dict | None = None,
              pcrs: range = range(16)) -> VerifiedQuote:
    """A verified-quote stand-in holding what a TPM that ran this boot
    would sign: replayed PCRs, reset values elsewhere."""
    replayed = el.replay_event_log(el.parse_event_log(data))
    banks = {}
    for alg, values in replayed.items():
        size = constants.HASH_ALGORITHMS[alg].digest_size
        banks[alg] = {p: values.get(p, bytes(size)) for p in pcrs}
    for alg, values in (extra or {}).items():
        banks.setdefault(alg, {}).update(values)
    return VerifiedQuote(None, None, 0, (), banks)


def verified(data: bytes, quote: VerifiedQuote) -> el.VerifiedEventLog:
    return el.verify_event_log(el.parse_event_log(data), quote.pcrs)


def evidence(name: str):
    data = raw(name)
    quote = quote_for(data)
    return data, quote, verified(data, quote)


def tamper(data: bytes, index: int, seed: bytes = b"evil") -> bytes:
    """Replace event ``index``'s digests by those of other content."""
    log = el.parse_event_log(data)
    event = log.events[index]
    out = bytearray(data)
    if not log.crypto_agile:
        offset = event.offset + 8
        out[offset:offset + 20] = hashlib.sha1(seed).digest()
        return bytes(out)
    offset = event.offset + 8
    (count,) = struct.unpack_from("<I", data, offset)
    offset += 4
    for _ in range(count):
        (alg,) = struct.unpack_from("<H", data, offset)
        size = log.digest_sizes[alg]
        offset += 2
        out[offset:offset + size] = hashlib.sha512(
            seed + bytes([alg & 0xff])).digest()[:size]
        offset += size
    return bytes(out)


def event_at(log: el.VerifiedEventLog, index: int) -> el.VerifiedEvent:
    (event,) = [e for e in log.events if e.index == index]
    return event


def captured(log, quote, **kw) -> pol.MeasuredBootPolicy:
    body = ap.capture_measured_boot_policy(log, quote, **kw)
    return pol.MeasuredBootPolicy.from_json(body, name="prod-boot",
                                            version=3)


def boot_policy(body: dict, version: int = 3) -> pol.MeasuredBootPolicy:
    return pol.MeasuredBootPolicy.from_json(body, name="prod-boot",
                                            version=version)


def appraise(quote, log, policy=None, **kw) -> ap.Appraisal:
    return ap.appraise(identity=True, quote=quote, event_log=log,
                       measured_boot_policy=policy, **kw)


def reasons_of(result: ap.Appraisal, label: str) -> list[str]:
    return [r for r in result.reasons if r.startswith(label + ":")]


# --- capture then appraise -----------------------------------------------------------

@pytest.mark.parametrize("name", [UBUNTU, KEYLIME_SB, ARCH, SB_CERT, FEDORA])
def test_captured_policy_passes_same_evidence(name):
    _, quote, log = evidence(name)
    result = appraise(quote, log, captured(log, quote))
    assert result.outcomes[Rung.PLATFORM_FIRMWARE] is Outcome.PASSED, \
        result.reasons
    assert result.outcomes[Rung.OS_BOOT] is Outcome.PASSED, result.reasons
    assert result.outcomes[Rung.RUNTIME] is Outcome.NOT_APPRAISED
    assert result.level is AssuranceLevel.OS_BOOT
    assert result.policy_versions == {"prod-boot": 3}
    # Only the missing runtime policy is explained.
    assert [r.split(":")[0] for r in result.reasons] == ["runtime"]


def test_capture_pins_what_it_documents():
    _, quote, log = evidence(KEYLIME_SB)
    body = ap.capture_measured_boot_policy(log, quote)
    fw, os_ = body["platform_firmware"], body["os_boot"]
    assert fw["crtm_versions"] == ["edk2-20240524-7.el9"]
    assert fw["secure_boot"]["required"] is True
    assert set(body["pcrs"]["sha256"]) == {"0", "2", "3", "7"}
    assert body["pcrs"]["sha256"]["0"] == quote.pcrs[SHA256][0].hex()
    kernel = event_at(log, 92)  # (hd0,gpt2)/vmlinuz-5.14.0-503...
    assert os_["kernels"] == {"sha256": [kernel.digests[SHA256].hex()]}
    assert len(os_["initrds"]["sha256"]) == 1
    assert os_["kernel_command_lines"][0].startswith(
        "(hd0,gpt2)/vmlinuz-5.14.0-503.11.1.el9_5.x86_64 root=")
    note = body["annotations"]["sha256:" + kernel.digests[SHA256].hex()]
    assert "vmlinuz-5.14.0" in note and "event 92" in note


def test_capture_json_round_trip():
    _, quote, log = evidence(UBUNTU)
    body = ap.capture_measured_boot_policy(log, quote)
    text = json.dumps(body)
    policy = pol.MeasuredBootPolicy.from_json(text, name="p", version=1)
    assert policy.to_json() == body
    again = pol.MeasuredBootPolicy.from_json(policy.to_json(), name="p",
                                             version=1)
    assert again == policy


def test_capture_without_pins_still_passes():
    _, quote, log = evidence(UBUNTU)
    policy = captured(log, quote, pin_pcrs=())
    assert not policy.pcrs
    assert appraise(quote, log, policy).level is AssuranceLevel.OS_BOOT


# --- tampered kernel -------------------------------------------------------------------

@pytest.mark.parametrize("name,index,path", [
    (UBUNTU, 95, "/boot/vmlinuz-5.11.0-1006-gcp"),
    (KEYLIME_SB, 92, "(hd0,gpt2)/vmlinuz-5.14.0-503.11.1.el9_5.x86_64"),
])
def test_tampered_kernel_fails_os_boot_naming_the_event(name, index, path):
    data, quote, log = evidence(name)
    policy = captured(log, quote)
    bad = tamper(data, index)
    bad_quote = quote_for(bad)
    bad_log = verified(bad, bad_quote)       # it replays: a real TPM
    result = appraise(bad_quote, bad_log, policy)
    assert result.outcomes[Rung.PLATFORM_FIRMWARE] is Outcome.PASSED
    assert result.outcomes[Rung.OS_BOOT] is Outcome.UNRECOGNIZED
    assert result.level is AssuranceLevel.PLATFORM_FIRMWARE
    new = event_at(bad_log, index)
    (reason,) = reasons_of(result, "OS boot")
    assert "PCR 9 event %d (EV_IPL, kernel '%s')" % (index, path) in reason
    assert "sha256 digest %s" % new.digests[SHA256].hex() in reason
    assert "policy 'prod-boot' v3" in reason
    assert "kernels" in reason


def test_operator_accepts_new_kernel_in_next_version():
    data, quote, log = evidence(UBUNTU)
    body = ap.capture_measured_boot_policy(log, quote)
    bad = tamper(data, 95)
    bad_quote = quote_for(bad)
    bad_log = verified(bad, bad_quote)
    assert appraise(bad_quote, bad_log, boot_policy(body)).level \
        is AssuranceLevel.PLATFORM_FIRMWARE
    new_kernel = event_at(bad_log, 95)
    body = copy.deepcopy(body)
    body["os_boot"]["kernels"]["sha256"].append(
        new_kernel.digests[SHA256].hex())
    result = appraise(bad_quote, bad_log, boot_policy(body, version=4))
    assert result.level is AssuranceLevel.OS_BOOT
    assert result.policy_versions == {"prod-boot": 4}


def test_kernel_digest_changed_in_policy_fails():
    _, quote, log = evidence(UBUNTU)
    body = ap.capture_measured_boot_policy(log, quote)
    body["os_boot"]["kernels"]["sha256"] = [DIGEST]
    result = appraise(quote, log, boot_policy(body))
    assert result.outcomes[Rung.OS_BOOT] is Outcome.UNRECOGNIZED
    (reason,) = reasons_of(result, "OS boot")
    assert "PCR 9 event 95" in reason and "vmlinuz-5.11.0-1006-gcp" in reason


def test_relabelled_kernel_is_still_checked():
    """The path is not bound: a kernel logged as 'grub.cfg' is still a PCR 9
    file, so it must be allowed by some list."""
    _, quote, log = evidence(UBUNTU)
    body = ap.capture_measured_boot_policy(log, quote)
    body["os_boot"].pop("boot_files")
    result = appraise(quote, log, boot_policy(body))
    assert result.outcomes[Rung.OS_BOOT] is Outcome.UNRECOGNIZED
    assert any("grub.cfg" in r and "boot file" in r
               for r in result.reasons)


def test_tampered_boot_loader_names_the_image():
    data, quote, log = evidence(UBUNTU)
    policy = captured(log, quote)
    bad = tamper(data, 27)  # \EFI\ubuntu\grubx64.efi on PCR 4
    bad_quote = quote_for(bad)
    result = appraise(bad_quote, verified(bad, bad_quote), policy)
    assert result.outcomes[Rung.OS_BOOT] is Outcome.UNRECOGNIZED
    (reason,) = reasons_of(result, "OS boot")
    assert "PCR 4 event 27 (EV_EFI_BOOT_SERVICES_APPLICATION" in reason
    assert "grubx64.efi" in reason and "boot_loaders" in reason


def test_tampered_firmware_blob_fails_platform_rung():
    data, quote, log = evidence(KEYLIME_SB)
    policy = captured(log, quote, pin_pcrs=())
    bad = tamper(data, 3)
    bad_quote = quote_for(bad)
    result = appraise(bad_quote, verified(bad, bad_quote), policy)
    assert result.outcomes[Rung.PLATFORM_FIRMWARE] is Outcome.UNRECOGNIZED
    assert result.level is AssuranceLevel.IDENTITY
    assert any("PCR 0 event 3 (EV_EFI_PLATFORM_FIRMWARE_BLOB" in r
               for r in result.reasons)


def test_pinned_pcr_mismatch_names_pcr_and_events():
    _, quote, log = evidence(KEYLIME_SB)
    body = {"kind": "measured_boot", "pcrs": {"sha256": {"0": DIGEST}}}
    result = appraise(quote, log, boot_policy(body))
    assert result.outcomes[Rung.PLATFORM_FIRMWARE] is Outcome.UNRECOGNIZED
    (reason,) = reasons_of(result, "platform firmware")
    assert reason.startswith("platform firmware: PCR 0 (sha256) is %s"
                             % quote.pcrs[SHA256][0].hex())
    assert "expects " + DIGEST in reason and "event(s) 1, 2, 3" in reason


# --- secure boot ------------------------------------------------------------------

def test_secure_boot_required_but_off_is_contraindicated():
    _, quote, log = evidence(UBUNTU)
    body = ap.capture_measured_boot_policy(log, quote)
    assert body["platform_firmware"]["secure_boot"]["required"] is False
    body["platform_firmware"]["secure_boot"]["required"] = True
    result = appraise(quote, log, boot_policy(body))
    assert result.outcomes[Rung.PLATFORM_FIRMWARE] is \
        Outcome.CONTRAINDICATED
    assert result.configuration is Outcome.CONTRAINDICATED
    (reason,) = reasons_of(result, "platform firmware")
    assert "EV_EFI_VARIABLE_DRIVER_CONFIG, SecureBoot): secure boot is " \
        "off" in reason
    assert Claim.CONFIGURATION in result.vector.contraindicated()
    verdict = ap.make_verdict("h1", result, DIGEST, 1000, 90,
                              min_level_for_trusted=AssuranceLevel.IDENTITY)
    assert verdict.status is Status.UNTRUSTED


def test_unlisted_db_certificate_is_named():
    _, quote, log = evidence(KEYLIME_SB)
    body = ap.capture_measured_boot_policy(log, quote)
    sb = body["platform_firmware"]["secure_boot"]
    dropped = [d for d in sb["db"] if d.startswith("x509:076f")]
    sb["db"] = [d for d in sb["db"] if d not in dropped]
    result = appraise(quote, log, boot_policy(body))
    assert result.outcomes[Rung.PLATFORM_FIRMWARE] is Outcome.UNRECOGNIZED
    (reason,) = reasons_of(result, "platform firmware")
    assert dropped[0] in reason and "Windows UEFI CA 2023" in reason


def test_missing_dbx_revocation_is_vulnerable():
    _, quote, log = evidence(KEYLIME_SB)
    body = ap.capture_measured_boot_policy(log, quote, pin_pcrs=())
    body["platform_firmware"]["secure_boot"]["dbx_contains"].append(
        "sha256:" + "ab" * 32)
    result = appraise(quote, log, boot_policy(body))
    assert result.outcomes[Rung.PLATFORM_FIRMWARE] is Outcome.VULNERABLE
    assert any("dbx lacks 1 revocation" in r for r in result.reasons)


# --- command lines ----------------------------------------------------------------

def test_unlisted_command_line_is_named():
    _, quote, log = evidence(UBUNTU)
    body = ap.capture_measured_boot_policy(log, quote)
    body["os_boot"]["kernel_command_lines"] = ["ro quiet"]
    result = appraise(quote, log, boot_policy(body))
    assert result.outcomes[Rung.OS_BOOT] is Outcome.UNRECOGNIZED
    assert result.configuration is Outcome.UNRECOGNIZED
    (reason,) = reasons_of(result, "OS boot")
    assert "PCR 8 event" in reason and "panic=-1" in reason


def test_allow_any_command_line_is_a_waiver_not_a_check():
    _, quote, log = evidence(UBUNTU)
    body = ap.capture_measured_boot_policy(log, quote)
    del body["os_boot"]["kernel_command_lines"]
    del body["os_boot"]["boot_loader_commands"]
    body["os_boot"]["allow_any_kernel_command_line"] = True
    assert appraise(quote, log, boot_policy(body)).level \
        is AssuranceLevel.OS_BOOT
    only_waiver = {"kind": "measured_boot", "pcrs": {"sha256": {
        "0": quote.pcrs[SHA256][0].hex()}},
        "os_boot": {"allow_any_kernel_command_line": True}}
    result = appraise(quote, log, boot_policy(only_waiver))
    assert result.outcomes[Rung.OS_BOOT] is Outcome.NOT_APPRAISED
    assert any("has no rule for this rung" in r for r in result.reasons)


# --- fail closed ---------------------------------------------------------------------

def test_rung_without_rule_is_not_appraised():
    _, quote, log = evidence(UBUNTU)
    body = {"kind": "measured_boot", "pcrs": {"sha256": {
        "0": quote.pcrs[SHA256][0].hex()}}}
    result = appraise(quote, log, boot_policy(body))
    assert result.outcomes[Rung.PLATFORM_FIRMWARE] is Outcome.PASSED
    assert result.outcomes[Rung.OS_BOOT] is Outcome.NOT_APPRAISED
    assert result.level is AssuranceLevel.PLATFORM_FIRMWARE
    (reason,) = reasons_of(result, "OS boot")
    assert "policy 'prod-boot' v3 has no rule for this rung" in reason


def test_no_event_log_is_not_appraised():
    _, quote, log = evidence(UBUNTU)
    result = appraise(quote, None, captured(log, quote, pin_pcrs=()))
    assert result.outcomes[Rung.PLATFORM_FIRMWARE] is Outcome.NOT_APPRAISED
    assert result.outcomes[Rung.OS_BOOT] is Outcome.NOT_APPRAISED
    assert result.level is AssuranceLevel.IDENTITY
    assert any("no verified event log" in r for r in result.reasons)


def test_no_quote_is_level_zero():
    _, quote, log = evidence(UBUNTU)
    result = appraise(None, None, captured(log, quote))
    assert set(result.outcomes.values()) == {Outcome.NOT_APPRAISED}
    assert result.level is AssuranceLevel.NONE
    assert any("no fresh quote" in r for r in result.reasons)


def test_unquoted_pcr_leaves_its_rules_unappraised():
    data, full_quote, full_log = evidence(UBUNTU)
    policy = captured(full_log, full_quote)
    quote = quote_for(data, pcrs=range(9))  # PCR 9 not quoted
    log = verified(data, quote)
    result = appraise(quote, log, policy)
    assert result.outcomes[Rung.PLATFORM_FIRMWARE] is Outcome.PASSED
    assert result.outcomes[Rung.OS_BOOT] is Outcome.NOT_APPRAISED
    assert any("needs PCR(s) 9" in r for r in result.reasons)
    assert 9 in policy.required_pcrs() and 12 in policy.required_pcrs()


def test_policy_bank_missing_from_evidence_is_not_appraised():
    _, quote, log = evidence(KEYLIME_SB)  # SHA-256 only
    body = {"kind": "measured_boot", "os_boot": {
        "boot_loaders": {"sha1": ["00" * 20]}}}
    result = appraise(quote, log, boot_policy(body))
    assert result.outcomes[Rung.OS_BOOT] is Outcome.NOT_APPRAISED
    assert any("lists sha1 digests only" in r for r in result.reasons)


def test_identity_not_enrolled_is_level_zero():
    _, quote, log = evidence(UBUNTU)
    result = ap.appraise(identity=False, quote=quote, event_log=log,
                         measured_boot_policy=captured(log, quote))
    assert result.outcomes[Rung.IDENTITY] is Outcome.UNRECOGNIZED
    assert result.outcomes[Rung.OS_BOOT] is Outcome.PASSED
    assert result.level is AssuranceLevel.NONE


def test_replay_mismatch_is_crypto_failed_on_its_rung():
    data, quote, log = evidence(UBUNTU)
    bad = tamper(data, 95)
    with pytest.raises(exception.ReplayMismatch) as info:
        verified(bad, quote)  # the log lies about the quoted PCR 9
    result = appraise(quote, None, captured(log, quote),
                      event_log_error=info.value)
    assert result.outcomes[Rung.OS_BOOT] is Outcome.CRYPTO_FAILED
    assert result.outcomes[Rung.PLATFORM_FIRMWARE] is Outcome.NOT_APPRAISED
    assert any("PCR(s) [9]" in r for r in result.reasons)


def test_malformed_log_and_quote_errors():
    _, quote, log = evidence(UBUNTU)
    with pytest.raises(exception.MalformedEvidence) as info:
        el.parse_event_log(raw("keylime/binary_bios_measurements-bogus"))
    result = appraise(quote, None, captured(log, quote),
                      event_log_error=info.value)
    assert result.outcomes[Rung.PLATFORM_FIRMWARE] is Outcome.MALFORMED
    result = ap.appraise(identity=True, quote=None,
                         quote_error=exception.NonceMismatch())
    assert result.outcomes[Rung.IDENTITY] is Outcome.CRYPTO_FAILED
    assert result.level is AssuranceLevel.NONE
    with pytest.raises(exception.InvalidParameterValue):
        ap.appraise(identity=True, quote=quote,
                    quote_error=exception.NonceMismatch())


def test_wrong_argument_types_are_rejected():
    _, quote, log = evidence(UBUNTU)
    with pytest.raises(exception.InvalidParameterValue):
        ap.appraise(identity=True, quote=quote.pcrs)
    with pytest.raises(exception.InvalidParameterValue):
        ap.appraise(identity=True, quote=quote, event_log=log,
                    measured_boot_policy=ap.capture_measured_boot_policy(
                        log, quote))


# --- runtime (IMA) -------------------------------------------------------------------

# How to read each keylime list: its template hashes are SHA-1 except in
# the SM3 one; the "unknown" list's recorded template hashes match no
# algorithm (keylime edited the digest by hand), so they are not checked.
IMA_OPTIONS = {"ima-log-sm3_256": {"template_hash_alg": 0x0012},
               "ima-log-unknown": {"template_hash_alg": 0x0012,
                                   "check_template_hashes": False}}


def ima_quote(data: bytes, base: VerifiedQuote | None = None,
              **options) -> VerifiedQuote:
    options.pop("check_template_hashes", None)
    state = ima.replay_ima(ima.parse_ima_log(data, **options), [SHA256])
    pcrs = {alg: dict(values) for alg, values in
            (base.pcrs.items() if base else [])}
    pcrs.setdefault(SHA256, {})[10] = state.pcrs[SHA256]
    return VerifiedQuote(None, None, 0, (), pcrs)


def ima_verified(data: bytes, quote: VerifiedQuote,
                 start: ima.ReplayState | None = None, **options
                 ) -> ima.VerifiedIMALog:
    return ima.verify_ima_log(data, {SHA256: quote.pcrs[SHA256][10]}, start,
                              **options)


def retemplate(line: bytes, digest_hex: str) -> bytes:
    """An ima-ng line with another file digest and its true template hash
    (what the kernel of a host running a changed file writes)."""
    pcr, _, template, text = line.split(b" ", 3)
    alg_digest, path = text.split(b" ", 1)
    alg = alg_digest.split(b":")[0]
    fields = [alg + b":\0" + bytes.fromhex(digest_hex), path + b"\0"]
    return ima_gen.ascii_line(int(pcr), template.decode(), fields)


def runtime(data: bytes, quote: VerifiedQuote, options=None, **overrides
            ) -> pol.RuntimePolicy:
    body = ap.capture_runtime_policy(
        ima_verified(data, quote, **(options or {})), quote)
    body.update(overrides)
    return pol.RuntimePolicy.from_json(body, name="prod-ima", version=7)


def appraise_ima(quote, ima_log, policy, **kw) -> ap.Appraisal:
    return ap.appraise(identity=True, quote=quote, ima_log=ima_log,
                       runtime_policy=policy, **kw)


@pytest.mark.parametrize("name", ["ima-log-sha1", "ima-log-sha256",
                                  "ima-log-sha384", "ima-log-sha512",
                                  "ima-log-sm3_256", "ima-log-unknown"])
def test_runtime_capture_passes_same_log(name):
    data = (IMA_DIR / name).read_bytes()
    options = IMA_OPTIONS.get(name, {})
    quote = ima_quote(data, **options)
    policy = runtime(data, quote, options)
    assert "/data" in policy.digests
    result = appraise_ima(quote, ima_verified(data, quote, **options),
                          policy)
    assert result.outcomes[Rung.RUNTIME] is Outcome.PASSED, result.reasons
    # The ladder needs the boot rungs under it.
    assert result.level is AssuranceLevel.IDENTITY
    assert result.policy_versions == {"prod-ima": 7}


def test_runtime_tampered_file_is_named():
    data = (IMA_DIR / "ima-log-sha256").read_bytes()
    quote = ima_quote(data)
    policy = runtime(data, quote)
    lines = data.splitlines(keepends=True)
    evil = "11" * 32
    bad = lines[0] + retemplate(lines[1].rstrip(b"\n"), evil)
    bad_quote = ima_quote(bad)
    result = appraise_ima(bad_quote, ima_verified(bad, bad_quote), policy)
    assert result.outcomes[Rung.RUNTIME] is Outcome.UNRECOGNIZED
    (reason,) = reasons_of(result, "runtime")
    assert reason == ("runtime: IMA line 2: /data has sha256:%s, not a "
                      "digest policy 'prod-ima' v7 allows for it" % evil)
    excluded = runtime(data, quote, excludes=["/d*"])
    assert appraise_ima(bad_quote, ima_verified(bad, bad_quote),
                        excluded).outcomes[Rung.RUNTIME] is Outcome.PASSED


def test_runtime_unknown_file_and_allow_unknown():
    data = (IMA_DIR / "ima-log-sha256").read_bytes()
    quote = ima_quote(data)
    policy = runtime(data, quote, digests={"/other": ["sha256:" + DIGEST]})
    result = appraise_ima(quote, ima_verified(data, quote), policy)
    assert result.outcomes[Rung.RUNTIME] is Outcome.UNRECOGNIZED
    assert "IMA line 2: /data (sha256:96d7fae8" in result.reasons[-1]
    lenient = runtime(data, quote, digests={}, allow_unknown=True)
    assert appraise_ima(quote, ima_verified(data, quote), lenient
                        ).outcomes[Rung.RUNTIME] is Outcome.PASSED


def boot_aggregate_log(boot_quote: VerifiedQuote, files: int = 5) -> bytes:
    """An IMA log whose boot_aggregate is SHA-256 over quoted PCRs 0-9,
    computed here independently of the product."""
    value = hashlib.sha256(b"".join(boot_quote.pcrs[SHA256][p]
                                    for p in range(10))).digest()
    lines = [ima_gen.ascii_line(10, "ima-ng", [b"sha256:\0" + value,
                                               b"boot_aggregate\0"])]
    body = ima_gen.generate_ascii_log(files + 1, seed=3)
    return lines[0] + b"".join(body.splitlines(keepends=True)[1:])


def test_full_ladder_with_boot_aggregate():
    _, boot_quote, log = evidence(UBUNTU)
    ima_data = boot_aggregate_log(boot_quote)
    quote = ima_quote(ima_data, boot_quote)
    ima_log = ima_verified(ima_data, quote)
    body = ap.capture_runtime_policy(ima_log, quote)
    assert body["require_boot_aggregate"] is True
    policy = pol.RuntimePolicy.from_json(body, name="prod-ima", version=1)
    result = ap.appraise(identity=True, quote=quote, event_log=log,
                         ima_log=ima_log,
                         measured_boot_policy=captured(log, boot_quote),
                         runtime_policy=policy)
    assert result.level is AssuranceLevel.RUNTIME, result.reasons
    assert result.reasons == ()
    verdict = ap.make_verdict("h1", result, DIGEST, 1000, 90)
    assert verdict.status is Status.TRUSTED
    assert verdict.policy_versions == {"prod-boot": 3, "prod-ima": 1}
    # Another boot's PCRs: the runtime log is not from this boot.
    _, other_quote, _ = evidence(KEYLIME_SB)
    other = ima_quote(ima_data, other_quote)
    mismatch = appraise_ima(other, ima_verified(ima_data, other), policy)
    assert mismatch.outcomes[Rung.RUNTIME] is Outcome.CONTRAINDICATED
    assert any("not from this boot" in r for r in mismatch.reasons)


def test_zero_boot_aggregate_fails_when_required():
    data = (IMA_DIR / "ima-log-sha384").read_bytes()
    quote = ima_quote(data)
    body = ap.capture_runtime_policy(ima_verified(data, quote), quote)
    assert body["require_boot_aggregate"] is False
    policy = runtime(data, quote, require_boot_aggregate=True)
    result = appraise_ima(quote, ima_verified(data, quote), policy)
    assert result.outcomes[Rung.RUNTIME] is Outcome.UNRECOGNIZED
    assert any("boot_aggregate is zero" in r for r in result.reasons)


def test_incremental_round_needs_prior_outcome():
    data = ima_gen.generate_ascii_log(30, seed=5)
    quote_all = ima_quote(data)
    policy = runtime(data, quote_all, require_boot_aggregate=False)
    first = b"".join(data.splitlines(keepends=True)[:10])
    start = ima_verified(first, ima_quote(first)).state
    tail = ima_verified(data, quote_all, start)
    assert tail.start.entries == 10 and tail.covered == 20
    result = appraise_ima(quote_all, tail, policy)
    assert result.outcomes[Rung.RUNTIME] is Outcome.NOT_APPRAISED
    assert appraise_ima(quote_all, tail, policy, ima_prior=Outcome.PASSED
                        ).outcomes[Rung.RUNTIME] is Outcome.PASSED
    sticky = appraise_ima(quote_all, tail, policy,
                          ima_prior=Outcome.UNRECOGNIZED)
    assert sticky.outcomes[Rung.RUNTIME] is Outcome.UNRECOGNIZED


def test_violations_fail_unless_allowed():
    data = ima_gen.generate_ascii_log(20, seed=9, violation_every=7)
    quote = ima_quote(data)
    body = ap.capture_runtime_policy(ima_verified(data, quote), quote)
    assert body["allow_violations"] is True
    body["allow_violations"] = False
    policy = pol.RuntimePolicy.from_json(body, name="p", version=1)
    result = appraise_ima(quote, ima_verified(data, quote), policy)
    assert result.outcomes[Rung.RUNTIME] is Outcome.UNRECOGNIZED
    assert any("IMA line 8: measurement violation" in r
               for r in result.reasons)


def test_ima_error_is_reported():
    result = ap.appraise(
        identity=True, quote=VerifiedQuote(None, None, 0, (), {}),
        runtime_policy=pol.RuntimePolicy.from_json(
            {"kind": "ima", "digests": {}}, name="p", version=1),
        ima_error=exception.IMAEntryInvalid(line=4, reason="altered"))
    assert result.outcomes[Rung.RUNTIME] is Outcome.MALFORMED
    assert any("IMA log line 4 is invalid" in r for r in result.reasons)


def test_reasons_are_bounded_and_clean():
    data = ima_gen.generate_ascii_log(200, seed=2)
    quote = ima_quote(data)
    policy = pol.RuntimePolicy.from_json(
        {"kind": "ima", "digests": {}, "require_boot_aggregate": False},
        name="p", version=1)
    result = appraise_ima(quote, ima_verified(data, quote), policy)
    runtime_reasons = reasons_of(result, "runtime")
    assert len(runtime_reasons) == ap.MAX_REASONS_PER_RUNG + 1
    assert runtime_reasons[-1].endswith("183 more findings not listed")
    assert all(r.isprintable() for r in result.reasons)


def test_fact_cache_never_changes_the_result():
    data, quote, log = evidence(KEYLIME_SB)
    policy = captured(log, quote)
    bad = tamper(data, 92)
    bad_quote = quote_for(bad)
    bad_log = verified(bad, bad_quote)
    ap.clear_cache()
    cold = [appraise(q, lg, policy) for q, lg in ((quote, log),
                                                   (bad_quote, bad_log))]
    warm = [appraise(q, lg, policy) for q, lg in ((quote, log),
                                                   (bad_quote, bad_log))]
    assert cold == warm
    assert cold[0].level is AssuranceLevel.OS_BOOT
    assert cold[1].level is AssuranceLevel.PLATFORM_FIRMWARE
