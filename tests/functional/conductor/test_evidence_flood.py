"""A compromised host floods the evidence queue: pushes in names another
conductor owns (copies of its own genuine push, renamed, and invented
names) must not take the queue places of the hosts this conductor owns.

The threat: one host's bus credentials let it cast submit_evidence and
submit_evidence_batch in any host's name. The queue is bounded
(``max_queued_evidence``); were those casts queued, the owned hosts'
genuine pushes would be shed and the hosts would go unknown.
"""

from __future__ import annotations

import itertools

from trusted_pools.protocol.hash_ring import HashRing
from tests.functional.conductor.test_evidence_load import _drain
from tests.functional.conductor.test_evidence_load import _pool
from tests.functional.conductor.test_evidence_load import _statuses


def test_pushes_in_names_another_conductor_owns_take_no_queue_place(
        tmp_path):
    hosts = 8
    db, manager, agents, clock = _pool(tmp_path, hosts)
    manager.ring = HashRing({manager.host, "conductor-other"})
    manager.start_epoch()
    genuine = [w for w in agents.outbox
               if manager.ring.owner(w["host"]) == manager.host]
    assert genuine, "the ring gave this conductor no host"
    manager.max_queued_evidence = len(genuine)
    attacker = genuine[0]
    agents.outbox.clear()

    invented = (name for name in ("evil-%d" % i for i in itertools.count())
                if manager.ring.owner(name) != manager.host)
    foreign = [name for name in
               {h.name for h in agents.fleet.hosts}
               if manager.ring.owner(name) != manager.host]
    flood = [dict(attacker, host=name) for name in foreign]
    flood += [dict(attacker, host=next(invented))
              for _ in range(3 * len(genuine))]
    for wire in flood:
        manager.submit_evidence({}, wire)
    manager.submit_evidence_batch({}, flood)

    assert manager._queue.qsize() == 0
    assert manager.shed["not_owned"] == 2 * len(flood)
    for wire in genuine:
        manager.submit_evidence({}, wire)
    assert manager.shed["queue_full"] == 0
    _drain(manager)
    statuses = _statuses(db)
    owned = {w["host"] for w in genuine}
    assert {statuses[name] for name in owned} == {"trusted"}
    assert not set(statuses) - owned
