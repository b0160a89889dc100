"""Client side of the agent RPC API (what conductors call).

Each agent listens on topic ``trusted_pools_agent`` with its host name as
server, on the agent bus (``[conductor] agent_transport_url``); epochs are
announced with a fanout cast to every agent.

Every request carries ``auth``: a token signed with the conductor's key
that binds the method, the target host (``"*"`` for the epoch fanout) and
the other arguments (:mod:`trusted_pools.protocol.agent_requests`).
Agents at 1.1 refuse a request without a valid one.

API version history:

* 1.0 - Initial version: get_identity, activate_credential, get_evidence,
  start_epoch (fanout cast).
* 1.1 - Every method takes ``auth``, the conductor's signed request token;
  agents answer only requests it authenticates.
* 1.2 - get_binding_key: the host's binding key certified by its AK over
  the conductor's nonce (the key service wraps released secrets to it).
* 1.3 - vTPM migration steps (issue 12): migration_prepare,
  migration_export, migration_import, migration_deliver_key,
  migration_commit, migration_finish, migration_abort.
* 1.4 - list_vtpms: the host's vTPMs as its driver reports them (instance,
  status, reason); host-reported data for the operator view, never
  evidence (issue 11).
* 1.5 - migration_check_incoming: a live destination confirms, before the
  conductor commits, that the hypervisor's stream brought the vTPM state
  (a commit no longer precedes that check); migration_abort's source
  answer carries the epoch its copy kept.
"""

from __future__ import annotations

from typing import Any

import oslo_messaging as messaging

from trusted_pools import exception
from trusted_pools.protocol import agent_requests
from trusted_pools.common import rpc
from trusted_pools.protocol import topics

TOPIC = topics.AGENT_TOPIC
RPC_API_VERSION = "1.5"
MIGRATION_VERSION = "1.3"
CHECK_INCOMING_VERSION = "1.5"
_SIGNED_VERSION = "1.1"


