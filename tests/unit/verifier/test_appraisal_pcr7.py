"""Secure boot (PCR 7) is read from what the digests bind, never from types.

The compromised host of issue 9 owns its event log: it can relabel any
event (type, data) but not change what its TPM holds. On PCR 7 the digest
of a variable measurement is the hash of the whole UEFI_VARIABLE_DATA
(GUID, name, value), so a data-bound event tells which variable held
which value whatever type it is logged as; the rule must account for
every PCR 7 event and refuse a variable measured twice.

The attacks use real secure-boot logs (tests/data/eventlog) against
policies that hold only a secure_boot rule (no PCR 7 value pinned, as an
operator may write by hand): boot code measured a bad db (or SecureBoot=0)
first and a good copy later; the host relabels the bad one.
"""

from __future__ import annotations

import copy
import functools
import struct

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.eventlog_edit import rewrite_events
from tests.unit.verifier.test_appraisal import (EVENTLOG, KEYLIME_SB, SB_CERT,
                                                appraise, boot_policy,
                                                event_at, evidence, quote_for,
                                                raw, reasons_of, verified)
from trusted_pools import exception
from trusted_pools.verifier import appraisal as ap
from trusted_pools.protocol.levels import AssuranceLevel, Outcome, Rung
from trusted_pools.protocol.verdict import Status
from trusted_pools.tpm import efi, eventlog_decode
from trusted_pools.tpm import eventlog as el

MOK = "tpm2-tools/event-moklisttrusted.bin"
POSTCODE = "tpm2-tools/event-postcode.bin"  # old shim: one byte too many
CONFIG = el.EventType.EV_EFI_VARIABLE_DRIVER_CONFIG
AUTHORITY = el.EventType.EV_EFI_VARIABLE_AUTHORITY
# Types a host may put on a bad event to get it ignored by a type test
# (not EV_NO_ACTION: such an event is not extended, so the log would not
# replay to what the TPM holds).
RELABELS = (AUTHORITY, el.EventType.EV_EFI_ACTION,
            el.EventType.EV_EFI_VARIABLE_BOOT, el.EventType.EV_POST_CODE,
            el.EventType.EV_SEPARATOR, 0x1234)
SB_LOGS = (KEYLIME_SB, SB_CERT, MOK, POSTCODE)


def all_logs() -> list[str]:
    skip = ("bogus", "short_no_action", "specid")
    return sorted("%s/%s" % (p.parent.name, p.name)
                  for p in EVENTLOG.glob("*/*")
                  if p.suffix not in (".yaml", ".b64")
                  and not any(s in p.name for s in skip))


@functools.lru_cache(maxsize=None)
def secure_boot_rule(name: str) -> dict:
    # The secure boot part of capture alone.
    _, _, log = evidence(name)
    return ap._capture_secure_boot(log, {})


def secure_boot_only(name: str, **changes):
    """A hand-written policy: the captured secure_boot rule, nothing else
    (no PCR values, no firmware digests)."""
    rule = dict(copy.deepcopy(secure_boot_rule(name)), **changes)
    return boot_policy({"kind": "measured_boot",
                        "platform_firmware": {"secure_boot": rule}})


def host(data: bytes):
    quote = quote_for(data)
    return quote, verified(data, quote)


def trusted(result: ap.Appraisal) -> bool:
    return ap.make_verdict(
        "h", result, "0" * 64, 1000, 90,
        min_level_for_trusted=AssuranceLevel.PLATFORM_FIRMWARE
    ).status is Status.TRUSTED


def variable_event(name: str, variable: str) -> el.Event:
    """The original PCR 7 configuration event of ``variable``."""
    (event,) = [e for e in el.parse_event_log(raw(name)).events
                if e.pcr == 7 and e.event_type == CONFIG
                and efi.parse_variable_data(e.data).name == variable]
    return event


