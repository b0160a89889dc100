"""Server side of the conductor RPC API, and the attestation cycle.

One conductor owns the hosts the hash ring gives it. Each interval it
starts an epoch and announces it to every agent with one fanout cast; each
of its hosts pushes evidence quoted over its own epoch nonce
(:mod:`trusted_pools.protocol.freshness`). Evidence is queued by the RPC
thread and verified in batches by a worker, whose verdicts are written to
the database in one transaction per batch; a change of trust is announced
with a signed notification. Hosts that send nothing for
``unknown_after_missed`` epochs get an "unknown" verdict.

The bus is not a trusted channel: any compute host can cast
``submit_evidence`` in any host's name. So a push that fails verification
(malformed, bad signature, wrong nonce, stale epoch, wrong host, logs that
do not replay) never gives a verdict by itself: it earns the named host a
direct challenge with a one-off nonce, at most one per host per interval,
and only the answer to that challenge (or silence, which ends in
"unknown") is recorded. A conductor takes evidence only for the hosts it
owns on the hash ring. A genuine quote older than one already accepted is
judged by :func:`freshness.answered_before_accepted`: verified late after
a pause or a redelivery it is dropped, never called a replay.
"""

from __future__ import annotations

import datetime
import itertools
import logging
import os
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Union

import oslo_messaging as messaging

from trusted_pools import exception
from trusted_pools.conductor import vtpm_report
from trusted_pools.verifier import deep as deep_mod
from trusted_pools.verifier import enrollment
from trusted_pools.protocol import freshness
from trusted_pools.protocol import keystore
from trusted_pools.protocol import results
from trusted_pools.protocol import verdict as verdict_mod
from trusted_pools.protocol.evidence import Evidence, Limits
from trusted_pools.protocol.evidence import decode_b64 as _b64d
from trusted_pools.protocol.evidence import encode_b64 as _b64
from trusted_pools.common import context as context_mod
from trusted_pools.conductor import instance_challenges
from trusted_pools.conductor import migration as migration_mod
from trusted_pools.conductor import metrics as metrics_mod
from trusted_pools.verifier import pipeline as verifier
from trusted_pools.protocol.hash_ring import HashRing
from trusted_pools.db import api as db_api
from trusted_pools.protocol import topics
from trusted_pools.tpm import sealing
from trusted_pools.tpm import structures

LOG = logging.getLogger(__name__)

TRUST_EVENT = topics.TRUST_EVENT

# Pushes in one submit_evidence_batch message (a relay's batch): bounds
# what one message can make the RPC thread do.
MAX_EVIDENCE_BATCH = 1000

# Direct challenges in flight at once: a flood of failing pushes naming
# many hosts costs at most this many agent calls at a time.
MAX_CHALLENGES_IN_FLIGHT = 16

# Pushes one host name may have waiting for the worker at once (the rule
# is explained in ConductorManager.submit_evidence).
MAX_PENDING_PER_HOST = 2


@dataclass(frozen=True)
class _Push:
    """Evidence an agent pushed (unverified: anyone on the bus can)."""

    received_at: float
    wire: Any
    #: The host name the push claims (it holds one of that name's queue
    #: places until the worker takes it).
    host: str = ""


@dataclass(frozen=True)
class _Answer:
    """A host's answer to this conductor's direct challenge (``wire`` is
    None when the host did not answer)."""

    host: str
    nonce: bytes
    issued: int
    wire: Any
    received_at: float


#: Reason of the verdict recorded when the operator resets a host.
RESET_REASON = ("enrollment reset by the operator; enroll the host's TPM "
                "again")


def _utc(ts: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc)


def _host_name(host: Any) -> str:
    """A management call's host name, or a typed error."""
    if not isinstance(host, str) or not host:
        raise exception.InvalidParameterValue(
            name="host", reason="expected a non-empty host name, got %s"
            % type(host).__name__)
    return host


def _identity_field(identity: Any, key: str, what: str) -> bytes:
    """A base64 field of the identity an agent sent (the host wrote it,
    so it is checked like evidence)."""
    if not isinstance(identity, dict) or key not in identity:
        raise exception.MalformedEvidence(
            what="agent identity", reason="%s is missing" % key)
    return _b64d(identity[key], what)


def _since(since: Any) -> datetime.datetime:
    """A caller's ``since`` (epoch seconds) as a time, or a typed error:
    not a number, NaN or out of the calendar's range."""
    try:
        if isinstance(since, bool) or not isinstance(since, (int, float)):
            raise TypeError(type(since).__name__)
        return _utc(since)
    except (TypeError, ValueError, OverflowError, OSError) as error:
        raise exception.InvalidParameterValue(
            name="since", reason="expected seconds since the epoch (%s)"
            % error) from None


