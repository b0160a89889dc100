"""trusted-pools-api at microversion 1.3 against a real pool (a swtpm
host and its agent, a conductor over RabbitMQ, SQLite, keystonemiddleware
tokens): an instance challenge, a deep attestation and a vTPM report go
over conductor RPC 3.3 (and agent RPC 1.4, signed) to the host's owner;
deep-attest and the report run as host operations on its worker pool."""

from __future__ import annotations

import base64
import hashlib
import uuid

import pytest

from tests.api_fixtures import Client, auth_tokens, error_of  # noqa: F401
from tests.api_fixtures import pool_with_api
from tests.functional.api.test_api_operations import _poll
from tests.pool_harness import ek_sha256

pytestmark = [pytest.mark.swtpm, pytest.mark.rabbitmq, pytest.mark.slow]

V12 = "trusted-pools 1.3"


@pytest.fixture
def pool_api(tmp_path, rabbit_conf, swtpm_pool, swtpm_ca,
             auth_tokens):  # noqa: F811
    pool, application = pool_with_api(tmp_path, rabbit_conf, swtpm_pool,
                                      swtpm_ca, 1)
    try:
        api = Client(application)
        (host,) = pool.hosts
        enrolled = api.post("/v1/hosts", {"name": host.name,
                                          "ek_sha256": ek_sha256(host.tpm)},
                            version=V12)
        assert _poll(api, enrolled.headers["Location"])["state"] == "done"
        attested = api.post("/v1/hosts/%s/attest" % host.name, version=V12)
        verdict = _poll(api, attested.headers["Location"])["result"][
            "verdict"]
        assert verdict["status"] == "trusted", verdict
        yield pool, api, host.name
    finally:
        pool.close()


def test_challenge_deep_attest_and_vtpm_report_over_the_bus(pool_api):
    pool, api, host = pool_api
    instance = str(uuid.uuid4())
    challenged = api.post("/v1/instances/%s/challenge" % instance,
                          {"host": host}, version=V12)
    assert challenged.status_code == 201, challenged.body
    nonce = base64.b64decode(challenged.json["challenge"]["nonce"])
    assert len(nonce) == 32
    # Evidence that cannot verify, for a trusted host: the host quote is
    # asked and verified, the operation is done, the instance has an error
    # and no verdict, and nothing is stored for it.
    accepted = api.post("/v1/hosts/%s/deep-attest" % host, {"instances": [{
        "instance": instance, "vm_quote": "AAAA", "vm_signature": "AAAA",
        "vm_pcrs": {"sha256": {"0": "00" * 32}},
        "vtpm_certificate": {"ca": {}}}]}, version=V12)
    assert accepted.status_code == 202, accepted.body
    done = _poll(api, accepted.headers["Location"])
    assert (done["kind"], done["state"]) == ("deep_attest", "done"), done
    (entry,) = done["result"]["instances"]
    assert entry["instance"] == instance and "verdict" not in entry
    assert entry["error"]["type"]
    missing = api.get("/v1/instances/%s/verdict" % instance, version=V12)
    assert missing.status_code == 404
    # The agent (vTPMs not enabled in the pool) reports none, signed
    # request over agent RPC 1.4.
    refreshed = api.post("/v1/hosts/%s/vtpms" % host, version=V12)
    assert refreshed.status_code == 202, refreshed.body
    listed = _poll(api, refreshed.headers["Location"])
    assert (listed["kind"], listed["state"]) == ("list_vtpms", "done")
    shown = api.get("/v1/hosts/%s/vtpms" % host, version=V12,
                    persona="reader")
    assert shown.status_code == 200, shown.body
    report = shown.json["vtpms"]
    assert report["operation"] == listed["id"]
    assert (report["host"], report["source"], report["enabled"],
            report["vtpms"]) == (host, "host-reported", False, [])
    kinds = [o["kind"] for o in api.get(
        "/v1/hosts/%s/operations" % host, version=V12).json["operations"]]
    assert kinds[:2] == ["list_vtpms", "deep_attest"]


def test_certify_binding_key_answers_with_an_operation(pool_api):
    pool, api, host = pool_api
    accepted = api.post("/v1/hosts/%s/certify-binding-key" % host,
                        version=V12)
    assert accepted.status_code == 202, accepted.body
    done = _poll(api, accepted.headers["Location"])
    assert (done["kind"], done["state"]) == ("certify", "done"), done
    assert done["result"]["binding_key"]["host"] == host
    waited = api.post("/v1/hosts/%s/certify-binding-key" % host,
                      version="trusted-pools 1.1")
    assert waited.status_code == 200, waited.body
    assert waited.json["binding_key"]["host"] == host


def test_challenge_names_the_image_over_rpc_3_4(pool_api):
    """At 1.5 the caller's image goes over conductor RPC 3.4 to the host's
    owner and is kept with the nonce in the database (it picks the
    image's instance policy when the guest's quote is judged)."""
    pool, api, host = pool_api
    instance, image = str(uuid.uuid4()), str(uuid.uuid4())
    challenged = api.post("/v1/instances/%s/challenge" % instance,
                          {"host": host, "image": image},
                          version="trusted-pools 1.5")
    assert challenged.status_code == 201, challenged.body
    assert challenged.json["challenge"]["image"] == image
    nonce = base64.b64decode(challenged.json["challenge"]["nonce"])
    stored = pool.db.instance_challenges([hashlib.sha256(nonce).hexdigest()])
    [challenge] = stored.values()
    assert (challenge.instance, challenge.host, challenge.image) == (
        instance, host, image)
