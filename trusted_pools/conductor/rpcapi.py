"""Client side of the conductor's RPC APIs, one per caller.

A conductor serves three targets (:mod:`trusted_pools.conductor.endpoints`
says who may call which):

* :class:`ConductorAPI`, the management API, topic
  ``trusted_pools_conductor`` on the management bus: trusted-pools-api's
  host operations, each sent to the conductor that owns the host (the
  caller's hash ring; ``conductor`` is required);
* :class:`EvidenceAPI`, topic ``trusted_pools_evidence`` on the agent bus:
  agents push evidence to the conductor that announced the epoch;
* :class:`VerdictsAPI`, topic ``trusted_pools_verdicts`` on the management
  bus: signed verdicts for the consumers' bulk refresh (any conductor).

Management API version history:

* 1.0 - Initial version: enroll_host, attest_now, submit_evidence (cast),
  verdicts_since, get_public_keys, capture_policy, create_policy,
  assign_policy.
* 1.1 - enroll_host takes ek_sha256 (the operator's EK approval);
  reset_enrollment.
* 2.0 - Split by caller: this target keeps enroll_host, reset_enrollment,
  attest_now and capture_policy, each only on the host's owner.
  submit_evidence moved to the evidence API, verdicts_since to the
  verdicts API; create_policy and assign_policy removed (the API writes
  policies to the database), get_public_keys removed (keys are pinned or
  read from the API's JWKS).
* 3.0 - No agent call inside an endpoint: enroll_host, attest_now and
  capture_policy check the request, record a pending host operation and
  return ``{"host", "operation", "state": "pending"}`` at once; the
  owner's worker pool does the work and records the result or the typed
  error in the operation's row (trusted-pools-api reads it from the
  database). A second enroll_host of a host while one is pending raises
  OperationInProgress. The context is a RequestContext (request id, user,
  project, roles) sent with RequestContextSerializer. reset_enrollment is
  unchanged (database only). A major version: conductors and
  trusted-pools-api are upgraded together; ``[rpc_pins] conductor`` below
  3.0 makes every call fail with RPCVersionCapError.
* 3.1 - The key service: certify_binding_key (on the host's owner),
  store_secret, release_secret, delete_secret (issue 13).
* 3.2 - vTPM migration (issue 12), on the destination's owner:
  migrate_vtpm (records the migration and returns it at step
  ``requested``; the worker pool drives it), list_vtpm_migrations,
  show_vtpm_migration, complete_vtpm_migration (live: the hypervisor's
  migration is done), abort_vtpm_migration (before the commit).
* 3.3 - Deep attestation and the vTPM view (issue 11):
  challenge_instance(host, instance) (a one-use nonce for the guest, kept
  by the host's owner), deep_attest(host, instances) (a host operation of
  kind ``deep_attest``; its result is ``{"host", "instances"}``).
  certify_binding_key becomes a host operation (kind ``certify``): it
  answers ``{"host", "operation", "state"}`` like enroll_host; a 3.1
  conductor answers with the certified key, and callers tell the two
  answers apart by the ``operation`` key. list_vtpms(host): a host
  operation of kind ``list_vtpms`` whose result is the host's own report
  of its vTPMs (labelled host-reported; not evidence).
* 3.4 - challenge_instance takes ``image`` (the instance's image as the
  trusted caller named it; it picks the image's instance policy). Sent
  only when given; a 3.3 conductor cannot take it (RPCVersionCapError
  becomes a TemporaryFailure naming the pin).

Evidence API version history:

* 1.0 - submit_evidence (cast).
* 1.1 - submit_evidence_batch (cast): the pushes of several hosts in one
  message, for a relay of a rack's or cell's agents (issue 15: the bus
  costs per message, not per byte). Each item is one push, judged alone.

Verdicts API version history:

* 1.0 - verdicts_since.
"""

from __future__ import annotations

from typing import Any

import oslo_messaging as messaging
from oslo_config import cfg

from trusted_pools import exception
from trusted_pools.common import rpc
from trusted_pools.protocol import topics

TOPIC = topics.CONDUCTOR_TOPIC
EVIDENCE_TOPIC = topics.EVIDENCE_TOPIC
VERDICTS_TOPIC = topics.VERDICTS_TOPIC

RPC_API_VERSION = "3.4"
#: vTPM migration.
MIGRATION_VERSION = "3.2"
#: Deep attestation, the vTPM view, certify_binding_key as an operation.
DEEP_VERSION = "3.3"
#: challenge_instance takes the image (instance policies).
INSTANCE_POLICY_VERSION = "3.4"
EVIDENCE_API_VERSION = "1.1"
VERDICTS_API_VERSION = "1.0"


def _pin(name: str) -> str | None:
    """The operator's ``[rpc_pins] <name>`` pin, if any."""
    try:
        return getattr(cfg.CONF.rpc_pins, name)
    except (cfg.NoSuchOptError, cfg.NoSuchGroupError):
        return None


