"""Instance policies through trusted-pools-api (microversion 1.5): who may
write and read them, the checks on a body (nothing invalid is stored),
assignments to images and instances, capture from a verified verdict,
and the image a challenge names."""

from __future__ import annotations

import datetime
import uuid

import pytest

from tests.api_fixtures import error_of
from tests.unit.api.conftest import add_host_with_verdict
from trusted_pools.db import api as db_api

V15 = "trusted-pools 1.5"
INSTANCE = str(uuid.UUID(int=7))
IMAGE = str(uuid.UUID(int=9))
BODY = {"name": "guest-golden", "level": 3,
        "pcrs": {"sha256": {"0": "00" * 32, "4": ["11" * 32, "22" * 32]}}}


def _verdict(db, host, status="trusted", pcrs=None, seconds=120) -> None:
    now = datetime.datetime.now(datetime.timezone.utc)
    sequence = db.latest_verdicts([host.id])[0].sequence
    db.save_instance_verdicts([db_api.InstanceVerdictRecord(
        instance=INSTANCE, host_id=host.id, status=status, level=1,
        host_level=3, host_sequence=sequence,
        registration_generation=db.get_host(host.id).enrollment_generation,
        reasons=[], signed_result="instance-token", issued_at=now,
        expires_at=now + datetime.timedelta(seconds=seconds), pcrs=pcrs)])


@pytest.mark.parametrize("persona,writes,reads", [
    ("admin", True, True), ("reader", False, True),
    ("service", False, False), ("member", False, False)])
def test_who_may_write_and_read(client, db, persona, writes, reads):
    created = client.post("/v1/instance-policies", BODY, persona=persona,
                          version=V15)
    assert created.status_code == (201 if writes else 403), created.body
    if not writes:
        db.create_instance_policy_version("guest-golden", 3, {
            "sha256": {"0": ["00" * 32]}}, "admin")
    assigned = client.put("/v1/images/%s/instance-policy" % IMAGE,
                          {"name": "guest-golden"}, persona=persona,
                          version=V15)
    assert assigned.status_code == (200 if writes else 403)
    for path in ("/v1/instance-policies",
                 "/v1/instance-policies/guest-golden",
                 "/v1/instance-policy-assignments"):
        assert client.get(path, persona=persona, version=V15
                          ).status_code == (200 if reads else 403), path
    deleted = client.delete("/v1/instance-policies/guest-golden",
                            persona=persona, version=V15)
    assert deleted.status_code == (409 if writes else 403)


def test_not_before_1_5(client):
    response = client.get("/v1/instance-policies",
                          version="trusted-pools 1.3")
    assert response.status_code == 404


def test_create_show_assign_unassign_delete(client, db):
    created = client.post("/v1/instance-policies", BODY, version=V15)
    assert created.status_code == 201, created.body
    shown = created.json["instance_policy"]
    assert (shown["name"], shown["version"], shown["level"]) == (
        "guest-golden", 1, 3)
    assert shown["pcrs"] == {"sha256": {"0": ["00" * 32],
                                        "4": ["11" * 32, "22" * 32]}}
    again = client.post("/v1/instance-policies", dict(BODY, level=2),
                        version=V15)
    assert again.json["instance_policy"]["version"] == 2
    assert client.get("/v1/instance-policies/guest-golden?version=1",
                      version=V15).json["instance_policy"]["level"] == 3
    listed = client.get("/v1/instance-policies", version=V15).json
    assert [(p["name"], p["version"]) for p in listed["instance_policies"]
            ] == [("guest-golden", 2)]

    put = client.put("/v1/instances/%s/instance-policy" % INSTANCE,
                     {"name": "guest-golden", "version": 1}, version=V15)
    assert put.json["assignment"]["kind"] == "instance"
    client.put("/v1/images/%s/instance-policy" % IMAGE,
               {"name": "guest-golden"}, version=V15)
    assert [p.version for p in db.instance_policies_for(
        [(INSTANCE, IMAGE), (str(uuid.uuid4()), IMAGE)])] == [1, 2]
    refused = client.delete("/v1/instance-policies/guest-golden",
                            version=V15)
    assert refused.status_code == 409
    assert "unassign it first" in error_of(refused)["detail"]
    for path in ("/v1/instances/%s/instance-policy" % INSTANCE,
                 "/v1/images/%s/instance-policy" % IMAGE):
        assert client.delete(path, version=V15).status_code == 204
        assert client.delete(path, version=V15).status_code == 404
    assert client.delete("/v1/instance-policies/guest-golden?version=1",
                         version=V15).status_code == 204
    assert [p.version for p in db.list_instance_policies()] == [2]


