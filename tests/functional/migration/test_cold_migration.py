"""Cold vTPM migration end to end (issue 12), with the real parts: swtpm
host TPMs booted from real event logs, their agents and a conductor on the
real RabbitMQ, SQLite, the swtpm vTPM driver; and the migrations the
conductor or the destination refuses, each with its reason and the source
untouched: an untrusted, stale or below-level destination, a destination
that passes off another TPM's key or a software key as its transport key,
a source that seals for another host or replays an earlier migration's
payload, an old copy started after a commit, an agent that orders
another host's migration steps. Last, the live kind's key path with a
small driver subclass standing in for the QEMU mechanics (the real QEMU
end to end is assembled with the live driver): the per-migration swtpm
key reaches only an attested destination, sealed like the cold state.

The attacks are a compromised compute host's: it owns its agent, its
files and its bus credentials, not its TPM's keys or another host's."""

from __future__ import annotations

import base64
import os
import shutil

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.migration_harness import BusTap
from tests.functional.migration.test_transport_key import _certify_external
from trusted_pools import exception
from trusted_pools.agent import rpcapi as agent_rpcapi
from trusted_pools.protocol import agent_requests
from trusted_pools.protocol import keystore
from trusted_pools.protocol import vtpm_migration as proto
from trusted_pools.tpm import sealing
from trusted_pools.vtpm.driver import VTPMInfo, VTPMStatus
from trusted_pools.vtpm.swtpm import SwtpmDriver

pytestmark = [pytest.mark.swtpm, pytest.mark.rabbitmq, pytest.mark.slow]


def test_cold_migration_refusals_and_attacks(migration_pool, rabbit_url,
                                             monkeypatch):
    """One pool for both halves (a pool costs more than its migrations):
    the migration itself with its bus capture, then what is refused."""
    _cold_migration_moves_the_marker_and_erases_the_source(
        migration_pool, rabbit_url, monkeypatch)
    _refusals_and_attacks(migration_pool, monkeypatch)
    _live_key_path(migration_pool, rabbit_url)


def _forms(secret: bytes) -> list[bytes]:
    """How bytes could show up in a message: raw, base64, hex."""
    return [secret, base64.b64encode(secret), secret.hex().encode(),
            secret.hex().upper().encode()]


class _RecordingAESGCM:
    """The payload cipher, remembering each fresh key it made (to look
    for it on the bus afterwards)."""

    made: list[bytes] = []

    def __new__(cls, key: bytes):
        return _REAL_AESGCM(key)

    @classmethod
    def generate_key(cls, bit_length: int) -> bytes:
        key = _REAL_AESGCM.generate_key(bit_length)
        cls.made.append(key)
        return key


_REAL_AESGCM = proto.AESGCM


