"""Signed trust notifications over the real RabbitMQ: notification ->
cache -> filter, and what is refused (with a log line, nothing admitted).

RabbitMQ names queues by topic or pool, not by exchange: a unique exchange
per test does not keep two test runs (or a conductor test running at the
same time) off each other's queues. So every listener here has a unique
pool and the RPC test a unique topic.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

import oslo_messaging as messaging
import pytest

from tests import nova_harness as nh
from trusted_pools.common import rpc
from trusted_pools.conductor.rpcapi import VerdictsAPI
from trusted_pools.protocol.topics import TRUST_EVENT, VERDICTS_TOPIC
from trusted_pools.nova.scheduler.cache import VerdictCache
from trusted_pools.nova.scheduler.filters import TrustedHostFilter
from trusted_pools.nova.scheduler.listener import TrustListener

pytestmark = [pytest.mark.rabbitmq]


class FakeConductorEndpoint:
    """RPC endpoint answering like the conductor's verdict read API, from
    signed tokens."""

    target = messaging.Target(version="1.0")

    def __init__(self, factory: nh.VerdictFactory) -> None:
        self.factory = factory
        self.items: list[dict[str, Any]] = []

    @messaging.expose
    def verdicts_since(self, context, since):
        return self.items


@pytest.fixture
def pool(rabbit_conf):
    factory = nh.VerdictFactory()
    cache = VerdictCache(factory.public_keys, max_age=60, grace=60)
    transport = messaging.get_notification_transport(rabbit_conf)
    listener = TrustListener(cache, None, notification_transport=transport,
                             exchange=rabbit_conf.control_exchange,
                             pool="test-%s" % uuid.uuid4().hex)
    listener.start()
    notifier = rpc.get_notifier("trusted_pools.conductor.test")
    try:
        yield factory, cache, notifier
    finally:
        listener.stop()
        transport.cleanup()


def wait_until(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def test_signed_notification_reaches_the_filter(pool):
    factory, cache, notifier = pool
    flt = TrustedHostFilter(cache=cache)
    spec = nh.request_spec({"trust:trusted_host": "required"})
    host = nh.host_state("compute-1")
    assert not flt.host_passes(host, spec)
    notifier.info({}, TRUST_EVENT, factory.payload("compute-1"))
    assert wait_until(lambda: flt.host_passes(host, spec))
    notifier.info({}, TRUST_EVENT, factory.payload(
        "compute-1", status="untrusted",
        issued_at=cache.get("compute-1").verdict.issued_at + 1))
    assert wait_until(lambda: not flt.host_passes(host, spec))


@pytest.mark.parametrize("case", ["bad-signature", "unknown-key", "expired",
                                  "malformed", "other-event"])
def test_bad_notifications_are_refused(pool, caplog, case):
    factory, cache, notifier = pool
    event = TRUST_EVENT
    if case == "bad-signature":
        payload = factory.payload("compute-2")
        head, body, sig = payload["signed_result"].split(".")
        payload["signed_result"] = ".".join(
            (head, body, sig[:-4] + ("AAAA" if sig[-4:] != "AAAA"
                                     else "BBBB")))
        expected = "signature verification failed"
    elif case == "unknown-key":
        payload = nh.VerdictFactory(issuer="rogue").payload("compute-2")
        expected = "not among the trusted conductor keys"
    elif case == "expired":
        payload = factory.payload("compute-2",
                                  issued_at=int(time.time()) - 600,
                                  validity=60)
        expected = "expired"
    elif case == "malformed":
        payload = {"host": "compute-2", "signed_result": ["nope"]}
        expected = "malformed payload"
    else:
        payload = factory.payload("compute-2")
        event = "trusted_pools.host.other"
        expected = None
    with caplog.at_level(logging.INFO,
                         logger="trusted_pools.nova.scheduler.listener"):
        notifier.info({}, event, payload)
        # A good notification after it proves the bad one was consumed.
        notifier.info({}, TRUST_EVENT, factory.payload("marker"))
        assert wait_until(lambda: cache.get("marker") is not None)
    assert cache.get("compute-2") is None
    if expected is not None:
        assert expected in caplog.text
        assert "nothing admitted" in caplog.text
    assert not cache.is_trusted("compute-2", 1)


def test_bulk_refresh_over_rpc_with_pinned_keys(rabbit_conf):
    factory = nh.VerdictFactory()
    endpoint = FakeConductorEndpoint(factory)
    endpoint.items = [
        {"host": "a", "status": "trusted", "level": 4,
         "signed_result": factory.token("a")},
        {"host": "b", "status": "untrusted", "level": 2,
         "signed_result": factory.token("b", status="untrusted")},
        {"host": "c", "status": "trusted", "level": 4,
         "signed_result": "garbage"},
    ]
    topic = "%s-%s" % (VERDICTS_TOPIC, uuid.uuid4().hex)
    server = rpc.get_server(messaging.Target(topic=topic, server="c1"),
                            [endpoint])
    server.start()
    transport = messaging.get_rpc_transport(rabbit_conf)
    try:
        cache = VerdictCache(factory.public_keys, max_age=60, grace=60)
        source = VerdictsAPI(timeout=10, transport=transport,
                             exchange=rabbit_conf.control_exchange,
                             topic=topic)
        listener = TrustListener(cache, source, notification_transport=None,
                                 exchange=rabbit_conf.control_exchange,
                                 refresh_interval=60)
        listener.start()
        try:
            assert cache.public_key_ids == {factory.signer.kid}
            assert cache.is_trusted("a", 4)
            assert not cache.is_trusted("b", 1)
            assert cache.get("c") is None
            assert cache.contact_age() is not None
            # A second refresh skips tokens it already holds.
            assert listener.refresh() == 0
        finally:
            listener.stop()
    finally:
        server.stop()
        server.wait()
        transport.cleanup()


def test_unreachable_conductor_fails_closed(rabbit_conf, caplog):
    transport = messaging.get_rpc_transport(rabbit_conf)
    try:
        factory = nh.VerdictFactory()
        cache = VerdictCache(factory.public_keys, grace=1)
        listener = TrustListener(
            cache, VerdictsAPI(timeout=1, transport=transport,
                               exchange=rabbit_conf.control_exchange,
                               topic="nobody-%s" % uuid.uuid4().hex),
            notification_transport=None,
            exchange=rabbit_conf.control_exchange, refresh_interval=60)
        with caplog.at_level(logging.WARNING):
            listener.start()
            listener.stop()
        assert "Bulk refresh of verdicts failed" in caplog.text
        cache.admit(factory.token("a"))
        assert not cache.is_trusted("a", 1)
    finally:
        transport.cleanup()


# --- verdict order: the database's sequence, not a conductor's clock ---------

class _HostState:
    """What ConductorManager._record reads of a host's state."""

    def __init__(self, host: str, host_id: int) -> None:
        self.host, self.host_id = host, host_id
        self.clock = self.ima_state = None
        self.registration = 1  # the host's enrollment generation


