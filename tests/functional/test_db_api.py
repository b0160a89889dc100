"""The database API on SQLite, PostgreSQL and MariaDB (real servers)."""

from __future__ import annotations

import datetime
import hashlib
import random
import threading

import pytest

from trusted_pools import exception
from trusted_pools.db import api
from tests.db_fixtures import *  # noqa: F401,F403 (fixtures)

UTC = datetime.timezone.utc


def _verdict(host_id: int, issued_at: datetime.datetime, status="trusted",
             level=3, **extra) -> api.NewVerdict:
    return api.NewVerdict(host_id=host_id, status=status, level=level,
                          issued_at=issued_at,
                          expires_at=issued_at + datetime.timedelta(
                              seconds=120), **extra)


# --- hosts -------------------------------------------------------------------

def test_create_and_get_host(db_api):
    host = db_api.create_host("compute-1", group="gold")
    assert host.hostname == "compute-1"
    assert host.group == "gold"
    assert host.state == "enrolling"
    assert host.created_at == db_api.clock.now
    assert db_api.get_host(host.id) == host
    assert db_api.get_host_by_name("compute-1") == host
    assert db_api.get_host_by_uuid(host.uuid) == host


def test_duplicate_hostname_is_host_already_exists(db_api):
    db_api.create_host("compute-1")
    with pytest.raises(exception.HostAlreadyExists) as info:
        db_api.create_host("compute-1", group="other")
    assert isinstance(info.value, exception.Conflict)
    assert info.value.kwargs["host"] == "compute-1"
    assert len(db_api.list_hosts()) == 1


def test_duplicate_uuid_is_conflict(db_api):
    first = db_api.create_host("compute-1")
    with pytest.raises(exception.Conflict) as info:
        db_api.create_host("compute-2", uuid=first.uuid)
    assert not isinstance(info.value, exception.HostAlreadyExists)


def test_missing_host_is_host_not_found(db_api):
    with pytest.raises(exception.HostNotFound):
        db_api.get_host(12345)
    with pytest.raises(exception.HostNotFound):
        db_api.get_host_by_name("nope")
    with pytest.raises(exception.HostNotFound):
        db_api.update_host_state(12345, "enrolled")
    with pytest.raises(exception.HostNotFound):
        db_api.delete_host(12345)


def test_list_hosts_filters(db_api):
    a = db_api.create_host("a", group="gold", state="enrolled")
    b = db_api.create_host("b", group="gold")
    c = db_api.create_host("c", group="silver", state="enrolled")
    assert db_api.list_hosts() == [a, b, c]
    assert db_api.list_hosts(group="gold") == [a, b]
    assert db_api.list_hosts(state="enrolled") == [a, c]
    assert db_api.list_hosts(group="gold", state="enrolled") == [a]
    assert db_api.list_hosts(group="bronze") == []


def test_update_host_state_and_group(db_api):
    host = db_api.create_host("a")
    db_api.clock.advance(5)
    updated = db_api.update_host_state(host.id, "enrolled")
    assert updated.state == "enrolled"
    assert updated.updated_at == db_api.clock.now
    moved = db_api.update_host_group(host.id, "silver")
    assert (moved.group, moved.state) == ("silver", "enrolled")
    assert db_api.get_host(host.id) == moved


@pytest.mark.parametrize("kwargs", [
    {"hostname": ""}, {"hostname": "x" * 256}, {"hostname": "a",
                                                 "state": "trusted"},
    {"hostname": "a", "group": ""}])
def test_create_host_rejects_bad_values(db_api, kwargs):
    with pytest.raises(exception.InvalidParameterValue):
        db_api.create_host(**kwargs)
    assert db_api.list_hosts() == []


def test_update_host_state_rejects_unknown_state(db_api):
    host = db_api.create_host("a")
    with pytest.raises(exception.InvalidParameterValue):
        db_api.update_host_state(host.id, "trusted")
    assert db_api.get_host(host.id).state == "enrolling"


def test_delete_host_removes_its_rows(db_api):
    host = db_api.create_host("a")
    other = db_api.create_host("b")
    db_api.set_registration(host.id, b"ek-a", b"ak", b"name")
    db_api.save_ima_state(api.IMAState(host.id, 1, {"sha256": "00"}, 1, 0),
                          None)
    db_api.add_verdicts([_verdict(host.id, db_api.clock.now),
                         _verdict(other.id, db_api.clock.now)])
    db_api.delete_host(host.id)
    assert [h.hostname for h in db_api.list_hosts()] == ["b"]
    assert db_api.get_ima_state(host.id) is None
    assert [v.host_id for v in db_api.latest_verdicts()] == [other.id]
    # The EK is free again once its host is gone.
    db_api.set_registration(other.id, b"ek-a", b"ak", b"name")


