"""Database fixtures: the same tests on SQLite, PostgreSQL and MariaDB.

Use from a test module with ``from tests.db_fixtures import *  # noqa``
(or add ``"tests.db_fixtures"`` to ``pytest_plugins`` in tests/conftest.py).

* ``db_backend`` (module scope) is parametrized over ``sqlite``,
  ``postgresql`` and ``mysql``; the server variants carry
  ``@pytest.mark.database``. Deselect them with ``-m "not database"``.
* ``db_url``: a fresh, uniquely named database for the module, created with
  oslo.db's provisioning (``oslo_db.sqlalchemy.provision``) on the real
  servers at 127.0.0.1 and dropped afterwards, migrated to head.
* ``db_api``: a :class:`trusted_pools.db.api.Connection` on it, emptied
  before each test, with a :class:`FakeClock` the test can move.
* ``empty_db_url``: a fresh unmigrated database per test (migration tests).

A server that is not reachable FAILS the test with how to start it: these
tests are how we know the schema works where operators run it.

The admin URLs can be overridden with ``TRUSTED_POOLS_TEST_POSTGRESQL_URL``
and ``TRUSTED_POOLS_TEST_MYSQL_URL`` (SQLAlchemy URLs of a user allowed to
create databases).
"""

from __future__ import annotations

import contextlib
import datetime
import os
import random
import string
from typing import Iterator

import pytest
import sqlalchemy as sa
from oslo_db import exception as db_exc
from oslo_db.sqlalchemy import provision

from trusted_pools.db import api as db_api_module
from trusted_pools.db import migration
from trusted_pools.db import models

__all__ = ["FakeClock", "db_backend", "db_module_database", "db_url",
           "db_api", "empty_db_url",
           "provisioned_database", "BACKENDS"]

_ADMIN_URLS = {
    "postgresql": os.environ.get(
        "TRUSTED_POOLS_TEST_POSTGRESQL_URL",
        "postgresql+psycopg2://postgres@127.0.0.1:5432/test"),
    "mysql": os.environ.get(
        "TRUSTED_POOLS_TEST_MYSQL_URL",
        "mysql+pymysql://root@127.0.0.1:3306/test?charset=utf8mb4"),
}

_HOW_TO_START = {
    "postgresql": (
        "PostgreSQL must run on 127.0.0.1:5432 with trust authentication "
        "for user postgres. Start it with: pg_ctlcluster "
        "--skip-systemctl-redirect $(ls /etc/postgresql) main start "
        "(driver: pip install psycopg2-binary), or point "
        "TRUSTED_POOLS_TEST_POSTGRESQL_URL at another server."),
    "mysql": (
        "MariaDB must run on 127.0.0.1:3306 with user root and no password. "
        "Start it with: start-stop-daemon --start --oknodo --background "
        "--exec /usr/sbin/mariadbd (driver: pip install PyMySQL), or point "
        "TRUSTED_POOLS_TEST_MYSQL_URL at another server."),
}

BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgresql", id="postgresql", marks=pytest.mark.database),
    pytest.param("mysql", id="mysql", marks=pytest.mark.database),
]

_SERVERS: dict[str, provision.Backend] = {}


class FakeClock:
    """A clock the test moves by hand; starts at a fixed UTC instant."""

    def __init__(self, start: datetime.datetime | None = None) -> None:
        self.now = start or datetime.datetime(
            2026, 11, 1, 12, 0, 0, 123456, tzinfo=datetime.timezone.utc)

    def __call__(self) -> datetime.datetime:
        return self.now

    def advance(self, seconds: float) -> datetime.datetime:
        self.now += datetime.timedelta(seconds=seconds)
        return self.now


def _server(backend: str) -> provision.Backend:
    """The verified oslo.db provisioning backend, or a test failure."""
    server = _SERVERS.get(backend)
    if server is None:
        server = provision.Backend(backend, sa.engine.make_url(
            _ADMIN_URLS[backend]))
        _SERVERS[backend] = server
    try:
        return server._verify()
    except db_exc.BackendNotAvailable as exc:
        pytest.fail("%s is not available (%s). %s"
                    % (backend, exc, _HOW_TO_START[backend]), pytrace=False)


def _ident() -> str:
    return "tp_test_" + "".join(random.choices(string.ascii_lowercase, k=10))


@contextlib.contextmanager
def provisioned_database(backend: str, tmp_dir: str) -> Iterator[str]:
    """A new empty database on ``backend``; yields its URL, drops it after."""
    ident = _ident()
    if backend == "sqlite":
        path = os.path.join(tmp_dir, ident + ".sqlite")
        yield "sqlite:///" + path
        return
    server = _server(backend)
    server.create_named_database(ident)
    try:
        url = server.provisioned_database_url(ident)
        yield url.render_as_string(hide_password=False)
    finally:
        server.drop_named_database(ident, conditional=True)


@pytest.fixture(scope="module", params=BACKENDS)
def db_backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
def db_module_database(db_backend: str,
                     tmp_path_factory: pytest.TempPathFactory
                     ) -> Iterator[tuple[str, object]]:
    tmp_dir = str(tmp_path_factory.mktemp("db"))
    with provisioned_database(db_backend, tmp_dir) as url:
        context_manager = db_api_module.make_context_manager(url)
        try:
            migration.upgrade(engine=context_manager.writer.get_engine())
            yield url, context_manager
        finally:
            context_manager.dispose_pool()


@pytest.fixture(scope="module")
def db_url(db_module_database: tuple[str, object]) -> str:
    """URL of the module's database, migrated to head."""
    return db_module_database[0]


def _empty_tables(engine: sa.engine.Engine) -> None:
    with engine.begin() as conn:
        for table in reversed(models.Base.metadata.sorted_tables):
            # The sequence row is created by the migration and never
            # reset (verdict numbers keep growing, as in production).
            if table.name != "verdict_sequence":
                conn.execute(table.delete())


@pytest.fixture
def db_api(db_module_database: tuple[str, object]
           ) -> db_api_module.Connection:
    """A Connection on empty tables; ``db_api.clock`` is a FakeClock."""
    _, context_manager = db_module_database
    clock = FakeClock()
    connection = db_api_module.Connection(context_manager, clock=clock)
    _empty_tables(connection.get_engine())
    connection.clock = clock  # type: ignore[attr-defined]
    return connection


@pytest.fixture
def empty_db_url(db_backend: str, tmp_path: os.PathLike) -> Iterator[str]:
    """A fresh database with no tables, dropped after the test."""
    with provisioned_database(db_backend, str(tmp_path)) as url:
        yield url