def _cold_migration_moves_the_marker_and_erases_the_source(
        mp, rabbit_url, monkeypatch):
    a, b, _ = mp.hosts
    marker = os.urandom(32)
    uuid = mp.create_marked_vtpm(a, marker)

    # What must never cross the bus in the clear: the vTPM state as the
    # source holds it, its state key, the payload key, the transport
    # key's private blob, the marker, the plaintext payload.
    state_dir = mp.driver(a).state_dir / uuid
    state_files = [p.read_bytes() for p in (state_dir / "tpm").iterdir()
                   if p.name.startswith("tpm2-00.")]
    state_key = mp.driver(a)._unwrap(
        uuid, (state_dir / "state-key.wrapped").read_bytes())
    seen: dict[str, list[bytes]] = {"private": [], "payload": [],
                                    "plaintext": []}
    monkeypatch.setattr(proto, "AESGCM", _RecordingAESGCM)
    real_encode = proto.encode_cold_state

    def encode(**kwargs):
        plaintext = real_encode(**kwargs)
        seen["plaintext"].append(plaintext)
        return plaintext
    monkeypatch.setattr(proto, "encode_cold_state", encode)

    def after(host):
        def hook(step):
            entry = max(mp.migrations(host)._entries(),
                        key=lambda e: e["updated_at"])
            if step == "prepare":
                seen["private"].append(base64.b64decode(
                    entry["transport"]["private"]))
            if step == "export":
                seen["payload"].append(base64.b64decode(
                    entry["payload"]["ciphertext"]))
        return hook
    mp.migrations(a).after_step = after(a)
    mp.migrations(b).after_step = after(b)

    # A notification per step (recorded on their way to the bus).
    notifier = mp.conductor.manager.notifier
    events: list[tuple[str, str]] = []
    for priority in ("info", "warn"):
        def record(context, event, payload, priority=priority,
                   real=getattr(notifier, priority)):
            events.append((priority, event))
            return real(context, event, payload)
        monkeypatch.setattr(notifier, priority, record)

    tap = BusTap(rabbit_url)
    try:
        done = mp.migrate(uuid, a, b)
        # Step notifications go out from their own sender thread.
        assert mp.coordinator.flush_notifications()
        captured = tap.drain()
    finally:
        tap.close()
    assert events == [("info", "vtpm_migration." + step) for step in (
        "requested", "attested", "key_certified", "exported", "imported",
        "committed", "completed")], events
    assert (done["step"], done["outcome"], done["epoch"]) == (
        "completed", "completed", 1), done
    assert done["transport_key_name"]

    # The tap saw the migration: the sealed payload went through it.
    assert seen["payload"] and base64.b64encode(seen["payload"][0]) \
        in captured
    secrets = [marker, state_key, *state_files, *seen["private"],
               *_RecordingAESGCM.made, *seen["plaintext"]]
    assert len(_RecordingAESGCM.made) == 1 and seen["private"] and \
        seen["plaintext"]
    for secret in secrets:
        for form in _forms(secret):
            assert form not in captured, "plaintext on the bus"
    # The plaintext state key is not in the payload's plaintext either:
    # it travels wrapped to the destination's binding key.
    assert not any(form in seen["plaintext"][0]
                   for form in _forms(state_key))

    # The marker reads back at the destination, which sealed the state to
    # its own TPM; the source copy is gone.
    assert mp.read_marker(b, uuid) == marker
    assert mp.driver(b).status(uuid).metadata["migration_epoch"] == 1
    with pytest.raises(exception.VTPMNotFound):
        mp.driver(a).status(uuid)
    assert not state_dir.exists()
    assert mp.migrations(a).epoch_floor(uuid) == 1
    # Each agent's journal holds it to what it did: no abort after the
    # commit, no repeat with other arguments.
    with pytest.raises(exception.MigrationStepRefused):
        mp.migrations(b).abort(done["id"], uuid, "destination")
    with pytest.raises(exception.MigrationStepRefused):
        mp.migrations(b).prepare(done["id"], uuid, a.name, "cold", 1,
                                 os.urandom(32))
    assert mp.migrations(b).commit(done["id"])["step"] == "committed"
    # And back: epoch 2.
    back = mp.migrate(uuid, b, a)
    assert (back["step"], back["epoch"]) == ("completed", 2), back
    assert mp.read_marker(a, uuid) == marker
    assert mp.pool.db.vtpm_epoch(uuid) == 2
    monkeypatch.undo()


def _untouched(mp, source, destination, uuid):
    """The source keeps its stopped, unlocked vTPM; the destination has
    none."""
    assert mp.driver(source).status(uuid).status is VTPMStatus.STOPPED
    with pytest.raises(exception.VTPMNotFound):
        mp.driver(destination).status(uuid)


def _refused(mp, uuid, source, destination, reason, **kw):
    done = mp.migrate(uuid, source, destination, **kw)
    assert (done["step"], done["outcome"]) == ("aborted", "aborted"), done
    assert reason in done["reason"], done["reason"]
    _untouched(mp, source, destination, uuid)
    return done


