"""Deep-attestation nonces in the database (issue 11), on SQLite,
PostgreSQL and MariaDB: spent once, by the instance (and host) they were
issued for, within their lifetime, whichever conductor asks, even when
two conductors spend the same nonce at the same moment; a batch's
verdicts are stored only for the nonces it spent."""

from __future__ import annotations

import datetime
import threading
import uuid
from typing import Any

import pytest

from tests.db_fixtures import *  # noqa: F401,F403 (fixtures)
from trusted_pools import exception
from trusted_pools.conductor.instance_challenges import DatabaseChallenges
from trusted_pools.db import api
from trusted_pools.verifier import deep


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def _store(db_api: api.Connection, clock: Clock, conductor: str = "c-1",
           **kwargs: Any) -> DatabaseChallenges:
    return DatabaseChallenges(db_api, conductor, clock=clock, **kwargs)


def _record(db_api: api.Connection, instance: str, clock: Clock
            ) -> api.InstanceVerdictRecord:
    host = db_api.list_hosts()[0]
    issued = datetime.datetime.fromtimestamp(clock.now,
                                             datetime.timezone.utc)
    return api.InstanceVerdictRecord(
        instance=instance, host_id=host.id, status="trusted", level=1,
        host_level=3, host_sequence=1, registration_generation=1,
        reasons=[], signed_result="token-" + instance, issued_at=issued,
        expires_at=issued + datetime.timedelta(seconds=60))


def _instance() -> str:
    return str(uuid.uuid4())


def test_a_nonce_is_spent_once_even_by_another_conductor(db_api, clock):
    issuer, other = _store(db_api, clock), _store(db_api, clock, "c-2")
    instance = _instance()
    nonce = issuer.issue(instance, "compute-a")
    assert other.consume_many("compute-a", [(instance, nonce)]) == [None]
    (error,) = issuer.consume_many("compute-a", [(instance, nonce)])
    assert isinstance(error, deep.VMQuoteReplayed)


def test_a_nonce_is_only_for_its_instance_and_host(db_api, clock):
    store = _store(db_api, clock)
    instance, other = _instance(), _instance()
    nonce = store.issue(instance, "compute-a")
    wrong_instance, wrong_host = store.consume_many(
        "compute-a", [(other, nonce)]) + store.consume_many(
        "compute-b", [(instance, nonce)])
    assert isinstance(wrong_instance, deep.VMNonceMismatch)
    assert instance in wrong_instance.message
    assert isinstance(wrong_host, deep.VMNonceMismatch)
    assert "host compute-a" in wrong_host.message
    # Neither refusal spent it: its own instance on its own host still can.
    assert store.consume_many("compute-a", [(instance, nonce)]) == [None]


def test_a_nonce_named_without_a_host_is_spent_by_the_chains_host(
        db_api, clock):
    store = _store(db_api, clock)
    instance = _instance()
    nonce = store.issue(instance)
    assert store.consume_many("compute-b", [(instance, nonce)]) == [None]


def test_unknown_and_expired_nonces(db_api, clock):
    store = _store(db_api, clock, ttl=10)
    instance = _instance()
    nonce = store.issue(instance, "compute-a")
    clock.now += 10
    (expired,) = store.consume_many("compute-a", [(instance, nonce)])
    assert isinstance(expired, deep.VMNonceMismatch)
    assert "expired" in expired.message
    (unknown,) = store.consume_many("compute-a", [(instance, b"\0" * 32)])
    assert isinstance(unknown, deep.VMNonceMismatch)
    # Issuing deletes what expired.
    store.issue(instance, "compute-a")
    with db_api._reader() as session:
        from trusted_pools.db import models
        assert session.query(models.InstanceChallenge).count() == 1


def test_outstanding_challenges_are_bounded(db_api, clock):
    store = _store(db_api, clock, limit=2)
    store.issue(_instance())
    store.issue(_instance())
    with pytest.raises(exception.TemporaryFailure, match="outstanding"):
        store.issue(_instance())


def test_a_nonce_given_twice_in_one_batch_is_a_replay(db_api, clock):
    store = _store(db_api, clock)
    instance = _instance()
    nonce = store.issue(instance, "compute-a")
    first, second = store.consume_many(
        "compute-a", [(instance, nonce), (instance, nonce)])
    assert first is None and isinstance(second, deep.VMQuoteReplayed)


def test_verdicts_are_stored_only_for_the_nonces_spent(db_api, clock):
    db_api.create_host("compute-a")
    store = _store(db_api, clock)
    fresh, replayed = _instance(), _instance()
    old = store.issue(replayed, "compute-a")
    assert store.consume_many("compute-a", [(replayed, old)]) == [None]
    nonce = store.issue(fresh, "compute-a")
    errors = store.settle("compute-a", [(fresh, nonce), (replayed, old)], {
        0: _record(db_api, fresh, clock),
        1: _record(db_api, replayed, clock)})
    assert errors[0] is None and isinstance(errors[1], deep.VMQuoteReplayed)
    assert db_api.instance_verdict(fresh).verdict.signed_result == \
        "token-" + fresh
    with pytest.raises(exception.InstanceVerdictNotFound):
        db_api.instance_verdict(replayed)


def test_two_conductors_spend_one_nonce_at_once(db_api, db_url, clock):
    """Conductors A and B (each its own connection pool) spend the same
    nonce at the same moment: exactly one succeeds. Each waits, inside
    its transaction, for the other to get as far (or 2 s, if the other
    is held by the row lock), so both really are in flight together."""
    other_db = api.Connection(api.make_context_manager(db_url))
    stores = {"A": _store(db_api, clock, "A"),
              "B": _store(other_db, clock, "B")}
    instance = _instance()
    nonce = stores["A"].issue(instance, "compute-a")
    arrived = {name: threading.Event() for name in stores}
    spend = api.Connection.spend_instance_challenges
    outcomes: dict[str, Any] = {}

    def racing(self, nonces, now, decide, verdicts=None):
        name = threading.current_thread().name

        def decide_after_the_other(index, challenge):
            arrived[name].set()
            arrived["B" if name == "A" else "A"].wait(2)
            return decide(index, challenge)
        return spend(self, nonces, now, decide_after_the_other, verdicts)

    def run(name: str) -> None:
        try:
            outcomes[name] = stores[name].consume_many(
                "compute-a", [(instance, nonce)])[0]
        except Exception as error:  # noqa: BLE001 - recorded for asserts
            outcomes[name] = error

    api.Connection.spend_instance_challenges = racing  # type: ignore
    try:
        threads = [threading.Thread(target=run, args=(name,), name=name)
                   for name in stores]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    finally:
        api.Connection.spend_instance_challenges = spend  # type: ignore
        other_db.dispose()
    spent = [n for n, o in outcomes.items() if o is None]
    assert len(spent) == 1, outcomes
    (loser,) = [o for n, o in outcomes.items() if o is not None]
    # Refused as a replay, or told to try again (then it is one).
    assert isinstance(loser, (deep.VMQuoteReplayed,
                              exception.TemporaryFailure)), repr(loser)
    assert isinstance(stores["A"].consume_many(
        "compute-a", [(instance, nonce)])[0], deep.VMQuoteReplayed)
