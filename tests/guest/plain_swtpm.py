"""A plain swtpm as a guest's vTPM, the way a hypervisor uses one.

:class:`PlainVTPM` manufactures a TPM 2.0 state with ``swtpm_setup`` (with
EK and platform certificates from a :class:`tests.swtpm_pool.LocalCA`, or
without), gives it a persistent AK through the project's own
:class:`~trusted_pools.tpm.device.TPMDevice` while no guest is attached
(swtpm on TCP with ``not-need-init,startup-clear``, then stopped), and
then runs it the way QEMU expects: ``swtpm socket --tpm2 --ctrl
type=unixio,path=SOCK`` with no data channel and no startup flags (QEMU
initialises the TPM over the control channel and the firmware sends
TPM2_Startup). QEMU owns that swtpm from then on and shuts it down when it
exits; :meth:`stop` reaps it either way.

The vTPM driver of issue 11 replaces this class in the lead's tests: only
the control socket path goes to :func:`tests.guest.qemu.boot_and_quote`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from tests import swtpm_pool
from trusted_pools.tpm import device

_SOCKET_TIMEOUT = 10.0


class PlainVTPM:
    def __init__(self, directory: str | os.PathLike,
                 ca: swtpm_pool.LocalCA | None = None) -> None:
        swtpm_pool.require_binaries()
        self.directory = Path(directory).resolve()
        self.state_dir = self.directory / "state"
        self.ca = ca
        self.log_file = self.directory / "swtpm-qemu.log"
        self._process: subprocess.Popen | None = None
        self._socket_dir: str | None = None
        self.ctrl_socket: Path | None = None

    def provision(self) -> "PlainVTPM":
        self.state_dir.mkdir(parents=True, exist_ok=True)
        argv = ["swtpm_setup", "--tpm2", "--tpmstate", str(self.state_dir),
                "--createek", "--pcr-banks", "sha256", "--overwrite"]
        if self.ca is not None:
            argv += ["--config", str(self.ca.setup_conf),
                     "--create-ek-cert", "--create-platform-cert",
                     "--lock-nvram"]
        swtpm_pool._run(argv, "swtpm_setup for the guest's vTPM")
        return self

    def create_ak(self, handle: int, alg: str = "ecc",
                  ) -> device.AttestationKey:
        """Persist a new AK at ``handle`` (under the EK) and return it.
        Only while no guest is attached."""
        if self._process is not None:
            raise RuntimeError("the vTPM is attached to a guest")
        instance = swtpm_pool.SwtpmInstance(self.state_dir, self.ca,
                                            name="guest-vtpm").start()
        try:
            with device.TPMDevice(instance.tcti) as tpm:
                return tpm.create_ak(alg, handle, replace=True)
        finally:
            instance.stop()

    def start_for_qemu(self, log_level: int = 20) -> Path:
        """Run swtpm with only a control socket; return its path. At
        ``log_level`` >= 20 swtpm logs every command it receives."""
        if self._process is not None:
            raise RuntimeError("already running")
        # UNIX socket paths are limited to 107 bytes: keep them short.
        self._socket_dir = tempfile.mkdtemp(prefix="tpv-")
        sock = Path(self._socket_dir) / "ctrl.sock"
        argv = ["swtpm", "socket", "--tpm2",
                "--tpmstate", "dir=%s" % self.state_dir,
                "--ctrl", "type=unixio,path=%s" % sock,
                "--pid", "file=%s" % (self.directory / "swtpm-qemu.pid")]
        if log_level:
            argv += ["--log", "file=%s,level=%d" % (self.log_file,
                                                    log_level)]
        with open(self.directory / "swtpm-qemu.out", "ab") as out:
            self._process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        deadline = time.monotonic() + _SOCKET_TIMEOUT
        while not sock.exists():
            if self._process.poll() is not None \
                    or time.monotonic() > deadline:
                self.stop()
                raise swtpm_pool.SwtpmFailed(
                    "swtpm did not open %s: %s" % (sock, (
                        self.directory / "swtpm-qemu.out").read_text()))
            time.sleep(0.01)
        self.ctrl_socket = sock
        return sock

    def wait_exit(self, timeout: float = 10.0) -> int | None:
        """swtpm's exit status after QEMU shut it down (None: still up)."""
        if self._process is None:
            return None
        try:
            return self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def log_text(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            swtpm_pool._terminate(process)
        if self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
            self._socket_dir = None
        self.ctrl_socket = None
