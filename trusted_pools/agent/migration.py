"""The agent's side of a vTPM migration (issue 12): its steps and journal.

The conductor drives every migration (:mod:`trusted_pools.conductor.
migration`); each agent only answers the conductor's signed requests for
the steps that are its own, and writes each step it took to a journal on
its own disk before it answers, so that a restarted agent (or a request
the conductor repeats after a timeout or its own restart) gets the same
answer, never a second, different one:

* destination: ``prepare`` (a one-time transport key made in its TPM and
  certified by its AK; the TPM-wrapped private blob is journaled, so the
  key can be loaded again after a restart), ``import`` (cold: unwrap in the
  TPM, decrypt, check, re-seal at rest through the driver's import, start,
  check that it answers, read its AK and EK publics, stop) or ``deliver``
  (live: the swtpm migration key to the driver's ``prepare_incoming``),
  ``check_incoming`` (live, before the commit: the state arrived),
  ``commit`` (cold: this host's vTPM CA certifies the vTPM for this host),
  ``abort``;
* source: ``export`` (re-check the transport key itself, lock the vTPM,
  take its state or its live migration key, seal it), ``finish`` (erase
  after the commit), ``abort`` (unlock).

The journal holds no plaintext: the transport key's private part is a
TPM2B_PRIVATE only this TPM loads, the sealed payload is ciphertext. An
epoch floor per instance (``epochs.json``) remembers the newest epoch this
host saw committed; :meth:`MigrationAgent.check_startable` refuses a copy
older than it (a restored backup, a source copy that was not erased) and
one newer than it (a migration's copy that never committed here: an abort
this host missed or refused), and a destination refuses to prepare for an
epoch it has already passed. A new prepare for an instance discards this
host's uncommitted leftovers of it (the conductor allows one active
migration per instance, so the earlier one ended without a commit).

Hand-written: no library implements this protocol; the file handling is
the same atomic-write pattern as the vTPM driver's.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Mapping

from trusted_pools import exception
from trusted_pools.protocol import vtpm_migration as proto
from trusted_pools.tpm import device as tpm_device
from trusted_pools.tpm import sealing
from trusted_pools.vtpm import binding as vtpm_binding
from trusted_pools.vtpm import driver as vtpm_driver

LOG = logging.getLogger(__name__)

__all__ = ["MigrationAgent"]

_DESTINATION = "destination"
_SOURCE = "source"
# The journal keeps ended migrations this long (seconds) so a late repeat
# of a request is still answered consistently; then they are pruned.
_KEEP_ENDED = 7 * 86400
# A destination's steps between its prepare and the commit: its copy (if
# any) is not the vTPM yet.
_UNCOMMITTED = ("prepared", "imported", "delivered", "received")


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    # The rename is on disk only once the directory is: without this a
    # power loss could undo a commit the conductor already recorded as
    # completed (the copy would then refuse to start for ever, newer than
    # the floor), or a finish after the source's erase.
    directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


class MigrationAgent:
    """One host's migration steps over its TPM (``attester``) and its vTPM
    driver. Every public method is called by :mod:`.manager` after the
    conductor's signature on the request was checked."""

    def __init__(self, host: str, attester: Any,
                 driver: vtpm_driver.VTPMDriver | None,
                 journal_dir: str | os.PathLike[str], *,
                 ca: vtpm_binding.HostCA | None = None,
                 create_journal: bool = True) -> None:
        self.host = host
        #: This host's vTPM CA: on commit it certifies a vTPM that came
        #: in with a chain to its source, for the same AK and EK, so
        #: deep attestation chains it to this host (None: not done).
        self.ca = ca
        self.attester = attester
        self.driver = driver
        self.journal_dir = Path(journal_dir)
        # create_journal=False: a reader only (the vTPM command's start
        # check), which must not make the agent's directory as its user;
        # a missing journal reads as empty.
        if create_journal:
            self.journal_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._lock = threading.RLock()
        #: Test hook (fault injection): called with the step's name just
        #: before the step's answer is returned.
        self.after_step: Any = None
        # One transport key made ahead of need (RSA key generation is the
        # slowest TPM command of a migration): fresh, never certified nor
        # used before; the next prepare certifies it over its nonce and
        # takes it, and another one is made in the background.
        self._spare: Any = None
        self._spare_lock = threading.Lock()
        self._spare_thread: threading.Thread | None = None
        self._closed = False
        # Per instance, the newest epoch the journal's entries committed
        # (None: not read yet); see epoch_floor.
        self._floors: dict[str, int] | None = None

    def close(self) -> None:
        """No more background work (the agent stops: its TPM connection
        is about to close)."""
        self._closed = True
        thread = self._spare_thread
        if thread is not None:
            thread.join(60)

    def _transport_key(self, nonce: bytes) -> Any:
        """A one-time transport key certified over ``nonce``: the spare
        one if there is one (certified now), else a new one."""
        with self._spare_lock:
            spare, self._spare = self._spare, None
        attester = self.attester
        if spare is not None:
            try:
                return attester.run_on_device(
                    lambda dev: dev.certify_transport_key(
                        spare.public, spare.private, attester.ak_handle,
                        qualifying_data=nonce))
            except exception.TPMError as error:
                # The TPM no longer loads it (cleared, replaced): make one.
                LOG.warning("The spare transport key does not load (%s); "
                            "making a new one", error)
        return attester.run_on_device(
            lambda dev: dev.create_transport_key(
                attester.ak_handle, qualifying_data=nonce))

    def _replenish(self) -> None:
        """Make the next spare key in the background. Called when this
        host's part of a migration ended (commit, abort): a key generation
        holds the TPM for a while, and not in the middle of a migration."""
        with self._spare_lock:
            if self._closed or self._spare is not None or (
                    self._spare_thread is not None
                    and self._spare_thread.is_alive()):
                return
            self._spare_thread = threading.Thread(
                target=self._make_spare, name="transport-key-spare",
                daemon=True)
            self._spare_thread.start()

    def _make_spare(self) -> None:
        if self._closed:
            return
        attester = self.attester
        try:
            key = attester.run_on_device(
                lambda dev: dev.create_transport_key(None))
        except exception.TrustedPoolsError as error:
            LOG.warning("No spare transport key made: %s", error)
            return
        with self._spare_lock:
            if not self._closed:
                self._spare = key

    # --- the journal --------------------------------------------------------

    def _path(self, migration_id: str) -> Path:
        # The id is the conductor's UUID; refuse anything else before it
        # becomes part of a path.
        try:
            canonical = vtpm_driver.canonical_uuid(migration_id)
        except exception.InvalidParameterValue:
            raise exception.InvalidParameterValue(
                name="migration_id", reason="not a UUID") from None
        return self.journal_dir / ("%s.json" % canonical)

    def journal(self, migration_id: str) -> dict[str, Any] | None:
        """This host's journal entry of ``migration_id`` (None: unknown)."""
        try:
            return json.loads(self._path(migration_id).read_text())
        except FileNotFoundError:
            return None
        except ValueError as error:
            raise exception.MigrationStepRefused(
                migration=migration_id, host=self.host,
                reason="its journal entry is damaged (%s)" % error) \
                from None

    def _save(self, entry: Mapping[str, Any]) -> None:
        data = dict(entry)
        data["updated_at"] = time.time()
        _write_atomic(self._path(data["id"]),
                      json.dumps(data, sort_keys=True).encode())

    def _epochs_path(self) -> Path:
        return self.journal_dir / "epochs.json"

    def epoch_floor(self, instance: str) -> int:
        """The newest epoch of ``instance`` this host saw committed: the
        newest of ``epochs.json`` (where pruned entries leave theirs) and
        of the journal's committed (destination) and finished (source)
        entries. The entry is the one durable write of a commit or a
        finish; a second file written (and fsynced) beside it would only
        repeat it."""
        try:
            floors = json.loads(self._epochs_path().read_text())
        except (FileNotFoundError, ValueError):
            floors = {}
        value = floors.get(instance, 0)
        value = value if isinstance(value, int) else 0
        return max(value, self._journal_floors().get(instance, 0))

    def _journal_floors(self) -> dict[str, int]:
        """Per instance, the newest epoch of its committed or finished
        entries (read from the journal once, then kept up to date)."""
        with self._lock:
            if self._floors is None:
                floors: dict[str, int] = {}
                for entry in self._entries():
                    self._count_floor(floors, entry)
                self._floors = floors
            return self._floors

    @staticmethod
    def _count_floor(floors: dict[str, int], entry: Mapping[str, Any]
                     ) -> None:
        instance, epoch = entry.get("instance"), entry.get("epoch")
        if entry.get("step") in ("committed", "finished") and \
                isinstance(instance, str) and isinstance(epoch, int) and \
                not isinstance(epoch, bool):
            floors[instance] = max(floors.get(instance, 0), epoch)

    def _save_ended(self, entry: Mapping[str, Any]) -> None:
        """Journal a commit or a finish: the entry is durable, and from
        it the floor."""
        self._save(entry)
        self._count_floor(self._journal_floors(), entry)

    def _raise_floor(self, instance: str, epoch: int) -> None:
        try:
            floors = json.loads(self._epochs_path().read_text())
        except (FileNotFoundError, ValueError):
            floors = {}
        if floors.get(instance, 0) < epoch:
            floors[instance] = epoch
            _write_atomic(self._epochs_path(),
                          json.dumps(floors, sort_keys=True).encode())

    def _refuse(self, migration_id: str, reason: str
                ) -> exception.MigrationStepRefused:
        return exception.MigrationStepRefused(
            migration=migration_id, host=self.host, reason=reason)

    def _same_request(self, entry: Mapping[str, Any], role: str,
                      **fields: Any) -> None:
        """A repeated request must repeat the first one exactly."""
        if entry.get("role") != role or any(
                entry.get(k) != v for k, v in fields.items()):
            raise self._refuse(entry["id"], "it was journaled with other "
                               "arguments (as %s)" % entry.get("role"))

    def _driver(self) -> vtpm_driver.VTPMDriver:
        if self.driver is None:
            raise exception.TemporaryFailure(
                reason="this agent runs no vTPMs ([vtpm] enabled is off)")
        return self.driver

    def _step_done(self, step: str) -> None:
        if self.after_step is not None:
            self.after_step(step)

    # --- start guard ---------------------------------------------------------

    def vtpm_epoch(self, instance: str) -> int:
        """The epoch the local copy of ``instance``'s vTPM carries (0: it
        never moved)."""
        info = self._driver().status(instance)
        value = info.metadata.get(proto.EPOCH_METADATA_KEY, 0)
        return value if isinstance(value, int) else 0

    def check_startable(self, instance: str) -> None:
        """Raise unless the local copy of ``instance`` may run: not older
        than the newest epoch this host saw committed
        (:class:`VTPMStale`), and not a destination copy whose migration
        has not committed (:class:`VTPMInvalidState`)."""
        instance = vtpm_driver.canonical_uuid(instance)
        epoch = self.vtpm_epoch(instance)
        floor = self.epoch_floor(instance)
        if epoch < floor:
            raise exception.VTPMStale(instance=instance, epoch=epoch,
                                      current=floor)
        if epoch > floor:
            # Only a commit seen here raises the floor to a copy's epoch:
            # a newer copy is a migration's that never committed here (an
            # abort whose rollback this host missed or refused, an import
            # whose journal entry was lost). The source's copy stays the
            # vTPM; this one never runs.
            raise exception.VTPMInvalidState(
                instance=instance, state="uncommitted (epoch %d, newer "
                "than the epoch %d committed here)" % (epoch, floor),
                operation="start", expected="a committed copy")
        for entry in self._entries():
            if entry.get("instance") == instance and \
                    entry.get("role") == _DESTINATION and \
                    entry.get("step") in _UNCOMMITTED:
                raise exception.VTPMInvalidState(
                    instance=instance, state="migrating",
                    operation="start", expected="committed (migration %s "
                    "is not)" % entry["id"])

    def start_vtpm(self, instance: str) -> vtpm_driver.VTPMInfo:
        """Start ``instance``'s vTPM after :meth:`check_startable`."""
        self.check_startable(instance)
        return self._driver().start(instance)

    def _entries(self) -> list[dict[str, Any]]:
        entries = []
        for path in sorted(self.journal_dir.glob("*.json")):
            if path.name == "epochs.json":
                continue
            try:
                entries.append(json.loads(path.read_text()))
            except (OSError, ValueError):
                continue
        return entries

    def prune(self, now: float | None = None) -> int:
        """Forget ended migrations older than a week."""
        now = time.time() if now is None else now
        pruned = 0
        for entry in self._entries():
            if entry.get("step") in ("committed", "finished", "aborted") \
                    and now - entry.get("updated_at", now) > _KEEP_ENDED:
                if entry["step"] != "aborted":
                    # Its floor outlives it (written before it goes).
                    self._raise_floor(entry["instance"], entry["epoch"])
                self._path(entry["id"]).unlink(missing_ok=True)
                pruned += 1
        return pruned

    # --- destination ---------------------------------------------------------

    def prepare(self, migration_id: str, instance: str, source: str,
                kind: str, epoch: int, nonce: bytes) -> dict[str, Any]:
        """Make (or return the journaled) one-time transport key certified
        over ``nonce``, and this host's binding key certified over the same
        nonce (the at-rest re-seal goes to it)."""
        instance = vtpm_driver.canonical_uuid(instance)
        with self._lock:
            entry = self.journal(migration_id)
            if entry is not None:
                self._same_request(entry, _DESTINATION, instance=instance,
                                   peer=source, kind=kind, epoch=epoch,
                                   nonce=nonce.hex())
                if entry["step"] != "prepared":
                    raise self._refuse(migration_id, "it is already %s"
                                       % entry["step"])
                binding = self._certified_binding_key(nonce)
                return self._prepared_answer(entry, binding)
            floor = self.epoch_floor(instance)
            if epoch <= floor:
                raise self._refuse(migration_id, "instance %s is at epoch "
                                   "%d here; epoch %d is not newer"
                                   % (instance, floor, epoch))
            self._supersede(migration_id, instance, epoch)
            driver = self._driver()
            if kind == "cold":
                try:
                    driver.status(instance)
                except exception.VTPMNotFound:
                    pass
                else:
                    raise exception.VTPMExists(instance=instance)
                # Creates the driver's binding key on first use (with its
                # configured PCR policy) before the AK certifies it.
                binding_public = getattr(driver, "binding_key_public", None)
                if binding_public is not None:
                    binding_public()
            key = self._transport_key(nonce)
            entry = {"id": migration_id, "role": _DESTINATION,
                     "instance": instance, "peer": source, "kind": kind,
                     "epoch": epoch, "nonce": nonce.hex(),
                     "step": "prepared", "created_at": time.time(),
                     "transport": {
                         "public": proto.b64(key.public),
                         "private": proto.b64(key.private),
                         "certify_attest": proto.b64(key.certify_attest),
                         "certify_signature":
                             proto.b64(key.certify_signature)}}
            self._save(entry)
            binding = self._certified_binding_key(nonce)
            self._step_done("prepare")
            return self._prepared_answer(entry, binding)

    def _supersede(self, migration_id: str, instance: str, epoch: int
                   ) -> None:
        """Roll back this host's earlier, uncommitted destination part of
        ``instance``'s migrations before a new one: the conductor allows
        one active migration per instance and allocates the epoch after
        the last commit, so a signed prepare for the same instance at an
        epoch not older means the earlier migration ended without a
        commit (its rollback never reached this host, or the conductor
        stopped waiting for it). Its copy would otherwise bar the new
        import."""
        for entry in self._entries():
            if entry.get("id") == migration_id or \
                    entry.get("instance") != instance or \
                    entry.get("role") != _DESTINATION or \
                    entry.get("step") not in _UNCOMMITTED or \
                    not isinstance(entry.get("epoch"), int) or \
                    entry["epoch"] > epoch:
                continue
            LOG.warning("vTPM migration %s of instance %s: superseded by "
                        "migration %s before its commit; rolling it back "
                        "here", entry["id"], instance, migration_id)
            self._abort_destination(entry)
        # A copy whose journal entry was lost: newer than any epoch
        # committed here, so never the vTPM (check_startable refuses it).
        driver = self._driver()
        try:
            info = driver.status(instance)
        except exception.VTPMNotFound:
            return
        copy = info.metadata.get(proto.EPOCH_METADATA_KEY, 0)
        if isinstance(copy, int) and self.epoch_floor(instance) < copy \
                <= epoch:
            LOG.warning("vTPM of instance %s: discarding an uncommitted "
                        "copy of epoch %d before migration %s", instance,
                        copy, migration_id)
            if info.migration == vtpm_driver.MIGRATION_INCOMING:
                driver.abort_incoming(instance)
            else:
                driver.destroy(instance)

    def _certified_binding_key(self, nonce: bytes) -> dict[str, str]:
        key = self.attester.binding_key(nonce)
        return {"public": proto.b64(key.public),
                "certify_attest": proto.b64(key.certify_attest or b""),
                "certify_signature": proto.b64(key.certify_signature
                                               or b"")}

    @staticmethod
    def _prepared_answer(entry: Mapping[str, Any],
                         binding: Mapping[str, str]) -> dict[str, Any]:
        transport = entry["transport"]
        return {"transport_key": {k: transport[k] for k in (
                    "public", "certify_attest", "certify_signature")},
                "binding_key": dict(binding)}

    def _open(self, entry: Mapping[str, Any], payload: Any) -> bytes:
        sealed = proto.SealedPayload.from_wire(payload)
        transport = entry.get("transport")
        if not transport:
            raise self._refuse(entry["id"], "its transport key was "
                               "already discarded")
        public = proto.unb64(transport["public"], "transport key")
        private = proto.unb64(transport["private"], "transport key")

        def unwrap(wrapped: bytes, label: bytes) -> bytes:
            return self.attester.run_on_device(
                lambda dev: dev.transport_decrypt(
                    public, private, wrapped, label))
        aad = proto.associated_data(entry["id"], entry["instance"],
                                    entry["peer"], self.host,
                                    entry["epoch"], entry["kind"])
        return proto.open_sealed(unwrap, sealed, aad=aad,
                                 label=proto.transport_label(entry["id"]))

    def _destination_entry(self, migration_id: str, instance: str,
                           source: str, epoch: int, kind: str
                           ) -> dict[str, Any]:
        entry = self.journal(migration_id)
        if entry is None:
            raise self._refuse(migration_id, "this host prepared no such "
                               "migration")
        self._same_request(entry, _DESTINATION,
                           instance=vtpm_driver.canonical_uuid(instance),
                           peer=source, epoch=epoch, kind=kind)
        return entry

    def import_state(self, migration_id: str, instance: str, source: str,
                     epoch: int, payload: Any) -> dict[str, Any]:
        """Cold: open the payload in this TPM, check it, import it
        (re-sealed at rest to this host's binding key by the driver),
        start it to prove it answers, stop it again. The copy may not run
        until the commit."""
        with self._lock:
            entry = self._destination_entry(migration_id, instance, source,
                                            epoch, "cold")
            if entry["step"] == "imported":
                return {"instance": entry["instance"], "epoch": epoch,
                        "status": "imported"}
            if entry["step"] != "prepared":
                raise self._refuse(migration_id, "it is %s" % entry["step"])
            state = proto.decode_cold_state(
                self._open(entry, payload), instance=entry["instance"],
                epoch=epoch)
            driver = self._driver()
            # A copy left by an import that died before its journal entry
            # was written (same epoch: this migration's) is redone.
            self._discard_copy(state.instance, epoch)
            export = vtpm_driver.StateExport(
                instance_uuid=state.instance, driver=state.driver,
                metadata=state.metadata, files=state.files,
                wrapped_key=state.wrapped_state_key)
            driver.import_state(export)
            provisioned = state.metadata.get("provisioner")
            rebind = self.ca is not None and hasattr(driver, "tcti") and \
                isinstance(provisioned, dict) and \
                isinstance(provisioned.get("vtpm_chain"), dict)
            try:
                info = driver.start(state.instance, host_access=True) \
                    if rebind else driver.start(state.instance)
                if info.status is not vtpm_driver.VTPMStatus.RUNNING:
                    raise exception.VTPMStartFailed(
                        instance=state.instance, reason="it is %s after "
                        "the start" % info.status.value)
                if rebind:
                    entry["vtpm_keys"] = self._vtpm_keys(state.instance,
                                                         provisioned)
                driver.stop(state.instance)
            except BaseException:
                driver.destroy(state.instance)
                raise
            entry["step"] = "imported"
            self._save(entry)
            self._step_done("import")
            return {"instance": entry["instance"], "epoch": epoch,
                    "status": "imported"}

    def _vtpm_keys(self, instance: str, provisioned: Mapping[str, Any]
                   ) -> dict[str, Any]:
        """The AK and EK publics of the imported (running, host-access)
        vTPM, read from the vTPM itself, not from its chain: the new
        certificate binds what the vTPM holds. ``provisioned``: what the
        source's provisioner stored (the AK's handle)."""
        handle = provisioned.get("vtpm_ak_handle",
                                 vtpm_binding.VTPM_AK_HANDLE)
        if isinstance(handle, bool) or not isinstance(handle, int):
            handle = vtpm_binding.VTPM_AK_HANDLE
        with tpm_device.TPMDevice(self._driver().tcti(instance)) as dev:
            ak_public = dev.load_ak(handle).public
            ek_public = dev.ek_public()
        return {"ak_handle": handle, "ak_public": proto.b64(ak_public),
                "ek_public": proto.b64(ek_public)}

    def _rebind(self, entry: Mapping[str, Any]) -> None:
        """On commit: this host's CA certifies the vTPM (same AK, same
        EK) for this host; the chain to the source goes. Deep attestation
        of the instance here then chains to this host, and the source's
        chain is refused here (it leads to another host)."""
        keys = entry.get("vtpm_keys")
        if not keys or self.ca is None:
            return
        chain = self.ca.issue(
            entry["instance"],
            proto.unb64(keys["ak_public"], "vTPM AK"),
            proto.unb64(keys["ek_public"], "vTPM EK"))
        driver = self._driver()
        provisioned = dict(driver.status(entry["instance"]).metadata.get(
            "provisioner") or {})
        provisioned.update({"vtpm_chain": chain.to_wire(),
                            "vtpm_ak_handle": keys["ak_handle"]})
        driver.update_metadata(entry["instance"],
                               {"provisioner": provisioned})
        LOG.info("vTPM of instance %s: certified by this host's vTPM CA "
                 "(migration %s)", entry["instance"], entry["id"])

    def deliver_key(self, migration_id: str, instance: str, source: str,
                    epoch: int, payload: Any,
                    metadata: Mapping[str, Any]) -> dict[str, Any]:
        """Live: open the swtpm migration key in this TPM and hand it to
        the driver's ``prepare_incoming`` with the source vTPM's metadata
        (``migration_epoch`` set: the driver keeps it as the new vTPM's
        metadata, so the epoch floor applies to it), while the destination
        swtpm waits for QEMU's incoming stream."""
        with self._lock:
            entry = self._destination_entry(migration_id, instance, source,
                                            epoch, "live")
            if entry["step"] == "delivered":
                return {"instance": entry["instance"], "epoch": epoch,
                        "status": "delivered"}
            if entry["step"] != "prepared":
                raise self._refuse(migration_id, "it is %s" % entry["step"])
            key, meta = proto.decode_live_key(
                self._open(entry, payload), instance=entry["instance"],
                epoch=epoch)
            # What the conductor adds (none today) never overrides what
            # the source's sealed metadata says.
            meta = dict(dict(metadata), **meta)
            info = self._driver().prepare_incoming(
                entry["instance"], migration_key=key, metadata=meta)
            del key
            entry["step"] = "delivered"
            self._save(entry)
            self._step_done("deliver")
            return {"instance": entry["instance"], "epoch": epoch,
                    "status": info.status.value}

    def check_incoming(self, migration_id: str) -> dict[str, Any]:
        """Live, before the conductor commits: the hypervisor's stream
        brought the state and the destination hypervisor holds the vTPM
        (the driver's ``check_incoming``). Journaled ``received``; still
        abortable. The conductor commits only after this answer, so a
        commit never names a vTPM that did not arrive (1.5)."""
        with self._lock:
            entry = self.journal(migration_id)
            if entry is None or entry.get("role") != _DESTINATION or \
                    entry.get("kind") != "live":
                raise self._refuse(migration_id, "this host is not its "
                                   "live destination")
            if entry["step"] in ("received", "committed"):
                return {"instance": entry["instance"],
                        "epoch": entry["epoch"], "step": entry["step"]}
            if entry["step"] != "delivered":
                raise self._refuse(migration_id, "it is %s, not delivered"
                                   % entry["step"])
            self._driver().check_incoming(entry["instance"])
            entry["step"] = "received"
            self._save(entry)
            self._step_done("check_incoming")
            return {"instance": entry["instance"], "epoch": entry["epoch"],
                    "step": "received"}

    def commit(self, migration_id: str) -> dict[str, Any]:
        """The conductor committed: this copy is the vTPM now (live: the
        driver's ``finish_incoming``); the transport key is discarded."""
        with self._lock:
            entry = self.journal(migration_id)
            if entry is None or entry.get("role") != _DESTINATION:
                raise self._refuse(migration_id, "this host is not its "
                                   "destination")
            if entry["step"] == "committed":
                return {"instance": entry["instance"], "step": "committed"}
            if entry["step"] not in ("imported", "delivered", "received"):
                raise self._refuse(migration_id, "it is %s, nothing to "
                                   "commit" % entry["step"])
            if entry["kind"] == "live":
                # ``received``: checked before the commit (1.5); a
                # conductor at 1.4 commits from ``delivered`` unchecked.
                self._driver().finish_incoming(
                    entry["instance"],
                    checked=entry["step"] == "received")
            self._rebind(entry)
            entry["step"] = "committed"
            entry["transport"] = None
            self._save_ended(entry)
            self._replenish()
            self._step_done("commit")
            return {"instance": entry["instance"], "step": "committed"}

    # --- source ----------------------------------------------------------------

    def export(self, migration_id: str, instance: str, destination: str,
               kind: str, epoch: int, nonce: bytes, ak_public: bytes,
               transport_key: Mapping[str, Any],
               binding_key: Mapping[str, Any]) -> dict[str, Any]:
        """Lock the vTPM and seal its state (cold) or its live migration
        key to the destination's transport key, which this agent checks
        itself against the destination AK the conductor vouched for."""
        instance = vtpm_driver.canonical_uuid(instance)
        with self._lock:
            entry = self.journal(migration_id)
            if entry is not None:
                self._same_request(entry, _SOURCE, instance=instance,
                                   peer=destination, kind=kind, epoch=epoch)
                if entry["step"] != "exported":
                    raise self._refuse(migration_id, "it is already %s"
                                       % entry["step"])
                return {"payload": entry["payload"]}
            transport = proto.check_transport_key(
                proto.unb64(transport_key.get("public"), "transport key"),
                proto.unb64(transport_key.get("certify_attest"),
                            "transport key certification"),
                proto.unb64(transport_key.get("certify_signature"),
                            "transport key signature"), ak_public, nonce)
            driver = self._driver()
            if driver.status(instance).status is \
                    vtpm_driver.VTPMStatus.MIGRATING:
                # Exported by this migration before a crash that lost the
                # journal entry (the conductor's lock allows no other).
                driver.cancel_migration(instance)
            current = self.vtpm_epoch(instance)
            if current != epoch - 1 or epoch <= self.epoch_floor(instance):
                raise exception.VTPMStale(instance=instance, epoch=current,
                                          current=epoch - 1)
            aad = proto.associated_data(migration_id, instance, self.host,
                                        destination, epoch, kind)
            label = proto.transport_label(migration_id)
            if kind == "cold":
                binding = sealing.check_binding_key(
                    proto.unb64(binding_key.get("public"), "binding key"),
                    proto.unb64(binding_key.get("certify_attest"),
                                "binding key certification"),
                    proto.unb64(binding_key.get("certify_signature"),
                                "binding key signature"),
                    ak_public, qualifying_data=nonce)
                export = driver.export_state(instance,
                                             destination_key=binding)
                try:
                    plaintext = proto.encode_cold_state(
                        instance=instance, driver=export.driver,
                        metadata=export.metadata, files=export.files,
                        wrapped_state_key=export.wrapped_key, epoch=epoch)
                    sealed = proto.seal(transport, plaintext, aad=aad,
                                        label=label)
                except BaseException:
                    driver.cancel_migration(instance)
                    raise
                del plaintext
            else:
                plaintext = proto.encode_live_key(
                    instance=instance,
                    key=driver.live_migration_key(instance),
                    metadata=driver.status(instance).metadata, epoch=epoch)
                sealed = proto.seal(transport, plaintext, aad=aad,
                                    label=label)
                del plaintext
            entry = {"id": migration_id, "role": _SOURCE,
                     "instance": instance, "peer": destination,
                     "kind": kind, "epoch": epoch, "step": "exported",
                     "created_at": time.time(),
                     "payload": sealed.to_wire()}
            self._save(entry)
            self._step_done("export")
            return {"payload": entry["payload"]}

    def finish(self, migration_id: str) -> dict[str, Any]:
        """After the commit: erase the source copy (cold) or let the
        driver finish the outgoing side (live); the floor moves to the
        committed epoch, so a restored copy never starts here."""
        with self._lock:
            entry = self.journal(migration_id)
            if entry is None or entry.get("role") != _SOURCE:
                raise self._refuse(migration_id, "this host is not its "
                                   "source")
            if entry["step"] == "finished":
                # A repeat: the erase may not have happened (a crash
                # right after the journal); both erases are idempotent.
                self._erase_source(entry)
                return {"instance": entry["instance"], "step": "finished"}
            if entry["step"] != "exported":
                raise self._refuse(migration_id, "it is %s" % entry["step"])
            # The floor first (the entry): from here the copy is stale
            # and refuses to start even if the erase does not happen.
            entry["step"] = "finished"
            entry["payload"] = None
            self._save_ended(entry)
            self._erase_source(entry)
            self._step_done("finish")
            return {"instance": entry["instance"], "step": "finished"}

    def _erase_source(self, entry: Mapping[str, Any]) -> None:
        driver = self._driver()
        if entry["kind"] == "cold":
            try:
                driver.destroy(entry["instance"])
            except exception.VTPMNotFound:
                pass
        else:
            driver.finish_outgoing(entry["instance"])

    # --- both ---------------------------------------------------------------

    def _discard_copy(self, instance: str, epoch: int) -> None:
        """Destroy the local copy of ``instance`` if it carries ``epoch``
        (imported by the migration of that epoch, never committed)."""
        try:
            if self.vtpm_epoch(instance) != epoch:
                return
        except exception.VTPMNotFound:
            return
        self._driver().destroy(instance)

    def abort(self, migration_id: str, instance: str, role: str
              ) -> dict[str, Any]:
        """Roll back this host's part before the commit: the source
        unlocks its vTPM, the destination discards its copy and its
        transport key. Refused after a commit. ``role`` is what the
        conductor recorded this host as: a source that died before its
        journal entry was written still unlocks."""
        instance = vtpm_driver.canonical_uuid(instance)
        if role not in (_SOURCE, _DESTINATION):
            raise exception.InvalidParameterValue(
                name="role", reason="source or destination")
        with self._lock:
            entry = self.journal(migration_id)
            if entry is None:
                if role == _SOURCE and self.driver is not None:
                    try:
                        status = self.driver.status(instance).status
                    except exception.VTPMNotFound:
                        status = None
                    if status is vtpm_driver.VTPMStatus.MIGRATING:
                        self.driver.cancel_migration(instance)
                    answer = self._source_aborted(instance)
                    answer["step"] = "unknown"
                    return answer
                return {"step": "unknown"}
            if entry.get("instance") != instance or \
                    entry.get("role") != role:
                raise self._refuse(migration_id, "it is about another "
                                   "instance or role")
            if entry["step"] == "aborted":
                if role == _SOURCE and self.driver is not None:
                    return self._source_aborted(instance)
                return {"step": "aborted"}
            if entry["step"] in ("committed", "finished"):
                raise self._refuse(migration_id, "it is %s; it can no "
                                   "longer be aborted" % entry["step"])
            if role == _DESTINATION:
                self._abort_destination(entry)
                self._step_done("abort")
                return {"step": "aborted"}
            driver = self._driver()
            if entry["kind"] == "cold":
                driver.cancel_migration(instance)
            else:
                driver.abort_outgoing(instance)
            entry["step"] = "aborted"
            entry["payload"] = None
            self._save(entry)
            self._step_done("abort")
            return self._source_aborted(instance)

    def _source_aborted(self, instance: str) -> dict[str, Any]:
        """The source's answer to an abort: unlocked, and the epoch its
        copy carries (None: it holds none), which the conductor checks
        is still the instance's current one before it ends the
        migration without the destination's word."""
        try:
            epoch: int | None = self.vtpm_epoch(instance)
        except exception.VTPMNotFound:
            epoch = None
        return {"step": "aborted", "epoch": epoch}

    def _abort_destination(self, entry: dict[str, Any]) -> None:
        """Discard this destination's copy of ``entry``'s migration and
        its transport key; journal it aborted."""
        driver = self._driver()
        if entry["kind"] == "live":
            if entry["step"] in ("delivered", "received"):
                driver.abort_incoming(entry["instance"])
        else:
            # Only the copy this migration imported is discarded.
            self._discard_copy(entry["instance"], entry["epoch"])
        entry["step"] = "aborted"
        entry["transport"] = None
        entry["payload"] = None
        self._save(entry)
        self._replenish()
