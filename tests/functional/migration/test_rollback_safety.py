"""A vTPM migration's rollback and commit under a compromised destination
and crashes (issue 12), with the real parts: swtpm host TPMs, their
agents and a conductor on the real RabbitMQ, SQLite, the swtpm driver.

* A destination that was prepared and imported the state, then refuses
  or ignores its rollback for ever (a compromised agent: it owns its
  answers on the bus, not its TPM's keys): the migration still ends,
  aborted, once the source confirmed it unlocked and kept the current
  epoch; the destination's leftover copy refuses to start, nothing can
  commit it, and the instance migrates again (to that same host: its
  next prepare supersedes the leftover).
* Live: the destination confirms the state arrived *before* the commit
  (agent RPC 1.5). A crash between the commit and the destination's
  finish loses nothing (the finish after the commit is the checked one,
  so a hypervisor that let go of the vTPM since does not block it), and
  a state that never arrived aborts instead of committing a vTPM that
  does not exist.

The attacks are a compromised compute host's: it owns its agent, its
files and its bus credentials, not its TPM's keys or another host's."""

from __future__ import annotations

import os
import threading
import time

import pytest

from tests.migration_harness import build_pool
from trusted_pools import exception
from trusted_pools.protocol import vtpm_migration as proto
from trusted_pools.vtpm.driver import VTPMInfo, VTPMStatus
from trusted_pools.vtpm.swtpm import SwtpmDriver

pytestmark = [pytest.mark.swtpm, pytest.mark.rabbitmq, pytest.mark.slow]


@pytest.fixture
def pair(tmp_path, rabbit_conf, swtpm_pool, swtpm_ca):
    """Two trusted hosts."""
    yield from build_pool(tmp_path, rabbit_conf, swtpm_pool, swtpm_ca, 2)


class Crash(RuntimeError):
    """The injected fault."""


def _crash_after(mp, step):
    """The conductor's worker dies right after it recorded ``step`` (the
    resume job takes the migration over, within a second)."""
    fired = threading.Event()

    def hook(migration_id, name):
        if name == step and not fired.is_set():
            fired.set()
            raise Crash("injected: the worker died after %s" % name)
    mp.coordinator.after_step = hook
    return fired


def test_compromised_destination_cannot_hold_the_rollback(pair, monkeypatch):
    mp = pair
    a, b = mp.hosts
    marker = os.urandom(32)
    uuid = mp.create_marked_vtpm(a, marker)
    attacker = mp.migrations(b)
    asked = []

    def refuse(migration_id, instance, role):
        asked.append(("refused", migration_id))
        raise exception.MigrationStepRefused(
            migration=migration_id, host=b.name, reason="no")

    def ignore(migration_id, instance, role):
        # No answer at all: longer than the conductor waits for one.
        asked.append(("ignored", migration_id))
        time.sleep(5)
        return {"step": "aborted"}

    def lie(migration_id, instance, role):
        # Anything at all: claims it committed, at another epoch.
        asked.append(("lied", migration_id))
        return {"step": "committed", "epoch": 99, "instance": "x"}

    leftovers = []
    for behaviour in (refuse, ignore, lie):
        mp.ensure_trusted()
        fired = _crash_after(mp, "imported")
        with monkeypatch.context() as patch:
            patch.setattr(attacker, "abort", behaviour)
            started = mp.start(uuid, a, b)
            assert fired.wait(60), "the migration never reached imported"
            mp.coordinator.after_step = None
            done = mp.wait(started["id"], timeout=60)
        assert (done["step"], done["outcome"]) == ("aborted", "aborted"), \
            done
        if behaviour is not lie:
            assert "destination rollback not confirmed by %s" % b.name \
                in done["reason"], done["reason"]
        assert (behaviour.__name__.replace("refuse", "refused").replace(
            "ignore", "ignored").replace("lie", "lied"),
            started["id"]) in asked
        # The source unlocked and kept the current epoch: its copy runs,
        # with the marker.
        assert mp.driver(a).status(uuid).status is VTPMStatus.STOPPED
        assert mp.migrations(a).vtpm_epoch(uuid) == 0
        assert mp.read_marker(a, uuid) == marker
        assert mp.pool.db.vtpm_epoch(uuid) == 0
        # The destination's leftover (the import of epoch 1) is there and
        # refuses to start: the attacker kept its journal entry
        # "imported", and even without it (a lost entry) its epoch is
        # newer than any this host saw committed.
        assert mp.driver(b).status(uuid).metadata[
            proto.EPOCH_METADATA_KEY] == 1
        assert attacker.journal(started["id"])["step"] == "imported"
        with pytest.raises(exception.VTPMInvalidState):
            attacker.start_vtpm(uuid)
        with pytest.raises(exception.VTPMInvalidState,
                           match="newer than the epoch 0 committed"):
            attacker.start_vtpm(uuid)
        if behaviour is refuse:
            # Lost entry: the next prepare finds only the copy (the
            # later rounds' prepares find the entry and roll it back).
            attacker._path(started["id"]).unlink()
            with pytest.raises(exception.VTPMInvalidState,
                               match="newer than the epoch 0 committed"):
                attacker.start_vtpm(uuid)
        leftovers.append(started["id"])
        # Nothing commits the aborted row: not the database, not the
        # live completion.
        with pytest.raises(exception.ConcurrentUpdate):
            mp.pool.db.advance_vtpm_migration(
                started["id"], proto.PRE_COMMIT_STEPS, "committed")
        with pytest.raises(exception.InvalidParameterValue):
            mp.coordinator.complete_live({}, started["id"])
        assert mp.coordinator.list(instance=uuid, active=True) == []

    # The instance is not barred: it migrates again, to the same host
    # (which stopped attacking); the new prepare supersedes the leftover.
    mp.ensure_trusted()
    again = mp.migrate(uuid, a, b)
    assert (again["outcome"], again["epoch"]) == ("completed", 1), again
    assert [(attacker.journal(m) or {}).get("step") for m in leftovers] == \
        [None, "aborted", "aborted"]
    assert mp.read_marker(b, uuid) == marker
    with pytest.raises(exception.VTPMNotFound):
        mp.driver(a).status(uuid)


