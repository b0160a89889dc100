"""The API's deadline on conductor calls (friction 4 of issue 14): the
broker addresses it probes, read from transport_url, and a call that
never returns ends at the deadline naming what it waited for."""

from __future__ import annotations

import threading
import time

import pytest
from oslo_config import cfg

from tests.api_fixtures import make_api_conf
from trusted_pools import exception
from trusted_pools.api import app as api_app
from trusted_pools.api import conductors as conductors_mod


@pytest.mark.parametrize("url,expected", [
    ("rabbit://guest:guest@127.0.0.1:5672/tp", [("127.0.0.1", 5672)]),
    ("rabbit://u:p@a:1,u:p@b:2/", [("a", 1), ("b", 2)]),
    ("rabbit://u:p@[::1]:5671/", [("::1", 5671)]),
    ("rabbit://u:p@broker/", [("broker", 5672)]),
    ("fake://", []), (None, []), ("nonsense", []),
])
def test_broker_addresses(url, expected):
    assert conductors_mod.broker_addresses(url) == expected


def test_make_services_wires_the_deadline_from_the_config(db):
    conf = make_api_conf()
    conf.register_opt(cfg.StrOpt("transport_url"))
    conf.set_override("transport_url", "rabbit://g:g@127.0.0.1:1/")
    conf.set_override("rpc_timeout", 7, group="trusted_pools_api")
    services = api_app.make_services(conf, db=db)
    assert services.conductors.call_timeout == 7 + api_app._CALL_MARGIN
    assert services.conductors.brokers == [("127.0.0.1", 1)]


class Stuck:
    """A conductor client whose calls never come back (a broker that
    oslo.messaging keeps reconnecting to)."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def attest_now(self, context, host, conductor):
        self.release.wait(30)
        return {"late": True}


def test_a_call_that_never_returns_ends_at_the_deadline(db):
    db.register_conductor("conductor-a")
    stuck = Stuck()
    conductors = conductors_mod.Conductors(
        db, lambda: stuck, 60, call_timeout=0.5,
        brokers=[("127.0.0.1", 1)])
    started = time.monotonic()
    with pytest.raises(exception.ConductorUnreachable) as error:
        conductors.call("attest_now", {}, "compute-1")
    assert time.monotonic() - started < 3
    text = str(error.value)
    assert "conductor-a did not answer attest_now for host compute-1" in text
    assert "does not accept connections at 127.0.0.1:1" in text
    stuck.release.set()
