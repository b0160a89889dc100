"""Server side of the agent RPC API: endpoints on each compute host.

Every endpoint first checks the request's ``auth`` token against the
conductor keys this agent pins (:mod:`trusted_pools.verifier.
agent_requests`): a request that does not carry a valid one is refused with
:class:`~trusted_pools.exception.AgentRequestRefused` before the TPM is
touched, because any compute host can put a message on the bus.
"""

from __future__ import annotations

import functools
import logging
import random
import threading
from dataclasses import dataclass
from typing import Any, Callable

import oslo_messaging as messaging

from trusted_pools import exception
from trusted_pools.agent.attester import Attester
from trusted_pools.protocol import agent_requests
from trusted_pools.protocol import freshness
from trusted_pools.protocol.evidence import decode_b64 as _decode
from trusted_pools.protocol.evidence import encode_b64 as _b64
from trusted_pools.protocol.hash_ring import HashRing
from trusted_pools.tpm import constants

LOG = logging.getLogger(__name__)

# A conductor cannot make agents wait longer than this (seconds).
_MAX_SPREAD = 3600.0

# What an agent's endpoint may answer with (a refused request, a TPM that
# failed or is away, arguments it cannot use); anything else is a bug.
_EXPECTED = (exception.AgentRequestRefused, exception.TPMError,
             exception.TemporaryFailure, exception.Invalid,
             exception.EvidenceError)
# A migration step may also meet a vTPM that is missing, exists, is in the
# wrong state, is stale, or a step that contradicts this host's journal.
_MIGRATION_EXPECTED = _EXPECTED + (exception.Conflict, exception.NotFound,
                                   exception.VTPMError)

# Evidence is pushed to the conductor that announced the epoch.
EvidenceSink = Callable[[dict, str, dict[str, Any]], None]


def _authenticated(endpoint: Callable[..., Any]) -> Callable[..., Any]:
    """Run ``endpoint`` only for a request a pinned conductor signed.

    The token covers the keyword arguments exactly as they arrived (the
    RPC dispatcher passes them all by name), before any default is filled
    in.
    """
    method = endpoint.__name__

    @functools.wraps(endpoint)
    def checked(self: "AgentManager", context: dict, *,
                auth: str | None = None, **kwargs: Any) -> Any:
        try:
            self._requests.verify(method, kwargs, auth)
        except exception.AgentRequestRefused as error:
            LOG.warning("Refused request %s: %s", method, error)
            raise
        return endpoint(self, context, **kwargs)
    return checked


def _banks(names: list[str]) -> list[int]:
    return [constants.hash_by_name(name).alg for name in names]


@dataclass(frozen=True)
class _Sent:
    """What this agent last pushed to one conductor."""

    ima_next: int = 0
    event_log_digest: str | None = None


