"""The conductor's side of a vTPM migration (issue 12): the state machine.

ISO/IEC 27070 5.5 and 6.6: the migration controller decides where a vTPM
may go from the trustworthiness of each system, and exactly one copy may
run at any moment. The conductor is that controller; its database row
(``vtpm_migrations``) is the source of truth, each agent keeps its own
journal (:mod:`trusted_pools.agent.migration`), and every step is a signed
request to one agent that the agent answers idempotently.

Steps (:data:`trusted_pools.protocol.vtpm_migration.STEPS`)::

    requested -> attested -> key_certified -> exported (cold) -> imported
                                          \\-> delivered (live) ----\\
                 -> committed -> completed          (any failure before
                                                     committed: aborted)

* ``attested``: both hosts enrolled; the source's latest verdict trusted
  and fresh; the destination attested *now* (a direct challenge with a
  one-off nonce) and trusted at no less than the required level.
* ``key_certified``: the destination made a one-time transport key in its
  TPM and its registered AK certified it over a nonce bound to the
  migration id; checked here (:func:`protocol.vtpm_migration.
  check_transport_key`). Its binding key was certified over the same nonce
  (the state key is re-wrapped to it for rest).
* ``exported``: the source locked its vTPM and sealed the state to the
  transport key (AES-256-GCM, associated data: migration id, instance,
  hosts, epoch, kind); ``delivered`` (live): the swtpm migration key was
  sealed the same way and the destination is prepared for QEMU's stream.
* ``imported``: the destination opened it in its TPM, checked it, imported
  it (sealed at rest to its own TPM), started it, saw it answer.
* ``committed``: the database records the new epoch (compare and set: one
  commit per epoch); from here only forward.
* ``completed``: the destination released its copy for use, the source
  erased its own.

Every failure before the commit aborts (the source unlocks, the
destination discards) with the reason in the row. After a crash, the
periodic job :meth:`MigrationCoordinator.resume` rolls back the active
migrations that were not committed and finishes the committed ones; it
also ends migrations whose step has not moved within the step timeout.

Hand-written: the protocol is this project's own; oslo.messaging carries it.
"""

from __future__ import annotations

import datetime
import logging
import os
import queue
import threading
import time
from typing import Any, Callable

import oslo_messaging as messaging

from trusted_pools import exception
from trusted_pools.db import api as db_api
from trusted_pools.protocol import vtpm_migration as proto
from trusted_pools.tpm import sealing

LOG = logging.getLogger(__name__)

__all__ = ["EVENT_PREFIX", "MigrationCoordinator", "migration_view"]

EVENT_PREFIX = "vtpm_migration."
# The reason of a live migration whose completion was asked but whose
# destination check got no answer yet (the resume job asks again).
_COMPLETING = "completion requested; "
_ROLE_SOURCE = "source"
_ROLE_DESTINATION = "destination"


def migration_view(row: db_api.VTPMMigrationRecord,
                   now: datetime.datetime | None = None) -> dict[str, Any]:
    """What the operator sees of a migration (the shared view)."""
    return proto.view(row, now)


def _instance(value: Any) -> str:
    import uuid as uuid_lib
    try:
        return str(uuid_lib.UUID(str(value)))
    except (ValueError, TypeError, AttributeError):
        raise exception.InvalidParameterValue(
            name="instance", reason="%r is not a UUID" % (value,)) from None


