"""/v1/hosts: list, show, history, enroll, attest, capture, reset,
decommission."""

from __future__ import annotations

import logging
from typing import Any

from trusted_pools import exception
from trusted_pools.api import pagination
from trusted_pools.api import schemas
from trusted_pools.api import views
from trusted_pools.api.context import Call
from trusted_pools.db import api as db_api

LOG = logging.getLogger(__name__)

Result = tuple[int, Any]


def _owner_or_none(call: Call):
    ring = call.conductors.ring()
    return (lambda name: ring.owner(name)) if len(ring) else \
        (lambda name: None)


def list_hosts(call: Call) -> Result:
    call.authorize("trusted_pools:host:list")
    params = call.query(schemas.list_hosts_query)
    page = call.page(params)
    hosts = call.db.list_hosts(group=params.get("group"),
                               state=params.get("state"))
    latest = {v.host_id: v for v in call.db.latest_verdicts(
        [h.id for h in hosts])}
    if "status" in params:
        hosts = [h for h in hosts if h.id in latest
                 and latest[h.id].status == params["status"]]
    chunk, next_marker = pagination.cut(hosts, lambda h: h.hostname, page)
    owner = _owner_or_none(call)
    return 200, {"hosts": [views.host(h, latest.get(h.id),
                                      owner(h.hostname)) for h in chunk],
                 "links": pagination.links(call.request, next_marker)}


def _detail(call: Call, host: db_api.Host) -> dict[str, Any]:
    latest = call.db.latest_verdicts([host.id])
    try:
        registration = call.db.get_registration(host.id)
    except exception.NotFound:
        registration = None
    return views.host_detail(host, latest[0] if latest else None,
                             call.conductors.owner(host.hostname),
                             registration)


def show(call: Call, name: str) -> Result:
    call.authorize("trusted_pools:host:get")
    call.query(schemas.no_query)
    return 200, {"host": _detail(call, call.db.get_host_by_name(name))}


def verdicts(call: Call, name: str) -> Result:
    call.authorize("trusted_pools:host:verdict:list")
    params = call.query(schemas.limit_query)
    page = call.page(params)
    host = call.db.get_host_by_name(name)
    history = call.db.verdict_history(host.id, limit=page.limit)
    return 200, {"verdicts": [views.verdict(v) for v in history]}


def enroll(call: Call) -> Result:
    call.authorize("trusted_pools:host:create")
    call.query(schemas.no_query)
    body = call.body(schemas.enroll_host)
    name = body["name"]
    call.conductors.call("enroll_host", call.rpc_context(), name,
                         group=body.get("group", "default"),
                         ek_sha256=body.get("ek_sha256"))
    host = call.db.get_host_by_name(name)
    LOG.info("Host %s enrolled by %s", name, call.actor)
    latest = call.db.latest_verdicts([host.id])
    return 201, {"host": views.host(host, latest[0] if latest else None,
                                    call.conductors.owner(name))}


def attest(call: Call, name: str) -> Result:
    call.authorize("trusted_pools:host:attest")
    call.query(schemas.no_query)
    host = call.db.get_host_by_name(name)
    answer = call.conductors.call("attest_now", call.rpc_context(), name)
    token = answer.get("signed_result")
    # The stored row has what the RPC answer leaves out (the evidence
    # digest); it is the one whose signed result the conductor returned.
    for stored in call.db.verdict_history(host.id, limit=10):
        if token and stored.signed_result == token:
            return 200, {"verdict": views.verdict(stored)}
    verdict = answer["verdict"]
    return 200, {"verdict": {
        "status": verdict["status"], "level": verdict["level"],
        "reasons": verdict["reasons"],
        "issued_at": views.iso(verdict["issued_at"]),
        "expires_at": views.iso(verdict["expires_at"]),
        "evidence_digest": None, "signed_result": token}}


def capture(call: Call, name: str) -> Result:
    call.authorize("trusted_pools:host:capture")
    call.query(schemas.no_query)
    call.db.get_host_by_name(name)
    captured = call.conductors.call("capture_policy", call.rpc_context(),
                                    name)
    return 200, {"policies": {views.API_KIND.get(kind, kind): body
                              for kind, body in captured.items()}}


def certify_binding_key(call: Call, name: str) -> Result:
    """Have the host's enrolled AK certify its binding key (the key its
    released vTPM secrets are wrapped to), e.g. for a host enrolled before
    the key service existed."""
    call.authorize("trusted_pools:host:certify_binding_key")
    call.query(schemas.no_query)
    call.db.get_host_by_name(name)
    certified = call.conductors.call("certify_binding_key",
                                     call.rpc_context(), name)
    LOG.info("Binding key of host %s certified (requested by %s)", name,
             call.actor)
    return 200, {"binding_key": certified}


def reset_enrollment(call: Call, name: str) -> Result:
    call.authorize("trusted_pools:host:reset_enrollment")
    call.query(schemas.no_query)
    call.db.get_host_by_name(name)
    call.conductors.call("reset_enrollment", call.rpc_context(), name)
    LOG.warning("Enrollment of host %s reset by %s", name, call.actor)
    return 202, None


def decommission(call: Call, name: str) -> Result:
    """Remove the host. Its owner first drops the host's state (through a
    reset of its enrollment), so no verdict of it is written afterwards."""
    call.authorize("trusted_pools:host:delete")
    call.query(schemas.no_query)
    host = call.db.get_host_by_name(name)
    if host.state == "enrolled":
        call.conductors.call("reset_enrollment", call.rpc_context(), name)
    call.db.delete_host(host.id)
    LOG.warning("Host %s decommissioned by %s", name, call.actor)
    return 204, None
