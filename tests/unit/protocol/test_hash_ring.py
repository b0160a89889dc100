"""The hash ring spreads hosts evenly and moves few of them on change."""

from collections import Counter

import pytest

from trusted_pools.protocol.hash_ring import HashRing

HOSTS = ["compute-%05d" % i for i in range(20000)]


def test_every_host_has_exactly_one_live_owner():
    ring = HashRing(["c1", "c2", "c3"])
    owners = {h: ring.owner(h) for h in HOSTS}
    assert set(owners.values()) == {"c1", "c2", "c3"}
    parts = [ring.hosts_of(c, HOSTS) for c in ("c1", "c2", "c3")]
    assert sorted(sum(parts, [])) == sorted(HOSTS)


def test_spread_is_even():
    ring = HashRing(["c1", "c2", "c3", "c4"])
    counts = Counter(ring.owner(h) for h in HOSTS)
    for conductor in ("c1", "c2", "c3", "c4"):
        assert abs(counts[conductor] - 5000) < 1000, counts


def test_dead_conductor_moves_only_its_hosts():
    before = HashRing(["c1", "c2", "c3"])
    after = HashRing(["c1", "c3"])
    for host in HOSTS:
        if before.owner(host) != "c2":
            assert after.owner(host) == before.owner(host)
        else:
            assert after.owner(host) in ("c1", "c3")


def test_same_membership_gives_same_owners():
    assert [HashRing(["b", "a"]).owner(h) for h in HOSTS[:500]] == \
        [HashRing(["a", "b"]).owner(h) for h in HOSTS[:500]]


def test_empty_ring_says_what_to_do():
    with pytest.raises(LookupError, match="no live conductor"):
        HashRing([]).owner("compute-1")
