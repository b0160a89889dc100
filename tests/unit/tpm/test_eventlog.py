"""Event log parsing, replay, verification and decoding against real logs.

The reference PCR values are the ``pcrs:`` blocks of the ``*.expected.yaml``
files beside each log (see tests/data/SOURCES.md).
"""

from __future__ import annotations

import base64
import hashlib
import json
import pathlib
import struct

import pytest
import yaml

from trusted_pools import exception
from trusted_pools.tpm import constants, eventlog, eventlog_decode
from trusted_pools.tpm.constants import TPM_ALG
from trusted_pools.tpm.eventlog import EventType

DATA = pathlib.Path(__file__).resolve().parents[2] / "data"
EVENTLOG_DIR = DATA / "eventlog"
WINDOWS_JSON = DATA / "quote" / "go-attestation" / \
    "windows_gcp_shielded_vm.json"


# --- helpers shared with test_eventlog_properties ----------------------------

def _log_path_for(expected: pathlib.Path) -> pathlib.Path:
    base = expected.with_name(expected.name[:-len(".expected.yaml")])
    return base if base.exists() else base.with_name(base.name + ".bin")


EXPECTED_FILES = sorted(EVENTLOG_DIR.glob("**/*.expected.yaml"))


def read_log(path: pathlib.Path) -> bytes:
    raw = path.read_bytes()
    return base64.b64decode(raw) if path.name.endswith(".b64") else raw


def expected_pcrs(expected: pathlib.Path) -> dict[int, dict[int, bytes]]:
    """The yaml ``pcrs:`` block as TPM_ALG_ID -> PCR -> bytes."""
    doc = yaml.safe_load(expected.read_text()) or {}
    result = {}
    for bank, values in (doc.get("pcrs") or {}).items():
        alg = constants.hash_by_name(bank)
        result[alg.alg] = {int(pcr): int(value).to_bytes(alg.digest_size,
                                                          "big")
                           for pcr, value in values.items()}
    return result


def load(name: str) -> tuple[bytes, dict[int, dict[int, bytes]]]:
    """Log bytes and expected PCRs for e.g. 'keylime/mb_log.b64'."""
    expected = EVENTLOG_DIR / (name.removesuffix(".bin") + ".expected.yaml")
    return read_log(_log_path_for(expected)), expected_pcrs(expected)


def verified(name: str) -> eventlog.VerifiedEventLog:
    data, pcrs = load(name)
    return eventlog.verify_event_log(eventlog.parse_event_log(data), pcrs)


def windows_log() -> tuple[bytes, dict[int, dict[int, bytes]]]:
    doc = json.loads(WINDOWS_JSON.read_text())
    go_to_tpm = {3: TPM_ALG.SHA1, 4: TPM_ALG.SHA256}
    pcrs: dict[int, dict[int, bytes]] = {}
    for entry in doc["Log"]["PCRs"]:
        pcrs.setdefault(go_to_tpm[entry["DigestAlg"]], {})[entry["Index"]] = \
            base64.b64decode(entry["Digest"])
    return base64.b64decode(doc["Log"]["Raw"]), pcrs


# --- synthetic log builders --------------------------------------------------

def sha1_event(pcr: int, event_type: int, data: bytes,
               digest: bytes | None = None) -> bytes:
    digest = hashlib.sha1(data).digest() if digest is None else digest
    return struct.pack("<II", pcr, event_type) + digest + \
        struct.pack("<I", len(data)) + data


def spec_id_header(algs: list[tuple[int, int]], vendor: bytes = b"",
                   size_delta: int = 0) -> bytes:
    body = (eventlog.SPEC_ID_SIGNATURE + struct.pack("<IBBBBI", 0, 0, 2, 0, 2,
                                                     len(algs))
            + b"".join(struct.pack("<HH", a, s) for a, s in algs)
            + bytes([len(vendor)]) + vendor)
    header = struct.pack("<II", 0, EventType.EV_NO_ACTION) + bytes(20)
    return header + struct.pack("<I", len(body) + size_delta) + body


