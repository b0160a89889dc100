"""IMA list verification speed: parse + replay of a 100,000-entry ima-ng
ascii list into the SHA-256 bank, on one core.

Baseline (same run, same entries): bare hashlib - SHA-256 of each entry's
template data (already built) and the PCR extend - the least any verifier
must do. Target from the issue: 1,000,000 entries/s.

Incremental: verifying 100 new entries after 100,000 already verified
(whole log given, state remembered) against verifying a 100-entry log.

Run: .venv/bin/python -m bench.bench_ima
"""

from __future__ import annotations

import hashlib
import statistics
import sys

from bench._timing import median_seconds, report
from tests import ima_gen
from trusted_pools.tpm import ima
from trusted_pools.tpm.constants import TPM_ALG

SHA256 = int(TPM_ALG.SHA256)
ENTRIES = 100_000
NEW = 100


def _rate(seconds: float, count: int) -> str:
    return "%10.0f entries/s" % (count / seconds)


def main() -> None:
    if "--inline-only" in sys.argv:
        _inline_only()
        return
    log = ima_gen.generate_ascii_log(ENTRIES + NEW, seed=42)
    lines = log.splitlines(keepends=True)
    old = b"".join(lines[:ENTRIES])
    quoted_old = {SHA256: ima_gen.naive_replay(old)}
    quoted_all = {SHA256: ima_gen.naive_replay(log)}
    datas = [e.template_data for e in ima.parse_ima_log(old)]

    def baseline() -> None:
        new = hashlib.sha256
        pcr = bytes(32)
        for data in datas:
            pcr = new(pcr + new(data).digest()).digest()
        assert pcr == quoted_old[SHA256]

    def verify() -> None:
        assert ima.verify_ima_log(old, quoted_old).covered == ENTRIES

    def verify_unchecked() -> None:
        assert ima.verify_ima_log(old, quoted_old,
                                  check_template_hashes=False).covered \
            == ENTRIES

    def parse_and_replay() -> None:
        ima.replay_ima(ima.parse_ima_log(old), [SHA256])

    print("IMA list, %d ima-ng entries, %.1f MB, SHA-256 bank"
          % (ENTRIES, len(old) / 1e6))
    base = median_seconds(baseline, number=1, repeat=5)
    full = median_seconds(verify, number=1, repeat=5)
    unchecked = median_seconds(verify_unchecked, number=1, repeat=5)
    strict = median_seconds(parse_and_replay, number=1, repeat=3)
    report("baseline: bare sha256 template hash + extend", base)
    print("    %s" % _rate(base, ENTRIES))
    report("verify_ima_log (parse, SHA-1 check, replay)", full, base)
    print("    %s   (target 1,000,000/s: %.0f%%)"
          % (_rate(full, ENTRIES), 100 * ENTRIES / full / 1e6))
    report("verify_ima_log, recorded hashes unchecked", unchecked, base)
    print("    %s" % _rate(unchecked, ENTRIES))
    report("parse_ima_log (IMAEntry objects) + replay_ima", strict, base)
    print("    %s" % _rate(strict, ENTRIES))

    state = ima.verify_ima_log(old, quoted_old).state
    tail = b"".join(lines[ENTRIES:])
    small = b"".join(lines[:NEW])
    quoted_small = {SHA256: ima_gen.naive_replay(small)}

    def incremental_whole_log() -> None:
        result = ima.verify_ima_log(log, quoted_all, state)
        assert result.covered == NEW

    def incremental_tail() -> None:
        assert ima.verify_ima_log(tail, quoted_all, state,
                                  tail=True).covered == NEW

    def hundred_entries() -> None:
        assert ima.verify_ima_log(small, quoted_small).covered == NEW

    small_t = median_seconds(hundred_entries, number=20, repeat=5)
    whole_t = median_seconds(incremental_whole_log, number=20, repeat=5)
    tail_t = median_seconds(incremental_tail, number=20, repeat=5)
    report("100 new after 100,000 (whole log, saved state)", whole_t,
           small_t, "a 100-entry log")
    report("100 new after 100,000 (tail only)", tail_t, small_t,
           "a 100-entry log")

    # The binary list the agents send (names may hold any byte).
    bold = ima_gen.ascii_to_binary(old)
    bsmall = ima_gen.ascii_to_binary(small)
    btail = ima_gen.ascii_to_binary(tail)
    bstate = ima.verify_ima_log(bold, quoted_old, fmt="binary").state

    def binary_verify() -> None:
        assert ima.verify_ima_log(bold, quoted_old,
                                  fmt="binary").covered == ENTRIES

    def binary_hundred() -> None:
        assert ima.verify_ima_log(bsmall, quoted_small,
                                  fmt="binary").covered == NEW

    def binary_tail() -> None:
        assert ima.verify_ima_log(btail, quoted_all, bstate, fmt="binary",
                                  tail=True).covered == NEW

    bfull = median_seconds(binary_verify, number=1, repeat=5)
    report("binary: verify_ima_log (parse, SHA-1 check, replay)", bfull,
           base)
    print("    %s" % _rate(bfull, ENTRIES))
    bsmall_t = median_seconds(binary_hundred, number=20, repeat=5)
    btail_t = median_seconds(binary_tail, number=20, repeat=5)
    report("binary: 100 new after 100,000 (tail only)", btail_t, bsmall_t,
           "a 100-entry log")
    report("binary vs ascii: 100 new after 100,000 (tail only)", btail_t,
           tail_t, "ascii tail")
    _inline_vs_reference(bold, btail, quoted_old, quoted_all, bstate)


