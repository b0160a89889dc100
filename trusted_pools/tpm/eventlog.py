"""TCG PC Client event logs: parse, replay, verify against quoted PCRs.

Formats (TCG PC Client Platform Firmware Profile, section 10):

* the SHA-1 format: a sequence of ``TCG_PCClientPCREvent`` (PCR index,
  event type, one SHA-1 digest, event data), little-endian;
* the crypto-agile format: the first event is a SHA-1-format ``EV_NO_ACTION``
  event on PCR 0 whose data is the ``TCG_EfiSpecIDEvent`` ("Spec ID
  Event03") listing every digest algorithm and its size; all later events
  are ``TCG_PCR_EVENT2`` with a ``TPML_DIGEST_VALUES``. Algorithms this
  module cannot compute are still skipped correctly by their declared size.

Trust contract ("parsing is not trusting")
-------------------------------------------

:func:`parse_event_log` checks structure only. Its :class:`Event` objects
are claims made by the host, nothing more; do not base a decision on them.

:func:`verify_event_log` replays the log into every PCR bank it can compute
that the caller gives (from a quote whose signature was already checked)
and requires every such PCR the log touches to match. Only then are events
returned, as :class:`VerifiedEvent`, and only those on PCRs that were
checked. What that proves, and what it does not:

* covered: for each verified bank, the *sequence of digests* extended into
  each checked PCR, and the PCR index of every extended event;
* NOT covered: the event type (it is never hashed), and the event data -
  except where the digest happens to be the hash of the data, which
  :attr:`VerifiedEvent.data_verified` reports per event after recomputing
  it. Firmware measures e.g. ``EV_SEPARATOR``, ``EV_EFI_ACTION`` and
  ``EV_EFI_VARIABLE_DRIVER_CONFIG`` that way, so their data is bound; an
  ``EV_EFI_BOOT_SERVICES_APPLICATION``'s digest is the image's Authenticode
  hash and its data (device path, load address) is not bound at all;
* NOT covered: ``EV_NO_ACTION`` events (never extended; the only one with
  an effect is StartupLocality, whose effect on PCR 0 *is* checked), and
  events on PCR indices above 23 (0xffffffff in real logs), which are
  skipped and listed in :attr:`VerifiedEventLog.skipped_events`;
* a bound payload only says "this was measured into PCR n"; whoever may
  extend PCR n (firmware, boot loader, OS) could have measured it. Policies
  read values from the decoders in :mod:`trusted_pools.tpm.eventlog_decode`,
  which work on verified events only and carry ``data_verified`` along.

Known firmware quirks (:data:`FIRMWARE_QUIRKS`) are tried only after a
failure on the PCR they concern, and a success through one is recorded in
:attr:`VerifiedEventLog.quirks_applied`.
"""

from __future__ import annotations

import enum
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field

from trusted_pools import exception
from trusted_pools.tpm import constants
from trusted_pools.tpm._reader import Reader

__all__ = [
    "DEFAULT_MAX_SIZE",
    "EventType",
    "Event",
    "SpecIdEvent",
    "EventLog",
    "VerifiedEvent",
    "VerifiedEventLog",
    "FirmwareQuirk",
    "FIRMWARE_QUIRKS",
    "parse_event_log",
    "replay_event_log",
    "verify_event_log",
]

DEFAULT_MAX_SIZE = 16 * 1024 * 1024
LOG_NAME = "event log"

#: PCRs 0-23 are the ones a PC Client TPM has; anything higher (0xffffffff
#: is used by real firmware for informational EV_NO_ACTION events) is never
#: extended.
MAX_PCR = 23
SPEC_ID_SIGNATURE = b"Spec ID Event03\x00"
STARTUP_LOCALITY_SIGNATURE = b"StartupLocality\x00"
_SHA1_DIGEST_SIZE = 20
# A Spec ID header listing more algorithms than the registry could ever
# hold is not a real header; the limit also bounds parse time.
_MAX_SPEC_ALGORITHMS = 64


