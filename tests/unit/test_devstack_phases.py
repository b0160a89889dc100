"""devstack/plugin.sh phase by phase, as devstack calls it
(``source plugin.sh stack install|post-config|extra``, ``unstack``,
``clean``), with devstack's own functions recorded: what each phase
installs, writes, creates, starts, stops and removes. And the plugin is
shellcheck-clean."""

from __future__ import annotations

import getpass
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]

# devstack's functions the plugin calls, each recording "name|args".
_DEVSTACK = r'''
set -e
_rec() { local IFS='|'; printf '%s\n' "$*" >> "$LOG/calls"; }
iniset() {
    _rec iniset "$(basename "$1")" "$2" "$3" "$4"
    "$PYTHON" -c 'import configparser, sys
path, section, key, value = sys.argv[1:]
ini = configparser.RawConfigParser(); ini.optionxform = str; ini.read(path)
if section != "DEFAULT" and not ini.has_section(section):
    ini.add_section(section)
ini.set(section, key, value)
with open(path, "w") as handle:
    ini.write(handle)' "$1" "$2" "$3" "$4"
}
iniadd() { _rec iniadd "$(basename "$1")" "$2" "$3" "$4"; }
iniget() { echo "ComputeFilter"; }
is_service_enabled() {
    local s; for s in "$@"; do [[ ,$ENABLED, == *,$s,* ]] && return 0; done
    return 1
}
enable_service() { :; }
trueorfalse() { local value=${!2:-$1}; [[ $value == True ]] && echo True || echo False; }
sudo() { "$@"; }
rabbitmqctl() { _rec rabbitmqctl "$@"; }
install_package() { _rec install_package "$@"; }
setup_develop() { _rec setup_develop "$@"; }
run_process() { _rec run_process "$1"; }
stop_process() { _rec stop_process "$1"; }
wait_for_service() { return 0; }
die() { echo "die: $*" >&2; exit 1; }
echo_summary() { :; }
get_python_exec_prefix() { echo /nonexistent; }
database_connection_url() { echo "sqlite:///$DATA_DIR/$1.sqlite"; }
recreate_database() { _rec recreate_database "$1"; }
drop_database() { _rec drop_database "$1"; }
configure_keystone_authtoken_middleware() { _rec authtoken "$(basename "$1")" "$2"; }
create_service_user() { _rec create_service_user "$@"; }
get_or_create_service() { _rec get_or_create_service "$1"; }
get_or_create_endpoint() { _rec get_or_create_endpoint "$1" "$3"; }
oslo-config-generator() { _rec oslo-config-generator; }
source "$ROOT/devstack/settings"
source "$ROOT/devstack/plugin.sh" "$PHASE" "$SUBPHASE"
'''


@pytest.fixture
def devstack(tmp_path):
    log = tmp_path / "log"
    log.mkdir()
    bindir = tmp_path / "bin"
    bindir.mkdir()
    # trusted-pools-manage is the real one, but rabbitmq setup only plans.
    manage = bindir / "trusted-pools-manage"
    run_manage = ('%s -c "import sys; from trusted_pools.cmd.manage '
                  'import main; sys.exit(main(sys.argv[1:]))"'
                  % sys.executable)
    manage.write_text(
        '#!/bin/sh\nprintf "manage|%%s\\n" "$*" >> "$LOG/calls"\n'
        'case "$*" in *"rabbitmq setup"*)\n'
        '    exec %s "$@" --dry-run >> "$LOG/manage-out";;\n'
        'esac\nexec %s "$@"\n' % (run_manage, run_manage))
    manage.chmod(0o755)
    (tmp_path / "data").mkdir()

    def run(phase: str, subphase: str = "", enabled: str =
            "tp-api,tp-cond,tp-agent,tp-placement-sync,keystone,rabbit,"
            "mysql", **extra: str) -> list[list[str]]:
        calls = log / "calls"
        if calls.exists():
            calls.unlink()
        env = dict(os.environ, ROOT=str(ROOT), LOG=str(log),
                   PYTHONPATH=str(ROOT), DEST=str(tmp_path),
                   DATA_DIR=str(tmp_path / "data"),
                   STACK_USER=getpass.getuser(), TRUSTED_POOLS_DIR=str(ROOT),
                   SERVICE_HOST="192.0.2.10", SERVICE_PROTOCOL="http",
                   NOVA_CONF=str(tmp_path / "nova.conf"),
                   TRUSTED_POOLS_CONF_DIR=str(tmp_path / "etc"),
                   TRUSTED_POOLS_BIN_DIR=str(bindir),
                   TRUSTED_POOLS_AGENT_HOST="compute-1",
                   PATH="%s:%s" % (bindir, os.environ["PATH"]),
                   KEYSTONE_SERVICE_URI="http://192.0.2.10/identity",
                   SERVICE_PASSWORD="secret", SERVICE_DOMAIN_NAME="Default",
                   SERVICE_PROJECT_NAME="service", REGION_NAME="RegionOne",
                   ENABLED=enabled, PYTHON=sys.executable, PHASE=phase, SUBPHASE=subphase, **extra)
        result = subprocess.run(["bash", "-c", _DEVSTACK], env=env,
                                text=True, capture_output=True, timeout=120)
        assert result.returncode == 0, result.stderr[-3000:]
        return [line.split("|") for line in calls.read_text().splitlines()
                ] if calls.exists() else []
    run.tmp_path = tmp_path
    return run


