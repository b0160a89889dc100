"""``openstack trusted ...`` end to end against trusted-pools-api.

The real ``openstack`` shell (python-openstackclient, run in this process
with the plugin registered from this tree's setup.cfg, see
tests/osc_shell.py) talks HTTP to the API's own server
(``trusted_pools.cmd.api.make_server``) on 127.0.0.1 in a thread, with the
whole pipeline behind keystonemiddleware ``auth_token``: tokens come from
keystonemiddleware's AuthTokenFixture (a real Keystone cannot run here),
which replaces only the token fetch, so each request's token is still
validated by the middleware and judged by oslo.policy. The shell
authenticates the way an operator with a token does:
``--os-auth-type admin_token --os-endpoint URL --os-token TOKEN``.

The database is SQLite with the real migrations. Conductors are not
running: these commands (policies, host and verdict reads, keys) never
call one; enroll/attest/capture through real conductors are the API's
functional tests.
"""

from __future__ import annotations

import datetime
import json
import threading
from typing import Any, Iterator

import pytest

from tests.api_fixtures import auth_tokens, make_api_conf  # noqa: F401
from tests.osc_shell import plugin_visible, run_openstack
from trusted_pools.api import app as api_app
from trusted_pools.protocol import keystore
from trusted_pools.cmd import api as api_cmd
from trusted_pools.protocol.hash_ring import HashRing
from trusted_pools.db import api as db_api
from trusted_pools.db import migration

BOOT_V1 = {"kind": "measured_boot", "pcrs": {"sha256": {"0": "00" * 32}}}
BOOT_V2 = {"kind": "measured_boot",
           "pcrs": {"sha256": {"0": "00" * 32, "7": "77" * 32}}}


class NoConductors:
    """The API's conductor access, for commands that need none: the ring
    (a host's owner is shown) and no calls."""

    def ring(self) -> HashRing:
        return HashRing(["conductor-a"])

    def owner(self, host: str) -> str:
        return "conductor-a"

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("no conductor call expected, got %s" % method)


@pytest.fixture(scope="module", autouse=True)
def _plugin(tmp_path_factory) -> None:
    plugin_visible(tmp_path_factory.mktemp("osc-plugin"))


@pytest.fixture
def db(tmp_path) -> Iterator[db_api.Connection]:
    connection = db_api.Connection(db_api.make_context_manager(
        "sqlite:///%s" % (tmp_path / "api.sqlite")))
    migration.upgrade(engine=connection.get_engine())
    try:
        yield connection
    finally:
        connection.dispose()


@pytest.fixture
def endpoint(db, auth_tokens) -> Iterator[str]:  # noqa: F811
    """The API served on 127.0.0.1; pages of two items so every list
    longer than that is fetched by following ``next`` links."""
    conf = make_api_conf()
    conf.set_override("default_limit", 2, group="trusted_pools_api")
    conf.set_override("max_limit", 2, group="trusted_pools_api")
    server = api_cmd.make_server(
        "127.0.0.1", 0, api_app.build(conf, db=db, conductors=NoConductors()))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield "http://127.0.0.1:%d/" % server.server_port
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def openstack(endpoint: str, token: str, *argv: str):
    return run_openstack(["--os-auth-type", "admin_token",
                          "--os-endpoint", endpoint, "--os-token", token,
                          *argv])


def openstack_json(endpoint: str, *argv: str, token: str = "admin") -> Any:
    """Run a command with ``-f json`` as admin; its parsed output."""
    result = openstack(endpoint, token, *argv, "-f", "json")
    assert result.code == 0, result.stderr
    return json.loads(result.stdout)


def _write(tmp_path, name: str, body: Any) -> str:
    path = tmp_path / name
    path.write_text(json.dumps(body))
    return str(path)


def _iso(value: datetime.datetime) -> str:
    return value.astimezone(datetime.timezone.utc).isoformat().replace(
        "+00:00", "Z")


