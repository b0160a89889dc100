"""GET /v1/key-releases (microversion 1.4) and the paged verdict history
of a host: the operator's audit trail of the key service, behind
oslo.policy (system readers and admins only)."""

from __future__ import annotations

import datetime

from trusted_pools.api import microversion
from trusted_pools.db import api as db_api

LATEST = "trusted-pools latest"
SECRET = "0b3a2c1d-0000-4000-8000-00000000000a"


def _records(db, count: int = 5) -> list[db_api.KeyReleaseRecord]:
    now = datetime.datetime.now(datetime.timezone.utc)
    kept = []
    for i in range(count):
        kept.append(db.record_key_release(db_api.KeyReleaseRecord(
            id=None, secret_id=SECRET, project_id="proj", owner="inst-%d" % i,
            host="compute-%d" % (i % 2),
            outcome="released" if i == 0 else "refused",
            status="trusted" if i == 0 else "untrusted", level=3 * (i == 0),
            min_level=None,
            reason_code="released" if i == 0 else "not_trusted",
            reason="trusted at level 3" if i == 0 else
            "<script>alert(1)</script> kernel not approved",
            conductor="conductor-a", requested_by="nova",
            request_id="req-%d" % i,
            created_at=now + datetime.timedelta(seconds=i))))
    return kept


def test_list_pages_newest_first_with_a_marker(client, db):
    kept = _records(db)
    first = client.get("/v1/key-releases?limit=2", persona="reader",
                       version=LATEST)
    assert first.status_code == 200, first.body
    assert first.headers["OpenStack-API-Version"] == "trusted-pools %s" % microversion.VERSIONS[-1]
    rows = first.json["key_releases"]
    assert [r["id"] for r in rows] == [kept[4].id, kept[3].id]
    assert rows[0]["outcome"] == "refused" and \
        rows[0]["reason_code"] == "not_trusted"
    assert rows[0]["created_at"].endswith("Z")
    assert "ciphertext" not in rows[0] and "wrapped" not in rows[0]
    seen = [r["id"] for r in rows]
    link = first.json["links"][0]
    while link:
        assert link["rel"] == "next"
        path = link["href"].split("localhost", 1)[1]
        page = client.get(path, persona="reader", version=LATEST).json
        seen += [r["id"] for r in page["key_releases"]]
        link = page["links"][0] if page["links"] else None
    assert seen == [r.id for r in reversed(kept)]
    released = client.get("/v1/key-releases?outcome=released&host=compute-0",
                          version=LATEST).json["key_releases"]
    assert [(r["host"], r["status"]) for r in released] == [
        ("compute-0", "trusted")]


def test_refused_to_non_readers_and_before_1_4(client, db):
    _records(db, 1)
    # A project member, and a service (the key manager) are not auditors.
    for persona, status in (("member", 403), ("service", 403), (None, 401)):
        assert client.get("/v1/key-releases", persona=persona,
                          version=LATEST).status_code == status, persona
    old = client.get("/v1/key-releases", version="trusted-pools 1.3")
    assert old.status_code == 404
    for query in ("limit=0", "marker=abc", "outcome=leaked", "color=red",
                  "limit=100000"):
        assert client.get("/v1/key-releases?" + query, version=LATEST
                          ).status_code == 400, query


def test_host_history_pages_from_1_4(client, db):
    host = db.create_host("compute-1", state="enrolled")
    start = datetime.datetime.now(datetime.timezone.utc)
    db.add_verdicts([db_api.NewVerdict(
        host_id=host.id, status="trusted", level=i % 4,
        issued_at=start + datetime.timedelta(seconds=i),
        expires_at=start + datetime.timedelta(seconds=i + 120))
        for i in range(5)])
    everything = client.get("/v1/hosts/compute-1/verdicts?limit=10",
                            version=LATEST).json
    assert everything["links"] == [] and len(everything["verdicts"]) == 5
    page = client.get("/v1/hosts/compute-1/verdicts?limit=2",
                      version=LATEST).json
    shown = list(page["verdicts"])
    while page["links"]:
        path = page["links"][0]["href"].split("localhost", 1)[1]
        page = client.get(path, version=LATEST).json
        shown += page["verdicts"]
    assert shown == everything["verdicts"]
    sequences = [v["sequence"] for v in shown]
    assert sequences == sorted(sequences, reverse=True)
    # Before 1.4: no marker, no sequence, no links (as it always was).
    old = client.get("/v1/hosts/compute-1/verdicts?limit=2").json
    assert set(old) == {"verdicts"} and "sequence" not in old["verdicts"][0]
    assert client.get("/v1/hosts/compute-1/verdicts?marker=3"
                      ).status_code == 400
