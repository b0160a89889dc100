"""A direct challenge's answer is verified before the pushes queued ahead
of it.

A compromised host can keep its conductor's worker busy with forged
pushes in every enrolled name (two queue places each, a thousand pushes
a message); the honest hosts whose own pushes then find their places
taken are verified through the direct challenges the forged pushes earn
them. At most MAX_CHALLENGES_IN_FLIGHT challenges exist, and each holds
its place until its answer is verified: an answer waiting behind the
whole flood would hold it for as long as the worker takes to verify the
flood, and the challenges, the honest hosts' only way to a verdict, would
be starved. Answers (bounded in number) are taken first.
"""

from __future__ import annotations

import oslo_messaging as messaging

from tests.functional.conductor.test_enrollment_reset import _db, _enroll
from tests.functional.conductor.test_enrollment_reset import _manager


class SilentAgents:
    """The agent bus as seen by the challenge thread: no answer."""

    def get_evidence(self, *args, **kwargs):
        raise messaging.MessagingTimeout("no answer")


def test_an_answer_is_taken_before_a_flood_of_forged_pushes(tmp_path):
    db = _db(tmp_path)
    manager = _manager(db, "conductor-a")
    manager.agents = SilentAgents()
    names = ["host-%02d" % i for i in range(20)]
    for name in names:
        _enroll(db, name, name.encode())
    # The attacker's flood: two forged pushes in every enrolled name.
    for name in names:
        for _ in range(2):
            manager.submit_evidence({}, {"version": 1, "host": name,
                                         "epoch_id": "forged"})
    assert manager._queue.qsize() == 2 * len(names)
    # A challenge of host-00 is in flight; its (silent) answer comes back
    # behind the flood.
    manager._in_flight.add("host-00")
    manager._ask("host-00", b"\0" * 32, manager.order.next(), 0)
    manager.batch_size = 1
    manager.process_evidence()
    assert manager._in_flight == set(), "the answer waited behind the flood"
    # The pushes all wait for the worker still, in their order (the
    # first one was host-00's, the last one host-19's).
    assert manager._queue.qsize() == 2 * len(names)
    manager.batch_size = 2 * len(names)
    taken = [item.host for item in manager._take_batch(0)]
    assert taken == [name for name in names for _ in range(2)]