class _Refused(Exception):
    """A step refused the migration: abort with this reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class MigrationCoordinator:
    """Drives the vTPM migrations of one conductor.

    ``manager`` is the :class:`~trusted_pools.conductor.manager.
    ConductorManager` (its database, agent client, attest_now, worker
    spawn, clock and notifier).
    """

    def __init__(self, manager: Any, *, step_timeout: float = 300.0
                 ) -> None:
        self.manager = manager
        self.db: db_api.Connection = manager.db
        self.step_timeout = step_timeout
        # Migrations a worker of this process is driving now.
        self._running: set[str] = set()
        self._running_lock = threading.Lock()
        # Held from recording a new migration until its worker is in
        # _running, and by resume() while it lists: otherwise resume()
        # could find the new row in between, take it for one a previous
        # run left, and roll it back.
        self._start_lock = threading.Lock()
        # Per migration: the destination's prepare answer (re-asked after
        # a restart: the agent answers from its journal).
        self._prepared: dict[str, dict[str, Any]] = {}
        # Per migration: the source's sealed payload until it is imported
        # (ciphertext; re-asked after a restart, from the source journal).
        self._payloads: dict[str, dict[str, Any]] = {}
        #: Test hook (fault injection): called with the step a migration
        #: just reached, from the worker.
        self.after_step: Callable[[str, str], None] | None = None
        # Destination -> (time its last challenge started, its verdict).
        self._attested: dict[str, tuple[float, dict[str, Any]]] = {}
        self._attest_locks: dict[str, threading.Lock] = {}
        self._attest_lock = threading.Lock()
        #: The clock verdict expiry is judged by (the manager's).
        self.clock: Callable[[], float] = manager.clock
        # Step notifications, published in order by one sender thread.
        # (None: the sender thread ends; see close).
        self._announcements: queue.Queue[
            tuple[str, str, dict[str, Any]] | None] = queue.Queue()
        self._announce_lock = threading.Lock()
        self._announcer: threading.Thread | None = None

    @property
    def host(self) -> str:
        return self.manager.host

    # --- requests (the management endpoints) --------------------------------

    def start(self, context: Any, instance: str, source: str,
              destination: str, kind: str = "cold",
              min_level: int | None = None) -> dict[str, Any]:
        """Record a migration and hand it to the worker pool; returns the
        row at once (``step`` ``requested``). Checks quickly: arguments,
        both hosts enrolled, this conductor owns the destination (it
        attests it now), no other migration of the instance is active."""
        instance = _instance(instance)
        if kind not in proto.KINDS:
            raise exception.InvalidParameterValue(
                name="kind", reason="one of %s" % ", ".join(proto.KINDS))
        if source == destination:
            raise exception.InvalidParameterValue(
                name="destination", reason="the source itself")
        if min_level is not None and (
                isinstance(min_level, bool) or not isinstance(min_level, int)
                or not 1 <= min_level <= 4):
            raise exception.InvalidParameterValue(
                name="min_level", reason="1 to 4")
        self.manager._check_owner(destination)
        for host in (source, destination):
            record = self.db.get_host_by_name(host)
            if record.state != "enrolled":
                raise exception.HostNotEnrolled(host=host,
                                                state=record.state)
        with self._start_lock:
            row = self.db.create_vtpm_migration(
                instance, source, destination, kind, self.host,
                os.urandom(32), min_level=min_level,
                request_id=getattr(context, "request_id", None),
                requested_by=getattr(context, "user_id", None))
            self._notify(context, row)
            LOG.info("vTPM migration %s of instance %s from %s to %s (%s, "
                     "epoch %d) accepted", row.id, instance, source,
                     destination, kind, row.epoch)
            # A new id: no worker drives it yet.
            self._spawn_work(row.id, lambda: self.run(
                context, self.db.get_vtpm_migration(row.id)))
        return migration_view(row)

    def show(self, migration_id: str) -> dict[str, Any]:
        return migration_view(self.db.get_vtpm_migration(migration_id))

    def list(self, instance: str | None = None,
             active: bool | None = None, limit: int = 100
             ) -> list[dict[str, Any]]:
        return [migration_view(r) for r in self.db.list_vtpm_migrations(
            instance=instance, active=active, limit=limit)]

    def complete_live(self, context: Any, migration_id: str
                      ) -> dict[str, Any]:
        """The hypervisor's live migration completed: on the worker pool,
        commit, then the destination finishes its incoming vTPM and the
        source its outgoing one. Returns the row at once."""
        row = self.db.get_vtpm_migration(migration_id)
        if row.kind != "live":
            raise exception.InvalidParameterValue(
                name="migration", reason="not a live migration")
        if row.step != "delivered":
            raise exception.ConcurrentUpdate(
                what="vTPM migration %s" % migration_id,
                reason="it is %s, not delivered" % row.step)
        self._spawn_work(migration_id, lambda: self._complete(context,
                                                              migration_id))
        return migration_view(row)

    def _complete(self, context: Any, migration_id: str) -> None:
        row = self.db.get_vtpm_migration(migration_id)
        if row.step == "delivered":
            try:
                self._check_incoming(context, row)
            except exception.AgentUnreachable as error:
                # No answer is no verdict: QEMU's migration completed, so
                # the guest may run on the destination already; ask
                # again (the resume job) until the step timeout, rather
                # than roll its vTPM back at the first lost message.
                if not (row.reason or "").startswith(_COMPLETING):
                    try:
                        self.db.advance_vtpm_migration(
                            row.id, ("delivered",), "delivered",
                            reason=(_COMPLETING + "the destination has not "
                                    "confirmed the state arrived yet (%s); "
                                    "asked again" % _first_line(error)
                                    )[:2000])
                    except exception.ConcurrentUpdate:
                        pass
                return
            except _Refused as refusal:
                self._abort(context, row, refusal.reason)
                return
            except (exception.TrustedPoolsError,
                    messaging.MessagingException) as error:
                self._abort(context, row, "%s: %s" % (
                    type(error).__name__.removesuffix("_Remote"),
                    _first_line(error)))
                return
            row = self._commit(context, row)
            if self.after_step is not None:
                self.after_step(row.id, row.step)
        if row.step == "committed":
            self._finish(context, row)

    def _check_incoming(self, context: Any,
                        row: db_api.VTPMMigrationRecord) -> None:
        """Live, before the commit: the destination confirms the
        hypervisor's stream brought the state (agents at 1.5). Were the
        commit recorded first, a destination whose state never arrived
        would leave a committed row naming a vTPM that does not exist
        while the only copy stays locked on the source: no rollback is
        allowed after a commit."""
        if not self.manager.agents.can_check_incoming():
            LOG.warning("vTPM migration %s: agents are pinned below 1.5; "
                        "committing without the destination's check that "
                        "the state arrived", row.id)
            return
        answer = self._call("migration_check_incoming", context,
                            row.destination, migration_id=row.id)
        if not isinstance(answer, dict) or answer.get("epoch") != \
                row.epoch or answer.get("step") not in ("received",
                                                        "committed"):
            raise _Refused("the destination did not confirm that the "
                           "state of epoch %d arrived" % row.epoch)

    def abort(self, context: Any, migration_id: str, reason: str
              ) -> dict[str, Any]:
        """The operator's (or the hypervisor driver's) abort before the
        commit, done on the worker pool; after the commit,
        :class:`ConcurrentUpdate`. Returns the row at once."""
        row = self.db.get_vtpm_migration(migration_id)
        if row.step not in proto.PRE_COMMIT_STEPS:
            raise exception.ConcurrentUpdate(
                what="vTPM migration %s" % migration_id,
                reason="it is %s; only a migration before its commit can "
                "be aborted" % row.step)
        self._spawn_work(migration_id, lambda: self._abort(
            context, self.db.get_vtpm_migration(migration_id), reason))
        return migration_view(row)

    def _spawn_work(self, migration_id: str, work: Callable[[], Any]
                    ) -> None:
        """Run ``work`` for a migration on the worker pool, unless a
        worker drives it already (:class:`ConcurrentUpdate`)."""
        with self._running_lock:
            if migration_id in self._running:
                raise exception.ConcurrentUpdate(
                    what="vTPM migration %s" % migration_id,
                    reason="a step of it is running; try again")
            self._running.add(migration_id)

        def run() -> None:
            try:
                work()
            except Exception:  # noqa: BLE001 - logged; resume() repeats
                LOG.exception("vTPM migration %s: a step failed",
                              migration_id)
            finally:
                with self._running_lock:
                    self._running.discard(migration_id)
        try:
            self.manager.spawn(run)
        except BaseException:
            with self._running_lock:
                self._running.discard(migration_id)
            raise

    # --- the worker ------------------------------------------------------------

    def run(self, context: Any, row: db_api.VTPMMigrationRecord
            ) -> db_api.VTPMMigrationRecord:
        """Run a migration until it ends (or, live, until the destination
        is prepared)."""
        steps: dict[str, Callable[[Any, db_api.VTPMMigrationRecord],
                                  db_api.VTPMMigrationRecord]] = {
            "requested": self._attest, "attested": self._certify_key,
            "key_certified": (self._export if row.kind == "cold"
                              else self._deliver),
            "exported": self._import, "imported": self._commit,
            "committed": self._finish}
        while row.step not in proto.TERMINAL_STEPS:
            if row.kind == "live" and row.step == "delivered":
                return row  # waits for complete_live or abort
            step = steps[row.step]
            if row.step in proto.PRE_COMMIT_STEPS:
                try:
                    row = step(context, row)
                except _Refused as refusal:
                    return self._abort(context, row, refusal.reason)
                except exception.ConcurrentUpdate:
                    raise
                except (exception.TrustedPoolsError,
                        messaging.MessagingException) as error:
                    return self._abort(context, row, "%s: %s" % (
                        type(error).__name__.removesuffix("_Remote"),
                        _first_line(error)))
            else:
                row = step(context, row)
            if self.after_step is not None:
                self.after_step(row.id, row.step)
        return row

    def _advance(self, context: Any, row: db_api.VTPMMigrationRecord,
                 step: str, **values: Any) -> db_api.VTPMMigrationRecord:
        row = self.db.advance_vtpm_migration(row.id, (row.step,), step,
                                             conductor=self.host, **values)
        self._notify(context, row)
        LOG.info("vTPM migration %s of instance %s: %s", row.id,
                 row.instance, step)
        return row

    def _call(self, method: str, context: Any, host: str, **kwargs: Any
              ) -> Any:
        return self.manager._agent_call(method, context, host, **kwargs)

    # --- steps -------------------------------------------------------------------

    def _standing(self, host: str, record: Any, verdict: Any,
                  min_level: int | None) -> str | None:
        """Why ``host`` (its ``record``)'s latest stored ``verdict`` (None:
        it has none) does not allow the move (None: it does)."""
        if record.state != "enrolled":
            return "host %s is %s, not enrolled" % (host, record.state)
        if verdict is None:
            return "host %s has no verdict yet" % host
        if verdict.registration_generation != record.enrollment_generation:
            return ("host %s's latest verdict belongs to an earlier "
                    "enrollment" % host)
        if verdict.status != "trusted":
            return "host %s is %s (%s)" % (
                host, verdict.status, "; ".join(
                    str(r) for r in verdict.reasons) or "no reason")
        now = datetime.datetime.fromtimestamp(self.clock(),
                                              datetime.timezone.utc)
        if verdict.expires_at <= now:
            return ("host %s's last trusted verdict expired at %s (stale)"
                    % (host, verdict.expires_at.isoformat()))
        if min_level is not None and verdict.level < min_level:
            return ("host %s is trusted at level %d, below the required "
                    "level %d" % (host, verdict.level, min_level))
        return None

    def _attest(self, context: Any, row: db_api.VTPMMigrationRecord
                ) -> db_api.VTPMMigrationRecord:
        # Both hosts' latest verdicts in one query.
        records = {h: self.db.get_host_by_name(h)
                   for h in (row.source, row.destination)}
        latest = {v.host_id: v for v in self.db.latest_verdicts(
            [r.id for r in records.values()])}
        for host, record in records.items():
            refusal = self._standing(
                host, record, latest.get(record.id),
                row.min_level if host == row.destination else None)
            if refusal is not None:
                raise _Refused(refusal)
        # The destination again, now: a verdict of up to an interval ago
        # is not enough to hand it a vTPM.
        verdict = self._attest_now(context, row)
        if verdict["status"] != "trusted":
            raise _Refused("destination %s attested now: %s (%s)" % (
                row.destination, verdict["status"],
                "; ".join(str(r) for r in verdict["reasons"])
                or "no reason"))
        if row.min_level is not None and verdict["level"] < row.min_level:
            raise _Refused("destination %s attested now at level %d, below "
                           "the required level %d" % (
                               row.destination, verdict["level"],
                               row.min_level))
        return self._advance(context, row, "attested")

    def _attest_now(self, context: Any, row: db_api.VTPMMigrationRecord
                    ) -> dict[str, Any]:
        """A verdict of the destination from a challenge sent after
        ``row`` was requested. Migrations to one destination that are
        requested together share one challenge (one at a time per
        destination; a challenge that started after this migration's
        request answers for it too): the destination is attested after
        each request, without a quote per migration."""
        requested = row.created_at.timestamp()
        with self._attest_lock:
            lock = self._attest_locks.setdefault(row.destination,
                                                 threading.Lock())
        with lock:
            cached = self._attested.get(row.destination)
            if cached is not None and cached[0] >= requested:
                return cached[1]
            started = self.manager.clock()
            verdict = self.manager.attest_now(context,
                                              row.destination)["verdict"]
            self._attested[row.destination] = (started, verdict)
            return verdict

    def _nonce(self, row: db_api.VTPMMigrationRecord) -> bytes:
        return proto.transport_nonce(row.id, row.destination, row.salt)

    def _prepare(self, context: Any, row: db_api.VTPMMigrationRecord
                 ) -> dict[str, Any]:
        """The destination's transport and binding keys, checked against
        its registered AK (cached; the agent answers a repeat from its
        journal)."""
        cached = self._prepared.get(row.id)
        if cached is not None:
            return cached
        nonce = self._nonce(row)
        answer = self._call(
            "migration_prepare", context, row.destination,
            migration_id=row.id, instance=row.instance, source=row.source,
            kind=row.kind, epoch=row.epoch, nonce=proto.b64(nonce))
        if not isinstance(answer, dict) or not isinstance(
                answer.get("transport_key"), dict) or not isinstance(
                answer.get("binding_key"), dict):
            raise _Refused("the destination's answer is not a transport "
                           "key and a binding key")
        record = self.db.get_host_by_name(row.destination)
        ak_public = self.db.get_registration(record.id).ak_public
        transport = answer["transport_key"]
        binding = answer["binding_key"]
        try:
            proto.check_transport_key(
                proto.unb64(transport.get("public"), "transport key"),
                proto.unb64(transport.get("certify_attest"),
                            "transport key certification"),
                proto.unb64(transport.get("certify_signature"),
                            "transport key signature"), ak_public, nonce)
            if row.kind == "cold":
                sealing.check_binding_key(
                    proto.unb64(binding.get("public"), "binding key"),
                    proto.unb64(binding.get("certify_attest"),
                                "binding key certification"),
                    proto.unb64(binding.get("certify_signature"),
                                "binding key signature"), ak_public,
                    qualifying_data=nonce)
        except exception.EvidenceError as error:
            raise _Refused("the destination's transport or binding key is "
                           "not certified by its registered AK over this "
                           "migration's nonce: %s" % error) from None
        prepared = {"transport_key": transport, "binding_key": binding,
                    "ak_public": proto.b64(ak_public),
                    "public": proto.unb64(transport["public"],
                                          "transport key")}
        self._prepared[row.id] = prepared
        return prepared

    def _certify_key(self, context: Any, row: db_api.VTPMMigrationRecord
                     ) -> db_api.VTPMMigrationRecord:
        prepared = self._prepare(context, row)
        return self._advance(context, row, "key_certified",
                             transport_key=prepared["public"])

    def _export_call(self, context: Any, row: db_api.VTPMMigrationRecord
                     ) -> dict[str, Any]:
        prepared = self._prepare(context, row)
        answer = self._call(
            "migration_export", context, row.source, migration_id=row.id,
            instance=row.instance, destination=row.destination,
            kind=row.kind, epoch=row.epoch,
            nonce=proto.b64(self._nonce(row)),
            ak_public=prepared["ak_public"],
            transport_key=prepared["transport_key"],
            binding_key=prepared["binding_key"])
        if not isinstance(answer, dict) or not isinstance(
                answer.get("payload"), dict):
            raise _Refused("the source's answer holds no sealed payload")
        # Structure only: what it holds only the destination's TPM opens.
        proto.SealedPayload.from_wire(answer["payload"])
        return answer["payload"]

    def _export(self, context: Any, row: db_api.VTPMMigrationRecord
                ) -> db_api.VTPMMigrationRecord:
        self._payloads[row.id] = self._export_call(context, row)
        return self._advance(context, row, "exported")

    def _import(self, context: Any, row: db_api.VTPMMigrationRecord
                ) -> db_api.VTPMMigrationRecord:
        payloads = self._payloads
        payload = payloads.get(row.id)
        if payload is None:
            # After a restart: the source answers from its journal.
            payload = self._export_call(context, row)
        answer = self._call(
            "migration_import", context, row.destination,
            migration_id=row.id, instance=row.instance, source=row.source,
            epoch=row.epoch, payload=payload)
        if not isinstance(answer, dict) or answer.get("epoch") != row.epoch:
            raise _Refused("the destination did not acknowledge the import "
                           "of epoch %d" % row.epoch)
        payloads.pop(row.id, None)
        return self._advance(context, row, "imported")

    def _deliver(self, context: Any, row: db_api.VTPMMigrationRecord
                 ) -> db_api.VTPMMigrationRecord:
        payload = self._export_call(context, row)
        answer = self._call(
            "migration_deliver_key", context, row.destination,
            migration_id=row.id, instance=row.instance, source=row.source,
            epoch=row.epoch, payload=payload, metadata={})
        if not isinstance(answer, dict) or answer.get("epoch") != row.epoch:
            raise _Refused("the destination did not acknowledge the key")
        return self._advance(context, row, "delivered")

    def _commit(self, context: Any, row: db_api.VTPMMigrationRecord
                ) -> db_api.VTPMMigrationRecord:
        row = self._advance(context, row, "committed")
        self._prepared.pop(row.id, None)
        return row

    def _finish(self, context: Any, row: db_api.VTPMMigrationRecord
                ) -> db_api.VTPMMigrationRecord:
        """After the commit: the destination's copy is released for use,
        the source's erased. A failure leaves the row committed; the
        resume job repeats (both agent steps are idempotent)."""
        self._call("migration_commit", context, row.destination,
                   migration_id=row.id)
        self._call("migration_finish", context, row.source,
                   migration_id=row.id)
        return self._advance(context, row, "completed")

    def _abort(self, context: Any, row: db_api.VTPMMigrationRecord,
               reason: str) -> db_api.VTPMMigrationRecord:
        """Roll back before the commit: the source unlocks, the
        destination discards. The row ends (``aborted``) once the source
        confirmed it unlocked and its copy kept the instance's current
        epoch; until then it stays at its step with the reason, and the
        resume job repeats the rollback (each agent's abort is
        idempotent).

        The destination's answer does not hold the row: a compromised
        destination could otherwise refuse (or ignore) its rollback for
        ever, keep the instance's lock and bar its later migrations. Its
        copy needs no confirmation to be harmless: nothing commits an
        aborted row, the source's copy carries the current epoch, an
        honest agent starts no copy newer than the epoch it saw
        committed, and a later migration to that host supersedes it."""
        # The row as it is now, not as a caller listed it: the resume job
        # may hold a copy listed before a worker committed it, and a
        # source asked to roll back after the commit would unlock its
        # copy of the previous epoch beside the committed one (a clone;
        # its finish is then refused for ever). Only one worker of this
        # process drives a migration (_running), and another conductor's
        # steps need it to hold the row, so nothing commits it between
        # this read and the source's abort.
        row = self.db.get_vtpm_migration(row.id)
        if row.step not in proto.PRE_COMMIT_STEPS:
            LOG.info("vTPM migration %s is %s: not rolled back", row.id,
                     row.step)
            return row
        LOG.warning("vTPM migration %s of instance %s aborted: %s", row.id,
                    row.instance, reason)
        self._prepared.pop(row.id, None)
        self._payloads.pop(row.id, None)
        unconfirmed = []
        ignored = []
        # The source first: its unlock is what the row waits for.
        for host, role in sorted(_asked(row), key=lambda hr: hr[1] !=
                                 _ROLE_SOURCE):
            try:
                answer = self._call("migration_abort", context, host,
                                    migration_id=row.id,
                                    instance=row.instance, role=role)
            except (exception.TrustedPoolsError,
                    messaging.MessagingException) as error:
                answer = None
                problem = _first_line(error)
            else:
                problem = None if role == _ROLE_DESTINATION else \
                    _source_kept(answer, row)
            if role == _ROLE_SOURCE and (answer is None or problem):
                unconfirmed.append("%s: %s" % (host, problem))
            elif role == _ROLE_DESTINATION and answer is None:
                ignored.append("%s: %s" % (host, problem))
        if ignored:
            reason += (" (destination rollback not confirmed by %s; its "
                       "copy was never committed, refuses to start and is "
                       "discarded by the instance's next migration to it)"
                       % "; ".join(ignored))
        if unconfirmed:
            # The row stays active: the resume job repeats the rollback
            # until the source confirms it (a source whose unlock was
            # lost would otherwise keep its only copy locked for ever).
            reason += " (rollback not confirmed by %s; repeated later)" \
                % "; ".join(unconfirmed)
            try:
                return self.db.advance_vtpm_migration(
                    row.id, (row.step,), row.step, reason=reason[:2000])
            except exception.ConcurrentUpdate:
                return self.db.get_vtpm_migration(row.id)
        try:
            row = self.db.advance_vtpm_migration(
                row.id, proto.PRE_COMMIT_STEPS, "aborted",
                reason=reason[:2000])
        except exception.ConcurrentUpdate:
            return self.db.get_vtpm_migration(row.id)
        self._notify(context, row)
        return row

    # --- the periodic job -----------------------------------------------------

    def resume(self) -> int:
        """Periodic (and at start): migrations no worker drives. Those of
        this conductor (a previous run) or of a conductor whose heartbeat
        stopped are taken over; before the commit they are rolled back,
        from the commit on finished. A migration whose step has not moved
        for ``step_timeout`` seconds is rolled back too. Returns how many
        were handled."""
        alive = set(self.db.list_alive_conductors(
            self.manager.heartbeat_timeout)) | {self.host}
        now = datetime.datetime.fromtimestamp(self.manager.clock(),
                                              datetime.timezone.utc)
        handled = 0
        with self._start_lock:
            rows = self.db.list_vtpm_migrations(active=True, limit=1000)
        for row in rows:
            with self._running_lock:
                if row.id in self._running:
                    continue
            mine = row.conductor == self.host
            if not mine and row.conductor in alive:
                continue
            waiting_live = row.kind == "live" and row.step == "delivered"
            timed_out = (now - row.updated_at).total_seconds() > \
                self.step_timeout
            completing = waiting_live and not timed_out and \
                (row.reason or "").startswith(_COMPLETING)
            if waiting_live and not timed_out and not completing:
                continue  # the hypervisor's migration is running
            if not mine:
                try:
                    row = self.db.claim_vtpm_migration(row.id, self.host,
                                                       row.conductor)
                except exception.ConcurrentUpdate:
                    continue
            handled += 1
            with self._running_lock:
                if row.id in self._running:
                    continue
                self._running.add(row.id)
            try:
                if completing:
                    self._complete({}, row.id)
                elif row.step in proto.PRE_COMMIT_STEPS:
                    self._abort({}, row, "the conductor driving it stopped "
                                "or the step timed out before the commit; "
                                "rolled back")
                else:
                    self._finish({}, row)
            except (exception.TrustedPoolsError,
                    messaging.MessagingException) as error:
                LOG.warning("vTPM migration %s could not be finished yet: "
                            "%s", row.id, _first_line(error))
            finally:
                with self._running_lock:
                    self._running.discard(row.id)
        return handled

    # --- notifications ----------------------------------------------------------

    def _notify(self, context: Any, row: db_api.VTPMMigrationRecord) -> None:
        """Announce the step ``row`` just reached, off the worker: one
        sender thread publishes the notifications in the order the steps
        were recorded (a publish to the bus per step was a round trip on
        the migration's path; the database row, not the notification, is
        the record)."""
        metrics = getattr(self.manager, "metrics", None)
        if metrics is not None and row.step in ("completed", "aborted"):
            metrics.migration_ended(row.step)
        if self.manager.notifier is None:
            return
        with self._announce_lock:
            self._announcements.put((row.step, row.id,
                                     migration_view(row)))
            if self._announcer is None or not self._announcer.is_alive():
                self._announcer = threading.Thread(
                    target=self._announce, name="vtpm-migration-notify",
                    daemon=True)
                self._announcer.start()

    def _announce(self) -> None:
        while True:
            try:
                item = self._announcements.get(timeout=60)
            except queue.Empty:
                item = None
            else:
                if item is None:  # close(): end once nothing is queued
                    self._announcements.task_done()
            if item is None:
                with self._announce_lock:
                    if self._announcements.empty():
                        self._announcer = None
                        return
                continue
            step, migration_id, payload = item
            notifier = self.manager.notifier
            try:
                if notifier is None:
                    pass
                elif step == "aborted":
                    notifier.warn({}, EVENT_PREFIX + step, payload)
                else:
                    notifier.info({}, EVENT_PREFIX + step, payload)
            except Exception as error:  # noqa: BLE001 - never stops a step
                LOG.warning("Could not announce step %s of vTPM migration "
                            "%s: %s", step, migration_id, error)
            finally:
                self._announcements.task_done()

    def close(self, timeout: float = 5.0) -> bool:
        """The service stops (its workers are done): publish what is
        queued and end the sender thread rather than leave it waiting a
        minute for more. False if something was still queued at
        ``timeout``: a publish blocked on a broker that is down (the
        notifier retries for ever); the thread is a daemon and the rows
        are the record, so the stop does not wait longer for it."""
        flushed = self.flush_notifications(timeout)
        with self._announce_lock:
            thread = self._announcer
            if thread is None or not thread.is_alive():
                return flushed
            self._announcements.put(None)
        if not flushed:
            return False
        # Idle on the queue: the end marker wakes it at once.
        thread.join(timeout)
        return not thread.is_alive()

    def flush_notifications(self, timeout: float = 10.0) -> bool:
        """Wait until the queued notifications were published (tests, a
        clean stop); False if some were still queued at ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._announce_lock:
                if self._announcements.unfinished_tasks == 0:
                    return True
            time.sleep(0.01)
        return False


