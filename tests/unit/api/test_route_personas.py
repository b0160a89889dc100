"""Every state-changing route, swept from the router itself: a compute
host's credentials (the ``service`` persona Nova's services carry, or a
project member) must be refused before anything reaches a conductor or
changes a row.

The list of routes is read from :data:`trusted_pools.api.router.ROUTES`, so a
route added later is attacked here without anyone remembering to add it.
``/v1/secrets`` is the one deliberate exception (Nova stores and releases
its instances' secrets with the owner's token; the release is bound to an
attested host's TPM, see tests/functional for the attacks on it).
"""

from __future__ import annotations

import pytest

from tests.api_fixtures import error_of
from tests.unit.api.conftest import MEASURED_BOOT, add_host_with_verdict
from trusted_pools.api import microversion
from trusted_pools.api import router

_LATEST = microversion.VERSIONS[-1]
_ARGUMENTS = {"name": "compute-1", "group": "default", "operation_id": "1",
              "uuid": "8a3c9f3e-2c55-4f0b-9a57-0c0d6f1e2b11",
              "migration_id": "1", "secret_id": "1"}
_WRITES = sorted(
    (method, path) for path, methods in router.ROUTES.items()
    for method in methods
    if method != "GET" and not path.startswith("/v1/secrets"))


def _state(db):
    hosts = sorted((h.hostname, h.group, h.state, h.approved_ek_sha256)
                   for h in db.list_hosts())
    return (hosts, [(p.name, p.version) for p in db.list_policies()],
            [(a.group, a.policy_name, a.policy_version)
             for a in db.list_assignments()])


def test_the_sweep_sees_the_routes_added_since_1_0():
    assert ("PATCH", "/v1/hosts/{name}") in _WRITES
    assert ("POST", "/v1/hosts/{name}/deep-attest") in _WRITES
    assert ("POST", "/v1/hosts/{name}/vtpms") in _WRITES
    assert ("POST", "/v1/instances/{uuid}/challenge") in _WRITES
    assert ("DELETE", "/v1/groups/{group}/policies/{name}") in _WRITES


@pytest.mark.parametrize("persona", ["service", "member", "reader"])
@pytest.mark.parametrize("method,template", _WRITES)
def test_compute_host_credentials_change_nothing(client, db, conductors,
                                                 persona, method, template):
    add_host_with_verdict(db, "compute-1")
    assert client.post("/v1/policies", {
        "name": "boot", "kind": "measured_boot",
        "body": MEASURED_BOOT}).status_code == 201
    assert client.put("/v1/groups/default/policies/boot",
                      {"version": None}).status_code == 200
    before = _state(db)
    calls_before = list(conductors.calls)
    path = template.format(**_ARGUMENTS)
    body = {"name": "compute-2", "group": "elsewhere", "version": None}
    response = client.request(method, path, persona, body=body,
                              version=_LATEST)
    assert response.status_code == 403, (path, response.body)
    error = error_of(response)
    assert error["code"] == "trusted-pools.policy.forbidden"
    assert error["detail"].startswith("Policy doesn't allow trusted_pools:")
    assert conductors.calls == calls_before
    assert _state(db) == before
