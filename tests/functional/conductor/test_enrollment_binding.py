"""Enrollment binds one EK to one host name, through the real conductor,
real agents on swtpm TPMs, RabbitMQ and SQLite (issue 9 items 3 and 5).

A compromised host's agent is simulated the simplest faithful way: its
agent process talks to another host's TPM (every TPM command it sends is
relayed there), which is what a relaying agent does."""

from __future__ import annotations

import time

import pytest

from tests import pool_harness
from tests import swtpm_pool
from tests.pool_harness import TrustedPool, ek_sha256
from trusted_pools import exception
from trusted_pools.agent.service import AgentService
from trusted_pools.tpm.device import DEFAULT_AK_HANDLE

pytestmark = [pytest.mark.swtpm, pytest.mark.rabbitmq, pytest.mark.slow]


@pytest.fixture
def pool(tmp_path, rabbit_conf, swtpm_pool, swtpm_ca):
    trusted = TrustedPool(tmp_path, rabbit_conf, swtpm_pool, swtpm_ca,
                          "sqlite:///%s" % (tmp_path / "tp.sqlite"))
    trusted.configure()
    try:
        yield trusted
    finally:
        trusted.close()


def _agent_on(pool: TrustedPool, host: pool_harness.PoolHost,
              tpm: swtpm_pool.SwtpmInstance) -> AgentService:
    if host.agent is not None:
        host.agent.stop()
    host.agent = AgentService(
        pool.conf, host=host.name, tcti=tpm.tcti,
        event_log_path=str(host.event_log_path),
        ima_log_path=str(host.ima_log_path))
    host.agent.start()
    return host.agent


def test_relayed_tpm_cannot_enroll_under_another_name(pool):
    clean, relay = pool.add_hosts(2)
    pool.start_agents([clean])
    # The compromised host's agent answers with the clean host's TPM.
    _agent_on(pool, relay, clean.tpm)
    pool.start_conductor("conductor-a")
    api = pool.api()
    stolen = ek_sha256(clean.tpm)

    # Not yet enrolled anywhere, and the operator approved the relay
    # host's own EK: the relayed EK is not the approved one.
    with pytest.raises(exception.EKNotApproved) as info:
        api.enroll_host({}, relay.name, ek_sha256=ek_sha256(relay.tpm))
    assert stolen in str(info.value) and ek_sha256(relay.tpm) in str(
        info.value)
    assert pool.db.list_hosts() == []

    api.enroll_host({}, clean.name, ek_sha256=stolen)
    # Without approval: refused, naming the EK it presents.
    with pytest.raises(exception.EKNotApproved):
        api.enroll_host({}, relay.name)
    # Even an approval of that very EK (an operator fooled by the host's
    # report) cannot bind one TPM to two names.
    with pytest.raises(exception.EKAlreadyRegistered) as info:
        api.enroll_host({}, relay.name, ek_sha256=stolen)
    assert clean.name in str(info.value)
    assert [h.hostname for h in pool.db.list_hosts()] == [clean.name]

    # The relay host is never attested, let alone trusted, from the clean
    # host's quotes; the clean host is.
    latest = pool.wait_for(lambda v: clean.name in v, timeout=20)
    time.sleep(2 * pool.interval)
    latest = pool.latest()
    assert relay.name not in latest
    assert latest[clean.name].status == "trusted", latest[clean.name].reasons


def test_other_tpm_needs_reset_then_swapped_tpm_is_trusted(pool):
    (host,) = pool.add_hosts(1)
    pool.start_agents()
    pool.start_conductor("conductor-a")
    api = pool.api()
    old_hash = ek_sha256(host.tpm)
    first = api.enroll_host({}, host.name, ek_sha256=old_hash)
    captured = api.capture_policy({}, host.name)
    api.create_policy({}, "golden-boot", "measured_boot",
                      captured["measured_boot"])
    api.assign_policy({}, "default", "golden-boot")
    pool.wait_for(lambda v: host.name in v and v[host.name].policy_versions
                  and v[host.name].status == "trusted", timeout=30)
    # Let the old TPM's clock run ahead of a fresh one's, as in a real
    # swap (the new TPM's clock starts near zero).
    time.sleep(1.0)

    # The board is swapped: a new TPM, booted the same way.
    (new_tpm,) = pool.start_tpms(1)
    swtpm_pool.boot_from_event_log(new_tpm, host.source_log)
    host.tpm = new_tpm
    pool_harness.boot_ima(host, 50, seed=0)
    _agent_on(pool, host, new_tpm)
    new_hash = ek_sha256(new_tpm)
    registration = pool.db.get_registration(
        pool.db.get_host_by_name(host.name).id)

    # Re-enrolling with another EK is refused, naming both hashes, with or
    # without an approval of the new one, and changes nothing.
    for approval in (None, new_hash):
        with pytest.raises(exception.EKChanged) as info:
            api.enroll_host({}, host.name, ek_sha256=approval)
        assert old_hash in str(info.value) and new_hash in str(info.value)
        assert pool.db.get_registration(registration.host_id) == \
            registration

    api.reset_enrollment({}, host.name)
    assert pool.db.get_host_by_name(host.name).state == "enrolling"
    enrolled_at = time.time()
    second = api.enroll_host({}, host.name, ek_sha256=new_hash)
    assert second["ek_sha256"] == new_hash
    assert second["generation"] == first["generation"] + 1

    # The new TPM's quotes verify: trusted, not "replayed" against the old
    # TPM's clock.
    def trusted_since_swap(latest):
        v = latest.get(host.name)
        return (v is not None and v.issued_at.timestamp() > enrolled_at
                and v.status == "trusted")
    latest = pool.wait_for(trusted_since_swap, timeout=30)
    assert latest[host.name].registration_generation == second["generation"]
    history = pool.db.verdict_history(registration.host_id, 50)
    assert not any("replayed" in " ".join(v.reasons) for v in history
                   if v.issued_at.timestamp() > enrolled_at)


def test_same_ek_new_ak_re_enrolls_without_approval(pool):
    (host,) = pool.add_hosts(1)
    pool.start_agents()
    pool.start_conductor("conductor-a")
    api = pool.api()
    first = api.enroll_host({}, host.name, ek_sha256=ek_sha256(host.tpm))
    with host.tpm.device() as device:
        device.evict(DEFAULT_AK_HANDLE)  # the agent makes a new AK
    second = api.enroll_host({}, host.name)
    assert second["ek_sha256"] == first["ek_sha256"]
    assert second["ak_name"] != first["ak_name"]
