"""The conductor's RPC endpoints, one object per caller.

A conductor serves three RPC targets, and each target dispatches only the
methods marked ``@messaging.expose`` on its endpoint (the servers use
``ExplicitRPCAccessPolicy``, :func:`trusted_pools.common.rpc.get_server`):

========================  ==========================  =====================
endpoint (topic)          methods                     who may call it
========================  ==========================  =====================
:class:`EvidenceEndpoint` ``submit_evidence`` (cast)  agents, on the agent
(``trusted_pools_evidence``, ``submit_evidence_batch``  bus (a batch: a relay
server = conductor)          (cast)                     of agents' pushes)
:class:`ManagementEndpoint` ``enroll_host``,          trusted-pools-api, on
(``trusted_pools_conductor``, ``reset_enrollment``,   the management bus
server = conductor)       ``attest_now``,
                          ``capture_policy``,
                          ``certify_binding_key``,
                          ``challenge_instance``,
                          ``deep_attest``,
                          ``list_vtpms``,
                          ``store_secret``,
                          ``release_secret``,
                          ``delete_secret``,
                          ``migrate_vtpm``,
                          ``list_vtpm_migrations``,
                          ``show_vtpm_migration``,
                          ``complete_vtpm_migration``,
                          ``abort_vtpm_migration``
:class:`VerdictsEndpoint` ``verdicts_since``          verdict consumers
(``trusted_pools_verdicts``)                          (nova-scheduler, the
                                                      trait keeper), on the
                                                      management bus
========================  ==========================  =====================

Nothing else of :class:`~trusted_pools.conductor.manager.ConductorManager`
is reachable: the attestation cycle (``start_epoch``), policy writes (the
API writes policies to the database) and the public keys (pinned in
configuration, or the API's JWKS) are not RPC methods.

No endpoint makes a synchronous call to an agent: ``enroll_host``,
``attest_now``, ``capture_policy``, ``certify_binding_key`` and
``deep_attest`` (3.3) check the request (host name,
ownership, state), record a pending host operation and hand the agent
calls to the conductor's worker pool; they answer at once with the
operation's id, and trusted-pools-api polls the operation's row.

Contexts: the management and verdicts servers get a
:class:`~trusted_pools.common.context.RequestContext` (the API's request
id, user, project, roles: trusted-pools-api is the only party on that bus
that asks). The evidence server's context is the plain dict the agent
sent, and nothing reads it: agents are the hosts being judged, so roles,
admin flags or request ids they claim are never believed for anything.
"""

from __future__ import annotations

from typing import Any

import oslo_messaging as messaging

from trusted_pools import exception
from trusted_pools.conductor import rpcapi

__all__ = ["EvidenceEndpoint", "ManagementEndpoint", "VerdictsEndpoint"]

# What a management call may answer with; anything else is a bug and is
# logged with its traceback by oslo.messaging. (The agent's and the
# appraisal's errors of an operation are recorded in its row, not raised
# here.)
_HOST_OPERATION_ERRORS = (
    exception.InvalidParameterValue,   # host name, group, EK hash
    exception.HostNotOwned,            # another conductor owns the host
    exception.HostNotFound,            # attest/capture an unknown host
    exception.HostNotEnrolled,         # attest/capture a host not enrolled
    exception.RegistrationNotFound,    # ... or one whose TPM keys are gone
    exception.PolicyNotFound,          # its group's policy was removed
    exception.OperationInProgress,     # a second enrollment meanwhile
    exception.TemporaryFailure,        # database away, service stopping
    exception.DatabaseError,
    exception.Invalid,                 # the database refused a value
)

#: The key service's answers that are decisions, not failures: a refusal
#: (the host is not trusted enough) and an unknown or foreign secret. The
#: caller gets them either way; declared, they are not logged as errors.
_SECRET_ERRORS = _HOST_OPERATION_ERRORS + (
    exception.KeyReleaseRefused,
    exception.SecretNotFound,
)


_MIGRATION_ERRORS = _HOST_OPERATION_ERRORS + (
    exception.MigrationNotFound,       # show/complete/abort an unknown one
    exception.MigrationInProgress,     # the instance is already moving
    exception.ConcurrentUpdate,        # complete/abort at the wrong step
)


