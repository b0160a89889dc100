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
from typing import Any, Callable

from trusted_pools import exception
from trusted_pools.protocol.hash_ring import HashRing
from trusted_pools.conductor import rpcapi
from trusted_pools.db import api as db_api

LOG = logging.getLogger(__name__)


class Conductors:
    """The API's way to the conductors; ``client`` is a ConductorAPI."""

    def __init__(self, db: db_api.Connection,
                 client_factory: Callable[[], rpcapi.ConductorAPI],
                 heartbeat_timeout: float) -> None:
        self.db = db
        self._client_factory = client_factory
        self._client: rpcapi.ConductorAPI | None = None
        self.heartbeat_timeout = heartbeat_timeout

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
        function = getattr(self.client, method)
        try:
            return function(context, host, conductor=owner, **kwargs)
        except exception.HostNotOwned as error:
            other = error.kwargs.get("owner")
            if not isinstance(other, str) or other == owner:
                raise
            LOG.info("Conductor %s says %s owns host %s; asking it",
                     owner, other, host)
            return function(context, host, conductor=other, **kwargs)
