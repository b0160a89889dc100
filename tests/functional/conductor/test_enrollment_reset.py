"""An operator's enrollment reset takes effect at once, on every conductor
(issue 9, item 3 follow-up).

The first tests drive one ConductorManager on a SQLite file with a
recording notifier: fast, and they show the rules. The last ones run the
real pool (swtpm TPMs, agents, two conductors, RabbitMQ, the scheduler's
signed-notification listener) and show what a consumer sees, while the
reset host's agent keeps pushing quotes of its old AK.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
import uuid
from typing import Any

import oslo_messaging as messaging
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from tests.pool_harness import TrustedPool, ek_sha256
from trusted_pools import exception
from trusted_pools.protocol import keystore
from trusted_pools.protocol import results
from trusted_pools.conductor import endpoints
from trusted_pools.conductor import manager as manager_mod
from trusted_pools.conductor.manager import ConductorManager
from trusted_pools.db import api as db_api
from trusted_pools.db import migration
from trusted_pools.nova.scheduler.cache import VerdictCache
from trusted_pools.nova.scheduler.listener import TrustListener
from trusted_pools.tpm import keys


class RecordingNotifier:
    """Keeps what the conductor announces (the payload the scheduler's
    listener and the Placement trait keeper receive)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []

    def info(self, context: dict, event_type: str,
             payload: dict[str, Any]) -> None:
        self.sent.append((event_type, payload))


def _db(tmp_path) -> db_api.Connection:
    db = db_api.Connection(db_api.make_context_manager(
        "sqlite:///%s" % (tmp_path / "reset.sqlite")))
    migration.upgrade(engine=db.get_engine())
    return db


def _manager(db: db_api.Connection, name: str) -> ConductorManager:
    return ConductorManager(name, db, keystore.generate_signing_key(), None,
                            RecordingNotifier(), b"")


def _enroll(db: db_api.Connection, host: str, tag: bytes
            ) -> db_api.Registration:
    """Enroll ``host`` with a fresh AK and an EK named by ``tag`` (the TPM
    checks are the conductor's; here only the database's rules apply)."""
    ak = keys.public_from_key(ec.generate_private_key(
        ec.SECP256R1()).public_key())
    ek_hash = hashlib.sha256(b"ek-" + tag).hexdigest()
    return db.enroll(host, "default", b"cert-" + tag, ek_hash, ak.raw,
                     ak.name(), approve=ek_hash)[1]


def _token_verdict(manager: ConductorManager, token: str) -> Any:
    keyset = {manager.signer.kid: keystore.public_key_from_pem(
        manager.public_pem)}
    return results.verify_signed_result(token, keyset,
                                        int(time.time())).verdict


def test_reset_records_and_announces_a_signed_unknown_verdict(tmp_path):
    db = _db(tmp_path)
    manager = _manager(db, "conductor-a")
    registration = _enroll(db, "host-a", b"a")
    manager._state("host-a")
    # This conductor last announced "unknown" (say the agent was silent):
    # the reset is announced all the same.
    manager._published["host-a"] = ("unknown", 0)

    reply = manager.reset_enrollment({}, "host-a")

    assert reply == {"host": "host-a", "state": "enrolling"}
    (event, payload), = manager.notifier.sent
    assert event == manager_mod.TRUST_EVENT
    assert (payload["host"], payload["status"], payload["level"]) == (
        "host-a", "unknown", 0)
    signed = _token_verdict(manager, payload["signed_result"])
    assert signed.status.value == "unknown" and int(signed.level) == 0
    assert list(signed.reasons) == [manager_mod.RESET_REASON]
    (stored,) = db.latest_verdicts()
    assert stored.signed_result == payload["signed_result"]
    assert stored.registration_generation == registration.generation
    assert stored.quote_clock is None  # never a replay baseline
    assert db.get_ima_state(registration.host_id) is None
    with pytest.raises(exception.HostNotEnrolled):
        manager._state("host-a")


def test_a_host_moved_to_another_group_is_appraised_with_its_policies(
        tmp_path):
    # The operator moves a host (PATCH /v1/hosts/{name}) while a conductor
    # holds its state with the old group's policies: the next enrollment
    # check reloads it, with the same registration and the new group.
    db = _db(tmp_path)
    owner = _manager(db, "conductor-a")
    registration = _enroll(db, "host-a", b"a")
    _enroll(db, "host-b", b"b")
    before = owner._state("host-a")
    untouched = owner._state("host-b")
    assert before.group == "default"
    db.update_host_group(registration.host_id, "gold")

    assert owner.refresh_enrollments() == []  # no registration changed
    after = owner._state("host-a")
    assert after is not before
    assert after.group == "gold"
    assert after.registration == before.registration
    assert owner._state("host-b") is untouched
    assert owner.refresh_enrollments() == []
    assert owner._state("host-a") is after


