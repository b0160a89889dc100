"""The agent service: the host's RPC endpoints over its TPM.

An oslo.service service (threading backend). It answers epochs and
challenges; with ``[vtpm] enabled`` it also runs this host's vTPMs: it
loads the driver named by ``[vtpm] driver`` (the driver adopts the running
vTPMs and reaps orphan swtpm processes as it loads), and its job table has
one job, ``vtpm_check`` every ``[vtpm] check_interval`` seconds, which logs
each failed vTPM at ERROR (and forgets vTPM migrations that ended more than
a week ago from the migration journal).
"""

from __future__ import annotations

import logging

import oslo_messaging as messaging
from oslo_config import cfg

from trusted_pools.agent import attester as attester_mod
from trusted_pools.agent import manager as agent_manager
from trusted_pools.agent import migration as migration_mod
from trusted_pools.agent import rpcapi
from trusted_pools.protocol import agent_requests
from trusted_pools import conf  # noqa: F401 - registers the options used
from trusted_pools.common import rpc
from trusted_pools.common import service as service_mod
from trusted_pools.conductor import rpcapi as conductor_rpcapi
from trusted_pools.relay import rpcapi as relay_rpcapi
from trusted_pools.conf import vtpm as vtpm_conf
from trusted_pools.vtpm import binding as vtpm_binding
from trusted_pools.vtpm import driver as vtpm_driver

LOG = logging.getLogger(__name__)


def _request_verifier(conf: cfg.ConfigOpts, host: str
                      ) -> agent_requests.RequestVerifier:
    """Checks conductors' requests against the pinned keys; with none
    pinned the agent does not start (it would answer no one, or anyone)."""
    keys = agent_requests.load_pinned_keys(conf.agent.conductor_keys_file)
    LOG.info("Agent for host %s trusts %d conductor key(s): %s", host,
             len(keys), ", ".join(sorted(keys)))
    return agent_requests.RequestVerifier(
        keys, host, leeway=conf.agent.request_clock_leeway)


class AgentService(service_mod.ServiceBase):

    def __init__(self, conf: cfg.ConfigOpts, host: str | None = None,
                 tcti: str | None = None,
                 event_log_path: str | None = None,
                 ima_log_path: str | None = None,
                 ima_log_format: str | None = None,
                 transport_url: str | None = None) -> None:
        super().__init__(conf)
        self.host = host or conf.agent.host
        # Before the TPM is opened: without pinned keys, do not start.
        requests = _request_verifier(conf, self.host)
        tcti = tcti or conf.tpm.tcti
        self.attester = attester_mod.Attester(
            self.host, attester_mod.default_open_device(tcti),
            ak_handle=attester_mod.parse_handle(conf.tpm.ak_handle),
            binding_key_handle=attester_mod.parse_handle(
                conf.tpm.binding_key_handle),
            ak_alg=conf.tpm.ak_algorithm, ek_kind=conf.tpm.ek_kind,
            event_log_path=(event_log_path if event_log_path is not None
                            else conf.agent.event_log_path),
            ima_log_path=(ima_log_path if ima_log_path is not None
                          else conf.agent.ima_log_path),
            ima_log_format=ima_log_format or conf.agent.ima_log_format,
            ima_template_hash=conf.agent.ima_template_hash,
            pcr_read_retries=conf.agent.pcr_read_retries)
        # The agent's only call to a conductor: push evidence to the
        # evidence topic (the management topic is not on its bus at all).
        # ``transport_url``: this agent's own bus user, when the process
        # is not an agent alone (tests run several agents in one process).
        self._transport = (rpc.get_transport(conf, transport_url)
                           if transport_url else None)
        self._conductors = conductor_rpcapi.EvidenceAPI(
            transport=self._transport)
        # With a relay (issue 15): pushes go to the rack's relay, which
        # forwards them in batches; it can delay or drop them, not change
        # them (the AK signature is the TPM's).
        send = self._conductors.submit_evidence
        self._relay_transport = None
        if conf.agent.relay_topic:
            if conf.agent.relay_transport_url:
                self._relay_transport = rpc.get_transport(
                    conf, conf.agent.relay_transport_url)
            send = relay_rpcapi.RelayAPI(
                conf.agent.relay_topic,
                transport=self._relay_transport or self._transport
            ).submit_evidence
        self._server: messaging.MessageHandlingServer | None = None
        self.vtpm: vtpm_driver.VTPMDriver | None = None
        migrations = None
        if conf.vtpm.enabled:
            ca = host_ca(self.attester)
            self.vtpm = load_vtpm_driver(conf, self.attester, ca)
            # The same CA certifies the vTPMs that migrate in (on commit).
            migrations = migration_mod.MigrationAgent(
                self.host, self.attester, self.vtpm,
                vtpm_conf.migration_journal_dir(conf), ca=ca)
        self.manager = agent_manager.AgentManager(
            self.attester, send, requests, vtpm=self.vtpm,
            migrations=migrations)

    def periodic_jobs(self) -> list[service_mod.PeriodicJob]:
        if self.vtpm is None:
            return []
        return [service_mod.PeriodicJob("vtpm_check", self.check_vtpms,
                                        "vtpm.check_interval")]

    def check_vtpms(self) -> list[vtpm_driver.VTPMInfo]:
        """The periodic vTPM check: every failed vTPM is logged at ERROR
        (once per round, until it is started again or destroyed)."""
        assert self.vtpm is not None
        if self.manager.migrations is not None:
            # Ended migrations are kept a week for late repeats, then
            # forgotten (the epoch floors stay).
            self.manager.migrations.prune()
        failed = self.vtpm.check()
        for info in failed:
            LOG.error("vTPM of instance %s on host %s is failed: %s",
                      info.instance_uuid, self.host, info.reason)
        return failed

    def _start(self) -> None:
        self._server = rpc.get_server(
            messaging.Target(topic=rpcapi.TOPIC, server=self.host),
            [self.manager], bus=rpc.AGENT_BUS, transport=self._transport)
        self._server.start()
        LOG.info("Agent for host %s started", self.host)

    def _stop(self) -> None:
        # The RPC server's stop lets the answers in flight finish, beside
        # the running jobs (each stop polls: one after the other, their
        # polls add up); only then is the TPM closed under them.
        stops = [self._stop_jobs]
        if self._server is not None:
            stops.append(service_mod.stop_rpc_server(self._server))
        service_mod.stop_side_by_side(*stops)
        self._server = None
        if self.manager.migrations is not None:
            # Its background key generation uses the TPM connection.
            self.manager.migrations.close()
        self.attester.close()
        for transport in (self._transport, self._relay_transport):
            if transport is not None:
                transport.cleanup()
        self._transport = self._relay_transport = None
        LOG.info("Agent for host %s stopped", self.host)