def with_value(data: bytes, value: bytes) -> bytes:
    """A UEFI_VARIABLE_DATA like ``data`` (same GUID and name) holding
    ``value``: what firmware measures for that variable set so."""
    (name_chars,) = struct.unpack_from("<Q", data, 16)
    name = data[32:32 + 2 * name_chars]
    return data[:16] + struct.pack("<QQ", name_chars, len(value)) + name \
        + value


def bad_db(name: str) -> bytes:
    """db with the PK's certificate added: code it signs would boot."""
    db = variable_event(name, "db")
    pk = efi.parse_variable_data(variable_event(name, "PK").data).value
    return with_value(db.data, efi.parse_variable_data(db.data).value + pk)


def secure_boot_off(name: str) -> bytes:
    return with_value(variable_event(name, "SecureBoot").data, b"\x00")


def separator_index(name: str) -> int:
    (event,) = [e for e in el.parse_event_log(raw(name)).events
                if e.pcr == 7 and e.event_type == el.EventType.EV_SEPARATOR]
    return event.index


def first_after_separator(name: str) -> int:
    """The index of the event right after the PCR 7 separator."""
    return separator_index(name) + 1


# --- honest logs: same facts, captured policies pass -------------------------

@pytest.mark.parametrize("name", all_logs())
def test_honest_logs_give_the_same_facts_and_pass_their_rule(name):
    _, quote, log = evidence(name)
    facts = ap._read_secure_boot(log)
    assert facts.problems == ()
    # The type-based reading these facts replace, on honest logs.
    summary = eventlog_decode.summarize(log)
    assert facts.secure_boot is summary.secure_boot
    assert {k: [e for _, e in v] for k, v in facts.entries.items()} == {
        k: [e for lst in v for e in lst.entries]
        for k, v in summary.secure_boot_databases.items()}
    if facts.secure_boot is None:
        return
    result = appraise(quote, log, secure_boot_only(name))
    assert result.outcomes[Rung.PLATFORM_FIRMWARE] is Outcome.PASSED, \
        result.reasons
    assert trusted(result)


def test_authorities_are_read_from_content():
    _, _, log = evidence(KEYLIME_SB)
    ids = [a.id for a in ap._read_secure_boot(log).authorities]
    assert [i.split(":")[0] for i in ids] == ["db", "SbatLevel", "vendor_db"]
    assert ids[0].startswith("db:x509:") and len(ids[0]) == 8 + 64
    assert secure_boot_rule(KEYLIME_SB)["authorities"] == sorted(ids)
    # Old shim's certificate event has a stray byte after the bound data.
    _, _, log = evidence(POSTCODE)
    assert not event_at(log, 40).data_verified
    assert [a.name for a in ap._read_secure_boot(log).authorities] == [
        "db", "Shim", "Shim"]


# --- the relabel attack ------------------------------------------------------

@pytest.mark.parametrize("relabel", RELABELS)
@pytest.mark.parametrize("good_copy_at", ["before-separator",
                                          "after-separator"])
@pytest.mark.parametrize("name", SB_LOGS)
def test_bad_db_relabelled_with_a_good_copy_later_is_untrusted(
        name, good_copy_at, relabel):
    """Firmware measured a db holding the PK certificate; later boot code
    measured the good db; the host logs the bad one under another type."""
    db = variable_event(name, "db")
    later = separator_index(name) + (good_copy_at == "after-separator")
    bad = rewrite_events(raw(name), {
        db.index: {"measured": bad_db(name), "data": bad_db(name),
                   "event_type": relabel},
        later: {"before": [(7, CONFIG, db.data, db.data)]}})
    quote, log = host(bad)
    result = appraise(quote, log, secure_boot_only(name))
    assert not trusted(result)
    assert result.outcomes[Rung.PLATFORM_FIRMWARE] is Outcome.UNRECOGNIZED
    reasons = reasons_of(result, "platform firmware")
    # The bad copy is judged and named, under the type the host gave it.
    assert any(r.startswith("platform firmware: PCR 7 event %d (%s, db): "
                            "entry x509:" % (db.index, el.event_type_name(
                                relabel))) and "is not among the db entries"
               in r for r in reasons), reasons
    # And the good copy is refused as a second measurement.
    copy_index = later  # the inserted event takes this index
    expected = ("db measured a second time (first: event %d)" % db.index
                if good_copy_at == "before-separator"
                else "secure boot variable db measured after the PCR 7 "
                "separator")
    assert any("PCR 7 event %d (variable db, logged as "
               "EV_EFI_VARIABLE_DRIVER_CONFIG): %s" % (copy_index, expected)
               in r for r in reasons), reasons


