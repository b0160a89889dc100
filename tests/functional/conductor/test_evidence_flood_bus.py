"""A compromised compute host floods its conductor's evidence queue over
the real bus (RabbitMQ), and the honest hosts do not notice.

The attacker holds one host's bus credentials: it can cast
``submit_evidence`` and ``submit_evidence_batch`` (1,000 pushes a
message) to the conductor that owns it, in any name. The queue is bounded
(``evidence_queue_limit``), here to a little more than the honest pushes
of one epoch, so that a flood that took queue places would shed honest
evidence and turn honest hosts unknown:

* invented host names (all hash to this conductor: it is alone on the
  ring) are dropped before they take a place (``not_enrolled``);
* pushes in an honest, enrolled host's name (its own genuine push
  renamed, garbage, the victim's own genuine pushes replayed) hold at most
  ``max_pending_per_host`` places; the other hosts keep being verified
  every interval, and the victim gets no untrusted verdict from them: the
  forged pushes that are verified earn it a direct challenge (at most one
  per interval), whose answer keeps it trusted.

Each test fails without its check: with no enrolled-name check the
invented names fill the queue (``queue_full``), with no per-name cap the
victim's name does.
"""

from __future__ import annotations

import itertools
import multiprocessing
import time
from typing import Any

import pytest

from tests.bus_fleet import BusFleet, CONDUCTOR
from trusted_pools.conductor import rpcapi as conductor_rpcapi

pytestmark = [pytest.mark.rabbitmq, pytest.mark.slow]

HOSTS = 12
INTERVAL = 2
# One epoch of honest pushes plus a little: a flood that could take
# places would shed honest pushes at once.
QUEUE_LIMIT = HOSTS + 4
# Seconds the attacker waits after each message of 1,000 pushes.
ATTACK_PAUSE = 0.4
# Epochs a host may miss before it is unknown: 3 x 2 s, room for a loaded
# two-core machine (the attacker, the broker and the conductor share it).
MISSED = 3


def _attacker(url: str, exchange: str, batches: list[list[dict]],
              seconds: float, pause: float, result: Any) -> None:
    """The compromised host: its own process (and so its own CPU, as on
    its own machine) with nothing but bus access; casts each batch (one
    message of up to 1,000 pushes) and one single push, then pauses."""
    from bench._bus import configure_bus
    fixture = configure_bus(url, exchange, "trusted_pools_attacker")
    try:
        attacker = conductor_rpcapi.EvidenceAPI()
        sent = 0
        deadline = time.monotonic() + seconds
        for batch in itertools.cycle(batches):
            if time.monotonic() > deadline:
                break
            attacker.submit_evidence_batch({}, CONDUCTOR, batch)
            attacker.submit_evidence({}, CONDUCTOR, batch[0])
            sent += len(batch) + 1
            time.sleep(pause)
        result.put(sent)
    finally:
        from trusted_pools.common import rpc
        rpc.cleanup()
        fixture.cleanUp()


def _flood_for(conf: Any, seconds: float, batches: list[list[dict]]) -> int:
    """Run the attacker for ``seconds``; returns the pushes it cast. It
    pauses ATTACK_PAUSE after each message: the lever under test is the
    conductor's bounded queue, not how many messages a second the
    broker and the conductor's RPC thread can take (a host's bus user is
    limited at the broker, see doc/source/scale.md)."""
    context = multiprocessing.get_context("spawn")
    result = context.Queue()
    process = context.Process(target=_attacker, args=(
        conf.transport_url, conf.control_exchange, batches, seconds,
        ATTACK_PAUSE, result))
    process.start()
    try:
        return result.get(timeout=seconds + 60)
    finally:
        process.join(timeout=30)
        if process.is_alive():
            process.kill()


def _counted(pool: BusFleet, reason: str, at_least: float) -> dict:
    """The conductor's drop counts once the casts still on the bus were
    delivered (or 30 s passed)."""
    deadline = time.monotonic() + 30
    while pool.manager.shed.get(reason, 0) < at_least and \
            time.monotonic() < deadline:
        time.sleep(0.1)
    return dict(pool.manager.shed)


