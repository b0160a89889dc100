"""oslo.messaging plumbing shared by every service.

Errors raised by endpoints cross the bus as the same class with the same
keyword arguments, because ``trusted_pools.exception`` is an allowed remote
exception module and every exception keeps its ``kwargs``.

Two buses (see doc/source/architecture.md, "Trust boundary"):

* the management bus (``transport_url``): trusted-pools-api, conductors and
  the verdict consumers; it carries the management topic, the verdict
  reads and the trust notifications;
* the agent bus (``[conductor] agent_transport_url``, agents' own
  ``transport_url``): agents and conductors; it carries the evidence topic,
  the agents' topic and the epoch fanout, nothing else.

Every RPC server dispatches with oslo.messaging's
``ExplicitRPCAccessPolicy``: only endpoint methods marked
``@messaging.expose`` can be called over the bus.

Contexts: clients and servers on the management bus carry a
:class:`trusted_pools.common.context.RequestContext` (request id, user,
project, roles) with its serializer; on the agent bus the context stays a
plain dict that no server believes (agents are the hosts being judged).
"""

from __future__ import annotations

from typing import Any, Sequence

import oslo_messaging as messaging
from oslo_config import cfg

from trusted_pools import exception
from trusted_pools.common import context as context_mod
from trusted_pools.protocol import topics

ALLOWED_EXMODS = [exception.__name__]
# Trust notifications go to this topic; consumers listen on it.
NOTIFICATION_TOPICS = list(topics.NOTIFICATION_TOPICS)

#: Which bus a client or server uses.
MANAGEMENT_BUS = "management"
AGENT_BUS = "agent"

_TRANSPORT: messaging.Transport | None = None
_AGENT_TRANSPORT: messaging.Transport | None = None
_NOTIFICATION_TRANSPORT: messaging.Transport | None = None


def set_defaults(control_exchange: str = topics.CONTROL_EXCHANGE) -> None:
    """Use this project's exchange unless the operator set another."""
    messaging.set_transport_defaults(control_exchange)


def _agent_bus_url(conf: cfg.ConfigOpts) -> str | None:
    try:
        return conf.conductor.agent_transport_url
    except (cfg.NoSuchOptError, cfg.NoSuchGroupError):
        return None


def init(conf: cfg.ConfigOpts) -> None:
    """Create the RPC and notification transports from ``transport_url``
    (and the agent bus from ``[conductor] agent_transport_url``; unset, the
    agent bus is the same transport)."""
    global _TRANSPORT, _AGENT_TRANSPORT, _NOTIFICATION_TRANSPORT
    exmods = ALLOWED_EXMODS
    _TRANSPORT = messaging.get_rpc_transport(
        conf, allowed_remote_exmods=exmods)
    agent_url = _agent_bus_url(conf)
    _AGENT_TRANSPORT = _TRANSPORT if not agent_url else \
        messaging.get_rpc_transport(conf, url=agent_url,
                                    allowed_remote_exmods=exmods)
    _NOTIFICATION_TRANSPORT = messaging.get_notification_transport(
        conf, allowed_remote_exmods=exmods)


def cleanup() -> None:
    """Close every transport (tests and graceful service stop)."""
    global _TRANSPORT, _AGENT_TRANSPORT, _NOTIFICATION_TRANSPORT
    seen: list[messaging.Transport] = []
    for transport in (_TRANSPORT, _AGENT_TRANSPORT, _NOTIFICATION_TRANSPORT):
        if transport is not None and not any(transport is t for t in seen):
            seen.append(transport)
            transport.cleanup()
    _TRANSPORT = _AGENT_TRANSPORT = _NOTIFICATION_TRANSPORT = None


def _require(transport: messaging.Transport | None) -> messaging.Transport:
    if transport is None:
        raise exception.ConfigInvalid(
            reason="the message bus is not initialised; the service must "
                   "call trusted_pools.common.rpc.init() at start")
    return transport


def _rpc_transport(bus: str) -> messaging.Transport:
    if bus == AGENT_BUS:
        return _require(_AGENT_TRANSPORT)
    if bus == MANAGEMENT_BUS:
        return _require(_TRANSPORT)
    raise ValueError("bus must be %r or %r, not %r"
                     % (MANAGEMENT_BUS, AGENT_BUS, bus))


def get_transport(conf: cfg.ConfigOpts, url: str) -> messaging.Transport:
    """An RPC transport of its own for ``url`` (a process that speaks as
    another bus user than the service's, e.g. an in-process agent)."""
    return messaging.get_rpc_transport(conf, url=url,
                                       allowed_remote_exmods=ALLOWED_EXMODS)


def _serializer(bus: str) -> messaging.Serializer | None:
    """Request contexts travel on the management bus only; on the agent
    bus the context is a plain dict (see the module's docstring)."""
    if bus == MANAGEMENT_BUS:
        return context_mod.RequestContextSerializer()
    return None


def get_client(target: messaging.Target, version_cap: str | None = None,
               timeout: float | None = None, bus: str = MANAGEMENT_BUS,
               transport: messaging.Transport | None = None
               ) -> messaging.RPCClient:
    return messaging.get_rpc_client(
        transport or _rpc_transport(bus), target, version_cap=version_cap,
        timeout=timeout, serializer=_serializer(bus))


def get_server(target: messaging.Target, endpoints: Sequence[Any],
               bus: str = MANAGEMENT_BUS,
               transport: messaging.Transport | None = None
               ) -> messaging.MessageHandlingServer:
    """An RPC server that dispatches only to ``@messaging.expose``-d
    methods: a public helper of an endpoint is not callable by whoever
    can publish to the topic."""
    return messaging.get_rpc_server(
        transport or _rpc_transport(bus), target, list(endpoints),
        executor="threading", serializer=_serializer(bus),
        access_policy=messaging.ExplicitRPCAccessPolicy)


def get_notifier(publisher_id: str) -> messaging.Notifier:
    return messaging.Notifier(
        _require(_NOTIFICATION_TRANSPORT), publisher_id=publisher_id,
        driver="messagingv2", topics=NOTIFICATION_TOPICS)


def get_notification_listener(endpoints: Sequence[Any],
                              pool: str | None = None
                              ) -> messaging.MessageHandlingServer:
    targets = [messaging.Target(topic=t) for t in NOTIFICATION_TOPICS]
    return messaging.get_notification_listener(
        _require(_NOTIFICATION_TRANSPORT), targets, list(endpoints),
        executor="threading", pool=pool)
