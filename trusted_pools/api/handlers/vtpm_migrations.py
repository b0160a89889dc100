"""/v1/vtpm-migrations: the operator's view of vTPM migrations (issue 12).

Read only, from the database the conductors write (the migration's row is
its source of truth); starting, completing or aborting a migration goes to
the destination's conductor over the management bus.
"""

from __future__ import annotations

from typing import Any

from trusted_pools.api import errors
from trusted_pools.api import schemas
from trusted_pools.api.context import Call
from trusted_pools.protocol import vtpm_migration as proto

Result = tuple[int, Any]

_MAX_LIMIT = 1000


def list_migrations(call: Call) -> Result:
    """Migrations, newest first (``instance``, ``active``, ``limit``)."""
    call.authorize("trusted_pools:vtpm_migration:list")
    params = call.query(schemas.vtpm_migrations_query)
    limit = int(params.get("limit", 100))
    if not 1 <= limit <= _MAX_LIMIT:
        raise errors.bad_request("Invalid input for query/limit: 1 to %d"
                                 % _MAX_LIMIT)
    active = {"true": True, "false": False}.get(params.get("active", ""))
    rows = call.db.list_vtpm_migrations(
        instance=params.get("instance"), active=active, limit=limit)
    return 200, {"vtpm_migrations": [proto.view(row) for row in rows]}


def show(call: Call, migration_id: str) -> Result:
    call.authorize("trusted_pools:vtpm_migration:show")
    call.query(schemas.no_query)
    return 200, {"vtpm_migration": proto.view(
        call.db.get_vtpm_migration(migration_id))}
