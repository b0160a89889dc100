"""The conductor's must-show scenarios with the real parts: 10 agents on
their own swtpm TPMs, two conductors, RabbitMQ, SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import copy
import hashlib
import os
import time

import pytest

from tests import swtpm_pool
from tests.db_fixtures import provisioned_database
from tests.pool_harness import TrustedPool
from tests.rabbitmq import rabbitmqctl
from trusted_pools.conductor import rpcapi as conductor_rpcapi

pytestmark = [pytest.mark.swtpm, pytest.mark.rabbitmq, pytest.mark.slow]

TAMPERED_SHA256 = hashlib.sha256(swtpm_pool.TAMPERED_DIGEST_INPUT).hexdigest()


def _make_pool(tmp_path, conf, start_tpms, ca, url) -> TrustedPool:
    pool = TrustedPool(tmp_path, conf, start_tpms, ca, url, interval=2)
    pool.configure()
    return pool


@pytest.fixture(params=[
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgresql", id="postgresql",
                 marks=pytest.mark.database)])
def backend_url(request, tmp_path):
    with provisioned_database(request.param, str(tmp_path)) as url:
        yield url


@pytest.fixture
def sqlite_url(tmp_path):
    return "sqlite:///%s" % (tmp_path / "pool.sqlite")


def _owner(pool: TrustedPool, host: str) -> str:
    """The conductor that owns ``host`` (management calls go there)."""
    return pool.conductors[0].manager.refresh_ring().owner(host)


def _capture_and_assign(pool: TrustedPool, host: str) -> dict:
    api = pool.api()
    captured = api.capture_policy({}, host, conductor=_owner(pool, host))
    api.create_policy({}, "golden-boot", "measured_boot",
                      captured["measured_boot"])
    api.assign_policy({}, "default", "golden-boot")
    return captured


def _all_appraised(names, version=None):
    def check(latest):
        return all(n in latest and latest[n].policy_versions and (
            version is None or latest[n].policy_versions.get("golden-boot")
            == version) for n in names)
    return check


def test_ten_hosts_two_conductors_tampered_kernel_then_accepted(
        tmp_path, rabbit_conf, swtpm_pool, swtpm_ca, backend_url):
    pool = _make_pool(tmp_path, rabbit_conf, swtpm_pool, swtpm_ca,
                      backend_url)
    try:
        hosts = pool.add_hosts(10, tamper=[9])
        bad = hosts[9]
        pool.start_agents()
        pool.start_conductor("conductor-a")
        pool.start_conductor("conductor-b")
        pool.enroll_all()
        captured = _capture_and_assign(pool, hosts[0].name)
        names = [h.name for h in hosts]
        started = time.monotonic()
        latest = pool.wait_for(_all_appraised(names), timeout=60)
        # Within one interval of the policy: every host has a verdict.
        assert time.monotonic() - started < 3 * pool.interval + 5
        for host in hosts[:9]:
            assert latest[host.name].status == "trusted", \
                latest[host.name].reasons
            assert latest[host.name].level == 3
        assert latest[bad.name].status == "untrusted"
        assert any(TAMPERED_SHA256 in r and "PCR 4" in r
                   for r in latest[bad.name].reasons)
        # Both conductors took part: the ring shares the hosts.
        owners = {pool.conductors[0].manager.ring.owner(n) for n in names}
        assert owners == {"conductor-a", "conductor-b"}

        # The operator accepts the new kernel: a new policy version.
        body = copy.deepcopy(captured["measured_boot"])
        body["os_boot"]["boot_loaders"]["sha256"].append(TAMPERED_SHA256)
        version = pool.api().create_policy({}, "golden-boot",
                                           "measured_boot", body)["version"]
        assert version == 2
        latest = pool.wait_for(lambda v: v[bad.name].status == "trusted"
                               and v[bad.name].policy_versions[
                                   "golden-boot"] == 2, timeout=30)
        assert latest[bad.name].level == 3
    finally:
        pool.close()


def _all_trusted(pool: TrustedPool, count: int, conductors=("conductor-a",)):
    """Hosts booted, enrolled, under a captured policy, all trusted."""
    hosts = pool.add_hosts(count)
    pool.start_agents()
    services = [pool.start_conductor(name) for name in conductors]
    pool.enroll_all()
    _capture_and_assign(pool, hosts[0].name)
    names = [h.name for h in hosts]
    pool.wait_for(lambda v: _all_appraised(names)(v) and all(
        v[n].status == "trusted" for n in names), timeout=60)
    return hosts, services, names


def _wire(pool, host, nonce, epoch_id, **changes):
    evidence = host.agent.attester.evidence(
        nonce, [0x000B], epoch_id=epoch_id, ima_start=0, event_log=True)
    wire = evidence.to_wire()
    wire.update(changes)
    return wire


def test_bad_input_earns_a_challenge_not_a_verdict_and_harms_no_host(
        tmp_path, rabbit_conf, swtpm_pool, swtpm_ca, sqlite_url):
    """Pushed evidence that does not verify gives no verdict (anyone on
    the bus can push in any host's name): the named host is challenged
    directly, at most once per interval, and its own answer decides."""
    from trusted_pools.protocol import freshness
    pool = _make_pool(tmp_path, rabbit_conf, swtpm_pool, swtpm_ca,
                      sqlite_url)
    try:
        hosts, (conductor,), names = _all_trusted(pool, 3)
        victim = hosts[1]
        api = conductor_rpcapi.EvidenceAPI()
        epoch = conductor.manager.epochs.current
        good_nonce = freshness.host_nonce(epoch.value, victim.name)
        cases = {
            "garbage": {"version": 1, "host": victim.name,
                        "epoch_id": epoch.epoch_id, "quote": "%%%"},
            "wrong nonce": _wire(pool, victim, os.urandom(32),
                                 epoch.epoch_id),
            "log over the size limit": _wire(
                pool, victim, good_nonce, epoch.epoch_id,
                event_log=base64.b64encode(
                    bytes(17 * 1024 * 1024)).decode()),
        }
        victim_id = pool.db.get_host_by_name(victim.name).id
        before = pool.latest()[victim.name].id
        started = time.monotonic()
        for wire in cases.values():
            api.submit_evidence({}, "conductor-a", wire)
        # An old quote replayed: the same evidence twice.
        replay = _wire(pool, victim, good_nonce, epoch.epoch_id)
        api.submit_evidence({}, "conductor-a", replay)
        api.submit_evidence({}, "conductor-a", replay)
        # Evidence naming a host nobody enrolled changes nothing.
        unknown = dict(replay, host="compute-unknown")
        api.submit_evidence({}, "conductor-a", unknown)
        # The victim keeps being attested, trusted, from its own evidence.
        fresh = _wait_for_verdict(pool, victim_id, before,
                                  lambda v: v.status == "trusted")
        time.sleep(2 * pool.interval)
        latest = pool.wait_for(lambda v: all(
            v[n].status == "trusted" for n in names), timeout=30)
        assert "compute-unknown" not in latest
        assert fresh.status == "trusted"
        for host in hosts:
            history = pool.db.verdict_history(
                pool.db.get_host_by_name(host.name).id, limit=100)
            assert all(v.status == "trusted" for v in history
                       if v.id > before or v.policy_versions), [
                (v.status, v.reasons) for v in history]
        intervals = (time.monotonic() - started) / pool.interval
        challenges = conductor.manager.failure_challenges.get(victim.name, 0)
        assert 1 <= challenges <= intervals + 1
    finally:
        pool.close()


def _wait_for_verdict(pool, host_id, after_id, predicate, timeout=20):
    """The first verdict of the host newer than ``after_id`` that matches
    (later good cycles may already have superseded it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for verdict in pool.db.verdict_history(host_id, limit=50):
            if verdict.id > after_id and predicate(verdict):
                return verdict
        time.sleep(0.2)
    raise AssertionError("no matching verdict; latest: %s" % [
        (v.status, v.reasons) for v in pool.db.verdict_history(host_id, 5)])


def _epoch_start():
    import datetime
    return datetime.datetime(2000, 1, 1, tzinfo=datetime.timezone.utc)


def _rabbitmqctl(*args: str) -> None:
    assert rabbitmqctl(*args), "rabbitmqctl %s failed" % " ".join(args)


def test_rabbitmq_restart_then_next_cycle_completes(
        tmp_path, rabbit_conf, swtpm_pool, swtpm_ca, sqlite_url):
    pool = _make_pool(tmp_path, rabbit_conf, swtpm_pool, swtpm_ca,
                      sqlite_url)
    try:
        _, _, names = _all_trusted(pool, 3)
        _rabbitmqctl("stop_app")
        down_at = time.time()
        time.sleep(2 * pool.interval)
        # No fresh evidence while the bus is down: nothing new is trusted.
        import datetime
        since = datetime.datetime.fromtimestamp(
            down_at + 0.5, datetime.timezone.utc)
        assert all(v.status != "trusted"
                   for v in pool.db.verdicts_since(since))
        _rabbitmqctl("start_app")
        up_at = datetime.datetime.fromtimestamp(time.time(),
                                                datetime.timezone.utc)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            fresh = {v.host_id for v in pool.db.verdicts_since(up_at)
                     if v.status == "trusted"}
            if len(fresh) == len(names):
                break
            time.sleep(0.5)
        assert len(fresh) == len(names), "no complete cycle after restart"
    finally:
        rabbitmqctl("start_app")
        pool.close()


def test_killed_conductor_hosts_move_to_the_other(
        tmp_path, rabbit_conf, swtpm_pool, swtpm_ca, sqlite_url):
    import datetime
    pool = _make_pool(tmp_path, rabbit_conf, swtpm_pool, swtpm_ca,
                      sqlite_url)
    try:
        _, (first, second), names = _all_trusted(
            pool, 4, ("conductor-a", "conductor-b"))
        ring = second.manager.refresh_ring()
        moved = [n for n in names if ring.owner(n) == "conductor-a"]
        assert moved, "the ring gave conductor-a no host"
        # Killed: it stops without unregistering; only its heartbeats end.
        first.stop_without_unregistering()
        pool.conductors.remove(first)
        killed_at = datetime.datetime.fromtimestamp(
            time.time(), datetime.timezone.utc)
        timeout = rabbit_conf.conductor.heartbeat_timeout
        deadline = time.monotonic() + 2 * timeout + 3 * pool.interval + 10
        ids = {pool.db.get_host_by_name(n).id: n for n in moved}
        while time.monotonic() < deadline:
            fresh = {ids[v.host_id] for v in pool.db.verdicts_since(killed_at)
                     if v.host_id in ids and v.status == "trusted"}
            if fresh == set(moved):
                break
            time.sleep(0.5)
        assert fresh == set(moved)
        assert set(second.manager.ring.conductors) == {"conductor-b"}
    finally:
        pool.close()


def test_silent_agent_becomes_unknown_and_reboot_is_replayed_in_full(
        tmp_path, rabbit_conf, swtpm_pool, swtpm_ca, sqlite_url):
    import datetime
    pool = _make_pool(tmp_path, rabbit_conf, swtpm_pool, swtpm_ca,
                      sqlite_url)
    try:
        hosts, _, names = _all_trusted(pool, 3)
        silent, rebooted = hosts[1], hosts[2]
        # The agent goes away: after unknown_after_missed epochs without
        # evidence the host is unknown, never trusted.
        silent.agent.stop()
        silent.agent = None
        latest = pool.wait_for(
            lambda v: v[silent.name].status == "unknown", timeout=30)
        assert latest[silent.name].level == 0
        assert any("no evidence" in r for r in latest[silent.name].reasons)
        # A reboot: resetCount moves, PCRs start over, the IMA log too.
        reboot_at = datetime.datetime.fromtimestamp(
            time.time(), datetime.timezone.utc)
        pool.reboot(rebooted)
        host_id = pool.db.get_host_by_name(rebooted.name).id
        deadline = time.monotonic() + 30
        fresh = []
        while time.monotonic() < deadline and not fresh:
            fresh = [v for v in pool.db.verdicts_since(reboot_at)
                     if v.host_id == host_id and v.status == "trusted"
                     and v.reset_count is not None]
            time.sleep(0.3)
        assert fresh, pool.db.verdict_history(host_id, 5)
        before = pool.db.verdict_history(host_id, 100)
        old_reset = min(v.reset_count for v in before
                        if v.reset_count is not None)
        assert fresh[-1].reset_count == old_reset + 1
        assert pool.latest()[names[0]].status == "trusted"
    finally:
        pool.close()