# --- registrations -----------------------------------------------------------

def test_registration_round_trip(db_api):
    host = db_api.create_host("a")
    ek = bytes(range(256)) * 4
    reg = db_api.set_registration(host.id, ek, b"\x00\x01ak", b"\x00\x0bname")
    assert reg.ek_cert_fingerprint == hashlib.sha256(ek).hexdigest()
    stored = db_api.get_registration(host.id)
    assert stored == reg
    assert stored.ek_certificate == ek
    assert db_api.get_registration_by_fingerprint(
        reg.ek_cert_fingerprint.upper()).host_id == host.id


def test_set_registration_replaces(db_api):
    host = db_api.create_host("a")
    db_api.set_registration(host.id, b"ek-1", b"ak-1", b"name-1")
    db_api.clock.advance(1)
    second = db_api.set_registration(host.id, b"ek-2", b"ak-2", b"name-2")
    assert db_api.get_registration(host.id) == second
    assert (second.ak_public, second.registered_at) == (b"ak-2",
                                                        db_api.clock.now)
    with pytest.raises(exception.RegistrationNotFound):
        db_api.get_registration_by_fingerprint(
            hashlib.sha256(b"ek-1").hexdigest())


def test_same_ek_on_two_hosts_is_rejected_and_changes_nothing(db_api):
    a = db_api.create_host("a")
    b = db_api.create_host("b")
    reg_a = db_api.set_registration(a.id, b"ek-shared", b"ak-a", b"n-a")
    reg_b = db_api.set_registration(b.id, b"ek-b", b"ak-b", b"n-b")
    with pytest.raises(exception.EKAlreadyRegistered) as info:
        db_api.set_registration(b.id, b"ek-shared", b"ak-x", b"n-x")
    assert info.value.kwargs["fingerprint"] == reg_a.ek_cert_fingerprint
    # Nothing half-registered: b keeps its whole previous identity.
    assert db_api.get_registration(b.id) == reg_b
    assert db_api.get_registration(a.id) == reg_a


def test_registration_errors(db_api):
    host = db_api.create_host("a")
    with pytest.raises(exception.RegistrationNotFound):
        db_api.get_registration(host.id)
    with pytest.raises(exception.HostNotFound):
        db_api.get_registration(999)
    with pytest.raises(exception.HostNotFound):
        db_api.set_registration(999, b"ek", b"ak", b"n")
    with pytest.raises(exception.InvalidParameterValue):
        db_api.set_registration(host.id, b"", b"ak", b"n")
    with pytest.raises(exception.InvalidParameterValue):
        db_api.set_registration(host.id, "text", b"ak", b"n")
    db_api.set_registration(host.id, b"ek", b"ak", b"n")
    db_api.delete_registration(host.id)
    with pytest.raises(exception.RegistrationNotFound):
        db_api.delete_registration(host.id)


# --- policies ----------------------------------------------------------------

def test_policy_versions_increment_per_name(db_api):
    v1 = db_api.create_policy_version("boot", "measured_boot", {"pcr": 1},
                                      "alice")
    v2 = db_api.create_policy_version("boot", "measured_boot", {"pcr": 2},
                                      "bob")
    other = db_api.create_policy_version("runtime", "ima",
                                         {"allow": ["/bin/sh"]}, "alice")
    assert (v1.version, v2.version, other.version) == (1, 2, 1)
    assert db_api.get_policy("boot") == v2
    assert db_api.get_policy("boot", 1) == v1
    assert db_api.get_policy("boot", 1).body == {"pcr": 1}
    assert db_api.list_policies("boot") == [v1, v2]
    assert db_api.list_policies() == [v1, v2, other]


def test_policy_errors(db_api):
    with pytest.raises(exception.PolicyNotFound):
        db_api.get_policy("boot")
    db_api.create_policy_version("boot", "measured_boot", {}, "alice")
    with pytest.raises(exception.PolicyNotFound):
        db_api.get_policy("boot", 2)
    with pytest.raises(exception.Conflict):
        db_api.create_policy_version("boot", "ima", {}, "alice")
    with pytest.raises(exception.InvalidParameterValue):
        db_api.create_policy_version("boot", "tpm", {}, "alice")
    with pytest.raises(exception.InvalidParameterValue):
        db_api.create_policy_version("boot", "measured_boot", [], "alice")
    assert [p.version for p in db_api.list_policies()] == [1]