@pytest.mark.parametrize("relabel", RELABELS)
@pytest.mark.parametrize("name", SB_LOGS)
def test_secure_boot_off_relabelled_with_on_later_is_untrusted(name,
                                                                relabel):
    on = variable_event(name, "SecureBoot")
    off = secure_boot_off(name)
    bad = rewrite_events(raw(name), {
        on.index: {"measured": off, "data": off, "event_type": relabel},
        first_after_separator(name) - 1: {
            "before": [(7, CONFIG, on.data, on.data)]}})
    quote, log = host(bad)
    result = appraise(quote, log, secure_boot_only(name))
    assert not trusted(result)
    assert result.outcomes[Rung.PLATFORM_FIRMWARE] is \
        Outcome.CONTRAINDICATED
    reasons = reasons_of(result, "platform firmware")
    assert "platform firmware: PCR 7 event %d (%s, SecureBoot): secure " \
        "boot is off; policy 'prod-boot' v3 requires it on" % (
            on.index, el.event_type_name(relabel)) in reasons
    assert any("SecureBoot measured a second time (first: event %d)"
               % on.index in r for r in reasons), reasons


@pytest.mark.parametrize("name", SB_LOGS)
def test_hiding_a_variable_measurement_fails(name):
    """The host makes the bad db's data not bind (garbage, or the good
    db's bytes): the measurement is unaccounted for, which fails."""
    db = variable_event(name, "db")
    for data in (b"", b"\x00" * 40, db.data):
        bad = rewrite_events(raw(name), {db.index: {
            "measured": bad_db(name), "data": data,
            "event_type": el.EventType.EV_EFI_ACTION}})
        quote, log = host(bad)
        result = appraise(quote, log, secure_boot_only(name))
        assert not trusted(result)
        reasons = reasons_of(result, "platform firmware")
        assert any(r.startswith("platform firmware: PCR 7 event %d (logged "
                                "as EV_EFI_ACTION" % db.index)
                   and "so what was measured into PCR 7 is unknown" in r
                   for r in reasons), reasons


def test_separator_and_fixed_values_pass_whatever_their_type():
    sep = separator_index(KEYLIME_SB)
    bad = rewrite_events(raw(KEYLIME_SB), {sep: {
        "event_type": AUTHORITY, "data": b"\x00" * 4}})
    quote, log = host(bad)
    assert trusted(appraise(quote, log, secure_boot_only(KEYLIME_SB)))


def test_unexpected_pcr7_measurements_fail():
    """A debugger mode action, an error separator, a Boot#### variable:
    none is part of secure boot's record, all are named."""
    after = first_after_separator(KEYLIME_SB)
    boot0 = with_value(variable_event(KEYLIME_SB, "PK").data, b"")
    boot0 = boot0[:16] + struct.pack("<QQ", 8, 0) + "Boot0000".encode(
        "utf-16-le")
    for measured, expect in (
            (b"UEFI Debug Mode", "so what was measured into PCR 7 is "
             "unknown"),
            (b"\xff\xff\xff\xff", "so what was measured into PCR 7 is "
             "unknown"),
            (boot0, "is not a secure boot variable or authority")):
        bad = rewrite_events(raw(KEYLIME_SB), {after: {"before": [
            (7, el.EventType.EV_EFI_ACTION, measured, measured)]}})
        quote, log = host(bad)
        result = appraise(quote, log, secure_boot_only(KEYLIME_SB))
        assert not trusted(result)
        reasons = reasons_of(result, "platform firmware")
        assert any("PCR 7 event %d (" % after in r and expect in r
                   for r in reasons), reasons


