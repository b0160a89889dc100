"""Friction 10 of issue 14: every trusted-pools-manage command answers in
JSON when asked (``--format json``), swept from the parser itself so a
command added later is checked too; the JSON a new operator would script
against is one parseable object, with times as ISO strings."""

from __future__ import annotations

import argparse
import datetime
import json

import pytest

from trusted_pools.cmd import manage
from trusted_pools.db import api as db_api


def _leaves(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    subparsers = [a for a in parser._actions
                  if isinstance(a, argparse._SubParsersAction)]
    if not subparsers:
        yield path, parser
        return
    for action in subparsers:
        for name, child in action.choices.items():
            yield from _leaves(child, path + (name,))


def test_every_command_has_format_json():
    leaves = list(_leaves(manage.build_parser()))
    assert len(leaves) >= 12, [p for p, _ in leaves]
    missing = []
    for path, parser in leaves:
        formats = [a for a in parser._actions if "--format" in
                   a.option_strings]
        if not formats or "json" not in (formats[0].choices or ()):
            missing.append(" ".join(path))
    assert missing == [], "no --format json: %s" % ", ".join(missing)


@pytest.fixture
def config(tmp_path):
    url = "sqlite:///%s" % (tmp_path / "manage.sqlite")
    path = tmp_path / "manage.conf"
    path.write_text("[database]\nconnection = %s\n" % url)
    return str(path), url


def _json(capsys) -> dict:
    out = capsys.readouterr().out
    return json.loads(out)


def test_db_commands_answer_json(config, capsys):
    path, url = config
    assert manage.main(["--config-file", path, "db", "sync", "--format",
                        "json"]) == 0
    synced = _json(capsys)
    assert synced["revision"] and "manage.sqlite" in synced["database"]
    assert manage.main(["--config-file", path, "db", "version",
                        "--format", "json"]) == 0
    assert _json(capsys) == {"revision": synced["revision"]}
    connection = db_api.Connection(db_api.make_context_manager(url))
    try:
        connection.record_key_release(db_api.KeyReleaseRecord(
            id=None, secret_id="s", project_id="p", owner=None, host="h",
            outcome="refused", status="unknown", level=0, min_level=None,
            reason_code="not_registered", reason="r", conductor="c",
            requested_by=None, request_id=None,
            created_at=datetime.datetime(2020, 1, 1,
                                         tzinfo=datetime.timezone.utc)))
    finally:
        connection.dispose()
    for command, deleted in (("purge-verdicts", 0), ("purge-operations", 0),
                             ("purge-key-releases", 1),
                             ("purge-distrust-actions", 0)):
        assert manage.main(["--config-file", path, "db", command,
                            "--older-than", "30", "--format", "json"]) == 0
        answer = _json(capsys)
        assert answer["deleted"] == deleted, command
        assert datetime.datetime.fromisoformat(answer["before"]).tzinfo


def test_rabbitmq_dry_run_and_conductor_key_in_json(tmp_path, capsys):
    assert manage.main(["rabbitmq", "setup", "--vhost", "tp",
                        "--agent-vhost", "tp-agents", "--service-user",
                        "svc", "--dry-run", "--format", "json"]) == 0
    plan = _json(capsys)
    assert plan["dry_run"] is True
    assert all(c.startswith("rabbitmqctl ") for c in plan["commands"])
    key = tmp_path / "signing.pem"
    assert manage.main(["conductor-key", "generate", str(key),
                        "--format", "json"]) == 0
    made = json.loads(capsys.readouterr().out)
    assert made["path"] == str(key) and made["kid"] == made["jwk"]["kid"]
    assert manage.main(["conductor-key", "show", "--key", str(key),
                        "--format", "json"]) == 0
    assert _json(capsys)["kid"] == made["kid"]