class EventType(enum.IntEnum):
    """Event types of the TCG PC Client Platform Firmware Profile."""

    EV_PREBOOT_CERT = 0x00000000
    EV_POST_CODE = 0x00000001
    EV_UNUSED = 0x00000002
    EV_NO_ACTION = 0x00000003
    EV_SEPARATOR = 0x00000004
    EV_ACTION = 0x00000005
    EV_EVENT_TAG = 0x00000006
    EV_S_CRTM_CONTENTS = 0x00000007
    EV_S_CRTM_VERSION = 0x00000008
    EV_CPU_MICROCODE = 0x00000009
    EV_PLATFORM_CONFIG_FLAGS = 0x0000000A
    EV_TABLE_OF_DEVICES = 0x0000000B
    EV_COMPACT_HASH = 0x0000000C
    EV_IPL = 0x0000000D
    EV_IPL_PARTITION_DATA = 0x0000000E
    EV_NONHOST_CODE = 0x0000000F
    EV_NONHOST_CONFIG = 0x00000010
    EV_NONHOST_INFO = 0x00000011
    EV_OMIT_BOOT_DEVICE_EVENTS = 0x00000012
    EV_POST_CODE2 = 0x00000013
    EV_EFI_VARIABLE_DRIVER_CONFIG = 0x80000001
    EV_EFI_VARIABLE_BOOT = 0x80000002
    EV_EFI_BOOT_SERVICES_APPLICATION = 0x80000003
    EV_EFI_BOOT_SERVICES_DRIVER = 0x80000004
    EV_EFI_RUNTIME_SERVICES_DRIVER = 0x80000005
    EV_EFI_GPT_EVENT = 0x80000006
    EV_EFI_ACTION = 0x80000007
    EV_EFI_PLATFORM_FIRMWARE_BLOB = 0x80000008
    EV_EFI_HANDOFF_TABLES = 0x80000009
    EV_EFI_PLATFORM_FIRMWARE_BLOB2 = 0x8000000A
    EV_EFI_HANDOFF_TABLES2 = 0x8000000B
    EV_EFI_VARIABLE_BOOT2 = 0x8000000C
    EV_EFI_GPT_EVENT2 = 0x8000000D
    EV_EFI_HCRTM_EVENT = 0x80000010
    EV_EFI_VARIABLE_AUTHORITY = 0x800000E0
    EV_EFI_SPDM_FIRMWARE_BLOB = 0x800000E1
    EV_EFI_SPDM_FIRMWARE_CONFIG = 0x800000E2


def event_type_name(event_type: int) -> str:
    """The spec name of an event type, or its hex value if unknown."""
    try:
        return EventType(event_type).name
    except ValueError:
        return "%#010x" % event_type


@dataclass(frozen=True, slots=True)
class Event:
    """One parsed, UNVERIFIED event. Nothing in it is trusted.

    ``index`` is the position in the log (the Spec ID header is index 0 in
    a crypto-agile log); ``digests`` maps TPM_ALG_ID to digest; ``offset``
    is where the event starts in the log bytes.
    """

    index: int
    pcr: int
    event_type: int
    digests: Mapping[int, bytes]
    data: bytes
    offset: int

    @property
    def type_name(self) -> str:
        return event_type_name(self.event_type)

    @property
    def is_extended(self) -> bool:
        """Whether replay extends this event into a PCR at all."""
        return (self.event_type != EventType.EV_NO_ACTION
                and 0 <= self.pcr <= MAX_PCR)


@dataclass(frozen=True, slots=True)
class SpecIdEvent:
    """The TCG_EfiSpecIDEvent header of a crypto-agile log."""

    platform_class: int
    spec_version: tuple[int, int, int]  # major, minor, errata
    uintn_size: int
    digest_sizes: Mapping[int, int]     # TPM_ALG_ID -> size, log order
    vendor_info: bytes


@dataclass(frozen=True, slots=True)
class EventLog:
    """A parsed, UNVERIFIED event log (see the module trust contract)."""

    events: tuple[Event, ...]
    crypto_agile: bool
    digest_sizes: Mapping[int, int]
    spec_id: SpecIdEvent | None = None
    raw_size: int = 0

    @property
    def skipped_events(self) -> tuple[Event, ...]:
        """Events that are not EV_NO_ACTION yet replay cannot extend."""
        return tuple(e for e in self.events
                     if e.event_type != EventType.EV_NO_ACTION
                     and not e.is_extended)


@dataclass(frozen=True, slots=True)
class VerifiedEvent:
    """An event whose digest(s) replayed to a checked PCR value.

    ``digests`` holds only the banks in which this PCR was checked.
    ``event_type`` is still the host's claim. ``data`` is bound to the
    quote only if ``data_verified`` (the digest is the hash of the data in
    every checked bank). ``synthetic`` events were added by a firmware
    quirk workaround and never appeared in the log.
    """

    index: int
    pcr: int
    event_type: int
    digests: Mapping[int, bytes]
    data: bytes
    data_verified: bool
    offset: int
    synthetic: bool = False

    @property
    def type_name(self) -> str:
        return event_type_name(self.event_type)


