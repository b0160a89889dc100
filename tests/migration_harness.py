"""A trusted pool whose agents run vTPMs and take part in migrations
(issue 12): real swtpm host TPMs booted from real event logs, real agents
and a real conductor on the real RabbitMQ, SQLite, a real swtpm vTPM
driver per host (its own state and journal directories), the vTPM marker
helpers, and a tap on the broker.

Test-side only (the migration tests and bench/bench_migration.py); the
product never imports this module."""

from __future__ import annotations

import shutil
import tempfile
import time
import uuid as uuid_lib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.pool_harness import PoolHost, TrustedPool
from trusted_pools.agent.migration import MigrationAgent
from trusted_pools.agent.service import host_ca
from trusted_pools.protocol import vtpm_migration as proto
from trusted_pools.tpm.device import TPMDevice
from trusted_pools.vtpm.binding import Provisioner
from trusted_pools.vtpm.swtpm import SwtpmDriver

NV_MARKER = 0x01500017


@dataclass
class MigrationPool:
    pool: TrustedPool
    run_dir: Path
    setup_conf: str
    workdir: Path
    #: The agents' vTPMs get an AK and a chain to their host's vTPM CA
    #: (as the agent service does), re-certified on each migration.
    bind_vtpms: bool = True

    @property
    def hosts(self) -> list[PoolHost]:
        return self.pool.hosts

    def host(self, name: str) -> PoolHost:
        return next(h for h in self.pool.hosts if h.name == name)

    @property
    def conductor(self) -> Any:
        return self.pool.conductors[0]

    @property
    def coordinator(self) -> Any:
        return self.conductor.manager.migrations

    def driver(self, host: PoolHost) -> SwtpmDriver:
        return host.agent.vtpm

    def migrations(self, host: PoolHost) -> MigrationAgent:
        return host.agent.manager.migrations

    def attach_vtpm(self, host: PoolHost, provision: bool = False) -> None:
        """Give ``host``'s (running) agent its vTPM driver on its own TPM
        connection and its migration journal, as [vtpm] enabled does.
        ``provision``: each new vTPM also gets an AK certified by the
        host's vTPM CA, as the agent's own driver loader sets up (what
        deep attestation needs)."""
        (self.run_dir / host.name).mkdir(exist_ok=True)
        # As the agent service does: one vTPM CA in the host TPM
        # certifies the vTPMs made here and those that migrate in.
        ca = (host_ca(host.agent.attester)
              if self.bind_vtpms or provision else None)
        driver = SwtpmDriver(
            self.workdir / host.name / "vtpm", host.tpm.tcti,
            run_dir=self.run_dir / host.name, setup_config=self.setup_conf,
            host_runner=host.agent.attester.run_on_device,
            provisioner=Provisioner(ca) if ca is not None else None)
        host.agent.vtpm = driver
        host.agent.manager.vtpm = driver
        host.agent.manager.migrations = MigrationAgent(
            host.name, host.agent.attester, driver,
            self.workdir / host.name / "journal", ca=ca)

    def restart_conductor(self, crash: bool = True) -> None:
        """Stop the conductor (``crash``: as a killed process, leaving its
        row online) and start it again under the same name."""
        from trusted_pools.conductor.service import ConductorService
        old = self.pool.conductors.pop(0)
        if crash:
            old.stop_without_unregistering()
        else:
            old.stop()
        service = ConductorService(self.pool.conf, db=self.pool.db,
                                   host=old.host)
        service.start()
        self.pool.conductors.insert(0, service)
        self.wait_trusted()

    def ensure_trusted(self, margin: float = 2.0, timeout: float = 60.0
                       ) -> None:
        """Until every host's latest verdict is trusted and valid for
        ``margin`` more seconds (a busy machine may let one lapse)."""
        import datetime

        def fresh(latest):
            soon = datetime.datetime.now(datetime.timezone.utc) + \
                datetime.timedelta(seconds=margin)
            return all(h.name in latest and latest[h.name].status ==
                       "trusted" and latest[h.name].expires_at > soon
                       for h in self.pool.hosts)
        self.pool.wait_for(fresh, timeout=timeout)

    def wait_trusted(self, timeout: float = 60.0) -> None:
        """Until every host has a trusted verdict issued from now on (a
        restarted conductor judges the hosts afresh)."""
        import datetime
        since = datetime.datetime.now(datetime.timezone.utc)
        self.pool.wait_for(lambda latest: all(
            h.name in latest and latest[h.name].status == "trusted"
            and latest[h.name].issued_at >= since
            for h in self.pool.hosts), timeout=timeout)

    def restart_agent(self, host: PoolHost) -> None:
        """Stop the agent service (as a crash would end it) and start a new
        one on the same TPM, state and journal directories."""
        from trusted_pools.agent.service import AgentService
        host.agent.stop()
        host.agent = AgentService(
            self.pool.conf, host=host.name, tcti=host.tpm.tcti,
            event_log_path=str(host.event_log_path),
            ima_log_path=str(host.ima_log_path),
            ima_log_format=host.ima_format)
        host.agent.start()
        self.attach_vtpm(host)

    def create_marked_vtpm(self, host: PoolHost, marker: bytes) -> str:
        """A stopped vTPM on ``host`` whose NV index holds ``marker``."""
        uuid = str(uuid_lib.uuid4())
        driver = self.driver(host)
        driver.create(uuid)
        driver.start(uuid, host_access=True)
        try:
            nv_write(driver.tcti(uuid), marker)
        finally:
            driver.stop(uuid)
        return uuid

    def read_marker(self, host: PoolHost, uuid: str) -> bytes | None:
        driver = self.driver(host)
        migrations = self.migrations(host)
        migrations.check_startable(uuid)
        driver.start(uuid, host_access=True)
        try:
            with TPMDevice(driver.tcti(uuid)) as dev:
                return dev.read_nv(NV_MARKER)
        finally:
            driver.stop(uuid)

    def migrate(self, instance: str, source: PoolHost,
                destination: PoolHost, kind: str = "cold",
                min_level: int | None = None, timeout: float = 60.0
                ) -> dict[str, Any]:
        """Through the management API (RabbitMQ) on the destination's
        owner; waits until the migration ends."""
        return self.wait(self.start(instance, source, destination, kind,
                                    min_level)["id"], timeout)

    def start(self, instance: str, source: PoolHost, destination: PoolHost,
              kind: str = "cold", min_level: int | None = None
              ) -> dict[str, Any]:
        conductors = self.pool.api().conductors
        return conductors.client.migrate_vtpm(
            {}, instance, source.name, destination.name,
            conductor=conductors.owner(destination.name), kind=kind,
            min_level=min_level)

    def wait(self, migration_id: str, timeout: float = 60.0,
             steps: tuple[str, ...] = proto.TERMINAL_STEPS,
             poll: float = 0.05) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            row = self.pool.db.get_vtpm_migration(migration_id)
            if row.step in steps:
                return self.coordinator.show(migration_id)
            if time.monotonic() > deadline:
                raise AssertionError("migration %s stuck at %s"
                                     % (migration_id, row.step))
            time.sleep(poll)


