"""``openstack trusted host enroll/attest/capture`` at API microversion
1.1 (the API answers 202 with an operation): the commands poll it and
print the result as before; ``--no-wait`` prints the operation; a failed
operation is the API's error; a wait that runs out says how to follow."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.osc_shell import plugin_visible, run_openstack
from tests.unit.osc.scripted import api  # noqa: F401 - the fixture
from tests.unit.osc.scripted import Recorded, Reply, json_reply

OP = "5d0e4c1e-8d55-4cbb-8a1b-1c2d3e4f5a6b"
VERDICT = {"status": "trusted", "level": 3, "reasons": [],
           "issued_at": "2026-12-03T12:00:00Z",
           "expires_at": "2026-12-03T12:03:00Z",
           "evidence_digest": "ab" * 32, "signed_result": "t"}


@pytest.fixture(scope="module", autouse=True)
def _plugin(tmp_path_factory) -> None:
    plugin_visible(tmp_path_factory.mktemp("osc-plugin"))


def openstack(api: Any, *argv: str):  # noqa: F811
    return run_openstack(["--os-auth-type", "admin_token",
                          "--os-endpoint", api.url, "--os-token", "t",
                          *argv])


def _operation(state: str, kind: str = "attest", result: Any = None,
               error: Any = None) -> dict:
    return {"id": OP, "host": "compute-1", "kind": kind, "state": state,
            "conductor": "conductor-a", "request_id": "req-1",
            "created_at": "2026-12-03T12:00:00Z", "updated_at": None,
            "result": result, "error": error, "links": []}


def _scripted(api, kind: str, polls: list[dict]):  # noqa: F811
    """202 for the POST, then each poll answers the next of ``polls``."""
    answers = iter(polls)

    def answer(request: Recorded) -> Reply:
        if request.method == "POST":
            return json_reply(202, {"operation": _operation("pending",
                                                            kind)},
                              {"Location": api.url + "v1/hosts/compute-1/"
                                           "operations/" + OP})
        if request.path.endswith("/operations/" + OP):
            return json_reply(200, {"operation": next(answers)})
        return json_reply(200, {"host": {"name": "compute-1",
                                         "state": "enrolled"}})
    api.answer = answer


def test_attest_waits_for_the_operation_and_prints_the_verdict(api):  # noqa: F811,E501
    _scripted(api, "attest", [_operation("pending"),
                              _operation("done",
                                         result={"verdict": VERDICT})])
    result = openstack(api, "trusted", "host", "attest", "compute-1",
                       "-f", "json")
    assert result.code == 0, result.stderr
    shown = json.loads(result.stdout)
    assert (shown["status"], shown["level"]) == ("trusted", 3)
    assert api.requests[0].headers["OpenStack-API-Version"] == \
        "trusted-pools 1.5"
    assert [r.path for r in api.requests] == [
        "/v1/hosts/compute-1/attest"] + 2 * [
        "/v1/hosts/compute-1/operations/" + OP]


def test_no_wait_prints_the_pending_operation(api):  # noqa: F811
    _scripted(api, "enroll", [])
    result = openstack(api, "trusted", "host", "enroll", "compute-1",
                       "--no-wait", "-f", "json")
    assert result.code == 0, result.stderr
    shown = json.loads(result.stdout)
    assert (shown["id"], shown["state"], shown["kind"]) == (
        OP, "pending", "enroll")
    assert [r.method for r in api.requests] == ["POST"]


def test_a_failed_operation_is_the_apis_error(api):  # noqa: F811
    error = {"status": 400, "code": "trusted-pools.ek_not_approved",
             "title": "Bad Request",
             "detail": "EK of compute-1 is not approved"}
    _scripted(api, "enroll", [_operation("failed", "enroll",
                                         error=error)])
    result = openstack(api, "trusted", "host", "enroll", "compute-1")
    assert result.code != 0
    assert "EK of compute-1 is not approved" in result.stderr
    assert "trusted-pools.ek_not_approved" in result.stderr


def test_a_wait_that_runs_out_says_how_to_follow(api):  # noqa: F811
    _scripted(api, "capture", [_operation("pending", "capture")] * 100)
    result = openstack(api, "trusted", "host", "capture", "compute-1",
                       "--wait-timeout", "1")
    assert result.code != 0
    assert "still pending after 1 s" in result.stderr
    assert "openstack trusted host operation show compute-1 " + OP in \
        result.stderr


def test_operation_show(api):  # noqa: F811
    api.answer = lambda r: json_reply(200, {"operation": _operation(
        "done", "capture", result={"policies": {}})})
    result = openstack(api, "trusted", "host", "operation", "show",
                       "compute-1", OP, "-f", "json")
    assert result.code == 0, result.stderr
    assert json.loads(result.stdout)["state"] == "done"
    assert api.requests[0].path == "/v1/hosts/compute-1/operations/" + OP
