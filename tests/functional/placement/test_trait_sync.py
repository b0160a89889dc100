"""Against a real Placement: traits follow the conductor's signed verdicts.

Placement (``openstack-placement``, SQLite, noauth2) runs on 127.0.0.1 in a
child process (``tests.placement_fixture``). Verdicts are signed by the
conductor's own code (``ResultSigner`` over ``make_verdict`` /
``unknown_verdict``, via ``tests.nova_harness.VerdictFactory``) and go
through the scheduler's notification endpoint into the verdict cache; the
keeper writes through the keystoneauth1 client.
"""

from __future__ import annotations

import logging
import time
import uuid

import pytest

from tests.nova_harness import VerdictFactory
from tests.placement_fixture import PlacementServer
from trusted_pools.nova.remediation import traits as sync
from trusted_pools.nova.remediation.placement import PlacementClient
from trusted_pools.nova.scheduler.listener import TrustNotificationEndpoint

TRUSTED = "CUSTOM_TRUSTED_POOLS_TRUSTED"


def loa(n: int) -> str:
    return "CUSTOM_TRUSTED_POOLS_LOA_%d" % n


@pytest.fixture(scope="module")
def placement():
    with PlacementServer() as server:
        yield server


@pytest.fixture
def client(placement) -> PlacementClient:
    return PlacementClient.for_endpoint(placement.endpoint)


class Clock:
    def __init__(self) -> None:
        self.mono = 5000.0
        self.wall = time.time()

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.wall += seconds


class World:
    """Signer, cache, endpoint and keeper around one Placement."""

    def __init__(self, client: PlacementClient, **cache_kw) -> None:
        self.factory = VerdictFactory()
        self.clock = Clock()
        self.cache = sync.ObservedVerdictCache(
            self.factory.public_keys, wall=lambda: self.clock.wall,
            monotonic=lambda: self.clock.mono, **cache_kw)
        self.cache.mark_contact()
        self.endpoint = TrustNotificationEndpoint(self.cache)
        self.client = client
        self.keeper = sync.TraitKeeper(self.cache, client)
        self.records: list[sync.SyncRecord] = []
        self.cache.add_observer(
            lambda v: self.records.append(self.keeper.sync_host(v.host)))

    def host(self, extra_traits: set[str] = frozenset()) -> tuple[str, str]:
        name = "compute-%s" % uuid.uuid4().hex[:8]
        provider = self.client.create_provider(name)
        if extra_traits:
            self.client.update_traits(provider.uuid, add=extra_traits)
        return name, provider.uuid

    def send(self, host: str, status: str = "trusted", level: int = 3,
             **kw) -> bool:
        issued = int(self.clock.wall) if "issued_at" not in kw else \
            kw.pop("issued_at")
        return self.endpoint.handle(self.factory.payload(
            host, status=status, level=level, issued_at=issued, **kw))

    def traits(self, provider: str) -> frozenset[str]:
        return self.client.get_traits(provider).traits


@pytest.fixture
def world(client) -> World:
    return World(client)


def test_traits_appear_and_disappear_with_verdicts(world):
    host, rp = world.host(extra_traits={"HW_CPU_X86_AVX2", "CUSTOM_OPS"})
    assert world.send(host, level=3)
    assert world.traits(rp) == {TRUSTED, loa(1), loa(2), loa(3),
                                "HW_CPU_X86_AVX2", "CUSTOM_OPS"}
    world.clock.advance(1)      # same second: the less trusting one wins
    assert world.send(host, level=4)
    assert loa(4) in world.traits(rp)
    world.clock.advance(1)
    assert world.send(host, status="untrusted")
    assert world.traits(rp) == {"HW_CPU_X86_AVX2", "CUSTOM_OPS"}
    assert world.records[-1].removed == {TRUSTED, loa(1), loa(2), loa(3),
                                         loa(4)}
    world.clock.advance(1)
    assert world.send(host, level=2)
    assert world.traits(rp) == {TRUSTED, loa(1), loa(2), "HW_CPU_X86_AVX2",
                                "CUSTOM_OPS"}
    world.clock.advance(1)
    assert world.send(host, status="unknown")
    assert world.traits(rp) == {"HW_CPU_X86_AVX2", "CUSTOM_OPS"}


def test_stale_and_expired_verdicts_lose_traits_at_sweep(client):
    world = World(client, max_age=60, grace=10_000)
    stale_host, stale_rp = world.host()
    exp_host, exp_rp = world.host()
    assert world.send(stale_host, level=2, validity=3600)
    assert world.send(exp_host, level=2, validity=30)
    assert TRUSTED in world.traits(stale_rp)
    assert TRUSTED in world.traits(exp_rp)
    world.clock.advance(40)                 # exp_host's verdict expired
    records = {r.host: r for r in world.keeper.sweep()}
    assert set(records) == {exp_host}
    assert "expired" in records[exp_host].reason
    assert TRUSTED not in world.traits(exp_rp)
    assert TRUSTED in world.traits(stale_rp)
    world.clock.advance(30)                 # 70 s > max_age
    records = {r.host: r for r in world.keeper.sweep()}
    assert "stale" in records[stale_host].reason
    assert world.traits(stale_rp) == frozenset()


def test_concurrent_trait_change_is_kept(world, client, placement):
    """Someone adds CUSTOM_FOO between our GET and PUT: 409, re-read, and
    CUSTOM_FOO survives our write."""
    host, rp = world.host()
    other = PlacementClient.for_endpoint(placement.endpoint)
    real_get = client.get_traits
    calls = []

    def racing_get(provider):
        read = real_get(provider)
        if not calls:
            other.update_traits(provider, add={"CUSTOM_FOO"})
        calls.append(read.generation)
        return read

    client.get_traits = racing_get
    try:
        assert world.send(host, level=1)
    finally:
        del client.get_traits
    record = world.records[-1]
    assert record.conflicts == 1 and record.outcome == "updated"
    assert len(calls) == 2 and calls[1] > calls[0]
    assert world.traits(rp) == {"CUSTOM_FOO", TRUSTED, loa(1)}


