"""Agents -> trusted-pools-relay -> conductor, over the real bus.

The simulated hosts (tests.bus_fleet) push with the relay's client, as an
agent with ``[agent] relay_topic`` does; a real :class:`RelayService`
(the console script's service, in this process) batches them per
conductor and casts ``submit_evidence_batch``; a real conductor verifies.

* The hosts are trusted through the relay, which sent fewer messages than
  pushes.
* A relay that tampers with one host's push in a batch (its evidence, its
  name, or its epoch and so its nonce) gets that push no verdict: the host
  it names is challenged directly (never judged untrusted on what the
  relay sent), and the other hosts of the same batch are unaffected.
* A relay that stops: its hosts go unknown once their freshness window
  has passed, never trusted on old evidence.
* Agents and their relay on a rack's own virtual host: the conductors'
  bus carries the batches only.
"""

from __future__ import annotations

import copy
import time
from typing import Any

import pytest

from tests.bus_fleet import BusFleet
from trusted_pools.relay import rpcapi as relay_rpcapi
from trusted_pools.relay import service as relay_service

pytestmark = [pytest.mark.rabbitmq, pytest.mark.slow]

HOSTS = 10
INTERVAL = 2
MISSED = 2


def _relay(conf: Any, max_batch: int = 50, max_delay: float = 0.2,
           transport: Any = None) -> relay_service.RelayService:
    conf.set_override("host", "relay-rack-1", group="relay")
    conf.set_override("max_batch", max_batch, group="relay")
    conf.set_override("max_delay", max_delay, group="relay")
    return relay_service.RelayService(conf, transport=transport)


def _pool(tmp_path: Any) -> BusFleet:
    return BusFleet(tmp_path, HOSTS, interval=INTERVAL,
                    unknown_after_missed=MISSED,
                    send=relay_rpcapi.RelayAPI().submit_evidence)


def test_agents_through_a_relay_are_trusted(tmp_path, rabbit_conf):
    relay = _relay(rabbit_conf)
    relay.start()
    pool = _pool(tmp_path)
    try:
        pool.start()
        started = time.time()
        pool.wait_for(pool.all_trusted_after(started + INTERVAL),
                      timeout=30)
        counts = dict(relay.manager.counts)
        assert counts["pushes"] >= 2 * HOSTS, counts
        # One message per epoch's batch, not one per host.
        assert counts["batches"] * 3 <= counts["pushes"], counts
        assert pool.manager.failure_challenges == {}
        for name in pool.names:
            assert not [v for v in pool.history(name, 0)
                        if v.status != "trusted"], name
    finally:
        pool.close()
        relay.stop()


def _tamper(kind: str, wire: dict, pool: BusFleet, other: str) -> dict:
    wire = copy.deepcopy(wire)
    if kind == "evidence":
        # A PCR value the quote does not cover: the digest no longer
        # matches the signed one.
        wire["pcrs"]["sha256"]["0"] = "ab" * 32
    elif kind == "name":
        wire["host"] = other
    elif kind == "nonce":
        # An epoch that is not this one: another nonce is expected.
        wire["epoch_id"] = "0" * len(str(wire["epoch_id"]))
    return wire


@pytest.mark.parametrize("kind", ["evidence", "name", "nonce"])
def test_a_relay_that_tampers_with_one_push(tmp_path, rabbit_conf, kind):
    relay = _relay(rabbit_conf, max_batch=HOSTS, max_delay=0.5)
    pool = _pool(tmp_path)
    victim, other = pool.names[3], pool.names[7]
    batches: list[list[str]] = []
    honest_forward = relay.manager._forward

    def tampering_forward(context: dict, conductor: str,
                          batch: list[dict]) -> None:
        names = [w.get("host") for w in batch]
        batch = [_tamper(kind, w, pool, other) if w.get("host") == victim
                 else w for w in batch]
        batches.append(names)
        honest_forward(context, conductor, batch)
    relay.manager._forward = tampering_forward
    relay.start()
    try:
        pool.start()
        started = time.time()
        time.sleep(4 * INTERVAL)
        untouched = [n for n in pool.names if n not in (victim, other)]
        pool.wait_for(pool.all_trusted_after(time.time() - INTERVAL,
                                             untouched), timeout=30)
        # The tampered push travelled with the other hosts' pushes.
        shared = [b for b in batches if victim in b and len(b) > 1]
        assert shared, batches
        for name in pool.names:
            bad = [(v.status, v.reasons) for v in pool.history(name, 0)
                   if v.status == "untrusted"]
            assert not bad, (name, bad)
        for name in untouched:
            assert not [v for v in pool.history(name, started)
                        if v.status != "trusted"], name
        challenged = set(pool.manager.failure_challenges)
        if kind == "name":
            # The victim's push now claims another host, whose AK did not
            # sign it: at most that host is challenged (and answers); the
            # victim's evidence simply did not arrive (as if dropped).
            assert challenged <= {other}, challenged
            assert pool.latest()[other].status == "trusted"
        else:
            # The victim is challenged directly (not through the relay)
            # and its own answer keeps it trusted.
            assert challenged == {victim}, challenged
            pool.wait_for(pool.all_trusted_after(
                time.time() - 2 * INTERVAL, [victim]), timeout=30)
    finally:
        pool.close()
        relay.stop()


