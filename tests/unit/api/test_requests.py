"""Validation, microversions, pagination and formats: every bad request
is a clean 400 (406 for an unsupported version) in the OpenStack error
format, and changes nothing."""

from __future__ import annotations

import json
import threading
import urllib.request

import pytest

from tests.api_fixtures import error_of, make_api_conf
from tests.unit.api.conftest import (MEASURED_BOOT, FakeConductors,
                                     add_host_with_verdict)
from trusted_pools.api import app as api_app
from trusted_pools.api.handlers import policies as policy_handlers
from trusted_pools.cmd import api as api_cmd
from trusted_pools import exception
from trusted_pools.api import errors


def _nothing_changed(db, conductors):
    assert db.list_policies() == []
    assert db.list_hosts() == []
    assert db.list_assignments() == []
    assert conductors.calls == []


@pytest.mark.parametrize("raw,where", [
    (b'{"name": "p", "kind": "measured_boot", "body": {', "not valid JSON"),
    (b'\xff\xfe', "not valid JSON"),
    (b'[]', "body: [] is not of type 'object'"),
])
def test_bad_json_is_400(client, db, conductors, raw, where):
    response = client.post("/v1/policies", raw=raw)
    error = error_of(response)
    assert response.status_code == 400
    assert where in error["detail"]
    _nothing_changed(db, conductors)


@pytest.mark.parametrize("path,body,field", [
    ("/v1/policies", {"name": "p", "kind": "measured_boot",
                      "body": MEASURED_BOOT, "owner": "x"}, "'owner'"),
    ("/v1/policies", {"name": "p", "kind": "tpm", "body": {}}, "body/kind"),
    ("/v1/policies", {"name": "p", "kind": "measured_boot"}, "'body'"),
    ("/v1/policies", {"name": "a/b", "kind": "measured_boot",
                      "body": MEASURED_BOOT}, "body/name"),
    ("/v1/hosts", {"name": "c1", "ek_sha256": "abc"}, "body/ek_sha256"),
    ("/v1/hosts", {"name": "c1", "ek": "00" * 32}, "'ek'"),
])
def test_unknown_and_bad_fields_are_400(client, db, conductors, path, body,
                                        field):
    response = client.post(path, body)
    assert response.status_code == 400
    assert field in error_of(response)["detail"]
    _nothing_changed(db, conductors)


def test_invalid_policy_body_is_400_naming_the_field(client, db,
                                                     conductors):
    response = client.post("/v1/policies", {
        "name": "p", "kind": "measured_boot",
        "body": {"kind": "measured_boot", "os_boot": {"kernels": 5}}})
    error = error_of(response)
    assert response.status_code == 400
    assert error["code"] == "trusted-pools.policy_invalid"
    assert "os_boot" in error["detail"]
    _nothing_changed(db, conductors)


def test_assignment_body_is_checked(client, db, conductors):
    assert client.post("/v1/policies", {"name": "boot",
                                        "kind": "measured_boot",
                                        "body": MEASURED_BOOT}
                       ).status_code == 201
    for body in ({"version": 0}, {"version": "1"}, {},
                 {"version": 1, "pinned": True}):
        response = client.put("/v1/groups/default/policies/boot", body)
        assert response.status_code == 400, body
        error_of(response)
    missing = client.put("/v1/groups/default/policies/nope",
                         {"version": None})
    assert missing.status_code == 404
    assert error_of(missing)["code"] == "trusted-pools.policy.not_found"
    assert db.list_assignments() == []


