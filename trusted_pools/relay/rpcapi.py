"""Client side of the relay's RPC API: the agents' client.

An agent with ``[agent] relay_topic`` casts each push here instead of to
the conductor; any relay serving the topic takes it.

Relay API version history:

* 1.0 - submit_evidence(conductor, evidence) (cast): the push the agent
  would have cast to ``conductor`` (the epoch's sender, which owns the
  host on the ring the epoch named).
"""

from __future__ import annotations

from typing import Any

import oslo_messaging as messaging

from trusted_pools.common import rpc
from trusted_pools.protocol import topics

__all__ = ["RelayAPI", "RELAY_API_VERSION"]

RELAY_API_VERSION = "1.0"


class RelayAPI:
    """The agents' client of a relay topic (a cast, nothing comes back)."""

    def __init__(self, topic: str = topics.RELAY_TOPIC,
                 transport: messaging.Transport | None = None) -> None:
        target = messaging.Target(topic=topic, version="1.0")
        self.client = rpc.get_client(target, version_cap=RELAY_API_VERSION,
                                     bus=rpc.AGENT_BUS, transport=transport)

    def submit_evidence(self, context: dict, conductor: str,
                        evidence: dict[str, Any]) -> None:
        self.client.prepare(version="1.0").cast(
            context, "submit_evidence", conductor=conductor,
            evidence=evidence)
