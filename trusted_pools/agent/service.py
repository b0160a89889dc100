"""The agent service: the host's RPC endpoints over its TPM.

An oslo.service service (threading backend); the agent has no periodic
job today (it answers epochs and challenges), so its job table is empty.
"""

from __future__ import annotations

import logging

import oslo_messaging as messaging
from oslo_config import cfg

from trusted_pools.agent import attester as attester_mod
from trusted_pools.agent import manager as agent_manager
from trusted_pools.agent import rpcapi
from trusted_pools.protocol import agent_requests
from trusted_pools import conf  # noqa: F401 - registers the options used
from trusted_pools.common import rpc
from trusted_pools.common import service as service_mod
from trusted_pools.conductor import rpcapi as conductor_rpcapi

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
        self.manager = agent_manager.AgentManager(
            self.attester, self._conductors.submit_evidence,
            requests)
        self._server: messaging.MessageHandlingServer | None = None

    def _start(self) -> None:
        self._server = rpc.get_server(
            messaging.Target(topic=rpcapi.TOPIC, server=self.host),
            [self.manager], bus=rpc.AGENT_BUS, transport=self._transport)
        self._server.start()
        LOG.info("Agent for host %s started", self.host)

    def _stop(self) -> None:
        # The RPC server's stop lets the answers in flight finish; only
        # then is the TPM closed under them.
        if self._server is not None:
            self._server.stop()
            self._server.wait()
            self._server = None
        self._stop_jobs()
        self.attester.close()
        if self._transport is not None:
            self._transport.cleanup()
            self._transport = None
        LOG.info("Agent for host %s stopped", self.host)
