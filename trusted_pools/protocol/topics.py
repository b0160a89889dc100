"""Names on the bus, written once: RPC topics, the exchange, notification
topics and event types.

Two buses (see :mod:`trusted_pools.common.rpc`): the management bus
carries :data:`CONDUCTOR_TOPIC`, :data:`VERDICTS_TOPIC` and the
notifications; the agent bus carries :data:`EVIDENCE_TOPIC` and
:data:`AGENT_TOPIC` (with the epoch fanout). The broker's per-role
permissions (``trusted-pools-manage rabbitmq``) are written from the same
names.
"""

from __future__ import annotations

__all__ = [
    "CONTROL_EXCHANGE", "CONDUCTOR_TOPIC", "EVIDENCE_TOPIC",
    "VERDICTS_TOPIC", "AGENT_TOPIC", "RELAY_TOPIC", "NOTIFICATIONS_TOPIC",
    "NOTIFICATION_TOPICS", "TRUST_EVENT", "DISTRUST_EVENT",
]

#: The services' oslo.messaging exchange (consumers inside Nova name it,
#: their own being ``nova``).
CONTROL_EXCHANGE = "trusted_pools"

#: The conductors' management API (trusted-pools-api only).
CONDUCTOR_TOPIC = "trusted_pools_conductor"
#: The conductors' evidence API (agents push evidence).
EVIDENCE_TOPIC = "trusted_pools_evidence"
#: The conductors' verdict read API (the verdict consumers).
VERDICTS_TOPIC = "trusted_pools_verdicts"
#: The agents' API, one server per host, and the epoch fanout.
AGENT_TOPIC = "trusted_pools_agent"
#: The relays' default topic on the agent bus (``[relay] topic``): agents
#: with ``[agent] relay_topic`` cast their pushes there.
RELAY_TOPIC = "trusted_pools_relay"

#: Trust notifications go to this topic; consumers listen on it.
NOTIFICATIONS_TOPIC = "trusted_pools_notifications"
NOTIFICATION_TOPICS = (NOTIFICATIONS_TOPIC,)

#: A host's trust changed: payload ``{"host", "status", "level",
#: "signed_result"}``; only ``signed_result`` is trusted, once verified.
TRUST_EVENT = "trusted_pools.host.trust.update"
#: A trusted host stopped being trusted (the remediation service's log).
DISTRUST_EVENT = "trusted_pools.host.distrust"
