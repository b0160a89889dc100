"""The plugin's API client over real HTTP: a scripted server on 127.0.0.1
answers, keystoneauth1 (admin_token plugin, as ``--os-token
--os-endpoint`` gives) sends.

Covers the microversion header, the mapping of error responses to
osc-lib CommandErrors with the API's detail, and pagination (next links,
--limit/--marker passthrough, links that point elsewhere, loops)."""

from __future__ import annotations

import json
import types
import urllib.parse
from typing import Any, Callable

import pytest
from keystoneauth1 import loading
from keystoneauth1 import session as ksa_session
from osc_lib import exceptions as osc_exceptions

from tests.unit.osc.scripted import Recorded, Reply, ScriptedAPI
from tests.unit.osc.scripted import api  # noqa: F401 - the fixture
from tests.unit.osc.scripted import json_reply
from trusted_pools.osc import client as client_mod
from trusted_pools.osc import plugin


def make_client(endpoint: str, version: str = "1.0"
                ) -> client_mod.Client:
    """The client as the shell builds it (plugin.make_client), on a
    session with the admin_token plugin."""
    auth = loading.get_plugin_loader("admin_token").load_from_options(
        endpoint=endpoint, token="the-token")
    instance = types.SimpleNamespace(
        session=ksa_session.Session(auth=auth), interface="public",
        region_name=None, _api_version={plugin.API_NAME: version})
    return plugin.make_client(instance)


def test_every_request_carries_the_microversion_and_token(api):
    api.answer = lambda r: json_reply(200, {"keys": []})
    make_client(api.url).list_keys()
    make_client(api.url, "1").list_keys()  # major only: 1.0
    assert len(api.requests) == 2
    for request in api.requests:
        assert request.path == "/v1/keys"
        assert request.headers["OpenStack-API-Version"] == \
            "trusted-pools 1.0"
        assert request.headers["X-Auth-Token"] == "the-token"


@pytest.mark.parametrize("version", ["2.0", "1.99", "one", "1.0.1", ""])
def test_versions_the_client_does_not_know_are_refused(version):
    with pytest.raises(osc_exceptions.UnsupportedVersion):
        plugin.check_api_version(version)


def test_known_versions_are_accepted():
    assert plugin.check_api_version("1.0") is True
    assert plugin.check_api_version("1") is True


def test_openstack_error_becomes_command_error_with_the_detail(api):
    detail = ("Policy doesn't allow trusted_pools:policy:create to be "
              "performed.")
    api.answer = lambda r: json_reply(403, {"errors": [{
        "status": 403, "code": "trusted-pools.policy.forbidden",
        "title": "Forbidden", "detail": detail,
        "request_id": "req-1234"}]})
    with pytest.raises(osc_exceptions.CommandError) as caught:
        make_client(api.url).create_policy("golden", "measured_boot",
                                           {"kind": "measured_boot"})
    error = caught.value
    assert isinstance(error, client_mod.APIError)
    assert (error.status, error.code, error.detail, error.request_id) == (
        403, "trusted-pools.policy.forbidden", detail, "req-1234")
    assert str(error) == (
        "Forbidden (HTTP 403): %s [code trusted-pools.policy.forbidden, "
        "request req-1234]" % detail)
    [sent] = api.requests
    assert (sent.method, sent.path, sent.body) == (
        "POST", "/v1/policies", {"name": "golden", "kind": "measured_boot",
                                 "body": {"kind": "measured_boot"}})


def test_keystonemiddleware_refusal_is_shown(api):
    api.answer = lambda r: json_reply(
        401, {"error": {"code": 401, "title": "Unauthorized",
                        "message": "The request you have made requires "
                                   "authentication."}},
        {"X-OpenStack-Request-ID": "req-99"})
    with pytest.raises(client_mod.APIError) as caught:
        make_client(api.url).list_hosts()
    assert str(caught.value) == (
        "Unauthorized (HTTP 401): The request you have made requires "
        "authentication. [request req-99]")


def test_an_error_without_json_shows_the_text(api):
    api.answer = lambda r: (502, {"Content-Type": "text/html"},
                            b"<h1>proxy: upstream down</h1>")
    with pytest.raises(client_mod.APIError) as caught:
        make_client(api.url).get_host("compute-1")
    assert caught.value.status == 502
    assert "proxy: upstream down" in str(caught.value)


def test_an_unreachable_api_is_named():
    probe = ScriptedAPI()  # bound, never served: take its port, close it
    url = probe.url
    probe.server.server_close()
    with pytest.raises(osc_exceptions.CommandError) as caught:
        make_client(url).list_keys()
    assert "Cannot reach trusted-pools-api for GET /v1/keys" in str(
        caught.value)


def test_an_answer_without_the_resource_is_an_error(api):
    api.answer = lambda r: json_reply(200, {"something": "else"})
    with pytest.raises(osc_exceptions.CommandError, match="'host'"):
        make_client(api.url).get_host("compute-1")