def test_conflicts_are_bounded(world, placement):
    host, rp = world.host()
    other = PlacementClient.for_endpoint(placement.endpoint)
    world.keeper.client = flaky = PlacementClient.for_endpoint(
        placement.endpoint, conflict_retries=2)
    real_get = flaky.get_traits
    counter = iter(range(100))

    def always_racing(provider):
        read = real_get(provider)
        other.update_traits(provider, add={"CUSTOM_RACE_%d" % next(counter)})
        return read

    flaky.get_traits = always_racing
    record = world.keeper.sync_host(host)       # no verdict: nothing wanted
    assert record.outcome == "unchanged"
    assert world.send(host, level=1)
    assert world.records[-1].outcome == "failed"
    assert "3 generation conflicts" in world.records[-1].reason
    assert TRUSTED not in world.traits(rp)
    del flaky.get_traits
    assert [r.outcome for r in world.keeper.sweep()] == ["updated"]
    assert TRUSTED in world.traits(rp)


def test_allocation_candidates_only_trusted_hosts(world, client):
    hosts = {}
    for status, level in (("trusted", 4), ("trusted", 2), ("untrusted", 1),
                          ("unknown", 0), (None, 0)):
        name, rp = world.host()
        client._call("PUT", "/resource_providers/%s/inventories" % rp,
                     json={"resource_provider_generation":
                           client.get_traits(rp).generation,
                           "inventories": {"VCPU": {"total": 8},
                                           "MEMORY_MB": {"total": 4096}}})
        if status is not None:
            assert world.send(name, status=status, level=max(level, 1))
        hosts[rp] = (name, status, level)

    def candidates(required: str) -> set[str]:
        body = client._call("GET", "/allocation_candidates", params={
            "resources": "VCPU:1", "required": required}).json()
        return set(body["provider_summaries"]) & set(hosts)

    trusted = {rp for rp, (_, s, _) in hosts.items() if s == "trusted"}
    level4 = {rp for rp, (_, s, lv) in hosts.items()
              if s == "trusted" and lv >= 3}
    assert len(trusted) == 2 and len(level4) == 1
    assert candidates(TRUSTED) == trusted
    assert candidates(loa(3)) == level4
    assert candidates(loa(2)) == trusted


@pytest.mark.parametrize("case", ["bad_signature", "unknown_key",
                                  "expired"])
def test_bad_verdicts_add_no_trait(world, caplog, case):
    host, rp = world.host()
    payload = world.factory.payload(host, level=4,
                                    issued_at=int(world.clock.wall))
    if case == "bad_signature":
        token = payload["signed_result"]
        head, body, sig = token.split(".")
        payload["signed_result"] = ".".join(
            [head, body, ("A" if sig[0] != "A" else "B") + sig[1:]])
        why = "signature verification failed"
    elif case == "unknown_key":
        payload = VerdictFactory().payload(host, level=4,
                                           issued_at=int(world.clock.wall))
        why = "not among the trusted conductor keys"
    else:
        payload = world.factory.payload(
            host, level=4, issued_at=int(world.clock.wall) - 1000,
            validity=300)
        why = "expired"
    with caplog.at_level(logging.WARNING):
        assert world.endpoint.handle(payload) is False
    assert world.records == []
    assert world.traits(rp) == frozenset()
    assert any("Refused trust notification for host %s" % host in r.message
               and why in r.message for r in caplog.records), caplog.text


def test_unknown_host_adds_nothing_and_says_why(world, caplog):
    with caplog.at_level(logging.WARNING):
        assert world.send("no-such-compute", level=4)
    assert world.records[-1].outcome == "no_provider"
    assert any("no resource provider named no-such-compute" in r.message
               for r in caplog.records), caplog.text
    assert "no-such-compute" not in {
        p.name for p in world.client.providers(required_any=[TRUSTED])}


def test_full_resync_on_start(client):
    """A fresh keeper (restart) fixes traits written by an earlier life or
    by hand, and leaves other traits alone."""
    world = World(client)
    trusted, trusted_rp = world.host()
    leftover, leftover_rp = world.host(extra_traits={TRUSTED, loa(1),
                                                     "CUSTOM_KEEP"})
    world.cache._observers.clear()          # verdicts arrive, no live sync
    assert world.send(trusted, level=2)
    assert world.traits(trusted_rp) == frozenset()
    report = world.keeper.resync()
    assert trusted not in report.missing_providers
    assert report.changed >= 2 and not report.failed
    assert world.traits(trusted_rp) == {TRUSTED, loa(1), loa(2)}
    assert world.traits(leftover_rp) == {"CUSTOM_KEEP"}
    again = world.keeper.resync()
    assert again.changed == 0


def test_worker_thread_and_contact_loss(client):
    """Through the keeper's own thread; losing the conductor for longer
    than the grace strips the traits (fail closed)."""
    world = World(client, grace=30)
    world.cache._observers.clear()
    world.cache.add_observer(world.keeper.observe)
    world.keeper.sweep_interval = 0.05
    host, rp = world.host()
    world.keeper.start(initial_resync=False)
    try:
        assert world.send(host, level=1)
        assert world.keeper.wait_idle(10)
        assert world.traits(rp) == {TRUSTED, loa(1)}
        world.clock.advance(31)
        deadline = time.monotonic() + 10
        while TRUSTED in world.traits(rp) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert world.traits(rp) == frozenset()
    finally:
        world.keeper.stop()