def test_reset_of_unknown_host_is_refused_and_records_nothing(tmp_path):
    db = _db(tmp_path)
    manager = _manager(db, "conductor-a")
    # Called in-process, the endpoint wraps what it declares for RPC.
    with pytest.raises(messaging.ExpectedException) as info:
        endpoints.ManagementEndpoint(manager).reset_enrollment(
            {}, "no-such-host")
    assert isinstance(info.value.exc_info[1], exception.HostNotFound)
    assert db.latest_verdicts() == [] and manager.notifier.sent == []


def test_other_conductor_drops_reset_and_re_enrolled_hosts(tmp_path):
    db = _db(tmp_path)
    handler = _manager(db, "conductor-a")
    owner = _manager(db, "conductor-b")
    for name, tag in (("reset", b"r"), ("swapped", b"s"), ("steady", b"t")):
        _enroll(db, name, tag)
        owner._state(name)
        owner._published[name] = ("trusted", 4)
    steady = owner._state("steady")

    handler.reset_enrollment({}, "reset")
    # Reset and enrolled again with a new TPM, between two of owner's
    # cycles: only the generation tells.
    handler.reset_enrollment({}, "swapped")
    swapped = _enroll(db, "swapped", b"s2")
    handler.notifier.sent.clear()

    assert owner.refresh_enrollments() == ["reset", "swapped"]
    assert owner.refresh_enrollments() == []
    assert owner._state("steady") is steady
    with pytest.raises(exception.HostNotEnrolled) as info:
        owner._state("reset")
    assert "enrolling" in str(info.value)
    reloaded = owner._state("swapped")
    assert reloaded.registration == swapped.generation
    assert reloaded.ak.raw == swapped.ak_public
    # The owner had announced "reset" trusted: it records its own
    # "unknown", newer than any verdict it judged with the old AK.
    (event, payload), = owner.notifier.sent
    assert (payload["host"], payload["status"]) == ("reset", "unknown")
    # "swapped" is announced again when its next verdict comes, whatever
    # this conductor announced before the swap.
    assert "swapped" not in owner._published


def test_evidence_of_a_host_that_is_not_enrolled_gives_no_verdict(tmp_path):
    db = _db(tmp_path)
    owner = _manager(db, "conductor-b")
    _enroll(db, "host-a", b"a")
    owner._state("host-a")
    _manager(db, "conductor-a").reset_enrollment({}, "host-a")
    owner.refresh_enrollments()
    before = db.latest_verdicts()
    push = {"version": 1, "host": "host-a", "epoch_id": "x"}
    # Dropped before it takes a queue place: the owner read which hosts
    # are enrolled.
    owner.submit_evidence({}, push)
    assert owner.shed["not_enrolled"] == 1
    assert owner.process_evidence() == 0
    # Queued while the owner's list was stale (the reset happened since
    # its last read): the worker ignores it.
    owner._enrolled_names = frozenset({"host-a"})
    owner.submit_evidence({}, push)
    assert owner.process_evidence() == 1
    assert db.latest_verdicts() == before


def test_a_reset_during_a_read_of_the_enrollments_is_not_undone(tmp_path):
    """The operator resets host-a (its TPM or host is suspect) while the
    owner's epoch reads which hosts are enrolled: that read began before
    the reset's commit, so it still lists host-a. The reset wins: pushes
    in host-a's name are dropped before they take a queue place, not
    admitted again for an interval by the stale read."""
    db = _db(tmp_path)
    owner = _manager(db, "conductor-a")
    _enroll(db, "host-a", b"a")
    _enroll(db, "host-b", b"b")
    assert owner.enrolled_names() == {"host-a", "host-b"}
    read = db.host_enrollments

    def read_then_reset() -> Any:
        stale = read()
        db.host_enrollments = read  # once
        owner.reset_enrollment({}, "host-a")  # another RPC thread, now
        return stale

    db.host_enrollments = read_then_reset
    owner.refresh_enrolled_names()  # what start_epoch reads first
    assert owner.enrolled_names() == {"host-b"}
    owner.submit_evidence({}, {"version": 1, "host": "host-a",
                               "epoch_id": "x"})
    assert owner.shed["not_enrolled"] == 1
    # The next read (after the reset's commit) agrees.
    owner.refresh_enrolled_names()
    assert owner.enrolled_names() == {"host-b"}


