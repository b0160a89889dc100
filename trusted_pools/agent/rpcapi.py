"""Client side of the agent RPC API (what conductors call).

Each agent listens on topic ``trusted_pools_agent`` with its host name as
server; epochs are announced with a fanout cast to every agent.

API version history:

* 1.0 - Initial version: get_identity, activate_credential, get_evidence,
  start_epoch (fanout cast).
"""

from __future__ import annotations

from typing import Any

import oslo_messaging as messaging

from trusted_pools.common import rpc

TOPIC = "trusted_pools_agent"
RPC_API_VERSION = "1.0"


class AgentAPI:
    """Client for every agent; ``host`` picks the agent of a call."""

    def __init__(self, timeout: float | None = None,
                 version_cap: str | None = None) -> None:
        target = messaging.Target(topic=TOPIC, version="1.0")
        self.client = rpc.get_client(target, version_cap=version_cap
                                     or RPC_API_VERSION, timeout=timeout)

    def _prepare(self, host: str, version: str = "1.0"):
        return self.client.prepare(server=host, version=version)

    def get_identity(self, context: dict, host: str) -> dict[str, Any]:
        """EK certificate, EK public and AK public of ``host`` (base64)."""
        return self._prepare(host).call(context, "get_identity")

    def activate_credential(self, context: dict, host: str,
                            credential_blob: str, encrypted_secret: str
                            ) -> str:
        """The secret recovered by the host's TPM (base64)."""
        return self._prepare(host).call(
            context, "activate_credential", credential_blob=credential_blob,
            encrypted_secret=encrypted_secret)

    def get_evidence(self, context: dict, host: str, nonce: str,
                     banks: list[str], ima_start: int, event_log: bool,
                     conductor: str | None = None) -> dict[str, Any]:
        """Evidence for a one-off challenge (``attest now``, or a
        conductor catching up); ``conductor`` lets the agent's next push to
        it continue from here."""
        return self._prepare(host).call(
            context, "get_evidence", nonce=nonce, banks=banks,
            ima_start=ima_start, event_log=event_log, conductor=conductor)

    def start_epoch(self, context: dict, conductor: str, epoch_id: str,
                    epoch_value: str, banks: list[str], members: list[str],
                    spread: float = 0.0) -> None:
        """Announce an epoch to every agent: one fanout message.

        ``members`` is the conductor ring as the sender sees it; an agent
        answers only if the sender owns its host on that ring, so the
        message stays the same size whatever the number of hosts. Each
        agent waits a random time up to ``spread`` seconds before quoting,
        so the evidence of a large pool arrives spread over the interval.
        """
        self.client.prepare(fanout=True, version="1.0").cast(
            context, "start_epoch", conductor=conductor, epoch_id=epoch_id,
            epoch_value=epoch_value, banks=banks, members=members,
            spread=spread)