def event2(pcr: int, event_type: int, data: bytes,
           digests: list[tuple[int, bytes]]) -> bytes:
    out = struct.pack("<III", pcr, event_type, len(digests))
    for alg, digest in digests:
        out += struct.pack("<H", alg) + digest
    return out + struct.pack("<I", len(data)) + data


def sha256_event2(pcr: int, event_type: int, data: bytes) -> bytes:
    return event2(pcr, event_type, data,
                  [(TPM_ALG.SHA256, hashlib.sha256(data).digest())])


def extend(value: bytes, *digests: bytes, new=hashlib.sha256) -> bytes:
    for digest in digests:
        value = new(value + digest).digest()
    return value


# --- replay equals the reference values --------------------------------------

@pytest.mark.parametrize("expected", EXPECTED_FILES,
                         ids=lambda p: str(p.relative_to(EVENTLOG_DIR)))
def test_replay_matches_reference_pcrs(expected):
    log = eventlog.parse_event_log(read_log(_log_path_for(expected)))
    replayed = eventlog.replay_event_log(log)
    non_empty = {alg: pcrs for alg, pcrs in replayed.items() if pcrs}
    assert non_empty == expected_pcrs(expected)


@pytest.mark.parametrize(
    "expected",
    [p for p in EXPECTED_FILES if expected_pcrs(p)],
    ids=lambda p: str(p.relative_to(EVENTLOG_DIR)))
def test_verify_accepts_reference_pcrs_and_checks_them_all(expected):
    pcrs = expected_pcrs(expected)
    log = eventlog.parse_event_log(read_log(_log_path_for(expected)))
    result = eventlog.verify_event_log(log, pcrs)
    assert {a: set(p) for a, p in result.checked_pcrs.items()} == \
        {a: set(p) for a, p in pcrs.items()}
    assert result.quirks_applied == ()
    extended = [e for e in log.events if e.is_extended]
    assert [e.index for e in result.events] == [e.index for e in extended]
    assert not any(e.event_type == EventType.EV_NO_ACTION
                   for e in result.events)


def test_windows_gcp_log_replays_to_its_quoted_pcrs():
    raw, pcrs = windows_log()
    log = eventlog.parse_event_log(raw)
    assert not log.crypto_agile
    replayed = eventlog.replay_event_log(log)[TPM_ALG.SHA1]
    assert replayed  # the log does extend PCRs
    for pcr, value in replayed.items():
        assert pcrs[TPM_ALG.SHA1][pcr] == value
    result = eventlog.verify_event_log(log, pcrs)
    # PCRs the log never extends hold reset values (0 or all ones), so
    # every quoted PCR is accounted for.
    assert set(result.checked_pcrs[TPM_ALG.SHA1]) == set(range(24))
    assert result.unaccounted_pcrs == {}
    summary = result.summary()
    assert summary.secure_boot is True
    assert summary.boot_applications[0].device_path.endswith(
        "\\EFI\\Microsoft\\Boot\\bootmgfw.efi")


# --- the caveats of SOURCES.md -----------------------------------------------

def test_short_no_action_log_parses_and_extends_nothing():
    data, pcrs = load("go-attestation/short_no_action_eventlog")
    log = eventlog.parse_event_log(data)
    assert pcrs == {}
    assert [e.event_type for e in log.events] == [EventType.EV_NO_ACTION]
    assert all(not p for p in eventlog.replay_event_log(log).values())
    # Nothing to compare is never "verified"...
    with pytest.raises(exception.EventLogUnverifiable):
        eventlog.verify_event_log(
            log, {TPM_ALG.SHA1: {0: bytes(19) + b"\x03"}})
    # ...and its StartupLocality 3 means PCR 0 cannot be all zeros.
    with pytest.raises(exception.ReplayMismatch):
        eventlog.verify_event_log(log, {TPM_ALG.SHA1: {0: bytes(20)}})


