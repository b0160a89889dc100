"""Friction 10 of issue 14: every time the API answers is an ISO 8601
string, never epoch seconds (a new operator met both). Swept over every
GET route of the router, with a row behind each."""

from __future__ import annotations

import datetime
import os
import re
import uuid
from typing import Any, Iterator

from tests.unit.api.conftest import add_host_with_verdict
from trusted_pools.api import router
from trusted_pools.db import api as db_api

LATEST = "trusted-pools latest"
_ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")
INSTANCE = str(uuid.uuid4())


def _times(value: Any, where: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for key, item in value.items():
            if key.endswith("_at") or key in ("since", "until"):
                yield where + "/" + key, item
            yield from _times(item, where + "/" + key)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _times(item, "%s/%d" % (where, index))


def _fill(db) -> dict[str, str]:
    host = add_host_with_verdict(db, "compute-1", status="untrusted",
                                 level=1)
    # A vTPM report stored as reports were before (epoch seconds).
    done = db.create_operation("compute-1", "list_vtpms", "conductor-a")
    db.finish_operation(done.id, result={
        "host": "compute-1", "source": "host-reported", "note": "n",
        "enabled": True, "driver": "swtpm", "reported_at": 1_700_000_000,
        "vtpms": []})
    migration = db.create_vtpm_migration(INSTANCE, "compute-1", "compute-2",
                                         "cold", "conductor-a",
                                         os.urandom(32))
    now = datetime.datetime.now(datetime.timezone.utc)
    db.record_key_release(db_api.KeyReleaseRecord(
        id=None, secret_id=str(uuid.uuid4()), project_id="p", owner=None,
        host="compute-1", outcome="refused", status="untrusted", level=1,
        min_level=None, reason_code="not_trusted", reason="r",
        conductor="conductor-a", requested_by=None, request_id=None,
        created_at=now))
    db.record_distrust_actions([db_api.DistrustActionRecord(
        id=None, host="compute-1", action="notify", outcome="done",
        detail="d", items=[], verdict=None, status="untrusted",
        reported_by="placement-sync", request_id=None, created_at=now)])
    return {"name": host.hostname, "operation_id": done.id,
            "migration_id": migration.id, "uuid": INSTANCE,
            "group": "default", "secret_id": str(uuid.uuid4())}


def test_every_time_in_every_get_answer_is_iso(client, db):
    arguments = _fill(db)
    checked = 0
    for template, methods in sorted(router.ROUTES.items()):
        if "GET" not in methods or "{secret_id}" in template:
            continue
        path = template.format(**arguments)
        answer = client.get(path, persona="admin", version=LATEST)
        if answer.status_code != 200:
            continue
        for where, value in _times(answer.json):
            checked += 1
            assert value is None or (isinstance(value, str)
                                     and _ISO.match(value)), (
                path, where, value)
    # The routes with times answered: hosts, verdicts, operations, vTPM
    # report, migrations, key releases, distrust actions.
    assert checked >= 10, checked
    report = client.get("/v1/hosts/compute-1/vtpms", version=LATEST).json
    assert report["vtpms"]["reported_at"] == "2023-11-14T22:13:20Z"