def _honest_keep_being_verified(pool: BusFleet, names: list[str],
                                started: float) -> None:
    """Every host named was verified trusted after the flood started, and
    none of them has an untrusted or unknown verdict since."""
    pool.wait_for(pool.all_trusted_after(time.time() - INTERVAL, names),
                  timeout=6 * INTERVAL)
    for name in names:
        bad = [(v.status, v.reasons) for v in pool.history(name, started)
               if v.status != "trusted"]
        assert not bad, (name, bad)


def test_invented_names_take_no_queue_place(tmp_path, rabbit_conf):
    pool = BusFleet(tmp_path, HOSTS, interval=INTERVAL,
                    unknown_after_missed=MISSED,
                    max_queued_evidence=QUEUE_LIMIT)
    try:
        pool.start()
        pool.wait_for(pool.all_trusted_after(0), timeout=30)
        attacker_host = pool.names[0]
        own = next(w for w in reversed(pool.pushed)
                   if w["host"] == attacker_host)
        invented = ["evil-%06d" % i for i in range(3000)]
        batches = [[dict(own, host=name) for name in invented[i:i + 1000]]
                   for i in range(0, len(invented), 1000)]
        started = time.time()
        sent = _flood_for(rabbit_conf, 4 * INTERVAL, batches)
        shed = _counted(pool, "not_enrolled", sent)
        assert sent > 20 * QUEUE_LIMIT, sent
        # Dropped before the queue, every one of them.
        assert shed.get("not_enrolled", 0) >= sent * 0.9, (sent, shed)
        assert shed["queue_full"] == 0, shed
        _honest_keep_being_verified(pool, pool.names, started)
        # No host row, verdict or challenge came out of the invented names.
        assert {h.hostname for h in pool.db.list_hosts()} == set(pool.names)
        assert not set(pool.manager.failure_challenges) & set(invented)
        dropped = pool.manager.metrics.dropped.labels("not_enrolled")
        assert dropped._value.get() == shed["not_enrolled"]
    finally:
        pool.close()


def test_a_flood_in_an_honest_hosts_name(tmp_path, rabbit_conf):
    pool = BusFleet(tmp_path, HOSTS, interval=INTERVAL,
                    unknown_after_missed=MISSED,
                    max_queued_evidence=QUEUE_LIMIT)
    try:
        pool.start()
        pool.wait_for(pool.all_trusted_after(0), timeout=30)
        attacker_host, victim = pool.names[0], pool.names[5]
        own = next(w for w in reversed(pool.pushed)
                   if w["host"] == attacker_host)
        victims_own = [w for w in pool.pushed if w["host"] == victim]
        epoch_id = pool.manager.epochs.current.epoch_id
        garbage = {"version": 2, "host": victim, "epoch_id": epoch_id,
                   "quote": "AAAA", "signature": "%%%", "pcrs": {}}
        renamed = dict(own, host=victim)
        batches = [[renamed] * 1000, [garbage] * 1000,
                   (victims_own * 1000)[:1000]]
        started = time.time()
        sent = _flood_for(rabbit_conf, 5 * INTERVAL, batches)
        shed = _counted(pool, "host_pending_full", sent * 0.9)
        elapsed = time.time() - started
        assert sent > 20 * QUEUE_LIMIT, sent
        assert shed.get("host_pending_full", 0) >= sent * 0.9, (sent, shed)
        assert shed["queue_full"] == 0, shed
        # The other hosts were verified throughout; the victim too (by
        # its pushes or its direct challenges), and nothing forged in its
        # name gave it an untrusted verdict.
        _honest_keep_being_verified(pool, pool.names, started)
        challenges = pool.manager.failure_challenges.get(victim, 0)
        assert 1 <= challenges <= elapsed / INTERVAL + 2, challenges
        assert set(pool.manager.failure_challenges) == {victim}
    finally:
        pool.close()