def test_a_stopped_relay_turns_its_hosts_unknown_not_trusted(
        tmp_path, rabbit_conf):
    relay = _relay(rabbit_conf)
    relay.start()
    pool = _pool(tmp_path)
    try:
        pool.start()
        pool.wait_for(pool.all_trusted_after(time.time() + INTERVAL),
                      timeout=30)
        relay.stop()
        stopped = time.time()
        # Silence beyond unknown_after_missed intervals: unknown.
        latest = pool.wait_for(lambda latest: all(
            latest[n].status == "unknown" for n in pool.names),
            timeout=(MISSED + 3) * INTERVAL + 10)
        assert min(v.issued_at.timestamp() for v in latest.values()) >= \
            int(stopped) + MISSED * INTERVAL - 1
        # Nothing trusted was issued from old evidence after the relay
        # stopped (pushes already on their way may give one more).
        for name in pool.names:
            late = [v for v in pool.history(name, stopped + INTERVAL)
                    if v.status == "trusted"]
            assert not late, (name, late)
        assert pool.manager.failure_challenges == {}
    finally:
        pool.close()
        relay.stop()


def test_a_rack_bus_keeps_the_per_host_messages_off_the_conductors_bus(
        tmp_path, rabbit_conf):
    """Agents push to their relay on a rack's own virtual host ([agent]
    relay_transport_url); the relay sends its batches on the conductors'
    bus ([relay] conductor_transport_url). The conductors' bus then never
    holds the relay topic: one message per batch reaches it, not one per
    host."""
    import subprocess
    import urllib.parse
    import uuid

    from tests.rabbitmq import rabbitmqctl
    from trusted_pools.common import rpc

    central = rabbit_conf.transport_url
    rack_vhost = "tp-test-rack-%s" % uuid.uuid4().hex[:8]
    assert rabbitmqctl("add_vhost", rack_vhost) and rabbitmqctl(
        "set_permissions", "-p", rack_vhost, "guest", ".*", ".*", ".*"), \
        "rabbitmqctl is needed to make the rack's virtual host"
    parts = urllib.parse.urlsplit(central)
    rack_url = urllib.parse.urlunsplit(parts._replace(path="/" + rack_vhost))
    rack = rpc.get_transport(rabbit_conf, rack_url)
    rabbit_conf.set_override("conductor_transport_url", central,
                             group="relay")
    # A topic of this test's own: the session's virtual host may hold the
    # other tests' relay queues.
    topic = "trusted_pools_relay_rack_%s" % uuid.uuid4().hex[:8]
    rabbit_conf.set_override("topic", topic, group="relay")
    relay = _relay(rabbit_conf, transport=rack)
    relay.start()
    pool = BusFleet(tmp_path, HOSTS, interval=INTERVAL,
                    unknown_after_missed=MISSED,
                    send=relay_rpcapi.RelayAPI(
                        topic, transport=rack).submit_evidence)
    try:
        pool.start()
        pool.wait_for(pool.all_trusted_after(time.time() + INTERVAL),
                      timeout=30)
        counts = dict(relay.manager.counts)
        assert counts["batches"] * 3 <= counts["pushes"], counts

        def queues(vhost: str) -> str:
            return subprocess.run(
                ["rabbitmqctl", "list_queues", "-q", "-p", vhost, "name"],
                check=True, capture_output=True, text=True,
                timeout=60).stdout
        central_vhost = urllib.parse.unquote(parts.path.lstrip("/")) or "/"
        assert topic in queues(rack_vhost)
        assert topic not in queues(central_vhost)
    finally:
        pool.close()
        relay.stop()
        rack.cleanup()
        rabbit_conf.clear_override("conductor_transport_url", group="relay")
        rabbit_conf.clear_override("topic", group="relay")
        rabbitmqctl("delete_vhost", rack_vhost)