def test_an_enrollment_during_a_read_is_not_dropped(tmp_path):
    """The other way: host-c enrolls through this conductor while its
    epoch reads the enrollments (from before the commit). host-c's pushes
    are taken at once, not dropped as not enrolled for an interval."""
    db = _db(tmp_path)
    owner = _manager(db, "conductor-a")
    _enroll(db, "host-a", b"a")
    assert owner.enrolled_names() == {"host-a"}
    read = db.host_enrollments

    def read_then_enroll() -> Any:
        stale = read()
        db.host_enrollments = read
        # What enroll_host does once the TPM checks passed (they need an
        # agent): the database write, then the conductor's own record.
        _enroll(db, "host-c", b"c")
        owner._enrolled_here("host-c", True)
        return stale

    db.host_enrollments = read_then_enroll
    owner.refresh_enrolled_names()
    assert owner.enrolled_names() == {"host-a", "host-c"}


def test_a_read_begun_before_a_newer_one_is_not_installed_over_it(
        tmp_path):
    """Two reads of the enrollments overlap (an epoch's and
    refresh_enrollments'): the one begun first, before host-c's
    enrollment here, ends last. The newer read (which saw host-c) stays:
    host-c is not dropped as not enrolled for an interval."""
    db = _db(tmp_path)
    owner = _manager(db, "conductor-a")
    _enroll(db, "host-a", b"a")
    assert owner.enrolled_names() == {"host-a"}
    read = db.host_enrollments

    def read_then_enroll_and_read_again() -> Any:
        stale = read()
        db.host_enrollments = read
        _enroll(db, "host-c", b"c")
        owner._enrolled_here("host-c", True)
        owner.refresh_enrolled_names()  # the newer read, ended first
        return stale

    db.host_enrollments = read_then_enroll_and_read_again
    owner.refresh_enrolled_names()
    assert owner.enrolled_names() == {"host-a", "host-c"}


def test_disabled_host_is_not_attested(tmp_path):
    db = _db(tmp_path)
    owner = _manager(db, "conductor-b")
    registration = _enroll(db, "host-a", b"a")
    owner._state("host-a")
    owner._published["host-a"] = ("trusted", 4)
    db.update_host_state(registration.host_id, "disabled")
    assert owner.refresh_enrollments() == ["host-a"]
    with pytest.raises(exception.HostNotEnrolled):
        owner._state("host-a")
    (_, payload), = owner.notifier.sent
    assert payload["status"] == "unknown"
    assert "disabled" in " ".join(
        _token_verdict(owner, payload["signed_result"]).reasons)


# --- the real pool ------------------------------------------------------------

@pytest.fixture
def pool(tmp_path, rabbit_conf, swtpm_pool, swtpm_ca):
    trusted = TrustedPool(tmp_path, rabbit_conf, swtpm_pool, swtpm_ca,
                          "sqlite:///%s" % (tmp_path / "tp.sqlite"))
    trusted.configure()
    try:
        yield trusted
    finally:
        trusted.close()


@pytest.fixture
def scheduler_cache(pool):
    """The scheduler's verdict cache, fed by the conductors' signed
    notifications over RabbitMQ (the key is the pool's signing key, which
    every conductor of the harness shares)."""
    key = keystore.load_or_create_signing_key(
        pool.conf.conductor.signing_key_path)
    cache = VerdictCache(keystore.key_set([key]), max_age=60, grace=60)
    transport = messaging.get_notification_transport(pool.conf)
    listener = TrustListener(cache, None, notification_transport=transport,
                             exchange=pool.conf.control_exchange,
                             pool="test-%s" % uuid.uuid4().hex)
    listener.start()
    try:
        yield cache
    finally:
        listener.stop()
        transport.cleanup()


