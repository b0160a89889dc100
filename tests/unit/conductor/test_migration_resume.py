"""The conductor's resume job and rollback against a row that moved on
(issue 12): a copy of a migration listed before a worker committed it is
never rolled back on the agents (the source would unlock its copy of the
previous epoch beside the committed one: a clone)."""

from __future__ import annotations

import time
import uuid

import pytest

from trusted_pools.conductor.migration import MigrationCoordinator
from trusted_pools.db import api as db_api
from trusted_pools.db import migration


@pytest.fixture
def db(tmp_path):
    connection = db_api.Connection(db_api.make_context_manager(
        "sqlite:///%s" % (tmp_path / "m.sqlite")))
    migration.upgrade(engine=connection.get_engine())
    yield connection
    connection.dispose()


class _Manager:
    """What the coordinator uses of the conductor manager; agent calls
    are recorded, and answer as honest agents would."""

    host = "conductor-1"
    heartbeat_timeout = 60
    notifier = None
    metrics = None

    def __init__(self, db) -> None:
        self.db = db
        self.calls: list[tuple[str, str, dict]] = []

    @staticmethod
    def clock() -> float:
        return time.time()

    def spawn(self, work) -> None:
        work()

    def _agent_call(self, method, context, host, **kwargs):
        self.calls.append((method, host, kwargs))
        if method == "migration_abort":
            return {"step": "aborted", "epoch": 0}
        return {"step": "finished"}


def _committed_with_stale_copy(db):
    row = db.create_vtpm_migration(str(uuid.uuid4()), "src", "dst",
                                   "cold", _Manager.host, b"s" * 32)
    for before, step in (("requested", "attested"),
                         ("attested", "key_certified"),
                         ("key_certified", "exported"),
                         ("exported", "imported")):
        db.advance_vtpm_migration(row.id, (before,), step)
    listed = db.get_vtpm_migration(row.id)
    # A worker commits it after the resume job listed it.
    db.advance_vtpm_migration(row.id, ("imported",), "committed")
    return listed


def test_resume_never_rolls_back_a_row_committed_after_it_listed(
        db, monkeypatch):
    manager = _Manager(db)
    coordinator = MigrationCoordinator(manager, step_timeout=300)
    listed = _committed_with_stale_copy(db)
    assert listed.step == "imported"
    monkeypatch.setattr(db, "list_vtpm_migrations",
                        lambda **kwargs: [listed])
    coordinator.resume()
    assert not [c for c in manager.calls if c[0] == "migration_abort"], \
        manager.calls
    assert db.get_vtpm_migration(listed.id).step == "committed"
    # The next round (a fresh list) finishes it.
    monkeypatch.undo()
    coordinator.resume()
    assert [c[0] for c in manager.calls] == ["migration_commit",
                                             "migration_finish"]
    assert db.get_vtpm_migration(listed.id).step == "completed"


def test_abort_of_a_stale_row_asks_no_agent(db):
    manager = _Manager(db)
    coordinator = MigrationCoordinator(manager, step_timeout=300)
    listed = _committed_with_stale_copy(db)
    row = coordinator._abort({}, listed, "the step timed out")
    assert row.step == "committed" and manager.calls == []


class _Notifier:
    def __init__(self, fail_on: str | None = None) -> None:
        self.sent: list[tuple[str, str, str]] = []
        self.fail_on = fail_on

    def _send(self, level, event, payload):
        if event.endswith(self.fail_on or "\0"):
            raise RuntimeError("the bus is down")
        self.sent.append((level, event, payload["id"]))

    def info(self, context, event, payload):
        self._send("info", event, payload)

    def warn(self, context, event, payload):
        self._send("warn", event, payload)


def _senders():
    import threading
    return [t for t in threading.enumerate()
            if t.name == "vtpm-migration-notify" and t.is_alive()]


def test_notifications_in_order_and_the_sender_ends_on_close(db):
    """Every step is published once, in the order recorded (one that the
    bus refuses is logged, not retried ahead of the next); close()
    publishes what is queued and ends the sender thread (a stopped
    conductor otherwise kept it waiting a minute for more)."""
    manager = _Manager(db)
    manager.notifier = _Notifier(fail_on="key_certified")
    coordinator = MigrationCoordinator(manager, step_timeout=300)
    expected = []
    for _ in range(3):
        row = db.create_vtpm_migration(str(uuid.uuid4()), "src", "dst",
                                       "cold", _Manager.host, b"s" * 32)
        coordinator._notify({}, row)
        expected.append(("info", "vtpm_migration.requested", row.id))
        for before, step in (("requested", "attested"),
                             ("attested", "key_certified"),
                             ("key_certified", "aborted")):
            row = db.advance_vtpm_migration(row.id, (before,), step)
            coordinator._notify({}, row)
            if step != "key_certified":
                expected.append(("warn" if step == "aborted" else "info",
                                 "vtpm_migration." + step, row.id))
    assert coordinator.close(timeout=10)
    assert manager.notifier.sent == expected
    assert _senders() == []
    # A later step (none should come after a stop) still goes out.
    coordinator._notify({}, row)
    assert coordinator.close(timeout=10)
    assert manager.notifier.sent[-1] == ("warn", "vtpm_migration.aborted",
                                         row.id)
    assert _senders() == []


def test_close_does_not_wait_on_a_publish_that_hangs(db):
    """A broker that is down makes a publish block (the notifier retries
    for ever): close() gives up at its timeout and says so."""
    import threading
    manager = _Manager(db)
    release = threading.Event()

    class _Hanging(_Notifier):
        def _send(self, level, event, payload):
            release.wait(30)
            super()._send(level, event, payload)
    manager.notifier = _Hanging()
    coordinator = MigrationCoordinator(manager, step_timeout=300)
    row = db.create_vtpm_migration(str(uuid.uuid4()), "src", "dst",
                                   "cold", _Manager.host, b"s" * 32)
    coordinator._notify({}, row)
    coordinator._notify({}, row)
    assert coordinator.close(timeout=0.5) is False
    release.set()
    assert coordinator.flush_notifications(timeout=10)
    assert [s[2] for s in manager.notifier.sent] == [row.id, row.id]
    assert coordinator.close(timeout=10)
    assert _senders() == []
