"""The conductor's evidence path at fleet scale and under overload.

Real conductor code (``ConductorManager``: submit_evidence, the batched
worker step, direct challenges, mark_missing) and a real SQLite database
migrated to head; the fleet is the benchmark's simulated hosts
(:mod:`bench.sim_agents`: software ECDSA P-256 AKs making TPM-shaped quotes
over the real GCE event log and a growing ima-ng list), enrolled directly
in the database, because a thousand swtpm instances do not fit a test. The
bus is left out: its handling of casts is tested in test_evidence_path.py;
here the pushes reach ``submit_evidence`` in the order the test chooses.

* One bad host in a batch of 1,000 (delivered 50 pushes per message, as a
  relay sends them): its evidence, which is rejected when
  verified alone, is rejected in the batch too (the host ends untrusted),
  and the other 999 hosts of the same batch are trusted.
* Overload: agents push faster than a conductor with a small budget
  verifies. The queue never holds more than its limit, what does not fit
  is shed, pushes that waited more than an interval are shed unverified,
  hosts whose evidence keeps being shed become unknown (never trusted on
  old evidence), and everything is trusted again when the load drops.
"""

from __future__ import annotations

import base64
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from bench import sim_agents
from bench.bench_conductor import _enroll, _policies
from trusted_pools.conductor import manager as conductor_manager
from trusted_pools.db import api as db_api
from trusted_pools.db import migration
from trusted_pools.protocol import keystore

pytestmark = [pytest.mark.slow]

SEED = 3


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_900_000_000.0

    def __call__(self) -> float:
        return self.now


class FleetAgents:
    """The manager's ``agents``: the epoch fanout reaches the simulated
    fleet, whose pushes wait in ``outbox`` until the test delivers them;
    a direct challenge is answered by the named host at once."""

    def __init__(self, hosts: int, image: sim_agents.Image) -> None:
        self.outbox: list[dict] = []
        self.fleet = sim_agents.Fleet(
            hosts, SEED, image, lambda context, conductor, wire:
            self.outbox.append(wire))
        self.image = image
        self.challenged: list[str] = []

    def start_epoch(self, context, conductor, epoch_id, epoch_value, banks,
                    members, spread=0.0, auth=None) -> None:
        self.fleet.start_epoch(context, conductor, epoch_id, epoch_value,
                               banks, members, spread)

    def get_evidence(self, context, host, nonce, banks, ima_start, full,
                     conductor=None) -> dict:
        """The host's answer to a direct challenge: whole event log and
        the IMA entries from ``ima_start``, quoted over ``nonce``."""
        self.challenged.append(host)
        sim = next(h for h in self.fleet.hosts if h.name == host)
        image, round_index = self.image, max(self.fleet._round, 0)
        values = image.pcrs(round_index)
        digest = sim_agents.hashlib.sha256(
            b"".join(values[p] for p in sim_agents.ALL_PCRS)).digest()
        sim.last_clock += 1000
        attest = sim_agents._attest(base64.b64decode(nonce),
                                    self.fleet._selection, digest,
                                    sim.last_clock)
        end = image.end(round_index)
        return {
            "version": 2, "host": host,
            "quote": base64.b64encode(attest).decode(),
            "signature": base64.b64encode(
                sim_agents._signature(sim.key, attest)).decode(),
            "pcrs": {"sha256": {str(p): v.hex() for p, v in values.items()}},
            "event_log": image.event_log_b64,
            "event_log_digest": image.event_log_digest,
            "ima": {"start": ima_start, "format": "binary",
                    "data": image.tail_b64(ima_start, end)}}


def _pool(tmp_path, hosts: int, **manager_kw: Any):
    db = db_api.Connection(db_api.make_context_manager(
        "sqlite:///%s" % (tmp_path / "pool.sqlite")))
    migration.upgrade(engine=db.get_engine())
    image = sim_agents.Image(ima_per_round=5, rounds=8)
    _enroll(db, hosts, SEED)
    boot, runtime = _policies(image)
    db.create_policy_version("load-boot", "measured_boot", boot, "test")
    db.create_policy_version("load-ima", "ima", runtime, "test")
    db.assign_policy("default", "load-boot")
    db.assign_policy("default", "load-ima")
    agents = FleetAgents(hosts, image)
    clock = FakeClock()
    manager = conductor_manager.ConductorManager(
        "conductor-load", db, keystore.load_or_create_signing_key(
            str(tmp_path / "signing-key.pem")), agents, None, b"",
        interval=60, unknown_after_missed=2, clock=clock, **manager_kw)
    manager.register()
    manager.refresh_ring()
    manager.spawn = lambda fn: fn()  # challenges answered in line
    return db, manager, agents, clock


def _statuses(db) -> dict[str, str]:
    names = {h.id: h.hostname for h in db.list_hosts()}
    return {names[v.host_id]: v.status for v in db.latest_verdicts()}


def _drain(manager) -> list[int]:
    sizes = []
    while True:
        n = manager.process_evidence()
        if not n:
            return sizes
        sizes.append(n)