def test_source_unconfirmed_keeps_the_row(pair, monkeypatch):
    """The other side of the rule: a rollback the *source* did not
    confirm (it may still hold its only copy locked) keeps the row active
    and is repeated until it does; a source answering another epoch than
    the current one does not confirm it either."""
    mp = pair
    a, b = mp.hosts
    uuid = mp.create_marked_vtpm(a, os.urandom(32))
    source = mp.migrations(a)
    real_abort = source.abort
    answers = iter([{"step": "aborted", "epoch": 7}, None])

    def flaky(migration_id, instance, role):
        answer = next(answers, "real")
        if answer is None:
            raise exception.TemporaryFailure(reason="busy")
        if answer == "real":
            return real_abort(migration_id, instance, role)
        return answer
    fired = _crash_after(mp, "exported")
    with monkeypatch.context() as patch:
        patch.setattr(source, "abort", flaky)
        started = mp.start(uuid, a, b)
        assert fired.wait(60)
        mp.coordinator.after_step = None
        done = mp.wait(started["id"], timeout=60)
    assert done["outcome"] == "aborted", done
    assert next(answers, "spent") == "spent"  # both bad answers were seen
    assert mp.driver(a).status(uuid).status is VTPMStatus.STOPPED
    with pytest.raises(exception.VTPMNotFound):
        mp.driver(b).status(uuid)


class _Hypervisor:
    """What a destination QEMU would hold: whether the incoming stream
    brought the state and whether it still holds the vTPM."""

    def __init__(self) -> None:
        self.arrived = True
        self.attached = True