class ConductorManager:
    """A conductor's work. Only what :mod:`.endpoints` exposes is
    reachable over the bus (see :mod:`.rpcapi` for the versions)."""

    def __init__(self, host: str, db: db_api.Connection,
                 signing_key: Any, agents: Any,
                 notifier: messaging.Notifier | None,
                 ca_bundle: bytes | Callable[[], bytes], *,
                 interval: int = 60, unknown_after_missed: int = 2,
                 heartbeat_timeout: int = 60, banks: tuple[str, ...] =
                 ("sha256",), batch_size: int = 500,
                 epoch_spread: float = 0.0,
                 clock: Callable[[], float] = time.time,
                 ek_only_anchors: tuple[str, ...] = (),
                 limits: Limits = Limits(),
                 keys: Any = None,
                 metrics: metrics_mod.ConductorMetrics | None = None,
                 migration_step_timeout: float = 300.0,
                 max_queued_evidence: int = 20000,
                 max_pending_per_host: int = MAX_PENDING_PER_HOST) -> None:
        self.host = host
        #: Prometheus metrics (served by the service if configured).
        self.metrics = metrics or metrics_mod.ConductorMetrics()
        # --- evidence path: load shedding (issue 15) ---
        #: Pushes waiting for the worker beyond which new pushes are shed
        #: (``[conductor] evidence_queue_limit``); and what was shed.
        self.max_queued_evidence = max_queued_evidence
        self.shed: dict[str, int] = {"queue_full": 0, "waited_too_long": 0}
        #: Queue places one host name may hold (see submit_evidence).
        self.max_pending_per_host = max_pending_per_host
        # Host name -> its pushes waiting in the queue; the admission
        # check and the count change together under _admit_lock (the RPC
        # server may run several dispatch threads).
        self._pending: dict[str, int] = {}
        self._admit_lock = threading.Lock()
        # The names of enrolled hosts (all of them, not only this
        # conductor's: the ring is checked apart). Read from the database
        # at each epoch, when refresh_enrollments reads the hosts anyway,
        # and changed at once by this conductor's own enrollments and
        # resets; None until first read.
        self._enrolled_names: frozenset[str] | None = None
        # This conductor's own enrollments and resets, numbered: a read of
        # the database that began before one of them may predate its
        # commit, so the change is laid over that read (else a concurrent
        # read would drop a host enrolled here for an interval, or admit
        # one reset here). Changes and the set change under _names_lock.
        self._names_lock = threading.Lock()
        self._name_changes: dict[str, tuple[int, bool]] = {}
        self._name_change_count = 0
        # The read_from of the read the set was made from: a read begun
        # earlier that ends later is not installed over it.
        self._names_read_from = -1
        #: Evidence size limits (``[attestation] max_event_log_bytes`` and
        #: ``max_ima_log_bytes`` in the service), on the wire and in
        #: verification.
        self.limits = limits
        #: The key service (:class:`trusted_pools.conductor.keys.
        #: KeyService`), or None when [key_service] is disabled.
        self.keys = keys
        self.ek_only_anchors = ek_only_anchors
        self.epoch_spread = epoch_spread
        self.db = db
        self.signer = results.ResultSigner(signing_key, host)
        self.public_pem = keystore.public_key_pem(signing_key)
        self.agents = agents
        self.notifier = notifier
        #: The EK CA certificates (PEM), or a callable that reads them
        #: (the service's re-reads the file when it changed).
        self._ca_bundle = ca_bundle
        self.interval = interval
        self.unknown_after_missed = unknown_after_missed
        self.heartbeat_timeout = heartbeat_timeout
        self.banks = list(banks)
        self.batch_size = batch_size
        self.clock = clock
        self.order = freshness.IssueOrder()
        self.epochs = freshness.EpochKeeper(self.order)
        self.ring = HashRing([host])
        self._states: dict[str, verifier.HostState] = {}
        self._states_lock = threading.Lock()
        # Verification of one host's evidence is serialised: the worker,
        # attest_now (RPC thread) and challenge answers share HostState,
        # and the ordering rule needs acceptances in issue order.
        self._verify_lock = threading.RLock()
        # Pushes and challenge answers, taken by the worker answers first
        # (rank 0), then in arrival order: an answer holds one of the few
        # challenge places until it is verified, so it must not wait
        # behind a flood of pushes (see _take_batch).
        self._queue: queue.PriorityQueue[
            tuple[int, int, Union[_Push, _Answer]]] = queue.PriorityQueue()
        self._arrival = itertools.count()
        self.metrics.watch_queue(self._queue.qsize)
        self._challenge_lock = threading.Lock()
        self._in_flight: set[str] = set()
        # Host -> time of the last challenge a failing push earned it.
        self._failure_challenges: dict[str, float] = {}
        #: Challenges made because a push failed, per host (operators'
        #: logs and tests read it).
        self.failure_challenges: dict[str, int] = {}
        self.spawn: Callable[[Callable[[], None]], None] = _daemon_thread
        self._published: dict[str, tuple[str, int]] = {}
        self._last_evidence: dict[str, float] = {}
        self._policy_cache: dict[str, Any] = {}
        #: Deep attestation of instances (issue 11): its signer of instance
        #: verdicts, and the instance nonces, kept in the database (shared
        #: by the conductors, kept across restarts).
        self.instance_challenges = instance_challenges.DatabaseChallenges(
            db, host, clock=lambda: self.clock())
        self.deep = deep_mod.DeepVerifier(
            deep_mod.InstanceResultSigner(signing_key, host),
            nonces=self.instance_challenges, validity=self.validity,
            policies_for=self.instance_challenges.policies_for)
        #: vTPM migrations (issue 12): the state machine this conductor
        #: drives (trusted_pools.conductor.migration).
        self.migrations = migration_mod.MigrationCoordinator(
            self, step_timeout=migration_step_timeout)
        # Instance verdicts are stored in the database (instance_verdicts),
        # each tied to the host verdict and enrollment it relied on.

    # --- validity and ownership ---------------------------------------------

    @property
    def ca_bundle(self) -> bytes:
        bundle = self._ca_bundle
        return bundle() if callable(bundle) else bundle

    @property
    def validity(self) -> int:
        """Seconds a verdict may be relied on: past it, no fresh evidence."""
        return self.interval * (self.unknown_after_missed + 1)

    def refresh_ring(self) -> HashRing:
        alive = self.db.list_alive_conductors(self.heartbeat_timeout)
        members = set(alive) | {self.host}
        if members != set(self.ring.conductors):
            LOG.info("Conductor ring is now %s", ", ".join(sorted(members)))
            self.ring = HashRing(members)
        return self.ring

    def owned_hosts(self) -> list[db_api.Host]:
        return [h for h in self.db.list_hosts(state="enrolled")
                if self.ring.owner(h.hostname) == self.host]

    def register(self) -> None:
        """Join the ring (again after a restart: the row is reused), and
        publish the public half of the signing key in the database, where
        trusted-pools-api serves it as a JWKS (consumers never take keys
        from the bus). Operations a previous run of this conductor left
        pending died with it: they are failed."""
        self.db.register_conductor(self.host, update_existing=True,
                                   public_key=self.public_pem,
                                   key_id=self.signer.kid)
        failed = self.db.fail_pending_operations(
            self.host, "conductor %s restarted before the operation ended"
            % self.host)
        if failed:
            LOG.warning("%d operation(s) left pending by an earlier run of "
                        "conductor %s failed", failed, self.host)

    def heartbeat(self) -> None:
        self.db.touch_conductor(self.host)

    # --- host state ------------------------------------------------------------

    def _policies(self, group: str) -> Any:
        cached = self._policy_cache.get(group)
        if cached is None:
            records = self.db.policies_for_group(group)
            cached = (_versions(records),
                      verifier.load_host_policies(records))
            self._policy_cache[group] = cached
        return cached[1]

    def reload_policies(self) -> None:
        """Drop cached policies: they are read again on next use."""
        self._policy_cache = {}
        self._drop_host_policies(None)

    def refresh_policies(self) -> None:
        """Pick up policy versions created or assigned elsewhere (another
        conductor, the CLI); parse again only the groups that changed."""
        for group, (versions, _) in list(self._policy_cache.items()):
            if _versions(self.db.policies_for_group(group)) != versions:
                LOG.info("Policies of host group %s changed; appraising "
                         "with the new versions", group)
                # pop, not del: a policy change handled on another
                # thread (reload_policies) may have dropped it already.
                self._policy_cache.pop(group, None)
                self._drop_host_policies(group)

    def _drop_host_policies(self, group: str | None) -> None:
        with self._states_lock:
            for state in self._states.values():
                if group is None or state.group == group:
                    state.policy = None
                    # The runtime outcome kept for entries already replayed
                    # was judged by the old policy: replay them all again.
                    state.forget_ima()

    def _state(self, hostname: str) -> verifier.HostState:
        with self._states_lock:
            state = self._states.get(hostname)
        if state is None:
            state = self._load_state(hostname)
            with self._states_lock:
                state = self._states.setdefault(hostname, state)
        if state.policy is None:
            state.policy = self._policies(state.group)
        return state

    def _load_state(self, hostname: str) -> verifier.HostState:
        host = self.db.get_host_by_name(hostname)
        if host.state != "enrolled":
            # A host the operator reset (or one still enrolling) may keep a
            # registration row for a moment; none of it is trusted.
            raise exception.HostNotEnrolled(host=hostname, state=host.state)
        registration = self.db.get_registration(host.id)
        state = verifier.HostState(
            host=hostname, host_id=host.id, group=host.group,
            ak=structures.load_public(registration.ak_public),
            registration=registration.generation)
        # The clock baseline belongs to the registration: a verdict of an
        # earlier one came from another TPM (a swapped board), whose clock
        # would make every quote of this one look replayed.
        latest = self.db.latest_clock_verdict(host.id,
                                              registration.generation)
        if latest is not None:
            state.clock = verifier.StoredClock(
                latest.quote_clock, latest.reset_count or 0,
                latest.restart_count or 0)
        return state

    def forget_host(self, hostname: str) -> None:
        with self._states_lock:
            self._states.pop(hostname, None)

    def refresh_enrollments(self) -> list[str]:
        """Drop what this conductor remembers of hosts whose registration
        changed elsewhere; returns the names whose cached state it dropped.

        A reset or a re-enrollment handled by another conductor (or the
        CLI) must not leave this one accepting quotes of the old AK, or
        comparing against the old TPM's clock: a host no longer enrolled,
        or enrolled under another generation than the cached state's, is
        forgotten. Its next evidence reloads the registration (and is
        ignored while the host is not enrolled). A host moved to another
        group is forgotten too, so that it is reloaded with its new group's
        policies, but not returned: its registration did not change.
        """
        with self._states_lock:
            cached = {name: state.registration
                      for name, state in self._states.items()}
            groups = {name: state.group
                      for name, state in self._states.items()}
        if not cached and not self._published:
            return []
        read_from = self._name_change_count
        current = self.db.host_enrollments()
        self.refresh_enrolled_names(current, read_from)
        changed = sorted(
            name for name in cached
            if _registration_changed(current.get(name), cached[name]))
        moved = sorted(
            name for name in cached if name not in changed
            and current[name].group != groups[name])
        for name in moved:
            # Same TPM, other policies: the cached AK and clock stay
            # valid, but the state holds the old group's policies and the
            # IMA outcome they judged; reload it from the database.
            self.forget_host(name)
            LOG.info("Host %s moved from group %s to %s: appraised with "
                     "the new group's policies from its next evidence",
                     name, groups[name], current[name].group)
        for name in changed:
            self.forget_host(name)
            # Silence is counted from the new enrollment on.
            self._last_evidence.pop(name, None)
            LOG.info("Registration of host %s changed (%s): cached AK and "
                     "clock dropped", name, _describe(current.get(name)))
        for name in list(self._published):
            if _registration_changed(current.get(name), cached.get(name)):
                self._drop_announcement(name, current.get(name))
        return changed

    def refresh_enrolled_names(
            self, current: dict[str, db_api.HostEnrollment] | None = None,
            read_from: int | None = None) -> frozenset[str]:
        """Read again which hosts are enrolled (``current``: what the
        caller just read from the database, after noting ``read_from``,
        the count of this conductor's own enrollment changes then). Pushes
        in any other name are dropped before they are queued
        (:meth:`submit_evidence`). A host enrolled through another
        conductor or the CLI is pushed for from the next epoch on, when
        this is read again."""
        if current is None or read_from is None:
            read_from = self._name_change_count
            current = self.db.host_enrollments()
        names = {name for name, e in current.items()
                 if e.state == "enrolled"}
        with self._names_lock:
            if read_from < self._names_read_from and \
                    self._enrolled_names is not None:
                # A read begun after this one was installed meanwhile.
                return self._enrolled_names
            # This conductor's changes since the read began win over it.
            for name, (number, enrolled) in self._name_changes.items():
                if number > read_from:
                    if enrolled:
                        names.add(name)
                    else:
                        names.discard(name)
            self._name_changes = {
                name: change for name, change in self._name_changes.items()
                if change[0] > read_from}
            self._enrolled_names = frozenset(names)
            self._names_read_from = read_from
            return self._enrolled_names

    def enrolled_names(self) -> frozenset[str]:
        names = self._enrolled_names
        return names if names is not None else self.refresh_enrolled_names()

    def _enrolled_here(self, host: str, enrolled: bool) -> None:
        """This conductor enrolled (or reset) ``host``: committed, so
        every read of the database begun from now on sees it."""
        with self._names_lock:
            self._name_change_count += 1
            self._name_changes[host] = (self._name_change_count, enrolled)
            names = self._enrolled_names
            if names is not None:
                self._enrolled_names = (names | {host} if enrolled
                                        else names - {host})

    def _drop_announcement(self, name: str,
                           enrollment: db_api.HostEnrollment | None) -> None:
        """Forget the last announcement of a host whose registration
        changed: its next verdict is news to consumers even if it repeats
        that one. One that said "trusted" for a host no longer enrolled is
        superseded at once: quotes judged here with the old AK between the
        reset and now may have left a trusted verdict newer than the
        reset's own."""
        announced = self._published.pop(name, ("", 0))[0]
        if announced == "trusted" and enrollment is not None and \
                enrollment.state != "enrolled":
            self._record_not_enrolled(self.db.get_host_by_name(name))

    # --- operations behind the RPC endpoints (conductor.endpoints) ----------

    def enroll_host(self, context: dict, host: str, group: str = "default",
                    ek_sha256: str | None = None) -> dict[str, Any]:
        """Register ``host``: EK chain and profile, the operator's EK
        approval, AK rules, credential activation.

        ``ek_sha256`` is the operator's approval of the host's EK (SHA-256
        of its SubjectPublicKeyInfo DER), needed at the first enrollment
        and after ``reset_enrollment``; an enrolled host re-enrolls (a new
        AK) only with the EK it is bound to. A refusal changes nothing.
        """
        self._check_owner(host)
        identity = self._agent_call("get_identity", context, host)
        ek_certificate = _identity_field(identity, "ek_certificate",
                                         "EK certificate")
        challenge = enrollment.start_enrollment(
            host, ek_certificate,
            _identity_field(identity, "ek_public", "EK public"),
            _identity_field(identity, "ak_public", "AK public"),
            ca_bundle=self.ca_bundle, ek_only_anchors=self.ek_only_anchors)
        pending = challenge.challenge
        # Refuse an unapproved or foreign EK before the TPM is asked
        # anything more; the database checks again when it writes.
        self.db.check_enrollment(host, pending.ek_public_sha256,
                                 pending.ak_name, approve=ek_sha256)
        secret = self._agent_call(
            "activate_credential", context, host,
            _b64(challenge.credential_blob),
            _b64(challenge.encrypted_secret))
        registration = enrollment.finish_enrollment(
            pending, _b64d(secret, "activated secret"))
        record, stored = self.db.enroll(
            host, group, ek_certificate, registration.ek_public_sha256,
            registration.ak_public, registration.ak_name, approve=ek_sha256)
        self.forget_host(host)
        self._enrolled_here(host, True)
        LOG.info("Host %s enrolled (EK public key SHA-256 %s, AK name %s, "
                 "generation %d)", host, registration.ek_public_sha256,
                 registration.ak_name.hex(), stored.generation)
        # The binding key a released secret is wrapped to is certified by
        # the new AK at once; without it the host is refused secrets (not
        # enrollment), and the operator can certify it later.
        binding = None
        try:
            binding = self._certify_binding_key(context, host)["name"]
        except (exception.TrustedPoolsError,
                messaging.MessagingException) as error:
            LOG.warning("Host %s enrolled without a certified binding key "
                        "(it will be refused vTPM secrets until one is "
                        "certified): %s", host, error)
        return {"host": host, "group": record.group,
                "binding_key": binding,
                "ek_sha256": registration.ek_public_sha256,
                "ek_certificate_fingerprint":
                    registration.ek_certificate_fingerprint,
                "ak_name": registration.ak_name.hex(),
                "generation": stored.generation}

    def certify_binding_key(self, context: dict, host: str
                            ) -> dict[str, Any]:
        """Have ``host``'s enrolled AK certify its binding key (created by
        the agent on first use) over a fresh nonce, check it, and store
        it for the key service. The agent's answer is untrusted: only a
        TPM2_Certify by the registered AK over this nonce, of a key with
        binding-key attributes, is kept."""
        self._check_owner(host)
        return self._certify_binding_key(context, host)

    def _certify_binding_key(self, context: dict, host: str
                             ) -> dict[str, Any]:
        record = self.db.get_host_by_name(host)
        if record.state != "enrolled":
            raise exception.HostNotEnrolled(host=host, state=record.state)
        registration = self.db.get_registration(record.id)
        nonce = os.urandom(32)
        # Through _agent_call: the agent may be the attacker's, so it gets
        # the request id and nothing of the operator's context (token,
        # roles), and no answer is a typed AgentUnreachable.
        wire = self._agent_call("get_binding_key", context, host,
                                _b64(nonce))
        if not isinstance(wire, dict):
            raise exception.MalformedEvidence(
                what="binding key", reason="the agent's answer is not an "
                "object")
        public = _identity_field(wire, "public", "binding key public")
        verified = sealing.check_binding_key(
            public, _identity_field(wire, "certify_attest", "certify attest"),
            _identity_field(wire, "certify_signature",
                            "certify signature"),
            registration.ak_public, qualifying_data=nonce)
        self.db.set_binding_key(record.id, registration.generation, public,
                                verified.name)
        LOG.info("Binding key %s of host %s certified by its AK "
                 "(generation %d)", verified.name.hex(), host,
                 registration.generation)
        return {"host": host, "name": verified.name.hex(),
                "generation": registration.generation}

    # --- the key service (trusted_pools.conductor.keys) ----------------------

    def _key_service(self) -> Any:
        if self.keys is None:
            raise exception.TemporaryFailure(
                reason="the key service is disabled on conductor %s "
                "([key_service] enabled)" % self.host)
        return self.keys

    def store_secret(self, context: dict, project_id: str, payload: str,
                     secret_type: str, owner: str | None = None,
                     name: str | None = None, algorithm: str | None = None,
                     bit_length: int | None = None,
                     min_level: int | None = None,
                     host: str | None = None) -> dict[str, Any]:
        return self._key_service().store(
            project_id, _b64d(payload, "secret payload"), secret_type,
            owner=owner, name=name, algorithm=algorithm,
            bit_length=bit_length, min_level=min_level, host=host,
            context=context)

    def release_secret(self, context: dict, secret_id: str, host: str
                       ) -> dict[str, Any]:
        return self._key_service().release(secret_id, host, context)

    def delete_secret(self, context: dict, secret_id: str) -> None:
        self._key_service().delete(secret_id)

    def reset_enrollment(self, context: dict, host: str) -> dict[str, Any]:
        """The operator's reset after a TPM or motherboard swap: forget the
        host's EK approval and registration (it is not attested until it
        enrolls again, with ``ek_sha256`` for its new EK), and record and
        announce at once a signed "unknown" verdict for it, so the
        scheduler and Placement drop the host without waiting for its last
        trusted verdict to expire. Other conductors drop their cached
        registration within one interval (:meth:`refresh_enrollments`)."""
        self._check_owner(host)
        record = self.db.reset_enrollment(host)
        self.forget_host(host)
        self._enrolled_here(host, False)
        LOG.warning("Enrollment of host %s reset by the operator: it must "
                    "enroll again with an approved EK", host)
        self._record_not_enrolled(record)
        return {"host": host, "state": record.state}

    # --- management operations, run off the RPC thread ------------------------

    def start_operation(self, context: Any, kind: str, host: str,
                        **arguments: Any) -> dict[str, Any]:
        """What the management endpoint does with an enroll, attest or
        capture request: check it quickly (the host's name, this
        conductor's ownership, the host's state), record a pending
        operation and hand the work (agent calls, TPM credential
        activation, appraisal) to the worker pool. Returns at once; the
        outcome is the operation's row (:meth:`run_operation`).

        An enrollment of a host that has one pending is refused with
        :class:`OperationInProgress` (a Conflict): two activations of the
        host's credential at once would race on its registration.

        :raises InvalidParameterValue, HostNotOwned, HostNotFound,
            HostNotEnrolled, OperationInProgress, TemporaryFailure:
        """
        work = self._operations()[kind]
        self._check_owner(host)
        if kind == "enroll":
            _check_enroll_arguments(**arguments)
        else:
            if kind == "deep_attest":
                _check_deep_arguments(**arguments)
            # Attest and capture need an enrolled host: say so now.
            self._state(host)
        operation = self._create_operation(context, kind, host)
        try:
            self.spawn(lambda: self.run_operation(operation.id, context,
                                                  work, host, arguments))
        except exception.TrustedPoolsError as error:
            self._finish_failed(operation.id, error)
            raise
        LOG.info("%s of host %s accepted as operation %s", kind.title(),
                 host, operation.id)
        return {"host": host, "operation": operation.id,
                "state": operation.state}

    def _operations(self) -> dict[str, Callable[..., dict[str, Any]]]:
        return {"enroll": self.enroll_host, "attest": self.attest_now,
                "capture": self.capture_policy,
                "certify": self.certify_binding_key,
                "deep_attest": self._deep_attest_operation,
                "list_vtpms": self.list_vtpms}

    def _create_operation(self, context: Any, kind: str, host: str
                          ) -> db_api.HostOperation:
        request_id = getattr(context, "request_id", None)
        user = getattr(context, "user_id", None)
        exclusive = kind == "enroll"
        try:
            return self.db.create_operation(
                host, kind, self.host, request_id=request_id,
                requested_by=user, exclusive=exclusive)
        except exception.OperationInProgress as error:
            # A pending enrollment whose conductor died never ends by
            # itself: fail it, and take this one.
            other = self.db.get_operation(error.kwargs.get("operation"))
            if other.conductor == self.host or other.conductor in \
                    self.db.list_alive_conductors(self.heartbeat_timeout):
                raise
            LOG.warning("Operation %s of host %s was left pending by "
                        "conductor %s, which is gone: failed", other.id,
                        host, other.conductor)
            self._finish_failed(other.id, exception.TemporaryFailure(
                reason="conductor %s stopped before the operation ended"
                % other.conductor))
            return self.db.create_operation(
                host, kind, self.host, request_id=request_id,
                requested_by=user, exclusive=exclusive)

    def run_operation(self, operation_id: str, context: Any,
                      work: Callable[..., dict[str, Any]], host: str,
                      arguments: dict[str, Any]) -> None:
        """Worker: do the operation and record how it ended (its result,
        or the typed error with its reason). Never raises."""
        if hasattr(context, "update_store"):
            # This thread's log lines carry the API's request id.
            context.update_store()
        try:
            self._run_operation(operation_id, context, work, host,
                                arguments)
        finally:
            context_mod.clear_current()

    def _run_operation(self, operation_id: str, context: Any,
                       work: Callable[..., dict[str, Any]], host: str,
                       arguments: dict[str, Any]) -> None:
        try:
            result = work(context, host, **arguments)
        except exception.TrustedPoolsError as error:
            LOG.warning("Operation %s on host %s failed: %s", operation_id,
                        host, error)
            self._finish_failed(operation_id, error)
            return
        except Exception:  # noqa: BLE001 - recorded, logged, not raised
            LOG.exception("Operation %s on host %s failed unexpectedly",
                          operation_id, host)
            self._finish_failed(operation_id, exception.TrustedPoolsError(
                "The operation failed unexpectedly; the conductor's log "
                "has the details (request %s)"
                % getattr(context, "request_id", "?")))
            return
        try:
            self.db.finish_operation(operation_id, result=result)
        except exception.ConcurrentUpdate:
            LOG.warning("Operation %s was failed meanwhile (its conductor "
                        "was taken for dead); its result is dropped",
                        operation_id)
        except exception.TrustedPoolsError:
            LOG.exception("Could not record the result of operation %s",
                          operation_id)
        else:
            LOG.info("Operation %s on host %s done", operation_id, host)

    def _finish_failed(self, operation_id: str,
                       error: exception.TrustedPoolsError) -> None:
        try:
            self.db.finish_operation(
                operation_id, error_type=_error_type(error),
                error={"message": error.message,
                       "kwargs": _json_safe(error.kwargs)})
        except exception.ConcurrentUpdate:
            LOG.info("Operation %s had already ended", operation_id)
        except exception.TrustedPoolsError:
            LOG.exception("Could not record the failure of operation %s",
                          operation_id)

    def _agent_call(self, method: str, context: Any, host: str,
                    *args: Any, **kwargs: Any) -> Any:
        """A call to ``host``'s agent from a worker; its context carries
        only the request id. No answer is :class:`AgentUnreachable`."""
        try:
            return getattr(self.agents, method)(
                context_mod.agent_context(context), host, *args, **kwargs)
        except messaging.MessagingTimeout as error:
            raise exception.AgentUnreachable(
                host=host, method=method,
                reason="no answer in time: %s" % error) from error
        except messaging.MessagingException as error:
            raise exception.AgentUnreachable(
                host=host, method=method, reason=str(error)) from error

    def _check_owner(self, host: str) -> None:
        """Refuse a management call for a host another conductor owns:
        two conductors judging one host would race on its clock baseline
        and its IMA replay state."""
        owner = self.refresh_ring().owner(_host_name(host))
        if owner != self.host:
            raise exception.HostNotOwned(host=host, owner=owner,
                                         conductor=self.host)

    def _record_not_enrolled(self, host: db_api.Host) -> str:
        """Sign, store and announce at once that ``host`` is not trusted.

        Its last trusted verdict would otherwise stay valid until it
        expires, and nothing would tell the scheduler or Placement. The
        verdict carries the generation that was reset; it has no clock, so
        it is never a replay baseline.
        """
        state = verifier.HostState(
            host=host.hostname, host_id=host.id, group=host.group,
            # No AK: the registration is gone. Recording reads only the
            # host's id, generation, clock and IMA state (none here, so
            # the deleted IMA replay state is not written back).
            ak=None,  # type: ignore[arg-type]
            registration=host.enrollment_generation)
        verdict = verdict_mod.unknown_verdict(
            host=host.hostname, reason=_not_enrolled_reason(host.state),
            issued_at=int(self.clock()), validity=self.validity)
        # Announce even if this conductor last announced "unknown" for the
        # host: it may not own it, and the owner announced "trusted".
        self._published.pop(host.hostname, None)
        return self._record([(state, verdict)])[0]

    def attest_now(self, context: dict, host: str) -> dict[str, Any]:
        """Challenge ``host`` now with a one-off nonce; return its verdict."""
        self._check_owner(host)
        # An operator who just changed a policy (through the API, straight
        # into the database) attests with it, not with the cached one.
        self.refresh_policies()
        # Twice at most: a push accepted while the host was answering may
        # be newer than the answer (late, not judged); ask once more.
        for _ in range(2):
            state = self._state(host)
            # A one-off nonce: starting an epoch here would turn the epoch
            # hosts are answering into a stale one.
            nonce = os.urandom(32)
            issued = self.order.next()
            request = state.request()
            wire = self._agent_call(
                "get_evidence", context, host, _b64(nonce), self.banks,
                request["ima_start"], True, conductor=self.host)
            if _superseded(state, issued):
                continue
            verdict = self._verify_wire(state, wire, nonce, issued)
            if verdict is not None:
                token = self._record([(state, verdict)])[0]
                return {"verdict": _verdict_json(verdict),
                        "signed_result": token}
        raise exception.TemporaryFailure(
            reason="newer evidence of host %s kept arriving while it "
                   "answered; its latest verdict stands" % host)

    def capture_policy(self, context: dict, host: str) -> dict[str, Any]:
        """Policy bodies from ``host``'s current evidence, for review.

        Golden-measurement registration (NFV-SEC 007 7.1.3): attest the
        known-good host afresh, with its whole event log and IMA log, and
        pin what verified. Nothing is stored: the operator reviews the
        bodies and creates the policies.
        """
        self._check_owner(host)
        state = self._state(host)
        # A one-off nonce: starting an epoch here would turn the epoch
        # hosts are answering into a stale one.
        nonce = os.urandom(32)
        evidence = Evidence.from_wire(self._agent_call(
            "get_evidence", context, host, _b64(nonce), self.banks, 0,
            True), self.limits)
        captured = verifier.capture(state.ak, evidence, nonce, self.limits)
        LOG.info("Captured policies from host %s for review", host)
        return captured

    def submit_evidence(self, context: dict, evidence: Any) -> None:
        """Cast by agents (EvidenceEndpoint): queue for the verification
        worker, unless ``max_queued_evidence`` pushes already wait.

        A shed push gives nothing: its host keeps its last verdict until
        that expires and becomes "unknown" after ``unknown_after_missed``
        epochs without verified evidence (:meth:`mark_missing`), never
        trusted on old evidence. The bound holds the memory of a conductor
        that cannot keep up (or that a flood of casts targets) and keeps
        the wait of what it does verify under an interval. Challenge
        answers are not counted: at most MAX_CHALLENGES_IN_FLIGHT exist,
        and the worker takes them before the pushes waiting.

        Any compute host's bus credentials can cast pushes in any name, so
        before a push takes a queue place (each check costs a dictionary
        or set lookup, no verification):

        * a push without a host name, or naming a host another conductor
          owns on the ring, or a host that is not enrolled (an invented
          name that hashes here), is dropped: the worker would drop it
          unverified anyway, and it must not take the place of a push of
          an enrolled host this conductor owns;
        * one host name holds at most ``max_pending_per_host`` places. The
          first pushes in a name keep their places until the worker takes
          them; later ones in the same name are dropped, never put in
          their stead. A push cannot be told genuine before it is
          verified, and the attacker can always push last, so letting a
          newer push displace an older one would hand the places to
          whoever pushes most; keeping the first ones leaves an honest
          push that arrived first untouched. If forged pushes got there
          first, the honest host loses this push but not its verdict: the
          worker verifies a forged push, it fails, and that earns the named
          host a direct challenge (at most one per interval,
          :meth:`_push_failed`) whose answer is not held to these places,
          is taken before the pushes waiting and is judged; a failed push
          gives no verdict against the named host. So a flood in one name
          costs the pool ``max_pending_per_host`` places, never the other
          hosts' places, and the named host is verified through its
          challenge. With
          ``max_queued_evidence`` at least ``max_pending_per_host`` times
          the hosts this conductor owns, a flood in every enrolled name
          cannot fill the queue either.
        """
        host = evidence.get("host") if isinstance(evidence, dict) else None
        if not isinstance(host, str):
            self._drop("no_host")
            return
        if self.ring.owner(host) != self.host:
            self._drop("not_owned")
            return
        if host not in self.enrolled_names():
            self._drop("not_enrolled")
            return
        with self._admit_lock:
            if self._queue.qsize() >= self.max_queued_evidence:
                full = "queue_full"
            elif self._pending.get(host, 0) >= self.max_pending_per_host:
                full = "host_pending_full"
            else:
                full = ""
                self._pending[host] = self._pending.get(host, 0) + 1
        if full:
            self._drop(full)
            return
        self._queue.put((1, next(self._arrival),
                         _Push(self.clock(), evidence, host)))

    def submit_evidence_batch(self, context: dict, batch: Any) -> None:
        """Cast by a relay of several agents (evidence API 1.1): each item
        is queued as one push (and shed, verified, judged alone). The
        message is not trusted more than a single push: a host can cast
        evidence in any host's name either way. A batch that is not a
        list, or is longer than MAX_EVIDENCE_BATCH, is refused whole."""
        if not isinstance(batch, list) or len(batch) > MAX_EVIDENCE_BATCH:
            LOG.warning("Evidence batch refused: %s", "not a list"
                        if not isinstance(batch, list) else
                        "%d pushes, over %d" % (len(batch),
                                                MAX_EVIDENCE_BATCH))
            self._drop("batch_refused")
            return
        for evidence in batch:
            self.submit_evidence(context, evidence)

    def _shed(self, why: str) -> None:
        self._drop(why)

    def _drop(self, why: str) -> None:
        """A push dropped unverified, counted by reason (``shed`` and the
        metric trusted_pools_evidence_dropped)."""
        count = self.shed[why] = self.shed.get(why, 0) + 1
        self.metrics.evidence_dropped(why)
        if why in ("queue_full", "waited_too_long") and \
                count & (count - 1) == 0:  # the 1st, 2nd, 4th... time
            LOG.warning("Conductor %s is over its evidence budget: %d "
                        "push(es) shed (%s) so far; their hosts go unknown "
                        "if it lasts", self.host, count, why)
        elif count & (count - 1) == 0:
            LOG.warning("Conductor %s dropped %d push(es) so far before "
                        "queueing them (%s)", self.host, count, why)

    def verdicts_since(self, context: dict, since: float
                       ) -> list[dict[str, Any]]:
        """The newest signed result of each host with a verdict issued
        after ``since``.

        "Newest" is the greatest sequence, not the latest ``issued_at``:
        that is a conductor's clock, and one running ahead would make its
        older verdict the answer. Older verdicts of the same host are left
        out: a consumer would verify their signatures only to drop them.
        """
        names = {h.id: h.hostname for h in self.db.list_hosts()}
        touched = {v.host_id for v in self.db.verdicts_since(_since(since))}
        if not touched:
            return []
        return [{"host": names.get(v.host_id), "status": v.status,
                 "level": v.level, "signed_result": v.signed_result}
                for v in self.db.latest_verdicts(touched)]

    # --- vTPM migration (3.2; trusted_pools.conductor.migration) -------------

    def migrate_vtpm(self, context: Any, instance: str, source: str,
                     destination: str, kind: str = "cold",
                     min_level: int | None = None) -> dict[str, Any]:
        """Record a migration and start it on the worker pool; on the
        destination's owner (it attests the destination now)."""
        return self.migrations.start(context, instance, source,
                                     destination, kind, min_level)

    def list_vtpm_migrations(self, context: Any, instance: str | None = None,
                             active: bool | None = None, limit: int = 100
                             ) -> list[dict[str, Any]]:
        return self.migrations.list(instance, active, limit)

    def show_vtpm_migration(self, context: Any, migration_id: str
                            ) -> dict[str, Any]:
        return self.migrations.show(migration_id)

    def complete_vtpm_migration(self, context: Any, migration_id: str
                                ) -> dict[str, Any]:
        return self.migrations.complete_live(context, migration_id)

    def abort_vtpm_migration(self, context: Any, migration_id: str,
                             reason: str = "aborted by the operator"
                             ) -> dict[str, Any]:
        return self.migrations.abort(context, migration_id, reason)

    # --- deep attestation (NFV-SEC 007 4.4.3/4.4.4) --------------------------

    def challenge_instance(self, context: dict, instance: str,
                           host: str | None = None,
                           image: str | None = None) -> dict[str, Any]:
        """A one-use nonce for the guest of ``instance`` to quote over
        with its vTPM AK (valid ``deep.nonces.ttl`` seconds).

        ``host`` (from RPC 3.3): the instance's host; only a deep
        attestation of that host may spend the nonce. A host that is not
        enrolled gets no nonce (its instances cannot be attested). The
        nonce is kept in the database: any conductor can verify the
        quote, and a restart does not forget that it was spent.

        ``image`` (from RPC 3.4): the instance's image, named by the
        trusted caller (trusted-pools-api's user or Nova), kept with the
        nonce: it picks the image's instance policy when the quote is
        judged. The host and the guest never name it."""
        instance = deep_mod.instance_id(instance)
        if image is not None:
            try:
                image = deep_mod.instance_id(image)
            except exception.InvalidParameterValue:
                raise exception.InvalidParameterValue(
                    name="image", reason="%r is not a UUID" % (image,)) \
                    from None
        if host is not None:
            self._check_owner(host)
            self._state(host)
        answer = {"instance": instance,
                  "nonce": _b64(self.deep.challenge(instance, host,
                                                    image)),
                  "expires_in": int(self.deep.nonces.ttl)}
        if host is not None:
            answer["host"] = host
        if image is not None:
            answer["image"] = image
        return answer

    def _host_standing(self, state: verifier.HostState
                       ) -> tuple[deep_mod.HostStanding, Any]:
        """The host's latest verdict (as stored), and the clock of the
        quote behind it (the boot a deep-attestation quote must share)."""
        rows = self.db.latest_verdicts([state.host_id])
        if not rows:
            raise deep_mod.HostNotTrusted(
                subject="host %s" % state.host,
                reason="it has no verdict yet")
        row = rows[0]
        if row.registration_generation != state.registration:
            raise deep_mod.HostNotTrusted(
                subject="host %s" % state.host, reason="its latest verdict "
                "belongs to an earlier enrollment")
        standing = deep_mod.HostStanding(
            host=state.host, status=row.status, level=row.level,
            issued_at=int(row.issued_at.timestamp()),
            expires_at=int(row.expires_at.timestamp()),
            sequence=row.sequence)
        baseline = None if row.quote_clock is None else verifier.StoredClock(
            row.quote_clock, row.reset_count or 0, row.restart_count or 0)
        return standing, baseline

    def deep_attest(self, context: dict, host: str,
                    instances: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Attest instances of ``host`` together with ``host``.

        ``instances``: ``{instance, vm_quote, vm_signature, vm_pcrs,
        vtpm_certificate}`` each (the guest's vTPM quote over a nonce from
        :meth:`challenge_instance`, and the vTPM chain its provisioning
        returned). One host quote, over a nonce that commits to all the VM
        quotes (a Merkle root), is asked of the host's agent with a signed
        ``get_evidence`` request.

        Returns one entry per instance, in order: ``{"instance",
        "verdict", "signed_result"}`` or ``{"instance", "error":
        {"type", "reason"}}`` (a policy violation has both). What fails for
        the whole host (not trusted, stale verdict, a host quote that does
        not verify or does not commit to the batch) raises a
        :class:`~trusted_pools.verifier.deep.DeepAttestationError`.
        """
        self._check_owner(host)
        if not isinstance(instances, list) or not instances:
            raise exception.InvalidParameterValue(
                name="instances", reason="a non-empty list is required")
        entries: list[dict[str, Any] | None] = [None] * len(instances)
        items, positions = [], []
        for position, wire in enumerate(instances):
            try:
                items.append(deep_mod.VMEvidence.from_wire(wire))
                positions.append(position)
            except exception.EvidenceError as error:
                entries[position] = {
                    "instance": wire.get("instance") if isinstance(
                        wire, dict) else None,
                    "error": _error_json(error)}
        if items:
            state = self._state(host)
            now = int(self.clock())
            standing, baseline = self._host_standing(state)
            boot = state.boot  # the boot this conductor last verified
            # No TPM work for a host that could not vouch for anything.
            self.deep.check_host("host %s" % host, standing, now)
            batch = deep_mod.prepare_batch(host, items)
            wire = self._agent_call(
                "get_evidence", context, host, _b64(batch.host_nonce),
                self.banks, state.ima_replayed, False)
            try:
                evidence = Evidence.from_wire(wire, self.limits)
                if evidence.host != host:
                    raise exception.MalformedEvidence(
                        what="evidence", reason="it names host %s"
                        % evidence.host)
            except exception.EvidenceError as error:
                raise deep_mod.HostQuoteInvalid(
                    subject="host %s" % host, reason=str(error)) from None
            outcomes = self.deep.verify_batch(
                batch, host_ak=state.ak, standing=standing,
                host_quote=deep_mod.HostQuote(evidence.quote,
                                              evidence.signature,
                                              evidence.pcrs),
                now=int(self.clock()), baseline=baseline,
                boot_pcrs=None if boot is None else boot.pcrs,
                allow_sha1=verifier.allows_sha1_quotes(state),
                spend_nonces=False)
            outcomes = self._settle_instance_batch(host, state, standing,
                                                   outcomes)
            for position, outcome in zip(positions, outcomes):
                entries[position] = self._instance_entry(outcome)
        return [e for e in entries if e is not None]

    def _deep_attest_operation(self, context: dict, host: str,
                               instances: list[dict[str, Any]]
                               ) -> dict[str, Any]:
        """The ``deep_attest`` host operation's work (its row's result)."""
        entries = self.deep_attest(context, host, instances)
        return {"host": host, "instances": entries}

    def _settle_instance_batch(self, host: str, state: verifier.HostState,
                               standing: deep_mod.HostStanding,
                               outcomes: list[deep_mod.InstanceOutcome]
                               ) -> list[deep_mod.InstanceOutcome]:
        """Spend the nonces of the verified quotes and store the verdicts
        they earned, in one transaction: a verdict whose nonce cannot be
        spent (replayed, issued for another instance or host, expired,
        spent meanwhile through another conductor) is neither stored nor
        returned, its outcome is that error.

        Each verdict is kept with the host verdict (sequence) and
        enrollment generation it relied on; a reader judges it again
        against the host's later verdicts. Evidence that gave no verdict
        leaves the instance's earlier one as it was: anyone can submit
        garbage in an instance's name."""
        judged = [(index, o) for index, o in enumerate(outcomes)
                  if o.verdict is not None and o.nonce is not None]
        if not judged:
            return outcomes
        records = {claim: db_api.InstanceVerdictRecord(
            instance=o.verdict.instance, host_id=state.host_id,
            status=o.verdict.status, level=int(o.verdict.level),
            host_level=int(o.verdict.host_level),
            host_sequence=standing.sequence,
            registration_generation=state.registration,
            reasons=list(o.verdict.reasons),
            signed_result=o.signed_result,
            issued_at=_utc(o.verdict.issued_at),
            expires_at=_utc(o.verdict.expires_at),
            pcrs=None if o.pcrs is None else deep_mod.pcrs_wire(o.pcrs))
            for claim, (_index, o) in enumerate(judged)
            if o.verdict is not None}
        errors = self.instance_challenges.settle(
            host, [(o.instance, o.nonce) for _index, o in judged], records)
        settled = list(outcomes)
        for (index, outcome), error in zip(judged, errors):
            if error is not None:
                settled[index] = deep_mod.InstanceOutcome(outcome.instance,
                                                          error=error)
        return settled

    def _instance_entry(self, outcome: deep_mod.InstanceOutcome
                        ) -> dict[str, Any]:
        entry: dict[str, Any] = {"instance": outcome.instance}
        if outcome.verdict is not None:
            v = outcome.verdict
            entry["verdict"] = {
                "instance": v.instance, "host": v.host, "status": v.status,
                "level": v.level, "appraisal": v.appraisal,
                "policy": v.policy, "reasons": list(v.reasons),
                "host_level": v.host_level, "issued_at": v.issued_at,
                "expires_at": v.expires_at}
            entry["signed_result"] = outcome.signed_result
            LOG.info("Instance %s on host %s is %s at level %d",
                     v.instance, v.host, v.status, v.level)
        if outcome.error is not None:
            entry["error"] = _error_json(outcome.error)
            LOG.warning("Deep attestation of instance %s: %s",
                        outcome.instance, outcome.error)
        return entry

    # --- the operator's view of a host's vTPMs ------------------------------

    def list_vtpms(self, context: dict, host: str) -> dict[str, Any]:
        """The ``list_vtpms`` host operation's work: ``host``'s vTPMs as
        its agent reports them, bounded and labelled host-reported
        (:mod:`.vtpm_report`). Nothing is derived from the report."""
        self._check_owner(host)
        answer = self._agent_call("list_vtpms", context, host)
        report = vtpm_report.check_report(host, answer, int(self.clock()),
                                          self.db.instance_hosts)
        conflicts = [e["instance"] for e in report["vtpms"]
                     if e["conflict"]]
        if conflicts:
            LOG.warning("Host %s reports vTPMs of %d instance(s) attested "
                        "on other hosts: %s", host, len(conflicts),
                        ", ".join(conflicts[:10]))
        return report

    # --- the cycle -----------------------------------------------------------

    def start_epoch(self, context: dict | None = None) -> freshness.Epoch:
        """Begin an interval: announce a fresh epoch to every agent."""
        # Which names may take queue places this interval (one narrow
        # read of the hosts table).
        self.refresh_enrolled_names()
        epoch = self.epochs.start_epoch(self.clock())
        try:
            self.agents.start_epoch(context or {}, self.host,
                                    epoch.epoch_id, _b64(epoch.value),
                                    self.banks, sorted(self.ring.conductors),
                                    spread=self.epoch_spread * self.interval)
        except messaging.MessageDeliveryFailure as error:
            # RabbitMQ drops the fanout exchange when its last agent
            # leaves: no host hears the epoch, each becomes unknown after
            # its missed epochs (no traceback every interval for that).
            LOG.warning("Epoch %s not announced: no trusted-pools-agent is "
                        "connected to the agent bus (%s); silent hosts "
                        "become unknown", epoch.epoch_id,
                        str(error).splitlines()[0][:200])
        return epoch

    def process_evidence(self, wait: float = 0.0) -> int:
        """Verify queued evidence in batches; returns how many."""
        batch = self._take_batch(wait)
        verdicts = []
        # A push that waited more than an interval is of an epoch that is
        # over: shed, not verified (a failure would earn a challenge, more
        # load on a conductor already behind).
        oldest = self.clock() - self.interval
        for item in batch:
            try:
                if isinstance(item, _Answer):
                    outcome = self._verify_answer(item)
                elif item.received_at < oldest:
                    self._shed("waited_too_long")
                    continue
                else:
                    outcome = self._verify_pushed(item.wire,
                                                  item.received_at)
            except Exception:  # noqa: BLE001 - one message, not the batch
                # Fail closed: no verdict now, "unknown" when it lasts.
                wire = getattr(item, "wire", None)
                LOG.exception("Verifying evidence from %r failed",
                              wire.get("host") if isinstance(wire, dict)
                              else "?")
                continue
            if outcome is not None and outcome[1] is not None:
                verdicts.append(outcome)
        if verdicts:
            self._record(verdicts)
        return len(batch)

    def _take_batch(self, wait: float) -> list[Union[_Push, _Answer]]:
        """Up to batch_size items: the challenge answers waiting first
        (at most MAX_CHALLENGES_IN_FLIGHT exist; each frees a challenge
        place once verified, so one waiting behind a compromised host's
        flood of forged pushes would starve the challenges that flood
        earns the honest hosts), then the pushes in arrival order."""
        batch: list[Union[_Push, _Answer]] = []
        try:
            batch.append((self._queue.get(timeout=wait) if wait
                          else self._queue.get_nowait())[2])
            while len(batch) < self.batch_size:
                batch.append(self._queue.get_nowait()[2])
        except queue.Empty:
            pass
        if batch:
            # The pushes taken give their queue places back to their names.
            with self._admit_lock:
                for item in batch:
                    if isinstance(item, _Push):
                        left = self._pending.get(item.host, 0) - 1
                        if left > 0:
                            self._pending[item.host] = left
                        else:
                            self._pending.pop(item.host, None)
        return batch

    def _verify_pushed(self, wire: Any, received_at: float
                       ) -> tuple[verifier.HostState, Any] | None:
        """A verdict only from a push whose quote and logs verify; any
        other push earns its named host a direct challenge (rate-limited)
        and gives nothing itself."""
        host = wire.get("host") if isinstance(wire, dict) else None
        if not isinstance(host, str):
            LOG.warning("Evidence without a host name ignored")
            return None
        owner = self.ring.owner(host)
        if owner != self.host:
            LOG.warning("Evidence for host %s refused: conductor %s owns "
                        "it on the hash ring, not %s", host, owner,
                        self.host)
            return None
        try:
            state = self._state(host)
        except exception.NotFound:
            LOG.warning("Evidence from unknown host %r ignored: enroll it "
                        "first", host)
            return None
        try:
            nonce, issued = self.epochs.expected(str(wire.get("epoch_id")),
                                                 host)
            evidence = Evidence.from_wire(wire, self.limits)
        except exception.EvidenceError as error:
            self.metrics.evidence_rejected(error)
            self._push_failed(state, error, received_at)
            return None
        with self._verify_lock:
            if verifier.needs_full_evidence(state, evidence):
                return self._gap(state, evidence, nonce, issued, received_at)
            outcome = self._appraise(state, evidence, nonce, issued,
                                     int(received_at), push=True)
        if outcome.late is not None:
            LOG.info("Evidence of host %s verified late (a newer quote was "
                     "accepted meanwhile): dropped", host)
            return None
        if outcome.quote_failed or outcome.evidence_failed:
            self._push_failed(state, outcome.verdict, received_at,
                              quote_failed=outcome.quote_failed)
            return None
        self._last_evidence[host] = self.clock()
        return state, outcome.verdict

    def _gap(self, state: verifier.HostState, evidence: Evidence,
             nonce: bytes, issued: int | None, received_at: float) -> None:
        """The push left out what this conductor lacks (a lost message,
        a restart): a genuine, fresh quote earns a direct challenge for
        the whole of it."""
        try:
            verifier.check_quote(state, evidence, nonce)
        except exception.QuoteReplayed as error:
            if freshness.answered_before_accepted(issued,
                                                  state.accepted_order):
                return None
            self.metrics.evidence_rejected(error)
            self._push_failed(state, error, received_at)
            return None
        except exception.EvidenceError as error:
            self.metrics.evidence_rejected(error)
            self._push_failed(state, error, received_at, quote_failed=True)
            return None
        self._challenge(state, "its evidence left out what this conductor "
                        "lacks", failure=False)
        return None

    def _push_failed(self, state: verifier.HostState, why: Any,
                     received_at: float, quote_failed: bool = False
                     ) -> None:
        """A push that did not verify: challenge the host it names, unless
        a quote of that host was accepted after the push arrived, or the
        host was challenged for a failure less than an interval ago.

        A quote that did not verify may mean the host re-enrolled (a new
        AK) through another conductor: the challenge then reads the
        registration again first. Only a granted challenge does, so a
        flood of forged quotes costs one database read per interval."""
        reasons = getattr(why, "reasons", None)
        text = "; ".join(reasons) if reasons else "%s: %s" % (
            type(why).__name__, getattr(why, "message", why))
        LOG.warning("Evidence pushed in the name of host %s did not "
                    "verify (%s); no verdict from it", state.host, text)
        if self._last_evidence.get(state.host, float("-inf")) > received_at:
            return
        self._challenge(state, "pushed evidence did not verify",
                        failure=True, reread=quote_failed)

    def _challenge(self, state: verifier.HostState, why: str,
                   failure: bool, reread: bool = False) -> bool:
        """Challenge the host directly, off the batch path: an agent that
        answers slowly, or never, holds one challenge thread, not the
        worker. One challenge per host in flight; at most one per interval
        for failed pushes."""
        host = state.host
        now = self.clock()
        with self._challenge_lock:
            if host in self._in_flight:
                return False
            if failure:
                last = self._failure_challenges.get(host)
                if last is not None and now - last < self.interval:
                    LOG.info("Host %s was challenged %.1f s ago; not again "
                             "before the next interval", host, now - last)
                    return False
            if len(self._in_flight) >= MAX_CHALLENGES_IN_FLIGHT:
                LOG.warning("Too many direct challenges in flight; host %s "
                            "waits for its next epoch", host)
                return False
            self._in_flight.add(host)
            if failure:
                self._failure_challenges[host] = now
                self.failure_challenges[host] = \
                    self.failure_challenges.get(host, 0) + 1
        if reread:
            self._reread_registration(host)
            try:
                state = self._state(host)
            except exception.NotFound:
                with self._challenge_lock:
                    self._in_flight.discard(host)
                return False
        nonce = os.urandom(32)
        issued = self.order.next()
        ima_start = state.request()["ima_start"]
        LOG.info("Challenging host %s directly: %s", host, why)
        self.spawn(lambda: self._ask(host, nonce, issued, ima_start))
        return True

    def _ask(self, host: str, nonce: bytes, issued: int,
             ima_start: int) -> None:
        """Challenge thread: the agent call; the answer is verified by the
        worker, before the pushes waiting (_take_batch)."""
        wire = None
        try:
            wire = self.agents.get_evidence(
                {}, host, _b64(nonce), self.banks, ima_start, True,
                conductor=self.host)
        except messaging.MessagingException as error:
            LOG.warning("Host %s did not answer a direct challenge: %s",
                        host, error)
        except exception.TrustedPoolsError as error:
            LOG.warning("Host %s could not answer a direct challenge: %s",
                        host, error)
        except Exception:  # noqa: BLE001 - the flag below must clear
            LOG.exception("Direct challenge of host %s failed", host)
        self._queue.put((0, next(self._arrival),
                         _Answer(host, nonce, issued, wire, self.clock())))

    def _verify_answer(self, answer: _Answer
                       ) -> tuple[verifier.HostState, Any] | None:
        """The host's own answer to a direct challenge is judged, whatever
        it is; silence gives nothing now ("unknown" when it lasts)."""
        with self._challenge_lock:
            self._in_flight.discard(answer.host)
        if answer.wire is None:
            return None
        try:
            state = self._state(answer.host)
        except exception.NotFound:
            return None
        if _superseded(state, answer.issued):
            # A quote of the host was accepted after this challenge was
            # issued: the host proved itself since, and the answer (asked
            # for the IMA entries from before that) is not needed.
            return None
        verdict = self._verify_wire(state, answer.wire, answer.nonce,
                                    answer.issued)
        if verdict is None:
            LOG.info("Host %s answered a direct challenge with a quote older "
                     "than one accepted meanwhile: dropped", answer.host)
            return None
        return state, verdict

    def _verify_wire(self, state: verifier.HostState, wire: Any,
                     nonce: bytes, issued: int | None = None) -> Any:
        """The verdict on a host's answer to a direct challenge (None if
        a newer quote was accepted while it answered)."""
        try:
            evidence = Evidence.from_wire(wire, self.limits)
        except exception.EvidenceError as error:
            self.metrics.evidence_rejected(error)
            return verifier.failed_verdict(
                state.host, error, verifier.wire_digest(wire),
                int(self.clock()), self.validity)
        with self._verify_lock:
            outcome = self._appraise(state, evidence, nonce, issued,
                                     int(self.clock()))
        if outcome.late is None:
            # The host answered: a late answer refreshes nothing.
            self._last_evidence[state.host] = self.clock()
        return outcome.verdict

    def _verify(self, state: verifier.HostState, evidence: Evidence,
                nonce: bytes) -> Any:
        with self._verify_lock:
            return self._appraise(state, evidence, nonce, None,
                                  int(self.clock())).verdict

    def _appraise(self, state: verifier.HostState, evidence: Evidence,
                  nonce: bytes, issued: int | None, now: int,
                  push: bool = False) -> verifier.Outcome:
        # The acceptance number is taken under the verify lock, so it
        # orders this acceptance after every nonce issued before it.
        outcome = verifier.verify_and_appraise(
            state, evidence, nonce, now, self.validity, issued=issued,
            accepted=self.order.next(), limits=self.limits,
            timer=self.metrics)
        self.metrics.rejected_types(outcome.rejected)
        if outcome.quote_failed and not push:
            # (A failed push rereads only if it earns a challenge.)
            self._reread_registration(state.host)
        return outcome

    def _reread_registration(self, host: str) -> None:
        """After a quote that did not verify, read the host's registration
        again next time: it may have re-enrolled (a new AK) through another
        conductor. A forged quote costs one database read more, no more."""
        self.forget_host(host)

    def mark_missing(self) -> int:
        """Unknown verdict for owned hosts silent for too many epochs."""
        now = self.clock()
        limit = self.interval * self.unknown_after_missed
        missing = []
        for host in self.owned_hosts():
            last = self._last_evidence.get(host.hostname)
            if last is None:
                self._last_evidence[host.hostname] = now  # grace from now
                continue
            if now - last > limit and self._published.get(
                    host.hostname, ("", 0))[0] != "unknown":
                state = self._state(host.hostname)
                missing.append((state, verdict_mod.unknown_verdict(
                    host=host.hostname, issued_at=int(now),
                    validity=self.validity,
                    reason="no evidence for %d s: agent unreachable or "
                           "not answering" % int(now - last))))
        if missing:
            self._record(missing)
        return len(missing)

    # --- recording and publishing ---------------------------------------------

    def _record(self, verdicts: list[tuple[verifier.HostState, Any]]
                ) -> list[str]:
        """Store, sign and publish a batch of verdicts; returns the tokens.

        The database allocates each verdict's sequence number in the
        transaction that stores it, and the token is signed there with
        that number (claim ``seq``): consumers order a host's verdicts by
        it, so a conductor whose clock runs ahead cannot make an older
        verdict look newer.
        """
        rows = [_new_verdict(state, v) for state, v in verdicts]

        def sign(index: int, sequence: int) -> str:
            return self.signer.sign(verdicts[index][1], sequence=sequence)

        # One transaction per batch: the verdicts and the IMA replay
        # states they moved their hosts to (a commit per host cost more
        # than verifying its evidence).
        stored = self.db.record_verdicts(rows, [s for s in (
            self._ima_record(state) for state in _unique(verdicts))
            if s is not None], sign)
        tokens = [token for _, token in stored]
        self.metrics.recorded(v.status.value for _, v in verdicts)
        for (state, v), token in zip(verdicts, tokens):
            self._publish_if_changed(v, token)
        return tokens

    @staticmethod
    def _ima_record(state: verifier.HostState) -> db_api.IMAState | None:
        if state.ima_state is None or state.clock is None:
            return None
        return db_api.IMAState(
            host_id=state.host_id, entries=state.ima_state.entries,
            pcr_values={str(b): v.hex()
                        for b, v in state.ima_state.pcrs.items()},
            reset_count=state.clock.reset_count,
            restart_count=state.clock.restart_count)

    def _publish_if_changed(self, v: Any, token: str) -> None:
        current = (v.status.value, int(v.level))
        if self._published.get(v.host) == current:
            return
        previous = self._published.get(v.host)
        self._published[v.host] = current
        LOG.info("Host %s is now %s at level %d (was %s): %s", v.host,
                 current[0], current[1],
                 "%s/%d" % previous if previous else "not known",
                 "; ".join(v.reasons) or "no reasons")
        if self.notifier is not None:
            self.notifier.info({}, TRUST_EVENT, {
                "host": v.host, "status": current[0], "level": current[1],
                "signed_result": token})


