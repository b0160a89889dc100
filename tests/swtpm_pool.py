"""Real TPM 2.0s for tests and demos: a pool of provisioned swtpm instances.

Library part (no pytest needed, usable from a demo script)::

    ca = LocalCA.create("/tmp/demo/ca")
    with SwtpmPool(ca, "/tmp/demo") as pool:
        hosts = pool.start(3)          # 3 TPMs, each with its own EK + cert
        print(hosts[0].tcti)           # swtpm:host=127.0.0.1,port=...

Each :class:`SwtpmInstance` is manufactured with ``swtpm_setup`` (RSA-2048
EK persisted at 0x81010001 with its certificate at NV 0x01c00002, an ECC
P-384 EK at 0x81010016 with its certificate at 0x01c00016, a platform
certificate at 0x01c08000, SHA-1 and SHA-256 PCR banks) with certificates
from a :class:`LocalCA` made by ``swtpm_localca``, then runs as a TCP
daemon on free ports. Every TPM gets its own endorsement seed, so its own
EK; provisioning is parallelised with threads instead of copying state.

Teardown kills by the pid file, checks the pid still is that swtpm (pids
are recycled) and waits for it to go; an ``atexit`` hook stops whatever a
crashed test left running.

pytest part (this module is loaded as a plugin by ``tests/conftest.py``):
``swtpm_ca`` (session), ``swtpm_instance`` (function), ``swtpm_pool``
(factory: ``swtpm_pool(n)``), ``swtpm_other_ca`` (a second, untrusted
CA). Missing binaries FAIL the test with the apt-get line; never skip.

:func:`boot_from_event_log` makes a swtpm look like a booted host by
extending the events of a real TCG event log into its PCRs.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import dataclasses
import fcntl
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterator, Sequence

import pytest

REQUIRED_BINARIES = ("swtpm", "swtpm_setup", "swtpm_localca", "swtpm_ioctl")
APT_LINE = "apt-get install -y swtpm swtpm-tools tpm2-tools libtss2-dev"
PCR_BANKS = "sha1,sha256"
EVENTLOG_DIR = Path(__file__).parent / "data" / "eventlog"

_START_TIMEOUT = 10.0
_STOP_TIMEOUT = 5.0


class SwtpmMissing(RuntimeError):
    """A binary the pool needs is not installed."""


class SwtpmFailed(RuntimeError):
    """swtpm or swtpm_setup did not do what was asked; output attached."""


def missing_binaries() -> list[str]:
    return [b for b in REQUIRED_BINARIES if shutil.which(b) is None]


def require_binaries() -> None:
    missing = missing_binaries()
    if missing:
        raise SwtpmMissing("missing %s; install with: %s"
                           % (", ".join(missing), APT_LINE))


def _run(argv: Sequence[str], what: str, timeout: float = 60.0) -> str:
    try:
        proc = subprocess.run(list(argv), capture_output=True, text=True,
                              timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise SwtpmFailed("%s timed out after %ss" % (what, timeout))
    if proc.returncode != 0:
        raise SwtpmFailed("%s failed (exit %d): %s %s" % (
            what, proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:]))
    return proc.stdout


# --- local CA ----------------------------------------------------------------

@dataclasses.dataclass
class LocalCA:
    """A swtpm_localca certificate authority living in ``directory``.

    ``bundle_pem`` is the root and the issuing CA certificate, PEM: the
    CA bundle a verifier is configured with to trust these TPMs.
    """

    directory: Path

    def __post_init__(self) -> None:
        self.directory = Path(self.directory).resolve()

    @property
    def localca_conf(self) -> Path:
        return self.directory / "swtpm-localca.conf"

    @property
    def localca_options(self) -> Path:
        return self.directory / "swtpm-localca.options"

    @property
    def setup_conf(self) -> Path:
        return self.directory / "swtpm_setup.conf"

    @property
    def root_cert_path(self) -> Path:
        return self.directory / "swtpm-localca-rootca-cert.pem"

    @property
    def issuer_cert_path(self) -> Path:
        return self.directory / "issuercert.pem"

    @property
    def bundle_pem(self) -> bytes:
        return (self.root_cert_path.read_bytes()
                + self.issuer_cert_path.read_bytes())

    @classmethod
    def create(cls, directory: str | os.PathLike) -> "LocalCA":
        """Write the configuration and make the CA keys and certificates.

        swtpm_localca only creates its CA on first use, so it is run once
        for a throwaway RSA key; the certificate it makes is discarded.
        """
        require_binaries()
        ca = cls(Path(directory).resolve())
        ca.directory.mkdir(parents=True, exist_ok=True)
        d = ca.directory
        ca.localca_conf.write_text(
            "statedir = %s\nsigningkey = %s\nissuercert = %s\n"
            "certserial = %s\n" % (d, d / "signkey.pem",
                                   ca.issuer_cert_path, d / "certserial"))
        ca.localca_options.write_text(
            "--platform-manufacturer TrustedPoolsTest\n"
            "--platform-version 2.1\n--platform-model swtpm\n")
        ca.setup_conf.write_text(
            "create_certs_tool = %s\ncreate_certs_tool_config = %s\n"
            "create_certs_tool_options = %s\nactive_pcr_banks = %s\n"
            % (shutil.which("swtpm_localca"), ca.localca_conf,
               ca.localca_options, PCR_BANKS))
        ca._bootstrap()
        return ca

    def _bootstrap(self) -> None:
        from cryptography.hazmat.primitives.asymmetric import rsa
        modulus = rsa.generate_private_key(65537, 2048).public_key() \
            .public_numbers().n
        with tempfile.TemporaryDirectory(dir=self.directory) as out:
            _run(["swtpm_localca", "--type", "ek", "--ek", "%x" % modulus,
                  "--dir", out, "--tpm2", "--tpm-spec-family", "2.0",
                  "--tpm-spec-level", "0", "--tpm-spec-revision", "164",
                  "--tpm-manufacturer", "id:00001014", "--tpm-model",
                  "swtpm", "--tpm-version", "id:20191023",
                  "--configfile", str(self.localca_conf),
                  "--optsfile", str(self.localca_options)],
                 "swtpm_localca (creating the CA)")
        if not (self.root_cert_path.exists()
                and self.issuer_cert_path.exists()):
            raise SwtpmFailed("swtpm_localca made no CA in %s"
                              % self.directory)

    def __enter__(self) -> "LocalCA":
        return self

    def __exit__(self, *exc: object) -> None:
        pass


# --- one swtpm ---------------------------------------------------------------

_RUNNING: dict[int, "SwtpmInstance"] = {}
_RUNNING_LOCK = threading.Lock()


def _free_port_pair() -> tuple[int, int]:
    """A free port P with P+1 free too: the swtpm TCTI always talks to the
    control channel on the port after the server port. (A race with other
    processes is handled by retrying the start.)"""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as first:
            first.bind(("127.0.0.1", 0))
            port = first.getsockname()[1]
            if port >= 65535:
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as second:
                try:
                    second.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
                return port, port + 1
    raise SwtpmFailed("no two consecutive free TCP ports")


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def _terminate(process: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL; always reaps the child."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(_STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _pid_is_swtpm(pid: int, state_dir: Path) -> bool:
    try:
        cmdline = Path("/proc/%d/cmdline" % pid).read_bytes()
    except OSError:
        return False
    return b"swtpm" in cmdline and str(state_dir).encode() in cmdline


class SwtpmInstance:
    """One provisioned swtpm TPM 2.0 with its own state directory."""

    def __init__(self, state_dir: str | os.PathLike, ca: LocalCA | None,
                 name: str = "tpm") -> None:
        self.state_dir = Path(state_dir).resolve()
        self.ca = ca
        self.name = name
        self.port: int | None = None
        self.ctrl_port: int | None = None
        self.pid: int | None = None
        self._process: subprocess.Popen | None = None

    @property
    def pid_file(self) -> Path:
        return self.state_dir / "swtpm.pid"

    @property
    def tcti(self) -> str:
        if self.port is None:
            raise SwtpmFailed("%s is not running" % self.name)
        return "swtpm:host=127.0.0.1,port=%d" % self.port

    def provision(self) -> "SwtpmInstance":
        """Manufacture the TPM: EKs, EK and platform certificates."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        _run(["swtpm_setup", "--tpm2", "--tpmstate", str(self.state_dir),
              "--config", str(self.ca.setup_conf), "--createek",
              "--create-ek-cert", "--create-platform-cert", "--lock-nvram",
              "--pcr-banks", PCR_BANKS, "--overwrite"],
             "swtpm_setup for %s" % self.name)
        return self

    def start(self) -> "SwtpmInstance":
        """Run the TPM as a daemon on free ports; started and cleared."""
        if self.pid is not None:
            return self
        last_error: Exception | None = None
        for _ in range(5):
            port, ctrl = _free_port_pair()
            try:
                self._start_on(port, ctrl)
                return self
            except SwtpmFailed as exc:  # port taken in between: retry
                last_error = exc
        raise SwtpmFailed("could not start %s: %s" % (self.name, last_error))

    def _start_on(self, port: int, ctrl: int) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.pid_file.unlink(missing_ok=True)
        self._wait_state_unlocked()
        log = open(self.state_dir / "swtpm.log", "ab")
        try:
            # Our child, not a --daemon: we reap it, so no zombie is left
            # (this machine's PID 1 does not reap orphans).
            process = subprocess.Popen(
                ["swtpm", "socket", "--tpm2",
                 "--tpmstate", "dir=%s" % self.state_dir,
                 "--server", "type=tcp,port=%d,bindaddr=127.0.0.1" % port,
                 "--ctrl", "type=tcp,port=%d,bindaddr=127.0.0.1" % ctrl,
                 "--flags", "not-need-init,startup-clear",
                 "--pid", "file=%s" % self.pid_file],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        finally:
            log.close()
        deadline = time.monotonic() + _START_TIMEOUT
        while not _listening(port):
            if process.poll() is not None or time.monotonic() > deadline:
                _terminate(process)
                raise SwtpmFailed("swtpm for %s did not come up on port %d: "
                                  "%s" % (self.name, port, self._log_tail()))
            time.sleep(0.005)
        self._process = process
        self.pid = process.pid
        self.port, self.ctrl_port = port, ctrl
        with _RUNNING_LOCK:
            _RUNNING[self.pid] = self

    def _wait_state_unlocked(self) -> None:
        """swtpm_setup's own swtpm may still hold the state lock for a
        moment after swtpm_setup returned; a swtpm started then exits."""
        lock_path = self.state_dir / ".lock"
        if not lock_path.exists():
            return
        deadline = time.monotonic() + _START_TIMEOUT
        with open(lock_path, "a") as lock:
            while True:
                try:
                    fcntl.lockf(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    fcntl.lockf(lock, fcntl.LOCK_UN)
                    return
                except OSError:
                    if time.monotonic() > deadline:
                        raise SwtpmFailed("state of %s stays locked"
                                          % self.name)
                    time.sleep(0.01)

    def _log_tail(self) -> str:
        try:
            return (self.state_dir / "swtpm.log").read_text()[-1000:]
        except OSError:
            return ""

    def stop(self) -> None:
        """Terminate swtpm (SIGTERM, then SIGKILL) and reap it. Also
        kills by the pid file if this object did not start it."""
        process, self._process = self._process, None
        pid, self.pid = self.pid, None
        self.port = self.ctrl_port = None
        if pid is not None:
            with _RUNNING_LOCK:
                _RUNNING.pop(pid, None)
        if process is not None:
            _terminate(process)
            return
        if pid is None and self.pid_file.exists():
            try:
                pid = int(self.pid_file.read_text().strip())
            except ValueError:
                return
        if pid is None or not _pid_is_swtpm(pid, self.state_dir):
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                return
            deadline = time.monotonic() + _STOP_TIMEOUT
            while time.monotonic() < deadline:
                if not _pid_is_swtpm(pid, self.state_dir):
                    return
                time.sleep(0.005)

    def restart(self, same_ports: bool = False) -> "SwtpmInstance":
        """Stop and start again on the same state (a host reboot: PCRs
        reset, persistent objects and NV survive). With ``same_ports`` a
        client's TCTI string stays valid."""
        port, ctrl = self.port, self.ctrl_port
        self.stop()
        if same_ports and port is not None:
            self._start_on(port, ctrl)
            return self
        return self.start()

    @property
    def running(self) -> bool:
        if self._process is not None:
            return self._process.poll() is None
        return self.pid is not None and _pid_is_swtpm(self.pid,
                                                      self.state_dir)

    def rss_kib(self) -> int:
        """Resident memory of the daemon (VmRSS), for the benchmark."""
        if self.pid is None:
            return 0
        for line in Path("/proc/%d/status" % self.pid).read_text() \
                .splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def device(self):
        """An open :class:`trusted_pools.tpm.device.TPMDevice` on it."""
        from trusted_pools.tpm.device import TPMDevice
        return TPMDevice(self.tcti)

    def __repr__(self) -> str:
        return "SwtpmInstance(%s, port=%s, pid=%s)" % (self.name, self.port,
                                                       self.pid)


@atexit.register
def _stop_leftovers() -> None:
    with _RUNNING_LOCK:
        leftovers = list(_RUNNING.values())
    for instance in leftovers:
        instance.stop()


# --- the pool ----------------------------------------------------------------

class SwtpmPool:
    """Starts provisioned swtpm instances under ``base_dir``; stops them all
    on :meth:`close` (or leaving the ``with`` block)."""

    def __init__(self, ca: LocalCA, base_dir: str | os.PathLike,
                 max_workers: int = 4) -> None:
        require_binaries()
        self.ca = ca
        self.base_dir = Path(base_dir).resolve()
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.max_workers = max_workers
        self.instances: list[SwtpmInstance] = []
        self._lock = threading.Lock()

    def _new(self) -> SwtpmInstance:
        with self._lock:
            index = len(self.instances)
            instance = SwtpmInstance(self.base_dir / ("tpm%03d" % index),
                                     self.ca, name="tpm%03d" % index)
            self.instances.append(instance)
        return instance

    def start(self, count: int, provision: bool = True
              ) -> list[SwtpmInstance]:
        """Provision (in parallel) and start ``count`` new TPMs."""
        new = [self._new() for _ in range(count)]

        def bring_up(instance: SwtpmInstance) -> SwtpmInstance:
            if provision:
                instance.provision()
            return instance.start()

        workers = max(1, min(self.max_workers, count))
        with concurrent.futures.ThreadPoolExecutor(workers) as executor:
            return list(executor.map(bring_up, new))

    def close(self) -> None:
        for instance in self.instances:
            instance.stop()

    def __enter__(self) -> "SwtpmPool":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- making a swtpm look booted ----------------------------------------------

TAMPERED_DIGEST_INPUT = b"trusted_pools test: a kernel nobody approved"


@dataclasses.dataclass(frozen=True)
class BootResult:
    """What :func:`boot_from_event_log` extended: the raw log (to send as
    evidence), the banks and PCRs touched, and which event was tampered."""

    log_bytes: bytes
    banks: tuple[int, ...]
    pcrs: tuple[int, ...]
    extended_events: int
    tampered_index: int | None


def kernel_event_index(log_bytes: bytes) -> int:
    """Index (in the parsed log) of the last boot application measured into
    PCR 4 - the kernel (or the loader that starts it) in these logs."""
    from trusted_pools.tpm import eventlog
    log = eventlog.parse_event_log(log_bytes)
    candidates = [e.index for e in log.events if e.pcr == 4 and e.event_type
                  in (eventlog.EventType.EV_EFI_BOOT_SERVICES_APPLICATION,
                      eventlog.EventType.EV_IPL)]
    if not candidates:
        raise ValueError("no kernel/boot application event in PCR 4")
    return candidates[-1]


def boot_from_event_log(instance: SwtpmInstance, log_path: str | os.PathLike,
                        tamper: int | None = None,
                        tamper_input: bytes = TAMPERED_DIGEST_INPUT
                        ) -> BootResult:
    """Extend every extended event of the log at ``log_path`` into the
    instance's PCRs, in every bank both the log and the TPM have, so the
    TPM's PCRs equal the log's replay. With ``tamper`` (an event index from
    the parsed log, see :func:`kernel_event_index`) that one event is
    extended with a different digest instead, as if another kernel booted:
    the hash of ``tamper_input`` (what was measured instead).

    Logs with a StartupLocality event cannot be reproduced: a swtpm started
    with startup-clear at locality 0 starts PCR 0 at zero.
    """
    from trusted_pools.tpm import constants, eventlog
    log_bytes = Path(log_path).read_bytes()
    log = eventlog.parse_event_log(log_bytes)
    for event in log.events:
        if event.event_type == eventlog.EventType.EV_NO_ACTION \
                and event.data.startswith(b"StartupLocality\x00"):
            raise ValueError("%s has a StartupLocality event; a swtpm at "
                             "locality 0 cannot reproduce it" % log_path)
    banks = tuple(alg for alg in (constants.TPM_ALG.SHA1,
                                  constants.TPM_ALG.SHA256)
                  if alg in log.digest_sizes)
    extended, pcrs = 0, set()
    with instance.device() as device:
        for event in log.events:
            if not event.is_extended:
                continue
            digests = {alg: event.digests[alg] for alg in banks}
            if tamper is not None and event.index == tamper:
                digests = {alg: constants.hash_algorithm(alg).digest(
                    tamper_input) for alg in banks}
            device.pcr_extend(event.pcr, digests)
            extended += 1
            pcrs.add(event.pcr)
    if tamper is not None and not any(
            e.index == tamper and e.is_extended for e in log.events):
        raise ValueError("event %d is not an extended event" % tamper)
    return BootResult(log_bytes=log_bytes, banks=banks,
                      pcrs=tuple(sorted(pcrs)), extended_events=extended,
                      tampered_index=tamper)


# Logs without StartupLocality whose replay a swtpm can reproduce.
BOOTED_HOST_LOGS = {
    "arch-linux": EVENTLOG_DIR / "tpm2-tools" / "event-arch-linux.bin",
    "ubuntu-2104": EVENTLOG_DIR / "go-attestation"
    / "ubuntu_2104_shielded_vm_no_secure_boot_eventlog",
}


# --- pytest fixtures ---------------------------------------------------------

def _require_or_fail() -> None:
    try:
        require_binaries()
    except SwtpmMissing as exc:
        pytest.fail("swtpm test pool unavailable: %s" % exc, pytrace=False)


@pytest.fixture(scope="session")
def swtpm_binaries() -> None:
    """FAILS (never skips) when swtpm, swtpm_setup or swtpm_localca is
    missing, naming the binary and the apt-get line."""
    _require_or_fail()


@pytest.fixture(scope="session")
def swtpm_ca(tmp_path_factory, swtpm_binaries) -> LocalCA:
    """The local CA that signs every test TPM's EK certificate."""
    return LocalCA.create(tmp_path_factory.mktemp("swtpm-ca"))


@pytest.fixture(scope="session")
def swtpm_other_ca(tmp_path_factory, swtpm_binaries) -> LocalCA:
    """A second CA (same names, other keys) that verifiers do not trust."""
    return LocalCA.create(tmp_path_factory.mktemp("swtpm-other-ca"))


@pytest.fixture
def swtpm_pool(swtpm_ca, tmp_path) -> Iterator:
    """Factory: ``swtpm_pool(n)`` -> n running, provisioned TPMs; every
    TPM it started is stopped at teardown, also when the test fails."""
    pool = SwtpmPool(swtpm_ca, tmp_path / "swtpm-pool")

    def start(count: int = 1, ca: LocalCA | None = None
              ) -> list[SwtpmInstance]:
        if ca is not None and ca is not pool.ca:
            other = SwtpmPool(ca, tmp_path / ("swtpm-pool-%d"
                                              % len(pool.instances)))
            started = other.start(count)
            pool.instances.extend(other.instances)
            return started
        return pool.start(count)

    try:
        yield start
    finally:
        pool.close()


@pytest.fixture
def swtpm_instance(swtpm_pool) -> SwtpmInstance:
    """One running, provisioned TPM for this test."""
    return swtpm_pool(1)[0]


@pytest.fixture(scope="module")
def swtpm_module_pool(swtpm_ca, tmp_path_factory) -> Iterator:
    """Like ``swtpm_pool`` but shared by one test module: for tests that
    only read from their TPMs or tolerate each other's AKs and PCRs."""
    pool = SwtpmPool(swtpm_ca, tmp_path_factory.mktemp("swtpm-module-pool"))
    try:
        yield pool.start
    finally:
        pool.close()
