"""The operator's commands against a running pool: a separate process
talking to the conductor over the real bus and reading the database."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.pool_harness import TrustedPool, ek_sha256

pytestmark = [pytest.mark.swtpm, pytest.mark.rabbitmq, pytest.mark.slow]


@pytest.fixture
def running_pool(tmp_path, rabbit_conf, rabbit_url, swtpm_pool, swtpm_ca):
    url = "sqlite:///%s" % (tmp_path / "pool.sqlite")
    pool = TrustedPool(tmp_path, rabbit_conf, swtpm_pool, swtpm_ca, url)
    pool.configure()
    pool.add_hosts(2)
    pool.start_agents()
    pool.start_conductor("conductor-a")
    conf = tmp_path / "manage.conf"
    conf.write_text("[DEFAULT]\ntransport_url = %s\ncontrol_exchange = %s\n"
                    "[database]\nconnection = %s\n"
                    % (rabbit_url, rabbit_conf.control_exchange, url))
    try:
        yield pool, conf
    finally:
        pool.close()


def manage(conf, *argv: str) -> tuple[int, str, str]:
    done = subprocess.run(
        [sys.executable, "-m", "trusted_pools.cmd.manage",
         "--config-file", str(conf), *argv],
        capture_output=True, text=True, timeout=180)
    return done.returncode, done.stdout, done.stderr


def test_enroll_capture_create_assign_attest_list(running_pool, tmp_path):
    pool, conf = running_pool
    first = pool.hosts[0]
    # Without approval: refused, and the refusal shows the EK hash.
    code, _, err = manage(conf, "host", "enroll", first.name)
    assert code == 1 and "EKNotApproved" in err
    assert ek_sha256(first.tpm) in err
    assert pool.db.list_hosts() == []
    for host in pool.hosts:
        code, out, err = manage(conf, "host", "enroll", host.name,
                                "--ek-sha256", ek_sha256(host.tpm))
        assert code == 0, err
        assert json.loads(out)["host"] == host.name
        assert json.loads(out)["ek_sha256"] == ek_sha256(host.tpm)
    code, out, err = manage(conf, "policy", "capture", pool.hosts[0].name)
    assert code == 0, err
    bodies = json.loads(out)
    path = tmp_path / "boot.json"
    path.write_text(json.dumps(bodies["measured_boot"]))
    code, out, err = manage(conf, "policy", "create", "boot", str(path),
                            "--kind", "measured_boot")
    assert code == 0, err
    assert json.loads(out)["version"] == 1
    assert manage(conf, "policy", "assign", "default", "boot")[0] == 0
    code, out, err = manage(conf, "host", "attest", pool.hosts[1].name)
    assert code == 0, err
    verdict = json.loads(out)["verdict"]
    assert verdict["status"] == "trusted" and verdict["level"] == 3
    code, out, err = manage(conf, "host", "list")
    assert code == 0, err
    rows = {row["host"]: row for row in json.loads(out)}
    assert rows[pool.hosts[1].name]["status"] == "trusted"
    code, out, _ = manage(conf, "verdict", "history", pool.hosts[1].name)
    assert code == 0 and json.loads(out)[0]["status"] == "trusted"


def test_failures_are_reported_with_exit_status_1(running_pool, tmp_path):
    pool, conf = running_pool
    code, _, err = manage(conf, "host", "attest", "no-such-host")
    assert code == 1
    assert "not registered" in err or "HostNotFound" in err
    bad = tmp_path / "bad.json"
    bad.write_text('{"kind": "measured_boot", "os_boot": {"kernels": 5}}')
    code, _, err = manage(conf, "policy", "create", "x", str(bad),
                          "--kind", "measured_boot")
    assert code == 1 and "PolicyInvalid" in err
    assert manage(conf, "policy", "create", "x", str(bad))[0] == 2