def _superseded(state: verifier.HostState, issued: int) -> bool:
    """Whether a quote of the host was accepted after ``issued``."""
    return state.accepted_order is not None and state.accepted_order > issued


def _check_enroll_arguments(group: Any = "default",
                            ek_sha256: Any = None) -> None:
    if not isinstance(group, str) or not group or len(group) > 255:
        raise exception.InvalidParameterValue(
            name="group", reason="expected a non-empty host group name")
    if ek_sha256 is not None and not isinstance(ek_sha256, str):
        raise exception.InvalidParameterValue(
            name="ek_sha256", reason="expected a SHA-256 as hexadecimal "
            "digits, got %s" % type(ek_sha256).__name__)


def _check_deep_arguments(instances: Any = None) -> None:
    """A deep attestation's batch, checked before it is queued (each
    entry is checked by the worker: a bad one fails alone)."""
    if not isinstance(instances, list) or not instances:
        raise exception.InvalidParameterValue(
            name="instances", reason="a non-empty list is required")
    if len(instances) > deep_mod.MAX_BATCH:
        raise exception.InvalidParameterValue(
            name="instances", reason="at most %d instances per host quote"
            % deep_mod.MAX_BATCH)


def _error_type(error: exception.TrustedPoolsError) -> str:
    """The class a caller re-raises: oslo.messaging names a remote error
    ``<Name>_Remote``."""
    return type(error).__name__.removesuffix("_Remote")