def _refusals_and_attacks(mp, monkeypatch):
    a, b, c = mp.hosts
    marker = os.urandom(32)
    uuid = mp.create_marked_vtpm(a, marker)
    latest = mp.pool.latest()
    level = latest[b.name].level
    assert latest[c.name].status == "untrusted"

    # --- the destination's trust ------------------------------------------
    done = _refused(mp, uuid, a, c, "host %s is untrusted" % c.name)
    assert mp.migrations(c).journal(done["id"]) is None  # never asked
    # Refused, a compromised destination refuses the rollback too: it was
    # never asked anything, so the row still ends (it would otherwise stay
    # active and bar every later migration of the source's instance).
    refusals = []

    def refuse_rollback(migration_id, instance, role):
        refusals.append(migration_id)
        raise exception.MigrationStepRefused(
            migration=migration_id, host=c.name, reason="compromised")
    with monkeypatch.context() as patch:
        patch.setattr(mp.migrations(c), "abort", refuse_rollback)
        done = _refused(mp, uuid, a, c, "host %s is untrusted" % c.name)
    assert "rollback not confirmed" not in done["reason"] and not refusals
    # Only a measured-boot policy: trusted below the top level.
    assert level < 4
    _refused(mp, uuid, a, b, "below the required level %d" % (level + 1),
             min_level=level + 1)
    with pytest.raises(exception.InvalidParameterValue):
        mp.start(uuid, a, b, min_level=5)
    # Stale: time passed without fresh evidence (the conductor's clock
    # moved on past the verdicts' expiry).
    real_clock = mp.coordinator.clock
    mp.coordinator.clock = lambda: real_clock() + 3600
    try:
        _refused(mp, uuid, a, b, "(stale)")
    finally:
        mp.coordinator.clock = real_clock

    # --- a compromised destination's transport key ------------------------
    # Relayed: another host's TPM made and certified it.
    dest = mp.migrations(b)
    monkeypatch.setattr(dest, "attester", c.agent.attester)
    monkeypatch.setattr(dest, "_spare", None)  # made by its own TPM
    done = _refused(mp, uuid, a, b, "not certified by its registered AK")
    monkeypatch.undo()
    assert mp.migrations(a).journal(done["id"]) is None  # source not asked
    # A software key it knows the private half of, loaded into its own TPM
    # and certified there by its real AK.
    real_prepare = dest.prepare

    def software_key(migration_id, instance, source, kind, epoch, nonce):
        answer = real_prepare(migration_id, instance, source, kind, epoch,
                              nonce)
        soft = rsa.generate_private_key(public_exponent=65537,
                                        key_size=2048)
        attest, signature, public = b.agent.attester.run_on_device(
            lambda dev: _certify_external(dev, b.agent.attester.ak_handle,
                                          soft, nonce))
        answer["transport_key"] = {
            "public": proto.b64(public), "certify_attest": proto.b64(attest),
            "certify_signature": proto.b64(signature)}
        return answer
    monkeypatch.setattr(dest, "prepare", software_key)
    _refused(mp, uuid, a, b, "fixedTPM")
    monkeypatch.undo()

    # --- a compromised source's payload -----------------------------------
    # Sealed for another host's TPM key (here: host C's binding key).
    nonce = os.urandom(32)
    c_key = c.agent.attester.binding_key(nonce)
    c_registration = mp.pool.db.get_registration(
        mp.pool.db.get_host_by_name(c.name).id)
    c_binding = sealing.check_binding_key(
        c_key.public, c_key.certify_attest, c_key.certify_signature,
        c_registration.ak_public, qualifying_data=nonce)
    real_seal = proto.seal
    monkeypatch.setattr(proto, "seal", lambda key, plaintext, **kw:
                        real_seal(c_binding, plaintext, **kw))
    _refused(mp, uuid, a, b, "does not unwrap")
    monkeypatch.undo()

    # A successful migration (its payload captured), and back.
    backup = mp.workdir / "backup"
    shutil.copytree(mp.driver(a).state_dir / uuid, backup)
    payloads = {}
    src = mp.migrations(a)
    real_export = src.export

    def capture(*args, **kwargs):
        answer = real_export(*args, **kwargs)
        payloads[args[0]] = answer["payload"]
        return answer
    monkeypatch.setattr(src, "export", capture)
    first = mp.migrate(uuid, a, b)
    assert first["step"] == "completed", first
    monkeypatch.undo()

    # An old copy started after the commit: the restored backup (epoch 0)
    # never runs, and cannot be migrated away either.
    shutil.copytree(backup, mp.driver(a).state_dir / uuid)
    with pytest.raises(exception.VTPMStale):
        mp.migrations(a).start_vtpm(uuid)
    assert mp.driver(a).status(uuid).status is VTPMStatus.STOPPED
    stale = mp.migrate(uuid, a, c)
    assert stale["step"] == "aborted"
    mp.driver(a).destroy(uuid)

    back = mp.migrate(uuid, b, a)
    assert back["step"] == "completed", back
    # The first migration's payload replayed by the source in a third:
    # the destination's new transport key does not open it (nor would its
    # associated data match).
    monkeypatch.setattr(src, "export", lambda *args, **kwargs: {
        "payload": payloads[first["id"]]})
    _refused(mp, uuid, a, b, "does not unwrap")
    monkeypatch.undo()

    # --- no lever for an agent ---------------------------------------------
    # With its agent-bus credentials a compromised host can put a request
    # in another agent's queue, signed with any key but a conductor's.
    forger = agent_rpcapi.AgentAPI(agent_requests.RequestSigner(
        keystore.generate_signing_key(), "conductor-a"), timeout=10)
    for method, args in (
            ("migration_commit", {"migration_id": first["id"]}),
            ("migration_abort", {"migration_id": back["id"],
                                 "instance": uuid, "role": "source"}),
            ("migration_export", {
                "migration_id": back["id"], "instance": uuid,
                "destination": c.name, "kind": "cold", "epoch": 3,
                "nonce": "AA==", "ak_public": "AA==", "transport_key": {},
                "binding_key": {}})):
        with pytest.raises(exception.AgentRequestRefused):
            getattr(forger, method)({}, a.name, **args)
    assert mp.migrations(a).journal(back["id"])["step"] == "committed"

    # After all this the marker is where the last commit put it.
    assert mp.read_marker(a, uuid) == marker
    rows = mp.coordinator.list(instance=uuid)
    assert [r["outcome"] for r in rows].count("completed") == 2
    assert mp.pool.db.vtpm_epoch(uuid) == 2
    # The conductor's Prometheus counters end where the rows did.
    registry = mp.conductor.manager.metrics.registry
    ended = mp.pool.db.list_vtpm_migrations(limit=1000)
    for outcome in ("completed", "aborted"):
        assert registry.get_sample_value(
            "trusted_pools_vtpm_migrations_total", {"outcome": outcome}
        ) == sum(1 for r in ended if r.step == outcome), outcome


