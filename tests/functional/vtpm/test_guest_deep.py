"""A real guest on the driver's vTPM, deep-attested by the conductor.

The whole chain of issue 11 with real parts: a host TPM (swtpm) enrolled
and judged trusted by a real conductor manager; the swtpm vTPM driver
creates the instance's vTPM with its state sealed to that host TPM and the
binding provisioner puts an AK in it, certified by the host's vTPM CA;
OVMF and a Debian kernel boot under QEMU (TCG) on the driver's socket; the
product's guest attester quotes inside the guest over the conductor's
nonce; the conductor verifies the quote, chains the vTPM to the host and
commits a fresh host quote to it.
"""

from __future__ import annotations

import base64
import tempfile
import uuid

import pytest

from tests import pool_harness
from tests import swtpm_pool as swtpm_pool_module
from tests.guest import qemu
from tests.local_agents import LocalAgents
from trusted_pools.agent.attester import Attester
from trusted_pools.verifier import deep
from trusted_pools.protocol import keystore
from trusted_pools.conductor.manager import ConductorManager
from trusted_pools.db import api as db_api
from trusted_pools.db import migration
from trusted_pools.vtpm import binding
from trusted_pools.vtpm.driver import VTPMStatus
from trusted_pools.vtpm.swtpm import SwtpmDriver

pytestmark = [pytest.mark.swtpm, pytest.mark.slow]

HOST = "compute-a"


@pytest.fixture
def trusted_host(swtpm_pool, swtpm_ca, tmp_path):
    """(conductor manager, host TPM): the host enrolled and trusted."""
    (tpm,) = swtpm_pool(1)
    log = swtpm_pool_module.BOOTED_HOST_LOGS["ubuntu-2104"]
    swtpm_pool_module.boot_from_event_log(tpm, log)
    agents = LocalAgents({HOST: Attester(HOST, tpm.device,
                                         event_log_path=str(log))})
    db = db_api.Connection(db_api.make_context_manager(
        "sqlite:///%s" % (tmp_path / "deep.sqlite")))
    migration.upgrade(engine=db.get_engine())
    manager = ConductorManager("conductor-1", db,
                               keystore.generate_signing_key(), agents,
                               None, swtpm_ca.bundle_pem)
    manager.enroll_host({}, HOST, ek_sha256=pool_harness.ek_sha256(tpm))
    assert manager.attest_now({}, HOST)["verdict"]["status"] == "trusted"
    yield manager, tpm
    db.dispose()


def test_real_guest_on_the_drivers_vtpm_is_deep_attested(trusted_host,
                                                         tmp_path):
    manager, host_tpm = trusted_host
    # UNIX socket paths are limited to 107 bytes: a short run directory.
    run_dir = tempfile.mkdtemp(prefix="tp-vtpm-", dir="/tmp")
    driver = SwtpmDriver(
        tmp_path / "vtpms", host_tpm.tcti, run_dir=run_dir,
        provisioner=binding.Provisioner(binding.HostCA(HOST,
                                                       host_tpm.device)))
    instance = str(uuid.uuid4())
    info = driver.create(instance)
    chain = info.metadata["provisioner"]["vtpm_chain"]
    ak_handle = info.metadata["provisioner"]["vtpm_ak_handle"]
    driver.start(instance)
    try:
        nonce = base64.b64decode(
            manager.challenge_instance({}, instance)["nonce"])
        guest = qemu.boot_and_quote(driver.socket_path(instance), nonce,
                                    ak_handle, workdir=tmp_path)
    finally:
        if driver.status(instance).status == VTPMStatus.RUNNING:
            driver.stop(instance)
    evidence = guest.evidence
    wire = deep.VMEvidence.from_tpm2_tools(
        instance, evidence.quote, evidence.signature, evidence.pcrs,
        chain).to_wire()
    # The firmware measured into the driver's vTPM: PCR 0 left its reset
    # value (what the guest quoted is checked against the signed digest).
    assert wire["vm_pcrs"]["sha256"]["0"] != "00" * 32

    (entry,) = manager.deep_attest({}, HOST, [wire])
    assert "error" not in entry, entry
    host_level = manager.db.latest_verdicts()[0].level
    assert entry["verdict"]["status"] == "trusted"
    assert 0 < entry["verdict"]["level"] <= host_level
    claims = deep.verify_instance_result(
        entry["signed_result"],
        keystore.key_set([keystore.public_key_from_pem(manager.public_pem)]),
        int(manager.clock()))
    assert instance in str(claims)
    assert HOST in str(claims)

    # The same guest quote again: its nonce was used once.
    (replayed,) = manager.deep_attest({}, HOST, [wire])
    assert replayed["error"]["type"] == "VMQuoteReplayed", replayed
