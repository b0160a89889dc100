"""/v1/verdicts and /v1/keys."""

from __future__ import annotations

import datetime
import logging
from typing import Any

from trusted_pools import exception
from trusted_pools.api import errors
from trusted_pools.api import schemas
from trusted_pools.api import views
from trusted_pools.api.context import Call
from trusted_pools.protocol import keystore

LOG = logging.getLogger(__name__)

Result = tuple[int, Any]


def _since(params: dict[str, str]) -> datetime.datetime | None:
    if "since" not in params:
        return None
    try:
        value = datetime.datetime.fromisoformat(params["since"])
    except ValueError:
        raise errors.bad_request("Invalid input for query/since: %r is not "
                                 "an ISO 8601 time" % params["since"])
    if value.tzinfo is None:
        value = value.replace(tzinfo=datetime.timezone.utc)
    try:
        return value.astimezone(datetime.timezone.utc)
    except OverflowError:
        # 9999-12-31T23:59-01:00 is past the last UTC time Python has.
        raise errors.bad_request("Invalid input for query/since: %r is out "
                                 "of range in UTC" % params["since"])


def list_verdicts(call: Call) -> Result:
    """The newest verdict of each host (issued after ``since``)."""
    call.authorize("trusted_pools:verdict:list")
    since = _since(call.query(schemas.verdicts_query))
    names = {h.id: h.hostname for h in call.db.list_hosts()}
    if since is None:
        newest = {v.host_id: v for v in call.db.latest_verdicts()}
    else:
        newest = {}
        for verdict in call.db.verdicts_since(since):  # oldest first
            newest[verdict.host_id] = verdict
    shown = []
    for host_id, verdict in sorted(newest.items()):
        if host_id in names:
            entry = views.verdict(verdict)
            entry["host"] = names[host_id]
            shown.append(entry)
    return 200, {"verdicts": shown}


def list_keys(call: Call) -> Result:
    """Every registered conductor's public signing key as a JWKS.

    The stored kid must be the key's own thumbprint; a row where it is not
    is left out (and logged): a consumer pins what this returns."""
    call.authorize("trusted_pools:key:list")
    call.query(schemas.no_query)
    keys: dict[str, dict[str, str]] = {}
    for conductor in call.db.list_conductors():
        if not conductor.public_key or not conductor.key_id:
            continue
        try:
            jwk = keystore.public_jwk(
                keystore.public_key_from_pem(conductor.public_key))
        except exception.TrustedPoolsError as error:
            LOG.error("Conductor %s has an unusable public key: %s",
                      conductor.hostname, error)
            continue
        if jwk["kid"] != conductor.key_id:
            LOG.error("Conductor %s: stored kid %s is not its key's "
                      "thumbprint %s; key not served", conductor.hostname,
                      conductor.key_id, jwk["kid"])
            continue
        keys[jwk["kid"]] = jwk
    return 200, {"keys": [keys[kid] for kid in sorted(keys)]}
