"""``trusted-pools-placement-sync``: the trait keeper and the response to
distrust, as one small service.

It is a verdict consumer like nova-scheduler's filter, so it reuses the
filter's pieces and options as they are: the ``[trusted_pools_scheduler]``
group (conductor public keys, transport URL, exchange, max_age, grace,
refresh_interval), the notification endpoint and bulk refresh of
``scheduler.listener``, and the verdict cache (here the observed subclass
of ``placement.sync``). Its own options are ``[placement]`` and
``[distrust]`` (``trusted_pools.conf.placement``).

Start order: the listener's first bulk refresh fills the cache, then the
keeper's full resync runs against it (so a restart does not strip the
traits of every host for lack of verdicts), then notifications flow.

An oslo.service service (threading backend). Its periodic jobs (bulk
refresh of verdicts, trait sweep, full resync) are the job table in
:meth:`PlacementSyncService.periodic_jobs`; the keeper's own thread only
consumes the queue of hosts whose verdict changed, and the distrust
actions run in the responder's worker, never on a listener thread.
"""

from __future__ import annotations

import logging
from typing import Any

import oslo_messaging as messaging
from oslo_config import cfg

from trusted_pools.common import rpc
from trusted_pools.common import service as service_mod
from trusted_pools import exception
from trusted_pools.nova.remediation import distrust
from trusted_pools.nova.remediation import report
from trusted_pools.conf import placement as placement_conf
from trusted_pools.nova.remediation.placement import PlacementClient
from trusted_pools.nova.remediation.traits import (ObservedVerdictCache,
                                                   TraitKeeper)
from trusted_pools.nova.scheduler import listener as listener_mod
from trusted_pools.nova.scheduler import opts as scheduler_conf

__all__ = ["PlacementSyncService", "PUBLISHER_ID"]

LOG = logging.getLogger(__name__)

PUBLISHER_ID = "trusted-pools-placement-sync"


class PlacementSyncService(service_mod.ServiceBase):
    def __init__(self, conf: cfg.ConfigOpts) -> None:
        super().__init__(conf)
        group = conf[scheduler_conf.group.name]
        keys = listener_mod.load_public_keys(
            list(group.conductor_public_keys))
        self.cache = ObservedVerdictCache(
            keys, max_age=group.max_age, grace=group.grace,
            leeway=group.clock_leeway)
        url = group.transport_url
        self._transports: list[Any] = [
            messaging.get_notification_transport(
                conf, url=url, allowed_remote_exmods=rpc.ALLOWED_EXMODS),
            messaging.get_rpc_transport(
                conf, url=url, allowed_remote_exmods=rpc.ALLOWED_EXMODS)]
        source = listener_mod.verdicts_client(
            self._transports[1], group.control_exchange, group.rpc_timeout)
        self.listener = listener_mod.TrustListener(
            self.cache, source, notification_transport=self._transports[0],
            exchange=group.control_exchange,
            pool="trusted-pools-placement-sync",
            refresh_interval=group.refresh_interval,
            key_source=listener_mod.api_key_source(conf))
        section = conf[placement_conf.group.name]
        self.keeper = TraitKeeper(
            self.cache, PlacementClient.from_conf(conf),
            sweep_interval=section.sweep_interval,
            resync_interval=section.resync_interval)
        self.cache.add_observer(self.keeper.observe)
        self.responder = self._responder(conf)

    def _responder(self, conf: cfg.ConfigOpts) -> distrust.DistrustResponder:
        section = conf[placement_conf.distrust_group.name]
        names = list(section.actions)
        kwargs: dict[str, Any] = {"max_migrations": section.max_migrations}
        kwargs["notifier"] = messaging.Notifier(
            self._transports[0], publisher_id=PUBLISHER_ID,
            driver="messagingv2", topics=rpc.NOTIFICATION_TOPICS)
        if {"disable_compute", "migrate_trusted_instances"} & set(names):
            kwargs["compute"] = distrust.ComputeAPI.from_conf(conf)
        responder = distrust.DistrustResponder(
            self.cache, distrust.load_actions(names, **kwargs),
            background=True, reporter=self._reporter(conf))
        self.cache.add_observer(responder.observe)
        LOG.info("Response to distrust: %s", ", ".join(names) or "none")
        return responder

    @staticmethod
    def _reporter(conf: cfg.ConfigOpts) -> report.APIReporter | None:
        """The API reporter of distrust actions, or None (off, or no
        usable credentials: said once, the actions still run)."""
        if not conf[placement_conf.distrust_group.name].report_actions:
            return None
        group = placement_conf.distrust_group.name
        try:
            return report.APIReporter.from_conf(conf, group)
        except exception.ConfigInvalid as error:
            LOG.warning("Distrust actions will not be reported to "
                        "trusted-pools-api (the dashboard will not show "
                        "them): %s", error)
            return None

    def periodic_jobs(self) -> list[service_mod.PeriodicJob]:
        """The job table: (name, callable, spacing option)."""
        placement = placement_conf.group.name
        jobs = [
            service_mod.PeriodicJob(
                "verdict-refresh", self.listener.refresh_round,
                lambda _conf: self.listener.retry_spacing),
            service_mod.PeriodicJob(
                "trait-sweep", self.keeper.sweep_guarded,
                "%s.sweep_interval" % placement),
        ]
        if self.conf[placement].resync_interval:
            jobs.append(service_mod.PeriodicJob(
                "trait-resync", self.keeper.resync_guarded,
                "%s.resync_interval" % placement))
        return jobs

    def _start(self) -> None:
        self.listener.start(initial_refresh=True, refresh_thread=False)
        self.keeper.start(initial_resync=True, periodic=False)

    def _stop(self) -> None:
        # Stop hearing verdicts, finish the rounds and the queued hosts,
        # then the distrust actions under way.
        self.listener.stop()
        self._stop_jobs()
        self.keeper.stop()
        self.responder.stop()
        for transport in self._transports:
            transport.cleanup()