def nv_write(tcti: str, value: bytes, index: int = NV_MARKER) -> None:
    """Define and write the marker index. ``NO_DA``: every stop of a vTPM
    without TPM2_Shutdown is a non-orderly shutdown, which counts against
    the vTPM's dictionary-attack lockout; a test that starts one vTPM
    many times would lock its own marker out."""
    from tpm2_pytss import (ESYS_TR, TPM2_ALG, TPM2B_NV_PUBLIC, TPMA_NV,
                            TPMS_NV_PUBLIC)
    with TPMDevice(tcti) as dev:
        public = TPM2B_NV_PUBLIC(TPMS_NV_PUBLIC(
            nvIndex=index, nameAlg=TPM2_ALG.SHA256,
            attributes=TPMA_NV.OWNERWRITE | TPMA_NV.OWNERREAD
            | TPMA_NV.AUTHREAD | TPMA_NV.AUTHWRITE | TPMA_NV.NO_DA,
            dataSize=len(value)))
        handle = dev.esapi.nv_define_space(b"", public, ESYS_TR.OWNER)
        dev.esapi.nv_write(handle, value, 0, ESYS_TR.OWNER)


_OVERRIDES = {
    # A restarted agent is noticed in seconds, not the default 30.
    ("conductor", "agent_rpc_timeout"): 3,
    ("vtpm_migration", "resume_interval"): 1,
    ("vtpm_migration", "step_timeout"): 30,
}