def test_policy_create_list_show_diff_assign(endpoint, db, tmp_path):
    created = openstack_json(endpoint, "trusted", "policy", "create",
                             "golden", "--kind", "measured_boot",
                             _write(tmp_path, "v1.json", BOOT_V1))
    stored = db.get_policy("golden", 1)
    assert created == {"name": "golden", "kind": "measured_boot",
                       "version": 1, "body": BOOT_V1,
                       "created_by": stored.created_by,
                       "created_at": _iso(stored.created_at)}
    assert stored.body == BOOT_V1
    assert "cloud-admin" in stored.created_by  # the token's user

    again = openstack_json(endpoint, "trusted", "policy", "create",
                           "golden", "--kind", "measured_boot",
                           _write(tmp_path, "v2.json", BOOT_V2))
    assert again["version"] == 2 and db.get_policy("golden").version == 2
    for name in ("a-first", "m-middle", "z-last"):  # 4 policies: 2 pages
        openstack_json(endpoint, "trusted", "policy", "create", name,
                       "--kind", "measured_boot",
                       _write(tmp_path, name + ".json", BOOT_V1))

    listed = openstack_json(endpoint, "trusted", "policy", "list")
    newest = {}
    for record in db.list_policies():
        newest[record.name] = record
    assert listed == [{"Name": p.name, "Kind": "measured_boot",
                       "Version": p.version,
                       "Created At": _iso(p.created_at),
                       "Created By": p.created_by}
                      for p in sorted(newest.values(),
                                      key=lambda p: p.name)]
    assert [p["Name"] for p in listed] == ["a-first", "golden", "m-middle",
                                           "z-last"]
    assert [p["Name"] for p in openstack_json(
        endpoint, "trusted", "policy", "list", "--marker", "a-first",
        "--limit", "2")] == ["golden", "m-middle"]

    shown = openstack_json(endpoint, "trusted", "policy", "show", "golden",
                           "--policy-version", "1")
    assert (shown["version"], shown["body"]) == (1, BOOT_V1)
    assert openstack_json(endpoint, "trusted", "policy", "show",
                          "golden")["body"] == BOOT_V2

    diff = openstack_json(endpoint, "trusted", "policy", "diff", "golden",
                          "--from", "1", "--to", "2")
    assert diff == {"added": {"/pcrs/sha256/7": "77" * 32}, "removed": {}}

    # No host is in any group yet: a group name is refused as a likely
    # typo unless the operator says it is meant.
    refused = openstack(endpoint, "admin", "trusted", "policy", "assign",
                        "golden", "--group", "default")
    assert refused.code != 0
    assert "No host is in group default" in refused.stderr
    assert db.list_assignments() == []
    assigned = openstack_json(endpoint, "trusted", "policy", "assign",
                              "golden", "--group", "default",
                              "--policy-version", "1", "--allow-empty-group")
    assert assigned == {"group": "default", "policy": "golden",
                        "version": 1}
    [assignment] = db.list_assignments("default")
    assert (assignment.policy_name, assignment.policy_version) == (
        "golden", 1)
    assert openstack_json(endpoint, "trusted", "group", "policy", "list",
                          "default") == [{"Group": "default",
                                          "Policy": "golden",
                                          "Version": 1}]
    # Without --version the group follows the newest version.
    openstack_json(endpoint, "trusted", "policy", "assign", "golden",
                   "--group", "default", "--allow-empty-group")
    assert db.list_assignments("default")[0].policy_version is None
    # Tables say what null means; -f json keeps the API's null.
    table = openstack(endpoint, "admin", "trusted", "group", "policy",
                      "list", "default")
    assert table.code == 0 and "| default | golden | latest  |" in \
        table.stdout, table.stdout


def _add_host(db: db_api.Connection, name: str, group: str, status: str,
              reasons: list[str]) -> db_api.Host:
    host = db.create_host(name, state="enrolled", group=group)
    now = datetime.datetime.now(datetime.timezone.utc).replace(
        microsecond=0)
    db.add_verdicts([db_api.NewVerdict(
        host_id=host.id, status=status, level=3 if status == "trusted"
        else 0, issued_at=now, expires_at=now + datetime.timedelta(
            seconds=180), reasons=reasons, signed_result="jws-of-" + name)])
    return host