def _asked(row: db_api.VTPMMigrationRecord) -> list[tuple[str, str]]:
    """The agents (host, role) a step of ``row`` may already have asked,
    so the ones with something to roll back: the destination from the key
    step on (``attested``: its prepare may have run), the source from the
    export on (``key_certified``). A destination refused at ``requested``
    was never asked, so its answer (or its refusal, if it is compromised)
    cannot keep the row active."""
    if row.step == "requested":
        return []
    if row.step == "attested":
        return [(row.destination, _ROLE_DESTINATION)]
    return [(row.destination, _ROLE_DESTINATION), (row.source, _ROLE_SOURCE)]


def _source_kept(answer: Any, row: db_api.VTPMMigrationRecord
                 ) -> str | None:
    """Why the source's answer to an abort does not confirm that it
    unlocked and kept the instance's current epoch (None: it does). An
    agent before 1.5 answers without the epoch; a source holding no copy
    (the vTPM never existed there) answers None."""
    if not isinstance(answer, dict) or answer.get("step") not in (
            "aborted", "unknown"):
        return "answered %.200r, not a rollback" % (answer,)
    epoch = answer.get("epoch")
    if epoch is not None and epoch != row.epoch - 1:
        return ("its copy is at epoch %r, not the current epoch %d"
                % (epoch, row.epoch - 1))
    return None


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__