@pytest.mark.parametrize("header,status,code", [
    ("trusted-pools 1.0", 200, "1.0"),
    ("trusted-pools 1.1", 200, "1.1"),
    ("trusted-pools 1.2", 200, "1.2"),
    ("trusted-pools 1.3", 200, "1.3"),
    ("trusted-pools 1.4", 200, "1.4"),
    ("trusted-pools 1.5", 200, "1.5"),
    ("trusted-pools latest", 200, "1.5"),
    ("trusted-pools 1.99", 406, "trusted-pools.microversion.unsupported"),
    ("trusted-pools 2.0", 406, "trusted-pools.microversion.unsupported"),
    ("trusted-pools one.two", 400, "trusted-pools.microversion.invalid"),
    ("trusted-pools 1", 400, "trusted-pools.microversion.invalid"),
])
def test_microversions(client, header, status, code):
    response = client.get("/v1/policies", version=header)
    assert response.status_code == status
    assert response.headers["Vary"] == "OpenStack-API-Version"
    assert response.headers["OpenStack-API-Version"].startswith(
        "trusted-pools 1.")
    if status != 200:
        assert error_of(response)["code"] == code
    else:
        assert response.headers["OpenStack-API-Version"] == \
            "trusted-pools " + code


def test_unsupported_version_changes_nothing(client, db, conductors):
    response = client.post("/v1/policies", {
        "name": "p", "kind": "measured_boot", "body": MEASURED_BOOT},
        version="trusted-pools 1.7")
    assert response.status_code == 406
    _nothing_changed(db, conductors)


@pytest.mark.parametrize("query", ["limit=0", "limit=1001", "limit=-1",
                                   "limit=ten", "limit=1&limit=2",
                                   "marker=nobody", "colour=red"])
def test_bad_query_is_400(client, db, query):
    add_host_with_verdict(db, "compute-1")
    response = client.get("/v1/hosts?" + query)
    assert response.status_code == 400
    error_of(response)


def test_pagination_with_next_links(client, db):
    for i in range(5):
        add_host_with_verdict(db, "compute-%d" % i,
                              status="trusted" if i % 2 else "untrusted")
    first = client.get("/v1/hosts?limit=2").json
    assert [h["name"] for h in first["hosts"]] == ["compute-0",
                                                   "compute-1"]
    href = first["links"][0]["href"]
    assert first["links"][0]["rel"] == "next" and "marker=compute-1" in href
    second = client.get(href.replace("http://localhost", "")).json
    assert [h["name"] for h in second["hosts"]] == ["compute-2",
                                                    "compute-3"]
    last = client.get("/v1/hosts?limit=2&marker=compute-3").json
    assert [h["name"] for h in last["hosts"]] == ["compute-4"]
    assert last["links"] == []
    trusted = client.get("/v1/hosts?status=trusted").json["hosts"]
    assert [h["name"] for h in trusted] == ["compute-1", "compute-3"]
    assert trusted[0]["status"] == "trusted" and trusted[0]["level"] == 3
    assert trusted[0]["conductor"] == "conductor-a"
    assert trusted[0]["issued_at"].endswith("Z")


def test_host_detail_and_history(client, db):
    add_host_with_verdict(db, "compute-1", status="untrusted", level=2)
    host = client.get("/v1/hosts/compute-1").json["host"]
    assert (host["status"], host["level"]) == ("untrusted", 2)
    assert host["reasons"] == ["OS boot: kernel not allowed"]
    assert host["signed_result"] == "token-of-compute-1"
    assert host["ak_name"] is None
    history = client.get("/v1/hosts/compute-1/verdicts").json["verdicts"]
    assert len(history) == 1 and history[0]["level"] == 2
    verdicts = client.get("/v1/verdicts?since=2000-01-01T00:00:00Z").json
    assert verdicts["verdicts"][0]["host"] == "compute-1"
    assert client.get("/v1/verdicts?since=2999-01-01T00:00:00Z"
                      ).json == {"verdicts": []}
    assert client.get("/v1/verdicts?since=yesterday").status_code == 400


def test_not_found_and_method_not_allowed(client):
    missing = client.get("/v1/hosts/nobody")
    assert missing.status_code == 404
    assert error_of(missing)["code"] == "trusted-pools.host.not_found"
    assert client.get("/v1/nothing").status_code == 404
    wrong = client.request("PATCH", "/v1/hosts", "admin")
    assert wrong.status_code == 405
    assert wrong.headers["Allow"] == "GET, POST"


