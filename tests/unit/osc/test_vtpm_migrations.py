"""``openstack trusted vtpm migration list|show`` (issue 12) through the
real openstack shell against a scripted API."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.osc_shell import plugin_visible, run_openstack
from tests.unit.osc.scripted import api  # noqa: F401 - the fixture
from tests.unit.osc.scripted import json_reply

ROW = {"id": "0b7d4c2e-8f1a-4e3b-9c6d-5a2f1e0d9c8b",
       "instance": "7d4c6a8e-3c2b-4f6e-9a1d-2b3c4d5e6f70",
       "source": "compute-0", "destination": "compute-1", "kind": "cold",
       "step": "aborted", "epoch": 2, "age": 12.5, "outcome": "aborted",
       "reason": "host compute-1 is untrusted", "conductor": "conductor-a",
       "min_level": None, "transport_key_name": None,
       "created_at": "2026-12-03T16:00:00+00:00",
       "updated_at": "2026-12-03T16:00:01+00:00", "committed_at": None,
       "finished_at": "2026-12-03T16:00:01+00:00"}


@pytest.fixture(scope="module", autouse=True)
def _plugin(tmp_path_factory) -> None:
    plugin_visible(tmp_path_factory.mktemp("osc-plugin"))


def openstack(api: Any, *argv: str):  # noqa: F811
    return run_openstack(["--os-auth-type", "admin_token",
                          "--os-endpoint", api.url, "--os-token", "t",
                          *argv])


def test_list_and_show(api):  # noqa: F811
    api.answer = lambda r: json_reply(200, {"vtpm_migrations": [ROW]}) \
        if r.path == "/v1/vtpm-migrations" else json_reply(
            200, {"vtpm_migration": ROW})
    listed = openstack(api, "trusted", "vtpm", "migration", "list",
                       "--instance", ROW["instance"], "--ended", "--long",
                       "-f", "json")
    assert listed.code == 0, listed.stderr
    [row] = json.loads(listed.stdout)
    assert (row["ID"], row["Step"], row["Epoch"], row["Reason"]) == (
        ROW["id"], "aborted", 2, ROW["reason"])
    sent = api.requests[-1]
    assert (sent.method, sent.path) == ("GET", "/v1/vtpm-migrations")
    assert sent.query == {"instance": ROW["instance"], "active": "false"}

    shown = openstack(api, "trusted", "vtpm", "migration", "show",
                      ROW["id"], "-f", "json")
    assert shown.code == 0, shown.stderr
    assert json.loads(shown.stdout)["reason"] == ROW["reason"]
    assert api.requests[-1].path == "/v1/vtpm-migrations/" + ROW["id"]


def test_an_unknown_migration(api):  # noqa: F811
    api.answer = lambda r: json_reply(404, {"error": {
        "code": "trusted-pools.migration.not_found",
        "title": "Not Found", "detail": "vTPM migration x not found"}})
    shown = openstack(api, "trusted", "vtpm", "migration", "show", "x")
    assert shown.code != 0 and "HTTP 404" in shown.stderr
