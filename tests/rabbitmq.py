"""The real RabbitMQ broker the functional tests talk to.

The broker runs on 127.0.0.1:5672 (guest/guest) on the project's machines
and ``tools/services.sh`` starts it when it is down. A test that needs it
fails, naming what is missing, when it cannot be reached: never a skip.
"""

from __future__ import annotations

import os
import socket
import subprocess
import uuid
from typing import Iterator

import pytest
from oslo_config import cfg
from oslo_messaging import conffixture

RABBIT_URL = os.environ.get("TRUSTED_POOLS_TEST_RABBIT",
                            "rabbit://guest:guest@127.0.0.1:5672/")


def broker_reachable(host: str = "127.0.0.1", port: int = 5672) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def require_broker() -> None:
    if not broker_reachable():
        pytest.fail("RabbitMQ is not listening on 127.0.0.1:5672. Start it "
                    "with 'rabbitmq-server -detached' (or run "
                    "tools/services.sh, which installs and starts it).",
                    pytrace=False)


def rabbitmqctl(*args: str) -> bool:
    try:
        subprocess.run(["rabbitmqctl", *args], check=True, timeout=60,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return True
    except (OSError, subprocess.SubprocessError):
        return False


@pytest.fixture(scope="session")
def rabbit_url() -> Iterator[str]:
    """The broker URL with a virtual host of this test session's own.

    oslo.messaging names queues after topics, not exchanges, so only a
    virtual host keeps two test runs (or a test run and the demo) on one
    broker from consuming each other's messages. Without rabbitmqctl
    (not root) the default virtual host is used, shared.
    """
    require_broker()
    if "TRUSTED_POOLS_TEST_RABBIT" in os.environ:
        yield RABBIT_URL
        return
    vhost = "tp-test-%s" % uuid.uuid4().hex[:12]
    if not (rabbitmqctl("add_vhost", vhost) and rabbitmqctl(
            "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")):
        yield RABBIT_URL
        return
    try:
        yield RABBIT_URL.rstrip("/") + "/" + vhost
    finally:
        rabbitmqctl("delete_vhost", vhost)


@pytest.fixture
def rabbit_conf(rabbit_url: str) -> Iterator[cfg.ConfigOpts]:
    """Global CONF pointed at the real broker, on a private exchange.

    oslo.messaging registers some options only on the global CONF, so the
    tests use it, with a unique control_exchange per test so that tests
    never receive each other's messages.
    """
    from trusted_pools.common import rpc
    require_broker()
    conf = cfg.CONF
    rpc.set_defaults()
    # oslo.messaging's own test fixture registers its options so that they
    # can be overridden before the first transport exists.
    fixture = conffixture.ConfFixture(conf)
    fixture.setUp()
    fixture.transport_url = rabbit_url
    conf.set_override("control_exchange", "tp-test-%s" % uuid.uuid4().hex)
    rpc.init(conf)
    try:
        yield conf
    finally:
        rpc.cleanup()
        fixture.cleanUp()
