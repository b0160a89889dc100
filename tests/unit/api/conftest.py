"""An API on a real (SQLite) database with a stand-in for the conductors:
the unit tests here are about authentication, policy, validation and
formats; the functional tests talk to real conductors over RabbitMQ."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from tests.api_fixtures import Client, auth_tokens, make_api_conf  # noqa: F401
from trusted_pools.api import app as api_app
from trusted_pools.protocol.hash_ring import HashRing
from trusted_pools.db import api as db_api
from trusted_pools.db import migration

MEASURED_BOOT = {"kind": "measured_boot",
                 "pcrs": {"sha256": {"0": "00" * 32}}}


_KINDS = {"enroll_host": "enroll", "attest_now": "attest",
          "capture_policy": "capture", "certify_binding_key": "certify",
          "deep_attest": "deep_attest", "list_vtpms": "list_vtpms"}


class FakeConductors:
    """Records the calls the API would send to the owning conductor; an
    enroll, attest or capture is recorded as an operation that is done at
    once with ``results[method]`` (or failed with ``errors[method]``), as
    the conductor's worker would record it."""

    def __init__(self, db: db_api.Connection | None = None) -> None:
        self.db = db
        self.calls: list[tuple[str, str, dict[str, Any]]] = []
        self.results: dict[str, Any] = {}
        self.errors: dict[str, Any] = {}
        self.finish = True

    def ring(self) -> HashRing:
        return HashRing(["conductor-a"])

    def owner(self, host: str) -> str:
        return "conductor-a"

    def call(self, method: str, context: dict, host: str, **kwargs: Any
             ) -> Any:
        self.calls.append((method, host, kwargs))
        kind = _KINDS.get(method)
        if kind is None or self.db is None:
            return self.results.get(method, {})
        operation = self.db.create_operation(
            host, kind, "conductor-a",
            request_id=getattr(context, "request_id", None),
            exclusive=kind == "enroll")
        if self.finish:
            error = self.errors.get(method)
            if error is not None:
                self.db.finish_operation(
                    operation.id, error_type=type(error).__name__,
                    error={"message": error.message,
                           "kwargs": error.kwargs})
            else:
                self.db.finish_operation(operation.id,
                                         result=self.results.get(method, {}))
        return {"host": host, "operation": operation.id,
                "state": "pending"}


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
def conductors(db):
    return FakeConductors(db)


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
