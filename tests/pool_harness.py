"""A small trusted pool in one process, for functional tests and the demo
of the whole flow: real swtpm TPMs booted from real event logs, one agent
per TPM, conductors, a real database and the real RabbitMQ bus.

Test-side only: the product never imports this module.
"""

from __future__ import annotations

import hashlib
import pathlib
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from oslo_config import cfg

from tests import ima_gen
from tests import swtpm_pool
from trusted_pools.agent.service import AgentService
from trusted_pools.api import conductors as api_conductors
from trusted_pools.api import operations as api_operations
from trusted_pools.protocol import keystore
from trusted_pools.verifier import policy as policy_mod
from trusted_pools.conductor import rpcapi as conductor_rpcapi
from trusted_pools.conductor.service import ConductorService
from trusted_pools.db import api as db_api
from trusted_pools.db import migration
from trusted_pools.tpm import constants
from trusted_pools.tpm import ima

SHA1 = constants.TPM_ALG.SHA1
SHA256 = constants.TPM_ALG.SHA256


def honest_tampered_log(log_bytes: bytes, index: int) -> bytes:
    """The log a host writes when event ``index`` measured what
    :func:`swtpm_pool.boot_from_event_log` extends for a tampered boot: the
    firmware logs the real (unapproved) digest, so the log still replays
    and only the policy can tell."""
    from trusted_pools.tpm import eventlog
    event = next(e for e in eventlog.parse_event_log(log_bytes).events
                 if e.index == index)
    data = bytearray(log_bytes)
    for alg, digest in event.digests.items():
        new = constants.hash_algorithm(alg).digest(
            swtpm_pool.TAMPERED_DIGEST_INPUT)
        at = bytes(data).index(digest, event.offset)
        data[at:at + len(digest)] = new
    return bytes(data)


def ek_sha256(tpm: swtpm_pool.SwtpmInstance, kind: str = "rsa2048"
              ) -> str:
    """The hash an operator approves: SHA-256 of the EK certificate's
    SubjectPublicKeyInfo, read from the TPM's NV index."""
    from cryptography import x509
    from trusted_pools.verifier import enrollment
    with tpm.device() as device:
        cert = x509.load_der_x509_certificate(
            device.read_ek_certificate(kind))
    return enrollment.ek_public_sha256(cert)


@dataclass
class PoolHost:
    name: str
    tpm: swtpm_pool.SwtpmInstance
    event_log_path: pathlib.Path
    ima_log_path: pathlib.Path
    tampered_event: int | None = None
    agent: AgentService | None = None
    source_log: pathlib.Path | None = None
    # The IMA list the agent reads: binary (binary_runtime_measurements,
    # as agents read by default) or ascii (the kernel's text list).
    ima_format: str = "binary"
    #: what the firmware measured at ``tampered_event`` instead
    tamper_input: bytes = swtpm_pool.TAMPERED_DIGEST_INPUT


def _extend_ima(tpm: swtpm_pool.SwtpmInstance, lines: bytes) -> None:
    """Extend IMA entries into PCR 10 as the kernel does (one template
    hash per bank, computed from the template data)."""
    _extend_template_data(tpm, [entry.template_data
                                for entry in ima.parse_ima_log(lines)])


def _extend_template_data(tpm: swtpm_pool.SwtpmInstance,
                          datas: Iterable[bytes]) -> None:
    with tpm.device() as device:
        for data in datas:
            device.pcr_extend(10, {SHA1: hashlib.sha1(data).digest(),
                                   SHA256: hashlib.sha256(data).digest()})


def _in_format(host: PoolHost, ascii_lines: bytes) -> bytes:
    return ascii_lines if host.ima_format == "ascii" else \
        ima_gen.ascii_to_binary(ascii_lines)


def boot_ima(host: PoolHost, count: int, seed: int) -> bytes:
    """Give the host an IMA log whose boot_aggregate matches its PCRs."""
    with host.tpm.device() as device:
        pcrs = device.pcr_read({SHA256: range(10)})
    aggregate = ima.compute_boot_aggregate(pcrs[SHA256], SHA256)
    first = ima_gen.ascii_line(10, "ima-ng", [
        b"sha256:\0" + aggregate, b"boot_aggregate\0"])
    rest = ima_gen.generate_ascii_log(count, seed=seed).splitlines(
        keepends=True)[1:]
    log = first + b"".join(rest)
    _extend_ima(host.tpm, log)
    host.ima_log_path.write_bytes(_in_format(host, log))
    return log


