"""oslo.messaging plumbing shared by every service.

Errors raised by endpoints cross the bus as the same class with the same
keyword arguments, because ``trusted_pools.exception`` is an allowed remote
exception module and every exception keeps its ``kwargs``.
"""

from __future__ import annotations

from typing import Any, Sequence

import oslo_messaging as messaging
from oslo_config import cfg

from trusted_pools import exception

ALLOWED_EXMODS = [exception.__name__]
# Trust notifications go to this topic; consumers listen on it.
NOTIFICATION_TOPICS = ["trusted_pools_notifications"]

_TRANSPORT: messaging.Transport | None = None
_NOTIFICATION_TRANSPORT: messaging.Transport | None = None


def set_defaults(control_exchange: str = "trusted_pools") -> None:
    """Use this project's exchange unless the operator set another."""
    messaging.set_transport_defaults(control_exchange)


def init(conf: cfg.ConfigOpts) -> None:
    """Create the RPC and notification transports from ``transport_url``."""
    global _TRANSPORT, _NOTIFICATION_TRANSPORT
    exmods = ALLOWED_EXMODS
    _TRANSPORT = messaging.get_rpc_transport(
        conf, allowed_remote_exmods=exmods)
    _NOTIFICATION_TRANSPORT = messaging.get_notification_transport(
        conf, allowed_remote_exmods=exmods)


def cleanup() -> None:
    """Close both transports (tests and graceful service stop)."""
    global _TRANSPORT, _NOTIFICATION_TRANSPORT
    for transport in (_TRANSPORT, _NOTIFICATION_TRANSPORT):
        if transport is not None:
            transport.cleanup()
    _TRANSPORT = _NOTIFICATION_TRANSPORT = None


def _require(transport: messaging.Transport | None) -> messaging.Transport:
    if transport is None:
        raise exception.ConfigInvalid(
            reason="the message bus is not initialised; the service must "
                   "call trusted_pools.common.rpc.init() at start")
    return transport


def get_client(target: messaging.Target, version_cap: str | None = None,
               timeout: float | None = None) -> messaging.RPCClient:
    return messaging.get_rpc_client(
        _require(_TRANSPORT), target, version_cap=version_cap,
        timeout=timeout)


def get_server(target: messaging.Target, endpoints: Sequence[Any]
               ) -> messaging.MessageHandlingServer:
    return messaging.get_rpc_server(
        _require(_TRANSPORT), target, list(endpoints), executor="threading",
        access_policy=messaging.DefaultRPCAccessPolicy)


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
