"""The conductor service: RPC server, attestation cycle and worker.

An oslo.service service (threading backend); its periodic work is the job
table in :meth:`ConductorService.periodic_jobs`. To add a job, append a
``PeriodicJob(name, callable, "group.option")`` row there (and the spacing
option, in seconds, to ``trusted_pools/conf/``); the callable runs on the
service's thread pool, never on an RPC thread, and a stop waits for it.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import oslo_messaging as messaging
from oslo_config import cfg

from trusted_pools import exception
from trusted_pools.agent import rpcapi as agent_rpcapi
from trusted_pools.protocol import agent_requests
from trusted_pools.protocol import keystore
from trusted_pools.protocol.evidence import Limits
from trusted_pools import conf  # noqa: F401 - registers the options used
from trusted_pools.common import rpc
from trusted_pools.common import service as service_mod
from trusted_pools.common.service import PeriodicJob
from trusted_pools.conductor import endpoints
from trusted_pools.conductor import keys as key_service
from trusted_pools.conductor import manager as conductor_manager
from trusted_pools.conductor import metrics as metrics_mod
from trusted_pools.conductor import rpcapi
from trusted_pools.db import api as db_api

LOG = logging.getLogger(__name__)


def _read_ca_bundle(path: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise exception.ConfigInvalid(
            reason="[conductor] ek_ca_bundle %s cannot be read (%s); put "
                   "the TPM manufacturers' CA certificates there"
                   % (path, exc.strerror)) from exc


class CABundleFile:
    """``[conductor] ek_ca_bundle``, read again when the file changed.

    An operator who adds a missing intermediate CA expects the next
    enrollment to use it, not the next restart. A file that became
    unreadable keeps the last good bundle, with a warning.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._seen = self._stat()
        self._bundle = _read_ca_bundle(path)

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def __call__(self) -> bytes:
        seen = self._stat()
        if seen is not None and seen != self._seen:
            try:
                self._bundle = _read_ca_bundle(self.path)
            except exception.ConfigInvalid as error:
                LOG.warning("Keeping the EK CA bundle read before: %s",
                            error)
                return self._bundle
            self._seen = seen
            LOG.info("EK CA bundle %s changed: read again", self.path)
        return self._bundle


