"""/v1/secrets: store, show, release (wrapped to an attested host's TPM),
delete. The secrets' values are opened only by a conductor (which holds
the key-encryption key); this process reads their metadata for the policy
check and passes every operation on over the management bus."""

from __future__ import annotations

import logging
from typing import Any

from trusted_pools import exception
from trusted_pools.api import errors
from trusted_pools.api import policy
from trusted_pools.api import schemas
from trusted_pools.api.context import Call
from trusted_pools.db import api as db_api
from trusted_pools.protocol import key_release

LOG = logging.getLogger(__name__)

Result = tuple[int, Any]


def _authorized_secret(call: Call, rule: str, secret_id: str
                       ) -> db_api.SecretRecord:
    """The secret if the caller may use it; a secret of another project
    is a 404 like a missing one (ids are not disclosed)."""
    try:
        record = call.db.get_secret(secret_id)
    except exception.SecretNotFound:
        policy.authorize(call.services.enforcer, rule, call.context,
                         {"project_id": call.context.project_id})
        raise
    try:
        policy.authorize(call.services.enforcer, rule, call.context,
                         {"project_id": record.project_id})
    except errors.APIError:
        raise exception.SecretNotFound(secret=secret_id) from None
    return record


def _any_conductor(call: Call, key: str) -> str:
    owner = call.conductors.owner(key)
    if owner is None:
        raise exception.TemporaryFailure(
            reason="no conductor is alive to keep secrets; start "
            "trusted-pools-conductor")
    return owner


def create(call: Call) -> Result:
    policy.authorize(call.services.enforcer, "trusted_pools:secret:create",
                     call.context, {"project_id": call.context.project_id})
    call.query(schemas.no_query)
    body = call.body(schemas.create_secret)
    project = call.context.project_id
    if not project:
        raise errors.bad_request("A secret belongs to a project: use a "
                                 "project-scoped token")
    metadata = {k: body[k] for k in ("owner", "name", "algorithm",
                                     "bit_length", "min_level", "host")
                if k in body}
    stored = call.conductors.client.store_secret(
        call.rpc_context(), project, body["payload"], body["secret_type"],
        conductor=_any_conductor(call, project), **metadata)
    LOG.info("Secret %s stored for project %s by %s", stored["id"], project,
             call.actor)
    return 201, {"secret": stored}


def show(call: Call, secret_id: str) -> Result:
    params = call.query(schemas.release_secret_query)
    host = params.get("host")
    if host is None:
        record = _authorized_secret(call, "trusted_pools:secret:get",
                                    secret_id)
        return 200, {"secret": key_release.secret_metadata(record)}
    _authorized_secret(call, "trusted_pools:secret:release", secret_id)
    released = call.conductors.call("release_secret", call.rpc_context(),
                                    host, secret_id=secret_id)
    return 200, {"secret": released}


def delete(call: Call, secret_id: str) -> Result:
    call.query(schemas.no_query)
    _authorized_secret(call, "trusted_pools:secret:delete", secret_id)
    call.conductors.client.delete_secret(
        call.rpc_context(), secret_id,
        conductor=_any_conductor(call, secret_id))
    LOG.info("Secret %s deleted by %s", secret_id, call.actor)
    return 204, None
