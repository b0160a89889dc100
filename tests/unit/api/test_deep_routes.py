"""Deep attestation through trusted-pools-api (microversion 1.3): who may
ask for a nonce, submit instance evidence and read instance verdicts
(keystonemiddleware tokens, oslo.policy defaults), the shapes of the
answers, and how a stored instance verdict reads once its host fell."""

from __future__ import annotations

import datetime
import uuid

import pytest

from tests.api_fixtures import error_of
from tests.unit.api.conftest import add_host_with_verdict
from trusted_pools.db import api as db_api

V12 = "trusted-pools 1.3"
INSTANCE = str(uuid.UUID(int=7))


def _evidence(instance: str = INSTANCE) -> dict:
    return {"instance": instance, "vm_quote": "AAAA", "vm_signature": "AAAA",
            "vm_pcrs": {"sha256": {"0": "00" * 32}},
            "vtpm_certificate": {"ca": {}, "certificate": "x"}}


def _store_instance_verdict(db, host, status="trusted", level=1,
                            seconds=120) -> None:
    now = datetime.datetime.now(datetime.timezone.utc)
    sequence = db.latest_verdicts([host.id])[0].sequence
    db.save_instance_verdicts([db_api.InstanceVerdictRecord(
        instance=INSTANCE, host_id=host.id, status=status, level=level,
        host_level=3, host_sequence=sequence,
        registration_generation=db.get_host(host.id).enrollment_generation,
        reasons=[], signed_result="instance-token", issued_at=now,
        expires_at=now + datetime.timedelta(seconds=seconds))])


# --- who may ---------------------------------------------------------------

@pytest.mark.parametrize("persona,allowed", [
    ("admin", True), ("service", False), ("reader", False),
    ("member", False)])
def test_challenge_and_deep_attest_by_persona(client, db, conductors,
                                              persona, allowed):
    add_host_with_verdict(db, "compute-1")
    conductors.results["challenge_instance"] = {
        "instance": INSTANCE, "nonce": "bm9uY2U=", "expires_in": 300}
    challenged = client.post("/v1/instances/%s/challenge" % INSTANCE,
                             {"host": "compute-1"}, persona=persona,
                             version=V12)
    attested = client.post("/v1/hosts/compute-1/deep-attest",
                           {"instances": [_evidence()]}, persona=persona,
                           version=V12)
    if allowed:
        assert challenged.status_code == 201, challenged.body
        assert challenged.json["challenge"] == {
            "instance": INSTANCE, "host": "compute-1", "nonce": "bm9uY2U=",
            "expires_in": 300}
        assert attested.status_code == 202, attested.body
        operation = attested.json["operation"]
        assert operation["kind"] == "deep_attest"
        assert attested.headers["Location"].endswith(
            "/v1/hosts/compute-1/operations/" + operation["id"])
        assert [c[0] for c in conductors.calls] == [
            "challenge_instance", "deep_attest"]
        assert conductors.calls[1][2] == {"instances": [_evidence()]}
    else:
        for response, rule in ((challenged, "instance:challenge"),
                               (attested, "host:deep_attest")):
            assert response.status_code == 403
            assert error_of(response)["detail"] == (
                "Policy doesn't allow trusted_pools:%s to be performed."
                % rule)
        assert conductors.calls == []


@pytest.mark.parametrize("persona,status", [
    ("admin", 200), ("reader", 200), ("service", 200), ("member", 403)])
def test_instance_verdict_by_persona(client, db, persona, status):
    host = add_host_with_verdict(db, "compute-1")
    _store_instance_verdict(db, host)
    response = client.get("/v1/instances/%s/verdict" % INSTANCE,
                          persona=persona, version=V12)
    assert response.status_code == status, response.body
    if status == 403:
        assert b"instance-token" not in response.body
        assert "trusted_pools:instance:verdict:get" in \
            error_of(response)["detail"]


def test_member_of_another_project_cannot_list_vtpms(client, db,
                                                     conductors):
    add_host_with_verdict(db, "compute-1")
    response = client.get("/v1/hosts/compute-1/vtpms", persona="member",
                          version=V12)
    assert response.status_code == 403
    assert conductors.calls == []


