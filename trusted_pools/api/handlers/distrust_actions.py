"""/v1/distrust-actions (microversion 1.4): what was done to hosts that
stopped being trusted.

The actions (notify, disable the host's nova-compute service, live-migrate
its trust-requiring instances) run beside Nova, in
trusted-pools-placement-sync, with Nova's credentials; that service holds
no database credentials (it is on the Nova side of the boundary). It
reports each action here with the token of its ``[trusted_pools_distrust]``
user (``POST``, admin by default: the same user that may disable compute
services; never the ``service`` role, which every compute host's Nova
holds), and the API stores it with the Keystone user that reported it
(``reported_by``). A report is a record of what that service says it
did: it changes no verdict, no policy and no host, and it is only taken
for a registered host. Readers list them (``GET``, newest first, paged
with a marker).
"""

from __future__ import annotations

import datetime
import logging
from typing import Any

from trusted_pools.api import microversion
from trusted_pools.api import pagination
from trusted_pools.api import schemas
from trusted_pools.api import views
from trusted_pools.api.context import Call
from trusted_pools.db import api as db_api

LOG = logging.getLogger(__name__)

Result = tuple[int, Any]

_PATH = "/v1/distrust-actions"


def view(record: db_api.DistrustActionRecord) -> dict[str, Any]:
    return {"id": record.id, "host": record.host, "action": record.action,
            "outcome": record.outcome, "detail": record.detail,
            "items": [list(item) for item in record.items],
            "verdict": record.verdict, "status": record.status,
            "reported_by": record.reported_by,
            "request_id": record.request_id,
            "created_at": views.iso(record.created_at)}


def list_actions(call: Call) -> Result:
    call.authorize("trusted_pools:distrust_action:list")
    microversion.require(call.version, microversion.KEY_RELEASES, _PATH)
    params = call.query(schemas.distrust_actions_query)
    page = call.page({k: v for k, v in params.items() if k == "limit"})
    before = int(params["marker"]) if "marker" in params else None
    rows = call.db.list_distrust_actions(limit=page.limit + 1,
                                         before_id=before,
                                         host=params.get("host"))
    more = len(rows) > page.limit
    rows = rows[:page.limit]
    next_marker = str(rows[-1].id) if more and rows else None
    return 200, {"distrust_actions": [view(row) for row in rows],
                 "links": pagination.links(call.request, next_marker)}


def report(call: Call) -> Result:
    call.authorize("trusted_pools:distrust_action:create")
    microversion.require(call.version, microversion.KEY_RELEASES, _PATH)
    call.query(schemas.no_query)
    body = call.body(schemas.report_distrust_actions)
    # Every host first: a report naming a host that is not registered
    # stores nothing (404), so no made-up name lands in the table.
    for entry in body["actions"]:
        call.db.get_host_by_name(entry["host"])
    now = datetime.datetime.now(datetime.timezone.utc)
    request_id = getattr(call.context, "request_id", None)
    records = [db_api.DistrustActionRecord(
        id=None, host=entry["host"], action=entry["action"],
        outcome=entry["outcome"], detail=entry["detail"],
        items=[list(item) for item in entry.get("items") or []],
        verdict=entry.get("verdict"), status=entry.get("status"),
        reported_by=call.actor[:255],
        request_id=request_id[:64] if isinstance(request_id, str) else None,
        created_at=now) for entry in body["actions"]]
    stored = call.db.record_distrust_actions(records)
    for record in stored:
        LOG.info("Distrust action %s on host %s reported by %s: %s",
                 record.action, record.host, record.reported_by,
                 record.outcome)
    return 201, {"distrust_actions": [view(row) for row in stored]}
