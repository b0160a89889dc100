"""/v1/hosts: list, show, history, enroll, attest, capture, reset,
decommission, and (from microversion 1.1) the host's operations.

Enroll, attest and capture run on the owning conductor's worker pool. From
1.1 they answer ``202 Accepted`` with the pending operation and a
``Location`` to poll (``GET /v1/hosts/{name}/operations/{id}``); at 1.0 the
API waits for the operation (up to ``[trusted_pools_api] rpc_timeout``) and
answers as it always did (201 / 200 with the result, or the typed error).
"""

from __future__ import annotations

import logging
from typing import Any

from http import HTTPStatus

from trusted_pools import exception
from trusted_pools.api import errors
from trusted_pools.api import microversion
from trusted_pools.api import operations
from trusted_pools.api import pagination
from trusted_pools.api import schemas
from trusted_pools.api import views
from trusted_pools.api.context import Call
from trusted_pools.db import api as db_api
from trusted_pools.protocol import display

LOG = logging.getLogger(__name__)

Result = tuple[Any, ...]  # (status, body) or (status, body, headers)


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
    """A host's verdicts, newest first. From 1.4 the history pages: each
    verdict carries its ``sequence``, ``?marker=<sequence>`` gives the
    older ones, and ``links`` has the next page while there is one."""
    call.authorize("trusted_pools:host:verdict:list")
    paged = call.version >= microversion.KEY_RELEASES
    params = call.query(schemas.history_query if paged
                        else schemas.limit_query)
    page = call.page({k: v for k, v in params.items() if k != "marker"})
    host = call.db.get_host_by_name(name)
    if not paged:
        history = call.db.verdict_history(host.id, limit=page.limit)
        return 200, {"verdicts": [views.verdict(v) for v in history]}
    before = int(params["marker"]) if "marker" in params else None
    # One more than asked: whether a next page exists, without a count.
    history = call.db.verdict_history(host.id, limit=page.limit + 1,
                                      before_sequence=before)
    more = len(history) > page.limit
    history = history[:page.limit]
    shown = []
    for v in history:
        entry = views.verdict(v)
        entry["sequence"] = v.sequence
        shown.append(entry)
    next_marker = str(history[-1].sequence) if more and history else None
    return 200, {"verdicts": shown,
                 "links": pagination.links(call.request, next_marker)}


def _started(call: Call, answer: Any) -> db_api.HostOperation:
    """The operation a conductor answered with (RPC 3.0)."""
    return call.db.get_operation(answer["operation"])


def _accepted(call: Call, operation: db_api.HostOperation) -> Result:
    """1.1 and later: 202 with the operation and where to poll it."""
    location = call.request.application_url + operations.path(operation)
    return 202, {"operation": _operation(call, operation)}, \
        {"Location": location}


def _finished(call: Call, operation: db_api.HostOperation) -> Any:
    """1.0: wait for the operation; its result, or its error raised."""
    operation = operations.wait(
        call.db, operation.id,
        call.services.conf.trusted_pools_api.rpc_timeout)
    return operations.result_or_raise(operation)


def _is_async(call: Call) -> bool:
    return call.version >= microversion.ASYNC_OPERATIONS


def enroll(call: Call) -> Result:
    call.authorize("trusted_pools:host:create")
    call.query(schemas.no_query)
    body = call.body(schemas.enroll_host)
    name = body["name"]
    if call.version >= microversion.GROUPS and "group" in body:
        _refuse_group_change_by_enroll(call, name, body["group"])
    answer = call.conductors.call("enroll_host", call.rpc_context(), name,
                                  group=body.get("group", "default"),
                                  ek_sha256=body.get("ek_sha256"))
    operation = _started(call, answer)
    LOG.info("Enrollment of host %s asked by %s (operation %s)", name,
             call.actor, operation.id)
    if _is_async(call):
        return _accepted(call, operation)
    _finished(call, operation)
    host = call.db.get_host_by_name(name)
    latest = call.db.latest_verdicts([host.id])
    return 201, {"host": views.host(host, latest[0] if latest else None,
                                    call.conductors.owner(name))}


def _refuse_group_change_by_enroll(call: Call, name: str, group: str
                                   ) -> None:
    # Before 1.2 an enroll of a known host kept its group whatever the
    # body said: the operator believed the host moved and it had not.
    try:
        host = call.db.get_host_by_name(name)
    except exception.HostNotFound:
        return
    if host.group != group:
        raise errors.APIError(
            409, "host.group_conflict",
            "Host %s is in group %s; enrolling does not move it. Move it "
            "with PATCH /v1/hosts/%s {\"group\": \"%s\"} ('openstack "
            "trusted host set --group %s %s')."
            % (name, host.group, name, group, group, name))


