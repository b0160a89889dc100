"""``openstack trusted ...`` against trusted-pools-api over a real pool:
swtpm hosts with their agents, a conductor on the real RabbitMQ bus,
SQLite, the API's own server on 127.0.0.1 behind keystonemiddleware
``auth_token`` (tokens from its AuthTokenFixture; a real Keystone cannot
run here). The operator's workflow, by the commands alone: enroll with
the approved EK hash, capture golden measurements from a good host, store
and assign them, attest, read the verdicts, and check a signed result
with the keys ``key list`` prints.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest

from tests.api_fixtures import auth_tokens, pool_with_api  # noqa: F401
from tests.osc_shell import plugin_visible, run_openstack
from tests.pool_harness import ek_sha256
from trusted_pools.protocol import keystore
from trusted_pools.protocol import results
from trusted_pools.cmd import api as api_cmd

pytestmark = [pytest.mark.swtpm, pytest.mark.rabbitmq, pytest.mark.slow]


@pytest.fixture(scope="module", autouse=True)
def _plugin(tmp_path_factory) -> None:
    plugin_visible(tmp_path_factory.mktemp("osc-plugin"))


@pytest.fixture
def pool_endpoint(tmp_path, rabbit_conf, swtpm_pool, swtpm_ca,
                  auth_tokens):  # noqa: F811
    pool, application = pool_with_api(tmp_path, rabbit_conf, swtpm_pool,
                                      swtpm_ca, 2, tamper=(1,))
    server = None
    try:
        server = api_cmd.make_server("127.0.0.1", 0, application)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        yield pool, "http://127.0.0.1:%d/" % server.server_port
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
        pool.close()


def openstack(endpoint: str, *argv: str, token: str = "admin"):
    return run_openstack(["--os-auth-type", "admin_token",
                          "--os-endpoint", endpoint, "--os-token", token,
                          *argv])


def as_json(endpoint: str, *argv: str, token: str = "admin") -> Any:
    result = openstack(endpoint, *argv, "-f", "json", token=token)
    assert result.code == 0, result.stderr
    return json.loads(result.stdout)


def test_operator_workflow_through_the_openstack_client(pool_endpoint,
                                                        tmp_path):
    pool, endpoint = pool_endpoint
    good, bad = pool.hosts

    refused = openstack(endpoint, "trusted", "host", "enroll", good.name)
    assert refused.code != 0
    assert "HTTP 400" in refused.stderr, refused.stderr
    assert ek_sha256(good.tpm) in refused.stderr  # the conductor's reason

    for host in (good, bad):
        enrolled = as_json(endpoint, "trusted", "host", "enroll", host.name,
                           "--ek-sha256", ek_sha256(host.tpm))
        assert (enrolled["name"], enrolled["state"],
                enrolled["conductor"]) == (host.name, "enrolled",
                                           "conductor-a")

    boot = tmp_path / "boot.json"
    captured = openstack(endpoint, "trusted", "policy", "capture",
                         good.name, "--kind", "measured_boot",
                         "--output", str(boot))
    assert captured.code == 0, captured.stderr
    created = as_json(endpoint, "trusted", "policy", "create", "golden",
                      "--kind", "measured_boot", str(boot))
    assert (created["version"], created["body"]) == (
        1, json.loads(boot.read_text()))
    assert as_json(endpoint, "trusted", "policy", "assign", "golden",
                   "--group", "default") == {
        "group": "default", "policy": "golden", "version": None}

    verdict = as_json(endpoint, "trusted", "host", "attest", good.name)
    assert (verdict["status"], verdict["level"]) == ("trusted", 3)
    tampered = as_json(endpoint, "trusted", "host", "attest", bad.name)
    assert tampered["status"] == "untrusted"
    # --no-wait: the pending operation at once, followed by its id.
    pending = as_json(endpoint, "trusted", "host", "attest", good.name,
                      "--no-wait")
    assert (pending["kind"], pending["host"]) == ("attest", good.name)
    deadline = time.monotonic() + 30
    while pending["state"] == "pending" and time.monotonic() < deadline:
        time.sleep(0.2)
        pending = as_json(endpoint, "trusted", "host", "operation", "show",
                          good.name, pending["id"], token="reader")
    assert pending["state"] == "done", pending
    assert pending["result"]["verdict"]["status"] == "trusted"
    shown = as_json(endpoint, "trusted", "host", "show", bad.name,
                    token="reader")
    assert any("not allowed by policy 'golden'" in reason
               for reason in shown["reasons"]), shown["reasons"]

    listed = as_json(endpoint, "trusted", "host", "list", token="reader")
    assert {h["Name"]: h["Status"] for h in listed} == {
        good.name: "trusted", bad.name: "untrusted"}

    # The keys `key list` prints verify what the conductor signed.
    keys = as_json(endpoint, "trusted", "key", "list", token="service")
    pinned = {k["Kid"]: keystore.public_key_from_jwk(
        {"kty": k["Kty"], "crv": k["Crv"], "x": k["X"], "kid": k["Kid"]})
        for k in keys}
    signed = as_json(endpoint, "trusted", "host", "show", good.name,
                     "-c", "signed_result")["signed_result"]
    checked = results.verify_result(signed, pinned, now=int(time.time()))
    assert (checked.host, checked.status.value) == (good.name, "trusted")

    assert openstack(endpoint, "trusted", "host", "reset-enrollment",
                     bad.name).code == 0
    assert as_json(endpoint, "trusted", "host", "show",
                   bad.name)["state"] == "enrolling"
    assert openstack(endpoint, "trusted", "host", "delete",
                     bad.name).code == 0
    gone = openstack(endpoint, "trusted", "host", "show", bad.name)
    assert gone.code != 0 and "HTTP 404" in gone.stderr
