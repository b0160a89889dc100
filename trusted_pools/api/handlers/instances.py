"""/v1/instances (microversion 1.3): deep attestation of instances.

``POST /v1/instances/{uuid}/challenge`` asks the owner of the instance's
host for a one-use nonce (the guest quotes over it with its vTPM AK);
the guest's evidence then goes to ``POST /v1/hosts/{name}/deep-attest``.
``GET /v1/instances/{uuid}/verdict`` reads the latest verdict from the
database and judges it again against the host's verdicts since
(:mod:`trusted_pools.verifier.instance_standing`): a verdict whose host
fell or was re-enrolled does not read as trusted, and its signed result
is withheld.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from trusted_pools import exception
from trusted_pools.api import errors
from trusted_pools.api import microversion
from trusted_pools.api import schemas
from trusted_pools.api import views
from trusted_pools.api.context import Call
from trusted_pools.verifier import deep
from trusted_pools.verifier import instance_standing

LOG = logging.getLogger(__name__)

Result = tuple[Any, ...]


def _since_1_3(call: Call) -> None:
    microversion.require(call.version, microversion.DEEP_ATTESTATION,
                         call.request.path_info)


def _instance(uuid: str) -> str:
    try:
        return deep.instance_id(uuid)
    except exception.InvalidParameterValue:
        raise errors.bad_request("Invalid instance %r: expected a UUID"
                                 % uuid)


def challenge(call: Call, uuid: str) -> Result:
    call.authorize("trusted_pools:instance:challenge")
    _since_1_3(call)
    call.query(schemas.no_query)
    instance = _instance(uuid)
    # From 1.5 the caller (the operator or Nova: never the host or the
    # guest) may name the instance's image; it picks the image's
    # instance policy when the guest's quote is judged.
    body = call.body(schemas.challenge_instance_1_5
                     if call.version >= microversion.INSTANCE_POLICIES
                     else schemas.challenge_instance)
    host, image = body["host"], body.get("image")
    call.db.get_host_by_name(host)
    extra = {} if image is None else {"image": str(deep.instance_id(image))}
    answer = call.conductors.call("challenge_instance", call.rpc_context(),
                                  host, instance=instance, **extra)
    LOG.info("Nonce for instance %s on host %s issued to %s", instance,
             host, call.actor)
    shown = {"instance": answer["instance"], "host": host,
             "nonce": answer["nonce"],
             "expires_in": answer.get("expires_in")}
    if image is not None:
        shown["image"] = extra["image"]
    return 201, {"challenge": shown}


def verdict(call: Call, uuid: str) -> Result:
    call.authorize("trusted_pools:instance:verdict:get")
    _since_1_3(call)
    call.query(schemas.no_query)
    judged = instance_standing.judge(
        call.db.instance_verdict(_instance(uuid)), time.time())
    return 200, {"verdict": views.instance_verdict(judged)}