def update(call: Call, name: str) -> Result:
    """Move a host to another group (microversion 1.2). Conductors notice
    at their next enrollment check and appraise it with the new group's
    policies from its next evidence on."""
    call.authorize("trusted_pools:host:update")
    microversion.require(call.version, microversion.GROUPS,
                         call.request.path_info)
    call.query(schemas.no_query)
    body = call.body(schemas.update_host)
    host = call.db.get_host_by_name(name)
    previous = host.group
    if body["group"] != previous:
        host = call.db.update_host_group(host.id, body["group"])
        LOG.warning("Host %s moved from group %s to %s by %s", name,
                    previous, host.group, call.actor)
    latest = call.db.latest_verdicts([host.id])
    return 200, {"host": views.host(host, latest[0] if latest else None,
                                    call.conductors.owner(name))}


def _verdict_of(call: Call, name: str, answer: dict[str, Any]
                ) -> dict[str, Any]:
    token = answer.get("signed_result")
    # The stored row has what the conductor's answer leaves out (the
    # evidence digest); it is the one whose signed result it returned.
    host = call.db.get_host_by_name(name)
    for stored in call.db.verdict_history(host.id, limit=10):
        if token and stored.signed_result == token:
            return views.verdict(stored)
    verdict = answer["verdict"]
    return {"status": verdict["status"], "level": verdict["level"],
            "reasons": verdict["reasons"],
            "issued_at": views.iso(verdict["issued_at"]),
            "expires_at": views.iso(verdict["expires_at"]),
            "evidence_digest": None, "signed_result": token}


def _policies_of(captured: dict[str, Any]) -> dict[str, Any]:
    return {views.API_KIND.get(kind, kind): body
            for kind, body in captured.items()}


def attest(call: Call, name: str) -> Result:
    call.authorize("trusted_pools:host:attest")
    call.query(schemas.no_query)
    call.db.get_host_by_name(name)
    answer = call.conductors.call("attest_now", call.rpc_context(), name)
    operation = _started(call, answer)
    if _is_async(call):
        return _accepted(call, operation)
    return 200, {"verdict": _verdict_of(call, name,
                                        _finished(call, operation))}


def capture(call: Call, name: str) -> Result:
    call.authorize("trusted_pools:host:capture")
    call.query(schemas.no_query)
    call.db.get_host_by_name(name)
    answer = call.conductors.call("capture_policy", call.rpc_context(),
                                  name)
    operation = _started(call, answer)
    if _is_async(call):
        return _accepted(call, operation)
    return 200, {"policies": _policies_of(_finished(call, operation))}


def _operation(call: Call, operation: db_api.HostOperation
               ) -> dict[str, Any]:
    """An operation as the API shows it: its result in the shape the
    synchronous answer had (``verdict``, ``policies``; ``enrollment`` for
    an enrollment), or its error in the OpenStack error format."""
    result = None
    if operation.state == "done" and isinstance(operation.result, dict):
        if operation.kind == "attest":
            result = {"verdict": _verdict_of(call, operation.hostname,
                                             operation.result)}
        elif operation.kind == "capture":
            result = {"policies": _policies_of(operation.result)}
        elif operation.kind == "certify":
            result = {"binding_key": dict(operation.result)}
        elif operation.kind == "deep_attest":
            result = {"instances": _instances_of(operation.result)}
        elif operation.kind == "list_vtpms":
            result = {"vtpms": _vtpm_report(operation.result)}
        else:
            result = {"enrollment": dict(operation.result)}
    error = operations.error_of(operation)
    shown_error = None
    if error is not None:
        status = errors.status_of(error)
        shown_error = {"status": status, "code": errors.code_of(error),
                       "title": HTTPStatus(status).phrase,
                       "detail": error.message}
    return views.operation(operation, result, shown_error,
                           call.request.application_url
                           + operations.path(operation))


def _since_1_1(call: Call) -> None:
    microversion.require(call.version, microversion.ASYNC_OPERATIONS,
                         call.request.path_info)


def show_operation(call: Call, name: str, operation_id: str) -> Result:
    call.authorize("trusted_pools:host:operation:get")
    _since_1_1(call)
    call.query(schemas.no_query)
    return 200, {"operation": _operation(
        call, call.db.get_operation(operation_id, hostname=name))}