def _alternating(subject, baseline, number: int, rounds: int
                 ) -> tuple[float, float, float]:
    """Medians of subject and baseline, and of their per-round ratios,
    measured in alternating rounds (load on the shared machine hits both
    alike)."""
    subjects, baselines = [], []
    for _ in range(rounds):
        baselines.append(median_seconds(baseline, number, repeat=1))
        subjects.append(median_seconds(subject, number, repeat=1))
    return (statistics.median(subjects), statistics.median(baselines),
            statistics.median(s / b for s, b in zip(subjects, baselines)))


def _inline_vs_reference(bold: bytes, btail: bytes, quoted_old, quoted_all,
                         bstate) -> None:
    """The binary loop the conductor runs (ima-ng entries inline) against
    the per-entry loop it replaced, whole verification each time."""
    print("binary list: inline ima-ng loop vs the per-entry reference loop "
          "(alternating rounds, median ratio; > 1x = faster)")
    for label, data, quoted, state, tail, number in (
            ("100,000 entries, whole verify", bold, quoted_old, None, False,
             1),
            ("100 new entries (tail), whole verify", btail, quoted_all,
             bstate, True, 50)):
        def verify() -> None:
            ima.verify_ima_log(data, quoted, state, fmt="binary", tail=tail)

        def batch_only() -> None:
            ima._binary_batch(data, 1, None)

        def reference_batch_only() -> None:
            ima._binary_batch_reference(data, 1, None)

        def verify_reference() -> None:
            saved = ima._binary_batch
            ima._binary_batch = ima._binary_batch_reference
            try:
                verify()
            finally:
                ima._binary_batch = saved
        new, old, ratio = _alternating(verify, verify_reference, number, 9)
        print("  %-40s %10.1f us vs %10.1f us: %.2fx the rate"
              % (label, new * 1e6, old * 1e6, 1 / ratio))
        new, old, ratio = _alternating(batch_only, reference_batch_only,
                                       number, 9)
        print("  %-40s %10.1f us vs %10.1f us: %.2fx the rate"
              % ("  parse only (the batch)", new * 1e6, old * 1e6,
                 1 / ratio))


def _inline_only() -> None:
    log = ima_gen.generate_ascii_log(ENTRIES + NEW, seed=42)
    lines = log.splitlines(keepends=True)
    old = b"".join(lines[:ENTRIES])
    quoted_old = {SHA256: ima_gen.naive_replay(old)}
    quoted_all = {SHA256: ima_gen.naive_replay(log)}
    bold = ima_gen.ascii_to_binary(old)
    btail = ima_gen.ascii_to_binary(b"".join(lines[ENTRIES:]))
    bstate = ima.verify_ima_log(bold, quoted_old, fmt="binary").state
    _inline_vs_reference(bold, btail, quoted_old, quoted_all, bstate)


if __name__ == "__main__":
    main()
