"""The relay's RabbitMQ user and the agents' right to cast to it, as
``trusted-pools-manage rabbitmq setup --relay-user`` makes them, on the
real broker (users of this test's own, in vhosts of its own), with the
relay topic on the agent vhost and on a rack's own vhost (``--relay-topic``,
``--relay-vhost``; the agents' ``[agent] relay_transport_url``, the
relay's ``[relay] conductor_transport_url``).

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
    def __init__(self, rack_vhost: bool) -> None:
        tag = uuid.uuid4().hex[:10]
        self.vhost = "tp-mgmt-%s" % tag
        self.agent_vhost = "tp-agents-%s" % tag
        # The relay topic: on the agent vhost, or a rack's own topic on a
        # rack's own vhost (--relay-topic, --relay-vhost).
        self.relay_vhost = ("tp-rack-%s" % tag if rack_vhost
                            else self.agent_vhost)
        self.topic = "rack1_relay" if rack_vhost else topics.RELAY_TOPIC
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

    def amqp(self, user: str, vhost: str) -> amqp.Connection:
        base = urllib.parse.urlsplit(RABBIT_URL)
        connection = amqp.Connection(
            host="%s:%d" % (base.hostname or "127.0.0.1", base.port or 5672),
            userid=user, password=self.passwords[user],
            virtual_host=vhost, connect_timeout=10)
        connection.connect()
        return connection


@pytest.fixture(params=[False, True], ids=["agent-vhost", "rack-vhost"])
def users(request) -> Iterator[Users]:
    require_broker()
    made = Users(request.param)
    args = argparse.Namespace(
        vhost=made.vhost, agent_vhost=made.agent_vhost,
        service_user=[made.service], consumer_user=None,
        remediation_user=None, agent_user=["%s=compute-1" % made.agent],
        relay_user=["%s=%s" % (made.relay, RACK)],
        relay_topic=None if made.topic == topics.RELAY_TOPIC else made.topic,
        relay_vhost=None if made.relay_vhost == made.agent_vhost
        else made.relay_vhost)
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
                  for user in (users.service, users.relay)}
    # The agents cast to the relay on its vhost ([agent]
    # relay_transport_url), the relay takes them there and casts to the
    # conductors' vhost ([relay] conductor_transport_url).
    to_relay = rpc.get_transport(conf, users.url(users.agent,
                                                 users.relay_vhost))
    relay_in = rpc.get_transport(conf, users.url(users.relay,
                                                 users.relay_vhost))
    transports.update({"agent->relay": to_relay, "relay-in": relay_in})
    conductor = Conductor()
    server = rpc.get_server(
        messaging.Target(topic=conductor_rpcapi.EVIDENCE_TOPIC,
                         server=CONDUCTOR), [conductor],
        bus=rpc.AGENT_BUS, transport=transports[users.service])
    conf.set_override("host", RACK, group="relay")
    conf.set_override("topic", users.topic, group="relay")
    conf.set_override("max_delay", 0.1, group="relay")
    if users.relay_vhost != users.agent_vhost:
        conf.set_override("conductor_transport_url", users.url(users.relay),
                          group="relay")
    relay = relay_service.RelayService(conf, transport=relay_in)
    server.start()
    relay.start()
    try:
        push = {"host": "compute-1", "epoch_id": "e1", "quote": "q"}
        relay_rpcapi.RelayAPI(users.topic, transport=to_relay
                              ).submit_evidence({}, CONDUCTOR, push)
        deadline = time.monotonic() + 20
        while not conductor.batches and time.monotonic() < deadline:
            time.sleep(0.05)
        assert conductor.batches == [[push]], relay.manager.counts

        # The compromised agent's user: the relay's queue is not its to
        # read, nor the relay's routing key its to bind.
        attacker = users.amqp(users.agent, users.relay_vhost)
        try:
            _refused(lambda: attacker.channel().basic_consume(
                users.topic, callback=lambda m: None))
            _refused(lambda: attacker.channel().basic_consume(
                "%s.%s" % (users.topic, RACK), callback=lambda m: None))
            own = "%s.compute-1" % topics.AGENT_TOPIC
            channel = attacker.channel()
            if users.relay_vhost == users.agent_vhost:
                channel.queue_declare(own, durable=False, auto_delete=False)
                _refused(lambda: channel.queue_bind(
                    own, setup.CONTROL_EXCHANGE, users.topic))
            else:
                # On the rack's vhost it may declare no queue at all.
                _refused(lambda: channel.queue_declare(
                    own, durable=False, auto_delete=False))
        finally:
            try:
                attacker.close()
            except Exception:  # noqa: BLE001 - closed by a refusal
                pass

        # The relay's user: evidence casts only.
        relay_conn = users.amqp(users.relay, users.agent_vhost)
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
        for option in ("host", "topic", "max_delay",
                       "conductor_transport_url"):
            conf.clear_override(option, group="relay")
