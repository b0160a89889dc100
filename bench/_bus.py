"""The real message bus for benchmarks: an oslo.messaging configuration
pointed at a broker URL, and rabbitmqctl for a virtual host of their own."""

from __future__ import annotations

from typing import Any

from tests.rabbitmq import rabbitmqctl

__all__ = ["configure_bus", "rabbitmqctl"]


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