def test_one_bad_host_in_a_batch_of_1000(tmp_path):
    hosts = 1000
    db, manager, agents, clock = _pool(tmp_path, hosts, batch_size=1000)
    # Host 417's evidence is signed by a key that is not its enrolled AK
    # (what a host whose TPM was swapped, or whose agent forges quotes,
    # sends): rejected when it is verified alone, see below.
    bad = agents.fleet.hosts[417]
    bad.key = ec.generate_private_key(ec.SECP256R1())
    manager.start_epoch()
    assert len(agents.outbox) == hosts
    # Delivered as a rack relay would: 50 hosts' pushes per message.
    for start in range(0, hosts, 50):
        manager.submit_evidence_batch({}, agents.outbox[start:start + 50])
    agents.outbox.clear()
    sizes = _drain(manager)
    # All 1,000 pushes were verified in one batch (one transaction); the
    # bad push earned its host a direct challenge, whose answer (also
    # signed by the wrong key) was judged in the next batch.
    assert sizes[0] == hosts
    assert agents.challenged == [bad.name]
    statuses = _statuses(db)
    assert statuses.pop(bad.name) == "untrusted"
    assert len(statuses) == hosts - 1
    assert set(statuses.values()) == {"trusted"}
    bad_verdict = [v for v in db.latest_verdicts()
                   if v.host_id == db.get_host_by_name(bad.name).id][0]
    assert any("InvalidSignature" in str(r) or "signature" in str(r).lower()
               for r in bad_verdict.reasons), bad_verdict.reasons

    # The same evidence verified alone, in a batch of one: rejected alike.
    clock.now += 60
    manager.batch_size = 1
    manager.start_epoch()
    for wire in agents.outbox:
        if wire["host"] == bad.name:
            manager.submit_evidence({}, wire)
    agents.outbox.clear()
    before = len(agents.challenged)
    sizes = _drain(manager)
    assert sizes and set(sizes) == {1}
    assert agents.challenged[before:] == [bad.name]
    assert _statuses(db)[bad.name] == "untrusted"


def test_overload_sheds_predictably_and_recovers(tmp_path):
    hosts, limit = 120, 50
    db, manager, agents, clock = _pool(tmp_path, hosts, batch_size=25,
                                       max_queued_evidence=limit)
    names = [h.name for h in agents.fleet.hosts]
    deepest = [0]
    submit = manager.submit_evidence

    def watched_submit(context, wire):
        submit(context, wire)
        deepest[0] = max(deepest[0], manager._queue.qsize())
    manager.submit_evidence = watched_submit

    def epoch_keeping_up() -> None:
        """Pushes delivered no faster than the conductor verifies."""
        manager.start_epoch()
        while agents.outbox:
            for wire in agents.outbox[:limit]:
                manager.submit_evidence({}, wire)
            del agents.outbox[:limit]
            _drain(manager)

    # Steady state within budget: every host trusted, nothing shed.
    epoch_keeping_up()
    assert set(_statuses(db).values()) == {"trusted"}
    assert len(_statuses(db)) == hosts
    assert manager.shed == {"queue_full": 0, "waited_too_long": 0}
    manager.mark_missing()  # starts the silence clocks

    # Overload: each epoch every agent pushes at once, faster than the
    # conductor verifies. The queue holds `limit`; the rest is shed.
    shed_hosts: set[str] = set()
    for epoch in range(3):
        clock.now += 60
        manager.start_epoch()
        for wire in agents.outbox:
            manager.submit_evidence({}, wire)
        queued = names[:limit]          # the fleet pushes in host order
        shed_hosts |= set(names[limit:])
        agents.outbox.clear()
        assert manager._queue.qsize() == limit
        if epoch == 1:
            # This time the conductor falls a whole interval behind: what
            # waited that long is shed unverified, not judged on a quote
            # of an epoch that is over.
            clock.now += 61
            _drain(manager)
            assert manager.shed["waited_too_long"] == limit
            shed_hosts |= set(queued)
        else:
            _drain(manager)
        manager.mark_missing()
    assert deepest[0] == limit
    assert manager.shed["queue_full"] == 3 * (hosts - limit)
    statuses = _statuses(db)
    # Hosts whose evidence was shed for more than unknown_after_missed
    # intervals are unknown; none is trusted on old evidence: every
    # trusted verdict was issued in the last epoch.
    for name in names[limit:]:
        assert statuses[name] == "unknown", (name, statuses[name])
    trusted = [v for v in db.latest_verdicts() if v.status == "trusted"]
    assert trusted
    for v in trusted:
        assert v.issued_at.timestamp() >= clock.now - 1, v

    # The load drops. A host whose pushes were shed left IMA entries
    # unsent-for-good: its next push leaves out what the conductor lacks
    # and earns a direct challenge (at most MAX_CHALLENGES_IN_FLIGHT at a
    # time), so recovery takes a few epochs, each within budget.
    for recovery in range(1, 6):
        clock.now += 60
        epoch_keeping_up()
        if set(_statuses(db).values()) == {"trusted"}:
            break
    assert set(_statuses(db).values()) == {"trusted"}, recovery
    assert manager._queue.qsize() == 0
    assert deepest[0] == limit


def test_a_relay_batch_is_one_push_per_item_and_bounded(tmp_path):
    """A batch message is refused whole if it is not a list or is over
    MAX_EVIDENCE_BATCH; otherwise each item is queued as one push (counted
    against the queue bound), a malformed item failing alone (one without
    a host name is dropped before it takes a place)."""
    db, manager, agents, clock = _pool(tmp_path, 4,
                                       max_queued_evidence=3)
    manager.start_epoch()
    good = list(agents.outbox)
    agents.outbox.clear()
    manager.submit_evidence_batch({}, {"host": "sim-000000"})
    too_many = conductor_manager.MAX_EVIDENCE_BATCH + 1
    manager.submit_evidence_batch({}, [good[0]] * too_many)
    assert manager._queue.qsize() == 0
    assert manager.shed["batch_refused"] == 2
    manager.submit_evidence_batch({}, ["not evidence", *good])
    assert manager.shed["no_host"] == 1
    assert manager._queue.qsize() == 3          # the bound holds
    assert manager.shed["queue_full"] == 1       # the last good push
    _drain(manager)
    statuses = _statuses(db)
    assert statuses == {"sim-000000": "trusted", "sim-000001": "trusted",
                        "sim-000002": "trusted"}
