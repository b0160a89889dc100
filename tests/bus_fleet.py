"""A simulated fleet and a real conductor over the real RabbitMQ broker.

For the evidence path's attack and relay tests: many hosts are needed and
a swtpm per host does not fit, so the hosts are the benchmark's simulated
ones (:mod:`bench.sim_agents`: software ECDSA P-256 AKs making TPM-shaped
quotes over the real GCE event log and a growing ima-ng list), enrolled
directly in a SQLite database migrated to head. Everything else is the
product's: a :class:`ConductorManager` whose evidence endpoint is served
over RabbitMQ, its verification worker, its cycle (enrollments, missing
hosts, epoch) on a short real-time interval, the agents' epoch fanout,
direct challenges (each simulated host answers ``get_evidence`` on its own
agent server) and the pushes, cast by the fleet to the conductor or, with
``via``, to whatever the caller gives (a relay).
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

import oslo_messaging as messaging

from bench import sim_agents
from bench.bench_conductor import _enroll, _policies
from trusted_pools.agent import rpcapi as agent_rpcapi
from trusted_pools.common import rpc
from trusted_pools.conductor import endpoints
from trusted_pools.conductor import manager as conductor_manager
from trusted_pools.conductor import rpcapi as conductor_rpcapi
from trusted_pools.db import api as db_api
from trusted_pools.db import migration
from trusted_pools.protocol import agent_requests
from trusted_pools.protocol import keystore

SEED = 5
CONDUCTOR = "conductor-bus"


class BusFleet:
    """``hosts`` simulated hosts and one conductor, all on the bus.

    ``send(context, conductor, wire)`` is how a host pushes (default: the
    evidence API's cast to the conductor, as an agent without a relay).
    ``pushed`` keeps every genuine push a host made (what a compromised
    host can copy of its own)."""

    def __init__(self, tmp_path: Any, hosts: int, *, interval: int = 2,
                 unknown_after_missed: int = 2,
                 send: Callable[[dict, str, dict], None] | None = None,
                 **manager_kw: Any) -> None:
        self.db = db_api.Connection(db_api.make_context_manager(
            "sqlite:///%s" % (tmp_path / "fleet.sqlite")))
        migration.upgrade(engine=self.db.get_engine())
        self.image = sim_agents.Image(ima_per_round=3, rounds=400)
        _enroll(self.db, hosts, SEED)
        boot, runtime = _policies(self.image)
        self.db.create_policy_version("fleet-boot", "measured_boot", boot,
                                      "test")
        self.db.create_policy_version("fleet-ima", "ima", runtime, "test")
        self.db.assign_policy("default", "fleet-boot")
        self.db.assign_policy("default", "fleet-ima")
        key = keystore.load_or_create_signing_key(
            str(tmp_path / "signing-key.pem"))
        self.interval = interval
        self.manager = conductor_manager.ConductorManager(
            CONDUCTOR, self.db, key, agent_rpcapi.AgentAPI(
                agent_requests.RequestSigner(key, CONDUCTOR), timeout=10),
            None, b"", interval=interval,
            unknown_after_missed=unknown_after_missed, **manager_kw)
        self.manager.register()
        self.manager.refresh_ring()
        self.names = [sim_agents.HOST_FORMAT % i for i in range(hosts)]
        self.pushed: list[dict] = []
        self._send = send or conductor_rpcapi.EvidenceAPI().submit_evidence
        self.fleet = sim_agents.Fleet(hosts, SEED, self.image, self._push)
        self.fleet.target = messaging.Target(
            version=agent_rpcapi.RPC_API_VERSION)
        self._servers: list[messaging.MessageHandlingServer] = []
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self.cycles = 0

    def _push(self, context: dict, conductor: str, wire: dict) -> None:
        self.pushed.append(wire)
        self._send(context, conductor, wire)

    # --- life cycle -----------------------------------------------------

    def start(self) -> None:
        self._servers = [
            rpc.get_server(messaging.Target(
                topic=conductor_rpcapi.EVIDENCE_TOPIC, server=CONDUCTOR),
                [endpoints.EvidenceEndpoint(self.manager)],
                bus=rpc.AGENT_BUS),
            rpc.get_server(messaging.Target(
                topic=agent_rpcapi.TOPIC, server="sim-fleet"),
                [self.fleet], bus=rpc.AGENT_BUS)]
        for host in self.fleet.hosts:
            endpoint = sim_agents.HostEndpoint(self.fleet, host)
            endpoint.target = messaging.Target(
                version=agent_rpcapi.RPC_API_VERSION)
            self._servers.append(rpc.get_server(messaging.Target(
                topic=agent_rpcapi.TOPIC, server=host.name), [endpoint],
                bus=rpc.AGENT_BUS))
        for server in self._servers:
            server.start()
        time.sleep(0.3)  # the consumers are bound before the first epoch
        for work in (self._work, self._cycle):
            thread = threading.Thread(target=work, daemon=True)
            thread.start()
            self._threads.append(thread)

    def _work(self) -> None:
        while not self._stop.is_set():
            self.manager.process_evidence(wait=0.05)

    def _cycle(self) -> None:
        """The service's run_cycle, every ``interval`` seconds."""
        while not self._stop.is_set():
            self.manager.refresh_ring()
            self.manager.refresh_enrollments()
            self.manager.mark_missing()
            self.manager.start_epoch()
            self.cycles += 1
            self._stop.wait(self.interval)

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)
        for server in self._servers:
            server.stop()
        for server in self._servers:
            server.wait()
        self.db.dispose()

    # --- reading the outcome -----------------------------------------------

    def latest(self) -> dict[str, Any]:
        names = {h.id: h.hostname for h in self.db.list_hosts()}
        return {names[v.host_id]: v for v in self.db.latest_verdicts()}

    def history(self, name: str, since: float) -> list[Any]:
        host_id = self.db.get_host_by_name(name).id
        return [v for v in self.db.verdict_history(host_id, limit=1000)
                if v.issued_at.timestamp() >= int(since)]

    def wait_for(self, predicate: Callable[[dict[str, Any]], bool],
                 timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            latest = self.latest()
            if predicate(latest):
                return latest
            if time.monotonic() > deadline:
                raise AssertionError("timed out; latest verdicts: %s" % {
                    n: v.status for n, v in sorted(latest.items())})
            time.sleep(0.1)

    def all_trusted_after(self, since: float, names: list[str] | None = None
                          ) -> Callable[[dict[str, Any]], bool]:
        names = self.names if names is None else names
        since = int(since)  # verdicts are issued in whole seconds

        def check(latest: dict[str, Any]) -> bool:
            return all(n in latest and latest[n].status == "trusted"
                       and latest[n].issued_at.timestamp() >= since
                       for n in names)
        return check