class ConductorService(service_mod.ServiceBase):
    """One conductor process (or one in-process conductor in tests)."""

    def __init__(self, conf: cfg.ConfigOpts,
                 db: db_api.Connection | None = None,
                 host: str | None = None) -> None:
        super().__init__(conf)
        group = conf.conductor
        self.host = host or group.host
        self.db = db or db_api.get_instance()
        key = keystore.load_or_create_signing_key(group.signing_key_path)
        # Agents answer only requests signed with this key (they pin its
        # public half), so a compute host on the bus cannot pose as us.
        agents = agent_rpcapi.AgentAPI(
            agent_requests.RequestSigner(
                key, self.host, lifetime=group.agent_request_lifetime),
            timeout=group.agent_rpc_timeout,
            version_cap=conf.rpc_pins.agent)
        notifier = rpc.get_notifier("trusted_pools.conductor.%s" % self.host)
        self.metrics = metrics_mod.ConductorMetrics()
        self.metrics.registry.register(metrics_mod.PoolCollector(self.db))
        self.metrics_server: metrics_mod.MetricsServer | None = None
        if group.metrics_port:
            self.metrics_server = metrics_mod.MetricsServer(
                self.metrics.registry, group.metrics_host, group.metrics_port)
        keys = None
        if conf.key_service.enabled:
            keys = key_service.KeyService(
                self.db, key_service.load_or_create_kek(
                    conf.key_service.kek_path), notifier,
                conductor=self.host, metrics=self.metrics)
        self.manager = conductor_manager.ConductorManager(
            self.host, self.db, key, agents,
            notifier,
            CABundleFile(group.ek_ca_bundle),
            interval=group.attestation_interval,
            unknown_after_missed=group.unknown_after_missed,
            heartbeat_timeout=group.heartbeat_timeout,
            banks=tuple(conf.attestation.pcr_banks),
            batch_size=group.evidence_batch_size,
            max_queued_evidence=group.evidence_queue_limit,
            max_pending_per_host=group.evidence_pending_per_host,
            epoch_spread=group.epoch_spread,
            ek_only_anchors=tuple(group.ek_only_anchors),
            limits=Limits(
                max_event_log=conf.attestation.max_event_log_bytes,
                max_ima=conf.attestation.max_ima_log_bytes),
            keys=keys, metrics=self.metrics,
            migration_step_timeout=conf.vtpm_migration.step_timeout)
        self._servers: list[messaging.MessageHandlingServer] = []
        self._unregister = True

    def periodic_jobs(self) -> list[PeriodicJob]:
        """The conductor's job table: (name, callable, spacing option)."""
        return [
            PeriodicJob("heartbeat", self._heartbeat,
                        "conductor.heartbeat_interval"),
            # Ring, policies, missing hosts, then the epoch: one job, as
            # the order matters (mark_missing judges the epoch that ends).
            PeriodicJob("attestation-cycle", self.run_cycle,
                        "conductor.attestation_interval",
                        run_immediately=True),
            # A queue consumer: each round waits up to the spacing for
            # evidence, so it runs again as soon as it returns.
            PeriodicJob("evidence-worker", self._work,
                        "conductor.evidence_wait", run_immediately=True),
            # vTPM migrations no worker drives (this conductor restarted,
            # another one died): rolled back before the commit, finished
            # after it.
            PeriodicJob("vtpm-migration-resume", self.manager.migrations.
                        resume, "vtpm_migration.resume_interval",
                        run_immediately=True),
        ]

    def _start(self) -> None:
        self.manager.register()
        self.manager.refresh_ring()
        assert self.jobs is not None
        # Direct challenges and management operations (enroll, attest,
        # capture: the agent calls) run on the job pool: off the RPC
        # threads, and a stop waits for the ones in flight.
        self.manager.spawn = self.jobs.spawn
        if self.metrics_server is not None:
            # First: a port in use stops the start before RPC is served.
            self.metrics_server.start()
        self._servers = self.rpc_servers()
        for server in self._servers:
            server.start()
        LOG.info("Conductor %s started: jobs every %s s", self.host,
                 self.jobs.spacings)

    def rpc_servers(self) -> list[messaging.MessageHandlingServer]:
        """One RPC server per caller (conductor.endpoints): agents reach
        only the evidence target, on the agent bus; management and verdict
        reads live on the management bus, which compute hosts' bus
        credentials do not open."""
        return [
            rpc.get_server(
                messaging.Target(topic=rpcapi.EVIDENCE_TOPIC,
                                 server=self.host),
                [endpoints.EvidenceEndpoint(self.manager)],
                bus=rpc.AGENT_BUS),
            rpc.get_server(
                messaging.Target(topic=rpcapi.TOPIC, server=self.host),
                [endpoints.ManagementEndpoint(self.manager)],
                bus=rpc.MANAGEMENT_BUS),
            rpc.get_server(
                messaging.Target(topic=rpcapi.VERDICTS_TOPIC,
                                 server=self.host),
                [endpoints.VerdictsEndpoint(self.manager)],
                bus=rpc.MANAGEMENT_BUS),
        ]

    def _heartbeat(self) -> None:
        self.manager.heartbeat()
        self.manager.refresh_ring()
        # Also here, not only each cycle: heartbeats are more frequent, so
        # a reset on another conductor stops this one accepting the old
        # AK's quotes sooner (one narrow query of the hosts table).
        self.manager.refresh_enrollments()

    def run_cycle(self) -> Any:
        self.manager.refresh_ring()
        self.manager.refresh_policies()
        # Before the epoch starts: no evidence of the new epoch is judged
        # with an AK whose registration was reset or replaced meanwhile.
        self.manager.refresh_enrollments()
        self.manager.mark_missing()
        return self.manager.start_epoch()

    def _work(self) -> None:
        self.manager.process_evidence(wait=self.conf.conductor.evidence_wait)

    def stop_without_unregistering(self) -> None:
        """Stop as a crashed process would: heartbeats just end (tests)."""
        self._unregister = False
        self.stop()

    def _stop(self) -> None:
        # The servers stop taking requests while the running rounds (an
        # evidence batch being verified, challenges in flight) finish, all
        # side by side (each server's stop and wait together: one after
        # another, their polls add up). A request still in flight that
        # hands work to the stopped pool gets TemporaryFailure. A stop that
        # fails is raised once the others are done (the metrics port is
        # freed still; the row is left to expire, as after a crash).
        try:
            service_mod.stop_side_by_side(
                self._stop_jobs,
                *[service_mod.stop_rpc_server(s) for s in self._servers])
        finally:
            self._servers = []
            if self.metrics_server is not None:
                self.metrics_server.stop()
            # No worker announces a migration step any more: the sender
            # thread publishes what is queued and ends.
            if not self.manager.migrations.close():
                LOG.warning("Conductor %s: some vTPM migration "
                            "notifications were not published before "
                            "the stop", self.host)
        if not self._unregister:
            return
        try:
            self.db.unregister_conductor(self.host)
        except exception.TrustedPoolsError as error:
            LOG.warning("Could not unregister conductor %s: %s", self.host,
                        error)
        LOG.info("Conductor %s stopped", self.host)