# --- versions and validation ------------------------------------------------

def test_routes_absent_before_1_2(client, db, conductors):
    add_host_with_verdict(db, "compute-1")
    for method, path, body in (
            ("POST", "/v1/instances/%s/challenge" % INSTANCE,
             {"host": "compute-1"}),
            ("POST", "/v1/hosts/compute-1/deep-attest",
             {"instances": [_evidence()]}),
            ("GET", "/v1/instances/%s/verdict" % INSTANCE, None)):
        response = client.request(method, path, "admin", body=body,
                                  version="trusted-pools 1.1")
        assert response.status_code == 404, path
    assert conductors.calls == []


@pytest.mark.parametrize("body", [
    {}, {"instances": []}, {"instances": [{"instance": INSTANCE}]},
    {"instances": [dict(_evidence(), extra=1)]},
    {"instances": [_evidence("not-a-uuid")]},
    {"instances": [_evidence()] * 4097}])
def test_deep_attest_body_is_checked_before_any_call(client, db,
                                                     conductors, body):
    add_host_with_verdict(db, "compute-1")
    response = client.post("/v1/hosts/compute-1/deep-attest", body,
                           version=V12)
    assert response.status_code == 400, response.body
    assert conductors.calls == []


def test_challenge_needs_a_uuid_and_a_known_host(client, db, conductors):
    add_host_with_verdict(db, "compute-1")
    assert client.post("/v1/instances/nope/challenge",
                       {"host": "compute-1"},
                       version=V12).status_code == 400
    assert client.post("/v1/instances/%s/challenge" % INSTANCE,
                       {"host": "compute-9"},
                       version=V12).status_code == 404
    assert client.post("/v1/instances/%s/challenge" % INSTANCE, {},
                       version=V12).status_code == 400
    assert conductors.calls == []


def test_unknown_instance_verdict_is_404(client, db):
    response = client.get("/v1/instances/%s/verdict" % INSTANCE,
                          version=V12)
    assert response.status_code == 404
    assert error_of(response)["code"] == \
        "trusted-pools.instance_verdict.not_found"


# --- the verdict is tied to its host ------------------------------------------

def test_instance_verdict_stands_while_its_host_does(client, db):
    host = add_host_with_verdict(db, "compute-1")
    _store_instance_verdict(db, host)
    shown = client.get("/v1/instances/%s/verdict" % INSTANCE,
                       version=V12).json["verdict"]
    assert (shown["status"], shown["level"], shown["stands"]) == (
        "trusted", 1, True)
    assert shown["signed_result"] == "instance-token"
    assert shown["host"] == "compute-1"
    # A later trusted host verdict changes nothing.
    now = datetime.datetime.now(datetime.timezone.utc)
    db.add_verdicts([db_api.NewVerdict(
        host_id=host.id, status="trusted", level=3, issued_at=now,
        expires_at=now + datetime.timedelta(seconds=60))])
    assert client.get("/v1/instances/%s/verdict" % INSTANCE,
                      version=V12).json["verdict"]["stands"] is True


@pytest.mark.parametrize("fall,status", [("untrusted", "untrusted"),
                                         ("unknown", "unknown")])
def test_host_falling_takes_the_instance_with_it(client, db, fall, status):
    host = add_host_with_verdict(db, "compute-1")
    _store_instance_verdict(db, host)
    now = datetime.datetime.now(datetime.timezone.utc)
    for verdict_status in (fall, "trusted"):  # it fell, then came back
        db.add_verdicts([db_api.NewVerdict(
            host_id=host.id, status=verdict_status,
            level=0 if verdict_status != "trusted" else 3, issued_at=now,
            expires_at=now + datetime.timedelta(seconds=60))])
    shown = client.get("/v1/instances/%s/verdict" % INSTANCE,
                       version=V12).json["verdict"]
    assert (shown["status"], shown["level"], shown["stands"]) == (
        status, 0, False)
    assert shown["recorded_status"] == "trusted"
    assert shown["signed_result"] is None
    assert any("judged %s" % fall in r for r in shown["reasons"])


