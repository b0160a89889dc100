"""An API on a real (SQLite) database with a stand-in for the conductors:
the unit tests here are about authentication, policy, validation and
formats; the functional tests talk to real conductors over RabbitMQ."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from tests.api_fixtures import Client, auth_tokens, make_api_conf  # noqa: F401
from trusted_pools.api import app as api_app
from trusted_pools.conductor.hash_ring import HashRing
from trusted_pools.db import api as db_api
from trusted_pools.db import migration

MEASURED_BOOT = {"kind": "measured_boot",
                 "pcrs": {"sha256": {"0": "00" * 32}}}


class FakeConductors:
    """Records the calls the API would send to the owning conductor."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, dict[str, Any]]] = []

    def ring(self) -> HashRing:
        return HashRing(["conductor-a"])

    def owner(self, host: str) -> str:
        return "conductor-a"

    def call(self, method: str, context: dict, host: str, **kwargs: Any
             ) -> Any:
        self.calls.append((method, host, kwargs))
        return {}


@pytest.fixture
def db(tmp_path):
    connection = db_api.Connection(db_api.make_context_manager(
        "sqlite:///%s" % (tmp_path / "api.sqlite")))
    migration.upgrade(engine=connection.get_engine())
    try:
        yield connection
    finally:
        connection.dispose()


@pytest.fixture
def conductors():
    return FakeConductors()


@pytest.fixture
def client(db, conductors, auth_tokens):  # noqa: F811
    conf = make_api_conf()
    return Client(api_app.build(conf, db=db, conductors=conductors))


def add_host_with_verdict(db: db_api.Connection, name: str,
                          status: str = "trusted", level: int = 3
                          ) -> db_api.Host:
    host = db.create_host(name, state="enrolled")
    now = datetime.datetime.now(datetime.timezone.utc)
    db.add_verdicts([db_api.NewVerdict(
        host_id=host.id, status=status, level=level, issued_at=now,
        expires_at=now + datetime.timedelta(seconds=180),
        reasons=[] if status == "trusted" else ["OS boot: kernel not "
                                                "allowed"],
        signed_result="token-of-" + name)])
    return host
