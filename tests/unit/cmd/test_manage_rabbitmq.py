"""The RabbitMQ rights ``trusted-pools-manage rabbitmq setup`` gives each
role, checked as the broker matches them (full-match regexes)."""

import re

import pytest

from trusted_pools import exception
from trusted_pools.cmd import rabbitmq as setup


def _allows(pattern: str, name: str) -> bool:
    # RabbitMQ uses re:run with the pattern as given: anchors are ours.
    return re.search(pattern, name) is not None


def test_agent_rights_cover_its_own_names_only():
    grant = setup.agent_grant("agent-c1", "compute-1", "tp-agents")
    own = "trusted_pools_agent.compute-1"
    assert _allows(grant.configure, own) and _allows(grant.read, own)
    for other in ("trusted_pools_agent.compute-10",
                  "trusted_pools_agent.compute-2",
                  "trusted_pools_evidence.conductor-a",
                  "trusted_pools_conductor.conductor-a",
                  "trusted_pools_verdicts", "reply_0123abcd"):
        assert not _allows(grant.configure, other), other
        assert not _allows(grant.read, other), other
    # Replies go through the default exchange; epochs are not its to send.
    assert _allows(grant.write, "amq.default")
    assert not _allows(grant.write, "trusted_pools_agent_fanout")
    assert _allows(grant.read, "trusted_pools_agent_fanout")
    assert _allows(grant.topic_write, "trusted_pools_evidence.conductor-a")
    for key in ("trusted_pools_conductor.conductor-a",
                "trusted_pools_notifications.info",
                "trusted_pools_agent.compute-2", "trusted_pools_evidence",
                "trusted_pools_evidence.a.b"):
        assert not _allows(grant.topic_write, key), key
    assert _allows(grant.topic_read, own)
    assert not _allows(grant.topic_read, "trusted_pools_agent.compute-2")


@pytest.mark.parametrize("host", ["a|.*", "compute 1", "", "x" * 300])
def test_a_host_name_that_is_no_name_is_refused(host):
    with pytest.raises(exception.InvalidParameterValue):
        setup.agent_grant("agent", host, "tp-agents")


def test_consumer_reads_notifications_and_asks_verdicts_only():
    grant = setup.consumer_grant("nova", "tp")
    assert _allows(grant.topic_write, "trusted_pools_verdicts")
    assert not _allows(grant.topic_write, "trusted_pools_notifications.info")
    assert not _allows(grant.topic_write, "trusted_pools_conductor.c1")
    assert _allows(grant.topic_read, "trusted_pools_notifications.info")
    assert not _allows(grant.write, "amq.default")
    remediation = setup.consumer_grant("sync", "tp", may_notify=True)
    assert _allows(remediation.topic_write,
                   "trusted_pools_notifications.warn")


def _plan(**kw):
    import argparse
    args = argparse.Namespace(
        vhost="tp", agent_vhost="tp-agents", service_user=None,
        consumer_user=None, remediation_user=None,
        agent_user=["agent-c1=compute-1"], relay_user=None,
        relay_topic=None, relay_vhost=None)
    for key, value in kw.items():
        setattr(args, key, value)
    return setup.build_plan(args, {})


def _grant(plan, user, vhost):
    [grant] = [g for g in plan.grants if g.user == user and g.vhost == vhost]
    return grant


def test_without_a_relay_agents_cast_to_conductors_only():
    grant = _grant(_plan(), "agent-c1", "tp-agents")
    assert not _allows(grant.topic_write, "trusted_pools_relay")


def test_relay_takes_its_topic_and_casts_to_conductors_only():
    plan = _plan(relay_user=["relay-r1=rack-1"])
    relay = _grant(plan, "relay-r1", "tp-agents")
    for name in ("trusted_pools_relay", "trusted_pools_relay.rack-1",
                 "trusted_pools_relay_fanout_0a1b2c"):
        assert _allows(relay.configure, name) and _allows(relay.read, name)
    assert _allows(relay.configure, "trusted_pools_relay_fanout")
    for other in ("trusted_pools_agent.compute-1", "trusted_pools_agent",
                  "trusted_pools_evidence.conductor-a",
                  "trusted_pools_relay.rack-2", "reply_0123abcd"):
        assert not _allows(relay.read, other), other
        assert not _allows(relay.configure, other), other
    # It casts, answers nothing, announces no epoch.
    assert not _allows(relay.write, "amq.default")
    assert not _allows(relay.write, "trusted_pools_agent_fanout")
    assert _allows(relay.topic_write, "trusted_pools_evidence.conductor-a")
    for key in ("trusted_pools_agent.compute-1", "trusted_pools_relay",
                "trusted_pools_conductor.conductor-a",
                "trusted_pools_evidence.a.b"):
        assert not _allows(relay.topic_write, key), key
    assert _allows(relay.topic_read, "trusted_pools_relay.rack-1")
    assert not _allows(relay.topic_read, "trusted_pools_evidence.c")
    # The agents may cast to the relay topic, and not take its pushes.
    agent = _grant(plan, "agent-c1", "tp-agents")
    assert _allows(agent.topic_write, "trusted_pools_relay")
    assert _allows(agent.topic_write, "trusted_pools_evidence.conductor-a")
    for name in ("trusted_pools_relay", "trusted_pools_relay.rack-1",
                 "trusted_pools_relay_fanout_0a1b2c"):
        assert not _allows(agent.read, name), name
    assert not _allows(agent.topic_read, "trusted_pools_relay")
    assert not _allows(agent.topic_write, "trusted_pools_relay.rack-1")


def test_a_rack_vhost_holds_the_relay_topic_only():
    plan = _plan(relay_user=["relay-r1=rack-1"], relay_topic="rack1_relay",
                 relay_vhost="tp-rack-1")
    assert "tp-rack-1" in plan.vhosts
    taking = _grant(plan, "relay-r1", "tp-rack-1")
    assert _allows(taking.read, "rack1_relay")
    assert not _allows(taking.read, "trusted_pools_relay")
    assert not _allows(taking.topic_write,
                       "trusted_pools_evidence.conductor-a")
    sending = _grant(plan, "relay-r1", "tp-agents")
    assert _allows(sending.topic_write, "trusted_pools_evidence.conductor-a")
    assert sending.read == "^$" and sending.topic_read == "^$"
    agent_rack = _grant(plan, "agent-c1", "tp-rack-1")
    assert _allows(agent_rack.topic_write, "rack1_relay")
    assert agent_rack.read == "^$"
    assert not _allows(agent_rack.topic_write,
                       "trusted_pools_evidence.conductor-a")
    agent = _grant(plan, "agent-c1", "tp-agents")
    assert not _allows(agent.topic_write, "rack1_relay")


@pytest.mark.parametrize("topic", ["a|.*", "x y", "x" * 201])
def test_a_relay_topic_that_is_no_topic_is_refused(topic):
    with pytest.raises(exception.InvalidParameterValue):
        _plan(relay_user=["relay-r1"], relay_topic=topic)
