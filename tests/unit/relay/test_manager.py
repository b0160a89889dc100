"""The relay's batching (trusted_pools.relay.manager), without a bus:
``forward`` records what would be cast."""

from __future__ import annotations

import oslo_messaging as messaging
import pytest

from trusted_pools.relay import manager as relay_manager


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _relay(**kw):
    sent: list[tuple[str, list[dict]]] = []
    clock = Clock()
    relay = relay_manager.RelayManager(
        lambda context, conductor, batch: sent.append((conductor, batch)),
        clock=clock, **kw)
    return relay, sent, clock


def _push(i: int) -> dict:
    return {"host": "h%d" % i, "quote": "q%d" % i}


def test_a_full_batch_goes_at_once_per_conductor_in_order():
    relay, sent, _ = _relay(max_batch=3, max_delay=1.0)
    for i in range(7):
        relay.submit_evidence({}, "c-a" if i % 2 else "c-b", _push(i))
    # c-b got 0, 2, 4 (full, sent), c-a got 1, 3, 5 (full, sent); 6 waits.
    assert sent == [("c-b", [_push(0), _push(2), _push(4)]),
                    ("c-a", [_push(1), _push(3), _push(5)])]
    assert relay.pending() == 1


def test_a_batch_that_waited_max_delay_is_sent():
    relay, sent, clock = _relay(max_batch=100, max_delay=0.5)
    relay.submit_evidence({}, "c", _push(1))
    clock.now += 0.4
    relay.submit_evidence({}, "c", _push(2))
    assert relay.flush_due() == 0
    clock.now += 0.1
    assert relay.flush_due() == 1
    assert sent == [("c", [_push(1), _push(2)])]
    assert relay.flush_all() == 0


def test_pushes_are_forwarded_unchanged_and_the_context_is_not():
    relay, sent, _ = _relay(max_batch=1)
    wire = _push(1)
    seen = []
    relay._forward = lambda context, conductor, batch: seen.append(
        (context, batch))
    relay.submit_evidence({"roles": ["admin"], "is_admin": True}, "c", wire)
    assert seen == [({}, [wire])]
    assert seen[0][1][0] is wire


@pytest.mark.parametrize("conductor, evidence", [
    (None, _push(1)), ("", _push(1)), ("x" * 256, _push(1)),
    ("c", "not a push"), ("c", {"quote": "no host"}), ("c", {"host": 7}),
])
def test_what_is_not_a_push_is_dropped(conductor, evidence):
    relay, sent, _ = _relay(max_batch=1)
    relay.submit_evidence({}, conductor, evidence)
    assert sent == [] and relay.pending() == 0
    assert relay.counts["malformed"] == 1


def test_invented_conductors_cost_early_sends_not_honest_pushes():
    """A compromised agent of the rack names many conductors: the relay
    holds batches for at most max_conductors and sends the oldest early;
    the honest conductor's pushes are all sent."""
    relay, sent, clock = _relay(max_batch=50, max_delay=5.0,
                                max_conductors=4)
    relay.submit_evidence({}, "honest", _push(0))
    for i in range(100):
        clock.now += 0.001
        relay.submit_evidence({}, "invented-%d" % i, _push(i))
    relay.submit_evidence({}, "honest", _push(1))
    relay.flush_all()
    honest = [p for c, batch in sent if c == "honest" for p in batch]
    assert honest == [_push(0), _push(1)]
    assert relay.pending() == 0
    assert max(len(b) for _, b in sent) <= 50


def test_a_batch_the_bus_refuses_is_counted_and_dropped():
    def refuse(context, conductor, batch):
        raise messaging.MessageDeliveryFailure("broker away")
    relay = relay_manager.RelayManager(refuse, max_batch=2)
    relay.submit_evidence({}, "c", _push(1))
    relay.submit_evidence({}, "c", _push(2))
    assert relay.counts["send_failed"] == 2
    assert relay.pending() == 0


@pytest.mark.parametrize("kw", [{"max_batch": 0}, {"max_batch": 1001},
                                {"max_delay": 0}, {"max_conductors": 0},
                                {"max_batch_bytes": 0}])
def test_bad_settings_are_refused(kw):
    with pytest.raises(ValueError):
        relay_manager.RelayManager(lambda *a: None, **kw)


def _sized(host: str, size: int) -> dict:
    """A push that the bus encodes in about ``size`` bytes."""
    return {"host": host, "event_log": "A" * size}


def test_a_big_push_never_takes_other_hosts_pushes_down_with_it():
    """A compromised agent of the rack casts pushes as big as the broker
    lets it (any name): the bus refuses a batch message over its size
    limit whole, so a batch mixing that push with honest ones would lose
    them all. The relay sends a batch before a push takes it over
    max_batch_bytes, and a push that large alone: the refused messages
    hold the attacker's pushes only."""
    broker_limit = 100_000  # the broker's max_message_size, scaled down
    sent: list[tuple[str, list[dict]]] = []
    refused: list[list[dict]] = []

    def bus(context, conductor, batch):
        if sum(relay_manager._wire_size(p) for p in batch) > broker_limit:
            refused.append(batch)
            raise messaging.MessageDeliveryFailure("message too large")
        sent.append((conductor, batch))

    relay = relay_manager.RelayManager(bus, max_batch=50, max_delay=5.0,
                                       max_batch_bytes=60_000)
    honest = [_sized("honest-%d" % i, 2_000) for i in range(20)]
    for i, push in enumerate(honest):
        relay.submit_evidence({}, "c", push)
        # Between the honest pushes: one just under the batch bound (it
        # starts a batch the next honest push would take over the bound)
        # and one over the broker's limit.
        relay.submit_evidence({}, "c", _sized("honest-%d" % i, 55_000))
        relay.submit_evidence({}, "c", _sized("honest-0", 150_000))
    relay.flush_all()
    delivered = [p for _, batch in sent for p in batch]
    assert [p for p in delivered if p in honest] == honest
    assert refused and all(len(batch) == 1 and
                           len(batch[0]["event_log"]) == 150_000
                           for batch in refused)
    assert all(sum(relay_manager._wire_size(p) for p in batch) <= 60_000
               for _, batch in sent)


def test_relay_memory_is_bounded_in_bytes():
    relay, sent, clock = _relay(max_batch=1000, max_delay=5.0,
                                max_conductors=4, max_batch_bytes=50_000)
    for i in range(200):
        clock.now += 0.001
        relay.submit_evidence({}, "c-%d" % (i % 8), _sized("x", 10_000))
        with relay._lock:
            held = sum(b.size for b in relay._batches.values())
        assert held <= 4 * 50_000


def test_a_non_ascii_push_is_measured_as_the_bus_encodes_it():
    # JSON escapes each such character in six bytes.
    relay, sent, _ = _relay(max_batch=1000, max_delay=5.0,
                            max_batch_bytes=65_000)
    relay.submit_evidence({}, "c", {"host": "h", "x": "\u00e9" * 11_000})
    assert len(sent) == 1 and len(sent[0][1]) == 1