class ConductorAPI:
    """Management API: trusted-pools-api's client.

    Every method goes to ``conductor``, the host's owner; a conductor
    refuses a host it does not own (:class:`HostNotOwned` names the
    owner). ``context`` is a RequestContext (or a dict of its fields).
    enroll_host, attest_now and capture_policy answer with a pending
    operation (see the 3.0 history entry)."""

    def __init__(self, timeout: float | None = None,
                 version_cap: str | None = None) -> None:
        target = messaging.Target(topic=TOPIC, version="3.0")
        self.client = rpc.get_client(
            target, version_cap=version_cap or _pin("conductor")
            or RPC_API_VERSION, timeout=timeout, bus=rpc.MANAGEMENT_BUS)

    def _prepare(self, conductor: str, version: str = "3.0"
                 ) -> messaging.RPCClient:
        if not isinstance(conductor, str) or not conductor:
            raise ValueError("conductor: the name of the host's owner is "
                             "required (a host operation on another "
                             "conductor would race with the owner)")
        return self.client.prepare(server=conductor, version=version)

    def enroll_host(self, context: Any, host: str, *, conductor: str,
                    group: str = "default",
                    ek_sha256: str | None = None) -> dict[str, Any]:
        return self._prepare(conductor).call(
            context, "enroll_host", host=host, group=group,
            ek_sha256=ek_sha256)

    def reset_enrollment(self, context: dict, host: str, *,
                         conductor: str) -> dict[str, Any]:
        return self._prepare(conductor).call(
            context, "reset_enrollment", host=host)

    def attest_now(self, context: dict, host: str, *, conductor: str
                   ) -> dict[str, Any]:
        return self._prepare(conductor).call(context, "attest_now",
                                             host=host)

    def capture_policy(self, context: dict, host: str, *, conductor: str
                       ) -> dict[str, Any]:
        return self._prepare(conductor).call(context, "capture_policy",
                                             host=host)

    # --- the key service (3.1) -----------------------------------------------

    def _prepare_keys(self, conductor: str) -> messaging.RPCClient:
        if not self.client.can_send_version("3.1"):
            raise exception.TemporaryFailure(
                reason="conductors are pinned below 3.1 ([rpc_pins] "
                "conductor): the key service is not available yet")
        return self._prepare(conductor, "3.1")

    def certify_binding_key(self, context: dict, host: str, *,
                            conductor: str) -> dict[str, Any]:
        """From 3.3 a pending operation (``"operation"`` in the answer);
        a conductor pinned to 3.1 answers with the certified key."""
        if self.client.can_send_version(DEEP_VERSION):
            client = self._prepare(conductor, DEEP_VERSION)
        else:
            client = self._prepare_keys(conductor)
        return client.call(context, "certify_binding_key", host=host)

    def store_secret(self, context: dict, project_id: str, payload: str,
                     secret_type: str, *, conductor: str,
                     **metadata: Any) -> dict[str, Any]:
        return self._prepare_keys(conductor).call(
            context, "store_secret", project_id=project_id,
            payload=payload, secret_type=secret_type, **metadata)

    def release_secret(self, context: dict, host: str, secret_id: str, *,
                       conductor: str) -> dict[str, Any]:
        """``host`` first: like the host operations, it goes to the
        host's owner (any conductor could answer)."""
        return self._prepare_keys(conductor).call(
            context, "release_secret", secret_id=secret_id, host=host)

    def delete_secret(self, context: dict, secret_id: str, *,
                      conductor: str) -> None:
        return self._prepare_keys(conductor).call(
            context, "delete_secret", secret_id=secret_id)


    # --- vTPM migration (3.2) -----------------------------------------------

    def _prepare_migrations(self, conductor: str) -> messaging.RPCClient:
        if not self.client.can_send_version(MIGRATION_VERSION):
            raise exception.TemporaryFailure(
                reason="conductors are pinned below %s ([rpc_pins] "
                "conductor): vTPM migration is not available yet"
                % MIGRATION_VERSION)
        return self._prepare(conductor, MIGRATION_VERSION)

    def migrate_vtpm(self, context: Any, instance: str, source: str,
                     destination: str, *, conductor: str,
                     kind: str = "cold", min_level: int | None = None
                     ) -> dict[str, Any]:
        """On ``conductor``, the destination's owner."""
        return self._prepare_migrations(conductor).call(
            context, "migrate_vtpm", instance=instance, source=source,
            destination=destination, kind=kind, min_level=min_level)

    def list_vtpm_migrations(self, context: Any, *, conductor: str,
                             instance: str | None = None,
                             active: bool | None = None, limit: int = 100
                             ) -> list[dict[str, Any]]:
        return self._prepare_migrations(conductor).call(
            context, "list_vtpm_migrations", instance=instance,
            active=active, limit=limit)

    def show_vtpm_migration(self, context: Any, migration_id: str, *,
                            conductor: str) -> dict[str, Any]:
        return self._prepare_migrations(conductor).call(
            context, "show_vtpm_migration", migration_id=migration_id)

    def complete_vtpm_migration(self, context: Any, migration_id: str, *,
                                conductor: str) -> dict[str, Any]:
        return self._prepare_migrations(conductor).call(
            context, "complete_vtpm_migration", migration_id=migration_id)

    def abort_vtpm_migration(self, context: Any, migration_id: str, *,
                             conductor: str,
                             reason: str = "aborted by the operator"
                             ) -> dict[str, Any]:
        return self._prepare_migrations(conductor).call(
            context, "abort_vtpm_migration", migration_id=migration_id,
            reason=reason)
    # --- deep attestation (3.3) ---------------------------------------------

    def _prepare_deep(self, conductor: str) -> messaging.RPCClient:
        if not self.client.can_send_version(DEEP_VERSION):
            raise exception.TemporaryFailure(
                reason="conductors are pinned below %s ([rpc_pins] "
                "conductor): deep attestation is not available yet"
                % DEEP_VERSION)
        return self._prepare(conductor, DEEP_VERSION)

    def challenge_instance(self, context: dict, host: str, instance: str,
                           *, conductor: str, image: str | None = None
                           ) -> dict[str, Any]:
        if image is None:
            return self._prepare_deep(conductor).call(
                context, "challenge_instance", host=host, instance=instance)
        if not self.client.can_send_version(INSTANCE_POLICY_VERSION):
            raise exception.TemporaryFailure(
                reason="conductors are pinned below %s ([rpc_pins] "
                "conductor): a challenge cannot name the image yet"
                % INSTANCE_POLICY_VERSION)
        return self._prepare(conductor, INSTANCE_POLICY_VERSION).call(
            context, "challenge_instance", host=host, instance=instance,
            image=image)

    def deep_attest(self, context: dict, host: str,
                    instances: list[dict[str, Any]], *, conductor: str
                    ) -> dict[str, Any]:
        return self._prepare_deep(conductor).call(
            context, "deep_attest", host=host, instances=instances)


    def list_vtpms(self, context: dict, host: str, *, conductor: str
                   ) -> dict[str, Any]:
        return self._prepare_deep(conductor).call(context, "list_vtpms",
                                                  host=host)


