"""The vtpm_migrations rows (SQLite): one active migration per instance,
epochs, compare-and-set steps, one commit per epoch, takeover of a dead
conductor's migration."""

from __future__ import annotations

import os
import uuid

import pytest

from trusted_pools import exception
from trusted_pools.db import api as db_api
from trusted_pools.db import migration


@pytest.fixture
def db(tmp_path):
    connection = db_api.Connection(db_api.make_context_manager(
        "sqlite:///%s" % (tmp_path / "rows.sqlite")))
    migration.upgrade(engine=connection.get_engine())
    try:
        yield connection
    finally:
        connection.dispose()


def _new(db, instance, conductor="conductor-a"):
    return db.create_vtpm_migration(instance, "compute-0", "compute-1",
                                    "cold", conductor, os.urandom(32))


def test_rows(db):
    instance = str(uuid.uuid4())
    first = _new(db, instance)
    assert (first.step, first.epoch) == ("requested", 1)
    with pytest.raises(exception.MigrationInProgress) as info:
        _new(db, instance)
    assert info.value.kwargs["migration"] == first.id
    # Compare and set: only from the expected step, only by its conductor.
    with pytest.raises(exception.ConcurrentUpdate):
        db.advance_vtpm_migration(first.id, ("attested",), "key_certified")
    with pytest.raises(exception.ConcurrentUpdate):
        db.advance_vtpm_migration(first.id, ("requested",), "attested",
                                  conductor="conductor-b")
    row = first
    for step in ("attested", "key_certified", "exported", "imported",
                 "committed"):
        row = db.advance_vtpm_migration(row.id, (row.step,), step,
                                        conductor="conductor-a")
    assert row.committed_at is not None and db.vtpm_epoch(instance) == 1
    row = db.advance_vtpm_migration(row.id, ("committed",), "completed")
    assert (row.outcome, row.finished_at is not None) == ("completed", True)

    # The next one is epoch 2; aborted, the epoch stays 1.
    second = _new(db, instance)
    assert second.epoch == 2
    aborted = db.advance_vtpm_migration(second.id, ("requested",),
                                        "aborted", reason="untrusted")
    assert (aborted.outcome, aborted.reason) == ("aborted", "untrusted")
    assert db.vtpm_epoch(instance) == 1
    third = _new(db, instance)
    assert third.epoch == 2

    # Taken over from a dead conductor, once.
    with pytest.raises(exception.ConcurrentUpdate):
        db.claim_vtpm_migration(third.id, "conductor-b", "conductor-x")
    claimed = db.claim_vtpm_migration(third.id, "conductor-b",
                                      "conductor-a")
    assert claimed.conductor == "conductor-b"
    with pytest.raises(exception.ConcurrentUpdate):
        db.claim_vtpm_migration(third.id, "conductor-c", "conductor-a")
    with pytest.raises(exception.ConcurrentUpdate):
        db.claim_vtpm_migration(first.id, "conductor-b", "conductor-a")

    listed = db.list_vtpm_migrations(instance=instance)
    assert [r.id for r in listed] == [third.id, second.id, first.id]
    assert [r.id for r in db.list_vtpm_migrations(active=True)] == \
        [third.id]
    with pytest.raises(exception.MigrationNotFound):
        db.get_vtpm_migration("nope")
