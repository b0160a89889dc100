"""/v1/instance-policies and instance-policy assignments (microversion
1.5): golden guest measurements for deep attestation.

Writes go straight to the database, like host policies: a body is
checked with the verifier's own loader first (nothing invalid is
stored), and the owner of a host reads the policies of a batch's
instances when it judges them (no cache: a change holds from the next
deep attestation). A capture pins the PCR values the instance's latest
verdict *verified*, and only while that verdict still reads as trusted:
never values a host or a guest merely claimed.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from trusted_pools import exception
from trusted_pools.api import errors
from trusted_pools.api import microversion
from trusted_pools.api import pagination
from trusted_pools.api import schemas
from trusted_pools.api.context import Call
from trusted_pools.db import api as db_api
from trusted_pools.verifier import deep
from trusted_pools.verifier import instance_standing

LOG = logging.getLogger(__name__)

Result = tuple[int, Any]


def _since_1_5(call: Call) -> None:
    microversion.require(call.version, microversion.INSTANCE_POLICIES,
                         call.request.path_info)


def _uuid(value: str, what: str) -> str:
    try:
        return deep.instance_id(value)
    except exception.InvalidParameterValue:
        raise errors.bad_request("Invalid %s %r: expected a UUID"
                                 % (what, value))


def _version(params: dict[str, str]) -> int | None:
    return int(params["version"]) if "version" in params else None


def view(p: db_api.InstancePolicyRecord, with_pcrs: bool = True
         ) -> dict[str, Any]:
    shown: dict[str, Any] = {
        "name": p.name, "version": p.version, "level": p.level,
        "created_at": p.created_at.isoformat(),
        "created_by": p.created_by}
    if with_pcrs:
        shown["pcrs"] = p.pcrs
    return shown


def assignment_view(a: db_api.InstancePolicyAssignmentRecord
                    ) -> dict[str, Any]:
    return {"kind": a.kind, "target": a.target, "policy": a.policy_name,
            "version": a.policy_version,
            "assigned_at": a.assigned_at.isoformat()}


def _checked(name: str, level: int, pcrs: Any) -> dict[str, Any]:
    """The canonical body, or 400 naming what the loader refused."""
    try:
        return deep.InstancePolicy.from_body(name, 1, level, pcrs).body()
    except exception.InvalidParameterValue as error:
        raise errors.bad_request("Invalid instance policy: %s" % error)


def list_policies(call: Call) -> Result:
    call.authorize("trusted_pools:instance_policy:list")
    _since_1_5(call)
    page = call.page(call.query(schemas.page_query))
    newest: dict[str, db_api.InstancePolicyRecord] = {}
    for record in call.db.list_instance_policies():
        newest[record.name] = record
    chunk, next_marker = pagination.cut(list(newest.values()),
                                        lambda p: p.name, page)
    return 200, {"instance_policies": [view(p, False) for p in chunk],
                 "links": pagination.links(call.request, next_marker)}


def create(call: Call) -> Result:
    call.authorize("trusted_pools:instance_policy:create")
    _since_1_5(call)
    call.query(schemas.no_query)
    body = call.body(schemas.create_instance_policy)
    level = body.get("level", 3)
    pcrs = _checked(body["name"], level, body["pcrs"])
    record = call.db.create_instance_policy_version(
        body["name"], level, pcrs, created_by=call.actor)
    LOG.info("Instance policy %s version %d created by %s", record.name,
             record.version, call.actor)
    return 201, {"instance_policy": view(record)}


def show(call: Call, name: str) -> Result:
    call.authorize("trusted_pools:instance_policy:get")
    _since_1_5(call)
    params = call.query(schemas.instance_policy_version_query)
    return 200, {"instance_policy": view(
        call.db.get_instance_policy(name, _version(params)))}


def delete(call: Call, name: str) -> Result:
    call.authorize("trusted_pools:instance_policy:delete")
    _since_1_5(call)
    params = call.query(schemas.instance_policy_version_query)
    deleted = call.db.delete_instance_policy(name, _version(params))
    LOG.info("%d version(s) of instance policy %s deleted by %s", deleted,
             name, call.actor)
    return 204, None


def capture(call: Call, uuid: str) -> Result:
    """A new version of an instance policy from the PCR values the
    instance's latest deep attestation verified."""
    call.authorize("trusted_pools:instance_policy:capture")
    _since_1_5(call)
    call.query(schemas.no_query)
    instance = _uuid(uuid, "instance")
    body = call.body(schemas.capture_instance_policy)
    standing = instance_standing.capturable(
        call.db.instance_verdict(instance), instance, time.time())
    verified = standing.verdict.pcrs
    level = body.get("level", 3)
    try:
        policy = deep.capture_policy(body["name"], 1, level, verified,
                                     body.get("pcrs"), body.get("banks"))
    except (exception.InvalidParameterValue,
            exception.UnsupportedAlgorithm) as error:
        raise errors.bad_request("Cannot capture: %s" % error)
    record = call.db.create_instance_policy_version(
        body["name"], level, policy.body(), created_by=call.actor)
    LOG.info("Instance policy %s version %d captured from instance %s "
             "(verdict of %s) by %s", record.name, record.version, instance,
             standing.verdict.issued_at.isoformat(), call.actor)
    return 201, {"instance_policy": view(record),
                 "captured_from": {
                     "instance": instance, "host": standing.hostname,
                     "verdict_issued_at":
                         standing.verdict.issued_at.isoformat()}}


def list_assignments(call: Call) -> Result:
    call.authorize("trusted_pools:instance_policy:assignment:list")
    _since_1_5(call)
    call.query(schemas.no_query)
    return 200, {"assignments": [
        assignment_view(a)
        for a in call.db.list_instance_policy_assignments()]}


def _assign(call: Call, kind: str, uuid: str) -> Result:
    call.authorize("trusted_pools:instance_policy:assign")
    _since_1_5(call)
    call.query(schemas.no_query)
    target = _uuid(uuid, kind)
    body = call.body(schemas.assign_instance_policy)
    record = call.db.assign_instance_policy(kind, target, body["name"],
                                            body.get("version"))
    LOG.info("%s %s held to instance policy %s (version %s) by %s",
             kind.title(), target, record.policy_name,
             record.policy_version or "latest", call.actor)
    return 200, {"assignment": assignment_view(record)}


def _unassign(call: Call, kind: str, uuid: str) -> Result:
    call.authorize("trusted_pools:instance_policy:unassign")
    _since_1_5(call)
    call.query(schemas.no_query)
    target = _uuid(uuid, kind)
    call.db.unassign_instance_policy(kind, target)
    LOG.info("%s %s released from its instance policy by %s",
             kind.title(), target, call.actor)
    return 204, None


def assign_image(call: Call, uuid: str) -> Result:
    return _assign(call, "image", uuid)


def unassign_image(call: Call, uuid: str) -> Result:
    return _unassign(call, "image", uuid)


def assign_instance(call: Call, uuid: str) -> Result:
    return _assign(call, "instance", uuid)


def unassign_instance(call: Call, uuid: str) -> Result:
    return _unassign(call, "instance", uuid)
