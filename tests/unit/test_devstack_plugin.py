"""devstack/plugin.sh gives each service its own RabbitMQ user: it runs
``trusted-pools-manage rabbitmq setup`` (for real here, with --dry-run) and
writes a different transport_url per service (API and conductor: the
service user in the management vhost, plus the agent vhost for the
conductor; agent: its own host's user in the agent vhost only;
nova-scheduler: the consumer user). The plugin's functions run in bash
with devstack's helpers stubbed (iniset records, sudo runs)."""

from __future__ import annotations

import os
import pathlib
import stat
import subprocess
import sys
import urllib.parse

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]

_STUBS = r'''
set -e
iniset() {
    touch "$1"; printf '%s|%s|%s|%s\n' "$1" "$2" "$3" "$4" >> "$LOG/ini"
}
iniadd() { :; }
iniget() { :; }
is_service_enabled() { return 0; }
enable_service() { :; }
sudo() { "$@"; }
run_process() { printf '%s|%s\n' "$1" "$2" >> "$LOG/run"; }
wait_for_service() { return 0; }
die() { echo "die: $*" >&2; exit 1; }
echo_summary() { :; }
get_python_exec_prefix() { echo /nonexistent; }
trueorfalse() { local value=${!2:-$1}; [[ $value == True ]] && echo True || echo False; }
source "$ROOT/devstack/settings"
source "$ROOT/devstack/plugin.sh"
mkdir -p "$TRUSTED_POOLS_CONF_DIR"
touch "$TRUSTED_POOLS_CONF"
configure_trusted_pools_rabbitmq
start_trusted_pools
'''


def _run(tmp_path):
    log = tmp_path / "log"
    log.mkdir(exist_ok=True)
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    manage = bindir / "trusted-pools-manage"
    # The real command line parser and plan, without rabbitmqctl.
    manage.write_text(
        '#!/bin/sh\nprintf "%%s\\n" "$@" > "$LOG/manage"\n'
        'exec %s -c "import sys; from trusted_pools.cmd.manage import main;'
        ' sys.exit(main(sys.argv[1:] + [\'--dry-run\']))" "$@" '
        '> "$LOG/dry-run"\n' % sys.executable)
    manage.chmod(0o755)
    env = dict(os.environ, ROOT=str(ROOT), LOG=str(log),
               PYTHONPATH=str(ROOT), DEST=str(tmp_path),
               DATA_DIR=str(tmp_path / "data"), SERVICE_HOST="192.0.2.10",
               SERVICE_PROTOCOL="http", NOVA_CONF=str(tmp_path / "nova.conf"),
               TRUSTED_POOLS_CONF_DIR=str(tmp_path / "etc"),
               TRUSTED_POOLS_BIN_DIR=str(bindir),
               TRUSTED_POOLS_AGENT_HOST="compute-1",
               TRUSTED_POOLS_AGENT_HOSTS="compute-1,compute-2")
    result = subprocess.run(["bash", "-c", _STUBS], env=env, text=True,
                            capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr
    ini = {}
    for line in (log / "ini").read_text().splitlines():
        path, section, key, value = line.split("|", 3)
        ini[(pathlib.Path(path).name, section, key)] = value
    runs = dict(line.split("|", 1)
                for line in (log / "run").read_text().splitlines())
    return log, ini, runs


def _url(value):
    url = urllib.parse.urlsplit(value)
    assert url.scheme == "rabbit" and url.hostname == "192.0.2.10"
    return url.username, url.password, url.path.lstrip("/")


def test_plugin_creates_role_users_and_a_url_per_service(tmp_path):
    log, ini, runs = _run(tmp_path)
    argv = (log / "manage").read_text().split("\n")
    passwords_file = tmp_path / "etc" / "rabbitmq-passwords"
    assert argv[:2] == ["rabbitmq", "setup"]
    joined = " ".join(argv)
    for expected in ("--vhost trusted-pools",
                     "--agent-vhost trusted-pools-agent",
                     "--service-user tp-service",
                     "--consumer-user tp-scheduler",
                     "--remediation-user tp-placement-sync",
                     "--agent-user tp-agent-compute-1=compute-1",
                     "--agent-user tp-agent-compute-2=compute-2",
                     "--password-file %s" % passwords_file):
        assert expected in joined, joined
    # The real setup accepted it: vhosts, users and permissions planned.
    plan = (log / "dry-run").read_text()
    assert "add_vhost trusted-pools-agent" in plan
    assert "set_topic_permissions -p trusted-pools-agent " \
           "tp-agent-compute-2" in plan

    passwords = dict(line.split() for line in
                     passwords_file.read_text().splitlines())
    assert set(passwords) == {"tp-service", "tp-scheduler",
                              "tp-placement-sync", "tp-agent-compute-1",
                              "tp-agent-compute-2"}
    assert stat.S_IMODE(passwords_file.stat().st_mode) == 0o600
    assert len(set(passwords.values())) == 5

    urls = {
        "api": ini[("api.conf", "DEFAULT", "transport_url")],
        "conductor": ini[("conductor.conf", "DEFAULT", "transport_url")],
        "conductor-agents": ini[("conductor.conf", "conductor",
                                 "agent_transport_url")],
        "agent": ini[("agent.conf", "DEFAULT", "transport_url")],
        "scheduler": ini[("nova.conf", "trusted_pools_scheduler",
                          "transport_url")],
        "placement-sync": ini[("placement-sync.conf",
                               "trusted_pools_scheduler", "transport_url")],
    }
    expected = {
        "api": ("tp-service", "trusted-pools"),
        "conductor": ("tp-service", "trusted-pools"),
        "conductor-agents": ("tp-service", "trusted-pools-agent"),
        "agent": ("tp-agent-compute-1", "trusted-pools-agent"),
        "scheduler": ("tp-scheduler", "trusted-pools"),
        "placement-sync": ("tp-placement-sync", "trusted-pools"),
    }
    for service, url in urls.items():
        user, password, vhost = _url(url)
        assert (user, vhost) == expected[service], (service, url)
        assert password == passwords[user]
    # Nothing in the file every service reads; the agent's host is its own.
    assert not any(path == "trusted-pools.conf" and key == "transport_url"
                   for path, _, key in ini)
    assert ini[("agent.conf", "agent", "host")] == "compute-1"
    assert ini[("nova.conf", "trusted_pools_scheduler",
                "conductor_public_keys")].endswith("conductor-keys.pem")
    for name in ("api.conf", "conductor.conf", "agent.conf",
                 "placement-sync.conf"):
        mode = (tmp_path / "etc" / name).stat().st_mode
        assert stat.S_IMODE(mode) == 0o600, name

    for service, conf in (("tp-api", "api.conf"),
                          ("tp-cond", "conductor.conf"),
                          ("tp-agent", "agent.conf"),
                          ("tp-placement-sync", "placement-sync.conf")):
        assert runs[service].endswith(
            "--config-file %s" % (tmp_path / "etc" / conf)), runs[service]


def test_passwords_are_kept_across_runs(tmp_path):
    _, first, _ = _run(tmp_path)
    (tmp_path / "log" / "ini").unlink()
    (tmp_path / "log" / "run").unlink()
    _, second, _ = _run(tmp_path)
    assert first == second


@pytest.mark.parametrize("script", ["plugin.sh", "settings"])
def test_scripts_parse(script):
    assert subprocess.run(["bash", "-n", str(ROOT / "devstack" / script)]
                          ).returncode == 0