@dataclass(frozen=True, slots=True)
class FirmwareQuirk:
    """A known firmware bug: events it forgets to log on ``pcr``."""

    name: str
    pcr: int
    missing_events: tuple[tuple[int, bytes], ...]  # (event type, data)
    description: str


#: Tried one at a time, only after the quirk's PCR failed to replay.
FIRMWARE_QUIRKS: tuple[FirmwareQuirk, ...] = (
    FirmwareQuirk(
        name="ebs-invocation-success",
        pcr=5,
        missing_events=(
            (EventType.EV_EFI_ACTION, b"Exit Boot Services Invocation"),
            (EventType.EV_EFI_ACTION,
             b"Exit Boot Services Returned with Success"),
        ),
        description="Firmware measures ExitBootServices() into PCR 5 but "
                    "does not append the events to the log"),
    FirmwareQuirk(
        name="ebs-invocation-failure",
        pcr=5,
        missing_events=(
            (EventType.EV_EFI_ACTION, b"Exit Boot Services Invocation"),
            (EventType.EV_EFI_ACTION,
             b"Exit Boot Services Returned with Failure"),
        ),
        description="As ebs-invocation-success, after a failed first "
                    "ExitBootServices() call"),
)


@dataclass(frozen=True, slots=True)
class VerifiedEventLog:
    """The outcome of :func:`verify_event_log`: only what replayed.

    ``checked_pcrs`` maps each verified bank (TPM_ALG_ID) to the PCR
    indices whose quoted values were compared and matched (a quoted PCR
    the log never extends counts when it holds its reset value).
    ``unaccounted_pcrs`` lists quoted PCRs above 7 that the log never
    extends yet are not at a reset value: another log (IMA's PCR 10)
    explains them, or events were stripped from this one. A policy that
    relies on what a PCR says must require it in ``checked_pcrs``; an
    absent event is never proof of anything.
    """

    events: tuple[VerifiedEvent, ...]
    checked_pcrs: Mapping[int, tuple[int, ...]]
    unaccounted_pcrs: Mapping[int, tuple[int, ...]] = field(
        default_factory=dict)
    quirks_applied: tuple[str, ...] = ()
    startup_locality: int | None = None
    skipped_events: tuple[Event, ...] = field(default=())
    spec_id: SpecIdEvent | None = None

    def events_of_type(self, event_type: int) -> list[VerifiedEvent]:
        return [e for e in self.events if e.event_type == event_type]

    def decoded(self) -> list:
        """Every event decoded (see :mod:`.eventlog_decode`)."""
        from trusted_pools.tpm import eventlog_decode
        return eventlog_decode.decode_events(self)

    def summary(self):
        """Facts a policy needs, from verified events only."""
        from trusted_pools.tpm import eventlog_decode
        return eventlog_decode.summarize(self)


# --- parsing -----------------------------------------------------------------

def _parse_spec_id(data: bytes) -> SpecIdEvent:
    """Parse TCG_EfiSpecIDEvent.

    The vendor info must lie inside the event: ``vendorInfoSize`` bytes
    past the end of the event's data are rejected (see
    ``tpm2-tools/specid-vendordata.bin``, whose header declares 4 vendor
    bytes but leaves them out of the event size). Reading them anyway would
    mean guessing where the first TCG_PCR_EVENT2 starts; a header that
    contradicts itself is malformed, and rejecting it is the fail-closed
    choice (the file holds no measurement, so nothing of value is lost).
    """
    r = Reader(data, "Spec ID event")
    if r.bytes(16) != SPEC_ID_SIGNATURE:
        raise exception.MalformedEvidence(what="Spec ID event",
                                          reason="bad signature")
    platform_class = r.u32le()
    minor, major, errata, uintn_size = r.u8(), r.u8(), r.u8(), r.u8()
    count = r.u32le()
    if not 1 <= count <= _MAX_SPEC_ALGORITHMS:
        raise exception.MalformedEvidence(
            what="Spec ID event",
            reason="%d digest algorithms declared" % count)
    sizes: dict[int, int] = {}
    for _ in range(count):
        alg, size = r.u16le(), r.u16le()
        if alg in sizes:
            raise exception.MalformedEvidence(
                what="Spec ID event",
                reason="algorithm %#06x declared twice" % alg)
        known = constants.KNOWN_DIGEST_SIZES.get(alg)
        if size == 0 or (known is not None and size != known):
            raise exception.MalformedEvidence(
                what="Spec ID event",
                reason="digest size %d for algorithm %#06x" % (size, alg))
        sizes[alg] = size
    vendor_info = r.bytes(r.u8())
    r.expect_end()
    return SpecIdEvent(platform_class, (major, minor, errata), uintn_size,
                       sizes, vendor_info)


