"""A small trusted pool end to end: swtpm hosts, agents, a conductor,
SQLite and RabbitMQ. Policies are captured from a good host."""

from __future__ import annotations

import time

import pytest

from tests.pool_harness import TrustedPool

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


def test_capture_attest_and_detect_tampered_kernel(pool):
    good, bad = pool.add_hosts(2, tamper=[1])
    pool.start_agents()
    pool.start_conductor("conductor-a")
    pool.enroll_all()
    api = pool.api()
    captured = api.capture_policy({}, good.name)
    assert set(captured) == {"measured_boot", "ima"}
    # Assigned after the hosts' IMA logs were already replayed without a
    # runtime policy: those entries must be judged again, by this policy.
    time.sleep(2 * pool.interval)
    for kind in ("measured_boot", "ima"):
        api.create_policy({}, "golden-" + kind, kind, captured[kind])
        api.assign_policy({}, "default", "golden-" + kind)
    latest = pool.wait_for(lambda v: len(v) == 2 and all(
        len(x.policy_versions) == 2 for x in v.values()))
    assert latest[good.name].status == "trusted", latest[good.name].reasons
    assert latest[good.name].level == 4
    assert latest[bad.name].status == "untrusted"
    assert any("PCR 4" in r and "EV_EFI_BOOT_SERVICES_APPLICATION" in r
               for r in latest[bad.name].reasons), latest[bad.name].reasons


def test_a_host_without_an_event_log_is_judged_by_its_policies(pool):
    # Issue 14, friction 1: '[agent] event_log_path =' (documented as "send
    # no event log") made every such host untrusted even with no policy.
    # Now: with no policy it is judged as a host with a log is; once a
    # measured-boot policy with event rules is assigned, withholding the
    # log keeps it below the level a host that shows its log reaches.
    with_log, without_log = pool.add_hosts(2)
    pool.start_agents(without_event_log=[without_log])
    pool.start_conductor("conductor-a")
    pool.enroll_all()
    latest = pool.wait_for(lambda v: len(v) == 2)
    shown, withheld = latest[with_log.name], latest[without_log.name]
    assert (withheld.status, withheld.level) == (shown.status, shown.level)
    assert not any("event log" in r for r in withheld.reasons), \
        withheld.reasons

    api = pool.api()
    captured = api.capture_policy({}, with_log.name)
    api.create_policy({}, "golden-boot", "measured_boot",
                      captured["measured_boot"])
    api.assign_policy({}, "default", "golden-boot")
    latest = pool.wait_for(lambda v: len(v) == 2 and all(
        x.policy_versions for x in v.values()))
    shown, withheld = latest[with_log.name], latest[without_log.name]
    assert shown.status == "trusted", shown.reasons
    assert withheld.level < shown.level, (withheld.level, shown.level)
    assert any("no verified event log" in r for r in withheld.reasons), \
        withheld.reasons


def test_hosts_without_event_logs_are_held_to_captured_pcr_values(pool):
    # The documented path for a host with no event log: capture from a
    # known-good one gives a policy of PCR values (the boot loader's PCR 4
    # among them), which the good host passes and a host that booted
    # another boot loader fails.
    good, bad = pool.add_hosts(2, tamper=[1])
    pool.start_agents(without_event_log=[good, bad])
    pool.start_conductor("conductor-a")
    pool.enroll_all()
    api = pool.api()
    captured = api.capture_policy({}, good.name)
    boot = captured["measured_boot"]
    assert set(boot) == {"kind", "pcrs", "description"}, boot
    assert "4" in boot["pcrs"]["sha256"], boot
    api.create_policy({}, "golden-pcrs", "measured_boot", boot)
    api.assign_policy({}, "default", "golden-pcrs")
    latest = pool.wait_for(lambda v: len(v) == 2 and all(
        x.policy_versions for x in v.values()))
    assert latest[good.name].status == "trusted", latest[good.name].reasons
    assert latest[bad.name].status == "untrusted"
    assert any("PCR 4" in r for r in latest[bad.name].reasons), \
        latest[bad.name].reasons