class EvidenceEndpoint:
    """The agents' only way to the conductor: push evidence, a cast.

    What is pushed is unverified (any host can push in any host's name);
    the manager queues it and only evidence that verifies gives a verdict.
    """

    target = messaging.Target(version=rpcapi.EVIDENCE_API_VERSION)

    def __init__(self, manager: Any) -> None:
        self._manager = manager

    @messaging.expose
    def submit_evidence(self, context: dict, evidence: Any) -> None:
        # ``context`` is whatever the agent put there (the agent bus has no
        # serializer): untrusted, and passed on as an empty dict so that
        # nothing downstream can ever read it.
        self._manager.submit_evidence({}, evidence)

    @messaging.expose
    def submit_evidence_batch(self, context: dict, batch: Any) -> None:
        # Several hosts' pushes (a relay); each is queued as one push.
        self._manager.submit_evidence_batch({}, batch)


class ManagementEndpoint:
    """Host operations for trusted-pools-api, on the host's owner.

    ``enroll_host``, ``attest_now`` and ``capture_policy`` return
    ``{"host", "operation", "state": "pending"}`` as soon as the request is
    checked; the work runs on the conductor's worker pool (RPC 3.0)."""

    target = messaging.Target(version=rpcapi.RPC_API_VERSION)

    def __init__(self, manager: Any) -> None:
        self._manager = manager

    @messaging.expose
    @messaging.expected_exceptions(*_HOST_OPERATION_ERRORS)
    def enroll_host(self, context: Any, host: str, group: str = "default",
                    ek_sha256: str | None = None) -> dict[str, Any]:
        return self._manager.start_operation(context, "enroll", host,
                                             group=group,
                                             ek_sha256=ek_sha256)

    @messaging.expose
    @messaging.expected_exceptions(*_HOST_OPERATION_ERRORS)
    def reset_enrollment(self, context: Any, host: str) -> dict[str, Any]:
        # Database only (no agent call): done before it answers.
        return self._manager.reset_enrollment(context, host)

    @messaging.expose
    @messaging.expected_exceptions(*_HOST_OPERATION_ERRORS)
    def attest_now(self, context: Any, host: str) -> dict[str, Any]:
        return self._manager.start_operation(context, "attest", host)

    @messaging.expose
    @messaging.expected_exceptions(*_HOST_OPERATION_ERRORS)
    def capture_policy(self, context: Any, host: str) -> dict[str, Any]:
        return self._manager.start_operation(context, "capture", host)

    # --- the key service (3.1; trusted_pools.conductor.keys) ---------------
    # Compute hosts never call these: their key manager asks
    # trusted-pools-api with the Nova request's token, and the API (on
    # the management bus) asks here. A release is wrapped to the named
    # host's TPM, so even a forged one gives nothing usable.

    @messaging.expose
    @messaging.expected_exceptions(*_HOST_OPERATION_ERRORS)
    def certify_binding_key(self, context: dict, host: str
                            ) -> dict[str, Any]:
        # 3.3: a host operation (the agent's TPM2_Certify runs on the
        # worker pool); at 3.1 it answered with the certified key.
        return self._manager.start_operation(context, "certify", host)

    @messaging.expose
    @messaging.expected_exceptions(*_SECRET_ERRORS)
    def store_secret(self, context: dict, project_id: str, payload: str,
                     secret_type: str, owner: str | None = None,
                     name: str | None = None, algorithm: str | None = None,
                     bit_length: int | None = None,
                     min_level: int | None = None,
                     host: str | None = None) -> dict[str, Any]:
        return self._manager.store_secret(
            context, project_id, payload, secret_type, owner=owner,
            name=name, algorithm=algorithm, bit_length=bit_length,
            min_level=min_level, host=host)

    @messaging.expose
    @messaging.expected_exceptions(*_SECRET_ERRORS)
    def release_secret(self, context: dict, secret_id: str, host: str
                       ) -> dict[str, Any]:
        return self._manager.release_secret(context, secret_id, host)

    @messaging.expose
    @messaging.expected_exceptions(*_SECRET_ERRORS)
    def delete_secret(self, context: dict, secret_id: str) -> None:
        self._manager.delete_secret(context, secret_id)

    # --- vTPM migration (3.2; trusted_pools.conductor.migration) -----------
    # On the destination's owner. migrate_vtpm records the migration and
    # returns at once; the worker pool makes the agent calls.

    @messaging.expose
    @messaging.expected_exceptions(*_MIGRATION_ERRORS)
    def migrate_vtpm(self, context: Any, instance: str, source: str,
                     destination: str, kind: str = "cold",
                     min_level: int | None = None) -> dict[str, Any]:
        return self._manager.migrate_vtpm(context, instance, source,
                                          destination, kind, min_level)

    @messaging.expose
    @messaging.expected_exceptions(*_MIGRATION_ERRORS)
    def list_vtpm_migrations(self, context: Any,
                             instance: str | None = None,
                             active: bool | None = None, limit: int = 100
                             ) -> list[dict[str, Any]]:
        if isinstance(limit, bool) or not isinstance(limit, int) or \
                not 1 <= limit <= 1000:
            raise exception.InvalidParameterValue(
                name="limit", reason="1 to 1000")
        return self._manager.list_vtpm_migrations(context, instance,
                                                  active, limit)

    @messaging.expose
    @messaging.expected_exceptions(*_MIGRATION_ERRORS)
    def show_vtpm_migration(self, context: Any, migration_id: str
                            ) -> dict[str, Any]:
        return self._manager.show_vtpm_migration(context, migration_id)

    @messaging.expose
    @messaging.expected_exceptions(*_MIGRATION_ERRORS)
    def complete_vtpm_migration(self, context: Any, migration_id: str
                                ) -> dict[str, Any]:
        return self._manager.complete_vtpm_migration(context, migration_id)

    @messaging.expose
    @messaging.expected_exceptions(*_MIGRATION_ERRORS)
    def abort_vtpm_migration(self, context: Any, migration_id: str,
                             reason: str = "aborted by the operator"
                             ) -> dict[str, Any]:
        if not isinstance(reason, str) or len(reason) > 500:
            raise exception.InvalidParameterValue(
                name="reason", reason="text of at most 500 characters")
        return self._manager.abort_vtpm_migration(context, migration_id,
                                                  reason)
    # --- deep attestation (3.3; NFV-SEC 007 4.4.3/4.4.4) --------------------
    # The instances' evidence comes from trusted-pools-api (a tenant's or
    # operator's request); it is verified like any evidence, by the
    # host's owner, on its worker pool.

    @messaging.expose
    @messaging.expected_exceptions(*_HOST_OPERATION_ERRORS)
    def challenge_instance(self, context: dict, host: str, instance: str,
                           image: str | None = None) -> dict[str, Any]:
        # Kept in the database by the host's owner: no agent call.
        # ``image`` (3.4) comes from trusted-pools-api's caller, on the
        # management bus: agents cannot reach this endpoint.
        return self._manager.challenge_instance(context, instance,
                                                host=host, image=image)

    @messaging.expose
    @messaging.expected_exceptions(*_HOST_OPERATION_ERRORS)
    def deep_attest(self, context: dict, host: str,
                    instances: list[dict[str, Any]]) -> dict[str, Any]:
        return self._manager.start_operation(context, "deep_attest", host,
                                             instances=instances)

    @messaging.expose
    @messaging.expected_exceptions(*_HOST_OPERATION_ERRORS)
    def list_vtpms(self, context: dict, host: str) -> dict[str, Any]:
        # The host's own report (not evidence), asked on the worker pool.
        return self._manager.start_operation(context, "list_vtpms", host)


class VerdictsEndpoint:
    """Signed verdicts for the consumers' bulk refresh (read only: the
    answer is the stored signed results, which consumers verify with keys
    they pinned)."""

    target = messaging.Target(version=rpcapi.VERDICTS_API_VERSION)

    def __init__(self, manager: Any) -> None:
        self._manager = manager

    @messaging.expose
    @messaging.expected_exceptions(exception.Invalid,
                                   exception.TemporaryFailure)
    def verdicts_since(self, context: Any, since: float
                       ) -> list[dict[str, Any]]:
        if isinstance(since, bool) or not isinstance(since, (int, float)):
            raise exception.InvalidParameterValue(
                name="since", reason="a number of seconds since the epoch "
                "is expected, not %s" % type(since).__name__)
        return self._manager.verdicts_since(context, float(since))
