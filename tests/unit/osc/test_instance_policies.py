"""``openstack trusted instance policy ...`` (API microversion 1.5)
through the real openstack shell against a scripted API: what each
command sends and how it shows the answer."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.osc_shell import plugin_visible, run_openstack
from tests.unit.osc.scripted import api  # noqa: F401 - the fixture
from tests.unit.osc.scripted import json_reply

INSTANCE = "7d4c6a8e-3c2b-4f6e-9a1d-2b3c4d5e6f70"
IMAGE = "0b7d4c2e-8f1a-4e3b-9c6d-5a2f1e0d9c8b"
POLICY = {"name": "golden", "version": 2, "level": 3,
          "created_at": "2026-12-03T16:00:00+00:00", "created_by": "admin",
          "pcrs": {"sha256": {"0": ["00" * 32]}}}


@pytest.fixture(scope="module", autouse=True)
def _plugin(tmp_path_factory) -> None:
    plugin_visible(tmp_path_factory.mktemp("osc-plugin"))


def openstack(api: Any, *argv: str):  # noqa: F811
    return run_openstack(["--os-auth-type", "admin_token",
                          "--os-endpoint", api.url, "--os-token", "t",
                          *argv])


def test_create_and_show(api, tmp_path):  # noqa: F811
    api.answer = lambda r: json_reply(201 if r.method == "POST" else 200,
                                      {"instance_policy": POLICY})
    pcrs = tmp_path / "pcrs.json"
    pcrs.write_text(json.dumps(POLICY["pcrs"]))
    created = openstack(api, "trusted", "instance", "policy", "create",
                        "golden", str(pcrs), "--level", "3", "-f", "json")
    assert created.code == 0, created.stderr
    assert json.loads(created.stdout)["pcrs"] == POLICY["pcrs"]
    sent = api.requests[-1]
    assert (sent.method, sent.path) == ("POST", "/v1/instance-policies")
    assert sent.body == {"name": "golden", "pcrs": POLICY["pcrs"],
                         "level": 3}
    assert sent.headers["OpenStack-API-Version"] == "trusted-pools 1.5"
    shown = openstack(api, "trusted", "instance", "policy", "show",
                      "golden", "--policy-version", "2", "-f", "json")
    assert shown.code == 0, shown.stderr
    assert api.requests[-1].query == {"version": "2"}


def test_assign_capture_unassign_list(api):  # noqa: F811
    assignment = {"kind": "image", "target": IMAGE, "policy": "golden",
                  "version": None,
                  "assigned_at": "2026-12-03T16:00:00+00:00"}

    def answer(r):
        if r.path.endswith("/capture-policy"):
            return json_reply(201, {"instance_policy": POLICY,
                                    "captured_from": {"instance": INSTANCE,
                                                      "host": "compute-1"}})
        if r.path == "/v1/instance-policy-assignments":
            return json_reply(200, {"assignments": [assignment]})
        if r.method == "DELETE":
            return 204, {}, b""
        return json_reply(200, {"assignment": assignment})
    api.answer = answer
    assigned = openstack(api, "trusted", "instance", "policy", "assign",
                         "golden", "--image", IMAGE, "-f", "json")
    assert assigned.code == 0, assigned.stderr
    sent = api.requests[-1]
    assert (sent.method, sent.path, sent.body) == (
        "PUT", "/v1/images/%s/instance-policy" % IMAGE, {"name": "golden"})
    captured = openstack(api, "trusted", "instance", "policy", "capture",
                         "golden", "--instance", INSTANCE, "--pcr", "0",
                         "--pcr", "4", "-f", "json")
    assert captured.code == 0, captured.stderr
    assert json.loads(captured.stdout)["captured_from"]["host"] == \
        "compute-1"
    assert api.requests[-1].body == {"name": "golden", "pcrs": [0, 4]}
    listed = openstack(api, "trusted", "instance", "policy", "assignment",
                       "list", "-f", "json")
    assert listed.code == 0, listed.stderr
    assert json.loads(listed.stdout)[0]["Target"] == IMAGE
    gone = openstack(api, "trusted", "instance", "policy", "unassign",
                     "--instance", INSTANCE)
    assert gone.code == 0, gone.stderr
    assert (api.requests[-1].method, api.requests[-1].path) == (
        "DELETE", "/v1/instances/%s/instance-policy" % INSTANCE)


def test_refusal_is_shown(api):  # noqa: F811
    api.answer = lambda r: json_reply(409, {"errors": [{
        "status": 409, "code": "trusted-pools.conflict",
        "title": "Conflict", "detail": "Instance policy golden is assigned "
        "to image x: unassign it first"}]})
    refused = openstack(api, "trusted", "instance", "policy", "delete",
                        "golden")
    assert refused.code != 0
    assert "unassign it first" in refused.stderr
