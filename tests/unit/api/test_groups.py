"""Day-2 operations on host groups (microversion 1.2): move a host, list
groups, unassign a policy; an assignment to a group no host is in, and an
enroll that names another group for a known host, are refused."""

from __future__ import annotations

import pytest

from tests.api_fixtures import error_of
from tests.unit.api.conftest import MEASURED_BOOT, add_host_with_verdict

V12 = "trusted-pools 1.2"


def _policy(client, name="boot"):
    response = client.post("/v1/policies", {
        "name": name, "kind": "measured_boot", "body": MEASURED_BOOT})
    assert response.status_code == 201, response.body


def test_move_a_host_to_another_group(client, db):
    add_host_with_verdict(db, "compute-1")
    response = client.request("PATCH", "/v1/hosts/compute-1", "admin",
                              body={"group": "gold"}, version=V12)
    assert response.status_code == 200, response.body
    assert response.json["host"]["group"] == "gold"
    assert response.json["host"]["status"] == "trusted"
    assert db.get_host_by_name("compute-1").group == "gold"


@pytest.mark.parametrize("body", [{}, {"group": ""}, {"group": "a/b"},
                                  {"group": "gold", "state": "enrolled"},
                                  {"group": 5}])
def test_move_body_is_checked(client, db, body):
    add_host_with_verdict(db, "compute-1")
    response = client.request("PATCH", "/v1/hosts/compute-1", "admin",
                              body=body, version=V12)
    assert response.status_code == 400, body
    error_of(response)
    assert db.get_host_by_name("compute-1").group == "default"


def test_move_needs_1_2_and_admin_and_a_known_host(client, db):
    add_host_with_verdict(db, "compute-1")
    old = client.request("PATCH", "/v1/hosts/compute-1", "admin",
                         body={"group": "gold"}, version="trusted-pools 1.1")
    assert old.status_code == 404
    assert error_of(old)["code"] == "trusted-pools.resource.not_found"
    reader = client.request("PATCH", "/v1/hosts/compute-1", "reader",
                            body={"group": "gold"}, version=V12)
    assert reader.status_code == 403
    assert "trusted_pools:host:update" in error_of(reader)["detail"]
    missing = client.request("PATCH", "/v1/hosts/nobody", "admin",
                             body={"group": "gold"}, version=V12)
    assert missing.status_code == 404
    assert db.get_host_by_name("compute-1").group == "default"


def test_list_groups_with_hosts_and_assignments(client, db):
    add_host_with_verdict(db, "compute-1")
    add_host_with_verdict(db, "compute-2")
    db.update_host_group(db.get_host_by_name("compute-2").id, "gold")
    _policy(client)
    assert client.put("/v1/groups/gold/policies/boot", {"version": 1},
                      version=V12).status_code == 200
    assert client.put("/v1/groups/staging/policies/boot",
                      {"version": None, "allow_empty_group": True},
                      version=V12).status_code == 200
    response = client.get("/v1/groups", persona="reader", version=V12)
    assert response.status_code == 200, response.body
    assert response.json["groups"] == [
        {"name": "default", "hosts": 1, "assignments": []},
        {"name": "gold", "hosts": 1, "assignments": [
            {"group": "gold", "policy": "boot", "version": 1}]},
        {"name": "staging", "hosts": 0, "assignments": [
            {"group": "staging", "policy": "boot", "version": None}]}]
    assert client.get("/v1/groups", persona="member",
                      version=V12).status_code == 403
    assert client.get("/v1/groups", version="trusted-pools 1.1"
                      ).status_code == 404


def test_assignment_to_a_group_no_host_is_in_is_refused(client, db):
    add_host_with_verdict(db, "compute-1")
    _policy(client)
    typo = client.put("/v1/groups/defualt/policies/boot",
                      {"version": None}, version=V12)
    assert typo.status_code == 404
    error = error_of(typo)
    assert error["code"] == "trusted-pools.group.not_found"
    assert "allow_empty_group" in error["detail"]
    assert db.list_assignments() == []
    # Before 1.2 the old behaviour stands (and the new field is unknown).
    assert client.put("/v1/groups/other/policies/boot",
                      {"version": None, "allow_empty_group": True}
                      ).status_code == 400
    assert client.put("/v1/groups/other/policies/boot",
                      {"version": None}).status_code == 200


def test_unassign(client, db):
    add_host_with_verdict(db, "compute-1")
    _policy(client)
    assert client.put("/v1/groups/default/policies/boot", {"version": None},
                      version=V12).status_code == 200
    reader = client.delete("/v1/groups/default/policies/boot",
                           persona="reader", version=V12)
    assert reader.status_code == 403
    assert len(db.list_assignments()) == 1
    done = client.delete("/v1/groups/default/policies/boot", version=V12)
    assert done.status_code == 204
    assert db.list_assignments() == []
    again = client.delete("/v1/groups/default/policies/boot", version=V12)
    assert again.status_code == 404
    assert error_of(again)["code"] == "trusted-pools.policy.not_found"


def test_enroll_naming_another_group_for_a_known_host_is_refused(
        client, db, conductors):
    add_host_with_verdict(db, "compute-1")
    response = client.post("/v1/hosts", {"name": "compute-1",
                                         "group": "gold"}, version=V12)
    assert response.status_code == 409
    error = error_of(response)
    assert error["code"] == "trusted-pools.host.group_conflict"
    assert "host set --group gold compute-1" in error["detail"]
    assert conductors.calls == []
    # Its own group, or none, goes through to the conductor.
    same = client.post("/v1/hosts", {"name": "compute-1",
                                     "group": "default"}, version=V12)
    assert same.status_code == 202, same.body
    assert [c[0] for c in conductors.calls] == ["enroll_host"]
