"""The real RabbitMQ broker the functional tests talk to.

The broker runs on 127.0.0.1:5672 (guest/guest) on the project's machines
and ``tools/services.sh`` starts it when it is down. A test that needs it
fails, naming what is missing, when it cannot be reached: never a skip.

That broker is shared by every test session on the machine, so no test
restarts it: a test that must crash and restart a broker uses
``private_rabbit`` (a node of its own, ``tests/rabbitmq_node.py``) and
``private_rabbit_conf``.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import urllib.parse
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator

import pytest
from oslo_config import cfg
from oslo_messaging import conffixture

if TYPE_CHECKING:
    import argparse

    from tests.rabbitmq_node import PrivateRabbitNode

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
    require_broker()
    with bus_conf(rabbit_url) as conf:
        yield conf


@contextlib.contextmanager
def bus_conf(url: str) -> Iterator[cfg.ConfigOpts]:
    """Global CONF with ``transport_url`` = ``url``, a private
    control_exchange and the project's transports initialised; all undone
    on exit."""
    from trusted_pools.common import rpc
    conf = cfg.CONF
    rpc.set_defaults()
    # oslo.messaging's own test fixture registers its options so that they
    # can be overridden before the first transport exists.
    fixture = conffixture.ConfFixture(conf)
    fixture.setUp()
    fixture.transport_url = url
    conf.set_override("control_exchange", "tp-test-%s" % uuid.uuid4().hex)
    # An idle listener notices a stop only between waits of up to
    # heartbeat_timeout_threshold / heartbeat_rate / 2 s (at most 5 s):
    # 0.5 s here, as in the demo, so that a pool's teardown takes about a
    # second (bench/bench_stop.py).
    conf.set_override("heartbeat_rate", 60, group="oslo_messaging_rabbit")
    rpc.init(conf)
    try:
        yield conf
    finally:
        rpc.cleanup()
        conf.clear_override("heartbeat_rate", group="oslo_messaging_rabbit")
        fixture.cleanUp()


# --- a private node a test may restart ------------------------------------

@pytest.fixture
def private_rabbit(tmp_path_factory) -> Iterator["PrivateRabbitNode"]:
    """A RabbitMQ node of this test's own (``tests/rabbitmq_node.py``),
    booted; the test may crash and restart it (``restart()``), which the
    shared broker must never be. Stopped and its directory removed at the
    end, pass or fail. FAILS, naming the package, when rabbitmq-server is
    not installed."""
    from tests.rabbitmq_node import (PrivateRabbitNode, RabbitMQMissing,
                                     RabbitMQNodeFailed)
    try:
        with PrivateRabbitNode.started() as node:
            yield node
    except (RabbitMQMissing, RabbitMQNodeFailed) as error:
        pytest.fail("private RabbitMQ node: %s" % error, pytrace=False)


@pytest.fixture
def private_rabbit_conf(private_rabbit) -> Iterator[cfg.ConfigOpts]:
    """Like ``rabbit_conf``, on the private node's default virtual host."""
    with bus_conf(private_rabbit.url) as conf:
        yield conf


# --- per-role users in a test vhost pair (the broker's trust boundary) -------

#: Hosts the role fixture makes agent users for (TrustedPool's names).
ROLE_TEST_HOSTS = ("compute-00", "compute-01", "compute-02")


@dataclass
class RoleBuses:
    """A management and an agent vhost of this test's own, with the users
    ``trusted-pools-manage rabbitmq setup`` creates for each role."""

    management_vhost: str
    agent_vhost: str
    service_user: str
    consumer_user: str
    agent_users: dict[str, str]  # host -> user
    passwords: dict[str, str]

    def url(self, user: str, vhost: str) -> str:
        base = urllib.parse.urlsplit(RABBIT_URL)
        return "rabbit://%s:%s@%s:%d/%s" % (
            urllib.parse.quote(user, safe=""),
            urllib.parse.quote(self.passwords[user], safe=""),
            base.hostname or "127.0.0.1", base.port or 5672,
            urllib.parse.quote(vhost, safe=""))

    def management_url(self, user: str) -> str:
        return self.url(user, self.management_vhost)

    def agent_url(self, user: str) -> str:
        return self.url(user, self.agent_vhost)

    def agent_url_of(self, host: str) -> str:
        return self.agent_url(self.agent_users[host])


@pytest.fixture
def role_buses() -> Iterator[RoleBuses]:
    """Both vhosts and a user per role (agents: one per host of
    ``ROLE_TEST_HOSTS``), made by the product's own setup code
    (``trusted_pools.cmd.rabbitmq``); deleted afterwards (users are
    broker-wide, so their names carry this test's tag)."""
    import argparse
    require_broker()
    tag = uuid.uuid4().hex[:10]
    buses = RoleBuses(
        "tp-mgmt-%s" % tag, "tp-agents-%s" % tag, "tp-service-%s" % tag,
        "tp-consumer-%s" % tag,
        {host: "tp-agent-%s-%s" % (host, tag) for host in ROLE_TEST_HOSTS},
        {})
    for user in (buses.service_user, buses.consumer_user,
                 *buses.agent_users.values()):
        buses.passwords[user] = uuid.uuid4().hex
    args = argparse.Namespace(
        vhost=buses.management_vhost, agent_vhost=buses.agent_vhost,
        service_user=[buses.service_user],
        consumer_user=[buses.consumer_user], remediation_user=None,
        agent_user=["%s=%s" % (user, host)
                    for host, user in buses.agent_users.items()],
        dry_run=False)
    with setup_users(args, buses.passwords):
        yield buses


@contextlib.contextmanager
def setup_users(args: "argparse.Namespace", passwords: dict[str, str]
                ) -> Iterator[None]:
    """The vhosts and users of ``trusted-pools-manage rabbitmq setup``'s
    ``args`` (its own code), deleted on exit."""
    from trusted_pools.cmd import rabbitmq as setup
    try:
        plan = setup.build_plan(args, passwords)
        setup.apply(plan)
    except Exception as error:  # noqa: BLE001 - name what is missing
        pytest.fail("cannot create RabbitMQ users and vhosts with "
                    "rabbitmqctl (run the tests as a user that may): %s"
                    % error, pytrace=False)
    try:
        yield
    finally:
        for vhost in plan.vhosts:
            rabbitmqctl("delete_vhost", vhost)
        for user in passwords:
            rabbitmqctl("delete_user", user)


@pytest.fixture
def role_conf(role_buses: RoleBuses) -> Iterator[cfg.ConfigOpts]:
    """Global CONF as trusted-pools-api and the conductors run it: the
    service user on the management bus (transport_url) and on the agent
    bus ([conductor] agent_transport_url), on the product's exchange (the
    topic permissions name it)."""
    from trusted_pools.common import rpc
    from trusted_pools.cmd import rabbitmq as setup
    conf = cfg.CONF
    rpc.set_defaults()
    fixture = conffixture.ConfFixture(conf)
    fixture.setUp()
    fixture.transport_url = role_buses.management_url(role_buses.service_user)
    conf.set_override("control_exchange", setup.CONTROL_EXCHANGE)
    conf.set_override("agent_transport_url",
                      role_buses.agent_url(role_buses.service_user),
                      group="conductor")
    rpc.init(conf)
    try:
        yield conf
    finally:
        rpc.cleanup()
        conf.clear_override("agent_transport_url", group="conductor")
        fixture.cleanUp()