def _json_safe(value: Any) -> Any:
    """An error's keyword arguments as JSON (anything else as text)."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


def _daemon_thread(work: Callable[[], None]) -> None:
    threading.Thread(target=work, name="direct-challenge",
                     daemon=True).start()


def _unique(verdicts: list[tuple[verifier.HostState, Any]]
            ) -> list[verifier.HostState]:
    """Each host's state once (a batch may hold two rounds of a host)."""
    return list({id(state): state for state, _ in verdicts}.values())


def _registration_changed(current: db_api.HostEnrollment | None,
                          cached_generation: int | None) -> bool:
    """Whether cached knowledge of a host is out of date: the host is gone
    or not enrolled, or enrolled under another generation than cached
    (``cached_generation`` None: only the announcement is cached)."""
    if current is None or current.state != "enrolled":
        return True
    return cached_generation is not None and \
        cached_generation != current.generation


def _not_enrolled_reason(state: str) -> str:
    if state == "enrolling":
        return RESET_REASON
    return "host is %s, not enrolled: it is not attested" % state


def _describe(current: db_api.HostEnrollment | None) -> str:
    if current is None:
        return "removed"
    return "%s, generation %d" % (current.state, current.generation)


def _versions(records: Any) -> tuple[tuple[str, int], ...]:
    return tuple(sorted((r.name, r.version) for r in records))


def _new_verdict(state: verifier.HostState, v: Any) -> db_api.NewVerdict:
    """The row to store for ``v`` (signed once its sequence is known)."""
    clock = state.clock
    return db_api.NewVerdict(
        host_id=state.host_id, status=v.status.value, level=int(v.level),
        issued_at=_utc(v.issued_at), expires_at=_utc(v.expires_at),
        vector=v.vector.to_json(), reasons=list(v.reasons),
        policy_versions=dict(v.policy_versions),
        evidence_digest=v.evidence_digest or None,
        quote_clock=None if clock is None else clock.clock,
        reset_count=None if clock is None else clock.reset_count,
        restart_count=None if clock is None else clock.restart_count,
        registration_generation=state.registration)


def _verdict_json(v: Any) -> dict[str, Any]:
    return {"host": v.host, "status": v.status.value, "level": int(v.level),
            "reasons": list(v.reasons), "vector": v.vector.to_json(),
            "policy_versions": dict(v.policy_versions),
            "issued_at": v.issued_at, "expires_at": v.expires_at}


def _error_json(error: exception.TrustedPoolsError) -> dict[str, str]:
    return {"type": type(error).__name__, "reason": str(error)}