def append_ima(host: PoolHost, lines: bytes) -> None:
    """Run more programs: extend and append new IMA entries (given as
    kernel-written ascii lines; written in the host's list format)."""
    _extend_ima(host.tpm, lines)
    with open(host.ima_log_path, "ab") as handle:
        handle.write(_in_format(host, lines))


def measure_file(host: PoolHost, name: bytes, digest: bytes,
                 violation: bool = False) -> None:
    """The kernel measures a file called ``name`` (any bytes but NUL, a
    newline included) whose content has SHA-256 ``digest``: one ima-ng
    entry extended into PCR 10 and appended to the host's list, the
    ascii one printing the name raw as ima_fs.c does."""
    if violation:
        digest = bytes(32)
    fields = [b"sha256:\0" + digest, name + b"\0"]
    entry = (ima_gen.ascii_line(10, "ima-ng", fields, violation)
             if host.ima_format == "ascii" else
             ima_gen.binary_entry(10, "ima-ng", fields, violation))
    data = ima_gen.template_data("ima-ng", fields)
    with host.tpm.device() as device:
        device.pcr_extend(10, {SHA1: b"\xff" * 20, SHA256: b"\xff" * 32}
                          if violation else
                          {SHA1: hashlib.sha1(data).digest(),
                           SHA256: hashlib.sha256(data).digest()})
    with open(host.ima_log_path, "ab") as handle:
        handle.write(entry)


class Operator:
    """What trusted-pools-api does for an operator, minus HTTP: host
    operations over the conductors' management API on the owning
    conductor (the API's own router), policy writes in the database.
    Conductors pick a new policy up at their next cycle or attest_now."""

    def __init__(self, db: db_api.Connection, heartbeat_timeout: float,
                 timeout: float = 60) -> None:
        self.db = db
        self.timeout = timeout
        self.conductors = api_conductors.Conductors(
            db, lambda: conductor_rpcapi.ConductorAPI(timeout=timeout),
            heartbeat_timeout)

    def _call(self, method: str, context: dict, host: str,
              conductor: str | None, **kwargs) -> dict:
        """On the owner (the API's routing), or on ``conductor`` when a
        test names one."""
        if conductor is None:
            return self.conductors.call(method, context, host, **kwargs)
        return getattr(self.conductors.client, method)(
            context, host, conductor=conductor, **kwargs)

    def start(self, method: str, context: Any, host: str,
              conductor: str | None = None, **kwargs) -> dict:
        """Send ``method`` (enroll_host, attest_now, capture_policy) and
        return the conductor's answer at once: the pending operation."""
        return self._call(method, context, host, conductor, **kwargs)

    def wait(self, answer: dict, timeout: float | None = None) -> Any:
        """Wait for the operation a conductor answered with: its result,
        or its typed error raised (what the API does at 1.0)."""
        row = api_operations.wait(self.db, answer["operation"],
                                  timeout or self.timeout)
        return api_operations.result_or_raise(row)

    def enroll_host(self, context: Any, host: str, group: str = "default",
                    ek_sha256: str | None = None,
                    conductor: str | None = None) -> dict:
        return self.wait(self.start("enroll_host", context, host, conductor,
                                    group=group, ek_sha256=ek_sha256))

    def reset_enrollment(self, context: Any, host: str,
                         conductor: str | None = None) -> dict:
        return self._call("reset_enrollment", context, host, conductor)

    def attest_now(self, context: Any, host: str,
                   conductor: str | None = None) -> dict:
        return self.wait(self.start("attest_now", context, host,
                                    conductor))

    def capture_policy(self, context: Any, host: str,
                       conductor: str | None = None) -> dict:
        return self.wait(self.start("capture_policy", context, host,
                                    conductor))

    def create_policy(self, context: dict, name: str, kind: str,
                      body: dict, created_by: str = "operator") -> dict:
        # As the API's policy handler: refuse what cannot be loaded.
        policy_mod.load_policy(kind, body, name=name, version=1)
        record = self.db.create_policy_version(name, kind, body,
                                               created_by=created_by)
        return {"name": record.name, "version": record.version,
                "kind": record.kind}

    def assign_policy(self, context: dict, group: str, name: str,
                      version: int | None = None) -> None:
        self.db.assign_policy(group, name, version)