def test_startup_locality_3_sets_pcr0_start():
    data, pcrs = load("keylime/binary_bios_measurements")
    log = eventlog.parse_event_log(data)
    result = eventlog.verify_event_log(log, pcrs)
    assert result.startup_locality == 3
    # Replaying PCR 0 from zero instead gives a different value.
    pcr0 = [e.digests[TPM_ALG.SHA256] for e in log.events
            if e.pcr == 0 and e.is_extended]
    assert extend(bytes(32), *pcr0) != pcrs[TPM_ALG.SHA256][0]
    assert extend(bytes(31) + b"\x03", *pcr0) == pcrs[TPM_ALG.SHA256][0]


def test_startup_locality_after_pcr0_extend_is_malformed():
    log_bytes = (sha1_event(0, EventType.EV_POST_CODE, b"x")
                 + sha1_event(0, EventType.EV_NO_ACTION,
                              eventlog.STARTUP_LOCALITY_SIGNATURE + b"\x03",
                              bytes(20)))
    log = eventlog.parse_event_log(log_bytes)
    with pytest.raises(exception.MalformedEvidence, match="StartupLocality"):
        eventlog.replay_event_log(log)


def test_option_rom_log_no_action_on_pcr_ffffffff_is_skipped():
    data, pcrs = load("go-attestation/option_rom_eventlog")
    log = eventlog.parse_event_log(data)
    odd = [e for e in log.events if e.pcr == 0xFFFFFFFF]
    assert odd and all(e.event_type == EventType.EV_NO_ACTION for e in odd)
    result = eventlog.verify_event_log(log, pcrs)
    assert not any(e.pcr == 0xFFFFFFFF for e in result.events)


def test_measured_event_on_pcr_above_23_is_skipped_and_recorded():
    log_bytes = (sha1_event(4, EventType.EV_SEPARATOR, bytes(4))
                 + sha1_event(0xFFFFFFFF, EventType.EV_EFI_ACTION, b"odd")
                 + sha1_event(24, EventType.EV_EFI_ACTION, b"odd"))
    log = eventlog.parse_event_log(log_bytes)
    assert [e.pcr for e in log.skipped_events] == [0xFFFFFFFF, 24]
    pcr4 = extend(bytes(20), hashlib.sha1(bytes(4)).digest(),
                  new=hashlib.sha1)
    assert eventlog.replay_event_log(log) == {TPM_ALG.SHA1: {4: pcr4}}
    result = eventlog.verify_event_log(log, {TPM_ALG.SHA1: {4: pcr4}})
    assert [e.pcr for e in result.skipped_events] == [0xFFFFFFFF, 24]
    assert [e.pcr for e in result.events] == [4]


def test_specid_vendordata_is_rejected_because_its_size_is_wrong():
    """The header declares 4 vendor bytes but its event size excludes
    them: rejected (see eventlog._parse_spec_id for why)."""
    data = (EVENTLOG_DIR / "tpm2-tools" / "specid-vendordata.bin").read_bytes()
    with pytest.raises(exception.TruncatedEvidence, match="Spec ID"):
        eventlog.parse_event_log(data)
    # The same header with the size corrected parses, vendor info and all:
    # only the inconsistency is rejected.
    size = struct.unpack_from("<I", data, 28)[0]
    fixed = data[:28] + struct.pack("<I", size + 4) + data[32:]
    log = eventlog.parse_event_log(fixed)
    assert log.crypto_agile and log.spec_id.vendor_info == \
        bytes.fromhex("deadbeef")
    assert log.spec_id.digest_sizes == {TPM_ALG.SHA1: 20, TPM_ALG.SHA256: 32}


def test_bogus_log_is_a_typed_error():
    data = (EVENTLOG_DIR / "keylime" / "binary_bios_measurements-bogus"
            ).read_bytes()
    with pytest.raises(exception.MalformedEvidence):
        eventlog.parse_event_log(data)