def test_large_policy_body(db_api):
    # IMA allowlists run to megabytes: more than MySQL's TEXT holds.
    body = {"digests": {"/usr/lib/file%06d" % i: "%064x" % i
                        for i in range(12000)}}
    stored = db_api.create_policy_version("runtime", "ima", body, "alice")
    assert db_api.get_policy("runtime", stored.version).body == body


def test_concurrent_policy_versions_are_distinct(db_api):
    per_thread = 8
    created: list[int] = []
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def writer(tag: str) -> None:
        try:
            start.wait()
            for i in range(per_thread):
                policy = db_api.create_policy_version(
                    "boot", "measured_boot", {"by": tag, "i": i}, tag)
                created.append(policy.version)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(t,))
               for t in ("t1", "t2")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    assert sorted(created) == list(range(1, 2 * per_thread + 1))
    stored = db_api.list_policies("boot")
    assert [p.version for p in stored] == list(range(1, 2 * per_thread + 1))


def test_assignments_follow_latest_or_pin(db_api):
    db_api.create_policy_version("boot", "measured_boot", {"v": 1}, "a")
    db_api.create_policy_version("runtime", "ima", {"v": 1}, "a")
    db_api.assign_policy("gold", "boot")
    db_api.assign_policy("gold", "runtime", version=1)
    db_api.assign_policy("silver", "boot", version=1)
    assert [(p.name, p.version) for p in db_api.policies_for_group("gold")
            ] == [("boot", 1), ("runtime", 1)]

    db_api.create_policy_version("boot", "measured_boot", {"v": 2}, "a")
    db_api.create_policy_version("runtime", "ima", {"v": 2}, "a")
    assert [(p.name, p.version) for p in db_api.policies_for_group("gold")
            ] == [("boot", 2), ("runtime", 1)]
    assert [(p.name, p.version) for p in db_api.policies_for_group("silver")
            ] == [("boot", 1)]

    # Re-assigning replaces: silver now follows the latest.
    assignment = db_api.assign_policy("silver", "boot")
    assert assignment.policy_version is None
    assert [(p.name, p.version) for p in db_api.policies_for_group("silver")
            ] == [("boot", 2)]
    assert [(a.group, a.policy_name) for a in db_api.list_assignments()] == [
        ("gold", "boot"), ("gold", "runtime"), ("silver", "boot")]
    db_api.unassign_policy("gold", "runtime")
    assert [p.name for p in db_api.policies_for_group("gold")] == ["boot"]
    assert db_api.policies_for_group("bronze") == []


def test_assign_unknown_policy(db_api):
    with pytest.raises(exception.PolicyNotFound):
        db_api.assign_policy("gold", "boot")
    db_api.create_policy_version("boot", "measured_boot", {}, "a")
    with pytest.raises(exception.PolicyNotFound):
        db_api.assign_policy("gold", "boot", version=2)
    with pytest.raises(exception.InvalidParameterValue):
        db_api.assign_policy("gold", "boot", version=0)
    with pytest.raises(exception.PolicyNotFound):
        db_api.unassign_policy("gold", "boot")
    assert db_api.list_assignments() == []


# --- verdicts ----------------------------------------------------------------

def test_verdict_round_trip(db_api):
    host = db_api.create_host("a")
    issued = datetime.datetime(2026, 11, 1, 12, 0, 0, 654321, tzinfo=UTC)
    new = _verdict(host.id, issued, status="untrusted", level=1,
                   vector={"hardware": 2, "executables": 33},
                   reasons=[{"pcr": 4, "event": "EV_EFI_BOOT_SERVICES_APP"}],
                   policy_versions={"boot": 3}, evidence_digest="ab" * 32,
                   quote_clock=2**40, reset_count=7, restart_count=2,
                   signed_result="eyJ.payload.sig")
    assert db_api.add_verdicts([new]) == 1
    [stored] = db_api.latest_verdicts()
    for field in ("host_id", "status", "level", "vector", "reasons",
                  "policy_versions", "evidence_digest", "quote_clock",
                  "reset_count", "restart_count", "issued_at", "expires_at",
                  "signed_result"):
        assert getattr(stored, field) == getattr(new, field), field
    # Microseconds survive (MySQL's plain DATETIME would drop them).
    assert stored.issued_at.microsecond == 654321


def test_naive_timestamps_are_utc(db_api):
    host = db_api.create_host("a")
    naive = datetime.datetime(2026, 11, 1, 12, 0, 0)
    offset = datetime.datetime(2026, 11, 1, 14, 0, 1,
                               tzinfo=datetime.timezone(
                                   datetime.timedelta(hours=2)))
    db_api.add_verdicts([_verdict(host.id, naive), _verdict(host.id, offset)])
    stored = db_api.verdicts_since(naive - datetime.timedelta(seconds=1))
    assert [v.issued_at for v in stored] == [
        naive.replace(tzinfo=UTC),
        datetime.datetime(2026, 11, 1, 12, 0, 1, tzinfo=UTC)]


