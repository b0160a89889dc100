"""``openstack trusted key-release list`` (issue 14) through the real
openstack shell against a scripted API."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.osc_shell import plugin_visible, run_openstack
from tests.unit.osc.scripted import api  # noqa: F401 - the fixture
from tests.unit.osc.scripted import json_reply


def _row(number: int, **extra: Any) -> dict[str, Any]:
    row = {"id": number, "secret_id": "0b3a2c1d-0000-4000-8000-0000000000%02d"
           % number, "project_id": "proj", "owner": "inst-%d" % number,
           "host": "compute-1", "outcome": "refused", "status": "untrusted",
           "level": 0, "min_level": None, "reason_code": "not_trusted",
           "reason": "kernel not approved", "conductor": "conductor-a",
           "requested_by": "nova", "request_id": "req-%d" % number,
           "created_at": "2026-12-03T19:00:%02dZ" % number}
    row.update(extra)
    return row


@pytest.fixture(scope="module", autouse=True)
def _plugin(tmp_path_factory) -> None:
    plugin_visible(tmp_path_factory.mktemp("osc-plugin"))


def openstack(api: Any, *argv: str):  # noqa: F811
    return run_openstack(["--os-auth-type", "admin_token",
                          "--os-endpoint", api.url, "--os-token", "t",
                          *argv])


def test_list_follows_pages_and_prints_json(api):  # noqa: F811
    pages = {None: ([_row(3), _row(2)], "2"), "2": ([_row(1)], None)}

    def answer(request):
        rows, following = pages[request.query.get("marker")]
        links = [] if following is None else [
            {"rel": "next", "href": api.url + "/v1/key-releases?marker="
             + following}]
        return json_reply(200, {"key_releases": rows, "links": links})
    api.answer = answer
    listed = openstack(api, "trusted", "key-release", "list", "--refused",
                       "--host", "compute-1", "--long", "-f", "json")
    assert listed.code == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert [r["ID"] for r in rows] == [3, 2, 1]
    assert rows[0]["Created At"] == "2026-12-03T19:00:03Z"
    assert rows[0]["Reason"] == "kernel not approved"
    first = api.requests[0]
    assert (first.method, first.path) == ("GET", "/v1/key-releases")
    assert first.query["outcome"] == "refused"
    assert first.query["host"] == "compute-1"
    assert first.headers["OpenStack-API-Version"] == "trusted-pools 1.5"
    assert api.requests[1].query["marker"] == "2"


def test_host_written_text_is_shown_escaped(api):  # noqa: F811
    api.answer = lambda r: json_reply(200, {"key_releases": [_row(
        1, host="evil\x1b[2Jhost", reason="boot\nforged line")],
        "links": []})
    listed = openstack(api, "trusted", "key-release", "list", "--long",
                       "-f", "value", "-c", "Host", "-c", "Reason")
    assert listed.code == 0, listed.stderr
    assert "\x1b" not in listed.stdout
    assert "forged line" in listed.stdout and \
        listed.stdout.count("\n") == 1


def test_an_api_without_key_releases_says_so(api):  # noqa: F811
    api.answer = lambda r: json_reply(404, {"errors": [{
        "code": "trusted-pools.resource.not_found", "title": "Not Found",
        "detail": "No resource at /v1/key-releases before microversion 1.4",
        "status": 404}]})
    listed = openstack(api, "trusted", "key-release", "list")
    assert listed.code != 0
    assert "1.4" in listed.stderr and "Traceback" not in listed.stderr
