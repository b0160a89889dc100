"""A small trusted pool end to end: swtpm hosts, agents, a conductor,
SQLite and RabbitMQ. Policies are captured from a good host."""

from __future__ import annotations

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
    api.create_policy({}, "golden-boot", "measured_boot",
                      captured["measured_boot"])
    api.assign_policy({}, "default", "golden-boot")
    latest = pool.wait_for(lambda v: len(v) == 2 and all(
        x.policy_versions for x in v.values()))
    assert latest[good.name].status == "trusted", latest[good.name].reasons
    assert latest[good.name].level == 3
    assert latest[bad.name].status == "untrusted"
    assert any("PCR 4" in r and "EV_EFI_BOOT_SERVICES_APPLICATION" in r
               for r in latest[bad.name].reasons), latest[bad.name].reasons
