"""Fixtures for the vTPM driver on real swtpm: a host TPM (a swtpm from
tests/swtpm_pool.py standing in for the host's hardware TPM) and drivers
on it. UNIX socket paths are short (108 bytes), so the run directory is a
short temporary directory, not pytest's tmp_path."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

from trusted_pools.tpm.device import TPMDevice
from trusted_pools.vtpm.swtpm import SwtpmDriver


@pytest.fixture
def run_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="vt", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def make_driver(swtpm_ca, tmp_path, run_dir):
    """Factory: ``make_driver(host, name="a", **kw)`` -> a SwtpmDriver on
    the host TPM ``host`` (a SwtpmInstance), state under tmp_path/name.
    Every vTPM still running at teardown is stopped."""
    made: list[SwtpmDriver] = []

    def make(host, name: str = "a", **kw) -> SwtpmDriver:
        (run_dir / name).mkdir(exist_ok=True)
        kw.setdefault("setup_config", str(swtpm_ca.setup_conf))
        driver = SwtpmDriver(tmp_path / ("state-" + name), host.tcti,
                             run_dir=run_dir / name, **kw)
        made.append(driver)
        return driver

    yield make
    for driver in made:
        for info in driver.list():
            try:
                driver.stop(info.instance_uuid)
            except Exception:  # noqa: BLE001 - best effort teardown
                pass


@pytest.fixture
def host_tpm(swtpm_instance):
    """The host's 'hardware' TPM."""
    return swtpm_instance


NV_INDEX = 0x01500017


def nv_write(tcti: str, value: bytes, index: int = NV_INDEX) -> None:
    """Define an owner NV index on the vTPM at ``tcti`` and write it."""
    from tpm2_pytss import (ESYS_TR, TPM2_ALG, TPM2B_NV_PUBLIC, TPMA_NV,
                            TPMS_NV_PUBLIC)
    with TPMDevice(tcti) as dev:
        public = TPM2B_NV_PUBLIC(TPMS_NV_PUBLIC(
            nvIndex=index, nameAlg=TPM2_ALG.SHA256,
            attributes=TPMA_NV.OWNERWRITE | TPMA_NV.OWNERREAD
            | TPMA_NV.AUTHREAD | TPMA_NV.AUTHWRITE, dataSize=len(value)))
        handle = dev.esapi.nv_define_space(b"", public, ESYS_TR.OWNER)
        dev.esapi.nv_write(handle, value, 0, ESYS_TR.OWNER)


def nv_read(tcti: str, index: int = NV_INDEX) -> bytes | None:
    with TPMDevice(tcti) as dev:
        return dev.read_nv(index)
