"""Friction 4 of issue 14, as a new operator meets it through
``openstack trusted``: attesting a host whose agent is down, an API whose
message broker is unreachable, and a conductor that is registered alive
but does not answer. Each command ends within its timeout and says what
it waited for: no traceback, no endless retry, no long silence.

Real parts: RabbitMQ (and a port where none listens), swtpm hosts with
their agents and a conductor for the agent case, the API's pipeline
behind keystonemiddleware on a real HTTP port, the real openstack shell.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
import uuid
from typing import Any, Iterator

import pytest
from oslo_config import cfg
from oslo_messaging import conffixture

from tests.api_fixtures import auth_tokens, make_api_conf  # noqa: F401
from tests.api_fixtures import pool_with_api
from tests.osc_shell import plugin_visible, run_openstack
from tests.pool_harness import ek_sha256
from tests.rabbitmq import require_broker
from trusted_pools.api import app as api_app
from trusted_pools.api import conductors as conductors_mod
from trusted_pools.cmd import api as api_cmd
from trusted_pools.common import rpc
from trusted_pools.conductor import rpcapi
from trusted_pools.db import api as db_api
from trusted_pools.db import migration

pytestmark = [pytest.mark.rabbitmq]

RPC_TIMEOUT = 3


@pytest.fixture(scope="module", autouse=True)
def _plugin(tmp_path_factory) -> None:
    plugin_visible(tmp_path_factory.mktemp("osc-plugin"))


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _serve(application: Any) -> tuple[str, Any]:
    server = api_cmd.make_server("127.0.0.1", 0, application)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return "http://127.0.0.1:%d/" % server.server_port, server


def openstack(endpoint: str, *argv: str):
    """The CLI as the operator runs it. The services share this test
    process (and its stderr): their logs, which an operator finds in
    their own log files, are held back while the CLI runs."""
    quiet = {name: logging.getLogger(name).level
             for name in ("trusted_pools", "oslo.messaging", "oslo_messaging",
                          "kombu", "futurist")}
    for name in quiet:
        logging.getLogger(name).setLevel(logging.CRITICAL)
    client = logging.getLogger("trusted_pools.osc")
    client_level = client.level
    client.setLevel(logging.WARNING)
    try:
        return run_openstack(["--os-auth-type", "admin_token",
                              "--os-endpoint", endpoint, "--os-token",
                              "admin", *argv])
    finally:
        for name, level in quiet.items():
            logging.getLogger(name).setLevel(level)
        client.setLevel(client_level)


@pytest.fixture
def bus(request) -> Iterator[str]:
    """The process's bus: the real broker, or a port where none listens
    (``request.param``: "up" or "down")."""
    url = "rabbit://guest:guest@127.0.0.1:%d/" % _closed_port()
    if request.param == "up":
        require_broker()
        url = "rabbit://guest:guest@127.0.0.1:5672/"
    conf = cfg.CONF
    rpc.set_defaults()
    fixture = conffixture.ConfFixture(conf)
    fixture.setUp()
    fixture.transport_url = url
    conf.set_override("control_exchange", "tp-test-%s" % uuid.uuid4().hex)
    rpc.init(conf)
    try:
        yield url
    finally:
        # A transport stuck reconnecting to nothing: close it aside.
        closer = threading.Thread(target=rpc.cleanup, daemon=True)
        closer.start()
        closer.join(10)
        fixture.cleanUp()


@pytest.fixture
def api_without_answers(tmp_path, bus, auth_tokens):  # noqa: F811
    """trusted-pools-api whose database says conductor-a is alive, while
    nothing consumes its queue (or no broker is there at all)."""
    db = db_api.Connection(db_api.make_context_manager(
        "sqlite:///%s" % (tmp_path / "api.sqlite")))
    migration.upgrade(engine=db.get_engine())
    db.create_host("compute-1", state="enrolled")
    db.register_conductor("conductor-a")
    conf = make_api_conf()
    conf.set_override("rpc_timeout", RPC_TIMEOUT, group="trusted_pools_api")
    # As make_services wires it from transport_url.
    conductors = conductors_mod.Conductors(
        db, lambda: rpcapi.ConductorAPI(timeout=RPC_TIMEOUT),
        conf.conductor.heartbeat_timeout,
        call_timeout=RPC_TIMEOUT + api_app._CALL_MARGIN,
        brokers=conductors_mod.broker_addresses(bus))
    endpoint, server = _serve(api_app.build(conf, db=db,
                                            conductors=conductors))
    try:
        yield endpoint, bus
    finally:
        server.shutdown()
        server.server_close()
        db.dispose()


@pytest.mark.parametrize("bus", ["down"], indirect=True)
def test_unreachable_broker_is_named_within_the_timeout(api_without_answers):
    endpoint, url = api_without_answers
    port = url.rsplit(":", 1)[1].rstrip("/")
    started = time.monotonic()
    result = openstack(endpoint, "trusted", "host", "attest", "compute-1",
                       "-f", "json")
    waited = time.monotonic() - started
    assert result.code != 0
    assert waited < RPC_TIMEOUT + api_app._CALL_MARGIN + 5, waited
    assert "HTTP 503" in result.stderr, result.stderr
    assert "conductor-a did not answer attest_now for host compute-1" in \
        result.stderr
    assert "does not accept connections at 127.0.0.1:%s" % port in \
        result.stderr
    assert "Traceback" not in result.stderr and "_Remote" not in \
        result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize("bus", ["up"], indirect=True)
def test_a_hung_conductor_is_named_within_the_timeout(api_without_answers):
    endpoint, _ = api_without_answers
    started = time.monotonic()
    result = openstack(endpoint, "trusted", "host", "enroll", "compute-2",
                       "--ek-sha256", "ab" * 32)
    waited = time.monotonic() - started
    assert result.code != 0
    assert waited < RPC_TIMEOUT + api_app._CALL_MARGIN + 5, waited
    assert "HTTP 503" in result.stderr, result.stderr
    assert "conductor-a did not answer enroll_host for host compute-2 " \
        "within %d s" % (RPC_TIMEOUT + api_app._CALL_MARGIN) in result.stderr
    assert "is trusted-pools-conductor running on conductor-a" in \
        result.stderr
    assert "Traceback" not in result.stderr and "_Remote" not in \
        result.stderr


@pytest.mark.swtpm
@pytest.mark.slow
def test_attesting_a_host_whose_agent_is_down(tmp_path, rabbit_conf,
                                              swtpm_pool, swtpm_ca,
                                              auth_tokens):  # noqa: F811
    rabbit_conf.set_override("agent_rpc_timeout", 3, group="conductor")
    pool, application = pool_with_api(tmp_path, rabbit_conf, swtpm_pool,
                                      swtpm_ca, 1)
    endpoint, server = _serve(application)
    try:
        (host,) = pool.hosts
        enrolled = openstack(endpoint, "trusted", "host", "enroll",
                             host.name, "--ek-sha256", ek_sha256(host.tpm))
        assert enrolled.code == 0, enrolled.stderr
        host.agent.stop()
        host.agent = None
        started = time.monotonic()
        result = openstack(endpoint, "trusted", "host", "attest",
                           host.name, "--wait-timeout", "60", "-f", "json")
        waited = time.monotonic() - started
        assert result.code != 0
        assert waited < 30, waited
        assert "The agent of host %s did not answer" % host.name in \
            result.stderr, result.stderr
        assert "is trusted-pools-agent running there" in result.stderr
        assert "Traceback" not in result.stderr
        assert "_Remote" not in result.stderr
    finally:
        server.shutdown()
        server.server_close()
        pool.close()