def test_host_and_verdict_lists_match_the_database(endpoint, db):
    for index in range(5):  # three pages of two
        _add_host(db, "compute-%d" % index, "default" if index % 2 else
                  "gpu", "trusted" if index != 3 else "untrusted",
                  [] if index != 3 else ["OS boot: kernel not allowed"])

    listed = openstack_json(endpoint, "trusted", "host", "list", "--long")
    hosts = db.list_hosts()
    latest = {v.host_id: v for v in db.latest_verdicts(
        [h.id for h in hosts])}
    assert listed == [
        {"Name": h.hostname, "UUID": h.uuid, "Group": h.group,
         "State": "enrolled", "Status": latest[h.id].status,
         "Level": latest[h.id].level,
         "Issued At": _iso(latest[h.id].issued_at),
         "Expires At": _iso(latest[h.id].expires_at),
         "Conductor": "conductor-a"}
        for h in sorted(hosts, key=lambda h: h.hostname)]

    assert [h["Name"] for h in openstack_json(
        endpoint, "trusted", "host", "list", "--status", "untrusted")] == [
        "compute-3"]
    assert [h["Name"] for h in openstack_json(
        endpoint, "trusted", "host", "list", "--group", "gpu")] == [
        "compute-0", "compute-2", "compute-4"]
    assert [h["Name"] for h in openstack_json(
        endpoint, "trusted", "host", "list", "--limit", "2",
        "--marker", "compute-0")] == ["compute-1", "compute-2"]

    shown = openstack_json(endpoint, "trusted", "host", "show", "compute-3")
    assert (shown["name"], shown["status"], shown["level"],
            shown["reasons"], shown["signed_result"]) == (
        "compute-3", "untrusted", 0, ["OS boot: kernel not allowed"],
        "jws-of-compute-3")

    history = openstack_json(endpoint, "trusted", "host", "verdict", "list",
                             "compute-3", "--long")
    assert [(v["Status"], v["Reasons"]) for v in history] == [
        ("untrusted", ["OS boot: kernel not allowed"])]

    verdicts = openstack_json(endpoint, "trusted", "verdict", "list",
                              "--since", "2000-01-01T00:00:00Z")
    assert sorted((v["Host"], v["Status"]) for v in verdicts) == sorted(
        (h.hostname, latest[h.id].status) for h in hosts)
    assert openstack_json(endpoint, "trusted", "verdict", "list",
                          "--since", "2999-01-01T00:00:00Z") == []


def test_key_list_is_the_conductors_jwks(endpoint, db):
    key = keystore.generate_signing_key()
    db.register_conductor("conductor-a",
                          public_key=keystore.public_key_pem(key),
                          key_id=keystore.key_id(key))
    jwk = keystore.public_jwk(key)
    assert openstack_json(endpoint, "trusted", "key", "list",
                          token="service") == [
        {"Kid": jwk["kid"], "Kty": "OKP", "Crv": "Ed25519", "X": jwk["x"]}]


def test_reader_cannot_create_a_policy(endpoint, db, tmp_path):
    result = openstack(endpoint, "reader", "trusted", "policy", "create",
                       "golden", "--kind", "measured_boot",
                       _write(tmp_path, "v1.json", BOOT_V1))
    assert result.code != 0
    assert "Policy doesn't allow trusted_pools:policy:create to be " \
        "performed." in result.stderr, result.stderr
    assert "HTTP 403" in result.stderr and "Traceback" not in result.stderr
    assert db.list_policies() == []
    # The reader may read.
    assert openstack_json(endpoint, "trusted", "policy", "list",
                          token="reader") == []


def test_api_errors_and_bad_tokens_are_named(endpoint, db, tmp_path):
    missing = openstack(endpoint, "admin", "trusted", "host", "show",
                        "no-such-host")
    assert missing.code != 0
    assert "HTTP 404" in missing.stderr and "no-such-host" in \
        missing.stderr, missing.stderr

    invalid = openstack(endpoint, "admin", "trusted", "policy", "create",
                        "broken", "--kind", "measured_boot",
                        _write(tmp_path, "bad.json", {"kind": "runtime"}))
    assert invalid.code != 0 and "HTTP 400" in invalid.stderr, \
        invalid.stderr
    assert db.list_policies() == []

    forged = openstack(endpoint, "not-a-token", "trusted", "policy", "list")
    assert forged.code != 0 and "HTTP 401" in forged.stderr, forged.stderr

    not_json = tmp_path / "not.json"
    not_json.write_text("{")
    local = openstack(endpoint, "admin", "trusted", "policy", "create", "x",
                      "--kind", "runtime", str(not_json))
    assert local.code != 0 and "is not valid JSON" in local.stderr