def test_enrollment_reset_takes_the_instance_with_it(client, db):
    host = add_host_with_verdict(db, "compute-1")
    _store_instance_verdict(db, host)
    db.reset_enrollment("compute-1")
    shown = client.get("/v1/instances/%s/verdict" % INSTANCE,
                       version=V12).json["verdict"]
    assert (shown["status"], shown["stands"]) == ("unknown", False)
    assert shown["signed_result"] is None
    assert any("enrollment" in r for r in shown["reasons"])


def test_expired_instance_verdict_reads_unknown(client, db):
    host = add_host_with_verdict(db, "compute-1")
    _store_instance_verdict(db, host, seconds=0)
    shown = client.get("/v1/instances/%s/verdict" % INSTANCE,
                       version=V12).json["verdict"]
    assert (shown["status"], shown["stands"]) == ("unknown", False)


# --- certify-binding-key as an operation ---------------------------------------

def test_certify_binding_key_is_an_operation_from_1_2(client, db,
                                                      conductors):
    add_host_with_verdict(db, "compute-1")
    conductors.results["certify_binding_key"] = {
        "host": "compute-1", "name": "000b" + "11" * 32, "generation": 0}
    accepted = client.post("/v1/hosts/compute-1/certify-binding-key",
                           version=V12)
    assert accepted.status_code == 202, accepted.body
    operation = accepted.json["operation"]
    assert operation["kind"] == "certify"
    assert operation["result"] == {"binding_key": conductors.results[
        "certify_binding_key"]}
    # Before 1.3 the API waits for the operation and answers as before.
    waited = client.post("/v1/hosts/compute-1/certify-binding-key",
                         version="trusted-pools 1.1")
    assert waited.status_code == 200
    assert waited.json == {"binding_key": conductors.results[
        "certify_binding_key"]}


def test_vtpm_report_read_from_the_database_refreshed_by_admins(
        client, db, conductors):
    add_host_with_verdict(db, "compute-1")
    # No report yet: 404 saying how to get one; nothing asked.
    missing = client.get("/v1/hosts/compute-1/vtpms", persona="reader",
                         version=V12)
    assert missing.status_code == 404
    assert "POST /v1/hosts/compute-1/vtpms" in error_of(missing)["detail"]
    assert conductors.calls == []
    report = {"host": "compute-1", "source": "host-reported",
              "note": "not evidence", "enabled": True, "driver": "swtpm",
              "reported_at": 1, "vtpms": [
                  {"instance": INSTANCE, "status": "running",
                   "reason": None, "attested_on": None,
                   "conflict": False}]}
    conductors.results["list_vtpms"] = report
    # Readers and services may not make the conductor ask an agent.
    for persona in ("reader", "service", "member"):
        refused = client.post("/v1/hosts/compute-1/vtpms", persona=persona,
                              version=V12)
        assert refused.status_code == 403, persona
    assert conductors.calls == []
    accepted = client.post("/v1/hosts/compute-1/vtpms", version=V12)
    assert accepted.status_code == 202, accepted.body
    operation = accepted.json["operation"]
    # Times are ISO strings in every answer (the stored epoch included).
    shown_report = dict(report, reported_at="1970-01-01T00:00:01Z")
    assert (operation["kind"], operation["result"]) == (
        "list_vtpms", {"vtpms": shown_report})
    assert [c[0] for c in conductors.calls] == ["list_vtpms"]
    for persona in ("admin", "reader"):
        shown = client.get("/v1/hosts/compute-1/vtpms", persona=persona,
                           version=V12)
        assert shown.status_code == 200, shown.body
        assert shown.json == {"vtpms": dict(shown_report,
                                            operation=operation["id"])}
    assert len(conductors.calls) == 1  # reads asked nobody
    assert client.get("/v1/hosts/compute-1/vtpms", persona="service",
                      version=V12).status_code == 403
    assert client.get("/v1/hosts/compute-1/vtpms",
                      version="trusted-pools 1.1").status_code == 404
    assert client.get("/v1/hosts/compute-9/vtpms",
                      version=V12).status_code == 404