def list_operations(call: Call, name: str) -> Result:
    call.authorize("trusted_pools:host:operation:list")
    _since_1_1(call)
    params = call.query(schemas.limit_query)
    page = call.page(params)
    return 200, {"operations": [
        _operation(call, operation)
        for operation in call.db.list_operations(name, limit=page.limit)]}


def certify_binding_key(call: Call, name: str) -> Result:
    """Have the host's enrolled AK certify its binding key (the key its
    released vTPM secrets are wrapped to), e.g. for a host enrolled before
    the key service existed. A host operation (conductor RPC 3.3): 202
    from microversion 1.3, before it the API waits for it."""
    call.authorize("trusted_pools:host:certify_binding_key")
    call.query(schemas.no_query)
    call.db.get_host_by_name(name)
    answer = call.conductors.call("certify_binding_key",
                                  call.rpc_context(), name)
    if not (isinstance(answer, dict) and "operation" in answer):
        # A conductor pinned to RPC 3.1 certified before it answered.
        LOG.info("Binding key of host %s certified (requested by %s)",
                 name, call.actor)
        return 200, {"binding_key": answer}
    operation = _started(call, answer)
    LOG.info("Certification of the binding key of host %s asked by %s "
             "(operation %s)", name, call.actor, operation.id)
    if call.version >= microversion.DEEP_ATTESTATION:
        return _accepted(call, operation)
    return 200, {"binding_key": _finished(call, operation)}


def _since_1_3(call: Call) -> None:
    microversion.require(call.version, microversion.DEEP_ATTESTATION,
                         call.request.path_info)


def _instances_of(result: Any) -> list[dict[str, Any]]:
    """A deep attestation's entries as the API shows them (the signed
    results are the conductor's; the verdict fields come with them)."""
    entries = result.get("instances") if isinstance(result, dict) else None
    return [dict(e) for e in entries or () if isinstance(e, dict)]


def deep_attest(call: Call, name: str) -> Result:
    """Attest instances of the host together with the host: one host
    quote over the commitment to the batch's guest quotes (1.3). 202 with
    the operation; its result lists each instance's verdict (and signed
    result) or error."""
    call.authorize("trusted_pools:host:deep_attest")
    _since_1_3(call)
    call.query(schemas.no_query)
    body = call.body(schemas.deep_attest)
    call.db.get_host_by_name(name)
    answer = call.conductors.call("deep_attest", call.rpc_context(), name,
                                  instances=body["instances"])
    operation = _started(call, answer)
    LOG.info("Deep attestation of %d instance(s) of host %s asked by %s "
             "(operation %s)", len(body["instances"]), name, call.actor,
             operation.id)
    return _accepted(call, operation)


def list_vtpms(call: Call, name: str) -> Result:
    """The vTPMs the host last reported (1.3): the result of its newest
    done ``list_vtpms`` operation, from the database (no conductor or
    agent is asked; ``POST`` asks for a new report). Labelled
    host-reported: it is not evidence."""
    call.authorize("trusted_pools:host:vtpm:list")
    _since_1_3(call)
    call.query(schemas.no_query)
    call.db.get_host_by_name(name)
    operation = call.db.latest_done_operation(name, "list_vtpms")
    if operation is None or not isinstance(operation.result, dict):
        raise exception.VTPMReportNotFound(host=name)
    return 200, {"vtpms": _vtpm_report(operation.result,
                                       operation=operation.id)}


def _vtpm_report(result: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """A stored vTPM report as the API shows it: ``reported_at`` an ISO
    time (reports stored before times were ISO everywhere held epoch
    seconds)."""
    report = dict(result, **extra)
    try:
        report["reported_at"] = display.iso_time(report.get("reported_at"))
    except (ValueError, OverflowError, OSError):
        report["reported_at"] = None
    return report


def refresh_vtpms(call: Call, name: str) -> Result:
    """Ask the host's agent for a new report of its vTPMs (1.3): an
    operation of kind ``list_vtpms`` on the owner's worker pool, 202 with
    the operation to poll; its result is the report."""
    call.authorize("trusted_pools:host:vtpm:refresh")
    _since_1_3(call)
    call.query(schemas.no_query)
    call.db.get_host_by_name(name)
    answer = call.conductors.call("list_vtpms", call.rpc_context(), name)
    return _accepted(call, _started(call, answer))


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
