"""The JSON shapes of the API's resources (see API-CONTRACT)."""

from __future__ import annotations

import datetime
from typing import Any

from trusted_pools.verifier import policy as policy_mod
from trusted_pools.db import api as db_api

#: Policy kinds as the API spells them, and as the database does.
API_KIND = {policy_mod.KIND_MEASURED_BOOT: "measured_boot",
            policy_mod.KIND_RUNTIME: "runtime"}
DB_KIND = {api: db for db, api in API_KIND.items()}
DB_KIND[policy_mod.KIND_RUNTIME] = policy_mod.KIND_RUNTIME


def iso(value: datetime.datetime | int | float | None) -> str | None:
    """ISO 8601 UTC with a ``Z``; epoch seconds are accepted too."""
    if value is None:
        return None
    if not isinstance(value, datetime.datetime):
        value = datetime.datetime.fromtimestamp(value, datetime.timezone.utc)
    return value.astimezone(datetime.timezone.utc).isoformat().replace(
        "+00:00", "Z")


def verdict(v: db_api.Verdict) -> dict[str, Any]:
    return {"status": v.status, "level": v.level,
            "reasons": list(v.reasons), "issued_at": iso(v.issued_at),
            "expires_at": iso(v.expires_at),
            "evidence_digest": v.evidence_digest,
            "signed_result": v.signed_result}


def host(h: db_api.Host, latest: db_api.Verdict | None,
         conductor: str | None) -> dict[str, Any]:
    return {"name": h.hostname, "uuid": h.uuid, "group": h.group,
            "state": h.state,
            "status": latest.status if latest else None,
            "level": latest.level if latest else None,
            "issued_at": iso(latest.issued_at) if latest else None,
            "expires_at": iso(latest.expires_at) if latest else None,
            "conductor": conductor}


def host_detail(h: db_api.Host, latest: db_api.Verdict | None,
                conductor: str | None,
                registration: db_api.Registration | None
                ) -> dict[str, Any]:
    shown = host(h, latest, conductor)
    shown.update(
        reasons=list(latest.reasons) if latest else [],
        vector=dict(latest.vector) if latest else {},
        policy_versions=dict(latest.policy_versions) if latest else {},
        ek_sha256=(registration.ek_public_sha256 if registration
                   else h.approved_ek_sha256),
        ak_name=registration.ak_name.hex() if registration else None,
        signed_result=latest.signed_result if latest else None)
    return shown


def policy_summary(p: db_api.Policy) -> dict[str, Any]:
    return {"name": p.name, "kind": API_KIND.get(p.kind, p.kind),
            "version": p.version, "created_at": iso(p.created_at),
            "created_by": p.created_by}


def policy(p: db_api.Policy) -> dict[str, Any]:
    shown = policy_summary(p)
    shown["body"] = p.body
    return shown


def assignment(a: db_api.PolicyAssignment) -> dict[str, Any]:
    return {"group": a.group, "policy": a.policy_name,
            "version": a.policy_version}


def operation(op: db_api.HostOperation, result: Any,
              error: dict[str, Any] | None, href: str) -> dict[str, Any]:
    return {"id": op.id, "host": op.hostname, "kind": op.kind,
            "state": op.state, "conductor": op.conductor,
            "request_id": op.request_id, "created_at": iso(op.created_at),
            "updated_at": iso(op.updated_at), "result": result,
            "error": error, "links": [{"rel": "self", "href": href}]}


def instance_verdict(judged: Any) -> dict[str, Any]:
    """An instance verdict as it reads now
    (:class:`trusted_pools.verifier.instance_standing.Judged`)."""
    return {"instance": judged.instance, "host": judged.host,
            "status": judged.status, "level": judged.level,
            "host_level": judged.host_level,
            "reasons": list(judged.reasons),
            "issued_at": iso(judged.issued_at),
            "expires_at": iso(judged.expires_at),
            "stands": judged.stands,
            "recorded_status": judged.recorded_status,
            "signed_result": judged.signed_result}
