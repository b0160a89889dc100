"""The real message bus for benchmarks: an oslo.messaging configuration
pointed at a broker URL, and rabbitmqctl for a virtual host of their own."""

from __future__ import annotations

import contextlib
import uuid
from typing import Any, Iterator

from tests.rabbitmq import rabbitmqctl

__all__ = ["bench_vhost", "configure_bus", "rabbitmqctl"]


@contextlib.contextmanager
def bench_vhost(url: str) -> Iterator[str]:
    """The broker URL of a fresh virtual host (deleted afterwards), or
    ``url`` itself when rabbitmqctl cannot make one."""
    vhost = "tp-bench-%s" % uuid.uuid4().hex[:12]
    if not (rabbitmqctl("add_vhost", vhost) and rabbitmqctl(
            "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")):
        print("rabbitmqctl unavailable: using the default virtual host")
        yield url
        return
    try:
        yield url.rstrip("/") + "/" + vhost
    finally:
        rabbitmqctl("delete_vhost", vhost)


def configure_bus(url: str, exchange: str, project: str) -> Any:
    """Point the global configuration at ``url`` and initialise the RPC
    transports; returns the fixture to clean up with ``cleanUp()``."""
    from oslo_config import cfg
    from oslo_messaging import conffixture
    from trusted_pools.common import rpc
    conf = cfg.CONF
    conf([], project=project)
    rpc.set_defaults()
    fixture = conffixture.ConfFixture(conf)
    fixture.setUp()
    fixture.transport_url = url
    conf.set_override("control_exchange", exchange)
    rpc.init(conf)
    return fixture
