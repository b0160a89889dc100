"""trusted-pools-manage vtpm migration list|show (issue 12): the
conductors' migration rows, as a table and as JSON, from a real (SQLite)
database."""

from __future__ import annotations

import json
import os
import uuid

from trusted_pools.cmd import manage
from trusted_pools.db import api as db_api
from trusted_pools.db import migration


def _run(capsys, *argv):
    try:
        code = manage.main(list(argv))
    finally:
        manage.CONF.clear()
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_list_and_show(capsys, tmp_path):
    url = "sqlite:///%s" % (tmp_path / "tp.sqlite")
    db = db_api.Connection(db_api.make_context_manager(url))
    migration.upgrade(engine=db.get_engine())
    instance = str(uuid.uuid4())
    ended = db.create_vtpm_migration(instance, "compute-0", "compute-1",
                                     "cold", "conductor-a", os.urandom(32))
    db.advance_vtpm_migration(ended.id, ("requested",), "aborted",
                              reason="host compute-1 is untrusted")
    active = db.create_vtpm_migration(instance, "compute-0", "compute-2",
                                      "live", "conductor-a", os.urandom(32))
    db.dispose()
    conf = tmp_path / "tp.conf"
    conf.write_text("[database]\nconnection = %s\n" % url)

    code, out, err = _run(capsys, "--config-file", str(conf), "vtpm",
                          "migration", "list")
    assert code == 0, err
    header, rule, *lines = out.splitlines()
    assert header.split() == ["id", "instance", "source", "destination",
                              "kind", "step", "epoch", "age", "outcome"]
    assert [line.split()[0] for line in lines] == [active.id, ended.id]
    assert lines[0].split()[5:7] == ["requested", "1"]
    assert lines[1].split()[-1] == "aborted"

    code, out, err = _run(capsys, "--config-file", str(conf), "vtpm",
                          "migration", "list", "--active", "--format",
                          "json")
    assert code == 0, err
    rows = json.loads(out)["vtpm_migrations"]
    assert [r["id"] for r in rows] == [active.id]
    assert rows[0]["kind"] == "live" and "salt" not in rows[0]

    code, out, err = _run(capsys, "--config-file", str(conf), "vtpm",
                          "migration", "show", ended.id, "--format", "json")
    assert code == 0, err
    assert json.loads(out)["vtpm_migration"]["reason"] == \
        "host compute-1 is untrusted"
    code, out, err = _run(capsys, "--config-file", str(conf), "vtpm",
                          "migration", "show", ended.id)
    assert code == 0 and "host compute-1 is untrusted" in out

    code, out, err = _run(capsys, "--config-file", str(conf), "vtpm",
                          "migration", "show", str(uuid.uuid4()))
    assert code == 1 and "not found" in err