def host_ca(attester: attester_mod.Attester) -> vtpm_binding.HostCA:
    """The host's vTPM CA on the attester's TPM connection and lock."""
    return vtpm_binding.HostCA(
        attester.host, attester.held_device,
        ak_handle=attester.ak_handle, lock=attester.lock)


def load_vtpm_driver(conf: cfg.ConfigOpts, attester: attester_mod.Attester,
                     ca: vtpm_binding.HostCA | None = None
                     ) -> vtpm_driver.VTPMDriver:
    """The driver of ``[vtpm] driver`` on the attester's TPM connection.

    The driver reaches the host TPM (its binding key) through the
    attester, and each new vTPM gets an AK certified by the host's vTPM CA
    (:class:`~trusted_pools.vtpm.binding.Provisioner`) whose key sits in
    the same TPM, under the same lock: a TPM without a resource manager
    serves one connection at a time and has three transient slots. A load
    failure (:class:`~trusted_pools.exception.VTPMDriverLoadFailed`) names
    the driver and stops the agent.
    """
    ca = ca if ca is not None else host_ca(attester)
    driver = vtpm_driver.load_driver(
        conf.vtpm.driver, conf=conf, host_runner=attester.run_on_device,
        provisioner=vtpm_binding.Provisioner(ca))
    report = getattr(driver, "last_recovery", None)
    if report is not None:
        LOG.info("vTPM driver %s on host %s: adopted %d running vTPM(s)%s, "
                 "%d found dead%s, reaped %d orphan swtpm process(es)%s",
                 driver.name, attester.host, len(report.adopted),
                 _listed(report.adopted), len(report.failed),
                 _listed(report.failed), len(report.reaped),
                 _listed(report.reaped))
        for uuid in report.failed:
            LOG.error("vTPM of instance %s on host %s died while the agent "
                      "was away", uuid, attester.host)
    else:
        LOG.info("vTPM driver %s on host %s loaded", driver.name,
                 attester.host)
    return driver


def _listed(items: list) -> str:
    return " (%s)" % ", ".join(str(i) for i in items) if items else ""