class AgentAPI:
    """Client for every agent; ``host`` picks the agent of a call.

    ``signer`` signs each request with this conductor's key; the agents pin
    its public key.
    """

    def __init__(self, signer: agent_requests.RequestSigner,
                 timeout: float | None = None,
                 version_cap: str | None = None) -> None:
        target = messaging.Target(topic=TOPIC, version="1.0")
        # The agents' topic and the epoch fanout live on the agent bus.
        self.client = rpc.get_client(target, version_cap=version_cap
                                     or RPC_API_VERSION, timeout=timeout,
                                     bus=rpc.AGENT_BUS)
        self.signer = signer

    def _signed(self, method: str, host: str, **args: Any
                ) -> tuple[str, dict[str, Any]]:
        """The version to send at and the arguments with their token.

        An agent older than 1.1 (pinned by ``version_cap`` during an
        upgrade) cannot take ``auth``; it gets the 1.0 call it answers.
        """
        if not self.client.can_send_version(_SIGNED_VERSION):
            return "1.0", args
        token = self.signer.sign(method, host, args)
        return _SIGNED_VERSION, dict(args, auth=token)

    def get_identity(self, context: dict, host: str) -> dict[str, Any]:
        """EK certificate, EK public and AK public of ``host`` (base64)."""
        version, kwargs = self._signed("get_identity", host)
        return self.client.prepare(server=host, version=version).call(
            context, "get_identity", **kwargs)

    def activate_credential(self, context: dict, host: str,
                            credential_blob: str, encrypted_secret: str
                            ) -> str:
        """The secret recovered by the host's TPM (base64)."""
        version, kwargs = self._signed(
            "activate_credential", host, credential_blob=credential_blob,
            encrypted_secret=encrypted_secret)
        return self.client.prepare(server=host, version=version).call(
            context, "activate_credential", **kwargs)

    def get_binding_key(self, context: dict, host: str, nonce: str
                        ) -> dict[str, Any]:
        """``host``'s binding key and its TPM2_Certify by the AK over
        ``nonce`` (base64 fields; unverified until the caller checks)."""
        if not self.client.can_send_version("1.2"):
            raise exception.TemporaryFailure(
                reason="agents are pinned below 1.2 ([rpc_pins] agent): "
                "they cannot certify a binding key yet")
        token = self.signer.sign("get_binding_key", host, {"nonce": nonce})
        return self.client.prepare(server=host, version="1.2").call(
            context, "get_binding_key", nonce=nonce, auth=token)

    def list_vtpms(self, context: dict, host: str) -> dict[str, Any]:
        """``host``'s vTPMs as its agent reports them (unverified: the
        caller bounds and labels the answer)."""
        if not self.client.can_send_version("1.4"):
            raise exception.TemporaryFailure(
                reason="agents are pinned below 1.4 ([rpc_pins] agent): "
                "they cannot list their vTPMs yet")
        token = self.signer.sign("list_vtpms", host, {})
        return self.client.prepare(server=host, version="1.4").call(
            context, "list_vtpms", auth=token)

    def get_evidence(self, context: dict, host: str, nonce: str,
                     banks: list[str], ima_start: int, event_log: bool,
                     conductor: str | None = None) -> dict[str, Any]:
        """Evidence for a one-off challenge (``attest now``, or a
        conductor catching up); ``conductor`` lets the agent's next push to
        it continue from here."""
        version, kwargs = self._signed(
            "get_evidence", host, nonce=nonce, banks=list(banks),
            ima_start=ima_start, event_log=event_log, conductor=conductor)
        return self.client.prepare(server=host, version=version).call(
            context, "get_evidence", **kwargs)

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
        version, kwargs = self._signed(
            "start_epoch", agent_requests.ALL_HOSTS, conductor=conductor,
            epoch_id=epoch_id, epoch_value=epoch_value, banks=list(banks),
            members=list(members), spread=float(spread))
        self.client.prepare(fanout=True, version=version).cast(
            context, "start_epoch", **kwargs)

    # --- vTPM migration steps (1.3) -----------------------------------------

    def _migration_call(self, method: str, host: str, context: dict,
                        **args: Any) -> Any:
        if not self.client.can_send_version(MIGRATION_VERSION):
            raise exception.TemporaryFailure(
                reason="agents are pinned below %s ([rpc_pins] agent): "
                "they cannot migrate vTPMs yet" % MIGRATION_VERSION)
        token = self.signer.sign(method, host, args)
        return self.client.prepare(server=host,
                                   version=MIGRATION_VERSION).call(
            context, method, auth=token, **args)

    def migration_prepare(self, context: dict, host: str,
                          migration_id: str, instance: str, source: str,
                          kind: str, epoch: int, nonce: str
                          ) -> dict[str, Any]:
        return self._migration_call(
            "migration_prepare", host, context, migration_id=migration_id,
            instance=instance, source=source, kind=kind, epoch=epoch,
            nonce=nonce)

    def migration_export(self, context: dict, host: str, migration_id: str,
                         instance: str, destination: str, kind: str,
                         epoch: int, nonce: str, ak_public: str,
                         transport_key: dict, binding_key: dict
                         ) -> dict[str, Any]:
        return self._migration_call(
            "migration_export", host, context, migration_id=migration_id,
            instance=instance, destination=destination, kind=kind,
            epoch=epoch, nonce=nonce, ak_public=ak_public,
            transport_key=dict(transport_key),
            binding_key=dict(binding_key))

    def migration_import(self, context: dict, host: str, migration_id: str,
                         instance: str, source: str, epoch: int,
                         payload: dict) -> dict[str, Any]:
        return self._migration_call(
            "migration_import", host, context, migration_id=migration_id,
            instance=instance, source=source, epoch=epoch,
            payload=dict(payload))

    def migration_deliver_key(self, context: dict, host: str,
                              migration_id: str, instance: str, source: str,
                              epoch: int, payload: dict, metadata: dict
                              ) -> dict[str, Any]:
        return self._migration_call(
            "migration_deliver_key", host, context,
            migration_id=migration_id, instance=instance, source=source,
            epoch=epoch, payload=dict(payload), metadata=dict(metadata))

    def can_check_incoming(self) -> bool:
        """Whether the agents may be asked migration_check_incoming (not
        pinned below 1.5): if not, a live commit goes unchecked, as
        before 1.5."""
        return self.client.can_send_version(CHECK_INCOMING_VERSION)

    def migration_check_incoming(self, context: dict, host: str,
                                 migration_id: str) -> dict[str, Any]:
        if not self.can_check_incoming():
            raise exception.TemporaryFailure(
                reason="agents are pinned below %s ([rpc_pins] agent)"
                % CHECK_INCOMING_VERSION)
        args = {"migration_id": migration_id}
        token = self.signer.sign("migration_check_incoming", host, args)
        return self.client.prepare(
            server=host, version=CHECK_INCOMING_VERSION).call(
            context, "migration_check_incoming", auth=token, **args)

    def migration_commit(self, context: dict, host: str, migration_id: str
                         ) -> dict[str, Any]:
        return self._migration_call("migration_commit", host, context,
                                    migration_id=migration_id)

    def migration_finish(self, context: dict, host: str, migration_id: str
                         ) -> dict[str, Any]:
        return self._migration_call("migration_finish", host, context,
                                    migration_id=migration_id)

    def migration_abort(self, context: dict, host: str, migration_id: str,
                        instance: str, role: str) -> dict[str, Any]:
        return self._migration_call(
            "migration_abort", host, context, migration_id=migration_id,
            instance=instance, role=role)
