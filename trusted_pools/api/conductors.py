"""Reaching the conductor that owns a host.

Operations that need a host's TPM (enroll, attest, capture, reset) go to
the conductor that owns the host on the hash ring, over the conductor's
RPC API: only that conductor keeps the host's clock baseline and IMA
replay state. The ring is built from the live conductors in the database
at each request (one small query), so the API never sends to a conductor
that died; if the conductor's own ring disagrees (a conductor joined a
moment ago) it answers :class:`HostNotOwned` naming the owner, and the
request goes there once.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Any, Callable, Sequence

import oslo_messaging as messaging

from trusted_pools import exception
from trusted_pools.protocol.hash_ring import HashRing
from trusted_pools.conductor import rpcapi
from trusted_pools.db import api as db_api

LOG = logging.getLogger(__name__)


#: Calls to conductors waiting at once; more wait in line (and give up at
#: the same deadline): a broker that is down cannot pile up threads.
_CALLERS = 8
#: Seconds a broker gets to accept a TCP connection when the API explains
#: why a conductor did not answer.
_PROBE_SECONDS = 1.0


def broker_addresses(transport_url: str | None) -> list[tuple[str, int]]:
    """(host, port) of each broker in a ``rabbit://`` transport URL (the
    ones the API can probe when a call gets no answer)."""
    if not transport_url or "://" not in transport_url:
        return []
    rest = transport_url.split("://", 1)[1].split("/", 1)[0]
    found = []
    for part in rest.split(","):
        hostport = part.rsplit("@", 1)[-1]
        if hostport.startswith("["):
            host, _, port = hostport[1:].partition("]")
            port = port.lstrip(":")
        else:
            host, _, port = hostport.partition(":")
        if not host:
            continue
        try:
            found.append((host, int(port or 5672)))
        except ValueError:
            continue
    return found


def _unreachable(addresses: Sequence[tuple[str, int]]) -> list[str]:
    """The brokers among ``addresses`` that do not accept a connection."""
    down = []
    for host, port in addresses:
        try:
            socket.create_connection((host, port), _PROBE_SECONDS).close()
        except OSError as error:
            why = error.strerror or type(error).__name__
            down.append("%s:%d (%s)" % (host, port, why))
    return down


class Conductors:
    """The API's way to the conductors; ``client`` is a ConductorAPI.

    Each call waits at most ``call_timeout`` seconds (the RPC timeout
    plus a margin): oslo.messaging itself keeps reconnecting for ever to
    a broker that is down, and an operator's command must not wait for
    ever. When the deadline passes, the answer says what was waited for:
    which conductor, which call, and whether the broker accepts
    connections (:class:`ConductorUnreachable`, a 503)."""

    def __init__(self, db: db_api.Connection,
                 client_factory: Callable[[], rpcapi.ConductorAPI],
                 heartbeat_timeout: float, *,
                 call_timeout: float | None = None,
                 brokers: Sequence[tuple[str, int]] = ()) -> None:
        self.db = db
        self._client_factory = client_factory
        self._client: rpcapi.ConductorAPI | None = None
        self.heartbeat_timeout = heartbeat_timeout
        self.call_timeout = call_timeout
        self.brokers = list(brokers)
        self._callers = threading.BoundedSemaphore(_CALLERS)

    @property
    def client(self) -> rpcapi.ConductorAPI:
        # Built on first use: reads never need the bus.
        if self._client is None:
            self._client = self._client_factory()
        return self._client

    def ring(self) -> HashRing:
        return HashRing(self.db.list_alive_conductors(self.heartbeat_timeout))

    def owner(self, host: str) -> str | None:
        """The live conductor that owns ``host``, or None if none lives."""
        ring = self.ring()
        return ring.owner(host) if len(ring) else None

    def call(self, method: str, context: dict, host: str, **kwargs: Any
             ) -> Any:
        """Call ``method`` on the owner of ``host``.

        :raises TemporaryFailure: no conductor is alive.
        """
        owner = self.owner(host)
        if owner is None:
            raise exception.TemporaryFailure(
                reason="no conductor is alive to reach host %s; start "
                       "trusted-pools-conductor" % host)
        try:
            return self._bounded(method, context, host, owner, kwargs)
        except exception.HostNotOwned as error:
            other = error.kwargs.get("owner")
            if not isinstance(other, str) or other == owner:
                raise
            LOG.info("Conductor %s says %s owns host %s; asking it",
                     owner, other, host)
            return self._bounded(method, context, host, other, kwargs)

    def _bounded(self, method: str, context: Any, host: str,
                 conductor: str, kwargs: dict[str, Any]) -> Any:
        function = getattr(self.client, method)
        if self.call_timeout is None:
            return function(context, host, conductor=conductor, **kwargs)
        deadline = time.monotonic() + self.call_timeout
        # A daemon thread per call, at most _CALLERS at once: one stuck in
        # oslo.messaging's reconnect loop must not keep the process alive.
        if not self._callers.acquire(timeout=self.call_timeout):
            raise self._no_answer(method, host, conductor)
        outcome: dict[str, Any] = {}
        done = threading.Event()

        def run() -> None:
            try:
                outcome["value"] = function(context, host,
                                            conductor=conductor, **kwargs)
            except BaseException as error:  # noqa: BLE001 - re-raised below
                outcome["error"] = error
            finally:
                self._callers.release()
                done.set()

        threading.Thread(target=run, daemon=True,
                         name="trusted-pools-api-rpc").start()
        if not done.wait(max(0.0, deadline - time.monotonic())):
            raise self._no_answer(method, host, conductor)
        error = outcome.get("error")
        if isinstance(error, messaging.MessagingTimeout):
            raise self._no_answer(method, host, conductor) from None
        if error is not None:
            raise error
        return outcome.get("value")

    def _no_answer(self, method: str, host: str, conductor: str
                   ) -> exception.ConductorUnreachable:
        down = _unreachable(self.brokers)
        if down:
            reason = ("the message broker does not accept connections at "
                      "%s; check transport_url and that RabbitMQ runs"
                      % ", ".join(down))
        else:
            reason = ("no answer through the message broker: is "
                      "trusted-pools-conductor running on %s, and not "
                      "stuck? (its log names the request id)" % conductor)
        LOG.error("Conductor call %s for host %s: %s", method, host, reason)
        return exception.ConductorUnreachable(
            conductor=conductor, method=method, host=host,
            seconds=int(self.call_timeout or 0), reason=reason)