class EvidenceAPI:
    """Evidence API: the agents' client (a cast, nothing comes back)."""

    def __init__(self, version_cap: str | None = None,
                 transport: messaging.Transport | None = None) -> None:
        target = messaging.Target(topic=EVIDENCE_TOPIC, version="1.0")
        self.client = rpc.get_client(
            target, version_cap=version_cap or _pin("evidence")
            or EVIDENCE_API_VERSION, bus=rpc.AGENT_BUS, transport=transport)

    def submit_evidence(self, context: dict, conductor: str,
                        evidence: dict[str, Any]) -> None:
        self.client.prepare(server=conductor, version="1.0").cast(
            context, "submit_evidence", evidence=evidence)

    def submit_evidence_batch(self, context: dict, conductor: str,
                              batch: list[dict[str, Any]]) -> None:
        """Several hosts' pushes in one cast (at most
        ``MAX_EVIDENCE_BATCH``); one cast each when the evidence API is
        pinned below 1.1."""
        if not self.client.can_send_version("1.1"):
            for evidence in batch:
                self.submit_evidence(context, conductor, evidence)
            return
        self.client.prepare(server=conductor, version="1.1").cast(
            context, "submit_evidence_batch", batch=batch)


class VerdictsAPI:
    """Verdicts API: signed verdicts from any conductor.

    The verdict consumers (nova-scheduler's filter, the placement-sync
    service) run outside this project's services: they pass their own
    ``transport`` and name the conductors' ``exchange`` (nova-scheduler's
    own ``control_exchange`` is ``nova``). ``verdicts_since`` is the only
    conductor method they may call."""

    def __init__(self, timeout: float | None = None,
                 version_cap: str | None = None,
                 transport: messaging.Transport | None = None,
                 exchange: str | None = None,
                 topic: str = VERDICTS_TOPIC) -> None:
        target = messaging.Target(exchange=exchange, topic=topic,
                                  version="1.0")
        self.client = rpc.get_client(
            target, version_cap=version_cap or _pin("verdicts")
            or VERDICTS_API_VERSION, timeout=timeout,
            bus=rpc.MANAGEMENT_BUS, transport=transport)

    def verdicts_since(self, context: dict, since: float
                       ) -> list[dict[str, Any]]:
        return self.client.prepare(version="1.0").call(
            context, "verdicts_since", since=since)
