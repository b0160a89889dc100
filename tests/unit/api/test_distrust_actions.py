"""Distrust actions reach the API (issue 14): trusted-pools-placement-sync
(Nova side, no database credentials) reports what it did with its admin
token; readers list it; nothing else may write it (not the service role
every compute host's Nova holds), and a report changes no verdict."""

from __future__ import annotations

import datetime
import threading
from wsgiref import simple_server

import pytest

from tests.unit.api.conftest import add_host_with_verdict
from trusted_pools.common import keystone
from trusted_pools.nova.remediation import distrust
from trusted_pools.nova.remediation import report

LATEST = "trusted-pools latest"

ENTRY = {"host": "compute-1", "action": "disable_compute",
         "outcome": "done", "detail": "nova-compute disabled",
         "items": [["svc-1", "disabled"]], "verdict": "jti-1",
         "status": "untrusted"}


@pytest.fixture
def served(client):
    """The API pipeline (keystonemiddleware, policy) on a real port."""
    server = simple_server.make_server("127.0.0.1", 0, client.application)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield "http://127.0.0.1:%d" % server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_responder_reports_what_it_did_and_readers_see_it(client, db,
                                                          served):
    add_host_with_verdict(db, "compute-1", status="untrusted", level=0)
    reporter = report.APIReporter(keystone.adapter_for_endpoint(
        served, "trusted-pools", token="admin"))

    class Disable(distrust.DistrustAction):
        name = "disable_compute"

        def __call__(self, event):
            return distrust.ActionRecord(self.name, event.host, "done",
                                         "nova-compute disabled",
                                         (("svc-1", "disabled"),))

    responder = distrust.DistrustResponder(
        cache=None, actions=[distrust.NotifyAction(), Disable()],
        reporter=reporter)
    event = distrust.DistrustEvent("compute-1", "untrusted", 0, 3,
                                   ("kernel not allowed",), 100, "jti-9")
    records = responder.respond(event)
    assert [r.action for r in records] == ["notify", "disable_compute"]

    listed = client.get("/v1/distrust-actions", persona="reader",
                        version=LATEST)
    assert listed.status_code == 200, listed.body
    rows = listed.json["distrust_actions"]
    assert [(r["action"], r["outcome"], r["host"]) for r in rows] == [
        ("disable_compute", "done", "compute-1"),
        ("notify", "done", "compute-1")]
    assert rows[0]["items"] == [["svc-1", "disabled"]]
    assert rows[0]["reported_by"] == "cloud-admin"   # the token's user
    assert rows[0]["verdict"] == "jti-9"
    assert rows[0]["created_at"].endswith("Z")
    # A report is not a verdict: the host's standing did not move.
    host = client.get("/v1/hosts/compute-1").json["host"]
    assert (host["status"], host["level"]) == ("untrusted", 0)


def test_a_report_that_cannot_be_delivered_does_not_stop_the_actions(db):
    reporter = report.APIReporter(keystone.adapter_for_endpoint(
        "http://127.0.0.1:9", "trusted-pools", token="service",
        timeout=2))
    responder = distrust.DistrustResponder(
        cache=None, actions=[distrust.NotifyAction()], reporter=reporter)
    event = distrust.DistrustEvent("compute-1", "untrusted", 0, 3, (), 1,
                                   "j")
    assert [r.outcome for r in responder.respond(event)] == ["done"]
    assert len(responder.history) == 1


def test_only_admin_may_report(client, db):
    """A compute host's credentials (Nova's service role, a tenant's
    member) and a reader cannot write the record operators rely on."""
    add_host_with_verdict(db, "compute-1")
    for persona, status in (("service", 403), ("member", 403),
                            ("reader", 403), (None, 401)):
        answer = client.post("/v1/distrust-actions", {"actions": [ENTRY]},
                             persona=persona, version=LATEST)
        assert answer.status_code == status, (persona, answer.body)
    assert db.list_distrust_actions() == []
    for persona in ("member", "service"):
        assert client.get("/v1/distrust-actions", persona=persona,
                          version=LATEST).status_code == 403
    assert client.post("/v1/distrust-actions", {"actions": [ENTRY]},
                       persona="admin", version="trusted-pools 1.3"
                       ).status_code == 404


@pytest.mark.parametrize("change", [
    {"host": "not-a-host"},                       # 404, not stored
    {"outcome": "succeeded"},
    {"action": "Drop Table"},
    {"detail": "x" * 2001},
    {"items": [["a"]]},
    {"extra": 1},
])
def test_bad_reports_store_nothing(client, db, change):
    add_host_with_verdict(db, "compute-1")
    good = dict(ENTRY)
    bad = dict(ENTRY, **change)
    answer = client.post("/v1/distrust-actions", {"actions": [good, bad]},
                         persona="admin", version=LATEST)
    assert answer.status_code in (400, 404), answer.body
    assert db.list_distrust_actions() == []


def test_list_pages_and_purge(client, db):
    add_host_with_verdict(db, "compute-1")
    for _ in range(3):
        assert client.post("/v1/distrust-actions", {"actions": [ENTRY]},
                           persona="admin", version=LATEST
                           ).status_code == 201
    first = client.get("/v1/distrust-actions?limit=2", persona="reader",
                       version=LATEST).json
    assert len(first["distrust_actions"]) == 2
    marker = first["links"][0]["href"].rsplit("marker=", 1)[1]
    rest = client.get("/v1/distrust-actions?limit=2&marker=" + marker,
                      persona="reader", version=LATEST).json
    assert len(rest["distrust_actions"]) == 1 and rest["links"] == []
    future = datetime.datetime.now(datetime.timezone.utc) + \
        datetime.timedelta(seconds=1)
    assert db.purge_distrust_actions(future) == 3