@pytest.mark.parametrize("kwargs", [
    {"status": "maybe"}, {"level": -1}, {"level": True},
    {"reasons": "text"}, {"vector": []}, {"quote_clock": -5}])
def test_new_verdict_validates(kwargs):
    now = datetime.datetime(2026, 11, 1, tzinfo=UTC)
    with pytest.raises(exception.InvalidParameterValue):
        _verdict(1, now, **kwargs)


def test_new_verdict_rejects_expiry_before_issue():
    now = datetime.datetime(2026, 11, 1, tzinfo=UTC)
    with pytest.raises(exception.InvalidParameterValue):
        api.NewVerdict(1, "trusted", 3, now,
                       now - datetime.timedelta(seconds=1))


def test_add_verdicts_unknown_host_stores_nothing(db_api):
    host = db_api.create_host("a")
    now = db_api.clock.now
    batch = [_verdict(host.id, now), _verdict(host.id + 1000, now)]
    with pytest.raises(exception.HostNotFound) as info:
        db_api.add_verdicts(batch)
    assert str(host.id + 1000) in info.value.message
    assert db_api.latest_verdicts() == []
    assert db_api.add_verdicts([]) == 0


def test_batch_of_10000_and_verdicts_since(db_api):
    hosts = [db_api.create_host("h%03d" % i).id for i in range(100)]
    base = datetime.datetime(2026, 11, 1, 0, 0, tzinfo=UTC)
    rng = random.Random(5)
    batch = []
    for i in range(10000):
        # Random order and colliding instants: ties must still be exact.
        offset = rng.randrange(0, 2000) * 1000 + rng.choice((0, 0, 1, 999))
        batch.append(_verdict(hosts[i % 100],
                              base + datetime.timedelta(microseconds=offset),
                              level=i % 5, reasons=[i]))
    assert db_api.add_verdicts(batch) == 10000

    cut = base + datetime.timedelta(microseconds=1000 * 1000)
    expected = sorted((v.issued_at, v.reasons[0]) for v in batch
                      if v.issued_at > cut)
    got = db_api.verdicts_since(cut)
    assert [(v.issued_at, v.reasons[0]) for v in got] == expected
    assert all(a.id < b.id for a, b in zip(got, got[1:], strict=False)
               if a.issued_at == b.issued_at)

    # Keyset pages of 777 return every verdict exactly once, in order.
    paged, since, after = [], cut, None
    while True:
        page = db_api.verdicts_since(since, after_id=after, limit=777)
        if not page:
            break
        paged.extend(page)
        since, after = page[-1].issued_at, page[-1].id
    assert [v.id for v in paged] == [v.id for v in got]

    latest = db_api.latest_verdicts()
    assert [v.host_id for v in latest] == sorted(hosts)
    for verdict in latest:
        # The newest is the one stored last (greatest sequence), not the
        # one with the latest issued_at (a conductor's clock).
        stored_last = [v for v in batch if v.host_id == verdict.host_id][-1]
        assert verdict.reasons == stored_last.reasons
    by_host = {v.host_id: v for v in latest}
    subset = db_api.latest_verdicts(reversed(hosts[:3]))
    assert subset == [by_host[h] for h in sorted(hosts[:3])]
    assert db_api.latest_verdicts([]) == []


def test_latest_verdict_breaks_ties_by_id(db_api):
    host = db_api.create_host("a")
    now = db_api.clock.now
    db_api.add_verdicts([_verdict(host.id, now, status="trusted")])
    db_api.add_verdicts([_verdict(host.id, now, status="untrusted")])
    assert [v.status for v in db_api.latest_verdicts()] == ["untrusted"]
    history = db_api.verdict_history(host.id)
    assert [v.status for v in history] == ["untrusted", "trusted"]


def test_purge_keeps_each_hosts_newest(db_api):
    a = db_api.create_host("a").id
    b = db_api.create_host("b").id
    t0 = db_api.clock.now
    times = [t0 + datetime.timedelta(minutes=m) for m in range(5)]
    db_api.add_verdicts([_verdict(a, t) for t in times] +
                        [_verdict(b, times[0])])
    deleted = db_api.purge_verdicts(times[3])
    assert deleted == 3  # a's first three; b's only verdict stays
    remaining = db_api.verdicts_since(t0 - datetime.timedelta(seconds=1))
    assert sorted((v.host_id, v.issued_at) for v in remaining) == sorted(
        [(a, times[3]), (a, times[4]), (b, times[0])])


