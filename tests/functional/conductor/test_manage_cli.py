"""trusted-pools-manage keeps only what runs without trusted-pools-api:
the database, offline evidence checks, the EK hash and the RabbitMQ users.
Host, policy and verdict operations are the API's (``openstack trusted
...``): a command line that talked to the conductor over the bus needed
no credentials but the bus's, which every compute host holds."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.pool_harness import ek_sha256

pytestmark = [pytest.mark.swtpm]

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))


def manage(*argv: str, conf=None) -> tuple[int, str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = _ROOT + os.pathsep + env.get("PYTHONPATH", "")
    config = ["--config-file", str(conf)] if conf is not None else []
    done = subprocess.run(
        [sys.executable, "-m", "trusted_pools.cmd.manage", *config, *argv],
        capture_output=True, text=True, timeout=120, env=env)
    return done.returncode, done.stdout, done.stderr


@pytest.mark.parametrize("argv", [
    ("host", "enroll", "compute-00", "--ek-sha256", "00" * 32),
    ("host", "attest", "compute-00"),
    ("host", "reset-enrollment", "compute-00"),
    ("policy", "capture", "compute-00"),
    ("policy", "create", "boot", "/dev/null", "--kind", "measured_boot"),
    ("policy", "assign", "default", "boot"),
    ("verdict", "history", "compute-00"),
])
def test_management_commands_are_gone(argv, tmp_path):
    conf = tmp_path / "manage.conf"
    conf.write_text("[DEFAULT]\n")
    code, _, err = manage(*argv, conf=conf)
    assert code == 2
    assert "invalid choice: %r" % argv[0] in err


def test_ek_sha256_of_a_real_ek_certificate(tmp_path, swtpm_pool):
    (tpm,) = swtpm_pool(1)
    with tpm.device() as device:
        der = device.read_ek_certificate("rsa2048")
    path = tmp_path / "ek.der"
    path.write_bytes(der)
    conf = tmp_path / "manage.conf"
    conf.write_text("[DEFAULT]\n")
    code, out, err = manage("ek-sha256", str(path), conf=conf)
    assert code == 0, err
    assert json.loads(out) == {"ek_sha256": ek_sha256(tpm)}
    path.write_bytes(b"not a certificate")
    code, out, err = manage("ek-sha256", str(path), conf=conf)
    assert code == 1 and out == ""
    assert "not a certificate or public key" in err


def test_rabbitmq_setup_dry_run_names_every_role(tmp_path):
    conf = tmp_path / "manage.conf"
    conf.write_text("[DEFAULT]\n")
    code, out, err = manage(
        "rabbitmq", "setup", "--vhost", "tp", "--agent-vhost", "tp-agents",
        "--service-user", "tp-service", "--consumer-user", "nova-sched",
        "--agent-user", "agent-c1=compute-01", "--dry-run", conf=conf)
    assert code == 0, err
    lines = [line for line in out.splitlines()
             if line.startswith("rabbitmqctl set_")]
    assert "rabbitmqctl add_user agent-c1 <password> (unless it exists)" \
        in out.splitlines()
    # The agent has rights only in the agent vhost; the consumer only in
    # the management one; the service in both.
    agent_lines = [line for line in lines if "agent-c1" in line]
    assert len(agent_lines) == 2
    assert all(" -p tp-agents " in line for line in agent_lines)
    assert any(line.startswith("rabbitmqctl set_topic_permissions -p "
                               "tp-agents agent-c1 trusted_pools "
                               "^(trusted_pools_evidence\\.[^.]+)$")
               for line in lines), lines
    assert sum("set_permissions -p" in line and "tp-service" in line
               for line in lines) == 2
    assert not any("nova-sched" in line and "tp-agents" in line
                   for line in lines)