def test_size_limit_and_empty_input():
    data, _ = load("keylime/binary_bios_measurements")
    with pytest.raises(exception.EvidenceTooLarge):
        eventlog.parse_event_log(data, max_size=len(data) - 1)
    with pytest.raises(exception.MalformedEvidence):
        eventlog.parse_event_log(b"")
    with pytest.raises(TypeError):
        eventlog.parse_event_log("not bytes")  # type: ignore[arg-type]


# --- crypto-agile structure --------------------------------------------------

def test_unknown_spec_id_algorithm_is_skipped_by_its_declared_size():
    unknown = 0x0099
    data = b"kernel"
    log_bytes = (spec_id_header([(unknown, 40), (TPM_ALG.SHA256, 32)])
                 + event2(8, EventType.EV_IPL, data,
                          [(unknown, b"\xaa" * 40),
                           (TPM_ALG.SHA256, hashlib.sha256(data).digest())]))
    log = eventlog.parse_event_log(log_bytes)
    assert log.events[1].digests[unknown] == b"\xaa" * 40
    pcr8 = extend(bytes(32), hashlib.sha256(data).digest())
    assert eventlog.replay_event_log(log) == {TPM_ALG.SHA256: {8: pcr8}}
    result = eventlog.verify_event_log(log, {TPM_ALG.SHA256: {8: pcr8},
                                             unknown: {8: b"\x00" * 40}})
    assert result.checked_pcrs == {TPM_ALG.SHA256: (8,)}
    assert result.events[0].data_verified


@pytest.mark.parametrize("digests,reason", [
    ([(TPM_ALG.SHA384, bytes(48))], "does not declare"),
    ([(TPM_ALG.SHA256, bytes(32)), (TPM_ALG.SHA256, bytes(32))], "two"),
])
def test_event2_digest_list_must_match_the_header(digests, reason):
    log_bytes = (spec_id_header([(TPM_ALG.SHA1, 20), (TPM_ALG.SHA256, 32)])
                 + event2(0, EventType.EV_POST_CODE, b"x", digests))
    with pytest.raises(exception.MalformedEvidence, match=reason):
        eventlog.parse_event_log(log_bytes)


@pytest.mark.parametrize("algs", [
    [(TPM_ALG.SHA256, 20)],                      # wrong size, known alg
    [(TPM_ALG.SHA256, 32), (TPM_ALG.SHA256, 32)],  # declared twice
    [(0x0099, 0)],                               # zero size
    [],                                          # no algorithm at all
])
def test_bad_spec_id_headers_are_rejected(algs):
    with pytest.raises(exception.MalformedEvidence):
        eventlog.parse_event_log(spec_id_header(algs))


def test_bank_with_a_missing_digest_is_never_checked():
    data = b"x"
    log_bytes = (spec_id_header([(TPM_ALG.SHA1, 20), (TPM_ALG.SHA256, 32)])
                 + event2(0, EventType.EV_POST_CODE, data,
                          [(TPM_ALG.SHA256, hashlib.sha256(data).digest())]))
    log = eventlog.parse_event_log(log_bytes)
    assert set(eventlog.replay_event_log(log)) == {TPM_ALG.SHA256}
    with pytest.raises(exception.EventLogUnverifiable):
        eventlog.verify_event_log(log, {TPM_ALG.SHA1: {0: bytes(20)}})


# --- verification failures ---------------------------------------------------

def _tamper_digest(data: bytes, log: eventlog.EventLog,
                   event: eventlog.Event, alg: int) -> bytes:
    """Flip the first byte of ``event``'s ``alg`` digest in the raw log."""
    digest = event.digests[alg]
    start = data.index(digest, event.offset)
    return data[:start] + bytes([digest[0] ^ 0xFF]) + data[start + 1:]