# --- IMA replay state --------------------------------------------------------

def test_ima_state_compare_and_set(db_api):
    host = db_api.create_host("a").id
    assert db_api.get_ima_state(host) is None
    first = db_api.save_ima_state(
        api.IMAState(host, 120, {"sha256": "aa" * 32}, 3, 0), None)
    assert db_api.get_ima_state(host) == first
    assert first.updated_at == db_api.clock.now

    # A second "first" state (another conductor raced us) is refused.
    with pytest.raises(exception.ConcurrentUpdate):
        db_api.save_ima_state(api.IMAState(host, 5, {}, 3, 0), None)

    db_api.clock.advance(60)
    second = db_api.save_ima_state(
        api.IMAState(host, 220, {"sha256": "bb" * 32}, 3, 0), first)
    assert db_api.get_ima_state(host) == second

    # Starting from the stale first state must not move the replay back.
    with pytest.raises(exception.ConcurrentUpdate):
        db_api.save_ima_state(api.IMAState(host, 130, {}, 3, 0), first)
    assert db_api.get_ima_state(host) == second

    # After a reboot the replay restarts with the new reset count.
    rebooted = db_api.save_ima_state(
        api.IMAState(host, 10, {"sha256": "cc" * 32}, 4, 0), second)
    assert db_api.get_ima_state(host).reset_count == 4
    assert db_api.get_ima_state(host).entries == rebooted.entries == 10

    db_api.delete_ima_state(host)
    assert db_api.get_ima_state(host) is None


def test_ima_state_unconditional_write(db_api):
    host = db_api.create_host("a").id
    first = db_api.save_ima_state(api.IMAState(host, 50, {"sha256": "aa"},
                                               2, 0))
    assert db_api.get_ima_state(host) == first
    # Last writer wins, even "backwards": the caller opted out of CAS.
    db_api.clock.advance(1)
    older = db_api.save_ima_state(api.IMAState(host, 7, {"sha256": "bb"},
                                               2, 0))
    assert db_api.get_ima_state(host) == older
    assert older.updated_at == db_api.clock.now
    with pytest.raises(exception.HostNotFound):
        db_api.save_ima_state(api.IMAState(999, 1, {}, 1, 0))
    with pytest.raises(exception.InvalidParameterValue):
        db_api.save_ima_state(api.IMAState(host, 8, {}, 2, 0),
                              api.IMAState(host + 1, 7, {}, 2, 0))


def test_ima_state_unknown_host(db_api):
    with pytest.raises(exception.HostNotFound):
        db_api.save_ima_state(api.IMAState(999, 1, {}, 1, 0), None)
    with pytest.raises(exception.HostNotFound):
        db_api.save_ima_state(api.IMAState(999, 2, {}, 1, 0),
                              api.IMAState(999, 1, {}, 1, 0))
    with pytest.raises(exception.InvalidParameterValue):
        db_api.save_ima_state(api.IMAState(999, -1, {}, 1, 0), None)


# --- conductors --------------------------------------------------------------

def test_conductor_heartbeats(db_api):
    clock = db_api.clock
    db_api.register_conductor("cond-b")
    db_api.register_conductor("cond-a")
    assert db_api.list_alive_conductors(timeout=30) == ["cond-a", "cond-b"]
    with pytest.raises(exception.ConductorAlreadyRegistered):
        db_api.register_conductor("cond-a")

    clock.advance(20)
    db_api.touch_conductor("cond-a")
    clock.advance(20)
    # cond-b's last heartbeat is 40 s old: out of the ring.
    assert db_api.list_alive_conductors(timeout=30) == ["cond-a"]

    db_api.unregister_conductor("cond-a")
    assert db_api.list_alive_conductors(timeout=30) == []
    with pytest.raises(exception.ConductorNotFound):
        db_api.touch_conductor("cond-a")
    with pytest.raises(exception.ConductorNotFound):
        db_api.touch_conductor("never-registered")

    # Offline rows re-register without update_existing; a crashed
    # conductor's stale online row needs it.
    db_api.register_conductor("cond-a")
    record = db_api.register_conductor("cond-b", update_existing=True)
    assert record.online and record.updated_at == clock.now
    assert db_api.list_alive_conductors(timeout=30) == ["cond-a", "cond-b"]
    assert [c.hostname for c in db_api.list_conductors()] == [
        "cond-a", "cond-b"]
    with pytest.raises(exception.InvalidParameterValue):
        db_api.list_alive_conductors(timeout=0)