@pytest.mark.parametrize("arrival", ["as-stored", "reversed"])
def test_clock_ahead_conductor_does_not_win_over_rabbitmq(
        rabbit_conf, tmp_path, arrival):
    """Two real conductors share one database. Conductor A's clock runs 4 s
    ahead (injected); it stores and signs a trusted verdict. Conductor B
    (correct clock) then stores an untrusted one: an earlier iat, a greater
    sequence. Through the real listener, whichever notification arrives
    last, the scheduler keeps the untrusted verdict."""
    from trusted_pools.protocol import keystore
    from trusted_pools.conductor.manager import ConductorManager
    from trusted_pools.db import api as db_api
    from trusted_pools.db import migration
    db = db_api.Connection(db_api.make_context_manager(
        "sqlite:///%s" % (tmp_path / "c.sqlite")))
    migration.upgrade(engine=db.get_engine())
    host = db.create_host("compute-9", state="enrolled")
    state = _HostState("compute-9", host.id)
    notifier = rpc.get_notifier("trusted_pools.conductor.test")
    publish = arrival == "as-stored"
    conductors = {}
    for name, skew in (("conductor-a", 4.0), ("conductor-b", 0.0)):
        conductors[name] = ConductorManager(
            name, db, keystore.generate_signing_key(), None,
            notifier if publish else None, b"",
            clock=lambda skew=skew: time.time() + skew)
    keys = {}
    for manager in conductors.values():
        keys.update(keystore.key_set([manager.signer._key]))
    factory = nh.VerdictFactory()
    cache = VerdictCache({**keys, **factory.public_keys}, max_age=60,
                         grace=60)
    transport = messaging.get_notification_transport(rabbit_conf)
    listener = TrustListener(cache, None, notification_transport=transport,
                             exchange=rabbit_conf.control_exchange,
                             pool="test-%s" % uuid.uuid4().hex)
    listener.start()
    try:
        a, b = conductors["conductor-a"], conductors["conductor-b"]
        trusted = factory.verdict("compute-9", level=4,
                                  issued_at=int(a.clock()))
        token_a, = a._record([(state, trusted)])
        untrusted = factory.verdict("compute-9", status="untrusted",
                                    issued_at=int(b.clock()))
        token_b, = b._record([(state, untrusted)])
        assert trusted.issued_at > untrusted.issued_at
        if not publish:    # B's notification first, A's older one last
            for token, v in ((token_b, untrusted), (token_a, trusted)):
                notifier.info({}, TRUST_EVENT, {
                    "host": v.host, "status": v.status.value,
                    "level": int(v.level), "signed_result": token})
        notifier.info({}, TRUST_EVENT, factory.payload("marker"))
        assert wait_until(lambda: cache.get("marker") is not None)
        assert wait_until(lambda: getattr(cache.get("compute-9"), "token",
                                          None) == token_b)
        time.sleep(0.3)     # both notifications consumed; nothing moves
        entry = cache.get("compute-9")
        assert entry.token == token_b
        assert entry.verdict.status.value == "untrusted"
        assert not cache.is_trusted("compute-9", 1)
        stored = db.verdict_history(host.id)
        assert [v.signed_result for v in stored] == [token_b, token_a]
    finally:
        listener.stop()
        transport.cleanup()
        db.dispose()