@pytest.mark.parametrize("name,alg", [
    ("keylime/binary_bios_measurements", TPM_ALG.SHA256),
    ("go-attestation/option_rom_eventlog", TPM_ALG.SHA1),
    ("tpm2-tools/event-sd-boot-fedora37.bin", TPM_ALG.SHA256),
])
def test_one_changed_digest_byte_names_that_pcr(name, alg):
    data, pcrs = load(name)
    log = eventlog.parse_event_log(data)
    victim = [e for e in log.events if e.is_extended][5]
    tampered = eventlog.parse_event_log(
        _tamper_digest(data, log, victim, alg))
    with pytest.raises(exception.ReplayMismatch) as info:
        eventlog.verify_event_log(tampered, pcrs)
    assert info.value.kwargs["pcrs"] == [victim.pcr]
    assert info.value.kwargs["bank"] == constants.HASH_ALGORITHMS[alg].name


def test_mismatch_names_all_failing_pcrs():
    data, pcrs = load("keylime/binary_bios_measurements-secureboot")
    log = eventlog.parse_event_log(data)
    seen: dict[int, eventlog.Event] = {}
    for e in log.events:
        if e.is_extended and e.pcr in (1, 7, 9):
            seen.setdefault(e.pcr, e)
    for e in seen.values():
        data = _tamper_digest(data, log, e, TPM_ALG.SHA256)
    with pytest.raises(exception.ReplayMismatch) as info:
        eventlog.verify_event_log(eventlog.parse_event_log(data), pcrs)
    assert info.value.kwargs["pcrs"] == [1, 7, 9]
    assert "1, 7, 9" in str(info.value)


def test_wrong_quoted_value_fails_even_if_other_banks_match():
    data, pcrs = load("keylime/binary_bios_measurements")
    pcrs[TPM_ALG.SHA1][14] = bytes(20)
    with pytest.raises(exception.ReplayMismatch) as info:
        eventlog.verify_event_log(eventlog.parse_event_log(data), pcrs)
    assert info.value.kwargs["bank"] == "sha1"
    assert info.value.kwargs["pcrs"] == [14]


def _move_events(data: bytes, log: eventlog.EventLog, pcr: int,
                 to: int) -> bytes:
    out = bytearray(data)
    for e in log.events:
        if e.pcr == pcr and e.is_extended:
            out[e.offset:e.offset + 4] = struct.pack("<I", to)
    return bytes(out)


def test_stripping_a_firmware_pcr_from_the_log_fails():
    data, pcrs = load("keylime/binary_bios_measurements")
    log = eventlog.parse_event_log(data)
    hidden = eventlog.parse_event_log(_move_events(data, log, 7, 0xFFFFFFFF))
    with pytest.raises(exception.ReplayMismatch) as info:
        eventlog.verify_event_log(hidden, pcrs)
    assert info.value.kwargs["pcrs"] == [7]


def test_stripping_an_os_pcr_leaves_it_unaccounted_not_checked():
    data, pcrs = load("keylime/binary_bios_measurements")
    log = eventlog.parse_event_log(data)
    hidden = eventlog.parse_event_log(_move_events(data, log, 9, 0xFFFFFFFF))
    result = eventlog.verify_event_log(hidden, pcrs)
    assert result.unaccounted_pcrs == {TPM_ALG.SHA1: (9,),
                                       TPM_ALG.SHA256: (9,)}
    assert all(9 not in pcrs for pcrs in result.checked_pcrs.values())
    assert not any(e.pcr == 9 for e in result.events)
    assert result.summary().kernels == []


def test_only_events_on_checked_pcrs_are_returned():
    data, pcrs = load("keylime/binary_bios_measurements")
    only = {TPM_ALG.SHA256: {p: pcrs[TPM_ALG.SHA256][p] for p in (0, 7)}}
    result = eventlog.verify_event_log(eventlog.parse_event_log(data), only)
    assert {e.pcr for e in result.events} == {0, 7}
    assert all(set(e.digests) == {TPM_ALG.SHA256} for e in result.events)


def test_pcr_value_of_the_wrong_size_is_rejected():
    data, _ = load("keylime/binary_bios_measurements")
    with pytest.raises(exception.MalformedEvidence):
        eventlog.verify_event_log(eventlog.parse_event_log(data),
                                  {TPM_ALG.SHA256: {0: bytes(20)}})


# --- quirks ------------------------------------------------------------------

