"""Two QEMU processes on this machine and a live migration between them.

A :class:`LiveGuest` is one ``qemu-system-x86_64`` (TCG, q35, OVMF, the
test kernel and initramfs of :mod:`.image`) with a QMP socket and its serial
console in a file; with ``incoming=True`` it starts paused with
``-incoming defer`` and waits for a migration stream. The guest runs the
live mode of ``init.sh`` (kernel argument ``tp.live=<64 hex>``): it
extends PCR 23 with that value and writes an NV marker into its vTPM at
boot, then reads both back once a second and prints them (``TP-LIVE``
lines). The vTPM is whatever the caller's QEMU arguments attach (the
driver's :class:`~trusted_pools.vtpm.driver.AttachInfo`, or none at all
for a plain guest).

:func:`migrate` runs the migration over QMP the way libvirt does
(``migrate-incoming`` on the destination, ``migrate`` on the source, then
``query-migrate`` until it ends), with the ``return-path`` capability on
both sides: without it the source reports "completed" even when the
destination failed to load the stream (a vTPM state that does not decrypt
fails only on the destination), and a source that believes it completed
would stay paused.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

from tests.guest import image, qemu
from tests.guest.qmp import QMP

LIVE_LINE = re.compile(r"TP-LIVE (\d+) pcr23=([0-9A-Fa-f]*) nv=(\S*)")
BOOT_TIMEOUT = 150.0


@dataclasses.dataclass(frozen=True)
class LiveReading:
    """One TP-LIVE line: what the guest read from its vTPM."""

    n: int
    pcr23: bytes
    nv: str


def expected_pcr23(marker: bytes) -> bytes:
    """PCR 23 (sha256) after one extend of ``marker`` from reset."""
    return hashlib.sha256(b"\0" * 32 + marker).digest()


def live_append(marker: bytes) -> str:
    if len(marker) != 32:
        raise ValueError("the marker is 32 bytes")
    return ("console=ttyS0 loglevel=1 panic=-1 tp.live=%s" % marker.hex())


class LiveGuest:
    """One QEMU process (see the module docstring)."""

    def __init__(self, workdir: Path, name: str, *, tpm_args: list[str],
                 marker: bytes, incoming: bool = False,
                 memory_mib: int = qemu.MEMORY_MIB) -> None:
        self.dir = Path(workdir) / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.serial_file = self.dir / "serial.log"
        self.log_file = self.dir / "qemu.log"
        # UNIX socket paths are short: the QMP socket lives under /tmp.
        self.qmp_path = Path("/tmp") / ("tp-qmp-%d-%s-%s.sock" % (
            os.getpid(), name, os.urandom(3).hex()))
        code, vars_template = qemu.find_ovmf()
        vars_file = self.dir / "OVMF_VARS.fd"
        shutil.copyfile(vars_template, vars_file)
        self.argv = [
            qemu.find_qemu(), "-machine", "q35", "-accel", "tcg",
            "-m", str(memory_mib), "-nographic", "-nodefaults",
            "-no-reboot", "-net", "none", "-monitor", "none",
            "-drive", "if=pflash,format=raw,readonly=on,file=%s" % code,
            "-drive", "if=pflash,format=raw,file=%s" % vars_file,
            *tpm_args,
            "-serial", "file:%s" % self.serial_file,
            "-qmp", "unix:%s,server=on,wait=off" % self.qmp_path,
            "-kernel", str(image.kernel()), "-initrd", str(image.initramfs()),
            "-append", live_append(marker)]
        if incoming and "-incoming" not in tpm_args:
            self.argv += ["-incoming", "defer"]
        self._log = open(self.log_file, "wb")
        self.process = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL,
                                        stdout=self._log, stderr=self._log)
        self.qmp = QMP(self.qmp_path)

    def serial(self) -> str:
        try:
            return self.serial_file.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def readings(self) -> list[LiveReading]:
        return [LiveReading(int(n), bytes.fromhex(pcr), nv)
                for n, pcr, nv in LIVE_LINE.findall(self.serial())]

    def wait_reading(self, after: int = -1,
                     timeout: float = BOOT_TIMEOUT) -> LiveReading:
        """The first TP-LIVE reading numbered above ``after``."""
        deadline = time.monotonic() + timeout
        while True:
            for reading in self.readings():
                if reading.n > after:
                    return reading
            if self.process.poll() is not None:
                raise AssertionError(
                    "QEMU exited %s; serial tail:\n%s\nQEMU log:\n%s"
                    % (self.process.returncode, self.serial()[-2000:],
                       self.qemu_log()))
            if time.monotonic() > deadline:
                raise AssertionError(
                    "no TP-LIVE reading after %d in %.0f s; serial tail:\n%s"
                    % (after, timeout, self.serial()[-3000:]))
            time.sleep(0.2)

    def qemu_log(self) -> str:
        return self.log_file.read_text(errors="replace")[-2000:]

    def wait_exit(self, timeout: float = 30.0) -> int:
        return self.process.wait(timeout)

    def close(self) -> None:
        """Quit QEMU (over QMP if it still answers, else kill it)."""
        if self.process.poll() is None:
            try:
                self.qmp.command("quit")
                self.process.wait(10)
            except Exception:  # noqa: BLE001 - it goes anyway
                self.process.kill()
                self.process.wait()
        try:
            self.qmp.close()
        except OSError:
            pass
        self._log.close()
        self.qmp_path.unlink(missing_ok=True)


@dataclasses.dataclass(frozen=True)
class MigrationResult:
    status: str
    seconds: float  # wall time from the migrate command to the end
    info: dict      # the source's last query-migrate answer


def migrate(source: LiveGuest, destination: LiveGuest, uri: str,
            timeout: float = 120.0) -> MigrationResult:
    """Move the running ``source`` into the waiting ``destination``."""
    for guest in (source, destination):
        guest.qmp.command("migrate-set-capabilities", capabilities=[
            {"capability": "return-path", "state": True}])
        # Same bandwidth cap on every run (QEMU's default is 32 MiB/s).
        guest.qmp.command("migrate-set-parameters",
                          **{"max-bandwidth": 1 << 30})
    destination.qmp.command("migrate-incoming", uri=uri)
    started = time.monotonic()
    source.qmp.command("migrate", uri=uri)
    info = source.qmp.wait_migration(timeout)
    return MigrationResult(status=info["status"],
                           seconds=time.monotonic() - started, info=info)