# --- errors from the server --------------------------------------------------

@pytest.mark.parametrize("url", [
    "postgresql+psycopg2://postgres@127.0.0.1:1/test",
    "mysql+pymysql://root@127.0.0.1:1/test"])
def test_unreachable_database_is_database_unavailable(url):
    connection = api.Connection(api.make_context_manager(url, max_retries=0))
    with pytest.raises(exception.DatabaseUnavailable) as info:
        connection.list_hosts()
    assert isinstance(info.value, exception.TemporaryFailure)


# --- properties --------------------------------------------------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_PROPERTY_SETTINGS = settings(
    max_examples=15, deadline=None, database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture,
                           HealthCheck.too_slow])

_BASE = datetime.datetime(2026, 11, 1, tzinfo=UTC)


@_PROPERTY_SETTINGS
@given(batch=st.lists(st.tuples(st.integers(0, 4), st.integers(0, 40)),
                      min_size=0, max_size=60),
       cut=st.integers(-1, 41), page=st.integers(1, 9))
def test_verdicts_since_pages_match_a_filter(db_api, batch, cut, page):
    from tests.db_fixtures import _empty_tables
    _empty_tables(db_api.get_engine())
    hosts = [db_api.create_host("p%d" % i).id for i in range(5)]
    # Offsets in milliseconds from few values: many exact ties.
    verdicts = [_verdict(hosts[h], _BASE + datetime.timedelta(
        milliseconds=t), reasons=[n]) for n, (h, t) in enumerate(batch)]
    db_api.add_verdicts(verdicts)
    since = _BASE + datetime.timedelta(milliseconds=cut)

    expected = sorted((v.issued_at, v.reasons[0]) for v in verdicts
                      if v.issued_at > since)
    paged, start, after = [], since, None
    for _ in range(len(batch) + 2):
        chunk = db_api.verdicts_since(start, after_id=after, limit=page)
        if not chunk:
            break
        paged.extend(chunk)
        start, after = chunk[-1].issued_at, chunk[-1].id
    # Within one instant, ids follow insertion order, i.e. reasons order.
    assert [(v.issued_at, v.reasons[0]) for v in paged] == expected

    latest = {v.host_id: v for v in db_api.latest_verdicts()}
    for host in hosts:
        mine = [(v.issued_at, v.reasons[0]) for v in verdicts
                if v.host_id == host]
        if not mine:
            assert host not in latest
        else:
            # Stored last wins, whatever its issued_at.
            assert (latest[host].issued_at,
                    latest[host].reasons[0]) == mine[-1]


@_PROPERTY_SETTINGS
@given(moment=st.datetimes(min_value=datetime.datetime(2000, 1, 1),
                           max_value=datetime.datetime(2100, 1, 1),
                           timezones=st.sampled_from([
                               UTC, datetime.timezone(datetime.timedelta(
                                   hours=-7, minutes=-30)),
                               datetime.timezone(datetime.timedelta(
                                   hours=13))])),
       vector=st.dictionaries(st.text(max_size=8), st.one_of(
           st.integers(-2**40, 2**40), st.text(max_size=20), st.booleans(),
           st.none()), max_size=5))
def test_timestamps_and_json_round_trip(db_api, moment, vector):
    from tests.db_fixtures import _empty_tables
    _empty_tables(db_api.get_engine())
    host = db_api.create_host("rt").id
    db_api.add_verdicts([_verdict(host, moment, vector=vector)])
    [stored] = db_api.latest_verdicts([host])
    assert stored.issued_at == moment
    assert stored.issued_at.tzinfo == UTC
    assert stored.vector == vector


def test_verdicts_and_ima_states_in_one_batch(db_api):
    """The conductor writes a batch's verdicts and the IMA replay states
    they moved their hosts to in one transaction."""
    hosts = [db_api.create_host("batch-ima-%d" % i) for i in range(3)]
    now = db_api.clock()
    verdicts = [api.NewVerdict(host_id=h.id, status="trusted", level=4,
                           issued_at=now,
                           expires_at=now + datetime.timedelta(seconds=60))
                for h in hosts]
    states = [api.IMAState(host_id=h.id, entries=10 * (i + 1),
                       pcr_values={"11": "ab" * 32}, reset_count=1,
                       restart_count=0) for i, h in enumerate(hosts[:2])]
    assert db_api.add_verdicts(verdicts, states) == 3
    assert db_api.get_ima_state(hosts[0].id).entries == 10
    assert db_api.get_ima_state(hosts[1].id).entries == 20
    assert db_api.get_ima_state(hosts[2].id) is None
    # A second batch moves a state forward in place.
    moved = api.IMAState(host_id=hosts[0].id, entries=15,
                     pcr_values={"11": "cd" * 32}, reset_count=1,
                     restart_count=0)
    db_api.add_verdicts(verdicts[:1], [moved])
    assert db_api.get_ima_state(hosts[0].id).entries == 15
    # A batch naming an unknown host stores nothing, states included.
    ghost = api.IMAState(host_id=999999, entries=1, pcr_values={},
                     reset_count=0, restart_count=0)
    with pytest.raises(exception.HostNotFound):
        db_api.add_verdicts(verdicts[:1], [moved, ghost])
    assert len(db_api.verdict_history(hosts[0].id)) == 2


