"""Migrations build the schema from nothing on every backend, and the
models describe exactly what the migrations build."""

from __future__ import annotations

import argparse
import unittest

import pytest
import sqlalchemy as sa
from oslo_db import exception as db_exc
from oslo_db.sqlalchemy import enginefacade
from oslo_db.sqlalchemy import test_migrations

from trusted_pools.db import api
from trusted_pools.db import migration
from trusted_pools.db import models
from tests.db_fixtures import *  # noqa: F401,F403 (fixtures)

EXPECTED_TABLES = {"hosts", "registrations", "policies", "verdict_sequence",
                   "host_binding_keys", "secrets", "vtpm_migrations",
                   "policy_assignments", "verdicts", "ima_state",
                   "conductors", "host_operations", "instance_verdicts",
                   "instance_challenges", "instance_policies",
                   "instance_policy_assignments",
                   "key_releases", "distrust_actions",
                   "alembic_version"}


def _engine(url: str) -> sa.engine.Engine:
    return api.make_context_manager(url).writer.get_engine()


def test_single_head():
    assert migration.head() == "f3a9c1e7d5b4"


def test_upgrade_from_empty(empty_db_url):
    engine = _engine(empty_db_url)
    try:
        assert migration.version(engine) is None
        assert set(sa.inspect(engine).get_table_names()) == set()
        assert migration.upgrade(engine=engine) == migration.head()
        assert set(sa.inspect(engine).get_table_names()) == EXPECTED_TABLES
        # A second sync is a no-op, not an error.
        assert migration.upgrade(engine=engine) == migration.head()
        indexes = {i["name"] for i in sa.inspect(engine).get_indexes(
            "verdicts")}
        assert {"verdicts_issued_at_idx",
                "verdicts_host_id_issued_at_idx"} <= indexes
    finally:
        engine.dispose()


def test_check_constraints_hold_in_the_database(empty_db_url):
    """The database itself refuses values the API would never send."""
    engine = _engine(empty_db_url)
    try:
        migration.upgrade(engine=engine)
        hosts = models.Host.__table__
        # oslo.db wraps SQLite's and PostgreSQL's refusal; MariaDB's
        # (error 4025) comes through as the driver's OperationalError.
        with pytest.raises((db_exc.DBError, sa.exc.OperationalError)) as info:
            with engine.begin() as conn:
                conn.execute(hosts.insert().values(
                    uuid="u", hostname="h", host_group="g",
                    state="trusted-by-magic", created_at=sa.func.now()))
        assert "ck_hosts_state" in str(info.value)
        with engine.connect() as conn:
            assert conn.scalar(sa.select(sa.func.count()).select_from(
                hosts)) == 0
    finally:
        engine.dispose()


class _ModelsMigrationsSync(test_migrations.ModelsMigrationsSync,
                            unittest.TestCase):
    """oslo.db's check, run from pytest on the backend under test."""

    __test__ = False  # run by the tests below, not collected
    url: str = ""

    def setUp(self) -> None:
        super().setUp()
        self._context_manager = enginefacade.transaction_context()
        self._context_manager.configure(connection=self.url, sqlite_fk=True)
        self.engine = self._context_manager.writer.get_engine()
        self.addCleanup(self.engine.dispose)

    def get_engine(self) -> sa.engine.Engine:
        return self.engine

    def get_metadata(self) -> sa.MetaData:
        return models.Base.metadata

    def db_sync(self, engine: sa.engine.Engine) -> None:
        migration.upgrade(engine=engine)

    def runTest(self) -> None:  # unittest needs a default method
        self.test_models_sync()


def test_models_match_migrations(empty_db_url):
    case = _ModelsMigrationsSync("test_models_sync")
    case.url = empty_db_url
    result = unittest.TestResult()
    case.run(result)
    problems = [text for _, text in result.failures + result.errors]
    assert result.testsRun == 1
    assert not problems, "\n".join(problems)


def test_models_sync_check_can_fail(empty_db_url):
    """The sync check notices a model the migrations do not create."""

    class _Drifted(_ModelsMigrationsSync):
        def get_metadata(self) -> sa.MetaData:
            metadata = sa.MetaData()
            for table in models.Base.metadata.tables.values():
                table.to_metadata(metadata)
            sa.Table("not_migrated", metadata,
                     sa.Column("id", sa.Integer, primary_key=True))
            return metadata

    case = _Drifted("test_models_sync")
    case.url = empty_db_url
    result = unittest.TestResult()
    case.run(result)
    assert len(result.failures) == 1
    assert "not_migrated" in result.failures[0][1]


