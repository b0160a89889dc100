"""``trusted-pools-manage vtpm list``: the reason and driver in a vTPM
report are the host's own words. A compromised host must not be able to
use them to rewrite what the operator's terminal shows (hide the CONFLICT
mark in front of its reason with a carriage return, or clear the screen
with an escape sequence): control characters are shown escaped."""

from __future__ import annotations

import pytest

from trusted_pools.cmd import manage
from trusted_pools.db import api as db_api
from trusted_pools.db import migration

CLAIMED = "00000000-0000-4000-8000-000000000002"
# Back to the line's start, then spaces over "CONFLICT: attested on ...".
HIDING = "\r" + " " * 80 + "\rall fine\x1b[2J\x1b[H"


@pytest.fixture
def database(tmp_path):
    url = "sqlite:///%s" % (tmp_path / "manage.sqlite")
    db = db_api.Connection(db_api.make_context_manager(url))
    migration.upgrade(engine=db.get_engine())
    config = tmp_path / "trusted-pools.conf"
    config.write_text("[database]\nconnection = %s\n" % url)
    try:
        yield db, str(config)
    finally:
        db.dispose()


def test_a_hosts_reason_cannot_hide_the_conflict_mark(database, capsys):
    db, config = database
    operation = db.create_operation("compute-1", "list_vtpms", "conductor-a")
    db.finish_operation(operation.id, result={
        "host": "compute-1", "source": "host-reported", "note": "",
        "enabled": True, "driver": "swtpm\x1b[8m", "reported_at": 1,
        "vtpms": [{"instance": CLAIMED, "status": "running",
                   "reason": HIDING, "attested_on": "compute-2",
                   "conflict": True}]})
    assert manage.main(["--config-file", config, "vtpm", "list", "--host",
                        "compute-1"]) == 0
    table = capsys.readouterr().out
    assert "\r" not in table and "\x1b" not in table
    assert "CONFLICT: attested on host compute-2; \\r" in table
    assert "all fine\\x1b[2J\\x1b[H" in table
    assert "driver swtpm\\x1b[8m" in table