# --- verdict sequence --------------------------------------------------------

def test_record_verdicts_signs_with_the_sequence_it_stores(db_api):
    host = db_api.create_host("seq-a").id
    now = db_api.clock.now
    signed = []

    def sign(index: int, sequence: int) -> str:
        signed.append((index, sequence))
        return "token-%d-%d" % (index, sequence)

    stored = db_api.record_verdicts(
        [_verdict(host, now), _verdict(host, now, status="untrusted")], (),
        sign)
    (s1, t1), (s2, t2) = stored
    assert s2 == s1 + 1 and t1 == "token-0-%d" % s1
    assert signed == [(0, s1), (1, s2)]
    history = db_api.verdict_history(host)
    assert [(v.sequence, v.signed_result) for v in history] == [
        (s2, t2), (s1, t1)]
    # A later batch always gets greater numbers, whatever its issued_at.
    earlier = now - datetime.timedelta(hours=1)
    (s3, _), = db_api.record_verdicts([_verdict(host, earlier)], (), sign)
    assert s3 > s2
    assert db_api.latest_verdicts([host])[0].sequence == s3
    with pytest.raises(exception.InvalidParameterValue):
        db_api.record_verdicts([_verdict(host, now)], (), None)


def test_concurrent_writers_get_distinct_ordered_sequences(db_url):
    """Two conductors (two connections) storing verdicts of one host at
    once: every number is used once, and each writer's numbers grow."""
    writers = [api.Connection(api.make_context_manager(db_url))
               for _ in range(2)]
    host = writers[0].create_host("seq-shared").id
    now = datetime.datetime.now(datetime.timezone.utc)
    got: list[list[int]] = [[], []]

    def run(n: int) -> None:
        for _ in range(15):
            stored = writers[n].record_verdicts(
                [_verdict(host, now), _verdict(host, now)], (),
                lambda i, s: "w%d-%d" % (n, s))
            got[n].extend(s for s, _ in stored)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert all(g == sorted(g) and len(g) == 30 for g in got)
        assert len(set(got[0]) | set(got[1])) == 60
        history = writers[0].verdict_history(host, limit=100)
        assert [v.signed_result for v in history] == [
            "w%d-%d" % (0 if v.sequence in got[0] else 1, v.sequence)
            for v in history]
    finally:
        for writer in writers:
            writer.dispose()


# --- the key service: binding keys and secrets -------------------------------

def test_binding_key_only_for_the_current_enrollment(db_api):
    ek = "ab" * 32
    host, reg = db_api.enroll("a", "default", b"ek-cert", ek, b"ak-1",
                              b"name-1", approve=ek)
    stored = db_api.set_binding_key(host.id, reg.generation, b"\x00" * 300,
                                    b"\x00\x0b" + b"n" * 32)
    assert db_api.get_binding_key(host.id) == stored
    assert stored.public == b"\x00" * 300
    # Certified by the AK of another generation: refused, nothing kept.
    with pytest.raises(exception.Conflict):
        db_api.set_binding_key(host.id, reg.generation + 1, b"x", b"y")
    assert db_api.get_binding_key(host.id) == stored
    # Re-enrolled (a new AK): the stored key is of the old generation.
    host2, reg2 = db_api.enroll("a", "default", b"ek-cert", ek, b"ak-2",
                                b"name-2")
    assert reg2.generation > reg.generation
    assert db_api.get_binding_key(host.id).generation == reg.generation
    db_api.delete_host(host.id)
    assert db_api.get_binding_key(host.id) is None


def test_secret_round_trip_and_delete(db_api):
    record = api.SecretRecord(
        id="5b7c1a2e-0000-4000-8000-000000000001", project_id="p",
        owner="inst", name="vTPM", secret_type="passphrase",
        algorithm=None, bit_length=None, min_level=4, kek_id="k" * 32,
        ciphertext=bytes(range(256)) * 3, created_at=db_api.clock.now)
    assert db_api.create_secret(record) == record
    assert db_api.get_secret(record.id) == record
    db_api.delete_secret(record.id)
    with pytest.raises(exception.SecretNotFound):
        db_api.get_secret(record.id)
    with pytest.raises(exception.SecretNotFound):
        db_api.delete_secret(record.id)


