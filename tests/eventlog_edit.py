"""Rewrite events of a real TCG event log, as a compromised host would.

Test-side only. The host owns its log file: it can change an event's
data, type or label at will, but not what its TPM holds. So every rewrite
here keeps the log replaying to the PCRs of the boot it describes, unless
``measured`` is given: that is the content the host's firmware (really)
measured instead, and the caller extends it into the TPM too (see
``tests.swtpm_pool.boot_from_event_log``) or replays the rewritten log.
"""

from __future__ import annotations

import struct

from trusted_pools.tpm import constants
from trusted_pools.tpm import eventlog


def digests_of(content: bytes, algs) -> dict[int, bytes]:
    """The digest of ``content`` in each bank: what a TPM extends when
    firmware measures ``content``."""
    return {alg: constants.hash_algorithm(alg).digest(content)
            for alg in algs}


def _event2(pcr: int, event_type: int, digests: dict[int, bytes],
            data: bytes) -> bytes:
    out = [struct.pack("<III", pcr, event_type, len(digests))]
    for alg, digest in digests.items():
        out.append(struct.pack("<H", alg) + digest)
    out.append(struct.pack("<I", len(data)) + data)
    return b"".join(out)


def _sha1_event(pcr: int, event_type: int, digest: bytes, data: bytes
                ) -> bytes:
    return struct.pack("<II", pcr, event_type) + digest + struct.pack(
        "<I", len(data)) + data


def _new_event(log: eventlog.EventLog, pcr: int, event_type: int,
               measured: bytes, data: bytes) -> bytes:
    digests = digests_of(measured, [a for a in log.digest_sizes])
    if log.crypto_agile:
        return _event2(pcr, event_type, digests, data)
    (digest,) = digests.values()
    return _sha1_event(pcr, event_type, digest, data)


def rewrite_events(log_bytes: bytes, changes: dict[int, dict]) -> bytes:
    """The log with events changed: ``changes`` maps an event index (as
    parsed) to any of ``data=`` (new event data), ``event_type=`` (new
    type) and ``measured=`` (content whose hash replaces the digests in
    every bank: what the firmware measured instead), and ``before=``: a
    list of new events ``(pcr, event_type, measured, data)`` that boot
    code measured just before that event (what a TPM holds then changes:
    the caller replays the new log for its quote)."""
    log = eventlog.parse_event_log(log_bytes)
    out = []
    for event in log.events:
        change = dict(changes.get(event.index, {}))
        unknown = set(change) - {"data", "event_type", "measured", "before"}
        if unknown:
            raise ValueError("unknown change(s) %s" % sorted(unknown))
        for pcr, event_type, measured, data in change.pop("before", ()):
            out.append(_new_event(log, pcr, event_type, measured, data))
        if not change:
            end = (log.events[event.index + 1].offset
                   if event.index + 1 < len(log.events) else len(log_bytes))
            out.append(log_bytes[event.offset:end])
            continue
        if log.crypto_agile and event.index == 0:
            raise ValueError("the Spec ID header is not an event to change")
        data = change.get("data", event.data)
        event_type = change.get("event_type", event.event_type)
        digests = dict(event.digests)
        if "measured" in change:
            digests = digests_of(change["measured"], digests)
        if log.crypto_agile:
            out.append(_event2(event.pcr, event_type, digests, data))
        else:
            (digest,) = digests.values()
            out.append(_sha1_event(event.pcr, event_type, digest, data))
    return b"".join(out)


def rewrite_event(log_bytes: bytes, index: int, **change) -> bytes:
    """:func:`rewrite_events` for one event."""
    return rewrite_events(log_bytes, {index: change})