class LiveStandIn(SwtpmDriver):
    """The swtpm driver with the live-migration mechanics QEMU drives
    replaced by :class:`_Hypervisor`'s two facts (the real QEMU path is
    tests/functional/migration/test_live_e2e.py); the checks are the
    real driver's rules: checked before the commit only while attached,
    finished after it from the state alone."""

    def __init__(self, *args, hypervisor: _Hypervisor, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.hypervisor = hypervisor
        self.calls: list[tuple] = []

    def live_migration_key(self, instance_uuid):
        return os.urandom(32)

    def prepare_incoming(self, instance_uuid, *, migration_key, metadata):
        self.calls.append(("prepare_incoming", instance_uuid))
        return VTPMInfo(instance_uuid, VTPMStatus.MIGRATING)

    def _received(self, operation, attached):
        if not self.hypervisor.arrived:
            raise exception.VTPMStateUnusable(
                instance="x", reason="no state file: it never arrived")
        if attached and not self.hypervisor.attached:
            raise exception.VTPMInvalidState(
                instance="x", state="not attached", operation=operation,
                expected="held by the destination hypervisor")

    def check_incoming(self, instance_uuid):
        self.calls.append(("check_incoming", instance_uuid))
        self._received("check_incoming", True)
        return VTPMInfo(instance_uuid, VTPMStatus.MIGRATING)

    def finish_incoming(self, instance_uuid, *, checked=False):
        self.calls.append(("finish_incoming", instance_uuid, checked))
        self._received("finish_incoming", not checked)
        return VTPMInfo(instance_uuid, VTPMStatus.RUNNING)

    def finish_outgoing(self, instance_uuid):
        self.calls.append(("finish_outgoing", instance_uuid))

    def abort_incoming(self, instance_uuid):
        self.calls.append(("abort_incoming", instance_uuid))

    def abort_outgoing(self, instance_uuid):
        self.calls.append(("abort_outgoing", instance_uuid))
        return VTPMInfo(instance_uuid, VTPMStatus.RUNNING)


def test_live_commit_only_after_the_state_arrived(pair):
    mp = pair
    a, b = mp.hosts
    hypervisor = _Hypervisor()
    live = {}
    for host in (a, b):
        real = mp.driver(host)
        live[host.name] = LiveStandIn(
            real.state_dir, host.tpm.tcti, run_dir=real.run_dir,
            setup_config=mp.setup_conf, recover=False,
            host_runner=host.agent.attester.run_on_device,
            hypervisor=hypervisor)
        mp.migrations(host).driver = live[host.name]
    api = mp.pool.api().conductors
    owner = api.owner(b.name)

    def delivered(uuid):
        started = mp.start(uuid, a, b, kind="live")
        assert mp.wait(started["id"], steps=("delivered", "aborted"))[
            "step"] == "delivered"
        return started["id"]

    # 1. The stream never brought the state: no commit; aborted, the
    # source carries on (before 1.5 this committed, then the
    # destination's finish failed for ever with the only copy locked on
    # the source, and no rollback is allowed after a commit).
    mp.ensure_trusted()
    uuid = mp.create_marked_vtpm(a, os.urandom(32))
    hypervisor.arrived = False
    migration = delivered(uuid)
    api.client.complete_vtpm_migration({}, migration, conductor=owner)
    done = mp.wait(migration)
    assert done["outcome"] == "aborted" and "never arrived" in \
        done["reason"], done
    assert mp.pool.db.vtpm_epoch(uuid) == 0
    assert ("abort_outgoing", uuid) in live[a.name].calls
    assert ("abort_incoming", uuid) in live[b.name].calls

    # 2. Arrived and checked; the conductor dies right after the commit,
    # before the destination's finish; meanwhile the guest stopped (the
    # hypervisor let go of the vTPM). The restarted conductor finishes:
    # the destination's finish is the checked one, the source's copy is
    # erased only after it.
    hypervisor.arrived = True
    mp.ensure_trusted()
    migration = delivered(uuid)
    fired = _crash_after(mp, "committed")
    api.client.complete_vtpm_migration({}, migration, conductor=owner)
    assert fired.wait(60)
    hypervisor.attached = False
    assert mp.migrations(b).journal(migration)["step"] == "received"
    assert ("finish_outgoing", uuid) not in live[a.name].calls
    mp.restart_conductor()
    for host in (a, b):
        mp.migrations(host).driver = live[host.name]
    done = mp.wait(migration, timeout=60)
    assert (done["outcome"], done["epoch"]) == ("completed", 1), done
    assert ("finish_incoming", uuid, True) in live[b.name].calls
    assert not [c for c in live[b.name].calls
                if c[0] == "finish_incoming" and not c[2]]
    assert ("finish_outgoing", uuid) in live[a.name].calls
    assert mp.migrations(b).epoch_floor(uuid) == 1

    # 3. Back, and the destination's check gets no answer once (longer
    # than the conductor waits): QEMU's migration completed, so the guest
    # may run there already; the conductor asks again rather than roll
    # the vTPM back at the first lost message, and completes.
    hypervisor.attached = True
    mp.ensure_trusted()
    other = mp.create_marked_vtpm(a, os.urandom(32))
    migration = delivered(other)
    real_check = live[b.name].check_incoming
    slow = []

    def check_once_slowly(instance_uuid):
        if not slow:
            slow.append(instance_uuid)
            time.sleep(5)
        return real_check(instance_uuid)
    live[b.name].check_incoming = check_once_slowly
    api.client.complete_vtpm_migration({}, migration, conductor=owner)
    done = mp.wait(migration, timeout=60)
    assert (done["outcome"], done["epoch"]) == ("completed", 1), done
    assert slow == [other]
    assert ("abort_incoming", other) not in live[b.name].calls
    for host in (a, b):
        mp.migrations(host).driver = mp.driver(host)


def _deep_attest(mp, host, uuid, chain):
    """The guest's vTPM quote (as tests/functional/vtpm's Guest makes it)
    over a fresh conductor nonce, presented with ``chain`` for deep
    attestation on ``host``; the conductor's answer."""
    import base64
    import types

    from tests.functional.vtpm.test_deep_attestation import Guest
    manager = mp.conductor.manager
    driver = mp.driver(host)
    nonce = base64.b64decode(manager.challenge_instance({}, uuid)["nonce"])
    driver.start(uuid, host_access=True)
    try:
        evidence = Guest(types.SimpleNamespace(tcti=driver.tcti(uuid)),
                         {"vtpm_chain": chain}, uuid).quote(nonce)
    finally:
        driver.stop(uuid)
    (entry,) = manager.deep_attest({}, host.name, [evidence])
    return entry


def test_deep_attestation_follows_the_vtpm(pair, monkeypatch):
    """On commit the destination's vTPM CA certifies the migrated vTPM
    (same AK, same EK): deep attestation of the instance on the
    destination chains to it; the chain to the source is refused there
    (it leads to another host), and so is a leftover copy of an aborted
    migration that a compromised destination starts behind its agent's
    back (it still carries the source's chain)."""
    from trusted_pools.protocol import vtpm_binding
    mp = pair
    a, b = mp.hosts
    uuid = mp.create_marked_vtpm(a, os.urandom(32))
    source_chain = mp.driver(a).status(uuid).metadata["provisioner"]["vtpm_chain"]
    ok = _deep_attest(mp, a, uuid, source_chain)
    assert "error" not in ok and ok["verdict"]["status"] == "trusted", ok

    # An aborted migration whose destination ignored the rollback: the
    # attacker starts its leftover directly with the driver.
    fired = _crash_after(mp, "imported")
    with monkeypatch.context() as patch:
        patch.setattr(mp.migrations(b), "abort", lambda *a, **k: (
            _ for _ in ()).throw(exception.MigrationStepRefused(
                migration="x", host=b.name, reason="no")))
        started = mp.start(uuid, a, b)
        assert fired.wait(60)
        mp.coordinator.after_step = None
        assert mp.wait(started["id"])["outcome"] == "aborted"
    leftover = mp.driver(b).status(uuid).metadata["provisioner"]["vtpm_chain"]
    assert leftover == source_chain
    refused = _deep_attest(mp, b, uuid, leftover)
    assert refused["error"]["type"] == "VMChainForeignHost" and \
        "leads to another host" in refused["error"]["reason"], refused

    # The migration that commits: the vTPM's chain names the destination
    # now, for the very AK and EK the vTPM holds.
    mp.ensure_trusted()
    done = mp.migrate(uuid, a, b)
    assert done["outcome"] == "completed", done
    chain = mp.driver(b).status(uuid).metadata["provisioner"]["vtpm_chain"]
    registered_ak = mp.conductor.manager._state(b.name).ak
    bound = vtpm_binding.verify_chain(b.name, registered_ak, chain, uuid)
    old = vtpm_binding.verify_chain(
        a.name, mp.conductor.manager._state(a.name).ak, source_chain, uuid)
    assert (bound.ak.raw, bound.ek_sha256) == (old.ak.raw, old.ek_sha256)
    ok = _deep_attest(mp, b, uuid, chain)
    assert "error" not in ok and ok["verdict"]["status"] == "trusted", ok
    stale = _deep_attest(mp, b, uuid, source_chain)
    assert stale["error"]["type"] == "VMChainForeignHost" and \
        "leads to another host" in stale["error"]["reason"], stale
    with pytest.raises(vtpm_binding.VTPMChainForeignHost):
        vtpm_binding.verify_chain(b.name, registered_ak, source_chain, uuid)