def test_names_are_one_path_segment(api):
    api.answer = lambda r: json_reply(200, {"host": {"name": "x"}})
    make_client(api.url).get_host("../policies/evil?x=1")
    [sent] = api.requests
    assert sent.path == "/v1/hosts/..%2Fpolicies%2Fevil%3Fx%3D1"
    assert sent.query == {}


NAMES = ["h%02d" % i for i in range(7)]


def paged_hosts(page_size: int, link_base: str
                ) -> Callable[[Recorded], Reply]:
    """The API's paging: sorted names after ``marker``, ``limit`` (at most
    page_size) of them, a next link while more remain."""
    def answer(request: Recorded) -> Reply:
        start = 0
        if "marker" in request.query:
            start = NAMES.index(request.query["marker"]) + 1
        limit = min(int(request.query.get("limit", page_size)), page_size)
        chunk = NAMES[start:start + limit]
        links = []
        if start + limit < len(NAMES):
            links = [{"rel": "next", "href": link_base + "v1/hosts?"
                      + urllib.parse.urlencode({"limit": limit,
                                                "marker": chunk[-1]})}]
        return json_reply(200, {"hosts": [{"name": n} for n in chunk],
                                "links": links})
    return answer


def test_lists_follow_next_links_to_the_end(api):
    api.answer = paged_hosts(3, api.url)
    hosts = make_client(api.url).list_hosts(group="gpu", status="trusted")
    assert [h["name"] for h in hosts] == NAMES
    assert [r.query.get("marker") for r in api.requests] == [
        None, "h02", "h05"]
    for request in api.requests:  # filters on every page, no limit sent
        assert request.query.get("group") == "gpu"
        assert request.query.get("status") == "trusted"
        assert "limit" not in request.query


def test_limit_and_marker_pass_through_and_limit_is_reached(api):
    api.answer = paged_hosts(2, api.url)  # the server pages by 2
    hosts = make_client(api.url).list_hosts(limit=5, marker="h00")
    assert [h["name"] for h in hosts] == ["h01", "h02", "h03", "h04",
                                          "h05"]
    assert [(r.query.get("marker"), r.query.get("limit"))
            for r in api.requests] == [("h00", "5"), ("h02", "3"),
                                       ("h04", "1")]


def test_a_limit_above_the_contract_maximum_is_paged(api):
    api.answer = paged_hosts(1000, api.url)
    make_client(api.url).list_hosts(limit=5000)
    assert api.requests[0].query["limit"] == "1000"


def test_next_links_to_another_host_get_no_request(api):
    # A next link naming another server: the client takes its marker and
    # asks its own endpoint; the token goes nowhere else.
    api.answer = paged_hosts(3, "http://attacker.invalid:1/")
    hosts = make_client(api.url).list_hosts()
    assert [h["name"] for h in hosts] == NAMES
    assert api.paths() == ["/v1/hosts"] * 3


def test_a_paging_loop_is_stopped(api):
    api.answer = lambda r: json_reply(200, {
        "hosts": [{"name": "h00"}],
        "links": [{"rel": "next", "href": api.url + "v1/hosts?marker=h00"}]})
    with pytest.raises(osc_exceptions.CommandError, match="twice"):
        make_client(api.url).list_hosts()
    assert len(api.requests) == 2


def test_a_next_link_without_marker_is_refused(api):
    api.answer = lambda r: json_reply(200, {
        "policies": [], "links": [{"rel": "next",
                                   "href": api.url + "v1/policies"}]})
    with pytest.raises(osc_exceptions.CommandError, match="without a "
                                                          "marker"):
        make_client(api.url).list_policies()
    assert len(api.requests) == 1


def test_a_long_wait_says_it_is_still_waiting_and_a_short_one_does_not():
    from trusted_pools.osc import client as client_mod

    class Polled(client_mod.Client):
        def __init__(self, pending_polls, progress):
            super().__init__(adapter=None, progress=progress)
            self.left = pending_polls

        def get_operation(self, host, operation_id):
            self.left -= 1
            state = "pending" if self.left > 0 else "done"
            return {"id": operation_id, "host": host, "kind": "attest",
                    "state": state, "result": {"verdict": {}}}

    now = [0.0]

    def sleep(seconds):
        now[0] += seconds

    pending = {"id": "op-1", "host": "compute-1", "kind": "attest",
               "state": "pending"}
    for polls, lines in ((2, 0), (20, 3)):
        said = []
        now[0] = 0.0
        done = Polled(polls, said.append).wait_operation(
            dict(pending), timeout=60, sleep=sleep, clock=lambda: now[0])
        assert done["state"] == "done"
        assert len(said) == lines, said
        for line in said:
            assert line.startswith("Waiting for operation op-1 (attest of "
                                   "host compute-1): pending for ")
            assert line.endswith("(gives up after 60 s)\n")