# --- trusted-pools-manage db sync / db version -------------------------------

def _manage(argv: list[str]) -> int:
    """Run the db commands as trusted-pools-manage does."""
    from trusted_pools.cmd import db as db_command
    from trusted_pools.cmd import manage

    parser = argparse.ArgumentParser(prog="trusted-pools-manage")
    parser.add_argument("--config-file", action="append")
    parser.add_argument("--config-dir")
    commands = parser.add_subparsers(dest="command", required=True)
    db_command.add_commands(commands)
    args = parser.parse_args(argv)
    manage.load_config(args)
    try:
        return args.func(args)
    finally:
        manage.CONF.clear()


def test_manage_db_sync_and_version(empty_db_url, tmp_path, capsys):
    config = tmp_path / "trusted-pools.conf"
    config.write_text("[database]\nconnection = %s\n" % empty_db_url)
    assert _manage(["--config-file", str(config), "db", "version"]) == 0
    assert capsys.readouterr().out.strip() == "None"
    assert _manage(["--config-file", str(config), "db", "sync"]) == 0
    assert migration.head() in capsys.readouterr().out
    assert _manage(["--config-file", str(config), "db", "sync"]) == 0
    assert _manage(["--config-file", str(config), "db", "version"]) == 0
    assert capsys.readouterr().out.split()[-1] == migration.head()


def test_manage_db_sync_default_sqlite_under_state_path(tmp_path, capsys):
    state = tmp_path / "state" / "nested"
    config = tmp_path / "trusted-pools.conf"
    config.write_text("[trusted_pools]\nstate_path = %s\n" % state)
    assert _manage(["--config-file", str(config), "db", "sync"]) == 0
    assert (state / "trusted_pools.sqlite").is_file()
    out = capsys.readouterr().out
    assert "in sqlite:///%s/trusted_pools.sqlite (created directory %s)" \
        % (state, state) in out, out
    assert oct((state).stat().st_mode & 0o777) == oct(0o700)


def test_manage_db_sync_unreachable_fails(tmp_path, capsys):
    config = tmp_path / "trusted-pools.conf"
    config.write_text("[database]\nconnection = mysql+pymysql://root@"
                      "127.0.0.1:1/test\nmax_retries = 0\n")
    assert _manage(["--config-file", str(config), "db", "sync"]) == 1
    assert "database is unavailable" in capsys.readouterr().err


def test_manage_db_sync_unknown_revision_fails(tmp_path, capsys):
    config = tmp_path / "trusted-pools.conf"
    config.write_text("[trusted_pools]\nstate_path = %s\n" % tmp_path)
    assert _manage(["--config-file", str(config), "db", "sync",
                    "--revision", "deadbeef"]) == 1
    assert "deadbeef" in capsys.readouterr().err


def test_manage_before_db_sync_says_to_run_it(empty_db_url, tmp_path,
                                              capsys):
    config = tmp_path / "trusted-pools.conf"
    config.write_text("[database]\nconnection = %s\n" % empty_db_url)
    assert _manage(["--config-file", str(config), "db", "purge-verdicts",
                    "--older-than", "30"]) == 1
    err = capsys.readouterr().err
    assert "trusted-pools-manage db sync" in err, err
    assert "OperationalError" not in err


def test_manage_db_purge_verdicts_keeps_each_hosts_newest(empty_db_url,
                                                         tmp_path, capsys):
    import datetime
    config = tmp_path / "trusted-pools.conf"
    config.write_text("[database]\nconnection = %s\n" % empty_db_url)
    assert _manage(["--config-file", str(config), "db", "sync"]) == 0
    connection = api.Connection(api.make_context_manager(empty_db_url))
    now = datetime.datetime.now(datetime.timezone.utc)
    old, older = (now - datetime.timedelta(days=10),
                  now - datetime.timedelta(days=11))
    a = connection.create_host("a").id
    b = connection.create_host("b").id
    connection.add_verdicts([
        api.NewVerdict(host_id=host, status="trusted", level=3,
                       issued_at=when,
                       expires_at=when + datetime.timedelta(seconds=120))
        for host, when in ((a, older), (a, old), (a, now), (b, older))])
    capsys.readouterr()
    assert _manage(["--config-file", str(config), "db", "purge-verdicts",
                    "--older-than", "7"]) == 0
    assert "Deleted 2 verdicts" in capsys.readouterr().out
    left = connection.verdicts_since(now - datetime.timedelta(days=30))
    assert sorted((v.host_id, v.issued_at) for v in left) == sorted(
        [(a, now), (b, older)])


