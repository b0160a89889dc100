"""The conductor's handling of pushed evidence, attacked over the real bus.

Swtpm hosts with the real agent, real conductors and RabbitMQ, SQLite.

* A process holding only bus access casts ``submit_evidence`` in a
  victim's name, many times: garbage, a replayed genuine quote, another
  host's quote, a quote of an epoch that is over. The victim stays
  trusted and costs the conductor at most one direct challenge per
  interval.
* A paused verification worker, while epochs go on: pushes of several
  epochs, a redelivered push and a forged one pile up and interleave with a
  direct challenge on resume; no healthy host is ever untrusted.
* A conductor refuses evidence, ``attest now`` and capture for hosts it
  does not own on the hash ring.
"""

from __future__ import annotations

import base64
import json
import os
import threading
import time

import pytest

from tests.functional.conductor.test_attestation_cycle import (
    _all_trusted, _make_pool, _wire)
from trusted_pools import exception
from trusted_pools.protocol import freshness
from trusted_pools.conductor import rpcapi as conductor_rpcapi

pytestmark = [pytest.mark.swtpm, pytest.mark.rabbitmq, pytest.mark.slow]


@pytest.fixture
def sqlite_url(tmp_path):
    return "sqlite:///%s" % (tmp_path / "pool.sqlite")


def _issuer(token: str) -> str:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(
        payload + "=" * (-len(payload) % 4)))["iss"]


def _history(pool, name, after_id):
    host_id = pool.db.get_host_by_name(name).id
    return [v for v in pool.db.verdict_history(host_id, limit=200)
            if v.id > after_id]


def _no_alarm(verdicts) -> None:
    """No untrusted verdict, and no reason that cries replay."""
    bad = [(v.status, v.reasons) for v in verdicts
           if v.status == "untrusted" or any(
               "QuoteReplayed" in r or "StaleEvidence" in r
               for r in v.reasons)]
    assert not bad, bad


def test_forged_pushes_in_a_victims_name_cost_one_challenge_per_interval(
        tmp_path, rabbit_conf, swtpm_pool, swtpm_ca, sqlite_url):
    pool = _make_pool(tmp_path, rabbit_conf, swtpm_pool, swtpm_ca,
                      sqlite_url)
    try:
        hosts, (conductor,), names = _all_trusted(pool, 3)
        victim, other = hosts[1], hosts[2]
        manager = conductor.manager
        # The attacker: a process with nothing but bus access.
        attacker = conductor_rpcapi.EvidenceAPI()
        before = max(v.id for v in pool.latest().values())
        old_epoch = manager.epochs.current
        # A genuine quote of the victim, which the attacker keeps replaying
        # (in this epoch and after it is over), and another host's genuine
        # quote sent in the victim's name.
        replayed = _wire(pool, victim, freshness.host_nonce(
            old_epoch.value, victim.name), old_epoch.epoch_id)
        borrowed = dict(_wire(pool, other, freshness.host_nonce(
            old_epoch.value, other.name), old_epoch.epoch_id),
            host=victim.name)
        started = time.monotonic()
        rounds = 0
        while time.monotonic() - started < 3 * pool.interval:
            epoch = manager.epochs.current
            garbage = {"version": 1, "host": victim.name,
                       "epoch_id": epoch.epoch_id, "quote": "AAAA",
                       "signature": "%%%", "pcrs": {}}
            for wire in (garbage, replayed, borrowed,
                         dict(borrowed, epoch_id=epoch.epoch_id)):
                for _ in range(5):
                    attacker.submit_evidence({}, "conductor-a", wire)
            rounds += 1
            time.sleep(0.25)
        elapsed = time.monotonic() - started
        # The victim's own next cycle completes trusted.
        pool.wait_for(lambda v: all(
            v[n].status == "trusted" and v[n].id > before for n in names),
            timeout=30)
        for name in names:
            _no_alarm(_history(pool, name, before))
        assert rounds * 20 >= 100
        challenges = manager.failure_challenges.get(victim.name, 0)
        # The forged pushes did make the conductor ask the victim, but no
        # more than once per interval.
        assert 1 <= challenges <= elapsed / pool.interval + 1, challenges
        assert set(manager.failure_challenges) <= {victim.name}
    finally:
        pool.close()


