"""The agent service with ``[vtpm] enabled``, on a real swtpm host TPM:
it loads the driver named in config, creates vTPMs through the host's
vTPM CA on its own TPM connection, adopts a running vTPM after a restart,
and its periodic check logs a vTPM that died at ERROR."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import tempfile
import time
import uuid as uuid_lib
from pathlib import Path

import pytest

from trusted_pools.agent.service import AgentService
from trusted_pools.conf import CONF
from trusted_pools.protocol import keystore
from trusted_pools.protocol import vtpm_binding
from trusted_pools.tpm import structures
from trusted_pools.tpm.device import TPMDevice
from trusted_pools.vtpm.driver import VTPMStatus
from trusted_pools.vtpm.swtpm import SwtpmDriver

HOST = "compute-vtpm"


@pytest.fixture
def agent_conf(swtpm_instance, swtpm_ca, tmp_path):
    """CONF for an agent on ``swtpm_instance`` with [vtpm] enabled and a
    one-second check; the host is enrolled (it has an AK)."""
    with TPMDevice(swtpm_instance.tcti) as dev:
        ak = dev.create_ak("ecc")
    keys = tmp_path / "conductor-keys.pem"
    keys.write_text(keystore.public_key_pem(keystore.generate_signing_key()))
    run_dir = Path(tempfile.mkdtemp(prefix="va", dir="/tmp"))
    overrides = {
        "agent": {"conductor_keys_file": str(keys)},
        "vtpm": {"enabled": True, "check_interval": 1,
                 "state_dir": str(tmp_path / "vtpm"),
                 "run_dir": str(run_dir),
                 "swtpm_setup_config": str(swtpm_ca.setup_conf)},
    }
    for group, values in overrides.items():
        for name, value in values.items():
            CONF.set_override(name, value, group=group)
    CONF.ak_public = ak.public  # type: ignore[attr-defined]
    try:
        yield CONF
    finally:
        # Nothing may keep running after the test.
        driver = SwtpmDriver(tmp_path / "vtpm", swtpm_instance.tcti,
                             run_dir=run_dir, recover=False)
        for info in driver.list():
            driver.stop(info.instance_uuid)
        for group, values in overrides.items():
            for name in values:
                CONF.clear_override(name, group=group)
        del CONF.ak_public
        shutil.rmtree(run_dir, ignore_errors=True)


def _agent(conf, swtpm_instance) -> AgentService:
    return AgentService(conf, host=HOST, tcti=swtpm_instance.tcti,
                        transport_url="fake://")


def _wait(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_disabled_by_default(swtpm_instance, tmp_path):
    keys = tmp_path / "keys.pem"
    keys.write_text(keystore.public_key_pem(keystore.generate_signing_key()))
    CONF.set_override("conductor_keys_file", str(keys), group="agent")
    try:
        assert CONF.vtpm.enabled is False
        agent = _agent(CONF, swtpm_instance)
        assert agent.vtpm is None and agent.periodic_jobs() == []
        agent.attester.close()
    finally:
        CONF.clear_override("conductor_keys_file", group="agent")


def test_adopts_a_running_vtpm_and_reports_its_death(
        agent_conf, swtpm_instance, caplog):
    caplog.set_level(logging.INFO)
    uuid = str(uuid_lib.uuid4())

    first = _agent(agent_conf, swtpm_instance)
    assert isinstance(first.vtpm, SwtpmDriver)
    assert [job.name for job in first.periodic_jobs()] == ["vtpm_check"]
    first.start()
    try:
        assert first.jobs.spacings == {"vtpm_check": 1.0}
        # Created on the agent's one TPM connection (a swtpm host TPM
        # serves one at a time): the chain names this host and its AK.
        info = first.vtpm.create(uuid)
        chain = info.metadata["provisioner"]["vtpm_chain"]
        vtpm_binding.verify_chain(
            HOST, structures.parse_public(agent_conf.ak_public), chain, uuid)
        # The agent keeps quoting on the same connection afterwards.
        assert first.attester.identity() is not None
        pid = first.vtpm.start(uuid).pid
    finally:
        first.stop()

    # The agent is gone; the vTPM runs on.
    assert first.vtpm.status(uuid).status is VTPMStatus.RUNNING
    caplog.clear()
    second = _agent(agent_conf, swtpm_instance)
    assert second.vtpm.last_recovery.adopted == [uuid]
    assert any(r.levelno == logging.INFO and "adopted 1 running vTPM(s) (%s)"
               % uuid in r.getMessage() for r in caplog.records)
    assert second.vtpm.status(uuid).pid == pid

    second.start()
    try:
        caplog.clear()
        os.kill(pid, signal.SIGKILL)
        _wait(lambda: any(
            r.levelno == logging.ERROR and uuid in r.getMessage()
            and "is failed" in r.getMessage() for r in caplog.records))
        assert second.vtpm.status(uuid).status is VTPMStatus.FAILED
        # Restartable on its state.
        assert second.vtpm.start(uuid).status is VTPMStatus.RUNNING
    finally:
        second.stop()


def test_unknown_driver_stops_the_agent(agent_conf, swtpm_instance):
    from trusted_pools import exception
    agent_conf.set_override("driver", "no-such-driver", group="vtpm")
    try:
        with pytest.raises(exception.VTPMDriverLoadFailed,
                           match="no-such-driver"):
            _agent(agent_conf, swtpm_instance)
    finally:
        agent_conf.clear_override("driver", group="vtpm")
