"""``trusted-pools-manage instance-policy ...`` on a real SQLite database
named in a config file: create (checked by the verifier's loader),
list/show/assignments as table and JSON, assign/unassign to an image or
an instance, capture from a trusted verdict's verified PCRs, delete
refused while in use."""

from __future__ import annotations

import datetime
import json

import pytest

from tests.unit.api.conftest import add_host_with_verdict
from trusted_pools.cmd import manage
from trusted_pools.db import api as db_api
from trusted_pools.db import migration

INSTANCE = "00000000-0000-4000-8000-000000000001"
IMAGE = "00000000-0000-4000-8000-0000000000aa"


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


def _run(config, capsys, *argv):
    status = manage.main(["--config-file", config, "instance-policy",
                          *argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_create_assign_show_delete(database, capsys, tmp_path):
    db, config = database
    pcrs = tmp_path / "pcrs.json"
    pcrs.write_text(json.dumps({"sha256": {"0": "00" * 32,
                                           "7": ["77" * 32, "78" * 32]}}))
    status, out, _ = _run(config, capsys, "create", "golden", "--pcrs",
                          str(pcrs), "--level", "2", "--format", "json")
    assert status == 0
    created = json.loads(out)
    assert (created["name"], created["version"], created["level"]) == (
        "golden", 1, 2)
    assert created["pcrs"]["sha256"]["7"] == ["77" * 32, "78" * 32]
    status, out, _ = _run(config, capsys, "assign", "golden", "--image",
                          IMAGE, "--format", "json")
    assert status == 0 and json.loads(out)["kind"] == "image"
    status, out, _ = _run(config, capsys, "assignments")
    assert status == 0 and IMAGE in out and "golden" in out
    status, out, _ = _run(config, capsys, "list", "--format", "json")
    assert [p["name"] for p in json.loads(out)] == ["golden"]
    status, _, err = _run(config, capsys, "delete", "golden")
    assert status == 1 and "unassign it first" in err
    assert _run(config, capsys, "unassign", "--image", IMAGE)[0] == 0
    status, out, _ = _run(config, capsys, "delete", "golden", "--format",
                          "json")
    assert status == 0 and json.loads(out)["deleted_versions"] == 1
    assert db.list_instance_policies() == []


@pytest.mark.parametrize("content,why", [
    ("not json", "not JSON"),
    (json.dumps({"sha256": {"0": "00"}}), "hex digest"),
    (json.dumps({"sha256": {"24": "00" * 32}}), "out of range"),
])
def test_create_refuses_bad_bodies(database, capsys, tmp_path, content, why):
    db, config = database
    pcrs = tmp_path / "pcrs.json"
    pcrs.write_text(content)
    status, _, err = _run(config, capsys, "create", "bad", "--pcrs",
                          str(pcrs))
    assert status == 1 and why in err
    assert db.list_instance_policies() == []


def _verdict(db, status, pcrs):
    host = add_host_with_verdict(db, "compute-1")
    now = datetime.datetime.now(datetime.timezone.utc)
    db.save_instance_verdicts([db_api.InstanceVerdictRecord(
        instance=INSTANCE, host_id=host.id, status=status, level=1,
        host_level=3,
        host_sequence=db.latest_verdicts([host.id])[0].sequence,
        registration_generation=db.get_host(host.id).enrollment_generation,
        reasons=[], signed_result="t", issued_at=now,
        expires_at=now + datetime.timedelta(seconds=120), pcrs=pcrs)])


def test_capture_from_a_trusted_verdict(database, capsys):
    db, config = database
    _verdict(db, "trusted", {"sha256": {"0": "00" * 32, "4": "44" * 32}})
    status, out, err = _run(config, capsys, "capture", "captured",
                            "--instance", INSTANCE, "--pcr", "4",
                            "--format", "json")
    assert status == 0, err
    shown = json.loads(out)
    assert shown["pcrs"] == {"sha256": {"4": ["44" * 32]}}
    assert shown["captured_from"]["host"] == "compute-1"


def test_capture_refused_from_an_untrusted_verdict(database, capsys):
    db, config = database
    _verdict(db, "untrusted", {"sha256": {"0": "00" * 32}})
    status, _, err = _run(config, capsys, "capture", "captured",
                          "--instance", INSTANCE)
    assert status == 1 and "reads untrusted" in err
    assert db.list_instance_policies() == []