def test_unlisted_authority_fails():
    """Shim verified the boot loader with a MOK key instead: its
    certificate is measured as an authority the policy does not list."""
    _, _, log = evidence(KEYLIME_SB)
    vendor = [a for a in ap._read_secure_boot(log).authorities
              if a.name == "vendor_db"][0]
    rule = secure_boot_rule(KEYLIME_SB)
    result = appraise(*evidence(KEYLIME_SB)[1:], secure_boot_only(
        KEYLIME_SB, authorities=[a for a in rule["authorities"]
                                 if a != vendor.id]))
    assert not trusted(result)
    (reason,) = reasons_of(result, "platform firmware")
    assert "PCR 7 event %d (authority vendor_db, logged as " \
        "EV_EFI_VARIABLE_AUTHORITY): %s" % (vendor.event.index,
                                            vendor.id) in reason
    assert "is not among the authorities" in reason


def test_db_authority_must_be_in_the_measured_db():
    """Firmware verifies with db only: a db authority that is not an
    entry of the db measured says the db shown is not the one used."""
    name = KEYLIME_SB
    pk = efi.parse_variable_data(variable_event(name, "PK").data).value
    cert = efi.parse_signature_lists(pk)[0].entries[0]
    (db_auth,) = [a for a in ap._read_secure_boot(evidence(name)[2])
                  .authorities if a.name == "db"]
    signature_data = bytes(16) + cert.data  # owner GUID, certificate
    data = with_value(db_auth.event.data, signature_data)
    bad = rewrite_events(raw(name), {db_auth.event.index: {
        "measured": data, "data": data}})
    quote, log = host(bad)
    listed = ap.authority_id("db", efi.parse_signature_data(signature_data))
    result = appraise(quote, log, secure_boot_only(
        name, authorities=secure_boot_rule(name)["authorities"] + [listed]))
    assert not trusted(result)
    (reason,) = reasons_of(result, "platform firmware")
    assert reason.startswith("platform firmware: PCR 7 event %d (authority "
                             "db, logged as EV_EFI_VARIABLE_AUTHORITY): %s"
                             % (db_auth.event.index, listed))
    assert "verified code but is not an entry of the measured db" in reason


def test_authorities_in_policy_are_validated():
    with pytest.raises(exception.PolicyInvalid,
                       match=r"secure_boot.authorities\[0\]"):
        secure_boot_only(KEYLIME_SB, authorities=["not an id"])
    # Empty: no authority may appear.
    result = appraise(*evidence(KEYLIME_SB)[1:],
                      secure_boot_only(KEYLIME_SB, authorities=[]))
    assert len(reasons_of(result, "platform firmware")) == 3


# --- property: PCR 7's words never help the host -----------------------------

@st.composite
def pcr7_boots(draw):
    """A boot that replays: a real secure-boot log in which firmware
    measured a bad value for some secure boot variables (db with an extra
    key, SecureBoot off, random bytes) and maybe boot code a good copy of
    a variable later (before or after the separator)."""
    name = draw(st.sampled_from(SB_LOGS))
    changes: dict[int, dict] = {}
    for variable in draw(st.lists(st.sampled_from(
            ("SecureBoot", "PK", "KEK", "db", "dbx")), max_size=2,
            unique=True)):
        event = variable_event(name, variable)
        measured = draw(st.one_of(
            st.just(bad_db(name) if variable == "db"
                    else secure_boot_off(name) if variable == "SecureBoot"
                    else with_value(event.data, b"")),
            st.binary(min_size=1, max_size=40)))
        changes[event.index] = {"measured": measured, "data": measured}
    if draw(st.booleans()):
        variable = draw(st.sampled_from(("SecureBoot", "db")))
        good = variable_event(name, variable)
        at = draw(st.sampled_from((separator_index(name),
                                   first_after_separator(name))))
        changes.setdefault(at, {})["before"] = [(7, CONFIG, good.data,
                                                  good.data)]
    return name, changes