def build_pool(tmp_path: Path, rabbit_conf: Any, swtpm_pool: Any,
               swtpm_ca: Any, hosts: int, tamper: tuple[int, ...] = (),
               overrides: dict[tuple[str, str], Any] | None = None,
               interval: int = 2, bind_vtpms: bool = True
               ) -> Iterator[MigrationPool]:
    """``interval``: the attestation interval (verdicts stay valid three
    intervals): longer where a burst of work keeps the TPMs busy."""
    pool = TrustedPool(tmp_path, rabbit_conf, swtpm_pool, swtpm_ca,
                       "sqlite:///%s" % (tmp_path / "pool.sqlite"),
                       interval=interval)
    run_dir = Path(tempfile.mkdtemp(prefix="mg", dir="/tmp"))
    pool.configure()
    options = {**_OVERRIDES, **(overrides or {})}
    for (group, name), value in options.items():
        rabbit_conf.set_override(name, value, group=group)
    made = MigrationPool(pool, run_dir, str(swtpm_ca.setup_conf), tmp_path,
                         bind_vtpms=bind_vtpms)
    try:
        pool.add_hosts(hosts, tamper=list(tamper))
        pool.start_agents()
        pool.start_conductor("conductor-a")
        pool.enroll_all()
        api = pool.api()
        good = next(h for i, h in enumerate(pool.hosts) if i not in tamper)
        captured = api.capture_policy({}, good.name)
        api.create_policy({}, "golden-boot", "measured_boot",
                          captured["measured_boot"])
        api.assign_policy({}, "default", "golden-boot")
        want = ["untrusted" if i in tamper else "trusted"
                for i in range(hosts)]
        pool.wait_for(lambda latest: [
            latest[h.name].status if h.name in latest and
            latest[h.name].policy_versions else None
            for h in pool.hosts] == want, timeout=60)
        for host in pool.hosts:
            made.attach_vtpm(host)
        yield made
    finally:
        for host in pool.hosts:
            driver = getattr(host.agent, "vtpm", None) if host.agent \
                else None
            if driver is not None:
                for info in driver.list():
                    try:
                        driver.stop(info.instance_uuid)
                    except Exception:  # noqa: BLE001 - best effort
                        pass
        pool.close()
        for (group, name) in options:
            rabbit_conf.clear_override(name, group=group)
        shutil.rmtree(run_dir, ignore_errors=True)


class BusTap:
    """Every message published on the test's RabbitMQ virtual host, as
    the broker saw it: RabbitMQ's firehose tracer (``rabbitmqctl
    trace_on``) copies each publish, requests and replies alike, to
    ``amq.rabbitmq.trace``; a queue of ours bound there collects them."""

    def __init__(self, url: str) -> None:
        import urllib.parse

        import amqp
        from tests.rabbitmq import rabbitmqctl
        parts = urllib.parse.urlsplit(url)
        self.vhost = urllib.parse.unquote(parts.path.lstrip("/")) or "/"
        if not rabbitmqctl("trace_on", "-p", self.vhost):
            pytest.fail("cannot turn RabbitMQ's firehose tracer on with "
                        "rabbitmqctl (run the tests as a user that may)",
                        pytrace=False)
        self.bodies: list[bytes] = []
        self.connection = amqp.Connection(
            "%s:%d" % (parts.hostname or "127.0.0.1", parts.port or 5672),
            userid=urllib.parse.unquote(parts.username or "guest"),
            password=urllib.parse.unquote(parts.password or "guest"),
            virtual_host=self.vhost)
        self.connection.connect()
        self.channel = self.connection.channel()
        queue = self.channel.queue_declare(exclusive=True,
                                           auto_delete=True).queue
        self.channel.queue_bind(queue, "amq.rabbitmq.trace", "publish.#")
        self.channel.basic_consume(
            queue, no_ack=True,
            callback=lambda message: self.bodies.append(bytes(
                message.body if isinstance(message.body, bytes)
                else message.body.encode("utf-8"))))

    def drain(self, quiet: float = 1.0) -> bytes:
        """Everything captured so far (waits until ``quiet`` seconds pass
        without a message)."""
        import socket
        while True:
            try:
                self.connection.drain_events(timeout=quiet)
            except socket.timeout:
                break
        return b"\n".join(self.bodies)

    def close(self) -> None:
        from tests.rabbitmq import rabbitmqctl
        try:
            self.connection.close()
        finally:
            rabbitmqctl("trace_off", "-p", self.vhost)
