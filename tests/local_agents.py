"""The conductor's agent client answered in-process by real
:class:`~trusted_pools.agent.attester.Attester` objects (one per host
TPM), for tests of conductor work whose bus path other tests cover."""

from __future__ import annotations

import base64
from typing import Any

from trusted_pools.agent.attester import Attester
from trusted_pools.protocol.evidence import encode_b64
from trusted_pools.tpm.constants import TPM_ALG


class LocalAgents:
    """The conductor's agent client, answered in-process by Attesters."""

    def __init__(self, attesters: dict[str, Attester],
                 vtpms: dict | None = None,
                 migrations: dict[str, Any] | None = None) -> None:
        self.attesters = attesters
        self.nonces: list[bytes] = []
        #: host -> trusted_pools.agent.migration.MigrationAgent (hosts
        #: without one answer migration steps with TemporaryFailure, as
        #: an agent with [vtpm] disabled does).
        self.migrations = migrations or {}
        #: Host -> its vTPM driver (list_vtpms answers from it).
        self.vtpms = vtpms if vtpms is not None else {}

    def get_identity(self, context, host):
        identity = self.attesters[host].identity()
        return {"host": host,
                "ek_certificate": encode_b64(identity.ek_certificate),
                "ek_public": encode_b64(identity.ek_public),
                "ak_public": encode_b64(identity.ak_public)}

    def activate_credential(self, context, host, credential_blob,
                            encrypted_secret):
        return encode_b64(self.attesters[host].activate_credential(
            base64.b64decode(credential_blob),
            base64.b64decode(encrypted_secret)))

    def get_evidence(self, context, host, nonce, banks, ima_start,
                     event_log, conductor=None):
        raw = base64.b64decode(nonce)
        self.nonces.append(raw)
        return self.attesters[host].evidence(
            raw, [TPM_ALG.SHA256], ima_start=ima_start,
            event_log=event_log).to_wire()

    def get_binding_key(self, context, host, nonce):
        key = self.attesters[host].binding_key(base64.b64decode(nonce))
        return {"public": encode_b64(key.public),
                "name": encode_b64(key.name),
                "certify_attest": encode_b64(key.certify_attest or b""),
                "certify_signature": encode_b64(key.certify_signature
                                                or b"")}

    # --- vTPM migration steps (agent API 1.3), straight to MigrationAgent

    def _migrations(self, host):
        from trusted_pools import exception
        agent = self.migrations.get(host)
        if agent is None:
            raise exception.TemporaryFailure(
                reason="host %s takes no part in vTPM migrations" % host)
        return agent

    def migration_prepare(self, context, host, migration_id, instance,
                          source, kind, epoch, nonce):
        return self._migrations(host).prepare(
            migration_id, instance, source, kind, epoch,
            base64.b64decode(nonce))

    def migration_export(self, context, host, migration_id, instance,
                         destination, kind, epoch, nonce, ak_public,
                         transport_key, binding_key):
        return self._migrations(host).export(
            migration_id, instance, destination, kind, epoch,
            base64.b64decode(nonce), base64.b64decode(ak_public),
            transport_key, binding_key)

    def migration_import(self, context, host, migration_id, instance,
                         source, epoch, payload):
        return self._migrations(host).import_state(
            migration_id, instance, source, epoch, payload)

    def migration_deliver_key(self, context, host, migration_id, instance,
                              source, epoch, payload, metadata):
        return self._migrations(host).deliver_key(
            migration_id, instance, source, epoch, payload, metadata)

    def can_check_incoming(self):
        return True  # agent API 1.5

    def migration_check_incoming(self, context, host, migration_id):
        return self._migrations(host).check_incoming(migration_id)

    def migration_commit(self, context, host, migration_id):
        return self._migrations(host).commit(migration_id)

    def migration_finish(self, context, host, migration_id):
        return self._migrations(host).finish(migration_id)

    def migration_abort(self, context, host, migration_id, instance, role):
        return self._migrations(host).abort(migration_id, instance, role)
    def list_vtpms(self, context, host):
        driver = self.vtpms.get(host)
        if host not in self.attesters:
            raise KeyError(host)
        if driver is None:
            return {"host": host, "enabled": False, "driver": None,
                    "vtpms": []}
        return {"host": host, "enabled": True, "driver": driver.name,
                "vtpms": [{"instance": i.instance_uuid,
                           "status": i.status.value, "reason": i.reason}
                          for i in driver.list()]}
