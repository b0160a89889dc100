"""/v1/key-releases (microversion 1.4): the key service's answers.

Read only, from the database the conductors write (each release or
refusal is recorded before it is answered, see
:mod:`trusted_pools.conductor.keys`). Never a key: the secret's id, owner
and project, the host named in the request, the outcome, the standing the
host was judged by, the reason, who asked, when.
"""

from __future__ import annotations

from typing import Any

from trusted_pools.api import microversion
from trusted_pools.api import pagination
from trusted_pools.api import schemas
from trusted_pools.api import views
from trusted_pools.api.context import Call
from trusted_pools.db import api as db_api

Result = tuple[int, Any]


def view(record: db_api.KeyReleaseRecord) -> dict[str, Any]:
    return {"id": record.id, "secret_id": record.secret_id,
            "project_id": record.project_id, "owner": record.owner,
            "host": record.host, "outcome": record.outcome,
            "status": record.status, "level": record.level,
            "min_level": record.min_level,
            "reason_code": record.reason_code, "reason": record.reason,
            "conductor": record.conductor,
            "requested_by": record.requested_by,
            "request_id": record.request_id,
            "created_at": views.iso(record.created_at)}


def list_key_releases(call: Call) -> Result:
    """Newest first; ``?marker=<id>`` continues after that record."""
    call.authorize("trusted_pools:key_release:list")
    microversion.require(call.version, microversion.KEY_RELEASES,
                         "/v1/key-releases")
    params = call.query(schemas.key_releases_query)
    page = call.page({k: v for k, v in params.items() if k == "limit"})
    before = int(params["marker"]) if "marker" in params else None
    rows = call.db.list_key_releases(
        limit=page.limit + 1, before_id=before, host=params.get("host"),
        outcome=params.get("outcome"), secret_id=params.get("secret_id"))
    more = len(rows) > page.limit
    rows = rows[:page.limit]
    next_marker = str(rows[-1].id) if more and rows else None
    return 200, {"key_releases": [view(row) for row in rows],
                 "links": pagination.links(call.request, next_marker)}
