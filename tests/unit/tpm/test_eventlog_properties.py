"""Property tests: hostile bytes never escape as anything but a typed error,
and a changed log never verifies unless only unmeasured bytes changed."""

from __future__ import annotations

import datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trusted_pools import exception
from trusted_pools.tpm import eventlog
from trusted_pools.tpm.constants import TPM_ALG
from trusted_pools.tpm.eventlog import EventType
from tests.unit.tpm.test_eventlog import load, spec_id_header

PROPERTY_SETTINGS = settings(
    max_examples=150,
    # A hang shows up as a deadline overrun, not a stuck run.
    deadline=datetime.timedelta(seconds=3),
    suppress_health_check=[HealthCheck.too_slow],
)

LOG_NAMES = [
    "tpm2-tools/event-sd-boot-fedora37.bin",       # crypto-agile, sha256
    "tpm2-tools/event-uefi-sha1-log.bin",          # SHA-1 format
    "go-attestation/sb_cert_eventlog",             # three banks
    "keylime/binary_bios_measurements",            # StartupLocality
]
LOGS = {name: load(name) for name in LOG_NAMES}


def _header_offsets(data: bytes) -> list[int]:
    """Offsets outside event data: where framing and digests live (most
    of a log is data, so uniform positions would rarely hit these)."""
    log = eventlog.parse_event_log(data)
    ends = [e.offset for e in log.events[1:]] + [len(data)]
    return [p for e, end in zip(log.events, ends)
            for p in range(e.offset, end - len(e.data))]


HEADERS = {name: _header_offsets(data) for name, (data, _) in LOGS.items()}


def _exercise(data: bytes) -> eventlog.EventLog | None:
    """Parse + replay; only typed errors may come out."""
    try:
        log = eventlog.parse_event_log(data)
    except exception.TrustedPoolsError:
        return None
    try:
        eventlog.replay_event_log(log)
    except exception.TrustedPoolsError:
        pass
    return log


@PROPERTY_SETTINGS
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_give_only_typed_errors(data):
    _exercise(data)


@PROPERTY_SETTINGS
@given(st.binary(max_size=512),
       st.sampled_from([[(TPM_ALG.SHA1, 20), (TPM_ALG.SHA256, 32)],
                        [(TPM_ALG.SHA256, 32), (0x0099, 7)]]))
def test_crypto_agile_header_then_arbitrary_bytes(tail, algs):
    log = _exercise(spec_id_header(algs) + tail)
    if log is not None:
        pcrs = {TPM_ALG.SHA256: {p: bytes(32) for p in range(24)}}
        try:
            eventlog.verify_event_log(log, pcrs).summary()
        except exception.TrustedPoolsError:
            pass


def _boundaries(log: eventlog.EventLog, size: int) -> set[int]:
    return {e.offset for e in log.events[1:]} | {size}


@pytest.mark.parametrize("name", LOG_NAMES[:2])
def test_every_truncation_of_a_small_log(name):
    """A cut parses iff it falls on an event boundary; otherwise it is a
    typed error."""
    data, _ = LOGS[name]
    boundaries = _boundaries(eventlog.parse_event_log(data), len(data))
    for cut in range(len(data)):
        try:
            eventlog.parse_event_log(data[:cut])
        except exception.MalformedEvidence:
            assert cut not in boundaries
        else:
            assert cut in boundaries, cut


@PROPERTY_SETTINGS
@given(st.sampled_from(LOG_NAMES), st.data())
def test_truncations_of_real_logs(name, draw):
    data, _ = LOGS[name]
    cut = draw.draw(st.integers(0, len(data) - 1))
    boundaries = _boundaries(eventlog.parse_event_log(data), len(data))
    assert (_exercise(data[:cut]) is not None) == (cut in boundaries)


def _unmeasured(log: eventlog.EventLog, size: int) -> set[int]:
    """Byte offsets that no quote covers: event types, event data, and the
    PCR index and digests of events replay never extends. Size and count
    fields are framing and never in this set."""
    ends = [e.offset for e in log.events[1:]] + [size]
    free: set[int] = set()
    for event, end in zip(log.events, ends):
        o = event.offset
        free.update(range(o + 4, o + 8))                   # event type
        free.update(range(end - len(event.data), end))     # event data
        if not event.is_extended:
            free.update(range(o, o + 4))                   # PCR index
            sha1_format = not log.crypto_agile or event.index == 0
            start = o + 8 if sha1_format else o + 12
            free.update(range(start, end - len(event.data) - 4))
    return free


@settings(PROPERTY_SETTINGS, max_examples=250)
@given(st.sampled_from(LOG_NAMES), st.data())
def test_mutated_log_verifies_only_if_unmeasured_bytes_changed(name, draw):
    data, pcrs = LOGS[name]
    original = eventlog.parse_event_log(data)
    positions = st.one_of(st.integers(0, len(data) - 1),
                          st.sampled_from(HEADERS[name]))
    mutations = draw.draw(st.dictionaries(
        positions, st.integers(1, 255), min_size=1, max_size=4))
    mutated = bytearray(data)
    for position, xor in mutations.items():
        mutated[position] ^= xor
    log = _exercise(bytes(mutated))
    if log is None:
        return
    try:
        result = eventlog.verify_event_log(log, pcrs)
    except exception.TrustedPoolsError:
        return
    # It verified. Either only unmeasured bytes changed, and the measured
    # content is exactly the original's, or every event of some OS PCR
    # (8+) was moved out of range - which the result must then show as an
    # unaccounted PCR, never as a checked one.
    free = _unmeasured(original, len(data))

    def measured(events, pcr_filter):
        return [(e.pcr, dict(e.digests)) for e in events
                if e.is_extended and pcr_filter(e.pcr)]

    if result.unaccounted_pcrs:
        hidden = {p for ps in result.unaccounted_pcrs.values() for p in ps}
        assert hidden.isdisjoint(
            p for ps in result.checked_pcrs.values() for p in ps)
        assert all(p >= 8 for p in hidden)

        def keep(pcr):
            return pcr not in hidden
        assert measured(log.events, keep) == measured(original.events, keep)
    else:
        assert set(mutations) <= free, sorted(set(mutations) - free)
        assert measured(log.events, lambda p: True) == measured(
            original.events, lambda p: True)
    # ...and changed data is never reported as checked.
    by_index = {e.index: e for e in original.events}
    for event in result.events:
        if event.data != by_index[event.index].data:
            assert not event.data_verified
    result.summary()  # decoding never raises either


def test_mutation_property_is_not_vacuous():
    """The mutation property has both outcomes on real data: a data byte
    change verifies, a digest byte change does not."""
    data, pcrs = LOGS["keylime/binary_bios_measurements"]
    log = eventlog.parse_event_log(data)
    sep = next(e for e in log.events
               if e.event_type == EventType.EV_SEPARATOR)
    end = log.events[sep.index + 1].offset
    changed = bytearray(data)
    changed[end - 1] ^= 1
    result = eventlog.verify_event_log(
        eventlog.parse_event_log(bytes(changed)), pcrs)
    assert not next(e for e in result.events
                    if e.index == sep.index).data_verified
    changed = bytearray(data)
    changed[sep.offset + 12 + 2] ^= 1  # first byte of its first digest
    with pytest.raises(exception.ReplayMismatch):
        eventlog.verify_event_log(eventlog.parse_event_log(bytes(changed)),
                                  pcrs)
