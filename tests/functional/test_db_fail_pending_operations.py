"""``fail_pending_operations``: what a restarted conductor left pending is
failed, its exclusive locks freed, and nothing of another conductor's is
touched (one conductor's restart must not fail another's work)."""

from __future__ import annotations

import pytest

from trusted_pools import exception
from trusted_pools.api import operations
from tests.db_fixtures import *  # noqa: F401,F403 (fixtures)


def test_restart_fails_only_its_own_pending_work(db_api):
    enroll = db_api.create_operation("compute-1", "enroll", "c-a",
                                     exclusive=True)
    attest = db_api.create_operation("compute-2", "attest", "c-a")
    done = db_api.create_operation("compute-3", "attest", "c-a")
    db_api.finish_operation(done.id, result={"ok": True})
    other = db_api.create_operation("compute-4", "enroll", "c-b",
                                    exclusive=True)
    with pytest.raises(exception.OperationInProgress):
        db_api.create_operation("compute-1", "enroll", "c-a",
                                exclusive=True)

    assert db_api.fail_pending_operations("c-a", "conductor restarted") == 2

    for failed in (enroll, attest):
        row = db_api.get_operation(failed.id)
        assert row.state == "failed"
        error = operations.error_of(row)
        assert isinstance(error, exception.TemporaryFailure)
        assert error.message == ("Temporary failure, retry later: "
                                 "conductor restarted")
    assert db_api.get_operation(done.id).state == "done"
    assert db_api.get_operation(done.id).result == {"ok": True}
    assert db_api.get_operation(other.id).state == "pending"
    # The enroll lock is free again; the other conductor's still holds.
    db_api.create_operation("compute-1", "enroll", "c-a", exclusive=True)
    with pytest.raises(exception.OperationInProgress):
        db_api.create_operation("compute-4", "enroll", "c-a",
                                exclusive=True)
