"""RPC over the real RabbitMQ: calls, casts and typed errors."""

from __future__ import annotations

import threading

import oslo_messaging as messaging
import pytest

from trusted_pools import exception
from trusted_pools.common import rpc

pytestmark = pytest.mark.rabbitmq


class _Endpoint:
    target = messaging.Target(version="1.1")

    def helper(self, context, value):
        """Public but not exposed: not callable over the bus."""
        raise AssertionError("dispatched to a method nobody exposed")

    def __init__(self) -> None:
        self.casts: list[str] = []
        self.cast_seen = threading.Event()

    @messaging.expose
    def echo(self, context, value):
        return value

    @messaging.expose
    def fail(self, context, host):
        raise exception.HostNotFound(host=host)

    @messaging.expose
    def record(self, context, value):
        self.casts.append(value)
        self.cast_seen.set()


@pytest.fixture
def server(rabbit_conf):
    endpoint = _Endpoint()
    target = messaging.Target(topic="tp-test", server="node-1")
    srv = rpc.get_server(target, [endpoint])
    srv.start()
    try:
        yield endpoint
    finally:
        srv.stop()
        srv.wait()


def _client(version_cap: str = "1.1") -> messaging.RPCClient:
    return rpc.get_client(messaging.Target(topic="tp-test", version="1.0"),
                          version_cap=version_cap, timeout=10)


def test_call_round_trip(server):
    assert _client().call({}, "echo", value={"a": [1, 2]}) == {"a": [1, 2]}


def test_typed_error_and_kwargs_survive_the_bus(server):
    with pytest.raises(exception.HostNotFound) as err:
        _client().call({}, "fail", host="compute-7")
    assert "compute-7" in str(err.value)


def test_cast_is_delivered(server):
    _client().cast({}, "record", value="hello")
    assert server.cast_seen.wait(10)
    assert server.casts == ["hello"]


def test_version_above_cap_is_refused_client_side(server):
    client = _client(version_cap="1.0").prepare(version="1.1")
    with pytest.raises(messaging.RPCVersionCapError):
        client.call({}, "echo", value=1)


def test_a_method_not_exposed_is_not_dispatched(server):
    with pytest.raises(messaging.RemoteError) as info:
        _client().call({}, "helper", value=1)
    assert info.value.exc_type == "NoSuchMethod"
