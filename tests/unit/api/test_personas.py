"""Who may do what, through keystonemiddleware auth_token and oslo.policy.

Tokens are real keystonemiddleware tokens from its AuthTokenFixture (a
real Keystone cannot run here; see tests/api_fixtures.py): the middleware
validates each one and sets the identity headers the policy reads.
"""

from __future__ import annotations

import copy

import pytest

from tests.api_fixtures import error_of
from tests.unit.api.conftest import MEASURED_BOOT, add_host_with_verdict


def _create(client, persona="admin", name="boot", body=None):
    return client.post("/v1/policies", {
        "name": name, "kind": "measured_boot",
        "body": body or MEASURED_BOOT}, persona=persona)


def test_no_token_is_401(client):
    response = client.get("/v1/hosts", persona=None)
    assert response.status_code == 401


def test_forged_token_is_401(client):
    assert client.get("/v1/hosts", persona="not-a-token").status_code == 401


def test_forged_identity_headers_are_ignored(client, db):
    """A member who adds X-Roles: admin is still a member: auth_token
    replaces identity headers with the token's."""
    response = client.get("/v1/hosts", persona="member", headers={
        "X-Roles": "admin", "X-Service-Roles": "admin",
        "OpenStack-System-Scope": "all"})
    assert response.status_code == 403


def test_reader_cannot_create_or_assign_a_policy(client, db):
    response = _create(client, persona="reader")
    error = error_of(response)
    assert response.status_code == 403
    assert error["detail"] == ("Policy doesn't allow "
                               "trusted_pools:policy:create to be "
                               "performed.")
    assert db.list_policies() == []
    assert _create(client).status_code == 201
    response = client.put("/v1/groups/default/policies/boot",
                          {"version": None}, persona="reader")
    assert response.status_code == 403
    assert "trusted_pools:policy:assign" in error_of(response)["detail"]
    assert db.list_assignments() == []


def test_reader_reads_hosts_policies_verdicts(client, db):
    add_host_with_verdict(db, "compute-1")
    assert _create(client).status_code == 201
    for path in ("/v1/hosts", "/v1/hosts/compute-1",
                 "/v1/hosts/compute-1/verdicts", "/v1/policies",
                 "/v1/policies/boot", "/v1/groups/default/policies",
                 "/v1/verdicts", "/v1/keys"):
        assert client.get(path, persona="reader").status_code == 200, path


@pytest.mark.parametrize("method,path,rule", [
    ("GET", "/v1/hosts", "host:list"),
    ("GET", "/v1/hosts/compute-1", "host:get"),
    ("GET", "/v1/hosts/compute-1/verdicts", "host:verdict:list"),
    ("POST", "/v1/hosts", "host:create"),
    ("POST", "/v1/hosts/compute-1/attest", "host:attest"),
    ("POST", "/v1/hosts/compute-1/capture", "host:capture"),
    ("POST", "/v1/hosts/compute-1/reset-enrollment",
     "host:reset_enrollment"),
    ("DELETE", "/v1/hosts/compute-1", "host:delete"),
    ("GET", "/v1/policies", "policy:list"),
    ("GET", "/v1/policies/boot", "policy:get"),
    ("GET", "/v1/policies/boot/diff?from=1&to=1", "policy:diff"),
    ("POST", "/v1/policies", "policy:create"),
    ("GET", "/v1/groups/default/policies", "policy:assignment:list"),
    ("PUT", "/v1/groups/default/policies/boot", "policy:assign"),
    ("GET", "/v1/verdicts", "verdict:list"),
])
def test_member_of_a_project_sees_nothing(client, db, conductors, method,
                                          path, rule):
    add_host_with_verdict(db, "compute-1")
    assert _create(client).status_code == 201
    body = {"name": "compute-2"} if method == "POST" else None
    response = client.request(method, path, "member", body=body)
    error = error_of(response)
    assert response.status_code == 403
    assert error["code"] == "trusted-pools.policy.forbidden"
    assert error["detail"] == ("Policy doesn't allow trusted_pools:%s to "
                               "be performed." % rule)
    # Nothing reached the conductors, nothing leaked in the body.
    assert conductors.calls == []
    assert b"compute-1" not in response.body.replace(b"/compute-1", b"")


def test_admin_creates_assigns_lists_shows_diffs(client, db):
    first = _create(client)
    assert first.status_code == 201
    assert first.json["policy"]["version"] == 1
    assert first.json["policy"]["created_by"] == "cloud-admin"
    changed = copy.deepcopy(MEASURED_BOOT)
    changed["pcrs"]["sha256"]["0"] = "11" * 32
    changed["pcrs"]["sha256"]["2"] = "22" * 32
    second = _create(client, body=changed)
    assert second.json["policy"]["version"] == 2
    assigned = client.put("/v1/groups/default/policies/boot",
                          {"version": 1})
    assert assigned.status_code == 200
    assert assigned.json == {"assignment": {
        "group": "default", "policy": "boot", "version": 1}}
    listed = client.get("/v1/policies").json["policies"]
    assert [(p["name"], p["version"], p["kind"]) for p in listed] == [
        ("boot", 2, "measured_boot")]
    shown = client.get("/v1/policies/boot?version=1").json["policy"]
    assert shown["body"] == MEASURED_BOOT
    diff = client.get("/v1/policies/boot/diff?from=1&to=2").json["diff"]
    assert diff == {
        "removed": {"/pcrs/sha256/0": "00" * 32},
        "added": {"/pcrs/sha256/0": "11" * 32,
                  "/pcrs/sha256/2": "22" * 32}}
    assignments = client.get("/v1/groups/default/policies").json
    assert assignments == {"assignments": [
        {"group": "default", "policy": "boot", "version": 1}]}
    assert db.policies_for_group("default")[0].version == 1


def test_service_reads_verdicts_and_keys_only(client, db):
    add_host_with_verdict(db, "compute-1")
    assert client.get("/v1/verdicts", persona="service").status_code == 200
    assert client.get("/v1/keys", persona="service").status_code == 200
    assert client.get("/v1/hosts", persona="service").status_code == 403
    assert _create(client, persona="service").status_code == 403


def test_keys_for_any_authenticated_caller(client, db):
    for persona in ("admin", "reader", "member", "service"):
        response = client.get("/v1/keys", persona=persona)
        assert response.status_code == 200
        assert response.json == {"keys": []}
