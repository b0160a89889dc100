"""The relay service: an RPC server on ``[relay] topic`` of the agent bus
and one periodic job, ``relay-flush``, every half ``[relay] max_delay``,
that sends the batches that waited long enough (a stop sends the rest)."""

from __future__ import annotations

import logging

import oslo_messaging as messaging
from oslo_config import cfg

from trusted_pools import conf  # noqa: F401 - registers the options used
from trusted_pools.common import rpc
from trusted_pools.common import service as service_mod
from trusted_pools.conductor import rpcapi as conductor_rpcapi
from trusted_pools.relay import manager as relay_manager

LOG = logging.getLogger(__name__)


class RelayService(service_mod.ServiceBase):

    def __init__(self, conf: cfg.ConfigOpts,
                 transport: messaging.Transport | None = None) -> None:
        super().__init__(conf)
        group = conf.relay
        self.host = group.host
        self.topic = group.topic
        self._transport = transport
        # The relay's only call to a conductor: the evidence API's batch
        # cast, on the conductors' agent bus (as an agent's own push),
        # which may be another broker than its agents' (a rack's).
        self._out_transport = (
            rpc.get_transport(conf, group.conductor_transport_url)
            if group.conductor_transport_url else None)
        evidence = conductor_rpcapi.EvidenceAPI(
            transport=self._out_transport or transport)
        self.manager = relay_manager.RelayManager(
            evidence.submit_evidence_batch, max_batch=group.max_batch,
            max_delay=group.max_delay, max_conductors=group.max_conductors,
            max_batch_bytes=group.max_batch_bytes)
        self._server: messaging.MessageHandlingServer | None = None

    def periodic_jobs(self) -> list[service_mod.PeriodicJob]:
        return [service_mod.PeriodicJob(
            "relay-flush", self.manager.flush_due,
            lambda conf: conf.relay.max_delay / 2.0)]

    def _start(self) -> None:
        self._server = rpc.get_server(
            messaging.Target(topic=self.topic, server=self.host),
            [self.manager], bus=rpc.AGENT_BUS, transport=self._transport)
        self._server.start()
        LOG.info("Relay %s started on topic %s (batches of up to %d, "
                 "%.2f s)", self.host, self.topic, self.manager.max_batch,
                 self.manager.max_delay)

    def _stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server.wait()
            self._server = None
        self._stop_jobs()
        self.manager.flush_all()
        if self._out_transport is not None:
            self._out_transport.cleanup()
            self._out_transport = None
        LOG.info("Relay %s stopped: %s", self.host, self.manager.counts)
