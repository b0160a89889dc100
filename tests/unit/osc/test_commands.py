"""``openstack trusted ...`` commands through the real openstack shell
against a scripted API: what each sends, what it prints, and what it
refuses before sending anything."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.osc_shell import plugin_visible, run_openstack
from tests.unit.osc.scripted import api  # noqa: F401 - the fixture
from tests.unit.osc.scripted import Recorded, Reply, json_reply

CAPTURED = {"measured_boot": {"kind": "measured_boot",
                              "pcrs": {"sha256": {"0": "00" * 32}}},
            "runtime": {"kind": "runtime", "allow": ["sha256:" + "11" * 32]}}


@pytest.fixture(scope="module", autouse=True)
def _plugin(tmp_path_factory) -> None:
    plugin_visible(tmp_path_factory.mktemp("osc-plugin"))


def openstack(api: Any, *argv: str):  # noqa: F811
    return run_openstack(["--os-auth-type", "admin_token",
                          "--os-endpoint", api.url, "--os-token", "t",
                          *argv])


def test_capture_writes_one_kind_to_a_file(api, tmp_path):  # noqa: F811
    api.answer = lambda r: json_reply(200, {"policies": CAPTURED})
    out = tmp_path / "boot.json"
    result = openstack(api, "trusted", "policy", "capture", "compute-1",
                       "--kind", "measured_boot", "--output", str(out))
    assert result.code == 0, result.stderr
    assert json.loads(out.read_text()) == CAPTURED["measured_boot"]
    assert result.stdout == ""
    [sent] = api.requests
    assert (sent.method, sent.path) == ("POST", "/v1/hosts/compute-1/"
                                                "capture")

    printed = openstack(api, "trusted", "host", "capture", "compute-1")
    assert printed.code == 0 and json.loads(printed.stdout) == CAPTURED


def test_capture_of_a_kind_the_host_did_not_give(api):  # noqa: F811
    api.answer = lambda r: json_reply(200, {"policies": {
        "measured_boot": CAPTURED["measured_boot"]}})
    result = openstack(api, "trusted", "policy", "capture", "compute-1",
                       "--kind", "runtime")
    assert result.code != 0
    assert "gave no runtime policy (it gave: measured_boot)" in \
        result.stderr


def test_enroll_and_assign_send_the_contract_bodies(api):  # noqa: F811
    def answer(request: Recorded) -> Reply:
        if request.path == "/v1/hosts":
            return json_reply(201, {"host": {"name": "compute-1",
                                             "group": "gpu"}})
        return json_reply(200, {"assignment": {
            "group": "gpu", "policy": "golden",
            "version": request.body["version"]}})
    api.answer = answer
    assert openstack(api, "trusted", "host", "enroll", "compute-1",
                     "--group", "gpu", "--ek-sha256", "ab" * 32).code == 0
    assert openstack(api, "trusted", "policy", "assign", "golden",
                     "--group", "gpu").code == 0
    assert openstack(api, "trusted", "policy", "assign", "golden",
                     "--group", "gpu", "--policy-version", "3").code == 0
    assert [(r.method, r.path, r.body) for r in api.requests] == [
        ("POST", "/v1/hosts", {"name": "compute-1", "group": "gpu",
                               "ek_sha256": "ab" * 32}),
        ("PUT", "/v1/groups/gpu/policies/golden", {"version": None}),
        ("PUT", "/v1/groups/gpu/policies/golden", {"version": 3})]


def test_delete_goes_on_after_a_failure_and_says_which(api):  # noqa: F811
    def answer(request: Recorded) -> Reply:
        if request.path.endswith("/missing"):
            return json_reply(404, {"errors": [{
                "status": 404, "code": "trusted-pools.host.not_found",
                "title": "Not Found", "detail": "Host missing not found",
                "request_id": "req-1"}]})
        return 204, {}, b""
    api.answer = answer
    result = openstack(api, "trusted", "host", "delete", "missing",
                       "compute-2")
    assert result.code != 0
    assert "Host missing not found" in result.stderr
    assert "1 of 2 hosts failed to delete: missing" in result.stderr
    assert [(r.method, r.path) for r in api.requests] == [
        ("DELETE", "/v1/hosts/missing"), ("DELETE", "/v1/hosts/compute-2")]


@pytest.mark.parametrize("argv", [
    ["trusted", "verdict", "list", "--since", "yesterday"],
    ["trusted", "host", "list", "--limit", "0"],
    ["trusted", "host", "list", "--status", "maybe"],
    ["trusted", "policy", "diff", "golden", "--from", "1"],
    ["--os-trusted-pools-api-version", "2.0", "trusted", "key", "list"],
])
def test_bad_arguments_send_nothing(api, argv):  # noqa: F811
    result = openstack(api, *argv)
    assert result.code != 0
    assert api.requests == []


def test_policy_create_refuses_a_body_that_is_not_an_object(
        api, tmp_path):  # noqa: F811
    path = tmp_path / "list.json"
    path.write_text("[1, 2]")
    result = openstack(api, "trusted", "policy", "create", "p", "--kind",
                       "runtime", str(path))
    assert result.code != 0 and "must hold a JSON object" in result.stderr
    missing = openstack(api, "trusted", "policy", "create", "p", "--kind",
                        "runtime", str(tmp_path / "nope.json"))
    assert missing.code != 0 and "Cannot read" in missing.stderr
    assert api.requests == []


def test_host_show_table_lists_reasons_one_a_line(api):  # noqa: F811
    api.answer = lambda r: json_reply(200, {"host": {
        "name": "compute-3", "status": "untrusted", "level": 0,
        "reasons": ["OS boot: kernel not allowed", "PCR 7 differs"],
        "vector": {"firmware": True}, "policy_versions": {"golden": 2}}})
    table = openstack(api, "trusted", "host", "show", "compute-3")
    assert table.code == 0, table.stderr
    lines = [line for line in table.stdout.splitlines() if "|" in line]
    assert any("| reasons" in line and "OS boot: kernel not allowed" in line
               for line in lines)
    assert any("PCR 7 differs" in line and "| reasons" not in line
               for line in lines)
    as_json = json.loads(openstack(api, "trusted", "host", "show",
                                   "compute-3", "-f", "json").stdout)
    assert as_json["reasons"] == ["OS boot: kernel not allowed",
                                  "PCR 7 differs"]
    assert as_json["vector"] == {"firmware": True}


def test_day_two_group_commands_send_the_contract_requests(api):  # noqa: F811
    def answer(request: Recorded) -> Reply:
        if request.method == "PATCH":
            return json_reply(200, {"host": {"name": "compute-1",
                                             "group": "gold"}})
        if request.method == "DELETE":
            return 204, {}, b""
        if request.path == "/v1/groups":
            return json_reply(200, {"groups": [
                {"name": "default", "hosts": 2, "assignments": []},
                {"name": "gold", "hosts": 1, "assignments": [
                    {"group": "gold", "policy": "boot", "version": None},
                    {"group": "gold", "policy": "ima", "version": 3}]}]})
        return json_reply(200, {"assignment": {
            "group": "staging", "policy": "boot", "version": None}})
    api.answer = answer
    moved = openstack(api, "trusted", "host", "set", "compute-1",
                      "--group", "gold", "-f", "json")
    assert moved.code == 0, moved.stderr
    assert json.loads(moved.stdout)["group"] == "gold"
    listed = openstack(api, "trusted", "group", "list", "-f", "json")
    assert json.loads(listed.stdout) == [
        {"Name": "default", "Hosts": 2, "Policies": "-"},
        {"Name": "gold", "Hosts": 1, "Policies": "boot (latest), ima (v3)"}]
    assert openstack(api, "trusted", "policy", "unassign", "boot",
                     "--group", "gold").code == 0
    assert openstack(api, "trusted", "policy", "assign", "boot", "--group",
                     "staging", "--allow-empty-group").code == 0
    assert [(r.method, r.path, r.body) for r in api.requests] == [
        ("PATCH", "/v1/hosts/compute-1", {"group": "gold"}),
        ("GET", "/v1/groups", None),
        ("DELETE", "/v1/groups/gold/policies/boot", None),
        ("PUT", "/v1/groups/staging/policies/boot",
         {"version": None, "allow_empty_group": True})]
    assert all(r.headers.get("OpenStack-API-Version") ==
               "trusted-pools 1.5" for r in api.requests)


def test_host_vtpm_list_shows_the_host_report(api):  # noqa: F811
    instance = "00000000-0000-4000-8000-000000000001"
    api.answer = lambda r: json_reply(200, {"vtpms": {
        "host": "compute-1", "source": "host-reported",
        "note": "not evidence", "enabled": True, "driver": "swtpm",
        "reported_at": 1, "vtpms": [
            {"instance": instance, "status": "running", "reason": None,
             "attested_on": "compute-2", "conflict": True}]}})
    result = openstack(api, "trusted", "host", "vtpm", "list", "compute-1",
                       "-f", "json")
    assert result.code == 0, result.stderr
    assert json.loads(result.stdout) == [{
        "Instance": instance, "Status": "running", "Reason": None,
        "Attested On": "compute-2", "Conflict": True,
        "Source": "host-reported"}]
    [sent] = api.requests
    assert (sent.method, sent.path) == ("GET", "/v1/hosts/compute-1/vtpms")
    assert sent.headers["OpenStack-API-Version"] == "trusted-pools 1.5"
    assert "not evidence" in result.stderr


def test_host_vtpm_list_refresh_asks_then_waits(api):  # noqa: F811
    report = {"host": "compute-1", "source": "host-reported", "note": "",
              "enabled": False, "driver": None, "reported_at": 1,
              "vtpms": []}
    operation = {"id": "op-1", "host": "compute-1", "kind": "list_vtpms",
                 "state": "done", "result": {"vtpms": report}}
    api.answer = lambda r: json_reply(202, {"operation": operation})
    result = openstack(api, "trusted", "host", "vtpm", "list", "compute-1",
                       "--refresh", "-f", "json")
    assert result.code == 0, result.stderr
    assert json.loads(result.stdout) == []
    [sent] = api.requests
    assert (sent.method, sent.path) == ("POST", "/v1/hosts/compute-1/vtpms")


def test_host_vtpm_list_escapes_what_the_host_wrote(api):  # noqa: F811
    # A compromised host's reason must not rewrite the operator's terminal
    # (a carriage return over the Conflict column, an escape sequence).
    instance = "00000000-0000-4000-8000-000000000002"
    api.answer = lambda r: json_reply(200, {"vtpms": {
        "host": "compute-1", "source": "host-reported",
        "note": "not evidence", "enabled": True, "driver": "swtpm",
        "reported_at": 1, "vtpms": [
            {"instance": instance, "status": "failed",
             "reason": "ok\r\x1b[2Jall fine", "attested_on": "compute-2",
             "conflict": True}]}})
    result = openstack(api, "trusted", "host", "vtpm", "list", "compute-1")
    assert result.code == 0, result.stderr
    assert "\x1b" not in result.stdout and "\r" not in result.stdout
    assert "ok\\r\\x1b[2Jall fine" in result.stdout
