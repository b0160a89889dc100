"""Event log parse + replay throughput against the bare extend chain.

The baseline is the minimum any replay must do: one hashlib call per
extended event per bank, over digests already in memory. The ratio shows
what parsing, bounds checks and bookkeeping cost on top of it.

Run: ``.venv/bin/python -m bench.bench_eventlog``
"""

from __future__ import annotations

import base64
import pathlib

from bench._timing import median_seconds, report
from trusted_pools.tpm import constants, eventlog

DATA = pathlib.Path(__file__).resolve().parents[1] / "tests" / "data" / \
    "eventlog"


def _logs() -> list[tuple[str, bytes]]:
    logs = []
    for path in DATA.glob("**/*"):
        if not path.is_file() or path.name.endswith(".yaml") or \
                "bogus" in path.name or "vendordata" in path.name:
            continue
        raw = path.read_bytes()
        if path.name.endswith(".b64"):
            raw = base64.b64decode(raw)
        logs.append((str(path.relative_to(DATA)), raw))
    return logs


def _chains(log: eventlog.EventLog) -> dict[int, list[tuple[int, bytes]]]:
    return {alg: [(e.pcr, e.digests[alg]) for e in log.events
                  if e.is_extended and alg in e.digests]
            for alg in log.digest_sizes if alg in constants.HASH_ALGORITHMS}


def _bench_one(name: str, raw: bytes, number: int) -> None:
    log = eventlog.parse_event_log(raw)
    chains = _chains(log)
    events = len(log.events)

    def baseline() -> None:
        for alg, chain in chains.items():
            new = constants.HASH_ALGORITHMS[alg].new
            zero = bytes(constants.HASH_ALGORITHMS[alg].digest_size)
            values: dict[int, bytes] = {}
            for pcr, digest in chain:
                values[pcr] = new(values.get(pcr, zero) + digest).digest()

    def subject() -> None:
        eventlog.replay_event_log(eventlog.parse_event_log(raw))

    base = median_seconds(baseline, number=number)
    subj = median_seconds(subject, number=number)
    pcrs = eventlog.replay_event_log(log)
    verify = median_seconds(
        lambda: eventlog.verify_event_log(eventlog.parse_event_log(raw),
                                          pcrs), number=number)
    print("%s: %d bytes, %d events, banks %s"
          % (name, len(raw), events,
             [constants.HASH_ALGORITHMS[a].name for a in chains]))
    report("  parse+replay", subj, base, "bare hashlib extends")
    report("  parse+verify", verify, base, "bare hashlib extends")
    report("  parse+replay events/s", events / subj, unit="events/s")


def main() -> None:
    logs = _logs()
    largest = max(logs, key=lambda item: len(item[1]))
    most_events = max(
        logs, key=lambda item: len(eventlog.parse_event_log(item[1]).events))
    _bench_one("largest log " + largest[0], largest[1], number=50)
    if most_events[0] != largest[0]:
        _bench_one("most events " + most_events[0], most_events[1],
                   number=50)


if __name__ == "__main__":
    main()
