"""The default vTPM driver: one ``swtpm socket`` process per instance.

Layout on disk (``state_dir``, one directory per instance, mode 0700)::

    <state_dir>/<uuid>/metadata.json      what VTPMInfo.metadata shows
    <state_dir>/<uuid>/state-key.wrapped  the state key, wrapped to the host
    <state_dir>/<uuid>/tpm/               swtpm's state (AES-256-CBC + HMAC)
    <state_dir>/<uuid>/swtpm.pid          present while it should run
    <state_dir>/<uuid>/swtpm.log          swtpm's log
    <state_dir>/<uuid>/failed.json        why it died (until the next start)
    <state_dir>/<uuid>/migrating.json     leaving (cold export or live), start
                                          refused until aborted
    <state_dir>/<uuid>/migration-key.wrapped  this run's live-migration key,
                                          wrapped to the host
    <state_dir>/<uuid>/incoming.json      arriving by live migration
    <run_dir>/<uuid>.sock                 control channel (hypervisor)
    <run_dir>/<uuid>.data, .data.ctrl     data channel in host-access mode

State at rest is sealed to the host: every vTPM has its own 256-bit AES key
(swtpm ``--key ...,mode=aes-256-cbc``), RSA-OAEP-wrapped to the host
binding key, a decrypt-only key that never leaves the host's TPM
(:mod:`trusted_pools.tpm.sealing`). At each start the host TPM unwraps it and
the key reaches swtpm through an inherited pipe: it is never written to
disk. A state directory copied to another host does not decrypt there
(:class:`~trusted_pools.exception.VTPMKeyUnavailable`), a damaged state file
stops the start (:class:`~trusted_pools.exception.VTPMStateUnusable`): a
missing or unencrypted state is refused before swtpm runs, and swtpm's own
HMAC check over the decrypted state is made to fail at start
(``--flags not-need-init``), not at the guest's first command.

Live migration (QEMU carries the state blobs in its own stream; see
doc/source/vtpm-live-migration.md): swtpm 0.7 takes ``--migration-key``
only on its command line, and encrypts with it every state blob QEMU reads
over the control channel. So each start of a vTPM gets a fresh random
migration key, wrapped to the host binding key like the state key
(``migration-key.wrapped``) and handed to swtpm through a pipe;
:meth:`SwtpmDriver.live_migration_key` unwraps it for the migration
protocol. The destination (:meth:`SwtpmDriver.prepare_incoming`) runs a
swtpm with that migration key, a fresh state key of its own and an empty
state directory, waiting for QEMU to load the blobs.

swtpm runs in its own session (it outlives the agent); a new driver adopts
the running ones through their pid files, checked against /proc (the pid
must be a swtpm serving this instance's state directory), and reaps the
orphans (:meth:`SwtpmDriver.recover`).
"""

from __future__ import annotations

import errno
import hmac
import json
import logging
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from trusted_pools import exception
from trusted_pools.tpm import sealing
from trusted_pools.vtpm.driver import (
    MIGRATION_INCOMING, MIGRATION_OUTGOING, ProvisioningContext, Provisioner,
    StateExport, VTPMDriver, VTPMInfo, VTPMStatus, canonical_uuid)

__all__ = ["RecoveryReport", "SwtpmDriver", "STATE_FILE"]

LOG = logging.getLogger(__name__)

STATE_FILE = "tpm2-00.permall"
_STATE_FILES = re.compile(r"tpm2-00\.(permall|volatilestate)")
_UUID_DIR = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-"
                       r"[0-9a-f]{12}")
# swtpm state blob header: version, min_version, hdrsize, flags, totlen.
_HEADER = struct.Struct(">BBHHI")
_BLOB_FLAG_ENCRYPTED = 0x1
_BLOB_FLAG_ENCRYPTED_256BIT_KEY = 0x8
# swtpm control channel commands (swtpm's tpm_ioctl.h).
_CMD_GET_CAPABILITY = 1
_CMD_SHUTDOWN = 3
_CMD_GET_TPMESTABLISHED = 4
_SUN_PATH_MAX = 107
# OAEP label of the live-migration key at rest: distinct from the state
# key's, so the two wrapped files cannot stand in for each other.
_LABEL_MIGRATION_KEY = sealing.label("vtpm-live-migration-key")
_MIGRATION_KEY_SIZE = 32
# Where /proc/net/unix is unreadable: how long a control-channel command
# may go unanswered before the channel counts as held by a hypervisor
# (swtpm serves one client at a time; an idle swtpm answers in well under
# a millisecond).
_ATTACHED_PROBE_SECONDS = 0.25
_SS_CONNECTED = "03"
# A vTPM's metadata is a few hundred bytes (a provisioner's chain: a few
# KiB); what a source sends along with a live migration is capped.
_MAX_METADATA_BYTES = 64 * 1024
_PCR_BANKS = ("sha1", "sha256", "sha384", "sha512")
# What swtpm logs when its state does not decrypt or verify.
_STATE_ERRORS = ("HMAC", "decrypt", "Decrypt", "Could not initialize libtpms",
                 "NVRAM", "state")


@dataclass
class RecoveryReport:
    """What :meth:`SwtpmDriver.recover` found: instances whose swtpm was
    adopted, instances found dead (stale pid file, now FAILED), and pids of
    orphan swtpm processes it terminated."""

    adopted: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    reaped: list[int] = field(default_factory=list)


def _write_atomic(path: Path, data: bytes, mode: int = 0o600) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix="." + path.name)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with _suppress_oserror():
            os.unlink(tmp)
        raise


class _suppress_oserror:
    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type, exc, tb) -> bool:
        return exc_type is not None and issubclass(exc_type, OSError)


def _key_pipe(data: bytes) -> int:
    """A pipe holding ``data``; returns the read end (the write end is
    closed). The key lives in the kernel's pipe buffer, never on disk."""
    read_fd, write_fd = os.pipe()
    try:
        os.write(write_fd, data)
    finally:
        os.close(write_fd)
    return read_fd


def _cmdline(pid: int) -> list[bytes]:
    """argv of a live process; [] for one that is gone or a zombie."""
    try:
        raw = Path("/proc/%d/cmdline" % pid).read_bytes()
        with open("/proc/%d/stat" % pid, "rb") as f:
            if f.read().rsplit(b")", 1)[1].split()[0] in (b"Z", b"X"):
                return []
    except (OSError, IndexError):
        return []
    return raw.split(b"\0")


def _swtpm_state_dir(argv: list[bytes]) -> str | None:
    """The ``--tpmstate dir=`` of a swtpm command line, else None."""
    if not argv or not os.path.basename(argv[0]).startswith(b"swtpm"):
        return None
    for i, arg in enumerate(argv[:-1]):
        if arg == b"--tpmstate":
            for part in argv[i + 1].split(b","):
                if part.startswith(b"dir="):
                    return os.fsdecode(part[4:])
    return None