def test_missing_exit_boot_services_events_quirk():
    data, pcrs = load("go-attestation/ebs_event_missing_eventlog")
    log = eventlog.parse_event_log(data)
    assert not any(e.data.startswith(b"Exit Boot Services")
                   for e in log.events)
    # What the TPM holds when firmware measured the events but forgot to
    # log them.
    pcrs[TPM_ALG.SHA1][5] = extend(
        pcrs[TPM_ALG.SHA1][5],
        hashlib.sha1(b"Exit Boot Services Invocation").digest(),
        hashlib.sha1(b"Exit Boot Services Returned with Success").digest(),
        new=hashlib.sha1)
    result = eventlog.verify_event_log(log, pcrs)
    assert result.quirks_applied == ("ebs-invocation-success",)
    synthetic = [e for e in result.events if e.synthetic]
    assert [e.data for e in synthetic] == [
        b"Exit Boot Services Invocation",
        b"Exit Boot Services Returned with Success"]
    assert result.summary().exit_boot_services
    # A PCR 5 value that no quirk explains still fails.
    pcrs[TPM_ALG.SHA1][5] = bytes(20)
    with pytest.raises(exception.ReplayMismatch) as info:
        eventlog.verify_event_log(log, pcrs)
    assert info.value.kwargs["pcrs"] == [5]


# --- trust contract ----------------------------------------------------------

def _replace_data(data: bytes, event: eventlog.Event, new: bytes) -> bytes:
    assert len(new) == len(event.data)
    start = data.index(event.data, event.offset)
    return data[:start] + new + data[start + len(new):]


def test_changed_hashed_data_still_replays_but_is_not_data_verified():
    data, pcrs = load("go-attestation/ubuntu_2104_shielded_vm_no_secure_boot_"
                      "eventlog")
    log = eventlog.parse_event_log(data)
    sb = next(e for e in log.events
              if e.event_type == EventType.EV_EFI_VARIABLE_DRIVER_CONFIG)
    assert sb.data.endswith(b"\x00")  # SecureBoot = 0
    forged = sb.data[:-1] + b"\x01"
    result = eventlog.verify_event_log(
        eventlog.parse_event_log(_replace_data(data, sb, forged)), pcrs)
    event = next(e for e in result.events if e.index == sb.index)
    assert event.data == forged and not event.data_verified
    # The forged claim never reaches the summary.
    assert result.summary().secure_boot is None
    honest = eventlog.verify_event_log(log, pcrs)
    assert honest.summary().secure_boot is False


def test_event_type_is_not_covered_by_the_digest():
    """Documents the contract: a changed type still replays."""
    data, pcrs = load("keylime/binary_bios_measurements")
    log = eventlog.parse_event_log(data)
    sep = next(e for e in log.events
               if e.event_type == EventType.EV_SEPARATOR)
    start = sep.offset + 4
    forged = data[:start] + struct.pack("<I", EventType.EV_EFI_ACTION) + \
        data[start + 4:]
    result = eventlog.verify_event_log(eventlog.parse_event_log(forged), pcrs)
    assert next(e for e in result.events
                if e.index == sep.index).event_type == EventType.EV_EFI_ACTION


def test_turning_a_measured_event_into_no_action_fails():
    data, pcrs = load("keylime/binary_bios_measurements")
    log = eventlog.parse_event_log(data)
    sep = next(e for e in log.events
               if e.event_type == EventType.EV_SEPARATOR)
    start = sep.offset + 4
    forged = data[:start] + struct.pack("<I", EventType.EV_NO_ACTION) + \
        data[start + 4:]
    with pytest.raises(exception.ReplayMismatch) as info:
        eventlog.verify_event_log(eventlog.parse_event_log(forged), pcrs)
    assert info.value.kwargs["pcrs"] == [sep.pcr]


def test_decoders_refuse_unverified_events():
    data, _ = load("keylime/binary_bios_measurements")
    log = eventlog.parse_event_log(data)
    with pytest.raises(TypeError):
        eventlog_decode.decode_event(log.events[1])  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        eventlog_decode.decode_events(log)  # type: ignore[arg-type]