@pytest.mark.parametrize("body", [
    dict(BODY, level=4), dict(BODY, pcrs={"sha256": {"0": "00"}}),
    dict(BODY, pcrs={"md5": {"0": "00" * 16}}),
    dict(BODY, pcrs={"sha256": {"31": "00" * 32}}),
    dict(BODY, extra=1), {"pcrs": BODY["pcrs"]},
    dict(BODY, pcrs={"sha256": {"\u00b2": "00" * 32}}),
    dict(BODY, pcrs={"sha256": {"0": "00" * 32, "00": "11" * 32}}),
    dict(BODY, pcrs={"sha256": {"0": "00" * 32},
                     "SHA256": {"0": "11" * 32}})])
def test_bad_bodies_store_nothing(client, db, body):
    response = client.post("/v1/instance-policies", body, version=V15)
    assert response.status_code == 400, response.body
    assert db.list_instance_policies() == []


def test_assign_needs_a_uuid_and_an_existing_policy(client, db):
    assert client.put("/v1/images/not-a-uuid/instance-policy",
                      {"name": "x"}, version=V15).status_code == 400
    assert client.put("/v1/images/%s/instance-policy" % IMAGE,
                      {"name": "missing"}, version=V15).status_code == 404
    assert db.list_instance_policy_assignments() == []


@pytest.mark.parametrize("version", [2 ** 70, 0, -1, 1.5, True, "1"])
def test_assign_refuses_a_version_that_is_no_version(client, db, version):
    """A version past the column's range was an OverflowError (500)."""
    client.post("/v1/instance-policies", BODY, version=V15)
    response = client.put("/v1/images/%s/instance-policy" % IMAGE,
                          {"name": "guest-golden", "version": version},
                          version=V15)
    assert response.status_code == 400, response.body
    assert db.list_instance_policy_assignments() == []


def test_capture_from_a_trusted_verdict(client, db):
    host = add_host_with_verdict(db, "compute-1")
    verified = {"sha256": {str(p): ("%02x" % p) * 32 for p in range(8)}}
    _verdict(db, host, pcrs=verified)
    response = client.post("/v1/instances/%s/capture-policy" % INSTANCE,
                           {"name": "captured", "pcrs": [0, 4]},
                           version=V15)
    assert response.status_code == 201, response.body
    shown = response.json["instance_policy"]
    assert shown["pcrs"] == {"sha256": {"0": ["00" * 32],
                                        "4": ["04" * 32]}}
    assert response.json["captured_from"]["host"] == "compute-1"


@pytest.mark.parametrize("status,pcrs,why", [
    ("untrusted", {"sha256": {"0": "00" * 32}}, "reads untrusted"),
    ("trusted", None, "recorded no PCR values"),
])
def test_capture_refused(client, db, status, pcrs, why):
    host = add_host_with_verdict(db, "compute-1")
    _verdict(db, host, status=status, pcrs=pcrs)
    response = client.post("/v1/instances/%s/capture-policy" % INSTANCE,
                           {"name": "captured"}, version=V15)
    assert response.status_code == 409
    assert why in error_of(response)["detail"]
    assert db.list_instance_policies() == []


def test_capture_without_a_verdict(client, db):
    response = client.post("/v1/instances/%s/capture-policy" % INSTANCE,
                           {"name": "captured"}, version=V15)
    assert response.status_code == 404


def test_challenge_names_the_image_from_1_5(client, db, conductors):
    add_host_with_verdict(db, "compute-1")
    conductors.results["challenge_instance"] = {
        "instance": INSTANCE, "nonce": "bm9uY2U=", "expires_in": 300}
    response = client.post("/v1/instances/%s/challenge" % INSTANCE,
                           {"host": "compute-1", "image": IMAGE},
                           version=V15)
    assert response.status_code == 201, response.body
    assert response.json["challenge"]["image"] == IMAGE
    assert conductors.calls[-1] == ("challenge_instance", "compute-1",
                                    {"instance": INSTANCE, "image": IMAGE})
    # Before 1.5 there is no such field.
    old = client.post("/v1/instances/%s/challenge" % INSTANCE,
                      {"host": "compute-1", "image": IMAGE},
                      version="trusted-pools 1.3")
    assert old.status_code == 400