def _wait(predicate, timeout: float, what: str) -> float:
    """Seconds until ``predicate()`` held; fails after ``timeout``."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError("%s: not within %.1f s" % (what, timeout))
        time.sleep(0.02)
    return time.monotonic() - start


def _cached_status(cache: VerdictCache, host: str) -> str | None:
    entry = cache.get(host)
    return None if entry is None else entry.verdict.status.value


def _trusted_since(pool: TrustedPool, host_id: int, since: float
                   ) -> list[db_api.Verdict]:
    return [v for v in pool.db.verdict_history(host_id, 200)
            if v.status == "trusted" and v.issued_at.timestamp() >= since]


@pytest.mark.swtpm
@pytest.mark.rabbitmq
@pytest.mark.slow
def test_reset_drops_the_host_from_the_scheduler_at_once(pool,
                                                         scheduler_cache):
    (host,) = pool.add_hosts(1)
    pool.start_agents()
    pool.start_conductor("conductor-a")
    api = pool.api()
    api.enroll_host({}, host.name, ek_sha256=ek_sha256(host.tpm))
    _wait(lambda: _cached_status(scheduler_cache, host.name) == "trusted",
          20, "trusted verdict announced")
    host_id = pool.db.get_host_by_name(host.name).id

    reset_at = time.time()
    api.reset_enrollment({}, host.name)  # as trusted-pools-manage does
    took = _wait(
        lambda: _cached_status(scheduler_cache, host.name) == "unknown",
        pool.interval, "reset announced")
    entry = scheduler_cache.get(host.name)
    assert list(entry.verdict.reasons) == [manager_mod.RESET_REASON]
    assert int(entry.verdict.level) == 0
    # At once, not when the trusted verdict expires (3 intervals).
    assert took < 1.0, took

    # The agent keeps pushing quotes of the reset TPM's AK: nothing of
    # them is judged, the scheduler keeps the host out.
    time.sleep(2 * pool.interval)
    assert _cached_status(scheduler_cache, host.name) == "unknown"
    assert _trusted_since(pool, host_id, reset_at) == []


@pytest.mark.swtpm
@pytest.mark.rabbitmq
@pytest.mark.slow
def test_other_conductor_drops_the_reset_host_within_one_interval(pool):
    (host,) = pool.add_hosts(1)
    pool.start_agents()
    conductors = [pool.start_conductor(n) for n in ("conductor-a",
                                                    "conductor-b")]
    _wait(lambda: all(len(c.manager.ring.conductors) == 2
                      for c in conductors), 10, "ring of two conductors")
    pool.api().enroll_host({}, host.name, ek_sha256=ek_sha256(host.tpm))
    pool.wait_for(lambda v: host.name in v and
                  v[host.name].status == "trusted", timeout=20)
    owner_name = conductors[0].manager.ring.owner(host.name)
    owner, handler = sorted(conductors,
                            key=lambda c: c.host != owner_name)
    assert host.name in owner.manager._states
    host_id = pool.db.get_host_by_name(host.name).id
    # The other conductor holds the host's registration too (as after a
    # ring change that moved the host away from it).
    handler.manager._state(host.name)

    # The reset is routed to the owner (a non-owner refuses it); the
    # other conductor learns of it from the database.
    with pytest.raises(exception.HostNotOwned):
        handler.manager.reset_enrollment({}, host.name)
    owner.manager.reset_enrollment({}, host.name)
    assert host.name not in owner.manager._states
    took = _wait(lambda: host.name not in handler.manager._states,
                 pool.interval + 0.5, "the other conductor drops the "
                 "reset host")
    dropped_at = time.time()

    # Quotes of the old AK are judged by neither conductor: the agent's
    # pushes to the owner and a direct challenge through either.
    for conductor in conductors:
        with pytest.raises(messaging.ExpectedException) as info:
            endpoints.ManagementEndpoint(conductor.manager).attest_now(
                {}, host.name)
        refusal = info.value.exc_info[1]
        # The owner: not enrolled. The other may refuse first because it
        # does not own the host; either way a typed refusal, no verdict.
        assert isinstance(refusal, exception.TrustedPoolsError), refusal
        if conductor is owner:
            assert isinstance(refusal, exception.HostNotEnrolled), refusal
    time.sleep(2 * pool.interval)
    assert _trusted_since(pool, host_id, dropped_at) == []
    latest = pool.latest()[host.name]
    assert latest.status == "unknown", latest
    assert took <= pool.interval + 0.5


@pytest.mark.swtpm
@pytest.mark.rabbitmq
@pytest.mark.slow
def test_ak_of_another_host_is_refused_naming_that_host(pool):
    victim, attacker = pool.add_hosts(2)
    pool.start_agents()
    pool.start_conductor("conductor-a")
    api = pool.api()
    api.enroll_host({}, victim.name, ek_sha256=ek_sha256(victim.tpm))
    # The compromised host's agent presents its own TPM's EK (approved by
    # the operator for it) with the victim's AK.
    stolen_ak = victim.agent.attester.identity().ak_public
    own = attacker.agent.attester.identity
    attacker.agent.attester.identity = lambda: dataclasses.replace(
        own(), ak_public=stolen_ak)

    with pytest.raises(exception.AKAlreadyRegistered) as info:
        api.enroll_host({}, attacker.name,
                        ek_sha256=ek_sha256(attacker.tpm))
    assert victim.name in str(info.value)
    assert [h.hostname for h in pool.db.list_hosts()] == [victim.name]
