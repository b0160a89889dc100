"""Response to distrust against a compute API served on 127.0.0.1.

A small WSGI app speaks the parts of Nova's compute API the actions use
(the version document openstacksdk discovers microversions from,
``GET /os-services``, ``PUT /os-services/{id}``, ``GET /servers/detail``,
``POST /servers/{id}/action``) and records every call but discovery with
its microversion header; the actions reach it through openstacksdk over
keystoneauth1. Verdicts
are signed by the conductor's code and enter through the scheduler's
notification endpoint.
"""

from __future__ import annotations

import json
import threading
from typing import Any
from wsgiref import simple_server

import pytest

from tests.nova_harness import VerdictFactory
from trusted_pools.nova.remediation import distrust
from trusted_pools.nova.remediation.traits import ObservedVerdictCache
from trusted_pools.nova.scheduler.listener import TrustNotificationEndpoint

SERVICE_ID = "4c5f2a8e-8f7b-4c7e-9b0f-0a1b2c3d4e5f"


class FakeCompute:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str, Any]] = []
        self.services = {SERVICE_ID: {"id": SERVICE_ID, "host": "cn1",
                                      "binary": "nova-compute",
                                      "status": "enabled"}}
        self.servers = [
            {"id": "vm-trusted", "status": "ACTIVE",
             "flavor": {"extra_specs": {"trust:trusted_host": "required"}}},
            {"id": "vm-trait", "status": "ACTIVE", "flavor": {"extra_specs": {
                "trait:CUSTOM_TRUSTED_POOLS_LOA_3": "required"}}},
            {"id": "vm-plain", "status": "ACTIVE",
             "flavor": {"extra_specs": {"hw:cpu_policy": "dedicated"}}},
            {"id": "vm-off", "status": "SHUTOFF",
             "flavor": {"extra_specs": {"trust:min_level": "2"}}},
        ]

    def __call__(self, environ: dict, start_response: Any) -> list[bytes]:
        method, path = environ["REQUEST_METHOD"], environ["PATH_INFO"]
        if method == "GET" and path in ("", "/"):
            # What Nova's /v2.1/ answers: the microversion range.
            return self._reply(start_response, 200, {"version": {
                "id": "v2.1", "status": "CURRENT", "version": "2.96",
                "min_version": "2.1", "links": [
                    {"rel": "self", "href": self.endpoint + "/"}]}})
        query = environ.get("QUERY_STRING", "")
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = json.loads(environ["wsgi.input"].read(length)) if length \
            else None
        self.calls.append((method, path + ("?" + query if query else ""),
                           environ.get("HTTP_OPENSTACK_API_VERSION", ""),
                           body))
        if environ.get("HTTP_X_AUTH_TOKEN") != "admin":
            return self._reply(start_response, 401, {})
        if method == "GET" and path == "/os-services":
            return self._reply(start_response, 200, {"services": [
                s for s in self.services.values()
                if "host=%s" % s["host"] in query]})
        if method == "PUT" and path.startswith("/os-services/"):
            service = self.services[path.rsplit("/", 1)[1]]
            service.update(status=body["status"],
                           disabled_reason=body["disabled_reason"])
            return self._reply(start_response, 200, {"service": service})
        if method == "GET" and path == "/servers/detail":
            return self._reply(start_response, 200, {
                "servers": self.servers if "host=cn1" in query else []})
        if method == "POST" and path.endswith("/action"):
            return self._reply(start_response, 202, {})
        return self._reply(start_response, 404, {})

    @staticmethod
    def _reply(start_response: Any, status: int, body: dict) -> list[bytes]:
        start_response("%d X" % status, [("Content-Type",
                                          "application/json")])
        return [json.dumps(body).encode()]