def _named(calls, name):
    return [c[1:] for c in calls if c[0] == name]


def test_install_installs_the_packages_and_the_project(devstack):
    calls = devstack("stack", "install")
    assert _named(calls, "install_package") == [
        ["swtpm", "swtpm-tools", "tpm2-tools", "libtss2-dev"]]
    assert len(_named(calls, "setup_develop")) == 1
    assert not _named(calls, "run_process")


def test_post_config_writes_configs_accounts_and_the_database(devstack):
    calls = devstack("stack", "post-config")
    ini = {tuple(c[:3]): c[3] for c in _named(calls, "iniset")}
    # Nova's scheduler gets the filter; every service its own bus user.
    assert ("nova.conf", "filter_scheduler", "available_filters",
            "trusted_pools.nova.scheduler.filters.TrustedHostFilter") in [
        tuple(c) for c in _named(calls, "iniadd")]
    assert ini[("nova.conf", "filter_scheduler", "enabled_filters")] == \
        "ComputeFilter,TrustedHostFilter"
    for conf in ("api.conf", "conductor.conf", "agent.conf"):
        assert ("%s" % conf, "DEFAULT", "transport_url") in ini
    assert ini[("placement-sync.conf", "trusted_pools_placement",
                "auth_url")] == "http://192.0.2.10/identity"
    assert ini[("trusted-pools.conf", "trusted_pools_api", "auth_strategy")
               ] == "keystone"
    # The conductor's key made by the product's own command, its public
    # half pinned for the agent.
    etc = devstack.tmp_path / "etc"
    assert (etc / "conductor-keys.pem").read_text().startswith(
        "-----BEGIN PUBLIC KEY-----")
    manage = [c[0] for c in _named(calls, "manage")]
    assert any(m.startswith("conductor-key generate") for m in manage)
    assert any(m.startswith("rabbitmq setup") for m in manage)
    # Keystone: the service user, the service and its endpoint.
    assert _named(calls, "get_or_create_service") == [["trusted-pools"]]
    assert _named(calls, "get_or_create_endpoint") == [
        ["trusted-pools", "http://192.0.2.10:9440"]]
    # The database is created and really synced.
    assert _named(calls, "recreate_database") == [["trusted_pools"]]
    assert any(m.startswith("--config-file") and "db sync" in m
               for m in manage)
    assert (devstack.tmp_path / "data" / "trusted_pools.sqlite").stat(
        ).st_size > 0
    # Without TRUSTED_POOLS_NOVA_KEY_MANAGER, Nova's key manager is left
    # alone.
    assert ("nova.conf", "key_manager", "backend") not in ini


def test_post_config_with_the_key_manager_configures_nova(devstack):
    calls = devstack("stack", "post-config",
                     TRUSTED_POOLS_NOVA_KEY_MANAGER="True")
    ini = {tuple(c[:3]): c[3] for c in _named(calls, "iniset")}
    assert ini[("nova.conf", "key_manager", "backend")] == "trusted_pools"
    assert ini[("nova.conf", "trusted_pools_key_manager", "host")] == \
        "compute-1"
    assert ini[("trusted-pools.conf", "key_service", "enabled")] == "True"


def test_extra_starts_the_four_services(devstack):
    calls = devstack("stack", "extra")
    assert [c[0] for c in _named(calls, "run_process")] == [
        "tp-api", "tp-cond", "tp-agent", "tp-placement-sync"]


def test_unstack_stops_them_and_clean_removes_what_stack_made(devstack):
    devstack("stack", "post-config")
    calls = devstack("unstack")
    assert [c[0] for c in _named(calls, "stop_process")] == [
        "tp-api", "tp-cond", "tp-agent", "tp-placement-sync"]
    assert (devstack.tmp_path / "etc").exists()
    calls = devstack("clean")
    assert not (devstack.tmp_path / "etc").exists()
    assert not (devstack.tmp_path / "data" / "trusted-pools").exists()
    assert _named(calls, "drop_database") == [["trusted_pools"]]
    removed = _named(calls, "rabbitmqctl")
    assert ["delete_vhost", "trusted-pools"] in removed
    assert ["delete_vhost", "trusted-pools-agent"] in removed
    assert ["delete_user", "tp-agent-compute-1"] in removed


def test_a_node_without_the_services_is_left_alone(devstack):
    for phase in (("stack", "install"), ("stack", "extra"), ("unstack",),
                  ("clean",)):
        assert devstack(*phase, enabled="nova,keystone") == []


def test_plugin_is_shellcheck_clean():
    shellcheck = shutil.which("shellcheck")
    assert shellcheck, "shellcheck is missing: tools/bootstrap.sh " \
        "installs it (apt-get install shellcheck)"
    result = subprocess.run(
        [shellcheck, "-s", "bash", str(ROOT / "devstack" / "plugin.sh"),
         str(ROOT / "devstack" / "settings")],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout
