"""Boot a real guest under QEMU (TCG) on a vTPM and read what it printed.

The guest is OVMF (UEFI firmware) on a q35 machine with a TPM CRB device
backed by a swtpm's control socket (``--ctrl type=unixio,path=SOCK``),
booting the Debian kernel and the test initramfs of :mod:`.image` through
``-kernel/-initrd/-append`` (OVMF loads the kernel through its EFI stub and
measures it; the kernel measures the initrd and its command line into
PCR 9). The initramfs runs the product's guest attester and powers off; its
output comes back on the serial console, written to a file.

Entry points:

* :func:`boot_and_quote` ``(ctrl_socket, nonce, ak_handle)`` ->
  :class:`GuestQuote`: one boot, the guest's vTPM quote over ``nonce`` (the
  unverified :class:`~trusted_pools.guest.GuestEvidence`), the serial log
  and the boot time.
* :func:`run_guest`: the QEMU run itself (any kernel command line, or
  firmware only), with a hard timeout.
* :func:`swtpm_log_commands`: the TPM command codes a swtpm started with
  ``--log file=F,level=20`` received, in order (to count the firmware's
  ``TPM2_PCR_Extend``).

QEMU owns the swtpm's control channel while it runs and shuts the swtpm
down when it exits: start a fresh swtpm for every boot.

Missing parts raise :class:`~tests.guest.image.GuestPartMissing` with the
package to install (``qemu-system-x86``, ``ovmf``).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from tests.guest import image
from tests.guest.image import GuestPartMissing
from trusted_pools import guest as product_guest

QEMU = "qemu-system-x86_64"
# Debian 12's ovmf package: the 4 MiB flash images (2 MiB ones as
# fallback for older releases).
OVMF_PAIRS = (
    ("/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd"),
    ("/usr/share/OVMF/OVMF_CODE.fd", "/usr/share/OVMF/OVMF_VARS.fd"),
)
DEFAULT_PCRS = "sha256:0,1,2,3,4,5,6,7,8,9"
# Seen on a loaded 2-core machine: about 17 s from QEMU start to power-off.
DEFAULT_TIMEOUT = 150.0
MEMORY_MIB = 256

TPM2_CC_PCR_EXTEND = 0x182
TPM2_CC_QUOTE = 0x158


@dataclasses.dataclass(frozen=True)
class GuestRun:
    """One QEMU run: the serial console text, wall time, exit status
    (None when the run was killed at the timeout)."""

    serial: str
    seconds: float
    returncode: int | None
    argv: tuple[str, ...]

    @property
    def timed_out(self) -> bool:
        return self.returncode is None


@dataclasses.dataclass(frozen=True)
class GuestQuote:
    """What one boot produced: the guest's evidence (unverified), the
    nonce and AK handle it was asked for, and the run."""

    evidence: product_guest.GuestEvidence
    nonce: bytes
    ak_handle: int
    run: GuestRun

    @property
    def boot_seconds(self) -> float:
        return self.run.seconds


def find_qemu() -> str:
    path = shutil.which(QEMU)
    if path is None:
        raise GuestPartMissing("%s not found; install with: apt-get install "
                               "-y --no-install-recommends qemu-system-x86"
                               % QEMU)
    return path


def find_ovmf() -> tuple[Path, Path]:
    """(code, vars template) of the UEFI firmware."""
    for code, variables in OVMF_PAIRS:
        if os.path.isfile(code) and os.path.isfile(variables):
            return Path(code), Path(variables)
    raise GuestPartMissing("OVMF firmware not found (%s); install with: "
                           "apt-get install -y ovmf" % OVMF_PAIRS[0][0])


def qemu_argv(ctrl_socket: str | os.PathLike, vars_file: Path,
              serial_file: Path, *, kernel: Path | None = None,
              initrd: Path | None = None, append: str | None = None,
              memory_mib: int = MEMORY_MIB) -> list[str]:
    """The QEMU command line: TCG, q35, OVMF, a TPM CRB on the swtpm at
    ``ctrl_socket``, no display, network or reboot; serial to a file."""
    code, _ = find_ovmf()
    argv = [find_qemu(), "-machine", "q35", "-accel", "tcg",
            "-m", str(memory_mib), "-nographic", "-nodefaults",
            "-no-reboot", "-net", "none", "-monitor", "none",
            "-drive", "if=pflash,format=raw,readonly=on,file=%s" % code,
            "-drive", "if=pflash,format=raw,file=%s" % vars_file,
            "-chardev", "socket,id=chrtpm,path=%s" % ctrl_socket,
            "-tpmdev", "emulator,id=tpm0,chardev=chrtpm",
            "-device", "tpm-crb,tpmdev=tpm0",
            "-serial", "file:%s" % serial_file]
    if kernel is not None:
        argv += ["-kernel", str(kernel)]
        if initrd is not None:
            argv += ["-initrd", str(initrd)]
        if append is not None:
            argv += ["-append", append]
    return argv


def run_guest(ctrl_socket: str | os.PathLike, *,
              kernel: Path | None = None, initrd: Path | None = None,
              append: str | None = None, timeout: float = DEFAULT_TIMEOUT,
              workdir: str | os.PathLike | None = None) -> GuestRun:
    """Run QEMU until the guest powers off or ``timeout`` seconds pass
    (then QEMU is killed and the run reports ``returncode=None``).

    Each run gets its own copy of the OVMF variable store (the firmware
    writes to it; the template must stay pristine).
    """
    if not os.path.exists(ctrl_socket):
        raise FileNotFoundError("no vTPM control socket at %s" % ctrl_socket)
    _, vars_template = find_ovmf()
    own_dir = None
    if workdir is None:
        own_dir = tempfile.TemporaryDirectory(prefix="tp-guest-")
        workdir = own_dir.name
    work = Path(workdir)
    try:
        vars_file = work / "OVMF_VARS.fd"
        shutil.copyfile(vars_template, vars_file)
        serial_file = work / "serial.log"
        serial_file.unlink(missing_ok=True)
        argv = qemu_argv(ctrl_socket, vars_file, serial_file, kernel=kernel,
                         initrd=initrd, append=append)
        started = time.monotonic()
        with open(work / "qemu.log", "wb") as log:
            process = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                       stdout=log, stderr=log)
            try:
                returncode: int | None = process.wait(timeout)
            except subprocess.TimeoutExpired:
                returncode = None
                process.kill()
                process.wait()
        seconds = time.monotonic() - started
        serial = serial_file.read_text(errors="replace") \
            if serial_file.exists() else ""
        if returncode not in (0, None):
            raise RuntimeError("QEMU exited %d: %s" % (
                returncode, (work / "qemu.log").read_text(
                    errors="replace")[-2000:]))
        return GuestRun(serial=serial, seconds=seconds,
                        returncode=returncode, argv=tuple(argv))
    finally:
        if own_dir is not None:
            own_dir.cleanup()


def guest_append(nonce: bytes, ak_handle: int,
                 pcrs: str = DEFAULT_PCRS) -> str:
    """The kernel command line that asks the test initramfs for a quote."""
    if not isinstance(nonce, bytes) or not 0 < len(nonce) <= 64:
        raise ValueError("nonce must be 1 to 64 bytes")
    if not 0x81000000 <= ak_handle <= 0x81FFFFFF:
        raise ValueError("ak_handle must be a persistent handle")
    # loglevel=1 keeps kernel messages from interleaving with the blocks;
    # panic=-1 with -no-reboot turns a panic into a QEMU exit.
    return ("console=ttyS0 loglevel=1 panic=-1 tp.nonce=%s tp.ak=%#x "
            "tp.pcrs=%s" % (nonce.hex(), ak_handle, pcrs))


def boot_and_quote(ctrl_socket: str | os.PathLike, nonce: bytes,
                   ak_handle: int, *, pcrs: str = DEFAULT_PCRS,
                   timeout: float = DEFAULT_TIMEOUT,
                   workdir: str | os.PathLike | None = None) -> GuestQuote:
    """Boot the test guest on the vTPM behind ``ctrl_socket`` and return
    the quote its attester made over ``nonce`` with the AK persisted at
    ``ak_handle``. Raises ``AssertionError`` with the serial log's tail
    when the guest did not finish, and
    :class:`~trusted_pools.exception.MalformedEvidence` when its output
    is unusable (the attester's own error message included)."""
    run = run_guest(ctrl_socket, kernel=image.kernel(),
                    initrd=image.initramfs(),
                    append=guest_append(nonce, ak_handle, pcrs),
                    timeout=timeout, workdir=workdir)
    if run.timed_out or "TP-ATTEST-DONE" not in run.serial:
        raise AssertionError(
            "the guest did not finish its attestation in %.0f s (timed out: "
            "%s); serial console tail:\n%s"
            % (run.seconds, run.timed_out, run.serial[-3000:]))
    evidence = product_guest.parse_output(run.serial)
    return GuestQuote(evidence=evidence, nonce=nonce, ak_handle=ak_handle,
                      run=run)


def swtpm_log_commands(log_text: str) -> list[int]:
    """TPM command codes, in order, from a swtpm log at level >= 20
    (each command is logged as "SWTPM_IO_Read: length N" followed by
    its bytes in hex)."""
    codes: list[int] = []
    lines = log_text.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].strip().startswith("SWTPM_IO_Read:"):
            data = bytearray()
            i += 1
            while i < len(lines) and ":" not in lines[i]:
                data += bytes.fromhex(lines[i])
                i += 1
            if len(data) >= 10:
                codes.append(int.from_bytes(data[6:10], "big"))
            continue
        i += 1
    return codes
