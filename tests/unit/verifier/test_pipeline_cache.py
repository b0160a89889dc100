"""The conductor's cache of parsed IMA entries gives exactly what the
strict parser gives, at any position in a log."""

from tests import ima_gen
from trusted_pools.verifier import pipeline as verifier
from trusted_pools.tpm import ima


def test_cached_entries_equal_freshly_parsed_ones_at_any_position():
    log = ima_gen.generate_ascii_log(40, seed=3)
    lines = log.split(b"\n")[:-1]
    cache = verifier._EntryCache(size=1000)
    assert cache.entries(lines[5:15], 6) is None  # nothing stored yet
    cache.store(lines, tuple(ima.parse_ima_log(log)))
    for first in (1, 6, 20):
        part = lines[first - 1:first + 9]
        cached = cache.entries(part, first)
        fresh = ima.parse_ima_log(b"\n".join(part) + b"\n",
                                  start_line=first)
        assert cached == tuple(fresh)


def test_a_line_not_seen_is_a_miss_and_a_full_cache_empties():
    log = ima_gen.generate_ascii_log(10, seed=4)
    lines = log.split(b"\n")[:-1]
    cache = verifier._EntryCache(size=12)
    cache.store(lines, tuple(ima.parse_ima_log(log)))
    other = ima_gen.generate_ascii_log(10, seed=5).split(b"\n")[:-1]
    assert cache.entries(lines[:3] + other[3:4], 1) is None
    cache.store(other, tuple(ima.parse_ima_log(b"\n".join(other) + b"\n")))
    assert cache.entries(lines[:1], 1) is None  # emptied when full
    assert cache.entries(other[:2], 1) is not None