# --- host operations retention ------------------------------------------------

def test_purge_operations_deletes_only_ended_old_ones(db_api):
    old_done = db_api.create_operation("compute-1", "attest", "c-a")
    db_api.finish_operation(old_done.id, result={})
    old_failed = db_api.create_operation("compute-1", "capture", "c-a")
    db_api.finish_operation(old_failed.id, error_type="TemporaryFailure",
                            error={"message": "x", "kwargs": {}})
    old_pending = db_api.create_operation("compute-2", "attest", "c-a")
    cut = db_api.clock.advance(3600)
    recent = db_api.create_operation("compute-1", "attest", "c-a")
    db_api.finish_operation(recent.id, result={})

    assert db_api.purge_operations(cut) == 2
    left = {op.id for op in db_api.list_operations("compute-1")} | {
        op.id for op in db_api.list_operations("compute-2")}
    assert left == {old_pending.id, recent.id}
    assert db_api.purge_operations(cut) == 0


# --- key releases (issue 14) -------------------------------------------------

def _release(when: datetime.datetime, host: str = "compute-1",
             outcome: str = "refused", **extra) -> api.KeyReleaseRecord:
    values = dict(id=None, secret_id="5d7c9a60-0000-4000-8000-000000000001",
                  project_id="proj", owner="inst-1", host=host,
                  outcome=outcome, status="untrusted", level=0,
                  min_level=None, reason_code="not_trusted",
                  reason="kernel not approved", conductor="c-a",
                  requested_by="nova", request_id="req-1", created_at=when)
    values.update(extra)
    return api.KeyReleaseRecord(**values)


def test_key_releases_page_newest_first_and_filter(db_api):
    now = db_api.clock.now
    stored = [db_api.record_key_release(_release(
        now + datetime.timedelta(seconds=i), host="compute-%d" % (i % 2),
        outcome="released" if i % 3 == 0 else "refused"))
        for i in range(7)]
    ids = [r.id for r in stored]
    assert ids == sorted(ids) and None not in ids
    first = db_api.list_key_releases(limit=3)
    assert [r.id for r in first] == ids[::-1][:3]
    second = db_api.list_key_releases(limit=3, before_id=first[-1].id)
    assert [r.id for r in second] == ids[::-1][3:6]
    last = db_api.list_key_releases(limit=3, before_id=second[-1].id)
    assert [r.id for r in last] == ids[:1]
    assert {r.host for r in db_api.list_key_releases(host="compute-1")} \
        == {"compute-1"}
    assert {r.outcome for r in db_api.list_key_releases(
        outcome="released")} == {"released"}
    assert first[0].created_at == now + datetime.timedelta(seconds=6)
    with pytest.raises(exception.InvalidParameterValue):
        db_api.list_key_releases(outcome="leaked")
    with pytest.raises(exception.InvalidParameterValue):
        db_api.record_key_release(_release(now, outcome="maybe"))


def test_key_release_record_cuts_long_request_text(db_api):
    """The host name and the asker come from the request: too long is
    cut to the column, not a failure that would refuse a key release."""
    kept = db_api.record_key_release(_release(
        db_api.clock.now, host="h" * 400, requested_by="u" * 400,
        request_id="r" * 100))
    assert len(kept.host) == 255 and len(kept.requested_by) == 255
    assert len(kept.request_id) == 64


def test_purge_key_releases_by_age(db_api):
    now = db_api.clock.now
    old = db_api.record_key_release(_release(now - datetime.timedelta(
        days=10)))
    new = db_api.record_key_release(_release(now))
    assert db_api.purge_key_releases(now - datetime.timedelta(days=1)) == 1
    assert [r.id for r in db_api.list_key_releases()] == [new.id]
    assert old.id != new.id


def test_verdict_history_pages_by_sequence(db_api):
    host = db_api.create_host("compute-1").id
    start = db_api.clock.now
    db_api.add_verdicts([_verdict(host, start + datetime.timedelta(
        seconds=i), level=i % 4) for i in range(5)])
    everything = db_api.verdict_history(host, limit=10)
    assert len(everything) == 5
    first = db_api.verdict_history(host, limit=2)
    rest = db_api.verdict_history(host, limit=10,
                                  before_sequence=first[-1].sequence)
    assert first + rest == everything
