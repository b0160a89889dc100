"""trusted-pools-api at microversion 1.1 against a real pool (swtpm hosts
and agents, a conductor over RabbitMQ, SQLite, keystonemiddleware with
its token fixture): enroll, attest and capture answer 202 Accepted with
the operation to poll, the poll shows the result, and the API's request
id is in the conductor's log of the work."""

from __future__ import annotations

import logging
import time

import pytest

from tests.api_fixtures import Client, auth_tokens, error_of  # noqa: F401
from tests.api_fixtures import pool_with_api
from tests.functional.conductor.test_enrollment_async import _Lines
from tests.pool_harness import ek_sha256

pytestmark = [pytest.mark.swtpm, pytest.mark.rabbitmq, pytest.mark.slow]

V11 = "trusted-pools 1.1"


@pytest.fixture
def pool_api(tmp_path, rabbit_conf, swtpm_pool, swtpm_ca,
             auth_tokens):  # noqa: F811
    pool, application = pool_with_api(tmp_path, rabbit_conf, swtpm_pool,
                                      swtpm_ca, 1)
    try:
        yield pool, Client(application)
    finally:
        pool.close()


def _poll(api: Client, location: str, timeout: float = 30) -> dict:
    path = location[location.index("/v1/"):]
    deadline = time.monotonic() + timeout
    while True:
        shown = api.get(path, version=V11)
        assert shown.status_code == 200, shown.body
        operation = shown.json["operation"]
        if operation["state"] != "pending":
            return operation
        assert time.monotonic() < deadline, operation
        time.sleep(0.1)


def test_operations_answer_202_and_the_poll_shows_the_result(pool_api):
    pool, api = pool_api
    (host,) = pool.hosts
    lines = _Lines()
    logger = logging.getLogger("trusted_pools.conductor")
    logger.addHandler(lines)
    previous = logger.level
    logger.setLevel(logging.INFO)
    try:
        accepted = api.post("/v1/hosts", {"name": host.name,
                                          "ek_sha256": ek_sha256(host.tpm)},
                            version=V11)
        assert accepted.status_code == 202, accepted.body
        assert accepted.json["operation"]["state"] == "pending"
        request_id = accepted.headers["X-OpenStack-Request-ID"]
        done = _poll(api, accepted.headers["Location"])
    finally:
        logger.removeHandler(lines)
        logger.setLevel(previous)
    assert done["state"] == "done", done
    assert done["request_id"] == request_id
    assert done["result"]["enrollment"]["ek_sha256"] == ek_sha256(host.tpm)
    assert api.get("/v1/hosts/" + host.name).json["host"]["state"] == \
        "enrolled"
    # The API's request id is on the conductor's lines for this work, on
    # the RPC thread and on the worker.
    mine = [line for line in lines.lines if request_id in line]
    assert any("Host %s enrolled" % host.name in line for line in mine), \
        lines.lines
    assert any("accepted as operation" in line for line in mine)

    captured = api.post("/v1/hosts/%s/capture" % host.name, version=V11)
    assert captured.status_code == 202
    policies = _poll(api, captured.headers["Location"])["result"]
    boot = policies["policies"]["measured_boot"]
    assert api.post("/v1/policies", {"name": "golden", "kind":
                                     "measured_boot", "body": boot}
                    ).status_code == 201
    assert api.put("/v1/groups/default/policies/golden",
                   {"version": None}).status_code == 200
    attested = api.post("/v1/hosts/%s/attest" % host.name, version=V11)
    assert attested.status_code == 202
    verdict = _poll(api, attested.headers["Location"])["result"]["verdict"]
    assert (verdict["status"], verdict["level"]) == ("trusted", 3)
    assert verdict["evidence_digest"]
    listed = api.get("/v1/hosts/%s/operations" % host.name,
                     version=V11, persona="reader").json["operations"]
    assert [o["kind"] for o in listed] == ["attest", "capture", "enroll"]


def test_a_refused_enrollment_is_a_failed_operation_with_the_reason(
        pool_api):
    pool, api = pool_api
    (host,) = pool.hosts
    accepted = api.post("/v1/hosts", {"name": host.name}, version=V11)
    assert accepted.status_code == 202
    failed = _poll(api, accepted.headers["Location"])
    assert failed["state"] == "failed" and failed["result"] is None
    assert failed["error"]["code"] == "trusted-pools.ek_not_approved"
    assert failed["error"]["status"] == 400
    assert ek_sha256(host.tpm) in failed["error"]["detail"]
    assert api.get("/v1/hosts/" + host.name).status_code == 404
