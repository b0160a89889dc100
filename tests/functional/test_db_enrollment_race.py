"""Two hosts enrolling the same EK at the same moment, on PostgreSQL and
MariaDB (issue 9 item 3): exactly one wins, the other gets the typed
conflict naming the winner, and nothing of the loser is half-written.

SQLite is left out on purpose: its writers take the database lock at
BEGIN (IMMEDIATE), so two enrollments there never overlap at all.
"""

from __future__ import annotations

import hashlib
import threading
from typing import Any

import pytest

from trusted_pools import exception
from trusted_pools.db import api
from tests.db_fixtures import *  # noqa: F401,F403 (fixtures)
from tests.db_fixtures import BACKENDS


@pytest.fixture(scope="module", params=[b for b in BACKENDS
                                        if b.id != "sqlite"])
def db_backend(request: pytest.FixtureRequest) -> str:
    return request.param


def _ek(tag: str) -> str:
    return hashlib.sha256(b"ek-" + tag.encode()).hexdigest()


def _enroll(db_api: api.Connection, host: str, ek: str, ak: bytes
            ) -> tuple[api.Host, api.Registration]:
    return db_api.enroll(host, "default", b"cert-" + ek.encode(), ek,
                         b"public-" + ak, ak, approve=ek)


@pytest.fixture
def both_pass_the_check(db_api, monkeypatch):
    """Hold each enrolling thread after its own check found no other
    holder of the EK, until both have checked: the race the unique
    constraints must decide. Only the racing threads are held."""
    barrier = threading.Barrier(2, timeout=20)
    held: set[int] = set()
    check = api.Connection._refuse_taken_identity

    def check_then_wait(session, host, ek_hash, ak_name):
        check(session, host, ek_hash, ak_name)
        racing = threading.current_thread().name.startswith("enroll-")
        if racing and threading.get_ident() not in held:  # once each
            held.add(threading.get_ident())
            barrier.wait()

    monkeypatch.setattr(api.Connection, "_refuse_taken_identity",
                        staticmethod(check_then_wait))
    return barrier


@pytest.mark.parametrize("existing", [False, True],
                         ids=["new-hosts", "existing-hosts"])
def test_same_ek_enrolled_by_two_hosts_at_once_one_wins(
        db_api, both_pass_the_check, existing):
    ek = _ek("shared")
    if existing:
        # Both hosts were reset (no approved EK) and now race for one.
        for name in ("host-a", "host-b"):
            _enroll(db_api, name, _ek(name), b"old-ak-" + name.encode())
            db_api.reset_enrollment(name)
    outcomes: dict[str, Any] = {}

    def enroll(name: str) -> None:
        try:
            outcomes[name] = _enroll(db_api, name, ek,
                                     b"ak-" + name.encode())
        except Exception as error:  # noqa: BLE001 - recorded for asserts
            outcomes[name] = error

    threads = [threading.Thread(target=enroll, args=(name,),
                                name="enroll-" + name)
               for name in ("host-a", "host-b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not both_pass_the_check.broken, "the threads did not race"

    won = [n for n, o in outcomes.items() if isinstance(o, tuple)]
    lost = [n for n, o in outcomes.items() if not isinstance(o, tuple)]
    assert len(won) == 1 and len(lost) == 1, outcomes
    error = outcomes[lost[0]]
    assert isinstance(error, exception.EKAlreadyRegistered), repr(error)
    # The loser is told who holds the EK, as the operator needs.
    assert error.kwargs["other"] == won[0]
    assert error.kwargs["fingerprint"] == ek
    # Exactly one host holds the EK; the loser holds nothing.
    holders = [h.hostname for h in db_api.list_hosts()
               if h.approved_ek_sha256 == ek]
    assert holders == won
    loser = [h for h in db_api.list_hosts() if h.hostname == lost[0]]
    if loser:
        assert loser[0].state == "enrolling"
        with pytest.raises(exception.RegistrationNotFound):
            db_api.get_registration(loser[0].id)