def test_undecodable_event_is_recorded_and_the_rest_decoded():
    data, pcrs = load("keylime/binary_bios_measurements-secureboot")
    log = eventlog.parse_event_log(data)
    gpt = next(e for e in log.events
               if e.event_type == EventType.EV_EFI_GPT_EVENT)
    broken = b"NOT PART" + gpt.data[8:]
    result = eventlog.verify_event_log(
        eventlog.parse_event_log(_replace_data(data, gpt, broken)), pcrs)
    decoded = {d.event.index: d for d in result.decoded()}
    bad = decoded[gpt.index]
    assert isinstance(bad.value, eventlog_decode.Undecodable)
    assert isinstance(bad.value.error, exception.MalformedEvidence)
    assert bad.binding is eventlog_decode.Binding.NONE
    summary = result.summary()
    assert summary.undecodable == [(gpt.index, bad.value.reason)]
    assert summary.secure_boot is True


# --- decoding facts read out of the logs -------------------------------------

@pytest.mark.parametrize("name,state", [
    ("keylime/binary_bios_measurements-secureboot", True),
    ("keylime/mb_log.b64", True),
    ("go-attestation/sb_cert_eventlog", True),
    ("tpm2-tools/event-moklisttrusted.bin", True),
    ("keylime/binary_bios_measurements", False),
    ("go-attestation/ubuntu_2104_shielded_vm_no_secure_boot_eventlog",
     False),
    ("tpm2-tools/event-sd-boot-fedora37.bin", False),  # variable absent
])
def test_secure_boot_state(name, state):
    assert verified(name).summary().secure_boot is state


def test_linux_grub_log_facts():
    summary = verified("keylime/binary_bios_measurements").summary()
    assert summary.crtm_version == "N40ET41W "
    assert summary.kernel_command_lines == [
        "(hd3,gpt2)/vmlinuz-6.11.5-300.fc41.x86_64 "
        "root=UUID=7d3fbd01-5598-48ea-afb0-67ce7c3853fc ro "
        "resume=/dev/mapper/luks-d3f0adc4-c30b-4aad-aa80-b469c29bc160 "
        "rd.lvm.lv=fedora/root "
        "rd.luks.uuid=luks-d53e2fe9-cc84-4bad-b410-16d3a07d6071 "
        "rd.lvm.lv=fedora/swap "
        "rd.luks.uuid=luks-d3f0adc4-c30b-4aad-aa80-b469c29bc160 rhgb quiet"]
    assert [k.path for k in summary.kernels] == [
        "(hd3,gpt2)/vmlinuz-6.11.5-300.fc41.x86_64"]
    assert [k.path for k in summary.initrds] == [
        "(hd3,gpt2)/initramfs-6.11.5-300.fc41.x86_64.img"]
    assert summary.kernels[0].digests[TPM_ALG.SHA256] == \
        "4a8f189eb2dddfca6495f5e951a0099882e1453e9f6629ad4d961f99428e12c8"
    assert "insmod gzio" in summary.grub_commands
    assert summary.boot_order[0] == 0
    assert summary.boot_entries["Boot0000"].description == "Fedora"
    assert summary.boot_entries["Boot0000"].device_path.endswith(
        "\\EFI\\fedora\\shimx64.efi")
    assert [c.subject for lst in summary.secure_boot_databases["PK"]
            for c in lst.entries] == [
        "CN=Lenovo Ltd. PK CA 2012,O=Lenovo Ltd.,L=Yokohama,ST=Kanagawa,C=JP"]
    assert summary.separator_errors == []


def test_secure_boot_databases_and_dbx_hashes():
    summary = verified("tpm2-tools/event-uefi-sha1-log.bin").summary()
    dbs = summary.secure_boot_databases
    assert dbs["PK"] == ()
    db_subjects = [e.subject for lst in dbs["db"] for e in lst.entries]
    assert any("Microsoft Corporation UEFI CA 2011" in s for s in db_subjects)
    dbx = [e for lst in dbs["dbx"] for e in lst.entries]
    assert dbx and all(e.type == "sha256" and len(e.data) == 32 for e in dbx)