def _parse_sha1_event(r: Reader, index: int) -> Event:
    offset = r.offset
    pcr = r.u32le()
    event_type = r.u32le()
    digest = r.bytes(_SHA1_DIGEST_SIZE)
    data = r.bytes(r.u32le())
    return Event(index, pcr, event_type, {constants.TPM_ALG.SHA1: digest},
                 data, offset)


def _parse_event2(r: Reader, index: int, sizes: Mapping[int, int]) -> Event:
    offset = r.offset
    pcr = r.u32le()
    event_type = r.u32le()
    count = r.u32le()
    if count > len(sizes):
        raise exception.MalformedEvidence(
            what=LOG_NAME,
            reason="event %d at offset %d has %d digests, the header "
                   "declares %d algorithms" % (index, offset, count,
                                               len(sizes)))
    digests: dict[int, bytes] = {}
    for _ in range(count):
        alg = r.u16le()
        size = sizes.get(alg)
        if size is None:
            raise exception.MalformedEvidence(
                what=LOG_NAME,
                reason="event %d uses algorithm %#06x the header does not "
                       "declare" % (index, alg))
        if alg in digests:
            raise exception.MalformedEvidence(
                what=LOG_NAME,
                reason="event %d has two %#06x digests" % (index, alg))
        digests[alg] = r.bytes(size)
    data = r.bytes(r.u32le())
    return Event(index, pcr, event_type, digests, data, offset)


def _is_spec_id_header(event: Event) -> bool:
    return (event.pcr == 0 and event.event_type == EventType.EV_NO_ACTION
            and event.data.startswith(SPEC_ID_SIGNATURE))