def test_paused_worker_resumes_without_a_false_replay_alarm(
        tmp_path, rabbit_conf, swtpm_pool, swtpm_ca, sqlite_url):
    pool = _make_pool(tmp_path, rabbit_conf, swtpm_pool, swtpm_ca,
                      sqlite_url)
    try:
        hosts, (conductor,), names = _all_trusted(pool, 3)
        manager = conductor.manager
        running = threading.Event()
        running.set()
        working = manager.process_evidence

        def paused_worker(wait: float = 0.0) -> int:
            running.wait()
            return working(wait)

        manager.process_evidence = paused_worker
        before = max(v.id for v in pool.latest().values())
        running.clear()
        time.sleep(1.0)  # the worker finishes its batch and stops
        paused_at = time.monotonic()
        # While it is stopped: epochs go on and agents push into the queue
        # (more epochs than stay acceptable); a push arrives twice, as
        # from a broker that redelivers after a lost connection; a forged
        # push earns a direct challenge that will interleave with them.
        epoch = manager.epochs.current
        twice = _wire(pool, hosts[0], freshness.host_nonce(
            epoch.value, hosts[0].name), epoch.epoch_id)
        api = conductor_rpcapi.EvidenceAPI()
        api.submit_evidence({}, "conductor-a", twice)
        api.submit_evidence({}, "conductor-a", {
            "version": 1, "host": hosts[1].name,
            "epoch_id": epoch.epoch_id, "quote": "AAAA"})
        time.sleep(3 * pool.interval)
        api.submit_evidence({}, "conductor-a", twice)
        time.sleep(0.5)  # the last cast is delivered
        queued = manager._queue.qsize()
        shed = dict(manager.shed)
        running.set()  # first: a failed assert must not leave it paused
        resumed = time.monotonic()
        # Each host name holds at most max_pending_per_host queue places
        # (the first pushes keep them): the later epochs' pushes, the
        # repeated one and the forged one found them taken.
        assert queued == manager.max_pending_per_host * len(names), queued
        assert shed.get("host_pending_full", 0) >= len(names), shed
        assert resumed - paused_at > 2 * pool.interval
        # The next cycle completes trusted for every host.
        pool.wait_for(lambda v: all(
            v[n].status == "trusted" and v[n].id > before for n in names),
            timeout=30)
        assert time.monotonic() - resumed < 4 * pool.interval + 5
        time.sleep(pool.interval)
        for name in names:
            _no_alarm(_history(pool, name, before))
    finally:
        pool.close()


def test_a_conductor_refuses_evidence_and_calls_for_hosts_it_does_not_own(
        tmp_path, rabbit_conf, swtpm_pool, swtpm_ca, sqlite_url):
    pool = _make_pool(tmp_path, rabbit_conf, swtpm_pool, swtpm_ca,
                      sqlite_url)
    try:
        hosts, (first, second), names = _all_trusted(
            pool, 4, ("conductor-a", "conductor-b"))
        ring = first.manager.refresh_ring()
        foreign = [h for h in hosts
                   if ring.owner(h.name) == "conductor-b"]
        assert foreign, "the ring gave conductor-b no host"
        host = foreign[0]
        before = max(v.id for v in pool.latest().values())
        api = conductor_rpcapi.ConductorAPI()
        pushes = conductor_rpcapi.EvidenceAPI()
        # Genuine, fresh evidence over conductor-a's own epoch, pushed to
        # conductor-a: refused, it does not own the host.
        for _ in range(5):
            epoch = first.manager.epochs.current
            pushes.submit_evidence({}, "conductor-a", _wire(
                pool, host, freshness.host_nonce(epoch.value, host.name),
                epoch.epoch_id))
            time.sleep(0.4)
        with pytest.raises(exception.HostNotOwned) as info:
            api.attest_now({}, host.name, conductor="conductor-a")
        assert "conductor-b" in str(info.value)
        with pytest.raises(exception.HostNotOwned):
            api.capture_policy({}, host.name, conductor="conductor-a")
        with pytest.raises(exception.HostNotOwned):
            api.reset_enrollment({}, host.name, conductor="conductor-a")
        with pytest.raises(exception.HostNotOwned):
            api.enroll_host({}, host.name, conductor="conductor-a")
        # The owner answers (RPC 3.0: with an operation, whose result
        # is the verdict).
        result = pool.api().wait(api.attest_now({}, host.name,
                                                 conductor="conductor-b"))
        assert result["verdict"]["status"] == "trusted"
        time.sleep(pool.interval)
        issuers = {_issuer(v.signed_result)
                   for v in _history(pool, host.name, before)}
        assert issuers == {"conductor-b"}, issuers
        assert host.name not in first.manager.failure_challenges
    finally:
        pool.close()
