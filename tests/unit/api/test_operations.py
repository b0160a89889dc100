"""Host operations through the API (microversion 1.1), and the 1.0
behaviour kept by waiting (the conductor is a stand-in that records the
operation as its worker would; the real one is in
tests/functional/api/test_api_operations.py)."""

from __future__ import annotations

from tests.api_fixtures import error_of
from tests.unit.api.conftest import add_host_with_verdict
from trusted_pools import exception

V11 = "trusted-pools 1.1"


def test_enroll_answers_202_with_an_operation_to_poll(client, db,
                                                      conductors):
    conductors.finish = False
    accepted = client.post("/v1/hosts", {"name": "compute-1"}, version=V11)
    assert accepted.status_code == 202, accepted.body
    operation = accepted.json["operation"]
    assert (operation["host"], operation["kind"], operation["state"]) == (
        "compute-1", "enroll", "pending")
    location = accepted.headers["Location"]
    assert location.endswith("/v1/hosts/compute-1/operations/"
                             + operation["id"])
    assert operation["links"] == [{"rel": "self", "href": location}]
    # The API's request id went to the conductor with the call.
    assert operation["request_id"] == \
        accepted.headers["X-OpenStack-Request-ID"]

    path = location[location.index("/v1/"):]
    assert client.get(path, version=V11).json["operation"]["state"] == \
        "pending"
    db.finish_operation(operation["id"], result={"host": "compute-1",
                                                 "generation": 1})
    done = client.get(path, version=V11, persona="reader").json["operation"]
    assert done["state"] == "done"
    assert done["result"] == {"enrollment": {"host": "compute-1",
                                             "generation": 1}}
    assert done["error"] is None
    listed = client.get("/v1/hosts/compute-1/operations",
                        version=V11).json["operations"]
    assert [o["id"] for o in listed] == [operation["id"]]


def test_a_failed_operation_shows_its_typed_error(client, conductors):
    conductors.errors["enroll_host"] = exception.MalformedEvidence(
        what="agent identity", reason="ek_public is missing")
    accepted = client.post("/v1/hosts", {"name": "compute-1"}, version=V11)
    assert accepted.status_code == 202
    path = "/v1/hosts/compute-1/operations/" + \
        accepted.json["operation"]["id"]
    shown = client.get(path, version=V11).json["operation"]
    assert shown["state"] == "failed" and shown["result"] is None
    assert shown["error"]["code"] == "trusted-pools.malformed_evidence"
    assert shown["error"]["status"] == 409
    assert "ek_public is missing" in shown["error"]["detail"]


def test_at_1_0_the_api_waits_and_answers_as_before(client, db,
                                                    conductors):
    conductors.errors["enroll_host"] = exception.EKNotApproved(
        host="compute-1", presented="ab" * 32, reason="no approval")
    refused = client.post("/v1/hosts", {"name": "compute-1"})
    assert refused.status_code == 400
    assert error_of(refused)["code"] == "trusted-pools.ek_not_approved"
    conductors.errors.clear()
    conductors.results["capture_policy"] = {"measured_boot": {"x": 1}}
    add_host_with_verdict(db, "compute-1")
    captured = client.post("/v1/hosts/compute-1/capture")
    assert captured.status_code == 200
    assert captured.json == {"policies": {"measured_boot": {"x": 1}}}
    # Operations are not a resource at 1.0.
    assert client.get("/v1/hosts/compute-1/operations").status_code == 404


def test_second_enrollment_while_one_is_pending_is_a_conflict(client,
                                                              conductors):
    conductors.finish = False
    first = client.post("/v1/hosts", {"name": "compute-1"}, version=V11)
    assert first.status_code == 202
    second = client.post("/v1/hosts", {"name": "compute-1"}, version=V11)
    assert second.status_code == 409
    assert error_of(second)["code"] == \
        "trusted-pools.operation_in_progress"
    assert first.json["operation"]["id"] in error_of(second)["detail"]


def test_operations_of_another_host_or_unknown_ids_are_not_found(
        client, conductors):
    conductors.finish = False
    first = client.post("/v1/hosts", {"name": "compute-1"}, version=V11)
    op_id = first.json["operation"]["id"]
    assert client.get("/v1/hosts/compute-2/operations/" + op_id,
                      version=V11).status_code == 404
    assert client.get("/v1/hosts/compute-1/operations/nope",
                      version=V11).status_code == 404
    # A tenant member sees no operation.
    assert client.get("/v1/hosts/compute-1/operations/" + op_id,
                      version=V11, persona="member").status_code == 403