def parse_event_log(data: bytes, *,
                    max_size: int = DEFAULT_MAX_SIZE) -> EventLog:
    """Parse a binary TCG PC Client event log (either format).

    Checks structure only; the result is untrusted until
    :func:`verify_event_log`. Raises :class:`EvidenceTooLarge`,
    :class:`TruncatedEvidence` or :class:`MalformedEvidence`.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError("data must be bytes, not %s" % type(data).__name__)
    if len(data) > max_size:
        raise exception.EvidenceTooLarge(what=LOG_NAME, size=len(data),
                                         limit=max_size)
    if not data:
        raise exception.MalformedEvidence(what=LOG_NAME, reason="empty")
    r = Reader(data, LOG_NAME)
    first = _parse_sha1_event(r, 0)
    events = [first]
    if not _is_spec_id_header(first):
        while not r.at_end():
            events.append(_parse_sha1_event(r, len(events)))
        return EventLog(tuple(events), False,
                        {constants.TPM_ALG.SHA1: _SHA1_DIGEST_SIZE},
                        None, len(data))
    spec_id = _parse_spec_id(first.data)
    sizes = spec_id.digest_sizes
    while not r.at_end():
        events.append(_parse_event2(r, len(events), sizes))
    return EventLog(tuple(events), True, dict(sizes), spec_id, len(data))


# --- replay ------------------------------------------------------------------

def _startup_locality(event: Event) -> int | None:
    if (event.event_type == EventType.EV_NO_ACTION
            and event.data.startswith(STARTUP_LOCALITY_SIGNATURE)):
        if event.pcr != 0 or len(event.data) != 17:
            raise exception.MalformedEvidence(
                what=LOG_NAME,
                reason="StartupLocality event %d is not a 17-byte event "
                       "on PCR 0" % event.index)
        return event.data[16]
    return None


def _locality_of(events: tuple[Event, ...]) -> int | None:
    """The StartupLocality value, checking it precedes PCR 0 extends."""
    locality = None
    pcr0_extended = False
    for event in events:
        value = _startup_locality(event)
        if value is not None:
            if locality is not None or pcr0_extended:
                raise exception.MalformedEvidence(
                    what=LOG_NAME,
                    reason="StartupLocality event %d is repeated or comes "
                           "after PCR 0 was extended" % event.index)
            locality = value
        elif event.pcr == 0 and event.is_extended:
            pcr0_extended = True
    return locality


def _replay_bank(events: tuple[Event, ...], alg: int,
                 locality: int | None) -> dict[int, bytes] | None:
    """PCR index -> value for every PCR the events extend in bank ``alg``.

    None when an extended event lacks a digest for this bank: such a bank
    cannot be replayed and is left unchecked (never treated as matching).
    """
    new = constants.HASH_ALGORITHMS[alg].new
    size = constants.HASH_ALGORITHMS[alg].digest_size
    zero = bytes(size)
    pcrs: dict[int, bytes] = {}
    for event in events:
        if not event.is_extended:
            continue
        digest = event.digests.get(alg)
        if digest is None:
            return None
        pcr = event.pcr
        current = pcrs.get(pcr)
        if current is None:
            current = (zero if pcr != 0 or locality is None
                       else zero[:-1] + bytes((locality,)))
        pcrs[pcr] = new(current + digest).digest()
    return pcrs


def _replayable_algs(log: EventLog) -> list[int]:
    return [alg for alg in log.digest_sizes
            if alg in constants.HASH_ALGORITHMS]


def replay_event_log(log: EventLog) -> dict[int, dict[int, bytes]]:
    """Replay ``log``: TPM_ALG_ID -> {PCR index: value}.

    PCRs start at zero; StartupLocality sets PCR 0's start to
    ``00..00 || locality`` in every bank; EV_NO_ACTION events and events on
    PCRs above 23 are not extended. Only extended PCRs are listed. Banks
    this module cannot hash, or in which an extended event has no digest,
    are left out. The result is a computation on untrusted input; compare
    it with quoted values through :func:`verify_event_log`.
    """
    locality = _locality_of(log.events)
    result = {}
    for alg in _replayable_algs(log):
        pcrs = _replay_bank(log.events, alg, locality)
        if pcrs is not None:
            result[alg] = pcrs
    return result


# --- verification ------------------------------------------------------------

def _normalise_pcr_values(
        pcr_values: Mapping[int, Mapping[int, bytes]]
) -> dict[int, dict[int, bytes]]:
    result: dict[int, dict[int, bytes]] = {}
    for alg, bank in pcr_values.items():
        size = constants.KNOWN_DIGEST_SIZES.get(int(alg))
        values = {}
        for pcr, value in bank.items():
            if not isinstance(value, (bytes, bytearray)):
                raise TypeError("PCR values must be bytes")
            if size is not None and len(value) != size:
                raise exception.MalformedEvidence(
                    what="PCR values",
                    reason="PCR %d in bank %#06x is %d bytes, not %d"
                    % (pcr, alg, len(value), size))
            values[int(pcr)] = bytes(value)
        result[int(alg)] = values
    return result


#: PCRs only platform firmware extends (SRTM): the firmware event log must
#: account for every one of them, so a quoted PCR 0-7 the log never extends
#: must still hold its reset value.
FIRMWARE_PCRS = range(0, 8)


def _reset_values(pcr: int, size: int, locality: int | None) -> set[bytes]:
    if pcr == 0 and locality is not None:
        return {bytes(size - 1) + bytes((locality,))}
    if pcr in FIRMWARE_PCRS:
        return {bytes(size)}
    # 17-22 reset to all ones on a PC Client TPM, to zero after DRTM.
    return {bytes(size), b"\xff" * size}


@dataclass(slots=True)
class _Outcome:
    failures: dict[int, list[int]] = field(default_factory=dict)
    checked: dict[int, tuple[int, ...]] = field(default_factory=dict)
    unaccounted: dict[int, tuple[int, ...]] = field(default_factory=dict)


def _compare(events: tuple[Event, ...], locality: int | None,
             quoted: Mapping[int, Mapping[int, bytes]],
             algs: list[int]) -> _Outcome:
    """Per bank: failing PCRs, PCRs that match, PCRs nobody accounts for.

    A PCR the log extends must equal its replay. A quoted PCR the log never
    extends must hold its reset value if it is a firmware PCR (0-7);
    otherwise it is checked if at a reset value, else "unaccounted" (some
    other log, e.g. IMA's PCR 10, or events stripped from this one).
    """
    outcome = _Outcome()
    for alg in algs:
        replayed = _replay_bank(events, alg, locality)
        if replayed is None:
            continue
        size = constants.HASH_ALGORITHMS[alg].digest_size
        bad, good, unaccounted = [], [], []
        for pcr, value in sorted(quoted[alg].items()):
            if pcr in replayed:
                ok = hmac.compare_digest(replayed[pcr], value)
            elif value in _reset_values(pcr, size, locality):
                ok = True
            elif pcr in FIRMWARE_PCRS:
                ok = False
            else:
                unaccounted.append(pcr)
                continue
            (good if ok else bad).append(pcr)
        if bad:
            outcome.failures[alg] = bad
        elif any(p in replayed for p in good):
            outcome.checked[alg] = tuple(good)
        if unaccounted:
            outcome.unaccounted[alg] = tuple(unaccounted)
    return outcome


def _with_quirk(log: EventLog, quirk: FirmwareQuirk) -> tuple[Event, ...]:
    extra = []
    for n, (event_type, data) in enumerate(quirk.missing_events):
        digests = {alg: constants.HASH_ALGORITHMS[alg].digest(data)
                   for alg in _replayable_algs(log)}
        extra.append(Event(len(log.events) + n, quirk.pcr, event_type,
                           digests, data, -1))
    return log.events + tuple(extra)


def _data_verified(event: Event, algs: list[int]) -> bool:
    return bool(algs) and all(
        hmac.compare_digest(
            constants.HASH_ALGORITHMS[alg].digest(event.data),
            event.digests[alg])
        for alg in algs)


def verify_event_log(
        log: EventLog,
        pcr_values: Mapping[int, Mapping[int, bytes]]) -> VerifiedEventLog:
    """Check ``log`` against quoted PCR values and return what replayed.

    ``pcr_values`` maps TPM_ALG_ID -> {PCR index: value} and must come from
    a quote already verified. Every bank both in ``pcr_values`` and
    computable from the log is replayed; every PCR of such a bank that the
    log extends must match, and so must every quoted firmware PCR (0-7) the
    log does not extend (its reset value). On failure raises
    :class:`ReplayMismatch` whose ``pcrs`` lists ALL failing PCRs of the
    first failing bank (``failures`` holds every failing bank by name). If
    no PCR could be compared at all, raises :class:`EventLogUnverifiable`:
    an empty check proves nothing.
    """
    quoted = _normalise_pcr_values(pcr_values)
    locality = _locality_of(log.events)
    algs = [a for a in _replayable_algs(log) if a in quoted]
    events = log.events
    outcome = _compare(events, locality, quoted, algs)
    quirks_applied: tuple[str, ...] = ()
    if outcome.failures:
        failing_pcrs = {p for pcrs in outcome.failures.values() for p in pcrs}
        for quirk in FIRMWARE_QUIRKS:
            if quirk.pcr not in failing_pcrs:
                continue
            candidate = _with_quirk(log, quirk)
            retry = _compare(candidate, locality, quoted, algs)
            if not retry.failures:
                events, outcome = candidate, retry
                quirks_applied = (quirk.name,)
                break
    failures, checked = outcome.failures, outcome.checked
    if failures:
        first = min(failures)
        raise exception.ReplayMismatch(
            log=LOG_NAME, bank=constants.alg_name(first), pcrs=failures[first],
            failures={constants.alg_name(a): p for a, p in failures.items()})
    if not checked:
        raise exception.EventLogUnverifiable(
            log=LOG_NAME,
            reason="no PCR is both extended by the log (banks %s) and given "
                   "in the quoted banks %s" % (
                       sorted(constants.alg_name(a) for a in log.digest_sizes),
                       sorted(constants.alg_name(a) for a in quoted)))
    return VerifiedEventLog(
        events=_verified_events(events, checked, len(log.events)),
        checked_pcrs=checked,
        unaccounted_pcrs=outcome.unaccounted,
        quirks_applied=quirks_applied,
        startup_locality=locality if 0 in {
            p for pcrs in checked.values() for p in pcrs} else None,
        skipped_events=log.skipped_events,
        spec_id=log.spec_id)


def _verified_events(events: tuple[Event, ...],
                     checked: Mapping[int, tuple[int, ...]],
                     real_count: int) -> tuple[VerifiedEvent, ...]:
    by_pcr: dict[int, list[int]] = {}
    for alg, pcrs in checked.items():
        for pcr in pcrs:
            by_pcr.setdefault(pcr, []).append(alg)
    result = []
    for event in events:
        algs = by_pcr.get(event.pcr)
        if not algs or not event.is_extended:
            continue
        result.append(VerifiedEvent(
            index=event.index, pcr=event.pcr, event_type=event.event_type,
            digests={alg: event.digests[alg] for alg in algs},
            data=event.data, data_verified=_data_verified(event, algs),
            offset=event.offset, synthetic=event.index >= real_count))
    return tuple(result)