def test_host_operations_go_to_the_owner(client, db, conductors):
    add_host_with_verdict(db, "compute-1")
    assert client.post("/v1/hosts", {"name": "compute-1",
                                     "ek_sha256": "AB" * 32}
                       ).status_code == 201
    assert client.post("/v1/hosts/compute-1/reset-enrollment"
                       ).status_code == 202
    assert client.delete("/v1/hosts/compute-1").status_code == 204
    assert conductors.calls == [
        ("enroll_host", "compute-1", {"group": "default",
                                      "ek_sha256": "AB" * 32}),
        ("reset_enrollment", "compute-1", {}),
        ("reset_enrollment", "compute-1", {})]
    assert db.list_hosts() == []


def test_versions_and_healthcheck_need_no_token(client):
    root = client.get("/", persona=None)
    assert root.status_code == 200
    version = root.json["versions"][0]
    assert (version["id"], version["status"], version["min_version"],
            version["max_version"]) == ("v1", "CURRENT", "1.0", "1.5")
    assert client.get("/v1", persona=None).json["version"]["id"] == "v1"
    assert client.get("/healthcheck", persona=None).status_code == 200
    response = client.get("/v1/keys")
    assert response.headers["X-OpenStack-Request-ID"].startswith("req-")


def test_error_codes_by_meaning():
    assert errors.code_of(exception.HostNotFound(host="h")) == \
        "trusted-pools.host.not_found"
    assert errors.status_of(exception.EKChanged(
        host="h", approved="a", presented="b")) == 409
    assert errors.status_of(exception.EKNotApproved(
        host="h", presented="a", reason="r")) == 400
    assert errors.status_of(exception.TemporaryFailure(reason="r")) == 503


def test_body_diff_treats_lists_as_sets():
    added, removed = policy_handlers.body_diff(
        {"digests": {"/bin/sh": ["a", "b"]}, "x": 1},
        {"digests": {"/bin/sh": ["b", "c"], "/bin/ls": ["d"]}})
    assert added == {"/digests/~1bin~1sh": ["c"],
                     "/digests/~1bin~1ls": ["d"]}
    assert removed == {"/digests/~1bin~1sh": ["a"], "/x": 1}


def test_noauth_server_serves_over_http(db, caplog):
    """The console script's server, on a free port, in noauth mode (the
    embedded demo): it warns loudly and serves requests as admin."""
    conf = make_api_conf(auth_strategy="noauth")
    application = api_app.build(conf, db=db, conductors=FakeConductors())
    assert "does NOT authenticate" in caplog.text
    server = api_cmd.make_server("127.0.0.1", 0, application)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = "http://127.0.0.1:%d" % server.server_port
        request = urllib.request.Request(
            base + "/v1/policies", method="POST",
            data=json.dumps({"name": "boot", "kind": "measured_boot",
                             "body": MEASURED_BOOT}).encode(),
            headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert answer.status == 201
        with urllib.request.urlopen(base + "/v1/policies",
                                    timeout=10) as answer:
            assert json.load(answer)["policies"][0]["name"] == "boot"
    finally:
        server.shutdown()
        server.server_close()


def test_keys_are_the_registered_conductors_and_match_their_kid(client,
                                                                db):
    """Each conductor's key is served as a JWK whose kid is its
    thumbprint; a row whose stored kid is not its key's is not served."""
    from trusted_pools.protocol import keystore
    good = keystore.generate_signing_key()
    other = keystore.generate_signing_key("ES256")
    db.register_conductor("conductor-a",
                          public_key=keystore.public_key_pem(good),
                          key_id=keystore.key_id(good))
    db.register_conductor("conductor-b",
                          public_key=keystore.public_key_pem(other),
                          key_id=keystore.key_id(good))  # wrong kid
    db.register_conductor("conductor-c")  # registered before keys
    keys = client.get("/v1/keys", persona="member").json["keys"]
    assert keys == [keystore.public_jwk(good)]
    assert keys[0]["kty"] == "OKP" and keys[0]["crv"] == "Ed25519"
