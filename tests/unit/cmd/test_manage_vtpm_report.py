"""``trusted-pools-manage vtpm list --host NAME``: the host's last vTPM
report from the database (a real SQLite one, named in a config file as
an operator would), as a table and as JSON, labelled host-reported."""

from __future__ import annotations

import json

import pytest

from trusted_pools.cmd import manage
from trusted_pools.db import api as db_api
from trusted_pools.db import migration

RUNNING = "00000000-0000-4000-8000-000000000001"
CLAIMED = "00000000-0000-4000-8000-000000000002"


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


def _report(db, host="compute-1"):
    operation = db.create_operation(host, "list_vtpms", "conductor-a")
    db.finish_operation(operation.id, result={
        "host": host, "source": "host-reported", "note": "not evidence",
        "enabled": True, "driver": "swtpm", "reported_at": 1_700_000_000,
        "vtpms": [
            {"instance": RUNNING, "status": "running", "reason": None,
             "attested_on": host, "conflict": False},
            {"instance": CLAIMED, "status": "failed", "reason": "died",
             "attested_on": "compute-2", "conflict": True}]})
    return operation


def test_table_and_json(database, capsys):
    db, config = database
    operation = _report(db)
    assert manage.main(["--config-file", config, "vtpm", "list", "--host",
                        "compute-1"]) == 0
    table = capsys.readouterr().out
    assert "HOST-REPORTED, NOT EVIDENCE" in table
    assert "driver swtpm" in table
    assert RUNNING in table and "running" in table
    assert "CONFLICT: attested on host compute-2; died" in table
    assert manage.main(["--config-file", config, "vtpm", "list", "--host",
                        "compute-1", "--format", "json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["source"] == "host-reported"
    assert shown["operation"] == operation.id
    assert [e["instance"] for e in shown["vtpms"]] == [RUNNING, CLAIMED]


def test_the_newest_report_is_shown(database, capsys):
    db, config = database
    _report(db)
    newer = db.create_operation("compute-1", "list_vtpms", "conductor-a")
    db.finish_operation(newer.id, result={
        "host": "compute-1", "source": "host-reported", "note": "",
        "enabled": False, "driver": None, "reported_at": 1_700_000_100,
        "vtpms": []})
    failed = db.create_operation("compute-1", "list_vtpms", "conductor-a")
    db.finish_operation(failed.id, error_type="HostReportRefused",
                        error={"message": "refused", "kwargs": {}})
    assert manage.main(["--config-file", config, "vtpm", "list", "--host",
                        "compute-1", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["operation"] == newer.id


def test_no_report_fails_with_what_to_do(database, capsys):
    _, config = database
    assert manage.main(["--config-file", config, "vtpm", "list", "--host",
                        "compute-9"]) == 1
    error = capsys.readouterr().err
    assert "no vTPM report yet" in error
    assert "POST /v1/hosts/compute-9/vtpms" in error