class LiveDriver(SwtpmDriver):
    """The swtpm driver with the six live-migration calls recorded (what
    QEMU does with the key is the live driver's business)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.calls: list[tuple] = []
        self.keys: dict[str, bytes] = {}

    def live_migration_key(self, instance_uuid):
        key = os.urandom(32)
        self.keys[instance_uuid] = key
        self.calls.append(("live_migration_key", instance_uuid))
        return key

    def prepare_incoming(self, instance_uuid, *, migration_key, metadata):
        self.calls.append(("prepare_incoming", instance_uuid,
                           migration_key, dict(metadata)))
        return VTPMInfo(instance_uuid, VTPMStatus.MIGRATING,
                        reason="waiting for QEMU's incoming stream")

    def check_incoming(self, instance_uuid):
        self.calls.append(("check_incoming", instance_uuid))
        return VTPMInfo(instance_uuid, VTPMStatus.MIGRATING)

    def finish_incoming(self, instance_uuid, *, checked=False):
        self.calls.append(("finish_incoming", instance_uuid, checked))
        return VTPMInfo(instance_uuid, VTPMStatus.RUNNING)

    def finish_outgoing(self, instance_uuid):
        self.calls.append(("finish_outgoing", instance_uuid))

    def abort_incoming(self, instance_uuid):
        self.calls.append(("abort_incoming", instance_uuid))

    def abort_outgoing(self, instance_uuid):
        self.calls.append(("abort_outgoing", instance_uuid))
        return VTPMInfo(instance_uuid, VTPMStatus.RUNNING)


def _live_driver(mp, host) -> LiveDriver:
    real = mp.driver(host)
    driver = LiveDriver(real.state_dir, host.tpm.tcti, run_dir=real.run_dir,
                        setup_config=mp.setup_conf, recover=False,
                        host_runner=host.agent.attester.run_on_device)
    mp.migrations(host).driver = driver
    return driver


def _live_key_path(mp, rabbit_url):
    a, b, c = mp.hosts
    live = {h.name: _live_driver(mp, h) for h in mp.hosts}
    uuid = mp.create_marked_vtpm(a, os.urandom(32))
    api = mp.pool.api().conductors
    owner = api.owner(b.name)

    tap = BusTap(rabbit_url)
    try:
        started = mp.start(uuid, a, b, kind="live")
        # start returns at once; the destination is prepared and holds
        # the key when the migration reaches "delivered".
        prepared = mp.wait(started["id"], steps=("delivered", "aborted"))
        captured = tap.drain()
    finally:
        tap.close()
    assert prepared["step"] == "delivered", prepared
    key = live[a.name].keys[uuid]
    ((name, instance, delivered, metadata),) = [
        call for call in live[b.name].calls if call[0] == "prepare_incoming"]
    assert (instance, delivered) == (uuid, key)
    assert metadata["migration_epoch"] == 1
    # The source vTPM's own metadata came with the key.
    assert metadata["instance_uuid"] == uuid and metadata["driver"] == \
        "swtpm"
    for form in _forms(key):
        assert form not in captured, "the migration key on the bus"
    # The hypervisor's migration went through: complete.
    answer = api.client.complete_vtpm_migration({}, started["id"],
                                                conductor=owner)
    assert answer["step"] == "delivered"  # the work is on the worker
    done = mp.wait(started["id"])
    assert (done["step"], done["epoch"]) == ("completed", 1), done
    # The destination confirmed the state arrived before the commit
    # (1.5), so its finish after the commit is the checked one.
    finishing = [c for c in live[b.name].calls
                 if c[0] in ("check_incoming", "finish_incoming")]
    assert finishing == [("check_incoming", uuid),
                         ("finish_incoming", uuid, True)], finishing
    assert ("finish_outgoing", uuid) in live[a.name].calls
    assert mp.migrations(b).epoch_floor(uuid) == 1
    with pytest.raises(exception.ConcurrentUpdate):
        api.client.abort_vtpm_migration({}, started["id"], conductor=owner)

    # Not to an untrusted destination: no key is even made, and the
    # destination's driver is never asked.
    other = mp.create_marked_vtpm(a, os.urandom(32))
    refused = mp.migrate(other, a, c, kind="live")
    assert refused["outcome"] == "aborted" and "untrusted" in \
        refused["reason"], refused
    assert other not in live[a.name].keys
    assert not [call for call in live[c.name].calls]

    # Aborted before the commit (the hypervisor's migration failed): the
    # destination discards, the source carries on.
    started = mp.start(other, a, b, kind="live")
    assert mp.wait(started["id"], steps=("delivered", "aborted"))[
        "step"] == "delivered"
    api.client.abort_vtpm_migration(
        {}, started["id"], conductor=owner, reason="QEMU migration failed")
    aborted = mp.wait(started["id"])
    assert (aborted["outcome"], aborted["reason"]) == (
        "aborted", "QEMU migration failed"), aborted
    assert ("abort_incoming", other) in live[b.name].calls
    assert ("abort_outgoing", other) in live[a.name].calls
    assert mp.pool.db.vtpm_epoch(other) == 0
    for host in mp.hosts:
        mp.migrations(host).driver = mp.driver(host)