def test_shim_authority_certificate_with_trailing_bytes_is_decoded():
    log = verified("go-attestation/sb_cert_eventlog")
    authority = [d for d in log.decoded() if d.event.event_type ==
                 EventType.EV_EFI_VARIABLE_AUTHORITY]
    shim = [d for d in authority if d.value.name == "Shim"]
    assert shim and shim[0].value.parsed.type == "x509"
    assert shim[0].value.trailing == bytes(5) + b"\xaf"
    # This shim hashed all but the last byte of what it logged: nothing
    # matches the digest, so nothing is claimed to be bound.
    assert {d.binding for d in shim} == {eventlog_decode.Binding.NONE}
    db = [d for d in authority if d.value.name == "db"]
    assert db[0].binding is eventlog_decode.Binding.DATA
    assert "Microsoft" in db[0].value.parsed.subject


def test_systemd_boot_command_lines():
    fedora = verified("tpm2-tools/event-sd-boot-fedora37.bin").summary()
    assert fedora.kernel_command_lines == [
        " console=ttyS0 console=tty0 efi=debug "] * 2
    assert len(fedora.initrds) == 1 and fedora.initrds[0].path is None
    # systemd-boot on Arch hashes the UTF-16 text with its terminator but
    # logs one byte less: the payload still binds.
    arch = verified("tpm2-tools/event-arch-linux.bin").summary()
    assert arch.kernel_command_lines[0].startswith(
        "initrd=\\intel-ucode.img initrd=\\initramfs-linux-lts.img ")


def test_variable_boot_binding_is_payload_when_only_the_value_is_hashed():
    log = verified("keylime/binary_bios_measurements")
    boot = [d for d in log.decoded()
            if d.event.event_type == EventType.EV_EFI_VARIABLE_BOOT]
    assert boot
    assert {d.binding for d in boot} == {eventlog_decode.Binding.PAYLOAD}


def test_firmware_blob_post_code_gpt_crtm_and_actions():
    blob = verified("tpm2-tools/event.bin").decoded()
    assert blob[0].value == eventlog_decode.FirmwareBlob(0x900000, 0xB00000)
    postcodes = [d.value for d in verified(
        "tpm2-tools/event-postcode.bin").decoded()
        if isinstance(d.value, eventlog_decode.PostCode)]
    assert postcodes
    gce = verified("go-attestation/ubuntu_2104_shielded_vm_no_secure_boot_"
                   "eventlog")
    assert gce.summary().crtm_version == "GCE Virtual Firmware v1"
    gpt = [d for d in gce.decoded()
           if d.event.event_type == EventType.EV_EFI_GPT_EVENT][0]
    assert gpt.binding is eventlog_decode.Binding.DATA
    esp = [p for p in gpt.value.partitions
           if p.type_guid == "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"]
    assert len(esp) == 1 and esp[0].first_lba == 0x2800
    actions = [d.value.text for d in gce.decoded()
               if isinstance(d.value, eventlog_decode.EFIAction)]
    assert actions == ["Calling EFI Application from Boot Option",
                       "Exit Boot Services Invocation",
                       "Exit Boot Services Returned with Success"]
    separators = [d for d in gce.decoded()
                  if isinstance(d.value, eventlog_decode.Separator)]
    assert len(separators) == 8 and not any(d.value.error
                                            for d in separators)


def test_error_separator_is_reported():
    value = b"\xff\xff\xff\xff"
    log_bytes = sha1_event(7, EventType.EV_SEPARATOR, value)
    pcr7 = extend(bytes(20), hashlib.sha1(value).digest(), new=hashlib.sha1)
    result = eventlog.verify_event_log(eventlog.parse_event_log(log_bytes),
                                       {TPM_ALG.SHA1: {7: pcr7}})
    assert result.summary().separator_errors == [7]
