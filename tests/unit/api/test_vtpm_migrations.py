"""GET /v1/vtpm-migrations[/{id}] (issue 12): the operator's view of the
conductors' migration rows, behind oslo.policy."""

from __future__ import annotations

import os
import uuid


INSTANCE = str(uuid.uuid4())


def _rows(db):
    first = db.create_vtpm_migration(INSTANCE, "compute-0", "compute-1",
                                     "cold", "conductor-a", os.urandom(32))
    db.advance_vtpm_migration(first.id, ("requested",), "aborted",
                              reason="destination compute-1 attested now: "
                              "untrusted")
    second = db.create_vtpm_migration(INSTANCE, "compute-0", "compute-2",
                                      "cold", "conductor-a", os.urandom(32),
                                      min_level=3)
    return first, second


def test_list_and_show(client, db):
    first, second = _rows(db)
    listed = client.get("/v1/vtpm-migrations", persona="reader")
    assert listed.status_code == 200, listed.body
    rows = listed.json["vtpm_migrations"]
    assert [r["id"] for r in rows] == [second.id, first.id]
    assert rows[1]["outcome"] == "aborted" and "untrusted" in \
        rows[1]["reason"]
    assert rows[0]["step"] == "requested" and rows[0]["epoch"] == 1
    assert "salt" not in rows[0]
    active = client.get("/v1/vtpm-migrations?active=true").json
    assert [r["id"] for r in active["vtpm_migrations"]] == [second.id]
    ended = client.get("/v1/vtpm-migrations?active=false&instance=%s"
                       % INSTANCE).json
    assert [r["id"] for r in ended["vtpm_migrations"]] == [first.id]
    shown = client.get("/v1/vtpm-migrations/%s" % second.id,
                       persona="service")
    assert shown.status_code == 200
    assert shown.json["vtpm_migration"]["min_level"] == 3


def test_refused_and_bad_requests(client, db):
    first, _ = _rows(db)
    # A project member is not the cloud operator.
    assert client.get("/v1/vtpm-migrations",
                      persona="member").status_code == 403
    assert client.get("/v1/vtpm-migrations/%s" % first.id,
                      persona="member").status_code == 403
    assert client.get("/v1/vtpm-migrations",
                      persona=None).status_code == 401
    assert client.get("/v1/vtpm-migrations/nope").status_code == 404
    for query in ("limit=0", "limit=abc", "active=maybe", "color=red"):
        assert client.get("/v1/vtpm-migrations?" + query
                          ).status_code == 400, query