@st.composite
def pcr7_mutations(draw, name: str, boot: dict):
    """Changes of data and type only (the TPM is the same): of the PCR 7
    events, including the copies boot code added."""
    events = [e.index for e in el.parse_event_log(raw(name)).events
              if e.pcr == 7]
    picked = sorted(i for i in boot if "measured" in boot[i])
    picked += draw(st.lists(st.sampled_from(events), max_size=2,
                            unique=True))
    out: dict[int, dict] = {}
    for index in dict.fromkeys(picked):
        change = {}
        if draw(st.booleans()):
            change["event_type"] = draw(st.one_of(
                st.sampled_from(RELABELS + (CONFIG,)),
                st.integers(0x80000100, 0xFFFFFFFF)))
        if draw(st.integers(0, 3)) == 0:
            change["data"] = draw(st.binary(max_size=48))
        out[index] = change
    for index, change in boot.items():
        if "before" in change and draw(st.booleans()):
            (pcr, _, measured, data), = change["before"]
            out.setdefault(index, {})["before"] = [
                (pcr, draw(st.sampled_from(RELABELS)), measured,
                 data if draw(st.booleans()) else b"")]
    return out


@st.composite
def pcr7_scenarios(draw):
    name, boot = draw(pcr7_boots())
    return name, draw(st.booleans()), boot, draw(pcr7_mutations(name, boot))


def _db_attack(name: str, relabel: int) -> tuple:
    db = variable_event(name, "db")
    return (name, False,
            {db.index: {"measured": bad_db(name), "data": bad_db(name)},
             separator_index(name): {"before": [(7, CONFIG, db.data,
                                                 db.data)]}},
            {db.index: {"event_type": relabel}})


@settings(max_examples=120, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(pcr7_scenarios())
@example(_db_attack(KEYLIME_SB, AUTHORITY))
@example(_db_attack(SB_CERT, el.EventType.EV_EFI_ACTION))
def test_changing_pcr7_data_or_type_never_makes_a_host_trusted(scenario):
    name, whole, boot, mutation = scenario
    if whole:
        _, quote, log = evidence(name)
        policy = boot_policy(ap.capture_measured_boot_policy(
            log, quote, pin_pcrs=()))
    else:
        policy = secure_boot_only(name)
    quote, log = host(rewrite_events(raw(name), boot))
    before = appraise(quote, log, policy)
    merged = {i: dict(boot.get(i, {}), **mutation.get(i, {}))
              for i in set(boot) | set(mutation)}
    after_log = rewrite_events(raw(name), merged)
    after = appraise(quote, verified(after_log, quote), policy)
    if not trusted(before):
        assert not trusted(after), (before.reasons, after.reasons)
    assert after.level <= before.level, (before.reasons, after.reasons)
    if not boot:
        assert trusted(before), before.reasons
    elif any("measured" in c or "before" in c for c in boot.values()):
        # Every such boot is bad (a value changed or a second copy).
        assert not trusted(before), before.reasons


@pytest.mark.parametrize("name", all_logs())
def test_full_capture_of_every_real_log_loads_and_passes_it(name):
    # The GCE Ubuntu log holds a GRUB command of more than 4 KiB; capture
    # must give a policy that loads and that its own boot passes.
    _, quote, log = evidence(name)
    policy = boot_policy(ap.capture_measured_boot_policy(log, quote))
    result = appraise(quote, log, policy)
    assert result.level >= AssuranceLevel.PLATFORM_FIRMWARE, result.reasons
    assert not [r for r in result.reasons if "not allowed" in r], \
        result.reasons
