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