@pytest.mark.parametrize("days", ["0", "-1", "nan", "soon"])
def test_manage_db_purge_verdicts_refuses_a_bad_age(days, tmp_path, capsys):
    config = tmp_path / "trusted-pools.conf"
    config.write_text("[trusted_pools]\nstate_path = %s\n" % tmp_path)
    with pytest.raises(SystemExit) as exit_:
        _manage(["--config-file", str(config), "db", "purge-verdicts",
                 "--older-than", days])
    assert exit_.value.code == 2
    assert "days" in capsys.readouterr().err


def test_manage_db_purge_operations(empty_db_url, tmp_path, capsys):
    config = tmp_path / "trusted-pools.conf"
    config.write_text("[database]\nconnection = %s\n" % empty_db_url)
    assert _manage(["--config-file", str(config), "db", "sync"]) == 0
    connection = api.Connection(api.make_context_manager(empty_db_url))
    ended = connection.create_operation("compute-1", "attest", "c-a")
    connection.finish_operation(ended.id, result={})
    pending = connection.create_operation("compute-1", "capture", "c-a")
    capsys.readouterr()
    # Nothing is a year old; everything ended is older than a millisecond.
    assert _manage(["--config-file", str(config), "db", "purge-operations",
                    "--older-than", "365"]) == 0
    assert "Deleted 0 host operations" in capsys.readouterr().out
    import time
    time.sleep(0.01)
    assert _manage(["--config-file", str(config), "db", "purge-operations",
                    "--older-than", "0.0000001"]) == 0
    assert "Deleted 1 host operations" in capsys.readouterr().out
    assert [op.id for op in connection.list_operations("compute-1")] == [
        pending.id]
    connection.dispose()


def test_operation_kinds_widened_and_still_checked(empty_db_url):
    """b3d9e7a14c60 widens ck_host_operations_kind (a copied table on
    SQLite): the new kinds are taken, others are still refused."""
    engine = _engine(empty_db_url)
    try:
        migration.upgrade(engine=engine)
        table = models.HostOperation.__table__
        row = dict(hostname="h", state="pending", conductor="c",
                   created_at=sa.func.now())
        with engine.begin() as conn:
            for kind in ("certify", "deep_attest", "list_vtpms"):
                conn.execute(table.insert().values(id=kind, kind=kind,
                                                   **row))
        with pytest.raises((db_exc.DBError, sa.exc.OperationalError)) as info:
            with engine.begin() as conn:
                conn.execute(table.insert().values(id="x", kind="magic",
                                                   **row))
        assert "ck_host_operations_kind" in str(info.value)
        # The unique lock survived the copy.
        with pytest.raises((db_exc.DBError, sa.exc.IntegrityError)):
            with engine.begin() as conn:
                for n in ("a", "b"):
                    conn.execute(table.insert().values(
                        id=n, kind="enroll", lock="enroll:h", **row))
    finally:
        engine.dispose()


def test_manage_db_purge_key_releases(empty_db_url, tmp_path, capsys):
    import datetime
    config = tmp_path / "trusted-pools.conf"
    config.write_text("[database]\nconnection = %s\n" % empty_db_url)
    assert _manage(["--config-file", str(config), "db", "sync"]) == 0
    connection = api.Connection(api.make_context_manager(empty_db_url))
    now = datetime.datetime.now(datetime.timezone.utc)
    for when in (now - datetime.timedelta(days=40), now):
        connection.record_key_release(api.KeyReleaseRecord(
            id=None, secret_id="s-1", project_id="p", owner=None,
            host="compute-1", outcome="refused", status="unknown", level=0,
            min_level=None, reason_code="not_registered", reason="r",
            conductor="c", requested_by=None, request_id=None,
            created_at=when))
    capsys.readouterr()
    assert _manage(["--config-file", str(config), "db",
                    "purge-key-releases", "--older-than", "30"]) == 0
    assert "Deleted 1 key release" in capsys.readouterr().out
    assert [r.created_at for r in connection.list_key_releases()] == [now]
    connection.dispose()
