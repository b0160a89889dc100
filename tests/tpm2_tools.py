"""A bare swtpm on a free TCP port, and tpm2-tools run against it.

Small on purpose: no provisioning (see ``tests/swtpm_pool.py`` for pools
with EK certificates). Use the ``bare_swtpm`` fixture by importing it into a
test module::

    from tests.tpm2_tools import bare_swtpm  # noqa: F401

It yields a :class:`BareSwtpm` (unpackable as ``port, tcti, workdir``) and
stops the TPM afterwards. If swtpm or tpm2-tools is missing the test FAILS:
these tests are the proof that the code agrees with a real TPM.
"""

from __future__ import annotations

import os
import pathlib
import random
import shutil
import signal
import socket
import subprocess
import time
from typing import Iterator, NamedTuple

import pytest

REQUIRED_TOOLS = ("swtpm", "tpm2_createek", "tpm2_createak", "tpm2_quote",
                  "tpm2_flushcontext", "tpm2_activatecredential")


class BareSwtpm(NamedTuple):
    port: int
    tcti: str
    workdir: pathlib.Path


class ToolFailed(Exception):
    """A tpm2-tools command exited non-zero (carries its stderr)."""


def require_tools() -> None:
    missing = [t for t in REQUIRED_TOOLS if shutil.which(t) is None]
    if missing:
        pytest.fail("swtpm/tpm2-tools missing: %s (apt-get install swtpm "
                    "swtpm-tools tpm2-tools)" % ", ".join(missing))


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port_pair() -> int:
    for _ in range(200):
        port = random.randrange(20000, 60000, 2)
        if _port_free(port) and _port_free(port + 1):
            return port
    pytest.fail("no free TCP port pair for swtpm")


def _wait_listening(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.02)
    pytest.fail("swtpm did not listen on port %d" % port)


def start_swtpm(workdir: pathlib.Path) -> tuple[BareSwtpm, int]:
    """Start swtpm in ``workdir``; returns (handle, pid)."""
    require_tools()
    state = workdir / "state"
    state.mkdir(parents=True, exist_ok=True)
    port = _free_port_pair()
    pidfile = workdir / "swtpm.pid"
    subprocess.run(
        ["swtpm", "socket", "--tpm2", "--tpmstate", "dir=%s" % state,
         "--server", "type=tcp,port=%d,bindaddr=127.0.0.1" % port,
         "--ctrl", "type=tcp,port=%d,bindaddr=127.0.0.1" % (port + 1),
         "--flags", "not-need-init,startup-clear", "--daemon",
         "--pid", "file=%s" % pidfile],
        check=True, capture_output=True, timeout=30)
    _wait_listening(port)
    pid = int(pidfile.read_text().strip())
    tcti = "swtpm:host=127.0.0.1,port=%d" % port
    return BareSwtpm(port, tcti, workdir), pid


def stop_swtpm(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass


@pytest.fixture(scope="module")
def bare_swtpm(tmp_path_factory: pytest.TempPathFactory,
               ) -> Iterator[BareSwtpm]:
    """A fresh swtpm (module scope: key creation is the slow part)."""
    handle, pid = start_swtpm(tmp_path_factory.mktemp("swtpm"))
    try:
        yield handle
    finally:
        stop_swtpm(pid)


def tpm2(tpm: BareSwtpm, *args: str, check: bool = True,
         flush: bool = True) -> subprocess.CompletedProcess:
    """Run one tpm2-tools command in the TPM's workdir.

    Without a resource manager swtpm has three transient slots, so
    transient objects are flushed after each command unless ``flush`` is
    False.
    """
    env = dict(os.environ, TPM2TOOLS_TCTI=tpm.tcti)
    proc = subprocess.run(list(args), cwd=tpm.workdir, env=env,
                          capture_output=True, timeout=60)
    if flush:
        subprocess.run(["tpm2_flushcontext", "-t"], cwd=tpm.workdir,
                       env=env, capture_output=True, timeout=30)
    if check and proc.returncode != 0:
        raise ToolFailed("%s failed (%d): %s" % (
            " ".join(args), proc.returncode,
            proc.stderr.decode(errors="replace")))
    return proc


def read(tpm: BareSwtpm, name: str) -> bytes:
    return (tpm.workdir / name).read_bytes()


def write(tpm: BareSwtpm, name: str, data: bytes) -> None:
    (tpm.workdir / name).write_bytes(data)
