"""Instance policies in the database, on every backend (SQLite,
PostgreSQL, MariaDB): versions, assignment to images and instances (the
instance's wins), delete refused while in use, the image kept with the
challenge, and the conductor's choice of a batch's policies from the
challenges (an image is applied only to the instance its challenge was
issued for)."""

from __future__ import annotations

import hashlib
import uuid

import pytest

from tests.db_fixtures import *  # noqa: F401,F403 (fixtures)
from trusted_pools import exception
from trusted_pools.conductor.instance_challenges import DatabaseChallenges
from trusted_pools.db import api
from trusted_pools.verifier import deep

GOOD = {"sha256": {"0": ["00" * 32]}}
OTHER = {"sha256": {"0": ["11" * 32]}}


def _id() -> str:
    return str(uuid.uuid4())


def test_versions_and_precedence(db_api: api.Connection):
    first = db_api.create_instance_policy_version("p", 3, GOOD, "admin")
    second = db_api.create_instance_policy_version("p", 2, OTHER, "admin")
    assert (first.version, second.version) == (1, 2)
    assert db_api.get_instance_policy("p").pcrs == OTHER
    assert db_api.get_instance_policy("p", 1).level == 3
    image, pinned, follows, bare = _id(), _id(), _id(), _id()
    db_api.assign_instance_policy("image", image, "p")
    db_api.assign_instance_policy("instance", pinned, "p", 1)
    chosen = db_api.instance_policies_for(
        [(pinned, image), (follows, image), (bare, None), (bare, _id())])
    assert chosen[0].version == 1          # the instance's own wins
    assert chosen[1].version == 2          # the image's, latest
    assert chosen[2:] == [None, None]      # held to nothing
    third = db_api.create_instance_policy_version("p", 3, GOOD, "admin")
    assert db_api.instance_policies_for([(follows, image)])[
        0].version == third.version


def test_bad_writes_change_nothing(db_api: api.Connection):
    with pytest.raises(exception.InvalidParameterValue):
        db_api.create_instance_policy_version("p", 4, GOOD, "admin")
    with pytest.raises(exception.InstancePolicyNotFound):
        db_api.assign_instance_policy("image", _id(), "missing")
    db_api.create_instance_policy_version("p", 3, GOOD, "admin")
    with pytest.raises(exception.InstancePolicyNotFound):
        db_api.assign_instance_policy("image", _id(), "p", 9)
    with pytest.raises(exception.InvalidParameterValue):
        db_api.assign_instance_policy("host", _id(), "p")
    # Past the INTEGER column (the driver's OverflowError was untyped).
    with pytest.raises(exception.InvalidParameterValue):
        db_api.assign_instance_policy("image", _id(), "p", 2 ** 31)
    assert db_api.list_instance_policy_assignments() == []


def test_delete_refused_while_in_use(db_api: api.Connection):
    db_api.create_instance_policy_version("p", 3, GOOD, "admin")
    db_api.create_instance_policy_version("p", 3, OTHER, "admin")
    image = _id()
    db_api.assign_instance_policy("image", image, "p", 1)
    with pytest.raises(exception.InstancePolicyInUse):
        db_api.delete_instance_policy("p", 2)
    assert len(db_api.list_instance_policies("p")) == 2
    db_api.unassign_instance_policy("image", image)
    with pytest.raises(exception.InstancePolicyAssignmentNotFound):
        db_api.unassign_instance_policy("image", image)
    assert db_api.delete_instance_policy("p", 2) == 1
    assert db_api.delete_instance_policy("p") == 1
    with pytest.raises(exception.InstancePolicyNotFound):
        db_api.delete_instance_policy("p")


def test_batch_policies_come_from_the_challenges(db_api: api.Connection):
    store = DatabaseChallenges(db_api, "c-1")
    db_api.create_instance_policy_version("strict", 3, OTHER, "admin")
    db_api.create_instance_policy_version("lenient", 2, GOOD, "admin")
    strict_image, lenient_image = _id(), _id()
    db_api.assign_instance_policy("image", strict_image, "strict")
    db_api.assign_instance_policy("image", lenient_image, "lenient")
    mine, theirs = _id(), _id()
    named = store.issue(mine, "compute-a", image=strict_image)
    unnamed = store.issue(mine, "compute-a")
    foreign = store.issue(theirs, "compute-a", image=lenient_image)
    stored = db_api.instance_challenges([hashlib.sha256(named).hexdigest()])
    assert [c.image for c in stored.values()] == [strict_image]
    policies = store.policies_for([(mine, named), (mine, unnamed),
                                   (mine, foreign), (theirs, foreign)])
    assert [None if p is None else p.label for p in policies] == [
        "strict@1", None, None, "lenient@1"]
    assert isinstance(policies[0], deep.InstancePolicy)
    with pytest.raises(exception.InvalidParameterValue):
        store.issue(mine, "compute-a", image="not-a-uuid")


def test_an_assignment_to_a_missing_policy_fails_closed(
        db_api: api.Connection):
    """An assignment left naming a policy that is gone (written around
    the API, or by a race the row locks now prevent) is not read as "no
    policy" (vTPM-bound, measured: trusted): the batch is refused."""
    import sqlalchemy as sa
    from trusted_pools.db import models
    instance = _id()
    db_api.create_instance_policy_version("p", 3, GOOD, "admin")
    db_api.assign_instance_policy("instance", instance, "p", 1)
    with db_api._writer() as session:
        session.execute(sa.delete(models.InstancePolicy))
    with pytest.raises(exception.InstancePolicyNotFound):
        db_api.instance_policies_for([(instance, None)])
    # Instances without an assignment are unaffected.
    assert db_api.instance_policies_for([(_id(), None)]) == [None]
