"""trusted-pools-api against a real pool: swtpm hosts with their agents, a
conductor over the real RabbitMQ bus, a real (SQLite) database, and the
API's whole pipeline behind keystonemiddleware auth_token (tokens from its
AuthTokenFixture: a real Keystone cannot run here, see
tests/api_fixtures.py).

It shows the API's way to the TPMs: enroll and attest go to the conductor
that owns the host on the hash ring; policy changes go straight to the
database and the conductor judges with them; the JWKS the API serves
verifies the verdicts the conductor signed.
"""

from __future__ import annotations

import time

import pytest

from tests.api_fixtures import Client, auth_tokens, error_of  # noqa: F401
from tests.api_fixtures import pool_with_api
from tests.pool_harness import ek_sha256
from trusted_pools.protocol import keystore
from trusted_pools.protocol import results

pytestmark = [pytest.mark.swtpm, pytest.mark.rabbitmq, pytest.mark.slow]


@pytest.fixture
def pool_api(tmp_path, rabbit_conf, swtpm_pool, swtpm_ca,
             auth_tokens):  # noqa: F811
    pool, application = pool_with_api(tmp_path, rabbit_conf, swtpm_pool,
                                      swtpm_ca, 2, tamper=(1,))
    try:
        yield pool, Client(application)
    finally:
        pool.close()


def test_enroll_attest_show_and_verify_with_jwks(pool_api):
    pool, api = pool_api
    good, bad = pool.hosts
    # Without the operator's EK approval: refused with the conductor's
    # reason (the hash the TPM presents), nothing stored.
    refused = api.post("/v1/hosts", {"name": good.name})
    error = error_of(refused)
    assert refused.status_code == 400
    assert error["code"] == "trusted-pools.ek_not_approved", error
    assert "Traceback" not in error["detail"], error
    assert ek_sha256(good.tpm) in error["detail"]
    assert api.get("/v1/hosts/" + good.name).status_code == 404

    for host in (good, bad):
        created = api.post("/v1/hosts", {"name": host.name,
                                         "ek_sha256": ek_sha256(host.tpm)})
        assert created.status_code == 201, created.body
        shown = created.json["host"]
        assert (shown["name"], shown["state"], shown["conductor"]) == (
            host.name, "enrolled", "conductor-a")

    # Golden measurements from the good host, stored and assigned
    # through the API (the database), judged with by the conductor.
    captured = api.post("/v1/hosts/%s/capture" % good.name)
    assert captured.status_code == 200, captured.body
    boot = captured.json["policies"]["measured_boot"]
    assert api.post("/v1/policies", {"name": "golden", "kind":
                                     "measured_boot", "body": boot}
                    ).status_code == 201
    assert api.put("/v1/groups/default/policies/golden",
                   {"version": None}).status_code == 200

    attested = api.post("/v1/hosts/%s/attest" % good.name)
    assert attested.status_code == 200, attested.body
    verdict = attested.json["verdict"]
    assert (verdict["status"], verdict["level"]) == ("trusted", 3)
    assert verdict["evidence_digest"]

    tampered = api.post("/v1/hosts/%s/attest" % bad.name).json["verdict"]
    assert tampered["status"] == "untrusted"
    shown = api.get("/v1/hosts/" + bad.name, persona="reader").json["host"]
    assert (shown["status"], shown["level"]) == ("untrusted",
                                                 tampered["level"])
    assert any("not allowed by policy 'golden'" in reason
               for reason in shown["reasons"]), shown["reasons"]
    assert shown["ek_sha256"] == ek_sha256(bad.tpm)

    # The conductor published its key when it registered; the API serves
    # it, and it verifies what the conductor signed.
    keys = api.get("/v1/keys", persona="service").json["keys"]
    assert [(k["kty"], k["crv"]) for k in keys] == [("OKP", "Ed25519")]
    pinned = {k["kid"]: keystore.public_key_from_jwk(k) for k in keys}
    good_shown = api.get("/v1/hosts/" + good.name).json["host"]
    checked = results.verify_result(good_shown["signed_result"], pinned,
                                    now=int(time.time()))
    assert (checked.host, checked.status.value) == (good.name, "trusted")

    listed = api.get("/v1/hosts", persona="reader").json["hosts"]
    assert {h["name"]: h["status"] for h in listed} == {
        good.name: "trusted", bad.name: "untrusted"}

    # A member of a tenant project gets none of it.
    for path in ("/v1/hosts", "/v1/hosts/" + good.name, "/v1/verdicts",
                 "/v1/policies"):
        assert api.get(path, persona="member").status_code == 403

    assert api.post("/v1/hosts/%s/reset-enrollment" % bad.name
                     ).status_code == 202
    assert api.get("/v1/hosts/" + bad.name).json["host"]["state"] == \
        "enrolling"
    assert api.delete("/v1/hosts/" + bad.name).status_code == 204
    assert api.get("/v1/hosts/" + bad.name).status_code == 404