class AgentManager:
    """Endpoints of one agent. See :mod:`.rpcapi` for the version history."""

    target = messaging.Target(version="1.5")

    def __init__(self, attester: Attester, send_evidence: EvidenceSink,
                 requests: agent_requests.RequestVerifier,
                 vtpm: Any = None, migrations: Any = None) -> None:
        self.attester = attester
        #: This host's side of vTPM migrations
        #: (:class:`trusted_pools.agent.migration.MigrationAgent`), None
        #: when the agent runs no vTPMs.
        self.migrations = migrations
        self._requests = requests
        self._send_evidence = send_evidence
        self._sent: dict[str, _Sent] = {}
        self._said_not_enrolled = False
        #: The loaded vTPM driver (``[vtpm] enabled``), or None.
        self.vtpm = vtpm

    @messaging.expose
    @messaging.expected_exceptions(*_EXPECTED)
    @_authenticated
    def get_identity(self, context: dict) -> dict[str, Any]:
        identity = self.attester.identity()
        return {"host": self.attester.host,
                "ek_certificate": _b64(identity.ek_certificate),
                "ek_public": _b64(identity.ek_public),
                "ak_public": _b64(identity.ak_public)}

    @messaging.expose
    @messaging.expected_exceptions(*_EXPECTED)
    @_authenticated
    def activate_credential(self, context: dict, credential_blob: str,
                            encrypted_secret: str) -> str:
        secret = self.attester.activate_credential(
            _decode(credential_blob, "credential_blob"),
            _decode(encrypted_secret, "encrypted_secret"))
        return _b64(secret)

    @messaging.expose
    @messaging.expected_exceptions(*_EXPECTED)
    @_authenticated
    def get_binding_key(self, context: dict, nonce: str) -> dict[str, Any]:
        """This host's binding key, certified by its AK over the
        conductor's ``nonce`` (the conductor checks it against the AK it
        registered; 1.2)."""
        key = self.attester.binding_key(_decode(nonce, "nonce"))
        return {"public": _b64(key.public), "name": _b64(key.name),
                "certify_attest": _b64(key.certify_attest or b""),
                "certify_signature": _b64(key.certify_signature or b"")}

    # --- vTPM migration steps (1.3; trusted_pools.agent.migration) --------

    def _migrations(self) -> Any:
        if self.migrations is None:
            raise exception.TemporaryFailure(
                reason="host %s takes no part in vTPM migrations ([vtpm] "
                "enabled is off)" % self.attester.host)
        return self.migrations

    @messaging.expose
    @messaging.expected_exceptions(*_MIGRATION_EXPECTED)
    @_authenticated
    def migration_prepare(self, context: dict, migration_id: str,
                          instance: str, source: str, kind: str,
                          epoch: int, nonce: str) -> dict[str, Any]:
        """Destination: a one-time transport key certified by the AK over
        ``nonce``, and the binding key certified over it too."""
        return self._migrations().prepare(
            migration_id, instance, source, kind, epoch,
            _decode(nonce, "nonce"))

    @messaging.expose
    @messaging.expected_exceptions(*_MIGRATION_EXPECTED)
    @_authenticated
    def migration_export(self, context: dict, migration_id: str,
                         instance: str, destination: str, kind: str,
                         epoch: int, nonce: str, ak_public: str,
                         transport_key: dict, binding_key: dict
                         ) -> dict[str, Any]:
        """Source: lock the vTPM and seal its state (or live key) to the
        destination's transport key, checked here against ``ak_public``."""
        return self._migrations().export(
            migration_id, instance, destination, kind, epoch,
            _decode(nonce, "nonce"), _decode(ak_public, "ak_public"),
            transport_key, binding_key)

    @messaging.expose
    @messaging.expected_exceptions(*_MIGRATION_EXPECTED)
    @_authenticated
    def migration_import(self, context: dict, migration_id: str,
                         instance: str, source: str, epoch: int,
                         payload: dict) -> dict[str, Any]:
        return self._migrations().import_state(
            migration_id, instance, source, epoch, payload)

    @messaging.expose
    @messaging.expected_exceptions(*_MIGRATION_EXPECTED)
    @_authenticated
    def migration_deliver_key(self, context: dict, migration_id: str,
                              instance: str, source: str, epoch: int,
                              payload: dict, metadata: dict
                              ) -> dict[str, Any]:
        return self._migrations().deliver_key(
            migration_id, instance, source, epoch, payload, metadata)

    @messaging.expose
    @messaging.expected_exceptions(*_MIGRATION_EXPECTED)
    @_authenticated
    def migration_check_incoming(self, context: dict, migration_id: str
                                 ) -> dict[str, Any]:
        """Live destination, before the commit: the state arrived and
        the hypervisor holds the vTPM (1.5)."""
        return self._migrations().check_incoming(migration_id)

    @messaging.expose
    @messaging.expected_exceptions(*_MIGRATION_EXPECTED)
    @_authenticated
    def migration_commit(self, context: dict, migration_id: str
                         ) -> dict[str, Any]:
        return self._migrations().commit(migration_id)

    @messaging.expose
    @messaging.expected_exceptions(*_MIGRATION_EXPECTED)
    @_authenticated
    def migration_finish(self, context: dict, migration_id: str
                         ) -> dict[str, Any]:
        return self._migrations().finish(migration_id)

    @messaging.expose
    @messaging.expected_exceptions(*_MIGRATION_EXPECTED)
    @_authenticated
    def migration_abort(self, context: dict, migration_id: str,
                        instance: str, role: str) -> dict[str, Any]:
        return self._migrations().abort(migration_id, instance, role)

    @messaging.expose
    @messaging.expected_exceptions(*_EXPECTED)
    @_authenticated
    def list_vtpms(self, context: dict) -> dict[str, Any]:
        """This host's vTPMs as its driver sees them (1.4): what the host
        reports, not evidence; the conductor bounds and labels it."""
        if self.vtpm is None:
            return {"host": self.attester.host, "enabled": False,
                    "driver": None, "vtpms": []}
        return {"host": self.attester.host, "enabled": True,
                "driver": self.vtpm.name,
                "vtpms": [{"instance": info.instance_uuid,
                           "status": info.status.value,
                           "reason": info.reason}
                          for info in self.vtpm.list()]}

    @messaging.expose
    @messaging.expected_exceptions(*_EXPECTED)
    @_authenticated
    def get_evidence(self, context: dict, nonce: str, banks: list[str],
                     ima_start: int, event_log: bool,
                     conductor: str | None = None) -> dict[str, Any]:
        evidence = self.attester.evidence(
            _decode(nonce, "nonce"), _banks(banks), ima_start=ima_start,
            event_log=event_log)
        if conductor is not None:
            self._remember(conductor, evidence, _Sent())
        return evidence.to_wire()

    def _remember(self, conductor: str, evidence: Any, sent: "_Sent"
                  ) -> None:
        self._sent[conductor] = _Sent(
            sent.ima_next if evidence.ima is None
            else evidence.ima.start + (
                evidence.ima.data.count(b"\n") if evidence.ima.count is None
                else evidence.ima.count),
            evidence.event_log_digest)

    @messaging.expose
    @messaging.expected_exceptions(*_EXPECTED)
    @_authenticated
    def start_epoch(self, context: dict, conductor: str, epoch_id: str,
                    epoch_value: str, banks: list[str], members: list[str],
                    spread: float = 0.0) -> None:
        """Quote over this host's epoch nonce and push the evidence to the
        conductor that owns this host, after a random delay up to
        ``spread`` seconds (the per-host jitter of the interval)."""
        host = self.attester.host
        if not members or HashRing(members).owner(host) != conductor:
            return
        delay = random.uniform(0.0, max(0.0, min(float(spread), _MAX_SPREAD)))
        if delay <= 0.0:
            self._answer_epoch(context, conductor, epoch_id, epoch_value,
                               banks)
            return
        timer = threading.Timer(delay, self._answer_epoch, (
            context, conductor, epoch_id, epoch_value, banks))
        timer.daemon = True
        timer.start()

    def _cannot_answer(self, epoch_id: str, conductor: str,
                       error: exception.TrustedPoolsError) -> None:
        if isinstance(error, exception.TPMError) and \
                error.kwargs.get("name") == "TPM_RC_HANDLE" and \
                error.kwargs.get("command") == "ReadPublic":
            # No AK at its handle: the host was never enrolled (or its TPM
            # was cleared). Said once, with what fixes it, not every epoch.
            if not self._said_not_enrolled:
                self._said_not_enrolled = True
                LOG.warning(
                    "Not answering epochs: this host's TPM has no AK at "
                    "%#x yet. Enroll the host ('openstack trusted host "
                    "enroll %s --ek-sha256 ...'); the agent answers from "
                    "then on", self.attester.ak_handle, self.attester.host)
            else:
                LOG.debug("Cannot answer epoch %s: no AK yet (%s)",
                          epoch_id, error)
            return
        LOG.warning("Cannot answer epoch %s of conductor %s: %s",
                    epoch_id, conductor, error)

    def _answer_epoch(self, context: dict, conductor: str, epoch_id: str,
                      epoch_value: str, banks: list[str]) -> None:
        host = self.attester.host
        sent = self._sent.get(conductor, _Sent())
        try:
            nonce = freshness.host_nonce(_decode(epoch_value, "epoch_value"),
                                         host)
            evidence = self.attester.evidence(
                nonce, _banks(banks), epoch_id=epoch_id,
                ima_start=sent.ima_next,
                known_event_log_digest=sent.event_log_digest)
        except exception.TrustedPoolsError as error:
            # The conductor sees no evidence and marks the host unknown.
            self._cannot_answer(epoch_id, conductor, error)
            return
        self._said_not_enrolled = False
        self._remember(conductor, evidence, sent)
        try:
            self._send_evidence(context, conductor, evidence.to_wire())
        except messaging.MessagingException as error:
            # The bus is away: this epoch is lost; the next one, or the
            # conductor's direct challenge, catches up.
            LOG.warning("Cannot push evidence to conductor %s: %s",
                        conductor, error)
