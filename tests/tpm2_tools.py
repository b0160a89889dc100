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
import shutil
import subprocess
from typing import Iterator, NamedTuple

import pytest

from tests import swtpm_pool

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


@pytest.fixture(scope="module")
def bare_swtpm(tmp_path_factory: pytest.TempPathFactory,
               ) -> Iterator[BareSwtpm]:
    """A fresh, unprovisioned swtpm (module scope: key creation is the slow
    part), started and stopped by the pool's own :class:`SwtpmInstance`."""
    require_tools()
    workdir = tmp_path_factory.mktemp("swtpm")
    instance = swtpm_pool.SwtpmInstance(workdir / "state", ca=None,
                                        name="bare").start()
    try:
        yield BareSwtpm(instance.port, instance.tcti, workdir)
    finally:
        instance.stop()


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