@dataclass
class TrustedPool:
    """Builder and owner of every part; ``close()`` stops them all."""

    workdir: pathlib.Path
    conf: cfg.ConfigOpts
    start_tpms: Callable[[int], list[swtpm_pool.SwtpmInstance]]
    ca: swtpm_pool.LocalCA
    db_url: str
    interval: int = 2
    hosts: list[PoolHost] = field(default_factory=list)
    conductors: list[ConductorService] = field(default_factory=list)
    db: db_api.Connection | None = None

    def configure(self) -> None:
        ca_path = self.workdir / "ek-ca.pem"
        ca_path.write_bytes(self.ca.bundle_pem)
        overrides = {
            "signing_key_path": str(self.workdir / "signing-key.pem"),
            "ek_ca_bundle": str(ca_path),
            "attestation_interval": self.interval,
            "heartbeat_interval": 1,
            "heartbeat_timeout": 3,
            "unknown_after_missed": 2,
        }
        for name, value in overrides.items():
            self.conf.set_override(name, value, group="conductor")
        self.conf.set_override("pcr_banks", ["sha256"], group="attestation")
        self.conf.set_override("enabled", True, group="key_service")
        self.conf.set_override("kek_path", str(self.workdir / "kek"),
                               group="key_service")
        self.pin_conductor_keys()
        context = db_api.make_context_manager(self.db_url)
        self.db = db_api.Connection(context)
        migration.upgrade(engine=self.db.get_engine())

    @property
    def conductor_keys_path(self) -> pathlib.Path:
        return self.workdir / "conductor-keys.pem"

    def pin_conductor_keys(self) -> None:
        """What the operator does: create the conductors' signing key (all
        conductors here share one) and copy its public half to where the
        agents read the keys they trust."""
        key = keystore.load_or_create_signing_key(
            self.conf.conductor.signing_key_path)
        self.conductor_keys_path.write_text(keystore.public_key_pem(key))
        self.conf.set_override("conductor_keys_file",
                               str(self.conductor_keys_path), group="agent")

    def add_hosts(self, count: int, log: str = "ubuntu-2104",
                  tamper: Iterable[int] = (), ima_entries: int = 50,
                  lying_log: bool = False,
                  ima_format: str = "binary") -> list[PoolHost]:
        """Start ``count`` booted hosts; those at the positions in
        ``tamper`` booted an unapproved kernel and log it honestly (or,
        with ``lying_log``, keep logging the approved one)."""
        tampered = set(tamper)
        tpms = self.start_tpms(count)
        added = []
        for i, tpm in enumerate(tpms):
            index = len(self.hosts)
            name = "compute-%02d" % index
            log_path = swtpm_pool.BOOTED_HOST_LOGS[log]
            event = (swtpm_pool.kernel_event_index(log_path.read_bytes())
                     if i in tampered else None)
            swtpm_pool.boot_from_event_log(tpm, log_path, tamper=event)
            host = PoolHost(name, tpm, self.workdir / ("%s.eventlog" % name),
                            self.workdir / ("%s.ima" % name), event,
                            source_log=log_path, ima_format=ima_format)
            logged = log_path.read_bytes()
            if event is not None and not lying_log:
                logged = honest_tampered_log(logged, event)
            host.event_log_path.write_bytes(logged)
            # Same image everywhere: the same programs ran on every host.
            boot_ima(host, ima_entries, seed=0)
            self.hosts.append(host)
            added.append(host)
        return added

    def add_crafted_host(self, event: int, measured: bytes,
                         log: str = "ubuntu-2104", ima_entries: int = 50,
                         tpm: swtpm_pool.SwtpmInstance | None = None,
                         **rewrite) -> PoolHost:
        """A host whose firmware measured ``measured`` at event ``event``
        (its TPM holds that), and whose log file says so with the event's
        data or type rewritten as ``rewrite`` says
        (:func:`tests.eventlog_edit.rewrite_event`): the compromised host
        of issue 9, lying with everything it owns. ``tpm``: a started,
        unused TPM (start several at once: provisioning runs in parallel).
        """
        from tests.eventlog_edit import rewrite_event
        if tpm is None:
            (tpm,) = self.start_tpms(1)
        name = "compute-%02d" % len(self.hosts)
        log_path = swtpm_pool.BOOTED_HOST_LOGS[log]
        swtpm_pool.boot_from_event_log(tpm, log_path, tamper=event,
                                       tamper_input=measured)
        host = PoolHost(name, tpm, self.workdir / ("%s.eventlog" % name),
                        self.workdir / ("%s.ima" % name), event,
                        source_log=log_path, tamper_input=measured)
        host.event_log_path.write_bytes(rewrite_event(
            log_path.read_bytes(), event, measured=measured, **rewrite))
        boot_ima(host, ima_entries, seed=0)
        self.hosts.append(host)
        return host

    def reboot(self, host: PoolHost, ima_entries: int = 50) -> None:
        """Reboot a host: its TPM restarts (PCRs reset, resetCount + 1)
        and measures the same boot and programs again."""
        host.tpm.restart(same_ports=True)
        swtpm_pool.boot_from_event_log(host.tpm, host.source_log,
                                       tamper=host.tampered_event,
                                       tamper_input=host.tamper_input)
        boot_ima(host, ima_entries, seed=0)

    def start_agents(self, hosts: Iterable[PoolHost] | None = None,
                     bus_url: Callable[[PoolHost], str | None] | None = None,
                     without_event_log: Iterable[PoolHost] = ()
                     ) -> None:
        """``bus_url``: each agent's own bus URL (its RabbitMQ user on the
        agent vhost); default: the process's agent bus. Agents of
        ``without_event_log`` send none (``[agent] event_log_path =``)."""
        no_log = {host.name for host in without_event_log}
        for host in hosts or self.hosts:
            host.agent = AgentService(
                self.conf, host=host.name, tcti=host.tpm.tcti,
                event_log_path="" if host.name in no_log
                else str(host.event_log_path),
                ima_log_path=str(host.ima_log_path),
                ima_log_format=host.ima_format,
                transport_url=bus_url(host) if bus_url else None)
            host.agent.start()

    def start_conductor(self, name: str) -> ConductorService:
        service = ConductorService(self.conf, db=self.db, host=name)
        service.start()
        self.conductors.append(service)
        return service

    def api(self) -> Operator:
        return Operator(self.db, self.conf.conductor.heartbeat_timeout)

    def enroll_all(self, group: str = "default") -> None:
        """Enroll every host, approving the EK read from the swtpm this
        harness started (an operator reads it from the inventory)."""
        api = self.api()
        for host in self.hosts:
            api.enroll_host({}, host.name, group,
                            ek_sha256=ek_sha256(host.tpm))

    def latest(self) -> dict[str, db_api.Verdict]:
        names = {h.id: h.hostname for h in self.db.list_hosts()}
        return {names[v.host_id]: v for v in self.db.latest_verdicts()}

    def wait_for(self, predicate: Callable[[dict[str, db_api.Verdict]],
                                           bool],
                 timeout: float = 30.0) -> dict[str, db_api.Verdict]:
        deadline = time.monotonic() + timeout
        while True:
            latest = self.latest()
            if predicate(latest):
                return latest
            if time.monotonic() > deadline:
                raise AssertionError(
                    "pool did not reach the expected state in %.0f s: %s"
                    % (timeout, {h: (v.status, v.level, v.reasons)
                                 for h, v in latest.items()}))
            time.sleep(0.2)

    def close(self) -> None:
        # All at once: an idle oslo.messaging RPC server takes up to 5 s to
        # notice its stop (its listener's poll backs off to 5 s), so one
        # after another costs seconds per service.
        services = list(self.conductors) + [
            host.agent for host in self.hosts if host.agent is not None]
        stoppers = [threading.Thread(target=service.stop, daemon=True)
                    for service in services]
        for stopper in stoppers:
            stopper.start()
        for stopper in stoppers:
            stopper.join()
        for option in ("signing_key_path", "ek_ca_bundle",
                       "attestation_interval", "heartbeat_interval",
                       "heartbeat_timeout", "unknown_after_missed"):
            self.conf.clear_override(option, group="conductor")
        self.conf.clear_override("pcr_banks", group="attestation")
        for option in ("enabled", "kek_path"):
            self.conf.clear_override(option, group="key_service")
        self.conf.clear_override("conductor_keys_file", group="agent")
        if self.db is not None:
            self.db.dispose()