class Quiet(simple_server.WSGIRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def compute():
    app = FakeCompute()
    server = simple_server.make_server("127.0.0.1", 0, app,
                                       handler_class=Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    app.endpoint = "http://127.0.0.1:%d" % server.server_port
    yield app
    server.shutdown()
    server.server_close()


def make_responder(compute, actions):
    factory = VerdictFactory()
    cache = ObservedVerdictCache(factory.public_keys)
    cache.mark_contact()
    api = distrust.ComputeAPI.for_endpoint(compute.endpoint)
    responder = distrust.DistrustResponder(
        cache, distrust.load_actions(actions, compute=api))
    cache.add_observer(responder.observe)
    return factory, TrustNotificationEndpoint(cache), responder


def test_disable_compute_and_migrate_on_distrust(compute):
    factory, endpoint, responder = make_responder(
        compute, ["notify", "disable_compute", "migrate_trusted_instances"])
    assert endpoint.handle(factory.payload("cn1", level=4, issued_at=1000,
                                           validity=10 ** 10))
    assert compute.calls == []
    assert endpoint.handle(factory.payload("cn1", status="untrusted",
                                           issued_at=1001,
                                           validity=10 ** 10))
    records = {r.action: r for r in responder.records_for("cn1")}
    assert [r.outcome for r in records.values()] == ["done"] * 3
    service = compute.services[SERVICE_ID]
    assert service["status"] == "disabled"
    assert "untrusted" in service["disabled_reason"]
    assert "PCR 4" in service["disabled_reason"]
    assert records["disable_compute"].items == ((SERVICE_ID, "disabled"),)
    migrated = [path for method, path, _, _ in compute.calls
                if method == "POST"]
    assert migrated == ["/servers/vm-trusted/action",
                        "/servers/vm-trait/action"]
    posts = [body for method, _, _, body in compute.calls if method == "POST"]
    assert all(b == {"os-migrateLive": {"host": None,
                                        "block_migration": "auto"}}
               for b in posts)
    # Every call at the configured microversion, but the live migration:
    # openstacksdk sends its body shape of 2.30 (no "force" without host).
    assert {(method, version) for method, _, version, _ in compute.calls
            } == {("GET", "compute 2.53"), ("PUT", "compute 2.53"),
                  ("POST", "compute 2.30")}
    # Idempotent: the same distrust again, or a replay, does nothing more.
    count = len(compute.calls)
    assert endpoint.handle(factory.payload("cn1", status="untrusted",
                                           issued_at=1002,
                                           validity=10 ** 10))
    assert len(compute.calls) == count
    assert len(responder.history) == 3


def test_no_action_without_a_verified_transition(compute):
    factory, endpoint, responder = make_responder(compute,
                                                  ["disable_compute"])
    # First sight of the host is untrusted: no "before", no action.
    assert endpoint.handle(factory.payload("cn1", status="untrusted",
                                           issued_at=1000,
                                           validity=10 ** 10))
    assert endpoint.handle(factory.payload("cn1", level=3, issued_at=1001,
                                           validity=10 ** 10))
    # A forged "untrusted" (other key) and a tampered token: refused.
    other = VerdictFactory()
    assert not endpoint.handle(other.payload("cn1", status="untrusted",
                                             issued_at=1002,
                                             validity=10 ** 10))
    payload = factory.payload("cn1", status="unknown", issued_at=1003,
                              validity=10 ** 10)
    head, body, sig = payload["signed_result"].split(".")
    payload["signed_result"] = ".".join([head, body[:-2] + "AA", sig])
    assert not endpoint.handle(payload)
    assert compute.calls == [] and not responder.history
    # A genuine unknown verdict (agent unreachable) is a transition.
    assert endpoint.handle(factory.payload("cn1", status="unknown",
                                           issued_at=1004,
                                           validity=10 ** 10))
    assert [r.outcome for r in responder.history] == ["done"]
    assert compute.services[SERVICE_ID]["status"] == "disabled"


def test_api_failure_is_a_failed_record(compute):
    factory, endpoint, responder = make_responder(
        compute, ["disable_compute"])
    responder.actions[0].compute.session.auth.token = "nobody"
    assert endpoint.handle(factory.payload("cn1", level=3, issued_at=1000,
                                           validity=10 ** 10))
    assert endpoint.handle(factory.payload("cn1", status="untrusted",
                                           issued_at=1001,
                                           validity=10 ** 10))
    (record,) = responder.history
    assert record.outcome == "failed" and "HTTP 401" in record.detail
    assert compute.services[SERVICE_ID]["status"] == "enabled"
