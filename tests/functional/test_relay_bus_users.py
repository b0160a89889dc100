"""The relay's RabbitMQ user and the agents' right to cast to it, as
``trusted-pools-manage rabbitmq setup --relay-user`` makes them, on the
real broker (users of this test's own, in vhosts of its own).

* An agent's push cast to the relay topic reaches the relay, which casts
  the batch to the conductor's evidence topic, each on its own user.
* A compromised host's agent user cannot take the relay's pushes: it may
  not consume the relay topic's queue nor bind a queue of its own to the
  relay's routing key (else it would receive a share of its neighbours'
  pushes and drop them).
* The relay's user casts to the conductors' evidence topic only: not to
  an agent's topic, not into a queue through the default exchange.
"""

from __future__ import annotations

import argparse
import time
import urllib.parse
import uuid
from typing import Any, Iterator

import amqp
import oslo_messaging as messaging
import pytest
from oslo_config import cfg
from oslo_messaging import conffixture

from tests.rabbitmq import RABBIT_URL, require_broker, setup_users
from trusted_pools.cmd import rabbitmq as setup
from trusted_pools.common import rpc
from trusted_pools.conductor import rpcapi as conductor_rpcapi
from trusted_pools.protocol import topics
from trusted_pools.relay import rpcapi as relay_rpcapi
from trusted_pools.relay import service as relay_service

pytestmark = [pytest.mark.rabbitmq]

CONDUCTOR = "conductor-a"
RACK = "rack-1"


class Users:
    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:10]
        self.vhost = "tp-mgmt-%s" % tag
        self.agent_vhost = "tp-agents-%s" % tag
        self.service = "tp-service-%s" % tag
        self.agent = "tp-agent-compute-1-%s" % tag
        self.relay = "tp-relay-%s" % tag
        self.passwords = {u: uuid.uuid4().hex
                          for u in (self.service, self.agent, self.relay)}

    def url(self, user: str, vhost: str | None = None) -> str:
        base = urllib.parse.urlsplit(RABBIT_URL)
        return "rabbit://%s:%s@%s:%d/%s" % (
            user, self.passwords[user], base.hostname or "127.0.0.1",
            base.port or 5672, vhost or self.agent_vhost)

    def amqp(self, user: str) -> amqp.Connection:
        base = urllib.parse.urlsplit(RABBIT_URL)
        connection = amqp.Connection(
            host="%s:%d" % (base.hostname or "127.0.0.1", base.port or 5672),
            userid=user, password=self.passwords[user],
            virtual_host=self.agent_vhost, connect_timeout=10)
        connection.connect()
        return connection


@pytest.fixture
def users() -> Iterator[Users]:
    require_broker()
    made = Users()
    args = argparse.Namespace(
        vhost=made.vhost, agent_vhost=made.agent_vhost,
        service_user=[made.service], consumer_user=None,
        remediation_user=None, agent_user=["%s=compute-1" % made.agent],
        relay_user=["%s=%s" % (made.relay, RACK)], relay_topic=None,
        relay_vhost=None)
    with setup_users(args, made.passwords):
        yield made


@pytest.fixture
def conf(users: Users) -> Iterator[cfg.ConfigOpts]:
    conf = cfg.CONF
    rpc.set_defaults()
    fixture = conffixture.ConfFixture(conf)
    fixture.setUp()
    fixture.transport_url = users.url(users.service, users.vhost)
    conf.set_override("control_exchange", setup.CONTROL_EXCHANGE)
    rpc.init(conf)
    try:
        yield conf
    finally:
        rpc.cleanup()
        fixture.cleanUp()


class Conductor:
    """The conductor's evidence endpoint, recording the batches."""

    target = messaging.Target(version=conductor_rpcapi.EVIDENCE_API_VERSION)

    def __init__(self) -> None:
        self.batches: list[Any] = []

    @messaging.expose
    def submit_evidence_batch(self, context: dict, batch: Any) -> None:
        self.batches.append(batch)


def _refused(action, code: int = 403) -> None:
    with pytest.raises((amqp.exceptions.AMQPError, OSError)) as info:
        action()
    assert getattr(info.value, "reply_code", None) == code, repr(info.value)


def test_agents_cast_through_the_relay_and_cannot_take_its_pushes(
        users, conf):
    transports = {user: rpc.get_transport(conf, users.url(user))
                  for user in (users.service, users.agent, users.relay)}
    conductor = Conductor()
    server = rpc.get_server(
        messaging.Target(topic=conductor_rpcapi.EVIDENCE_TOPIC,
                         server=CONDUCTOR), [conductor],
        bus=rpc.AGENT_BUS, transport=transports[users.service])
    conf.set_override("host", RACK, group="relay")
    conf.set_override("max_delay", 0.1, group="relay")
    relay = relay_service.RelayService(conf,
                                       transport=transports[users.relay])
    server.start()
    relay.start()
    try:
        push = {"host": "compute-1", "epoch_id": "e1", "quote": "q"}
        relay_rpcapi.RelayAPI(transport=transports[users.agent]
                              ).submit_evidence({}, CONDUCTOR, push)
        deadline = time.monotonic() + 20
        while not conductor.batches and time.monotonic() < deadline:
            time.sleep(0.05)
        assert conductor.batches == [[push]], relay.manager.counts

        # The compromised agent's user: the relay's queue is not its to
        # read, nor the relay's routing key its to bind.
        attacker = users.amqp(users.agent)
        try:
            _refused(lambda: attacker.channel().basic_consume(
                topics.RELAY_TOPIC, callback=lambda m: None))
            _refused(lambda: attacker.channel().basic_consume(
                "%s.%s" % (topics.RELAY_TOPIC, RACK),
                callback=lambda m: None))
            own = "%s.compute-1" % topics.AGENT_TOPIC
            channel = attacker.channel()
            channel.queue_declare(own, durable=False, auto_delete=False)
            _refused(lambda: channel.queue_bind(
                own, setup.CONTROL_EXCHANGE, topics.RELAY_TOPIC))
        finally:
            try:
                attacker.close()
            except Exception:  # noqa: BLE001 - closed by a refusal
                pass

        # The relay's user: evidence casts only.
        relay_conn = users.amqp(users.relay)
        try:
            for exchange, key in (
                    (setup.CONTROL_EXCHANGE,
                     "%s.compute-1" % topics.AGENT_TOPIC),
                    ("", "%s.compute-1" % topics.AGENT_TOPIC)):
                channel = relay_conn.channel()
                channel.confirm_select()
                _refused(lambda: channel.basic_publish_confirm(
                    amqp.Message(b"{}"), exchange=exchange,
                    routing_key=key))
        finally:
            try:
                relay_conn.close()
            except Exception:  # noqa: BLE001
                pass
    finally:
        relay.stop()
        server.stop()
        server.wait()
        for transport in transports.values():
            transport.cleanup()
        conf.clear_override("host", group="relay")
        conf.clear_override("max_delay", group="relay")
