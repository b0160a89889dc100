"""Requests that fuzzing (bench/fuzz.py, the api.* targets) found to end in
a 500 or in an exception out of the pipeline: each is now a clean 400 in
the OpenStack error format, and changes nothing."""

from __future__ import annotations

import pytest

from tests.api_fixtures import error_of
from tests.unit.api.conftest import add_host_with_verdict


@pytest.mark.parametrize("path", [
    "/v1/hosts/%FF",                      # percent-decodes to non-UTF-8
    "/v1/hosts/compute-1%C3/verdicts",    # a cut multi-byte sequence
    "/v1/policies/%DE%21/diff",
    "/v1/groups/%E9/policies",
])
@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "DELETE"])
def test_path_that_is_not_utf8_is_400(client, db, conductors, path,
                                      method, caplog):
    add_host_with_verdict(db, "compute-1", status="untrusted")
    before = db.list_hosts()
    response = client.request(method, path, "admin", body={})
    error = error_of(response)
    assert response.status_code == 400, response.body
    assert error["code"] == "trusted-pools.request.malformed"
    assert "not UTF-8" in error["detail"]
    assert db.list_hosts() == before and conductors.calls == []


@pytest.mark.parametrize("query", ["%FF=1", "limit=%DE", "a=%C3&b=1"])
def test_query_that_is_not_utf8_is_400(client, query):
    response = client.get("/v1/hosts?" + query, persona="reader")
    error = error_of(response)
    assert response.status_code == 400, response.body
    assert error["code"] == "trusted-pools.request.malformed"


@pytest.mark.parametrize("since", ["9999-12-31T23:59:59-23:59",
                                   "0001-01-01T00:00:00+14:00"])
def test_since_out_of_utc_range_is_400(client, db, since):
    add_host_with_verdict(db, "compute-1", status="untrusted")
    response = client.get("/v1/verdicts?since=" + since.replace(
        ":", "%3A").replace("+", "%2B"), persona="reader")
    error = error_of(response)
    assert response.status_code == 400, response.body
    assert "out of range" in error["detail"]