def _ctrl(path: str, command: int, response_size: int,
          timeout: float) -> bytes:
    """One command on swtpm's control channel; the raw response."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(struct.pack(">I", command))
        data = b""
        while len(data) < response_size:
            chunk = sock.recv(response_size - len(data))
            if not chunk:
                break
            data += chunk
        return data


class SwtpmDriver(VTPMDriver):
    """vTPMs as ``swtpm socket`` processes (see the module docstring).

    ``host_tcti`` reaches the host's TPM (the binding key lives there);
    ``binding_key_handle`` is where that key is kept, created on first use
    (with a PolicyPCR over ``binding_pcrs``, ``{bank alg id: [pcr, ...]}``,
    if given). ``host_runner(action)``, when given, runs ``action(device)``
    on the agent's own host TPM connection (the attester's); otherwise the
    driver opens ``host_tcti`` for each use. ``setup_config`` is a ``swtpm_setup.conf`` (its
    ``create_certs_tool`` makes the EK and platform certificates); None uses
    swtpm's default (``/etc/swtpm_setup.conf``, swtpm's local CA).
    """

    name = "swtpm"

    def __init__(self, state_dir: str | os.PathLike, host_tcti: str, *,
                 run_dir: str | os.PathLike | None = None,
                 binding_key_handle: int = 0x81008002,
                 binding_pcrs: Mapping[int, list[int]] | None = None,
                 ek_kind: str = "rsa2048",
                 pcr_banks: tuple[str, ...] | list[str] = ("sha256",),
                 swtpm: str = "swtpm", swtpm_setup: str = "swtpm_setup",
                 setup_config: str | None = None,
                 create_certificates: bool = True, log_level: int = 1,
                 start_timeout: float = 10.0, stop_timeout: float = 10.0,
                 provisioner: Provisioner | None = None,
                 host_runner: Callable[[Callable[[Any], Any]], Any]
                 | None = None,
                 recover: bool = True) -> None:
        banks = tuple(pcr_banks)
        if not banks or any(b not in _PCR_BANKS for b in banks):
            raise exception.InvalidParameterValue(
                name="pcr_banks", reason="one or more of %s"
                % ", ".join(_PCR_BANKS))
        self.state_dir = Path(state_dir).resolve()
        self.run_dir = Path(run_dir).resolve() if run_dir else self.state_dir
        self.host_tcti = host_tcti
        self.binding_key_handle = binding_key_handle
        self.binding_pcrs = {int(a): sorted(p) for a, p in
                             (binding_pcrs or {}).items()} or None
        self.ek_kind = ek_kind
        self.pcr_banks = banks
        self.swtpm = shutil.which(swtpm) or swtpm
        self.swtpm_setup = shutil.which(swtpm_setup) or swtpm_setup
        for what, path in (("swtpm", self.swtpm),
                           ("swtpm_setup", self.swtpm_setup)):
            if not os.access(path, os.X_OK):
                raise exception.ConfigInvalid(
                    reason="%s binary %r not found (apt-get install swtpm "
                    "swtpm-tools)" % (what, path))
        self.setup_config = setup_config
        self.create_certificates = create_certificates
        self.log_level = log_level
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.default_provisioner = provisioner
        self._children: dict[str, subprocess.Popen] = {}
        self._lock = threading.RLock()
        self._host_lock = threading.Lock()
        self._key_lock = threading.Lock()
        self._host_runner = host_runner
        self._binding_public: bytes | None = None
        for d in (self.state_dir, self.run_dir):
            d.mkdir(parents=True, exist_ok=True, mode=0o700)
        if len(str(self._data_socket("0" * 36) + ".ctrl")) > _SUN_PATH_MAX:
            raise exception.ConfigInvalid(
                reason="[vtpm] run_dir %s is too long for UNIX socket paths "
                "(%d bytes at most with the instance names)"
                % (self.run_dir, _SUN_PATH_MAX - 51))
        self.last_recovery = self.recover() if recover else None

    @classmethod
    def from_conf(cls, conf: Any, **kwargs: Any) -> "SwtpmDriver":
        """From ``[vtpm]`` (and ``[tpm]``); ``kwargs`` add what config
        cannot say (``host_runner``, ``provisioner``)."""
        v = conf.vtpm
        from trusted_pools.conf.vtpm import parse_pcr_selection
        return cls(v.state_dir, v.host_tcti or conf.tpm.tcti,
                   run_dir=v.run_dir,
                   binding_key_handle=int(v.binding_key_handle, 16),
                   binding_pcrs=parse_pcr_selection(v.binding_key_pcrs),
                   ek_kind=conf.tpm.ek_kind, pcr_banks=v.pcr_banks,
                   swtpm=v.swtpm_path, swtpm_setup=v.swtpm_setup_path,
                   setup_config=v.swtpm_setup_config or None,
                   create_certificates=v.create_certificates,
                   log_level=v.swtpm_log_level,
                   start_timeout=v.start_timeout,
                   stop_timeout=v.stop_timeout, **kwargs)

    # --- paths ---------------------------------------------------------------

    def _dir(self, uuid: str) -> Path:
        return self.state_dir / uuid

    def _tpm_dir(self, uuid: str) -> Path:
        return self._dir(uuid) / "tpm"

    def _pid_file(self, uuid: str) -> Path:
        return self._dir(uuid) / "swtpm.pid"

    def socket_path(self, instance_uuid: str) -> str:
        return str(self.run_dir / ("%s.sock" % canonical_uuid(instance_uuid)))

    def _data_socket(self, uuid: str) -> str:
        return str(self.run_dir / ("%s.data" % uuid))

    def tcti(self, instance_uuid: str) -> str:
        """TCTI string of the data channel of a vTPM started with
        ``host_access=True`` (tests and maintenance; never with a guest)."""
        return "swtpm:path=%s" % self._data_socket(
            canonical_uuid(instance_uuid))

    # --- the host TPM and the state key ------------------------------------

    def _with_host(self, action: Callable[[Any], Any]) -> Any:
        """Run ``action(TPMDevice)`` on the host TPM: through the agent's
        shared connection when one was given (a swtpm host TPM serves one
        connection at a time), else on a connection of our own."""
        if self._host_runner is not None:
            return self._host_runner(action)
        from trusted_pools.tpm.device import TPMDevice
        with self._host_lock, TPMDevice(self.host_tcti) as dev:
            return action(dev)

    def binding_key_public(self) -> bytes:
        """TPMT_PUBLIC of this host's binding key (created on first use)."""
        with self._key_lock:
            if self._binding_public is None:
                key = self._with_host(self._load_or_create_binding_key)
                public = sealing.check_binding_key_attributes(key.public)
                if bool(public.auth_policy) != bool(self.binding_pcrs):
                    raise exception.ConfigInvalid(
                        reason="the binding key at %#x %s a PCR policy but "
                        "[vtpm] binding_key_pcrs is %s" % (
                            self.binding_key_handle,
                            "has" if public.auth_policy else "has no",
                            "set" if self.binding_pcrs else "empty"))
                self._binding_public = key.public
            return self._binding_public

    def _load_or_create_binding_key(self, dev: Any) -> Any:
        if self.binding_key_handle in dev.persistent_handles():
            return dev.load_binding_key(self.binding_key_handle)
        LOG.info("creating the host binding key at %#x",
                 self.binding_key_handle)
        return dev.create_binding_key(
            self.binding_key_handle, pcr_selection=self.binding_pcrs,
            ek_kind=self.ek_kind)

    def _unwrap(self, uuid: str, wrapped: bytes,
                label: bytes = sealing.LABEL_VTPM_STATE) -> bytes:
        try:
            key = self._with_host(lambda dev: dev.rsa_decrypt(
                self.binding_key_handle, wrapped, label,
                pcr_selection=self.binding_pcrs))
        except exception.TPMError as exc:
            why = exc.kwargs.get("name") or str(exc)
            if why == "TPM_RC_POLICY_FAIL":
                reason = ("the host's PCRs no longer match the binding "
                          "key's PCR policy (the host booted something "
                          "else)")
            elif why == "TPM_RC_HANDLE":
                reason = "this host's TPM has no binding key"
            else:
                reason = ("the host TPM could not decrypt the wrapped "
                          "key (%s): it was wrapped for another TPM or "
                          "is damaged" % why)
            raise exception.VTPMKeyUnavailable(instance=uuid,
                                               reason=reason) from None
        if len(key) != 32:
            raise exception.VTPMKeyUnavailable(
                instance=uuid, reason="the unwrapped key is %d bytes, not "
                "32" % len(key))
        return key

    def _wrapped_key(self, uuid: str, name: str = "state-key.wrapped"
                     ) -> bytes:
        try:
            return (self._dir(uuid) / name).read_bytes()
        except FileNotFoundError:
            raise exception.VTPMStateUnusable(
                instance=uuid, reason="%s is missing" % name) from None

    def _migration_key(self, uuid: str) -> bytes:
        """This run's live-migration key (:meth:`_new_migration_key`),
        unwrapped."""
        return self._unwrap(uuid, self._wrapped_key(
            uuid, "migration-key.wrapped"), _LABEL_MIGRATION_KEY)

    def _check_state_file(self, uuid: str) -> None:
        path = self._tpm_dir(uuid) / STATE_FILE
        try:
            with open(path, "rb") as f:
                head = f.read(_HEADER.size)
                size = os.fstat(f.fileno()).st_size
        except FileNotFoundError:
            raise exception.VTPMStateUnusable(
                instance=uuid, reason="%s is missing (swtpm would make a "
                "fresh TPM)" % STATE_FILE) from None
        if len(head) < _HEADER.size:
            raise exception.VTPMStateUnusable(
                instance=uuid, reason="%s is truncated (%d bytes)"
                % (STATE_FILE, size))
        version, _, hdrsize, flags, total = _HEADER.unpack(head)
        if version != 2 or hdrsize != _HEADER.size or total != size:
            raise exception.VTPMStateUnusable(
                instance=uuid, reason="%s has no valid swtpm header "
                "(version %d, header %d bytes, length %d of %d)"
                % (STATE_FILE, version, hdrsize, total, size))
        want = _BLOB_FLAG_ENCRYPTED | _BLOB_FLAG_ENCRYPTED_256BIT_KEY
        if flags & want != want:
            raise exception.VTPMStateUnusable(
                instance=uuid, reason="%s is not encrypted with a 256-bit "
                "key (flags %#x)" % (STATE_FILE, flags))

    # --- metadata ------------------------------------------------------------

    def _metadata(self, uuid: str) -> dict:
        path = self._dir(uuid) / "metadata.json"
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            raise exception.VTPMNotFound(instance=uuid) from None
        except ValueError as exc:
            raise exception.VTPMStateUnusable(
                instance=uuid, reason="metadata.json is not JSON: %s" % exc) \
                from None

    def _write_metadata(self, uuid: str, metadata: Mapping[str, Any]) -> None:
        _write_atomic(self._dir(uuid) / "metadata.json",
                      json.dumps(metadata, indent=1, sort_keys=True).encode())

    def _read_json(self, path: Path) -> dict | None:
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None

    # --- processes -----------------------------------------------------------

    def _read_pid(self, uuid: str) -> int | None:
        try:
            return int(self._pid_file(uuid).read_text().strip())
        except (OSError, ValueError):
            return None

    def _alive(self, uuid: str, pid: int) -> bool:
        """``pid`` is a live swtpm serving this instance's state."""
        child = self._children.get(uuid)
        if child is not None and child.pid == pid and \
                child.poll() is not None:
            return False
        self._reap(pid)
        state = _swtpm_state_dir(_cmdline(pid))
        return state is not None and \
            os.path.realpath(state) == str(self._tpm_dir(uuid))

    @staticmethod
    def _reap(pid: int) -> None:
        """Collect ``pid`` if it is a dead child of this process (a driver
        of this process started it), so it does not stay a zombie."""
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass

    def _signal_and_wait(self, pid: int, check) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                return
            deadline = time.monotonic() + self.stop_timeout / 2
            while time.monotonic() < deadline:
                self._reap(pid)
                if not check():
                    return
                time.sleep(0.01)

    def _cleanup_run_files(self, uuid: str) -> None:
        for path in (self.socket_path(uuid), self._data_socket(uuid),
                     self._data_socket(uuid) + ".ctrl"):
            with _suppress_oserror():
                os.unlink(path)

    def _log_tail(self, uuid: str, lines: int = 6) -> str:
        try:
            text = (self._dir(uuid) / "swtpm.log").read_text(errors="replace")
        except OSError:
            return ""
        tail = [line.strip() for line in text.splitlines() if line.strip()]
        return " | ".join(tail[-lines:])

    def _record_failure(self, uuid: str, reason: str) -> None:
        LOG.error("vTPM of instance %s failed: %s", uuid, reason)
        _write_atomic(self._dir(uuid) / "failed.json", json.dumps(
            {"reason": reason, "at": time.time()}).encode())

    def _wrong_state(self, uuid: str, operation: str, expected: str, *,
                     info: VTPMInfo | None = None,
                     with_reason: bool = False
                     ) -> exception.VTPMInvalidState:
        """The refusal of ``operation`` on a vTPM in another state than
        ``expected``: its status (``info``, or read now), and with
        ``with_reason`` why it is in it."""
        if info is None:
            info = self.status(uuid)
        state = info.status.value
        if with_reason:
            state = "%s (%s)" % (state, info.reason)
        return exception.VTPMInvalidState(instance=uuid, state=state,
                                          operation=operation,
                                          expected=expected)

    # --- status --------------------------------------------------------------

    def _migration_record(self, uuid: str) -> tuple[str, dict] | None:
        """(direction, record) of a vTPM leaving (migrating.json) or
        arriving (incoming.json); None otherwise."""
        incoming = self._read_json(self._dir(uuid) / "incoming.json")
        if incoming is not None:
            return MIGRATION_INCOMING, incoming
        outgoing = self._read_json(self._dir(uuid) / "migrating.json")
        if outgoing is not None:
            return MIGRATION_OUTGOING, outgoing
        return None

    def status(self, instance_uuid: str) -> VTPMInfo:
        uuid = canonical_uuid(instance_uuid)
        with self._lock:
            metadata = self._metadata(uuid)
            record = self._migration_record(uuid)
            direction = record[0] if record else None
            pid = self._read_pid(uuid)
            if pid is not None:
                if self._alive(uuid, pid):
                    if record is not None:
                        return VTPMInfo(uuid, VTPMStatus.MIGRATING,
                                        reason=record[1].get("reason"),
                                        pid=pid,
                                        socket_path=self.socket_path(uuid),
                                        metadata=metadata,
                                        migration=direction)
                    return VTPMInfo(uuid, VTPMStatus.RUNNING, pid=pid,
                                    socket_path=self.socket_path(uuid),
                                    metadata=metadata)
                # It should run and does not. Our own child that exited
                # with 0 was shut down by its client (QEMU quitting sends
                # CMD_SHUTDOWN); anything else crashed or was killed. An
                # incoming vTPM that exits before the migration finished
                # failed whatever its exit status.
                child = self._children.pop(uuid, None)
                code = child.poll() if child is not None else None
                if direction == MIGRATION_INCOMING:
                    tail = self._log_tail(uuid, 2)
                    self._record_failure(
                        uuid, "the incoming swtpm (pid %d) exited before "
                        "the live migration was finished%s%s" % (
                            pid, "" if code is None else
                            " (exit status %d)" % code,
                            ": " + tail if tail else ""))
                elif code == 0:
                    LOG.info("vTPM of instance %s was shut down by its "
                             "hypervisor", uuid)
                else:
                    tail = self._log_tail(uuid, 2)
                    self._record_failure(
                        uuid, "swtpm (pid %d) exited without being stopped"
                        "%s%s" % (pid, "" if code is None else
                                  " (exit status %d)" % code,
                                  ": " + tail if tail else ""))
                with _suppress_oserror():
                    self._pid_file(uuid).unlink()
                self._cleanup_run_files(uuid)
            failed = self._read_json(self._dir(uuid) / "failed.json")
            if direction == MIGRATION_OUTGOING:
                # Leaving: MIGRATING until the caller commits or aborts,
                # even when its swtpm died (its state is still the latest).
                reason = record[1].get("reason")
                if failed is not None:
                    reason = "%s; %s" % (reason, failed.get("reason"))
                return VTPMInfo(uuid, VTPMStatus.MIGRATING, reason=reason,
                                metadata=metadata, migration=direction)
            if failed is not None:
                return VTPMInfo(uuid, VTPMStatus.FAILED,
                                reason=failed.get("reason"),
                                metadata=metadata, migration=direction)
            if direction == MIGRATION_INCOMING:
                # Made but its swtpm never ran (a crash in prepare).
                return VTPMInfo(uuid, VTPMStatus.FAILED,
                                reason="the incoming swtpm is not running",
                                metadata=metadata, migration=direction)
            return VTPMInfo(uuid, VTPMStatus.STOPPED, metadata=metadata)

    def list(self) -> list[VTPMInfo]:
        infos = []
        for entry in sorted(os.listdir(self.state_dir)):
            if _UUID_DIR.fullmatch(entry) and \
                    (self.state_dir / entry / "metadata.json").exists():
                try:
                    infos.append(self.status(entry))
                except exception.VTPMNotFound:
                    continue  # destroyed meanwhile
        return infos

    def check(self) -> list[VTPMInfo]:
        failed = super().check()
        for info in failed:
            LOG.warning("vTPM of instance %s is failed: %s",
                        info.instance_uuid, info.reason)
        return failed

    def recover(self) -> RecoveryReport:
        """Adopt running swtpm processes, mark dead ones FAILED, terminate
        orphans: a swtpm serving a state directory under ``state_dir`` of
        an instance that no longer exists (destroyed), or that is not the
        process its instance's pid file names."""
        report = RecoveryReport()
        with self._lock:
            owners: dict[int, str] = {}
            for entry in sorted(os.listdir(self.state_dir)):
                if not _UUID_DIR.fullmatch(entry):
                    continue
                pid = self._read_pid(entry)
                if pid is None:
                    continue
                if not (self.state_dir / entry / "metadata.json").exists():
                    continue  # half-made or destroyed: orphan scan below
                if self._alive(entry, pid):
                    owners[pid] = entry
                    report.adopted.append(entry)
                    LOG.info("adopted the running vTPM of instance %s "
                             "(swtpm pid %d)", entry, pid)
                else:
                    self.status(entry)  # records the failure
                    report.failed.append(entry)
            prefix = str(self.state_dir) + os.sep
            for name in os.listdir("/proc"):
                if not name.isdigit():
                    continue
                pid = int(name)
                state = _swtpm_state_dir(_cmdline(pid))
                if state is None:
                    continue
                state = os.path.realpath(state)
                if not state.startswith(prefix) or pid in owners:
                    continue
                uuid = state[len(prefix):].split(os.sep)[0]
                if (self.state_dir / uuid / "metadata.json").exists() and \
                        self._read_pid(uuid) == pid:
                    continue  # an instance being created right now
                LOG.warning("terminating orphan swtpm pid %d (state %s)",
                            pid, state)
                self._signal_and_wait(
                    pid, lambda p=pid, s=state:
                    _swtpm_state_dir(_cmdline(p)) is not None)
                report.reaped.append(pid)
        return report

    # --- lifecycle -----------------------------------------------------------

    def _new_instance_dir(self, uuid: str) -> Path:
        """The instance's directory, made now (mode 0700): a vTPM that
        exists already is :class:`VTPMExists`."""
        directory = self._dir(uuid)
        with self._lock:
            try:
                directory.mkdir(mode=0o700)
            except FileExistsError:
                raise exception.VTPMExists(instance=uuid) from None
        return directory

    def create(self, instance_uuid: str, *,
               provisioner: Provisioner | None = None,
               metadata: Mapping[str, Any] | None = None) -> VTPMInfo:
        uuid = canonical_uuid(instance_uuid)
        provisioner = provisioner or self.default_provisioner
        binding_public = self.binding_key_public()
        directory = self._new_instance_dir(uuid)
        try:
            key = sealing.new_secret(32)
            _write_atomic(directory / "state-key.wrapped",
                          sealing.wrap_secret(binding_public, key,
                                              sealing.LABEL_VTPM_STATE))
            self._manufacture(uuid, key)
            del key
            data = {"instance_uuid": uuid, "driver": self.name,
                    "created_at": time.time(),
                    "pcr_banks": list(self.pcr_banks),
                    "binding_key": {
                        "handle": "%#x" % self.binding_key_handle,
                        "name": sealing.check_binding_key_attributes(
                            binding_public).name().hex()},
                    "user": dict(metadata or {})}
            self._write_metadata(uuid, data)
            if provisioner is not None:
                data["provisioner"] = self._provision(uuid, provisioner,
                                                      data)
                self._write_metadata(uuid, data)
        except BaseException:
            LOG.exception("creating the vTPM of instance %s failed; erasing "
                          "it", uuid)
            self._erase(uuid)
            raise
        LOG.info("created the vTPM of instance %s", uuid)
        return self.status(uuid)

    def _manufacture(self, uuid: str, key: bytes) -> None:
        tpm_dir = self._tpm_dir(uuid)
        tpm_dir.mkdir(mode=0o700)
        argv = [self.swtpm_setup, "--tpm2", "--tpmstate", str(tpm_dir),
                "--createek", "--lock-nvram",
                "--pcr-banks", ",".join(self.pcr_banks),
                "--vmid", uuid, "--cipher", "aes-256-cbc",
                "--logfile", str(self._dir(uuid) / "setup.log")]
        if self.create_certificates:
            argv += ["--create-ek-cert", "--create-platform-cert"]
        if self.setup_config:
            argv += ["--config", self.setup_config]
        key_fd = _key_pipe(key.hex().encode())
        try:
            argv += ["--keyfile-fd", str(key_fd)]
            try:
                proc = subprocess.run(
                    argv, stdin=subprocess.DEVNULL, capture_output=True,
                    text=True, pass_fds=(key_fd,), timeout=120)
            except subprocess.TimeoutExpired:
                raise exception.VTPMStartFailed(
                    instance=uuid, reason="swtpm_setup timed out") from None
        finally:
            os.close(key_fd)
        if proc.returncode != 0:
            try:
                log = (self._dir(uuid) / "setup.log").read_text()[-1500:]
            except OSError:
                log = ""
            raise exception.VTPMStartFailed(
                instance=uuid, reason="swtpm_setup failed (exit %d): %s %s"
                % (proc.returncode, proc.stderr[-500:], log))
        self._wait_unlocked(uuid)

    def _wait_unlocked(self, uuid: str) -> None:
        """swtpm_setup's own swtpm may hold the state lock a moment after
        swtpm_setup returned; a swtpm started then would exit."""
        import fcntl
        lock_path = self._tpm_dir(uuid) / ".lock"
        if not lock_path.exists():
            return
        deadline = time.monotonic() + self.start_timeout
        with open(lock_path, "a") as lock:
            while True:
                try:
                    fcntl.lockf(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    fcntl.lockf(lock, fcntl.LOCK_UN)
                    return
                except OSError:
                    if time.monotonic() > deadline:
                        raise exception.VTPMStartFailed(
                            instance=uuid, reason="the state stays locked "
                            "by another swtpm") from None
                    time.sleep(0.01)

    def _provision(self, uuid: str, provisioner: Provisioner,
                   metadata: Mapping[str, Any]) -> dict:
        self.start(uuid, host_access=True)
        try:
            result = provisioner(ProvisioningContext(
                instance_uuid=uuid, tcti=self.tcti(uuid),
                metadata=dict(metadata)))
        finally:
            self.stop(uuid)
        result = dict(result or {})
        json.dumps(result)  # TypeError now rather than a broken file later
        return result

    def provision(self, instance_uuid: str,
                  provisioner: Provisioner) -> dict:
        """Run ``provisioner`` on a stopped vTPM (maintenance: start with
        host access, call, stop); its result replaces
        ``metadata["provisioner"]``."""
        uuid = canonical_uuid(instance_uuid)
        info = self.status(uuid)
        if info.status is not VTPMStatus.STOPPED:
            raise self._wrong_state(uuid, "provision", "stopped", info=info)
        data = dict(info.metadata)
        data["provisioner"] = self._provision(uuid, provisioner, data)
        self._write_metadata(uuid, data)
        return data["provisioner"]

    def start(self, instance_uuid: str, *,
              host_access: bool = False) -> VTPMInfo:
        """Run the vTPM for a hypervisor (control channel at
        :meth:`socket_path`; the firmware sends TPM2_Startup). With
        ``host_access`` it also serves a data channel for host-side TPM
        commands at :meth:`tcti`, TPM2_Startup done: for provisioning and
        tests, never with a guest attached."""
        uuid = canonical_uuid(instance_uuid)
        with self._lock:
            info = self.status(uuid)
            if info.status is VTPMStatus.RUNNING:
                return info
            if info.migration is not None:
                # A vTPM leaving or arriving must not run a second copy
                # (a FAILED incoming one included).
                raise exception.VTPMInvalidState(
                    instance=uuid, state="%s (%s)" % (info.status.value,
                                                      info.migration),
                    operation="start", expected="stopped or failed (abort "
                    "or finish the migration first)")
            self._check_state_file(uuid)
            key = self._unwrap(uuid, self._wrapped_key(uuid))
            migration_key = self._new_migration_key(uuid)
            self._launch(uuid, key, host_access, migration_key=migration_key)
            del key, migration_key
            with _suppress_oserror():
                (self._dir(uuid) / "failed.json").unlink()
            LOG.info("started the vTPM of instance %s", uuid)
            return self.status(uuid)

    def _new_migration_key(self, uuid: str) -> bytes:
        """A fresh live-migration key for the swtpm about to start, kept
        wrapped to this host's binding key (swtpm takes it only at start,
        so it lives as long as this run)."""
        key = sealing.new_secret(_MIGRATION_KEY_SIZE)
        _write_atomic(self._dir(uuid) / "migration-key.wrapped",
                      sealing.wrap_secret(self.binding_key_public(), key,
                                          _LABEL_MIGRATION_KEY))
        return key

    def _launch(self, uuid: str, key: bytes, host_access: bool, *,
                migration_key: bytes | None = None,
                incoming: bool = False) -> None:
        """Run swtpm on the instance's state with ``key``. ``incoming``:
        the state directory is empty and QEMU (``-incoming``) will load
        the state blobs, so libtpms must not initialise now (it would make
        a fresh TPM)."""
        self._wait_unlocked(uuid)
        self._cleanup_run_files(uuid)
        ctrl = self.socket_path(uuid)
        pid_file = self._pid_file(uuid)
        log_file = self._dir(uuid) / "swtpm.log"
        key_fd = _key_pipe(key)
        fds = [key_fd]
        argv = [self.swtpm, "socket", "--tpm2",
                "--tpmstate", "dir=%s,mode=0600" % self._tpm_dir(uuid),
                "--ctrl", "type=unixio,path=%s,mode=0600" % ctrl,
                "--key", "fd=%d,mode=aes-256-cbc,format=binary" % key_fd,
                "--pid", "file=%s" % pid_file,
                "--log", "file=%s,level=%d" % (log_file, self.log_level)]
        if not incoming:
            argv += ["--flags", "not-need-init"
                     + (",startup-clear" if host_access else "")]
        try:
            if migration_key is not None:
                fds.append(_key_pipe(migration_key))
                argv += ["--migration-key",
                         "fd=%d,mode=aes-256-cbc,format=binary" % fds[-1]]
            if host_access:
                data = self._data_socket(uuid)
                argv += ["--server", "type=unixio,path=%s,mode=0600" % data]
            with open(log_file, "ab") as log:
                process = subprocess.Popen(
                    argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                    pass_fds=tuple(fds), start_new_session=True)
        finally:
            for fd in fds:
                os.close(fd)
        self._children[uuid] = process
        try:
            if incoming:
                self._wait_listening(uuid, process)
            else:
                self._wait_ready(uuid, process)
        except BaseException:
            if process.poll() is None:
                process.kill()
            process.wait()
            self._children.pop(uuid, None)
            with _suppress_oserror():
                pid_file.unlink()
            self._cleanup_run_files(uuid)
            raise
        # swtpm writes its pid file itself; make sure it names this child.
        _write_atomic(pid_file, b"%d\n" % process.pid, 0o644)
        if host_access:
            os.symlink(ctrl, self._data_socket(uuid) + ".ctrl")

    def _check_starting(self, uuid: str, process: subprocess.Popen,
                        ctrl: str, deadline: float) -> None:
        """A starting swtpm that exited, or has not answered by
        ``deadline``, is a failed start."""
        if process.poll() is not None:
            self._raise_start_failure(uuid, process.returncode)
        if time.monotonic() > deadline:
            raise exception.VTPMStartFailed(
                instance=uuid, reason="no answer on %s within %.0f s"
                % (ctrl, self.start_timeout))

    def _wait_ready(self, uuid: str, process: subprocess.Popen) -> None:
        """Until the TPM answers on its control channel with libtpms
        initialised (``not-need-init``: the state was decrypted, its HMAC
        checked); a state that does not decrypt makes swtpm exit."""
        ctrl = self.socket_path(uuid)
        deadline = time.monotonic() + self.start_timeout
        while True:
            self._check_starting(uuid, process, ctrl, deadline)
            if os.path.exists(ctrl):
                try:
                    answer = _ctrl(ctrl, _CMD_GET_TPMESTABLISHED, 8,
                                   timeout=self.start_timeout)
                except OSError as exc:
                    if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
                        # Bound but not listening yet.
                        time.sleep(0.002)
                        continue
                    if exc.errno not in (errno.ECONNRESET, errno.EPIPE):
                        raise
                    answer = b""
                if len(answer) >= 4:
                    if struct.unpack(">I", answer[:4])[0] == 0:
                        return
                    raise exception.VTPMStartFailed(
                        instance=uuid, reason="swtpm answered %s: %s"
                        % (answer.hex(), self._log_tail(uuid)))
                if answer == b"":
                    # Connection closed: it is going down. Let it finish.
                    try:
                        process.wait(self.start_timeout)
                    except subprocess.TimeoutExpired:
                        pass
                    continue
            time.sleep(0.002)

    def _wait_listening(self, uuid: str, process: subprocess.Popen) -> None:
        """Until an incoming swtpm answers CMD_GET_CAPABILITY (libtpms is
        not initialised yet: that waits for QEMU's state blobs)."""
        ctrl = self.socket_path(uuid)
        deadline = time.monotonic() + self.start_timeout
        while True:
            self._check_starting(uuid, process, ctrl, deadline)
            if os.path.exists(ctrl):
                try:
                    # The answer is the 64-bit capability mask alone.
                    answer = _ctrl(ctrl, _CMD_GET_CAPABILITY, 8,
                                   timeout=self.start_timeout)
                except OSError as exc:
                    if exc.errno not in (errno.ECONNREFUSED, errno.ENOENT,
                                         errno.ECONNRESET, errno.EPIPE):
                        raise
                    answer = b""
                if len(answer) >= 4:
                    if struct.unpack(">I", answer[:4])[0] == 0:
                        return
                    raise exception.VTPMStartFailed(
                        instance=uuid, reason="swtpm answered %s: %s"
                        % (answer.hex(), self._log_tail(uuid)))
            time.sleep(0.002)

    def _raise_start_failure(self, uuid: str, code: int) -> None:
        tail = self._log_tail(uuid)
        if any(word in tail for word in _STATE_ERRORS):
            raise exception.VTPMStateUnusable(
                instance=uuid, reason="swtpm could not decrypt or verify the "
                "state (exit %d): %s" % (code, tail))
        raise exception.VTPMStartFailed(
            instance=uuid, reason="swtpm exited with %d: %s" % (code, tail))

    def stop(self, instance_uuid: str) -> VTPMInfo:
        """CMD_SHUTDOWN on the control channel (swtpm writes its state and
        exits); SIGTERM, then SIGKILL, if it does not go (a hypervisor
        holding the control channel, say)."""
        uuid = canonical_uuid(instance_uuid)
        with self._lock:
            info = self.status(uuid)
            if info.status is not VTPMStatus.RUNNING:
                return info
            pid = info.pid
            assert pid is not None
            try:
                _ctrl(self.socket_path(uuid), _CMD_SHUTDOWN, 4,
                      timeout=min(2.0, self.stop_timeout))
            except OSError as exc:
                LOG.warning("vTPM of instance %s: no graceful shutdown "
                            "(%s); terminating swtpm", uuid, exc)
            deadline = time.monotonic() + self.stop_timeout / 2
            while time.monotonic() < deadline and self._alive(uuid, pid):
                time.sleep(0.005)
            if self._alive(uuid, pid):
                self._signal_and_wait(pid, lambda: self._alive(uuid, pid))
            child = self._children.pop(uuid, None)
            if child is not None:
                child.wait()
            with _suppress_oserror():
                self._pid_file(uuid).unlink()
            self._cleanup_run_files(uuid)
            LOG.info("stopped the vTPM of instance %s", uuid)
            return self.status(uuid)

    def destroy(self, instance_uuid: str) -> None:
        uuid = canonical_uuid(instance_uuid)
        with self._lock:
            info = self.status(uuid)  # VTPMNotFound if there is none
            if info.status is VTPMStatus.RUNNING:
                self.stop(uuid)
            self._erase(uuid)
            LOG.info("destroyed the vTPM of instance %s", uuid)

    def _erase(self, uuid: str) -> None:
        directory = self._dir(uuid)
        pid = self._read_pid(uuid)
        if pid is not None and self._alive(uuid, pid):
            self._signal_and_wait(pid, lambda: self._alive(uuid, pid))
        self._children.pop(uuid, None)
        # The metadata goes first: a crash half-way leaves an orphan
        # directory that recover() treats as destroyed.
        for name in ("metadata.json", "state-key.wrapped",
                     "migration-key.wrapped"):
            path = directory / name
            with _suppress_oserror():
                size = path.stat().st_size
                with open(path, "r+b") as f:
                    f.write(os.urandom(size))
                    f.flush()
                    os.fsync(f.fileno())
                path.unlink()
        shutil.rmtree(directory, ignore_errors=True)
        self._cleanup_run_files(uuid)

    # --- cold migration ------------------------------------------------------

    def export_state(self, instance_uuid: str, *, destination_key: Any,
                     live: bool = False) -> StateExport:
        uuid = canonical_uuid(instance_uuid)
        if live:
            raise exception.VTPMOperationNotSupported(
                driver=self.name, operation="live export_state",
                reason="a running guest's vTPM state travels in QEMU's own "
                "migration stream; not built yet")
        if not isinstance(destination_key, sealing.VerifiedBindingKey):
            raise TypeError("destination_key must be a VerifiedBindingKey "
                            "(check the destination's certification first)")
        with self._lock:
            info = self.status(uuid)
            if info.status is not VTPMStatus.STOPPED:
                raise self._wrong_state(uuid, "export_state", "stopped",
                                        info=info)
            self._check_state_file(uuid)
            key = self._unwrap(uuid, self._wrapped_key(uuid))
            files = {p.name: p.read_bytes()
                     for p in sorted(self._tpm_dir(uuid).iterdir())
                     if _STATE_FILES.fullmatch(p.name)}
            wrapped = sealing.wrap_secret(destination_key, key,
                                          sealing.LABEL_VTPM_STATE)
            del key
            _write_atomic(self._dir(uuid) / "migrating.json", json.dumps(
                {"reason": "state exported for a cold migration",
                 "at": time.time()}).encode())
            return StateExport(instance_uuid=uuid, driver=self.name,
                               metadata=dict(info.metadata), files=files,
                               wrapped_key=wrapped)

    def cancel_migration(self, instance_uuid: str) -> VTPMInfo:
        uuid = canonical_uuid(instance_uuid)
        with self._lock:
            self._metadata(uuid)
            with _suppress_oserror():
                (self._dir(uuid) / "migrating.json").unlink()
            return self.status(uuid)

    def import_state(self, export: StateExport) -> VTPMInfo:
        uuid = canonical_uuid(export.instance_uuid)
        if export.driver != self.name:
            raise exception.InvalidParameterValue(
                name="export", reason="made by driver %r, not %r"
                % (export.driver, self.name))
        if STATE_FILE not in export.files or any(
                not _STATE_FILES.fullmatch(n) for n in export.files):
            raise exception.InvalidParameterValue(
                name="export", reason="state files must be %s (and the "
                "volatile state)" % STATE_FILE)
        directory = self._new_instance_dir(uuid)
        try:
            self._tpm_dir(uuid).mkdir(mode=0o700)
            for name, data in export.files.items():
                _write_atomic(self._tpm_dir(uuid) / name, data)
            _write_atomic(directory / "state-key.wrapped",
                          export.wrapped_key)
            data = dict(export.metadata)
            data["imported_at"] = time.time()
            data["binding_key"] = {
                "handle": "%#x" % self.binding_key_handle,
                "name": sealing.check_binding_key_attributes(
                    self.binding_key_public()).name().hex()}
            self._write_metadata(uuid, data)
        except BaseException:
            self._erase(uuid)
            raise
        return self.status(uuid)

    # --- live migration ------------------------------------------------------
    # The order of the files makes each step safe to repeat and to resume
    # after an agent restart: the marker (migrating.json, incoming.json) is
    # written before anything else changes and removed last.

    def _live_outgoing(self, uuid: str) -> dict | None:
        record = self._migration_record(uuid)
        if record is None or record[0] != MIGRATION_OUTGOING:
            return None
        if not record[1].get("live"):
            raise exception.VTPMInvalidState(
                instance=uuid, state="migrating (cold)",
                operation="a live-migration step", expected="running or "
                "migrating live (a cold export is cancelled with "
                "cancel_migration)")
        return record[1]

    def live_migration_key(self, instance_uuid: str) -> bytes:
        uuid = canonical_uuid(instance_uuid)
        with self._lock:
            info = self.status(uuid)
            live = self._live_outgoing(uuid)
            serving = info.status is VTPMStatus.RUNNING or (
                live is not None and info.pid is not None)
            if not serving:
                raise self._wrong_state(
                    uuid, "live_migration_key",
                    "running with its hypervisor", info=info)
            assert info.pid is not None
            if b"--migration-key" not in _cmdline(info.pid):
                raise exception.VTPMOperationNotSupported(
                    driver=self.name, operation="live migration of vTPM %s"
                    % uuid, reason="its swtpm was started without a "
                    "migration key (QEMU would carry its state in clear); "
                    "stop and start it once")
            key = self._migration_key(uuid)
            if live is None:
                _write_atomic(self._dir(uuid) / "migrating.json", json.dumps(
                    {"reason": "live migration: the state leaves with its "
                     "hypervisor's migration stream", "live": True,
                     "at": time.time()}).encode())
                LOG.info("vTPM of instance %s: live migration out begins",
                         uuid)
            return key

    def abort_outgoing(self, instance_uuid: str) -> VTPMInfo:
        uuid = canonical_uuid(instance_uuid)
        with self._lock:
            self._metadata(uuid)  # VTPMNotFound
            if self._live_outgoing(uuid) is not None:
                with _suppress_oserror():
                    (self._dir(uuid) / "migrating.json").unlink()
                LOG.info("vTPM of instance %s: live migration out aborted; "
                         "it stays here", uuid)
            return self.status(uuid)

    def finish_outgoing(self, instance_uuid: str) -> None:
        uuid = canonical_uuid(instance_uuid)
        with self._lock:
            try:
                self._metadata(uuid)
            except exception.VTPMNotFound:
                return  # finished already
            if self._live_outgoing(uuid) is None:
                raise self._wrong_state(uuid, "finish_outgoing",
                                        "migrating out live")
            # A swtpm still running here serves a source QEMU that must
            # never resume (the guest runs on the destination): it goes
            # with the state.
            self._erase(uuid)
            LOG.info("vTPM of instance %s: live migration out finished; "
                     "state and keys erased", uuid)

    def prepare_incoming(self, instance_uuid: str, *, migration_key: bytes,
                         metadata: Mapping[str, Any]) -> VTPMInfo:
        uuid = canonical_uuid(instance_uuid)
        if not isinstance(migration_key, bytes) or \
                len(migration_key) != _MIGRATION_KEY_SIZE:
            raise exception.InvalidParameterValue(
                name="migration_key", reason="%d bytes"
                % _MIGRATION_KEY_SIZE)
        if not isinstance(metadata, Mapping):
            raise exception.InvalidParameterValue(
                name="metadata", reason="a mapping")
        # The source's words (through the protocol): JSON, bounded.
        try:
            encoded = json.dumps(dict(metadata))
        except (TypeError, ValueError) as exc:
            raise exception.InvalidParameterValue(
                name="metadata", reason="not JSON: %s" % exc) from None
        if len(encoded) > _MAX_METADATA_BYTES:
            raise exception.InvalidParameterValue(
                name="metadata", reason="more than %d bytes"
                % _MAX_METADATA_BYTES)
        data = json.loads(encoded)
        binding_public = self.binding_key_public()
        with self._lock:
            directory = self._dir(uuid)
            if (directory / "incoming.json").exists():
                if (directory / "metadata.json").exists():
                    return self._prepared_again(uuid, migration_key)
                # A prepare that crashed before its metadata: start over.
                self._erase(uuid)
            directory = self._new_instance_dir(uuid)
            try:
                _write_atomic(directory / "incoming.json", json.dumps(
                    {"reason": "live migration: waiting for the state in "
                     "the hypervisor's migration stream",
                     "at": time.time()}).encode())
                state_key = sealing.new_secret(32)
                _write_atomic(directory / "state-key.wrapped",
                              sealing.wrap_secret(binding_public, state_key,
                                                  sealing.LABEL_VTPM_STATE))
                # The running swtpm keeps this migration key for its whole
                # run (swtpm takes it only at start): kept sealed here for
                # the next live migration out of this host.
                _write_atomic(directory / "migration-key.wrapped",
                              sealing.wrap_secret(binding_public,
                                                  migration_key,
                                                  _LABEL_MIGRATION_KEY))
                self._tpm_dir(uuid).mkdir(mode=0o700)
                data.update({
                    "instance_uuid": uuid, "driver": self.name,
                    "binding_key": {
                        "handle": "%#x" % self.binding_key_handle,
                        "name": sealing.check_binding_key_attributes(
                            binding_public).name().hex()},
                    "live_migration": {"prepared_at": time.time()}})
                self._write_metadata(uuid, data)
                self._launch(uuid, state_key, False,
                             migration_key=migration_key, incoming=True)
                del state_key
            except BaseException:
                LOG.exception("preparing the incoming vTPM of instance %s "
                              "failed; erasing it", uuid)
                self._erase(uuid)
                raise
            LOG.info("vTPM of instance %s: waiting for a live migration in",
                     uuid)
            return self.status(uuid)

    def _prepared_again(self, uuid: str, migration_key: bytes) -> VTPMInfo:
        """prepare_incoming asked again (a lost answer, an agent restart):
        the same migration gets the same vTPM; anything else is refused."""
        stored = self._migration_key(uuid)
        if not hmac.compare_digest(stored, migration_key):
            raise exception.VTPMExists(instance=uuid)
        info = self.status(uuid)
        if info.status is not VTPMStatus.MIGRATING:
            raise self._wrong_state(
                uuid, "prepare_incoming", "waiting (abort_incoming first)",
                info=info, with_reason=True)
        return info

    def _check_received(self, uuid: str, info: VTPMInfo,
                        operation: str, attached: bool) -> None:
        """Raise unless the state arrived (and, ``attached``, the
        destination hypervisor holds the vTPM)."""
        if info.status is not VTPMStatus.MIGRATING:
            raise self._wrong_state(
                uuid, operation,
                "running with the hypervisor that received it",
                info=info, with_reason=True)
        # The state arrived: QEMU loaded the blobs (decrypted with the
        # migration key) and swtpm stored them under our state key. A
        # swtpm that never got them has no state file.
        self._check_state_file(uuid)
        assert info.pid is not None
        if attached and not self._hypervisor_attached(uuid, info.pid):
            raise exception.VTPMInvalidState(
                instance=uuid, state="not attached",
                operation=operation, expected="held by the "
                "destination hypervisor (its QEMU is gone: the "
                "migration did not complete)")

    def update_metadata(self, instance_uuid: str,
                        changes: Mapping[str, Any]) -> VTPMInfo:
        uuid = canonical_uuid(instance_uuid)
        if not isinstance(changes, Mapping) or any(
                key in changes for key in ("instance_uuid", "driver",
                                           "binding_key")):
            raise exception.InvalidParameterValue(
                name="changes", reason="a mapping that leaves the "
                "instance, driver and binding key alone")
        with self._lock:
            data = dict(self._metadata(uuid))
            data.update(json.loads(json.dumps(dict(changes))))
            if len(json.dumps(data)) > _MAX_METADATA_BYTES:
                raise exception.InvalidParameterValue(
                    name="changes", reason="more than %d bytes of "
                    "metadata" % _MAX_METADATA_BYTES)
            self._write_metadata(uuid, data)
            return self.status(uuid)

    def check_incoming(self, instance_uuid: str) -> VTPMInfo:
        uuid = canonical_uuid(instance_uuid)
        with self._lock:
            info = self.status(uuid)
            if info.migration != MIGRATION_INCOMING:
                raise self._wrong_state(uuid, "check_incoming",
                                        "arriving by live migration",
                                        info=info)
            self._check_received(uuid, info, "check_incoming", True)
            return info

    def finish_incoming(self, instance_uuid: str, *,
                        checked: bool = False) -> VTPMInfo:
        uuid = canonical_uuid(instance_uuid)
        with self._lock:
            info = self.status(uuid)
            if info.migration != MIGRATION_INCOMING:
                if "received_at" in (info.metadata.get("live_migration")
                                     or {}) and (
                        checked or info.status is VTPMStatus.RUNNING):
                    return info  # finished already
                raise self._wrong_state(uuid, "finish_incoming",
                                        "arriving by live migration",
                                        info=info)
            if checked and info.pid is None:
                # Checked before the commit, its swtpm ended since (the
                # guest stopped): the state is what was checked, and the
                # exit "before the migration was finished" was after it
                # really finished; the vTPM is stopped, not failed.
                self._check_state_file(uuid)
                with _suppress_oserror():
                    (self._dir(uuid) / "failed.json").unlink()
            else:
                self._check_received(uuid, info, "finish_incoming",
                                     not checked)
            data = dict(info.metadata)
            received = dict(data.get("live_migration") or {})
            received["received_at"] = time.time()
            data["live_migration"] = received
            self._write_metadata(uuid, data)
            (self._dir(uuid) / "incoming.json").unlink()
            LOG.info("vTPM of instance %s: live migration in finished",
                     uuid)
            return self.status(uuid)

    def _hypervisor_attached(self, uuid: str, pid: int) -> bool:
        """Whether a client (the hypervisor) holds the vTPM's control
        channel: swtpm ``pid`` has an accepted, connected socket on it
        (/proc/net/unix). A destination QEMU that failed its migration exits
        without shutting the swtpm down, and that socket goes."""
        ctrl = self.socket_path(uuid)
        try:
            inodes = set()
            for fd in os.listdir("/proc/%d/fd" % pid):
                link = os.readlink("/proc/%d/fd/%s" % (pid, fd))
                if link.startswith("socket:["):
                    inodes.add(link[8:-1])
            with open("/proc/net/unix") as table:
                rows = table.read().splitlines()[1:]
        except OSError:
            return self._hypervisor_attached_probe(uuid)
        for row in rows:
            # Num RefCount Protocol Flags Type St Inode Path
            fields = row.split(None, 7)
            if len(fields) == 8 and fields[7] == ctrl and \
                    fields[5] == _SS_CONNECTED and fields[6] in inodes:
                return True
        return False

    def _hypervisor_attached_probe(
            self, uuid: str, timeout: float = _ATTACHED_PROBE_SECONDS
    ) -> bool:
        """The same question without /proc: swtpm leaves a command
        unanswered while another client holds the channel."""
        try:
            answer = _ctrl(self.socket_path(uuid), _CMD_GET_CAPABILITY, 8,
                           timeout=timeout)
        except socket.timeout:
            return True
        except OSError:
            return False
        del answer  # answered (or closed on us): nobody holds it
        return False

    def abort_incoming(self, instance_uuid: str) -> None:
        uuid = canonical_uuid(instance_uuid)
        with self._lock:
            directory = self._dir(uuid)
            if not directory.exists():
                return  # discarded already (or never made)
            if not (directory / "incoming.json").exists():
                raise self._wrong_state(uuid, "abort_incoming",
                                        "arriving by live migration")
            self._erase(uuid)
            LOG.info("vTPM of instance %s: live migration in aborted; "
                     "discarded", uuid)
